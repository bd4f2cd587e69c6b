/**
 * Paired A/B of two builds (not a test): both builds' `loftq` load into one process and alternate run
 * by run on the same LLM-like matrix, so each pair sees the same machine conditions. This machine class
 * drifts by ±20 % within minutes; the per-pair time ratio is far steadier than medians taken minutes
 * apart. Prints, per case, both medians and the median of the new/old ratios, with each build's error.
 *
 * (Build the old commit in a worktree: git worktree add /tmp/old REV; link node_modules; npm run build.)
 * W and Q lie in each build's backend memory when its backend uses such arrays in place (`holds`), as in
 * the CLI; builds from before `holds` get ordinary arrays (they copy W in and Q out either way). The
 * codes go into a reused buffer in backend memory too, for builds that take `codesOutput`.
 */
import "../src/cli/relaxed-simd-setup.js"; // first: relaxed SIMD on before any kernel backend exists
import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { LoftqResult } from "../src/loftq/loftq.js";
import type { LoftqOptions } from "../src/loftq/options.js";
import type { KernelBackend } from "../src/kernels/backend.js";
import type { Matrix } from "../src/tensor/matrix.js";
import { llmLikeWeight } from "../src/synthetic/llm-like-weight.js";
import { integer, parseBenchArgs, shapes, tuples, usageError } from "./bench-args.js";

interface Build {
  loftq(weight: Matrix, options: LoftqOptions): LoftqResult;
  getBackend(): KernelBackend;
}

const USAGE = `
node dist/bench/paired-ab.js --old /path/to/old/dist [--new dist] [--size 4096x4096]
                             [--cases 4:16:1,4:16:5,2:64:5] [--pairs 7] [--json FILE]

Cases are BITS:RANK:ITERATIONS. Both builds alternate run by run on the same LLM-like matrix.`;
const args = parseBenchArgs(USAGE, {
  old: { type: "string", default: "" },
  new: { type: "string", default: "" },
  size: { type: "string", default: "4096x4096" },
  cases: { type: "string", default: "4:16:1,4:16:5,2:64:5" },
  pairs: { type: "string", default: "7" },
  json: { type: "string", default: "" },
});
const load = async (dist: string) => (await import(pathToFileURL(resolve(dist, "src/node/index.js")).href)) as Build;
if (!args.old) usageError(USAGE, "--old DIST (the other build's dist folder) is required");
const sizes = shapes(USAGE, "size", args.size);
if (sizes.length !== 1) usageError(USAGE, `--size takes one ROWSxCOLS shape, got ${JSON.stringify(args.size)}`);
const [[rows, cols]] = sizes as [[number, number]];
const cases = tuples(USAGE, "cases", args.cases, 3, "4:16:1") as Array<[number, number, number]>;
const pairs = integer(USAGE, "pairs", args.pairs);
const jsonPath = args.json;
const older = await load(args.old);
// Default: this build (dist/bench/.. is dist).
const newer = await load(args.new || resolve(import.meta.dirname, ".."));

const generated = llmLikeWeight(rows, cols, { seed: 1 });
/** Whether the build's loftq takes the codesOutput option (older ones refuse unknown options). */
const takesCodesOutput = (build: Build) => {
  try {
    build.loftq({ rows: 2, cols: 2, data: new Float32Array(4).fill(1) }, { rank: 1, codesOutput: new Uint8Array(4) });
    return true;
  } catch {
    return false;
  }
};
/** W, Q's output and the codes' output in the build's backend memory when that backend uses such arrays in place. */
const arraysFor = (build: Build): { weight: Matrix; output: Float32Array; codesOutput?: Uint8Array } => {
  const backend = build.getBackend();
  if (!backend.holds) return { weight: generated, output: new Float32Array(rows * cols) };
  const weight: Matrix = { rows, cols, data: backend.allocate(rows * cols, false) };
  weight.data.set(generated.data);
  const output = backend.allocate(rows * cols, false);
  if (!takesCodesOutput(build)) return { weight, output };
  const codesStorage = backend.allocate(Math.ceil((rows * cols) / 4), false);
  return { weight, output, codesOutput: new Uint8Array(codesStorage.buffer, codesStorage.byteOffset, rows * cols) };
};
const oldArrays = arraysFor(older);
const newArrays = arraysFor(newer);
const median = (values: number[]) => {
  const sorted = [...values].sort((x, y) => x - y);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

const rowsOut: Array<Record<string, number | string>> = [];
for (const [bits, rank, iterations] of cases) {
  const run = (build: Build, arrays: ReturnType<typeof arraysFor>, t: number) =>
    build.loftq(arrays.weight, { bits, rank, iterations: t, output: arrays.output, ...(arrays.codesOutput ? { codesOutput: arrays.codesOutput } : {}) });
  const runOld = (t: number) => run(older, oldArrays, t);
  const runNew = (t: number) => run(newer, newArrays, t);
  runOld(1);
  runNew(1);
  const times = { old: [] as number[], new: [] as number[] };
  const errors = { old: 0, new: 0 };
  const ratios: number[] = [];
  for (let pair = 0; pair < pairs; pair++) {
    // Alternate which build goes first, so neither always runs right after the other's allocations.
    for (const which of pair % 2 === 0 ? (["old", "new"] as const) : (["new", "old"] as const)) {
      const started = performance.now();
      const result = which === "old" ? runOld(iterations) : runNew(iterations);
      times[which].push(performance.now() - started);
      errors[which] = result.history[result.selectedIteration - 1]!.error;
    }
    ratios.push(times.new[pair]! / times.old[pair]!);
  }
  const row = {
    case: `${rows}x${cols} b${bits} r${rank} T${iterations}`,
    oldMs: median(times.old), newMs: median(times.new), ratio: median(ratios), minRatio: Math.min(...ratios), maxRatio: Math.max(...ratios),
    oldError: errors.old, newError: errors.new,
  };
  rowsOut.push(row);
  console.log(
    `${row.case}: old ${row.oldMs.toFixed(0)} ms, new ${row.newMs.toFixed(0)} ms (medians of ${pairs}); new/old per pair: median ${row.ratio.toFixed(3)}` +
      ` (${row.minRatio.toFixed(2)}–${row.maxRatio.toFixed(2)}); error ${row.oldError.toFixed(5)} / ${row.newError.toFixed(5)}`,
  );
}
if (jsonPath) writeFileSync(jsonPath, JSON.stringify({ date: new Date().toISOString(), old: args.old, pairs, runs: rowsOut }, null, 2) + "\n");
process.exit(0);
