/**
 * Errors side by side with the exact-SVD reference on the same matrix (not a test): writes the LLM-like
 * matrix the other benches use to a temporary raw float32 file, runs bench/reference/peft_loftq_reference.py
 * (PEFT's LoftQ algorithm in PyTorch, full SVD) on it, runs loftq on it, and prints both per-iteration errors.
 * The reference errors come from another matrix, so this is the like-for-like check of "error no
 * higher than the reference's". Needs a python3 with torch and scipy (see that script); times are printed
 * but are not the reference times (see the script's notes on BLAS builds).
 */
import "../src/cli/relaxed-simd-setup.js"; // first: relaxed SIMD on before any kernel backend exists
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loftq } from "../src/node/index.js";
import { llmLikeWeight } from "../src/synthetic/llm-like-weight.js";
import { parseBenchArgs, usageError } from "./bench-args.js";

const DEFAULT_CASES = "4096x4096:4:16:1,4096x11008:4:16:1,4096x4096:4:16:5,4096x4096:2:16:5,4096x4096:2:64:5";
const USAGE = `
node dist/bench/reference-errors.js [--cases ${DEFAULT_CASES}]
                                    [--python python3] [--json FILE]

Cases are ROWSxCOLS:BITS:RANK:ITERATIONS. Needs a python3 with torch and scipy.`;
const args = parseBenchArgs(USAGE, {
  cases: { type: "string", default: DEFAULT_CASES },
  python: { type: "string", default: "python3" },
  json: { type: "string", default: "" },
});
const cases = args.cases.split(",").map((text) => {
  if (!/^[1-9][0-9]*x[1-9][0-9]*(:[1-9][0-9]*){3}$/.test(text.trim())) {
    usageError(USAGE, `--cases takes ROWSxCOLS:BITS:RANK:ITERATIONS cases separated by commas, got ${JSON.stringify(text)}`);
  }
  const [size, bits, rank, iterations] = text.trim().split(":") as [string, string, string, string];
  const [rows, cols] = size.split("x").map(Number) as [number, number];
  return { size, rows, cols, bits: Number(bits), rank: Number(rank), iterations: Number(iterations) };
});
const python = args.python;
const jsonPath = args.json;
const script = join(import.meta.dirname, "..", "..", "bench", "reference", "peft_loftq_reference.py");

interface ReferenceRun {
  seconds: number;
  history: Array<{ quantError: number; error: number }>;
  peakRssBytes: number;
}

// The first loftq call of a process pays ~0.4 s of one-time setup (kernels, onnxruntime): not timed.
loftq(llmLikeWeight(2048, 2048, { seed: 1 }), { bits: 4, rank: 16, iterations: 1 });
const folder = mkdtempSync(join(tmpdir(), "loftq-reference-"));
const rows: Array<Record<string, unknown>> = [];
try {
  const written = new Map<string, string>();
  for (const c of cases) {
    const weight = llmLikeWeight(c.rows, c.cols, { seed: 1 });
    let path = written.get(c.size);
    if (!path) {
      path = join(folder, `${c.size}.f32`);
      writeFileSync(path, new Uint8Array(weight.data.buffer, weight.data.byteOffset, weight.data.byteLength));
      written.set(c.size, path);
    }
    const args = [script, "--weight", path, "--rows", String(c.rows), "--cols", String(c.cols), "--bits", String(c.bits), "--rank", String(c.rank), "--iters", String(c.iterations)];
    const run = spawnSync(python, args, { encoding: "utf8", maxBuffer: 1 << 20 });
    if (run.status !== 0) throw new Error(`${python} ${args.join(" ")} failed (${run.status}):\n${run.stderr}`);
    const reference = JSON.parse(run.stdout.trim().split("\n").at(-1)!) as ReferenceRun;
    const started = performance.now();
    const ours = loftq(weight, { bits: c.bits, rank: c.rank, iterations: c.iterations });
    const seconds = (performance.now() - started) / 1000;
    const referenceFinal = reference.history.at(-1)!.error;
    const ourFinal = ours.history[ours.selectedIteration - 1]!.error;
    const row = {
      case: `${c.size} NF${c.bits} r=${c.rank} T=${c.iterations}`,
      referenceErrors: reference.history.map((h) => h.error),
      loftqErrors: ours.history.map((h) => h.error),
      referenceFinal, loftqFinal: ourFinal, relativeDifference: ourFinal / referenceFinal - 1,
      referenceQuantError: reference.history[0]!.quantError, loftqQuantError: ours.history[0]!.quantError,
      referenceSeconds: reference.seconds, loftqSeconds: seconds,
    };
    rows.push(row);
    const format = (values: number[]) => values.map((v) => v.toFixed(6)).join(" ");
    console.log(`${row.case}: ‖W−Q‖ ${row.referenceQuantError.toFixed(6)} / ${row.loftqQuantError.toFixed(6)}`);
    console.log(`  reference (full SVD, last iterate)   ${format(row.referenceErrors)}   ${reference.seconds.toFixed(1)} s`);
    console.log(`  loftq (iterate ${ours.selectedIteration} returned)           ${format(row.loftqErrors)}   ${seconds.toFixed(2)} s`);
    console.log(`  returned error vs reference: ${(row.relativeDifference * 100).toFixed(3)} %`);
  }
} finally {
  rmSync(folder, { recursive: true, force: true });
}
if (jsonPath) writeFileSync(jsonPath, JSON.stringify({ date: new Date().toISOString(), runs: rows }, null, 2) + "\n");
process.exit(0);
