import { InvalidArgumentError } from "../errors.js";
import { checkShape, type Matrix } from "../tensor/matrix.js";
import { parameter, type Parameter } from "./parameter.js";

/** Token embedding: row t of the (vocab × dim) table per token; backward scatter-adds into it. */
export class Embedding {
  readonly weight: Parameter;

  constructor(readonly vocab: number, readonly dim: number, weight: Float32Array) {
    if (weight.length !== vocab * dim) throw new InvalidArgumentError(`embedding table needs ${vocab * dim} values, got ${weight.length}`);
    this.weight = parameter("weight", weight);
  }

  forward(tokens: ArrayLike<number>): Matrix {
    const out = new Float32Array(tokens.length * this.dim);
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= this.vocab) throw new InvalidArgumentError(`token ${t} at position ${i} is outside the vocabulary of ${this.vocab}`);
      out.set(this.weight.value.subarray(t * this.dim, (t + 1) * this.dim), i * this.dim);
    }
    return { rows: tokens.length, cols: this.dim, data: out };
  }

  backward(tokens: ArrayLike<number>, gradOutput: Matrix): void {
    checkShape(gradOutput, tokens.length, this.dim, "gradient of the embeddings");
    for (let i = 0; i < tokens.length; i++) {
      const base = tokens[i]! * this.dim;
      for (let j = 0; j < this.dim; j++) this.weight.grad[base + j]! += gradOutput.data[i * this.dim + j]!;
    }
  }

  parameters(): Parameter[] {
    return [this.weight];
  }
}
