import type { KernelBackend } from "../kernels/backend.js";
import { getBackend } from "../kernels/registry.js";
import type { QuantizedMatrix, Quantizer } from "../quant/quantizer.js";
import { ShapeError } from "../errors.js";
import { checkShape, type Matrix } from "../tensor/matrix.js";
import type { BaseLayer } from "./layer.js";
import { linearForward, linearInputGrad } from "./linear.js";
import type { Parameter } from "./parameter.js";

/**
 * A frozen linear layer stored quantized (packed codes + scales). The weight is dequantized on the
 * fly for every product, or once and kept when `cacheDequantized` is set (memory for speed).
 */
export class QuantLinear implements BaseLayer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  private cached: Matrix | undefined;

  constructor(
    readonly quantized: QuantizedMatrix,
    private readonly quantizer: Quantizer,
    readonly bias: Float32Array | undefined = undefined,
    readonly cacheDequantized = false,
    private readonly backend: KernelBackend = getBackend(),
  ) {
    if (bias && bias.length !== quantized.rows) throw new ShapeError(`bias has ${bias.length} values for ${quantized.rows} outputs`);
    this.inFeatures = quantized.cols;
    this.outFeatures = quantized.rows;
  }

  denseWeight(): Matrix {
    if (this.cached) return this.cached;
    const weight = this.quantizer.dequantize(this.quantized);
    if (this.cacheDequantized) this.cached = weight;
    return weight;
  }

  forward(x: Matrix): Matrix {
    return linearForward(x, this.denseWeight(), this.bias, this.backend);
  }

  backward(x: Matrix, gradOutput: Matrix): Matrix {
    checkShape(x, x?.rows, this.inFeatures, "input");
    checkShape(gradOutput, x.rows, this.outFeatures, "gradient of the output");
    return linearInputGrad(gradOutput, this.denseWeight(), this.backend);
  }

  parameters(): Parameter[] {
    return [];
  }

  /** Stored values: one per weight (held as codes) plus the bias. */
  parameterCount(): number {
    return this.quantized.rows * this.quantized.cols + (this.bias?.length ?? 0);
  }
}
