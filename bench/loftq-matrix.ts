/**
 * Per-matrix LoftQ benchmark (not a test): time and error for LLM-like 4096×4096 and 4096×11008
 * matrices over bits × rank × iterations, side by side with the PyTorch reference measured on this
 * machine class (PEFT v0.18.1, CPU, full SVD, 2 threads). Timings are steady state: an untimed warm-up
 * run per shape comes first (the first LoftQ call of a process costs ~0.4 s more), then the median of
 * `--repeat` runs. W and Q lie in the backend's memory, as in the CLI's pipeline (its prefetcher reads
 * weights there); `--arrays plain` passes ordinary arrays instead, which LoftQ copies in and out.
 */
import "../src/cli/relaxed-simd-setup.js"; // first: relaxed SIMD on before any kernel backend exists
import { writeFileSync } from "node:fs";
import { activeBackendName, getBackend, listBackends, loftq, qloraInit } from "../src/node/index.js";
import { llmLikeWeight } from "../src/synthetic/llm-like-weight.js";
import { integer, integers, oneOf, parseBenchArgs, shapes, usageError } from "./bench-args.js";

/** Reference runs: seconds, and errors where measured (‖W−Q‖ of the Q-only start, ‖W−Q−BA‖ of LoftQ). */
const REFERENCE: Record<string, { seconds?: number; peakRssGiB?: number; quantError?: number; error?: number }> = {
  "4096x4096 b4 r16 T1": { seconds: 9.1, quantError: 0.1119, error: 0.1101 },
  "4096x4096 b4 r16 T5": { seconds: 43.7, peakRssGiB: 2.8, quantError: 0.1119, error: 0.1056 },
  "4096x4096 b2 r16 T1": { quantError: 0.5517, error: 0.5314 },
  "4096x4096 b2 r16 T5": { quantError: 0.5517, error: 0.4719 },
  "4096x4096 b2 r64 T5": { seconds: 42.6 },
  "4096x11008 b4 r16 T1": { seconds: 24.7, peakRssGiB: 6.3 },
};

const USAGE = `
node dist/bench/loftq-matrix.js [--sizes 4096x4096,4096x11008] [--bits 2,4,8] [--ranks 16,64]
                                [--iters 1,5] [--backend NAME] [--arrays backend|plain]
                                [--repeat 3] [--json FILE]

Time and error of LoftQ per matrix (NF quantizer, block 64) beside the PEFT reference times.`;
const args = parseBenchArgs(USAGE, {
  sizes: { type: "string", default: "4096x4096,4096x11008" },
  bits: { type: "string", default: "2,4,8" },
  ranks: { type: "string", default: "16,64" },
  iters: { type: "string", default: "1,5" },
  backend: { type: "string", default: "" },
  arrays: { type: "string", default: "backend" },
  repeat: { type: "string", default: "3" },
  json: { type: "string", default: "" },
});
const sizes = shapes(USAGE, "sizes", args.sizes);
const bitsList = integers(USAGE, "bits", args.bits);
const ranks = integers(USAGE, "ranks", args.ranks);
const iterationsList = integers(USAGE, "iters", args.iters);
const backend = args.backend || activeBackendName();
if (!listBackends().includes(backend)) usageError(USAGE, `--backend must be one of ${listBackends().join(", ")}, got ${JSON.stringify(backend)}`);
const arrays = oneOf(USAGE, "arrays", args.arrays, ["backend", "plain"] as const);
const jsonPath = args.json;
const repeat = integer(USAGE, "repeat", args.repeat);

interface Row {
  size: string;
  bits: number;
  rank: number;
  iterations: number;
  backend: string;
  /** Where W and Q lie: the backend's memory (as in the CLI) or ordinary arrays. */
  arrays: string;
  seconds: number;
  quantError: number;
  error: number;
  selectedIteration: number;
  peakRssBytes: number;
  reference?: (typeof REFERENCE)[string];
}
const results: Row[] = [];
const table: string[][] = [["matrix", "bits", "r", "T", "time", "ref time", "speed-up", "‖W−Q‖", "‖W−Q−BA‖", "ref ‖W−Q−BA‖", "iter"]];
console.log(`backend ${backend}, W and Q in ${arrays === "backend" ? "backend memory" : "ordinary arrays"}; LLM-like matrices (Gaussian + decaying rank-32 part + 8 outlier columns)\n`);
const kernels = getBackend(backend);
const inPlace = (length: number) => (arrays === "backend" ? kernels.allocate(length, false) : new Float32Array(length));
for (const [rows, cols] of sizes) {
  const generated = llmLikeWeight(rows, cols, { seed: 1 });
  const weight = { rows, cols, data: inPlace(rows * cols) };
  weight.data.set(generated.data);
  // Steady-state timings: one untimed run per shape first pays the one-time costs (JIT tier-up,
  // onnxruntime's load, growing the kernel heap), which a whole-model run pays once, not per matrix.
  // Q and the codes go into caller-owned buffers, as in the CLI's pipeline: a fresh 64 MiB array per
  // call would add its page faults (~50–180 ms on this machine class) to every timing.
  const output = inPlace(rows * cols);
  const codesStorage = inPlace(Math.ceil((rows * cols) / 4));
  const codesOutput = new Uint8Array(codesStorage.buffer, codesStorage.byteOffset, rows * cols);
  loftq(weight, { bits: bitsList[0], rank: ranks[0], iterations: 1, backend, output, codesOutput });
  for (const bits of bitsList) {
    const quantError = qloraInit(weight, { bits }).history[0]!.quantError;
    for (const rank of ranks) {
      for (const iterations of iterationsList) {
        // The median of `repeat` runs: this machine class's speed drifts by ±20 % over minutes.
        const times: number[] = [];
        let result!: ReturnType<typeof loftq>;
        for (let r = 0; r < repeat; r++) {
          const started = performance.now();
          result = loftq(weight, { bits, rank, iterations, backend, output, codesOutput });
          times.push((performance.now() - started) / 1000);
        }
        const seconds = times.sort((x, y) => x - y)[Math.floor(times.length / 2)]!;
        const best = result.history[result.selectedIteration - 1]!;
        const key = `${rows}x${cols} b${bits} r${rank} T${iterations}`;
        const reference = REFERENCE[key];
        results.push({
          size: `${rows}x${cols}`, bits, rank, iterations, backend, arrays, seconds, quantError, error: best.error,
          selectedIteration: result.selectedIteration, peakRssBytes: process.resourceUsage().maxRSS * 1024,
          ...(reference ? { reference } : {}),
        });
        table.push([
          `${rows}×${cols}`, `${bits}`, `${rank}`, `${iterations}`, `${seconds.toFixed(2)} s`,
          reference?.seconds ? `${reference.seconds} s` : "–",
          reference?.seconds ? `${(reference.seconds / seconds).toFixed(0)}×` : "–",
          quantError.toFixed(4), best.error.toFixed(4), reference?.error?.toFixed(4) ?? "–", `${result.selectedIteration}`,
        ]);
        console.error(table[table.length - 1]!.join("  ")); // progress (stderr); the aligned table follows on stdout
      }
    }
  }
  if (arrays === "backend") for (const buffer of [weight.data, output, codesStorage]) kernels.release(buffer);
}
console.log("");
const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
for (const row of table) console.log(row.map((cell, c) => cell.padStart(widths[c]!)).join("  "));
console.log(`\npeak RSS ${(process.resourceUsage().maxRSS / 1024 / 1024).toFixed(2)} GiB`);
if (jsonPath) writeFileSync(jsonPath, JSON.stringify({ machine: `${process.platform} ${process.arch}, node ${process.version}`, date: new Date().toISOString(), runs: results }, null, 2) + "\n");
