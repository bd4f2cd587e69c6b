import type { PipelineEvent } from "../io/quantize-checkpoint.js";
import { printable } from "../io/json-preview.js";

/**
 * Renders pipeline events: a redrawn progress line on a TTY (matrices done/total, current module,
 * iteration, running error, ETA), plain lines otherwise, JSON lines with --json, nothing with --quiet.
 */
export type ProgressMode = "tty" | "plain" | "json" | "quiet";

export function progressRenderer(mode: ProgressMode, write: (text: string) => void = (t) => process.stderr.write(t)): (event: PipelineEvent) => void {
  let started = Date.now();
  let total = 0;
  let done = 0;
  let errorSum = 0;
  const eta = () => {
    if (done === 0) return "…";
    const seconds = ((Date.now() - started) / 1000 / done) * (total - done);
    return seconds < 60 ? `${seconds.toFixed(0)}s` : `${(seconds / 60).toFixed(1)}m`;
  };
  return (event) => {
    // Not an error (one list can serve several architectures), but a typo looks the same: shown even
    // with --quiet (on stderr), and as part of the event itself with --json.
    if (event.type === "plan" && mode !== "json") {
      for (const selector of event.unmatched) process.stderr.write(`warning: ${selector} matches nothing in this checkpoint\n`);
      for (const warning of event.warnings) process.stderr.write(`warning: ${warning}\n`);
    }
    if (event.type === "done" && event.leftover && mode !== "json") process.stderr.write(`${mode === "tty" ? "\n" : ""}warning: ${event.leftover}\n`);
    if (mode === "quiet") return;
    if (mode === "json") {
      process.stdout.write(JSON.stringify(event) + "\n");
      return;
    }
    switch (event.type) {
      case "plan":
        started = Date.now();
        total = event.matrices;
        write(`${event.matrices} target matrices in ${event.shards} shard(s), ${event.tensors} tensors\n`);
        break;
      case "iteration":
        if (mode === "tty") {
          const width = 24;
          const filled = Math.round((width * done) / Math.max(total, 1));
          const bar = "█".repeat(filled) + "░".repeat(width - filled);
          const mean = done > 0 ? ` mean err ${(errorSum / done).toFixed(4)}` : "";
          write(`\r\x1b[K${bar} ${done}/${total} ${printable(event.module)} iter ${event.iteration}/${event.iterations} err ${event.error.toFixed(4)}${mean} ETA ${eta()}`);
        }
        break;
      case "matrix-done": {
        done++;
        const r = event.report;
        const best = r.history[r.selectedIteration - 1]!;
        errorSum += best.error;
        if (mode === "plain") {
          write(`[${done}/${total}] ${printable(r.module)} ${r.shape.join("×")} ${r.bits}-bit: ‖W−Q‖ ${r.qOnlyError.toFixed(4)} → ‖W−Q−BA‖ ${best.error.toFixed(4)} (${r.seconds.toFixed(2)} s)\n`);
        }
        break;
      }
      case "shard-written":
        // Writing a large model's shards takes minutes after the last matrix: show it.
        if (mode === "tty") write(`\r\x1b[Kwriting the backbone: ${event.written}/${event.shards} shards (${event.file})`);
        else write(`${event.kept ? "kept" : "wrote"} ${event.file} (${event.written}/${event.shards})\n`);
        break;
      case "done":
        if (mode === "tty") write("\r\x1b[K");
        if (event.alreadyComplete) write(`${event.output} was already finished with these settings and input: nothing to do\n`);
        else write(`done: ${event.matrices} matrices in ${event.seconds.toFixed(1)} s → ${event.output}\n`);
        break;
      case "matrix-start":
        break;
    }
  };
}
