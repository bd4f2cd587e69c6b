/**
 * The paper's claim on a small real language model (a benchmark, not a test):
 * pretrain a TinyLlama on the Brown corpus, then fine-tune LoRA adapters on State of the Union
 * addresses and report held-out perplexity for full-precision LoRA, QLoRA (zero-init B) and LoftQ
 * at several bit widths and ranks, over a learning-rate sweep (best reported) and several seeds.
 *
 * The pretrained model is cached under bench/.cache (keyed by the pretraining settings; --fresh
 * retrains), the fine-tuning grid runs on `workers` child processes.
 */
import { fork, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import "../src/node/index.js"; // the fastest kernel backend for pretraining (the workers use single-threaded WebAssembly)
import { brownCorpus } from "../src/io/text-corpora.js";
import { saveTinyLlama, loadTinyLlama } from "../src/io/tiny-llama-checkpoint.js";
import { quantizeCheckpoint } from "../src/io/quantize-checkpoint.js";
import { BYTE_VOCAB_SIZE, encodeBytes } from "../src/nn/byte-tokenizer.js";
import { TinyLlama, type TinyLlamaConfig } from "../src/nn/tiny-llama.js";
import { integer, parseBenchArgs, usageError } from "./bench-args.js";
import { perplexity, runJob, sampler, sotuSplits, train, type FinetuneJob, type FinetuneRun, type MethodSpec } from "./finetune-job.js";

export type { FinetuneRun, MethodSpec } from "./finetune-job.js";

export interface FinetuneSettings {
  model: TinyLlamaConfig;
  sequence: number;
  pretrainSteps: number;
  pretrainBatchSize: number;
  pretrainLearningRate: number;
  finetuneSteps: number;
  finetuneBatchSize: number;
  ranks: number[];
  learningRates: number[];
  seeds: number[];
  /** "2/4" = LoftQ's mixed precision: the first half of the blocks at 4 bits, the rest at 2. */
  methods: MethodSpec[];
  evalSequences: number;
  /** Child processes for the fine-tuning grid (0: run in this process). */
  workers: number;
}

export const SMOKE: FinetuneSettings = {
  model: { vocabSize: BYTE_VOCAB_SIZE, hiddenSize: 64, intermediateSize: 128, layers: 2, heads: 4 },
  sequence: 32, pretrainSteps: 40, pretrainBatchSize: 4, pretrainLearningRate: 3e-3,
  finetuneSteps: 10, finetuneBatchSize: 2, ranks: [4], learningRates: [3e-3], seeds: [0], evalSequences: 4, workers: 2,
  methods: [
    { method: "lora", bits: 16, iterations: 0 },
    { method: "qlora", bits: 2, iterations: 0 },
    { method: "loftq", bits: 2, iterations: 1 },
  ],
};

const ALL_METHODS: MethodSpec[] = [
  { method: "lora", bits: 16, iterations: 0 },
  ...([4, 3, 2] as const).map((bits) => ({ method: "qlora" as const, bits, iterations: 0 })),
  ...([4, 3, 2] as const).flatMap((bits) => [1, 5].map((iterations) => ({ method: "loftq" as const, bits, iterations }))),
  { method: "loftq", bits: "2/4", iterations: 5 },
];

/** The full experiment, sized for the 60-minute budget on 2 cores (see bench/RESULTS.md for the timing). */
export const FULL: FinetuneSettings = {
  model: { vocabSize: BYTE_VOCAB_SIZE, hiddenSize: 192, intermediateSize: 512, layers: 4, heads: 6 },
  sequence: 96, pretrainSteps: 800, pretrainBatchSize: 16, pretrainLearningRate: 3e-3,
  finetuneSteps: 100, finetuneBatchSize: 4, ranks: [8, 16], learningRates: [1e-3, 3e-3], seeds: [0, 1, 2], evalSequences: 64,
  workers: availableParallelism(), methods: ALL_METHODS,
};

/** A ~10-minute cut of FULL: fewer methods, one rank, one learning rate, two seeds. */
export const MEDIUM: FinetuneSettings = {
  ...FULL,
  ranks: [8], learningRates: [3e-3], seeds: [0, 1],
  methods: ALL_METHODS.filter((m) => m.bits !== 3 && !(m.method === "loftq" && m.bits === 4 && m.iterations === 5)),
};

const CACHE_DIR = fileURLToPath(new URL("../../bench/.cache", import.meta.url));

export interface ExperimentResult {
  runs: FinetuneRun[];
  /** Pretraining loss per step (empty when the cached model was reused). */
  pretrainCurve: number[];
  /** Held-out perplexity of the pretrained model. */
  basePerplexity: number;
  seconds: { pretrain: number; quantize: number; finetune: number };
}

/** The pretrained base model's directory: from the cache when the same settings trained it before. */
function pretrained(settings: FinetuneSettings, cacheDir: string, fresh: boolean, evalSet: Int32Array[], onLine: (line: string) => void, curve: number[]): string {
  const key = createHash("sha256")
    .update(JSON.stringify([settings.model, settings.sequence, settings.pretrainSteps, settings.pretrainBatchSize, settings.pretrainLearningRate, 7, 1]))
    .digest("hex").slice(0, 16);
  const dir = join(cacheDir, `pretrained-${key}`);
  if (existsSync(join(dir, "model.safetensors")) && !fresh) {
    onLine(`reusing the pretrained model in ${dir} (held-out perplexity ${perplexity(loadTinyLlama(dir), evalSet).toFixed(2)}; --fresh retrains)`);
    return dir;
  }
  const started = performance.now();
  const model = new TinyLlama(settings.model, undefined, 7);
  const brown = encodeBytes(brownCorpus().join("\n"));
  train(model, sampler(brown, settings.sequence, 1), settings.pretrainSteps, settings.pretrainBatchSize, settings.pretrainLearningRate, curve, (step, loss) => {
    if ((step + 1) % 100 === 0) onLine(`pretraining step ${step + 1}/${settings.pretrainSteps}: loss ${loss.toFixed(3)} (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  });
  onLine(`pretrained ${settings.pretrainSteps} steps × ${settings.pretrainBatchSize} sequences on Brown in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  // Written under a temporary name and renamed, so an interrupted run never leaves a half cache.
  mkdirSync(cacheDir, { recursive: true });
  const partial = `${dir}.partial-${process.pid}`;
  saveTinyLlama(model, partial);
  rmSync(dir, { recursive: true, force: true });
  renameSync(partial, dir);
  return dir;
}

export async function runFinetuneExperiment(settings: FinetuneSettings, options: { onLine?: (line: string) => void; fresh?: boolean; cacheDir?: string } = {}): Promise<ExperimentResult> {
  const onLine = options.onLine ?? console.log;
  const work = mkdtempSync(join(tmpdir(), "loftq-finetune-"));
  try {
    const data = sotuSplits(settings.sequence, settings.evalSequences);
    let clock = performance.now();
    const lap = () => {
      const now = performance.now();
      const seconds = (now - clock) / 1000;
      clock = now;
      return seconds;
    };
    const pretrainCurve: number[] = [];
    const baseDir = pretrained(settings, options.cacheDir ?? CACHE_DIR, options.fresh ?? false, data.evalSet, onLine, pretrainCurve);
    const basePerplexity = perplexity(loadTinyLlama(baseDir), data.evalSet);
    onLine(`pretrained model: held-out SOTU perplexity ${basePerplexity.toFixed(2)}`);
    const pretrainSeconds = lap();

    // One starting checkpoint per quantized method and rank, made by the CLI's pipeline.
    const startDirs = new Map<string, string>();
    const startKey = (spec: MethodSpec, rank: number) => `${spec.method}-${spec.bits}-${spec.iterations}-r${rank}`.replace("/", "_");
    for (const spec of settings.methods) {
      for (const rank of settings.ranks) {
        if (spec.method === "lora") continue;
        const out = join(work, startKey(spec, rank));
        const mixed = spec.bits === "2/4";
        quantizeCheckpoint({
          input: baseDir, output: out, force: true, rank, loraAlpha: 2 * rank,
          bits: mixed ? 3 : (spec.bits as number), ...(mixed ? { mixed: true } : {}),
          iterations: Math.max(1, spec.iterations),
        });
        startDirs.set(startKey(spec, rank), out);
      }
    }
    const quantizeSeconds = lap();

    const jobs: FinetuneJob[] = settings.methods.flatMap((spec) =>
      settings.ranks.flatMap((rank) =>
        settings.seeds.flatMap((seed) =>
          settings.learningRates.map((learningRate) => ({
            spec, rank, seed, learningRate, steps: settings.finetuneSteps, batchSize: settings.finetuneBatchSize,
            sequence: settings.sequence, evalSequences: settings.evalSequences,
            startDir: spec.method === "lora" ? baseDir : startDirs.get(startKey(spec, rank))!,
          })),
        ),
      ),
    );
    const all = await runJobs(jobs, settings.workers, (run, done) =>
      onLine(`[${done}/${jobs.length}] ${run.method} ${run.bits}-bit T=${run.iterations} r=${run.rank} seed ${run.seed} lr ${run.learningRate}: perplexity ${run.startPerplexity.toFixed(2)} → ${run.perplexity.toFixed(2)}`),
    );
    // The learning-rate sweep: per method, rank and seed, the best held-out perplexity.
    const best = new Map<string, FinetuneRun>();
    for (const run of all) {
      const key = `${run.method}|${run.bits}|${run.iterations}|${run.rank}|${run.seed}`;
      const current = best.get(key);
      if (!current || run.perplexity < current.perplexity) best.set(key, run);
    }
    return { runs: [...best.values()], pretrainCurve, basePerplexity, seconds: { pretrain: pretrainSeconds, quantize: quantizeSeconds, finetune: lap() } };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Runs the jobs on `workers` child processes (each takes the next job when it finishes one); results in job order. */
async function runJobs(jobs: FinetuneJob[], workers: number, onRun: (run: FinetuneRun, done: number) => void): Promise<FinetuneRun[]> {
  const results: FinetuneRun[] = new Array(jobs.length);
  let done = 0;
  if (workers <= 0) {
    jobs.forEach((job, i) => onRun((results[i] = runJob(job)), ++done));
    return results;
  }
  let next = 0;
  const script = fileURLToPath(new URL("./finetune-job.js", import.meta.url));
  const children: ChildProcess[] = [];
  let failed = false;
  await Promise.all(
    Array.from({ length: Math.min(workers, jobs.length) }, () =>
      new Promise<void>((resolve, reject) => {
        const child = fork(script, ["--finetune-worker"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
        children.push(child);
        let current = -1;
        const dispatch = () => {
          current = !failed && next < jobs.length ? next++ : -1;
          child.send(current >= 0 ? { job: jobs[current] } : {});
        };
        child.on("message", (message: { ready?: boolean; run?: FinetuneRun }) => {
          if (message.run) onRun((results[current] = message.run), ++done);
          dispatch();
        });
        child.on("error", reject);
        child.on("exit", (code) => {
          if (current === -1 && code === 0) return resolve();
          // One worker failed: stop the others, whose work directory the caller is about to remove.
          if (!failed) for (const other of children) if (other !== child) other.kill();
          failed = true;
          reject(new Error(`fine-tuning worker exited with code ${code} during job ${current}`));
        });
      }),
    ),
  );
  return results;
}

/** Mean and spread per method and rank, as a Markdown table. */
export function summarise(runs: FinetuneRun[]): string {
  const groups = new Map<string, FinetuneRun[]>();
  for (const run of runs) {
    const key = `${run.method} | ${run.bits} | ${run.method === "loftq" ? run.iterations : "–"} | ${run.rank}`;
    groups.set(key, [...(groups.get(key) ?? []), run]);
  }
  const lines = [
    "| method | bits | T | r | before fine-tuning | after (mean ± sd) | seeds | best lr |",
    "|---|---|---|---|---|---|---|---|",
  ];
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  for (const [key, group] of groups) {
    const values = group.map((r) => r.perplexity);
    const m = mean(values);
    const sd = Math.sqrt(values.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, values.length - 1));
    const rates = [...new Set(group.map((r) => r.learningRate))].join(", ");
    lines.push(`| ${key} | ${mean(group.map((r) => r.startPerplexity)).toFixed(2)} | ${m.toFixed(2)} ± ${sd.toFixed(2)} | ${values.length} | ${rates} |`);
  }
  return lines.join("\n");
}

/** Fine-tuning loss curves (first seed, smallest rank), one polyline per method, smoothed over 10 steps. */
export function curvesSvg(runs: FinetuneRun[]): string {
  const rank = Math.min(...runs.map((r) => r.rank));
  const shown = runs.filter((r) => r.seed === runs[0]!.seed && r.rank === rank);
  const smooth = (curve: number[]) => curve.map((_, i) => {
    const window = curve.slice(Math.max(0, i - 9), i + 1);
    return window.reduce((a, b) => a + b, 0) / window.length;
  });
  const curves = shown.map((r) => smooth(r.curve));
  const width = 720;
  const height = 360;
  const pad = 50;
  const all = curves.flat();
  const [lo, hi] = [Math.min(...all), Math.max(...all)];
  const steps = Math.max(...curves.map((c) => c.length));
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000"];
  const lines = shown.map((r, i) => {
    const points = curves[i]!.map((v, s) => `${(pad + (s / Math.max(1, steps - 1)) * (width - 2 * pad)).toFixed(1)},${(height - pad - ((v - lo) / (hi - lo || 1)) * (height - 2 * pad)).toFixed(1)}`).join(" ");
    const color = colors[i % colors.length];
    return `<polyline points="${points}" fill="none" stroke="${color}"/><text x="${width - pad + 4}" y="${pad + 14 * i}" font-size="10" fill="${color}">${r.method} ${r.bits}${r.method === "loftq" ? ` T=${r.iterations}` : ""}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width + 120}" height="${height}"><text x="${pad}" y="20" font-size="12">fine-tuning training loss per step (seed ${shown[0]?.seed}, r=${rank}, 10-step mean)</text><text x="4" y="${pad}" font-size="10">${hi.toFixed(2)}</text><text x="4" y="${height - pad}" font-size="10">${lo.toFixed(2)}</text>${lines.join("")}</svg>\n`;
}

if (process.argv[1]?.endsWith("bench/finetune.js")) {
  const USAGE = `
node dist/bench/finetune.js [--smoke | --medium] [--workers N] [--fresh]
                            [--json FILE] [--svg FILE]   (nothing is written without them)

Pretrains a TinyLlama on the Brown corpus (cached under bench/.cache; --fresh retrains), then fine-tunes
LoRA, QLoRA and LoftQ adapters on State of the Union addresses and prints held-out perplexities.`;
  const args = parseBenchArgs(USAGE, {
    smoke: { type: "boolean" },
    medium: { type: "boolean" },
    workers: { type: "string", default: "" },
    fresh: { type: "boolean" },
    json: { type: "string", default: "" },
    svg: { type: "string", default: "" },
  });
  if (args.smoke && args.medium) usageError(USAGE, "--smoke and --medium are alternatives");
  const preset = args.smoke ? SMOKE : args.medium ? MEDIUM : FULL;
  const settings = { ...preset, workers: args.workers ? integer(USAGE, "workers", args.workers) : preset.workers };
  const started = performance.now();
  const result = await runFinetuneExperiment(settings, { fresh: args.fresh });
  const minutes = (performance.now() - started) / 60000;
  console.log(`\n${summarise(result.runs)}\n\nwall time ${minutes.toFixed(1)} min (pretraining ${(result.seconds.pretrain / 60).toFixed(1)}, quantization ${(result.seconds.quantize / 60).toFixed(1)}, fine-tuning ${(result.seconds.finetune / 60).toFixed(1)})`);
  const json = {
    settings: { ...settings, methods: undefined, workers: settings.workers },
    basePerplexity: result.basePerplexity,
    minutes: { ...Object.fromEntries(Object.entries(result.seconds).map(([k, v]) => [k, Number((v / 60).toFixed(2))])), total: Number(minutes.toFixed(2)) },
    runs: result.runs.map(({ curve: _curve, ...run }) => run),
  };
  // Written only where asked: a quick --smoke run must not replace the committed results.
  const jsonPath = args.json;
  const svgPath = args.svg;
  if (jsonPath) writeFileSync(jsonPath, JSON.stringify(json, null, 2) + "\n");
  if (svgPath) writeFileSync(svgPath, curvesSvg(result.runs));
}
