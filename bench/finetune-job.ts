/**
 * One fine-tuning run of the experiment in bench/finetune.ts, and the child-process entry that runs
 * a queue of them: the grid is embarrassingly parallel, and on this machine class two processes on
 * the single-threaded WebAssembly kernels get more done than one process on both threads.
 */
import { sotuAddresses } from "../src/io/text-corpora.js";
import { loadLoftqForFineTuning, loadTinyLlama } from "../src/io/tiny-llama-checkpoint.js";
import { encodeBytes } from "../src/nn/byte-tokenizer.js";
import { Linear } from "../src/nn/linear.js";
import { layerSeed, LoraLinear } from "../src/nn/lora-linear.js";
import { AdamW, clipGradNorm, cosineSchedule } from "../src/nn/optim.js";
import { zeroGrad } from "../src/nn/parameter.js";
import type { TinyLlama } from "../src/nn/tiny-llama.js";
import { mulberry32 } from "../src/linalg/random.js";

export type Bits = 16 | 4 | 3 | 2 | "2/4";

export interface MethodSpec {
  method: "lora" | "qlora" | "loftq";
  bits: Bits;
  /** LoftQ alternations (0 for LoRA and QLoRA). */
  iterations: number;
}

export interface FinetuneJob {
  spec: MethodSpec;
  rank: number;
  seed: number;
  learningRate: number;
  steps: number;
  batchSize: number;
  sequence: number;
  evalSequences: number;
  /** Checkpoint the run starts from: the pretrained model (LoRA) or `loftq quantize`'s output. */
  startDir: string;
}

export interface FinetuneRun {
  method: MethodSpec["method"]; bits: Bits; iterations: number; rank: number; seed: number; steps: number;
  learningRate: number; perplexity: number;
  /** Held-out perplexity of the starting point (before any fine-tuning step): the sanity check. */
  startPerplexity: number;
  /** Training loss per step. */
  curve: number[];
}

/** Random windows of a token stream (length + 1 tokens: inputs and next-token targets). */
export function sampler(stream: Int32Array, length: number, seed: number): () => Int32Array {
  const random = mulberry32(seed);
  return () => {
    const start = Math.floor(random() * (stream.length - length - 1));
    return stream.subarray(start, start + length + 1);
  };
}

/** AdamW with cosine decay after a 5 % warmup, gradient clipping at 1; one batch per step. */
export function train(
  model: TinyLlama, next: () => Int32Array, steps: number, batchSize: number, peak: number,
  curve?: number[], onStep?: (step: number, loss: number) => void,
): void {
  const parameters = model.parameters();
  const optimizer = new AdamW(parameters, { lr: peak, weightDecay: 0.01 });
  for (let step = 0; step < steps; step++) {
    zeroGrad(parameters);
    const loss = model.trainStep(Array.from({ length: batchSize }, next));
    clipGradNorm(parameters, 1);
    optimizer.lr = cosineSchedule(step, { peak, total: steps, warmup: Math.ceil(steps / 20), min: peak / 10 });
    optimizer.update();
    curve?.push(loss);
    onStep?.(step, loss);
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

/** State of the Union addresses from 1900 on: the last four held out, the rest to fine-tune on. */
export function sotuSplits(sequence: number, evalSequences: number): { heldIn: Int32Array; evalSet: Int32Array[] } {
  const sotu = sotuAddresses(1900);
  const heldOut = encodeBytes(sotu.slice(-4).map((a) => a.text).join("\n"));
  const heldIn = encodeBytes(sotu.slice(0, -4).map((a) => a.text).join("\n"));
  const next = sampler(heldOut, sequence, 12345);
  return { heldIn, evalSet: Array.from({ length: evalSequences }, () => Int32Array.from(next())) };
}

/** Plain LoRA adapters (PEFT init: A random, B zero) over every block linear, the rest frozen. */
export function loraOver(model: TinyLlama, rank: number, seed: number): TinyLlama {
  model.freezeNonLinear();
  model.replaceLinears((layer, role, current) =>
    new LoraLinear(new Linear((current as Linear).denseWeight(), undefined, true), { rank, alpha: 2 * rank, seed: layerSeed(seed, `model.layers.${layer}.${role}`) }),
  );
  return model;
}

export function runJob(job: FinetuneJob, data = sotuSplits(job.sequence, job.evalSequences)): FinetuneRun {
  // QLoRA starts from Q alone with PEFT's init; LoftQ from Q with the LoftQ adapters.
  const model = job.spec.method === "loftq" ? loadLoftqForFineTuning(job.startDir) : loraOver(loadTinyLlama(job.startDir), job.rank, job.seed);
  const startPerplexity = perplexity(model, data.evalSet);
  const curve: number[] = [];
  train(model, sampler(data.heldIn, job.sequence, 100 + job.seed), job.steps, job.batchSize, job.learningRate, curve);
  return {
    method: job.spec.method, bits: job.spec.bits, iterations: job.spec.iterations, rank: job.rank, seed: job.seed,
    steps: job.steps, learningRate: job.learningRate, perplexity: perplexity(model, data.evalSet), startPerplexity, curve,
  };
}

// Child-process entry: ask for a job, run it, send the run back, until told to stop.
if (process.send && process.argv.includes("--finetune-worker")) {
  let data: ReturnType<typeof sotuSplits> | undefined;
  process.on("message", (message: { job?: FinetuneJob }) => {
    if (!message.job) process.exit(0);
    const job = message.job;
    data ??= sotuSplits(job.sequence, job.evalSequences);
    process.send!({ run: runJob(job, data) });
  });
  process.send({ ready: true });
}
