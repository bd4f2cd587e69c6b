/**
 * Whole-model benchmark (not a test): builds a synthetic Llama-2-7B-shaped checkpoint (bf16, sharded;
 * 32 blocks × 7 linear weights with heavy-tailed values and a few outlier columns; `--layers N`
 * to scale down) and runs the `loftq quantize` pipeline on it, each run in its own process, printing
 * wall time, that process's peak RSS, matrices per second, achieved GFLOP/s and the fraction of the
 * machine's roofline.
 */
import "../src/cli/relaxed-simd-setup.js"; // first: relaxed SIMD on before any kernel backend exists
import { describePeak, estimatePeak } from "./machine-peak.js";
import { integer, parseBenchArgs, usageError } from "./bench-args.js";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { quantizeCheckpoint, activeBackendName } from "../src/node/index.js";
import { writeShardedCheckpoint } from "../src/io/sharded-checkpoint.js";
import { encodeHalf } from "../src/tensor/dtype.js";
import { gaussian, mulberry32 } from "../src/linalg/random.js";
import { FIRST_SVD_OVERSAMPLE, WARM_OVERSAMPLE, WARM_POWER_ITERATIONS } from "../src/loftq/loftq.js";
import { FIRST_SVD_POWER_ITERATIONS } from "../src/loftq/options.js";

const SHARD_BYTES = 2 * 2 ** 30;

export interface ModelShape {
  layers: number;
  hidden: number;
  intermediate: number;
  vocab: number;
}

export interface ModelRun {
  layers: number; bits: number; rank: number; iterations: number; backend: string; threads: number;
  seconds: number; peakRssBytes: number; gflops: number; matricesPerSecond: number; peakGflops: number; rooflineFraction: number; bandwidthFraction: number;
}

/** Writes the synthetic checkpoint (deterministic) unless it is already there. */
export function buildSyntheticModel(dir: string, shape: ModelShape): void {
  if (existsSync(join(dir, "config.json"))) return;
  mkdirSync(dir, { recursive: true });
  const { layers, hidden, intermediate, vocab } = shape;
  const tensors: Array<{ name: string; shape: number[]; scale: number }> = [
    { name: "model.embed_tokens.weight", shape: [vocab, hidden], scale: 0.02 },
    { name: "lm_head.weight", shape: [vocab, hidden], scale: 0.02 },
    { name: "model.norm.weight", shape: [hidden], scale: 0 },
  ];
  for (let l = 0; l < layers; l++) {
    for (const role of ["q_proj", "k_proj", "v_proj", "o_proj"]) tensors.push({ name: `model.layers.${l}.self_attn.${role}.weight`, shape: [hidden, hidden], scale: 0.02 });
    tensors.push({ name: `model.layers.${l}.mlp.gate_proj.weight`, shape: [intermediate, hidden], scale: 0.02 });
    tensors.push({ name: `model.layers.${l}.mlp.up_proj.weight`, shape: [intermediate, hidden], scale: 0.02 });
    tensors.push({ name: `model.layers.${l}.mlp.down_proj.weight`, shape: [hidden, intermediate], scale: 0.02 });
    for (const norm of ["input_layernorm", "post_attention_layernorm"]) tensors.push({ name: `model.layers.${l}.${norm}.weight`, shape: [hidden], scale: 0 });
  }
  // Shards in name order, a new one past SHARD_BYTES, named and indexed like the hub's.
  const scales = new Map(tensors.map((t) => [t.name, t.scale]));
  writeShardedCheckpoint(dir, tensors.map((t) => ({ name: t.name, dtype: "BF16", shape: t.shape })), SHARD_BYTES, (t) =>
    encodeHalf(syntheticValues(t.name, t.shape, scales.get(t.name)!), "bf16"),
  );
  writeFileSync(join(dir, "config.json"), JSON.stringify({
    architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: hidden, intermediate_size: intermediate,
    num_hidden_layers: layers, num_attention_heads: 32, num_key_value_heads: 32, vocab_size: vocab, torch_dtype: "bfloat16",
  }, null, 2) + "\n");
}

/** Heavy-tailed weights: Gaussian scaled by a per-value factor (Student-t-like), with 4 outlier columns ×8. */
function syntheticValues(name: string, shape: readonly number[], scale: number): Float32Array {
  const count = shape.reduce((a, b) => a * b, 1);
  if (scale === 0) return new Float32Array(count).fill(1);
  let seed = 0;
  for (const ch of name) seed = (seed * 31 + ch.charCodeAt(0)) >>> 0;
  const random = mulberry32(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const g = gaussian(random);
    out[i] = scale * g * (1 + 0.25 * g * g) * 0.8;
  }
  const cols = shape[1] ?? 1;
  for (let o = 0; o < 4 && shape.length === 2; o++) {
    const col = Math.floor(random() * cols);
    for (let r = 0; r < shape[0]!; r++) out[r * cols + col]! *= 8;
  }
  return out;
}

/** Block-Krylov passes over the residual in LoftQ iteration t (each block: one M·X and one Mᵀ·X). */
const krylovPasses = (t: number) => 2 * ((t === 1 ? FIRST_SVD_POWER_ITERATIONS : WARM_POWER_ITERATIONS) + 1);

/** Analytic flop count of one LoftQ matrix (the gemm passes of the block-Krylov SVDs and W − B·A). */
export function loftqFlops(rows: number, cols: number, rank: number, iterations: number): number {
  let flops = 0;
  for (let t = 1; t <= iterations; t++) {
    const k = rank + (t === 1 ? FIRST_SVD_OVERSAMPLE : WARM_OVERSAMPLE);
    flops += krylovPasses(t) * 2 * rows * cols * k;
    if (t < iterations) flops += 2 * rows * cols * rank; // the next target W − B·A
  }
  return flops;
}

/**
 * Full-matrix float32 streams of one LoftQ matrix: per iteration the Krylov passes, quantization
 * (read the target, write Q), W − Q (read two, write one) and, before the next, W − B·A (read W,
 * write the target).
 */
export function loftqStreams(iterations: number): number {
  let streams = 0;
  for (let t = 1; t <= iterations; t++) streams += krylovPasses(t) + 2 + 3 + (t < iterations ? 2 : 0);
  return streams;
}

/** PyTorch reference seconds per matrix (PEFT v0.18.1, CPU, full SVD, 2 threads; from the core issue). */
const REFERENCE_SECONDS: Record<string, number> = {
  "4096x4096 nf4-r16-t1": 9.1, "4096x4096 nf4-r16-t5": 43.7, "4096x4096 nf2-r64-t5": 42.6, "4096x11008 nf4-r16-t1": 24.7,
};

function measureBandwidth(): number {
  const a = new Float64Array(32 * 2 ** 20);
  const b = new Float64Array(a.length);
  b.set(a);
  const started = performance.now();
  for (let r = 0; r < 4; r++) b.set(a);
  return (4 * 2 * a.byteLength) / ((performance.now() - started) / 1000);
}

const RUN_PATTERN = /^nf(\d)-r(\d+)-t(\d+)$/;

export function runModelBench(shape: ModelShape, runs: string[], dir: string, onLine: (line: string) => void = console.log): ModelRun[] {
  const model = join(dir, `llama-shaped-${shape.layers}x${shape.hidden}`);
  const buildStarted = performance.now();
  buildSyntheticModel(model, shape);
  onLine(`synthetic checkpoint ${model} (${((performance.now() - buildStarted) / 1000).toFixed(1)} s)`);
  const bandwidth = measureBandwidth();
  const peak = estimatePeak();
  onLine(describePeak(peak));
  const results: ModelRun[] = [];
  const perMatrix: Array<{ run: string; shape: string; seconds: number }> = [];
  for (const run of runs) {
    const match = RUN_PATTERN.exec(run);
    if (!match) throw new Error(`--runs entries look like nf4-r16-t5, got ${run}`);
    const [bits, rank, iterations] = [Number(match[1]), Number(match[2]), Number(match[3])];
    const out = join(dir, `out-${run}`);
    const { seconds, peakRssBytes, reports } = runPipelineInChild({ input: model, output: out, bits, rank, iterations });
    const flops = reports.reduce((sum, r) => sum + loftqFlops(r.shape[0], r.shape[1], rank, iterations), 0);
    const weightBytes = reports.reduce((sum, r) => sum + r.shape[0] * r.shape[1] * 4, 0);
    const passes = loftqStreams(iterations);
    const result: ModelRun = {
      layers: shape.layers, bits, rank, iterations, backend: activeBackendName(), threads: availableParallelism(), seconds,
      peakRssBytes, gflops: flops / seconds / 1e9,
      matricesPerSecond: reports.length / seconds,
      peakGflops: peak.gflops,
      rooflineFraction: flops / seconds / 1e9 / peak.gflops,
      // Each iteration streams the float32 residual ~`passes` times; compare with memcpy bandwidth.
      bandwidthFraction: (weightBytes * passes) / seconds / bandwidth,
    };
    results.push(result);
    perMatrix.push(...reports.map((r) => ({ run, shape: `${r.shape[0]}x${r.shape[1]}`, seconds: r.seconds })));
    onLine(`${run}: ${reports.length} matrices in ${seconds.toFixed(1)} s (${result.matricesPerSecond.toFixed(2)}/s), peak RSS ${(result.peakRssBytes / 2 ** 30).toFixed(2)} GiB, ` +
      `${result.gflops.toFixed(1)} GFLOP/s (${(result.rooflineFraction * 100).toFixed(1)}% of ${peak.gflops.toFixed(0)}), memory traffic ${(result.bandwidthFraction * 100).toFixed(0)}% of ${(bandwidth / 1e9).toFixed(1)} GB/s`);
    rmSync(out, { recursive: true, force: true });
  }
  // Per matrix shape, inside the pipeline (median over the model's matrices of that shape), beside
  // the PyTorch reference for the same matrix where the core issue measured one.
  onLine("\nper matrix, inside the pipeline (median), against PyTorch/PEFT on the same machine class:");
  onLine("| run | matrix | ours | PyTorch | speed-up |\n|---|---|---|---|---|");
  const groups = new Map<string, number[]>();
  for (const m of perMatrix) groups.set(`${m.run}|${m.shape}`, [...(groups.get(`${m.run}|${m.shape}`) ?? []), m.seconds]);
  for (const [key, times] of groups) {
    const [run, shape] = key.split("|") as [string, string];
    const median = times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
    const [rows, cols] = shape.split("x").map(Number) as [number, number];
    const reference = REFERENCE_SECONDS[`${Math.min(rows, cols)}x${Math.max(rows, cols)} ${run}`];
    onLine(`| ${run} | ${rows}×${cols} | ${median.toFixed(2)} s | ${reference ? `${reference} s` : "–"} | ${reference ? `${(reference / median).toFixed(0)}×` : "–"} |`);
  }
  return results;
}

interface PipelineJob { input: string; output: string; bits: number; rank: number; iterations: number }
interface PipelineOutcome { seconds: number; peakRssBytes: number; reports: Array<{ shape: number[]; seconds: number }> }

const CHILD_FLAG = "--pipeline-child";

/**
 * One `loftq quantize` run in a fresh process, so its peak RSS is its own (not the synthetic
 * model's generation, nor an earlier run's) and it pays the start-up a CLI invocation pays.
 */
function runPipelineInChild(job: PipelineJob): PipelineOutcome {
  const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), CHILD_FLAG, JSON.stringify(job)], { encoding: "utf8", maxBuffer: 64 * 2 ** 20 });
  if (child.status !== 0) throw new Error(`pipeline run failed (exit ${child.status}): ${child.stderr}`);
  return JSON.parse(child.stdout) as PipelineOutcome;
}

if (process.argv[2] === CHILD_FLAG) {
  const job = JSON.parse(process.argv[3]!) as PipelineJob;
  const started = performance.now();
  const { reports } = quantizeCheckpoint({ ...job, force: true });
  const outcome: PipelineOutcome = {
    seconds: (performance.now() - started) / 1000,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    reports: reports.map((r) => ({ shape: [...r.shape], seconds: r.seconds })),
  };
  process.stdout.write(JSON.stringify(outcome));
} else if (process.argv[1]?.endsWith("bench/model.js")) {
  const USAGE = `
node dist/bench/model.js [--layers 32] [--runs nf4-r16-t1,nf4-r16-t5,nf2-r64-t5] [--dir DIR]
                         [--json FILE] [--hidden 4096 --intermediate 11008 --vocab 32000]

Builds a synthetic Llama-2-7B-shaped checkpoint in DIR and runs \`loftq quantize\` on it per run.`;
  const args = parseBenchArgs(USAGE, {
    layers: { type: "string", default: "32" },
    hidden: { type: "string", default: "4096" },
    intermediate: { type: "string", default: "11008" },
    vocab: { type: "string", default: "32000" },
    dir: { type: "string", default: join(tmpdir(), "loftq-bench-model") },
    runs: { type: "string", default: "nf4-r16-t1,nf4-r16-t5,nf2-r64-t5" },
    json: { type: "string", default: "" },
  });
  const [layers, hidden, intermediate, vocab] = (["layers", "hidden", "intermediate", "vocab"] as const).map((flag) => integer(USAGE, flag, args[flag])) as [number, number, number, number];
  const shape: ModelShape = { layers, hidden, intermediate, vocab };
  const dir = args.dir;
  const runs = args.runs.split(",").map((run) => run.trim());
  for (const run of runs) if (!RUN_PATTERN.test(run)) usageError(USAGE, `--runs entries look like nf4-r16-t5, got ${JSON.stringify(run)}`);
  console.log(`backend ${activeBackendName()}; ${shape.layers} Llama-2-7B-shaped blocks (hidden ${shape.hidden}, MLP ${shape.intermediate})`);
  const results = runModelBench(shape, runs, dir);
  // Written only where asked: a quick run must not replace the committed results.
  const json = args.json;
  if (json) {
    writeFileSync(json, JSON.stringify({ date: new Date().toISOString(), machine: `${process.platform} ${process.arch}, node ${process.version}`, runs: results }, null, 2) + "\n");
    console.log(`wrote ${json}`);
  }
}
