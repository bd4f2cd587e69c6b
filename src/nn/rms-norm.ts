import { ShapeError } from "../errors.js";
import type { Matrix } from "../tensor/matrix.js";
import { parameter, type Parameter } from "./parameter.js";

/** RMSNorm (Llama's norm): y = x / sqrt(mean(x²) + eps) · g, row by row; g trainable. */
export class RmsNorm {
  readonly weight: Parameter;

  constructor(readonly features: number, readonly eps = 1e-6, weight?: Float32Array) {
    if (weight && weight.length !== features) throw new ShapeError(`RMSNorm weight has ${weight.length} values for ${features} features`);
    this.weight = parameter("weight", weight ?? new Float32Array(features).fill(1));
  }

  forward(x: Matrix): Matrix {
    const out = new Float32Array(x.data.length);
    const g = this.weight.value;
    for (let i = 0; i < x.rows; i++) {
      const inverse = 1 / this.rms(x, i);
      for (let j = 0; j < x.cols; j++) out[i * x.cols + j] = x.data[i * x.cols + j]! * inverse * g[j]!;
    }
    return { rows: x.rows, cols: x.cols, data: out };
  }

  /** dX = (g⊙dY)/r − x·Σ(g⊙dY⊙x)/(n·r³); dg += Σ_rows dY⊙x/r. */
  backward(x: Matrix, gradOutput: Matrix): Matrix {
    const n = x.cols;
    const g = this.weight.value;
    const out = new Float32Array(x.data.length);
    for (let i = 0; i < x.rows; i++) {
      const r = this.rms(x, i);
      let dot = 0;
      for (let j = 0; j < n; j++) dot += g[j]! * gradOutput.data[i * n + j]! * x.data[i * n + j]!;
      for (let j = 0; j < n; j++) {
        const xv = x.data[i * n + j]!;
        const dy = gradOutput.data[i * n + j]!;
        out[i * n + j] = (g[j]! * dy) / r - (xv * dot) / (n * r * r * r);
        this.weight.grad[j]! += (dy * xv) / r;
      }
    }
    return { rows: x.rows, cols: n, data: out };
  }

  parameters(): Parameter[] {
    return [this.weight];
  }

  private rms(x: Matrix, row: number): number {
    let sum = 0;
    for (let j = 0; j < x.cols; j++) sum += x.data[row * x.cols + j]! ** 2;
    return Math.sqrt(sum / x.cols + this.eps);
  }
}
