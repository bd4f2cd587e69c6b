import { InvalidArgumentError, ShapeError } from "../errors.js";
import type { Matrix } from "../tensor/matrix.js";

/**
 * Mean cross-entropy of logits (T × vocab) against target ids, with its gradient
 * (softmax − one-hot) / T. Computed with the max subtracted, in float64.
 */
export function crossEntropy(logits: Matrix, targets: ArrayLike<number>): { loss: number; grad: Matrix } {
  if (targets.length !== logits.rows) throw new ShapeError(`${targets.length} targets for ${logits.rows} rows of logits`);
  const { rows, cols, data } = logits;
  const grad = new Float32Array(data.length);
  let loss = 0;
  for (let i = 0; i < rows; i++) {
    let max = -Infinity;
    for (let j = 0; j < cols; j++) max = Math.max(max, data[i * cols + j]!);
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += Math.exp(data[i * cols + j]! - max);
    const target = targets[i]!;
    if (!Number.isInteger(target) || target < 0 || target >= cols) throw new InvalidArgumentError(`target ${target} at position ${i} is not a class index in [0, ${cols})`);
    loss += Math.log(sum) + max - data[i * cols + target]!;
    for (let j = 0; j < cols; j++) grad[i * cols + j] = (Math.exp(data[i * cols + j]! - max) / sum - (j === target ? 1 : 0)) / rows;
  }
  return { loss: loss / rows, grad: { rows, cols, data: grad } };
}
