import { InvalidArgumentError } from "../errors.js";
import { checkOptionKeys, optionKeysOf } from "../options.js";
import type { Parameter } from "./parameter.js";

/**
 * AdamW (Loshchilov & Hutter): Adam moments with bias correction and decoupled weight decay
 * (p ← p − lr·λ·p, applied separately from the gradient step). Moments are float64 per element.
 */
export interface AdamWOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

const ADAMW_OPTION_KEYS = optionKeysOf<AdamWOptions>()(["lr", "beta1", "beta2", "eps", "weightDecay"]);

/** A learning rate must be finite and non-negative (0 freezes); NaN would turn every parameter into NaN. */
function checkLearningRate(lr: number): void {
  if (!(lr >= 0) || !Number.isFinite(lr)) throw new InvalidArgumentError(`AdamW: lr must be a finite number ≥ 0, got ${lr}`);
}

export class AdamW {
  private step = 0;
  private readonly moments = new Map<Parameter, { m: Float64Array; v: Float64Array }>();
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  lr: number;

  constructor(readonly parameters: readonly Parameter[], options: AdamWOptions = {}) {
    checkOptionKeys(options, ADAMW_OPTION_KEYS, "AdamW");
    this.lr = options.lr ?? 1e-3;
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.01;
    if (!(this.lr > 0) || !(this.beta1 >= 0 && this.beta1 < 1) || !(this.beta2 >= 0 && this.beta2 < 1)) {
      throw new InvalidArgumentError(`AdamW needs lr > 0 and betas in [0, 1), got lr ${this.lr}, betas ${this.beta1}, ${this.beta2}`);
    }
    checkLearningRate(this.lr);
    if (!(this.eps > 0) || !Number.isFinite(this.eps)) throw new InvalidArgumentError(`AdamW: eps must be a finite number > 0, got ${this.eps}`);
    if (!(this.weightDecay >= 0) || !Number.isFinite(this.weightDecay)) throw new InvalidArgumentError(`AdamW: weightDecay must be a finite number ≥ 0, got ${this.weightDecay}`);
    // One parameter listed twice would take two steps per update on shared moments.
    const seen = new Set<Parameter>();
    for (const p of parameters) {
      if (seen.has(p)) throw new InvalidArgumentError(`AdamW: parameter "${p.name}" is listed twice`);
      seen.add(p);
    }
  }

  /** One update from the accumulated gradients (which the caller zeroes: `zeroGrad`). */
  update(): void {
    checkLearningRate(this.lr); // a schedule sets it between updates
    this.step++;
    const correction1 = 1 - this.beta1 ** this.step;
    const correction2 = 1 - this.beta2 ** this.step;
    for (const p of this.parameters) {
      let state = this.moments.get(p);
      if (!state) {
        state = { m: new Float64Array(p.value.length), v: new Float64Array(p.value.length) };
        this.moments.set(p, state);
      }
      const { m, v } = state;
      for (let i = 0; i < p.value.length; i++) {
        const g = p.grad[i]!;
        m[i] = this.beta1 * m[i]! + (1 - this.beta1) * g;
        v[i] = this.beta2 * v[i]! + (1 - this.beta2) * g * g;
        const update = m[i]! / correction1 / (Math.sqrt(v[i]! / correction2) + this.eps);
        p.value[i] = p.value[i]! - this.lr * (update + this.weightDecay * p.value[i]!);
      }
    }
  }
}

/** Linear warmup to `peak`, then cosine decay to `min` at `total` steps (step counted from 0). */
export function cosineSchedule(step: number, options: { peak: number; total: number; warmup?: number; min?: number }): number {
  const { peak, total } = options;
  const warmup = options.warmup ?? 0;
  const min = options.min ?? 0;
  if (!Number.isInteger(total) || total < 1) throw new InvalidArgumentError(`cosineSchedule: total must be a positive integer, got ${total}`);
  if (!Number.isInteger(warmup) || warmup < 0 || warmup > total) throw new InvalidArgumentError(`cosineSchedule: warmup must be an integer in 0..${total}, got ${warmup}`);
  if (!Number.isFinite(peak) || !Number.isFinite(min)) throw new InvalidArgumentError(`cosineSchedule: peak and min must be finite, got ${peak}, ${min}`);
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  return min + 0.5 * (peak - min) * (1 + Math.cos(Math.PI * progress));
}

/** Scales all gradients so their global L2 norm is at most `maxNorm`; returns the norm before. */
export function clipGradNorm(parameters: readonly Parameter[], maxNorm: number): number {
  // A negative bound would flip every gradient's sign (training uphill), NaN would skip clipping.
  if (!(maxNorm > 0)) throw new InvalidArgumentError(`clipGradNorm: maxNorm must be > 0, got ${maxNorm}`);
  let sum = 0;
  for (const p of parameters) for (const g of p.grad) sum += g * g;
  const norm = Math.sqrt(sum);
  if (norm > maxNorm && norm > 0) {
    const factor = maxNorm / norm;
    for (const p of parameters) for (let i = 0; i < p.grad.length; i++) p.grad[i] = p.grad[i]! * factor;
  }
  return norm;
}
