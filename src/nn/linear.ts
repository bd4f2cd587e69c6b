import { ShapeError } from "../errors.js";
import type { KernelBackend } from "../kernels/backend.js";
import { getBackend } from "../kernels/registry.js";
import { checkMatrix, checkShape, type Matrix } from "../tensor/matrix.js";
import type { BaseLayer } from "./layer.js";
import { parameter, type Parameter } from "./parameter.js";

/** Y = X·Wᵀ + b with W out×in (PyTorch's orientation). Trainable unless `frozen`. */
export class Linear implements BaseLayer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Parameter;
  readonly biasParameter: Parameter | undefined;

  constructor(weight: Matrix, bias?: Float32Array, readonly frozen = false, private readonly backend: KernelBackend = getBackend()) {
    checkMatrix(weight, "weight");
    if (bias && bias.length !== weight.rows) throw new ShapeError(`bias has ${bias.length} values for ${weight.rows} outputs`);
    this.inFeatures = weight.cols;
    this.outFeatures = weight.rows;
    this.weight = parameter("weight", weight.data);
    this.biasParameter = bias ? parameter("bias", bias) : undefined;
  }

  get bias(): Float32Array | undefined {
    return this.biasParameter?.value;
  }

  denseWeight(): Matrix {
    return { rows: this.outFeatures, cols: this.inFeatures, data: this.weight.value };
  }

  forward(x: Matrix): Matrix {
    return linearForward(x, this.denseWeight(), this.bias, this.backend);
  }

  backward(x: Matrix, gradOutput: Matrix): Matrix {
    checkShape(x, x.rows, this.inFeatures, "input");
    checkShape(gradOutput, x.rows, this.outFeatures, "gradient of the output");
    if (!this.frozen) {
      // dW += dYᵀ·X (out×in), db += column sums of dY.
      this.backend.gemm({ transA: true, transB: false, m: this.outFeatures, n: this.inFeatures, k: x.rows, alpha: 1, a: gradOutput.data, b: x.data, beta: 1, c: this.weight.grad });
      if (this.biasParameter) addColumnSums(gradOutput, this.biasParameter.grad);
    }
    return linearInputGrad(gradOutput, this.denseWeight(), this.backend);
  }

  parameters(): Parameter[] {
    if (this.frozen) return [];
    return this.biasParameter ? [this.weight, this.biasParameter] : [this.weight];
  }

  parameterCount(): number {
    return this.weight.value.length + (this.bias?.length ?? 0);
  }
}

export function linearForward(x: Matrix, weight: Matrix, bias: Float32Array | undefined, backend: KernelBackend): Matrix {
  checkMatrix(x, "input");
  if (x.cols !== weight.cols) throw new ShapeError(`input has ${x.cols} features, the layer expects ${weight.cols}`);
  const out = new Float32Array(x.rows * weight.rows);
  if (bias) for (let i = 0; i < x.rows; i++) out.set(bias, i * weight.rows);
  backend.gemm({ transA: false, transB: true, m: x.rows, n: weight.rows, k: x.cols, alpha: 1, a: x.data, b: weight.data, beta: bias ? 1 : 0, c: out });
  return { rows: x.rows, cols: weight.rows, data: out };
}

/** dX = dY·W. */
export function linearInputGrad(gradOutput: Matrix, weight: Matrix, backend: KernelBackend): Matrix {
  const out = new Float32Array(gradOutput.rows * weight.cols);
  backend.gemm({ transA: false, transB: false, m: gradOutput.rows, n: weight.cols, k: weight.rows, alpha: 1, a: gradOutput.data, b: weight.data, beta: 0, c: out });
  return { rows: gradOutput.rows, cols: weight.cols, data: out };
}

export function addColumnSums(m: Matrix, into: Float32Array): void {
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) into[j]! += m.data[i * m.cols + j]!;
}
