import { InvalidArgumentError, ShapeError } from "../errors.js";
import type { KernelBackend } from "../kernels/backend.js";
import { getBackend } from "../kernels/registry.js";
import { checkSeed, mulberry32 } from "../linalg/random.js";
import { checkOptionalBoolean, checkOptionKeys, optionKeysOf } from "../options.js";
import type { Quantizer } from "../quant/quantizer.js";
import { checkMatrix, checkShape, frobeniusDistance, frobeniusNorm, type Matrix } from "../tensor/matrix.js";
import type { BaseLayer, Layer } from "./layer.js";
import { Linear, linearInputGrad } from "./linear.js";
import { parameter, type Parameter } from "./parameter.js";
import { QuantLinear } from "./quant-linear.js";

/**
 * LoRA on any base, which it keeps frozen: Y = base(X) + s · drop(X)·Aᵀ·Bᵀ with A r×in, B out×r and
 * s = alpha/r (alpha/√r with rsLoRA). Only A and B train: backward never calls the base's backward
 * (a trainable Linear would otherwise accumulate a full weight gradient nobody steps). `merge` folds
 * s·B·A into the dense (dequantized) base and returns a plain Linear; `unmerge` takes it out again;
 * both go through `deltaWeight`, as PEFT does.
 */
export interface LoraOptions {
  rank: number;
  alpha?: number;
  useRslora?: boolean;
  /** Dropout on the adapter's input during training (default 0). */
  dropout?: number;
  /**
   * Seed of A's initialisation and of the dropout masks. Default: a different seed for every layer
   * made in this process (0, 1, 2, … in construction order), as PyTorch's global generator gives
   * each PEFT layer its own draws; pass one per layer (e.g. `layerSeed`) for runs that must not
   * depend on construction order.
   */
  seed?: number;
  /** Initial A (r×in) and B (out×r); default PEFT's: A Kaiming-uniform, B = 0. */
  init?: { a: Matrix; b: Matrix };
}

const LORA_OPTION_KEYS = optionKeysOf<LoraOptions>()(["rank", "alpha", "useRslora", "dropout", "seed", "init"]);

/** Seeds handed to layers made without one (see LoraOptions.seed). */
let nextDefaultSeed = 0;

/** A per-layer seed from a run's seed and the layer's name, so layers never share draws. */
export function layerSeed(seed: number, name: string): number {
  let hash = Math.imul(seed >>> 0, 0x9e3779b1) ^ 0x811c9dc5;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

export class LoraLinear implements Layer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly rank: number;
  readonly scaling: number;
  readonly a: Parameter;
  readonly b: Parameter;
  readonly dropout: number;
  training = true;
  private readonly random: () => number;
  /** The last forward pass's input, its dropped-out copy and mask (undefined: no dropout), and X̃·Aᵀ. */
  private saved: { input: Matrix; dropped: Matrix; mask: Uint8Array | undefined; projected: Matrix } | undefined;

  constructor(readonly base: BaseLayer, options: LoraOptions, private readonly backend: KernelBackend = getBackend()) {
    checkOptionKeys(options, LORA_OPTION_KEYS, "LoraLinear", false);
    checkOptionalBoolean(options.useRslora, "useRslora");
    if (options.seed !== undefined) checkSeed(options.seed);
    const { rank } = options;
    if (!Number.isInteger(rank) || rank < 1) throw new InvalidArgumentError(`rank must be a positive integer, got ${rank}`);
    const dropout = options.dropout ?? 0;
    if (!(dropout >= 0 && dropout < 1)) throw new InvalidArgumentError(`dropout must be in [0, 1), got ${dropout}`);
    this.inFeatures = base.inFeatures;
    this.outFeatures = base.outFeatures;
    this.rank = rank;
    const alpha = options.alpha ?? rank;
    if (!(alpha > 0) || !Number.isFinite(alpha)) throw new InvalidArgumentError(`alpha must be a positive number, got ${alpha}`);
    this.scaling = alpha / (options.useRslora ? Math.sqrt(rank) : rank);
    this.dropout = dropout;
    this.random = mulberry32(options.seed ?? nextDefaultSeed++);
    if (options.init) {
      const { a, b } = options.init;
      checkMatrix(a, "LoRA init A");
      checkMatrix(b, "LoRA init B");
      if (a.rows !== rank || a.cols !== base.inFeatures || b.rows !== base.outFeatures || b.cols !== rank) {
        throw new ShapeError(`LoRA init A ${a.rows}×${a.cols}, B ${b.rows}×${b.cols} does not fit rank ${rank} on ${base.outFeatures}×${base.inFeatures}`);
      }
      this.a = parameter("lora_A", Float32Array.from(a.data));
      this.b = parameter("lora_B", Float32Array.from(b.data));
    } else {
      const bound = 1 / Math.sqrt(base.inFeatures);
      this.a = parameter("lora_A", Float32Array.from({ length: rank * base.inFeatures }, () => (2 * this.random() - 1) * bound));
      this.b = parameter("lora_B", new Float32Array(base.outFeatures * rank));
    }
  }

  /**
   * Keeps a reference to `x` for backward: change its values in between and the gradients mix the
   * two (A's from the new values, B's from the old projection).
   */
  forward(x: Matrix): Matrix {
    checkShape(x, x?.rows, this.inFeatures, "input");
    const y = this.base.forward(x);
    const mask = this.training && this.dropout > 0 ? Uint8Array.from(x.data, () => (this.random() < this.dropout ? 0 : 1)) : undefined;
    const keep = 1 - this.dropout;
    const dropped = mask ? { rows: x.rows, cols: x.cols, data: x.data.map((v, i) => (mask[i] ? v / keep : 0)) } : x;
    const projected = this.product(dropped, this.a.value, this.rank, this.inFeatures, true); // X̃·Aᵀ (batch×r)
    this.saved = { input: x, dropped, mask, projected };
    // y += s · (X̃·Aᵀ)·Bᵀ
    this.backend.gemm({ transA: false, transB: true, m: x.rows, n: this.outFeatures, k: this.rank, alpha: this.scaling, a: projected.data, b: this.b.value, beta: 1, c: y.data });
    return y;
  }

  backward(x: Matrix, gradOutput: Matrix): Matrix {
    const saved = this.saved;
    // The adapter's gradients come from what the forward pass saved (X̃·Aᵀ, the dropout mask): they
    // belong to that pass's input only, not to one passed later.
    if (!saved || saved.input !== x) throw new InvalidArgumentError("backward(x, dY) must follow forward(x) of the same x, with no other forward pass in between");
    checkShape(gradOutput, x.rows, this.outFeatures, "gradient of the output");
    const { dropped, mask, projected } = saved;
    const s = this.scaling;
    // dB += s · dYᵀ·P (out×r); dP = s · dY·B (batch×r); dA += dPᵀ·X̃ (r×in).
    this.backend.gemm({ transA: true, transB: false, m: this.outFeatures, n: this.rank, k: x.rows, alpha: s, a: gradOutput.data, b: projected.data, beta: 1, c: this.b.grad });
    const gradProjected = new Float32Array(x.rows * this.rank);
    this.backend.gemm({ transA: false, transB: false, m: x.rows, n: this.rank, k: this.outFeatures, alpha: s, a: gradOutput.data, b: this.b.value, beta: 0, c: gradProjected });
    this.backend.gemm({ transA: true, transB: false, m: this.rank, n: this.inFeatures, k: x.rows, alpha: 1, a: gradProjected, b: dropped.data, beta: 1, c: this.a.grad });
    // dX = dY·W (the frozen base's part) + dP·A (through the dropout mask).
    const gradInput = linearInputGrad(gradOutput, this.base.denseWeight(), this.backend);
    const adapterGrad = new Float32Array(x.rows * this.inFeatures);
    this.backend.gemm({ transA: false, transB: false, m: x.rows, n: this.inFeatures, k: this.rank, alpha: 1, a: gradProjected, b: this.a.value, beta: 0, c: adapterGrad });
    if (mask) {
      const keep = 1 - this.dropout;
      for (let i = 0; i < adapterGrad.length; i++) adapterGrad[i] = mask[i] ? adapterGrad[i]! / keep : 0;
    }
    for (let i = 0; i < adapterGrad.length; i++) gradInput.data[i]! += adapterGrad[i]!;
    return gradInput;
  }

  parameters(): Parameter[] {
    return [this.a, this.b];
  }

  parameterCount(): number {
    return this.base.parameterCount() + this.a.value.length + this.b.value.length;
  }

  trainableParameterCount(): number {
    return this.a.value.length + this.b.value.length;
  }

  /** s·B·A (out×in): the one function behind merge and unmerge. */
  deltaWeight(): Matrix {
    const out = new Float32Array(this.outFeatures * this.inFeatures);
    this.backend.gemm({ transA: false, transB: false, m: this.outFeatures, n: this.inFeatures, k: this.rank, alpha: this.scaling, a: this.b.value, b: this.a.value, beta: 0, c: out });
    return { rows: this.outFeatures, cols: this.inFeatures, data: out };
  }

  /** A dense Linear with W = base + s·B·A (the base dequantized when quantized); the adapter is unchanged. */
  merge(): Linear {
    const base = this.base.denseWeight();
    const delta = this.deltaWeight();
    const merged = new Float32Array(base.data.length);
    for (let i = 0; i < merged.length; i++) merged[i] = base.data[i]! + delta.data[i]!;
    return new Linear({ rows: base.rows, cols: base.cols, data: merged }, this.base.bias ? Float32Array.from(this.base.bias) : undefined, false, this.backend);
  }

  /**
   * The base weight back from a merged Linear: W − s·B·A, with this adapter's current A and B, so
   * exact only while they are what `merge` used (train on after merging and it is off by the change).
   * For a quantized base this is Q dequantized (to float32 rounding), not a QuantLinear.
   */
  unmerge(merged: Linear): Matrix {
    if (!(merged instanceof Linear)) throw new InvalidArgumentError("unmerge takes the Linear that merge() returned");
    checkShape(merged.denseWeight(), this.outFeatures, this.inFeatures, "merged weight");
    const delta = this.deltaWeight();
    const out = new Float32Array(delta.data.length);
    for (let i = 0; i < out.length; i++) out[i] = merged.weight.value[i]! - delta.data[i]!;
    return { rows: this.outFeatures, cols: this.inFeatures, data: out };
  }

  private product(x: Matrix, weight: Float32Array, outFeatures: number, inFeatures: number, transposeWeight: boolean): Matrix {
    const out = new Float32Array(x.rows * outFeatures);
    this.backend.gemm({ transA: false, transB: transposeWeight, m: x.rows, n: outFeatures, k: inFeatures, alpha: 1, a: x.data, b: weight, beta: 0, c: out });
    return { rows: x.rows, cols: outFeatures, data: out };
  }
}

/**
 * Quantizes a merged (dense) weight again. Merging LoRA into a quantized base and re-quantizing
 * loses what the adapter learned below the quantization step, so this is never done implicitly:
 * call it explicitly; `onWarning` receives the measured relative loss.
 */
export function requantizeMerged(merged: Linear, quantizer: Quantizer, onWarning: (message: string, relativeError: number) => void): QuantLinear {
  const weight = merged.denseWeight();
  const quantized = quantizer.quantize(weight);
  const back = quantizer.dequantize(quantized).data;
  const relativeError = frobeniusDistance(back, weight.data) / (frobeniusNorm(weight.data) || 1);
  onWarning(`re-quantizing a merged LoRA weight with ${quantizer.name} loses ${(relativeError * 100).toFixed(2)}% of it (relative Frobenius error)`, relativeError);
  return new QuantLinear(quantized, quantizer, merged.bias ? Float32Array.from(merged.bias) : undefined);
}
