/**
 * Gradient checking: central differences of a scalar loss at `trials` random elements of `values`
 * (step 1e-2 · max(1, |v|)), compared with `grad`. Returns the worst relative difference,
 * |numeric − analytic| / max(1e-3, |numeric|, |analytic|).
 */
export function worstGradientError(values: Float32Array, grad: Float32Array, lossOf: () => number, random: () => number, trials: number): number {
  let worst = 0;
  for (let trial = 0; trial < trials; trial++) {
    const i = Math.floor(random() * values.length);
    const original = values[i]!;
    const h = 1e-2 * Math.max(1, Math.abs(original));
    values[i] = original + h;
    const up = lossOf();
    values[i] = original - h;
    const down = lossOf();
    values[i] = original;
    const numeric = (up - down) / (2 * h);
    worst = Math.max(worst, Math.abs(numeric - grad[i]!) / Math.max(1e-3, Math.abs(numeric), Math.abs(grad[i]!)));
  }
  return worst;
}
