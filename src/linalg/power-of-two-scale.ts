/**
 * The power of two that brings the largest finite magnitude of `values` near 1 (1 for an all-zero
 * input): multiplying by it is exact, and keeps sums of squares inside float64's range.
 */
export function powerOfTwoScale(values: ArrayLike<number>): number {
  let largest = 0;
  for (let i = 0; i < values.length; i++) largest = Math.max(largest, Math.abs(values[i]!));
  if (!(largest > 0) || !Number.isFinite(largest)) return 1;
  // Clamped so that the scale itself is a float64 (the largest subnormals would need 2^1074).
  return 2 ** -Math.max(-1000, Math.min(1000, Math.round(Math.log2(largest))));
}
