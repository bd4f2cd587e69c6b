/**
 * The paper's claim on a small real language model (a benchmark, not a test):
 * pretrain a TinyLlama on the Brown corpus, then fine-tune LoRA adapters on State of the Union
 * addresses and report held-out perplexity for full-precision LoRA, QLoRA (zero-init B) and LoftQ
 * at several bit widths, over a learning-rate sweep (best reported) and several seeds.
 *
 *   node dist/bench/finetune.js [--smoke | --medium] [--json bench/results/finetune.json] [--svg bench/results/finetune.svg]
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brownCorpus, sotuAddresses } from "../src/io/text-corpora.js";
import { saveTinyLlama, loadLoftqForFineTuning, loadTinyLlama } from "../src/io/tiny-llama-checkpoint.js";
import { quantizeCheckpoint } from "../src/io/quantize-checkpoint.js";
import { BYTE_VOCAB_SIZE, encodeBytes } from "../src/nn/byte-tokenizer.js";
import { TinyLlama, type TinyLlamaConfig } from "../src/nn/tiny-llama.js";
import { LoraLinear } from "../src/nn/lora-linear.js";
import { Linear } from "../src/nn/linear.js";
import { AdamW, clipGradNorm, cosineSchedule } from "../src/nn/optim.js";
import { zeroGrad } from "../src/nn/parameter.js";
import { mulberry32 } from "../src/linalg/random.js";

export interface FinetuneSettings {
  model: TinyLlamaConfig;
  sequence: number;
  /** Sequences per optimizer step (each step trains on batchSize · sequence tokens). */
  batchSize: number;
  pretrainSteps: number;
  finetuneSteps: number;
  rank: number;
  learningRates: number[];
  seeds: number[];
  /** Methods: "lora" (16-bit), "qlora" / "loftq" at the given bits; "2/4" = mixed (first half of the blocks 4-bit). */
  methods: Array<{ method: "lora" | "qlora" | "loftq"; bits: 16 | 4 | 3 | 2 | "2/4"; iterations: number }>;
  evalSequences: number;
}

export interface FinetuneRun {
  method: string; bits: number | string; iterations: number; rank: number; seed: number; steps: number;
  learningRate: number; perplexity: number;
  /** Held-out perplexity of the starting point (before any fine-tuning step): the sanity check. */
  startPerplexity: number;
  curve: number[];
}

export const SMOKE: FinetuneSettings = {
  model: { vocabSize: BYTE_VOCAB_SIZE, hiddenSize: 64, intermediateSize: 128, layers: 2, heads: 4 },
  sequence: 32, batchSize: 2, pretrainSteps: 40, finetuneSteps: 10, rank: 4, learningRates: [3e-3], seeds: [0], evalSequences: 4,
  methods: [
    { method: "lora", bits: 16, iterations: 0 },
    { method: "qlora", bits: 2, iterations: 0 },
    { method: "loftq", bits: 2, iterations: 1 },
  ],
};

/**
 * Sized for the 60-minute budget on 2 cores: a 3.5M-parameter model at sequence 128 trains at
 * ~0.4 s/step here, so the full grid (11 methods × 3 seeds × 2 learning rates) uses a ~2M-parameter
 * model at sequence 96 and 200 fine-tuning steps.
 */
export const FULL: FinetuneSettings = {
  model: { vocabSize: BYTE_VOCAB_SIZE, hiddenSize: 192, intermediateSize: 512, layers: 4, heads: 6 },
  sequence: 96, batchSize: 16, pretrainSteps: 2000, finetuneSteps: 200, rank: 8, learningRates: [1e-3, 3e-3], seeds: [0, 1, 2], evalSequences: 64,
  methods: [
    { method: "lora", bits: 16, iterations: 0 },
    ...([4, 3, 2] as const).map((bits) => ({ method: "qlora" as const, bits, iterations: 0 })),
    ...([4, 3, 2] as const).flatMap((bits) => [1, 5].map((iterations) => ({ method: "loftq" as const, bits, iterations }))),
    { method: "loftq", bits: "2/4", iterations: 5 },
  ],
};

/** Random windows of a token stream. */
export function sampler(stream: Int32Array, length: number, seed: number) {
  const random = mulberry32(seed);
  return () => {
    const start = Math.floor(random() * (stream.length - length - 1));
    return stream.subarray(start, start + length + 1);
  };
}

export function train(model: TinyLlama, next: () => Int32Array, steps: number, batchSize: number, peak: number, curve?: number[]): void {
  const parameters = model.parameters();
  const optimizer = new AdamW(parameters, { lr: peak, weightDecay: 0.01 });
  for (let step = 0; step < steps; step++) {
    zeroGrad(parameters);
    const loss = model.trainStep(Array.from({ length: batchSize }, next));
    clipGradNorm(parameters, 1);
    optimizer.lr = cosineSchedule(step, { peak, total: steps, warmup: Math.ceil(steps / 20), min: peak / 10 });
    optimizer.update();
    curve?.push(loss);
  }
}

/** exp(mean per-token loss) over equally long sequences, evaluated a batch at a time. */
export function perplexity(model: TinyLlama, sequences: Int32Array[], batchSize = 16): number {
  let total = 0;
  for (let i = 0; i < sequences.length; i += batchSize) {
    const batch = sequences.slice(i, i + batchSize);
    total += model.loss(batch) * batch.length;
  }
  return Math.exp(total / sequences.length);
}

export function runFinetuneExperiment(settings: FinetuneSettings, onLine: (line: string) => void = console.log): FinetuneRun[] {
  const work = mkdtempSync(join(tmpdir(), "loftq-finetune-"));
  try {
    const brown = encodeBytes(brownCorpus().join("\n"));
    const sotu = sotuAddresses(1900);
    const heldOut = encodeBytes(sotu.slice(-4).map((a) => a.text).join("\n"));
    const heldIn = encodeBytes(sotu.slice(0, -4).map((a) => a.text).join("\n"));
    const evalSampler = sampler(heldOut, settings.sequence, 12345);
    const evalSet = Array.from({ length: settings.evalSequences }, () => Int32Array.from(evalSampler()));

    const started = performance.now();
    const base = new TinyLlama(settings.model, undefined, 7);
    const pretrainCurve: number[] = [];
    train(base, sampler(brown, settings.sequence, 1), settings.pretrainSteps, settings.batchSize, 3e-3, pretrainCurve);
    onLine(`pretrained ${settings.pretrainSteps} steps on Brown in ${((performance.now() - started) / 1000).toFixed(0)} s: held-out SOTU perplexity ${perplexity(base, evalSet).toFixed(2)}`);
    const baseDir = join(work, "base");
    saveTinyLlama(base, baseDir);

    const runs: FinetuneRun[] = [];
    for (const spec of settings.methods) {
      const startModel = (): TinyLlama => {
        if (spec.method === "lora") return loraOver(loadTinyLlama(baseDir), settings.rank);
        const out = join(work, `${spec.method}-${spec.bits}-${spec.iterations}`);
        const mixed = spec.bits === "2/4";
        quantizeCheckpoint({
          input: baseDir, output: out, force: true, rank: settings.rank, loraAlpha: 2 * settings.rank,
          bits: mixed ? 3 : (spec.bits as number), ...(mixed ? { mixed: true } : {}),
          iterations: Math.max(1, spec.iterations),
        });
        // QLoRA starts from Q alone with PEFT's init; LoftQ from Q with the LoftQ adapters.
        return spec.method === "loftq" ? loadLoftqForFineTuning(out) : loraOver(loadTinyLlama(out), settings.rank);
      };
      for (const seed of settings.seeds) {
        let best: FinetuneRun | undefined;
        for (const learningRate of settings.learningRates) {
          const model = startModel();
          const startPerplexity = perplexity(model, evalSet);
          const curve: number[] = [];
          train(model, sampler(heldIn, settings.sequence, 100 + seed), settings.finetuneSteps, settings.batchSize, learningRate, curve);
          const run: FinetuneRun = {
            method: spec.method, bits: spec.bits, iterations: spec.iterations, rank: settings.rank, seed,
            steps: settings.finetuneSteps, learningRate, perplexity: perplexity(model, evalSet), startPerplexity, curve,
          };
          if (!best || run.perplexity < best.perplexity) best = run;
        }
        runs.push(best!);
        onLine(`${best!.method} ${best!.bits}-bit T=${best!.iterations} seed ${seed}: perplexity ${best!.startPerplexity.toFixed(2)} → ${best!.perplexity.toFixed(2)} (lr ${best!.learningRate})`);
      }
    }
    return runs;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function loraOver(model: TinyLlama, rank: number): TinyLlama {
  model.freezeNonLinear();
  model.replaceLinears((_, __, current) => new LoraLinear(new Linear((current as Linear).denseWeight(), undefined, true), { rank, alpha: 2 * rank }));
  return model;
}

/** Mean and spread per method, as a Markdown table. */
export function summarise(runs: FinetuneRun[]): string {
  const groups = new Map<string, FinetuneRun[]>();
  for (const run of runs) {
    const key = `${run.method} | ${run.bits} | ${run.method === "loftq" ? run.iterations : "–"}`;
    groups.set(key, [...(groups.get(key) ?? []), run]);
  }
  const lines = ["| method | bits | T | before fine-tuning | perplexity (mean ± sd) | seeds |", "|---|---|---|---|---|---|"];
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  for (const [key, group] of groups) {
    const values = group.map((r) => r.perplexity);
    const m = mean(values);
    const sd = Math.sqrt(values.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, values.length - 1));
    lines.push(`| ${key} | ${mean(group.map((r) => r.startPerplexity)).toFixed(2)} | ${m.toFixed(2)} ± ${sd.toFixed(2)} | ${values.length} |`);
  }
  return lines.join("\n");
}

/** Fine-tuning loss curves (seed 0), one polyline per method. */
export function curvesSvg(runs: FinetuneRun[]): string {
  const shown = runs.filter((r) => r.seed === runs[0]!.seed);
  const width = 720;
  const height = 360;
  const pad = 50;
  const all = shown.flatMap((r) => r.curve);
  const [lo, hi] = [Math.min(...all), Math.max(...all)];
  const steps = Math.max(...shown.map((r) => r.curve.length));
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000"];
  const lines = shown.map((r, i) => {
    const points = r.curve.map((v, s) => `${(pad + (s / Math.max(1, steps - 1)) * (width - 2 * pad)).toFixed(1)},${(height - pad - ((v - lo) / (hi - lo || 1)) * (height - 2 * pad)).toFixed(1)}`).join(" ");
    return `<polyline points="${points}" fill="none" stroke="${colors[i % colors.length]}"/><text x="${width - pad + 4}" y="${pad + 14 * i}" font-size="10" fill="${colors[i % colors.length]}">${r.method} ${r.bits}${r.method === "loftq" ? ` T=${r.iterations}` : ""}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width + 120}" height="${height}"><text x="${pad}" y="20" font-size="12">fine-tuning loss per step (seed ${shown[0]?.seed})</text><text x="4" y="${pad}" font-size="10">${hi.toFixed(2)}</text><text x="4" y="${height - pad}" font-size="10">${lo.toFixed(2)}</text>${lines.join("")}</svg>\n`;
}

/** A ~10-minute cut of FULL: fewer methods, one learning rate, two seeds, shorter runs. */
export const MEDIUM: FinetuneSettings = {
  ...FULL,
  pretrainSteps: 1000, finetuneSteps: 100, learningRates: [3e-3], seeds: [0, 1], evalSequences: 32,
  methods: [
    { method: "lora", bits: 16, iterations: 0 },
    { method: "qlora", bits: 4, iterations: 0 },
    { method: "qlora", bits: 2, iterations: 0 },
    { method: "loftq", bits: 4, iterations: 1 },
    { method: "loftq", bits: 2, iterations: 1 },
    { method: "loftq", bits: 2, iterations: 5 },
    { method: "loftq", bits: "2/4", iterations: 5 },
  ],
};

if (process.argv[1]?.endsWith("bench/finetune.js")) {
  const settings = process.argv.includes("--smoke") ? SMOKE : process.argv.includes("--medium") ? MEDIUM : FULL;
  const arg = (name: string, fallback: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
  };
  const runs = runFinetuneExperiment(settings);
  console.log("\n" + summarise(runs));
  writeFileSync(arg("json", "bench/results/finetune.json"), JSON.stringify({ runs: runs.map(({ curve: _curve, ...run }) => run) }, null, 2) + "\n");
  writeFileSync(arg("svg", "bench/results/finetune.svg"), curvesSvg(runs));
}
