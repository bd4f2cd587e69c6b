/**
 * Standard normal CDF and quantile function in float64, accurate to a few ulps on the range the
 * code tables need (|x| < 8). No tables of magic coefficients: the CDF comes from the all-positive
 * series erf(x) = 2/√π · e^{−x²} · Σ 2ⁿ x^{2n+1} / (1·3·…·(2n+1)) (no cancellation for small |x|)
 * or the continued fraction of erfc for large |x|, and the quantile from Newton steps on it.
 */
export function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const upperTail = z < 3 ? 0.5 * (1 - erfSeries(z)) : 0.5 * erfcContinuedFraction(z);
  return x >= 0 ? 1 - upperTail : upperTail;
}

function erfSeries(z: number): number {
  let term = z;
  let sum = z;
  for (let n = 1; n < 200; n++) {
    term *= (2 * z * z) / (2 * n + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-z * z) * sum;
}

/** erfc(z) for z ≥ 3 by the Lentz evaluation of its continued fraction. */
function erfcContinuedFraction(z: number): number {
  // erfc(z) = e^{-z²}/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + ...)))))
  const tiny = 1e-300;
  let f = z;
  let c = z;
  let d = 0;
  for (let n = 1; n < 500; n++) {
    const a = n / 2;
    d = z + a * d;
    d = Math.abs(d) < tiny ? tiny : d;
    c = z + a / c;
    c = Math.abs(c) < tiny ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
}

/** Inverse of normalCdf for p in (0, 1); ±Infinity at 0 and 1. */
export function normalQuantile(p: number): number {
  if (!(p >= 0 && p <= 1)) return NaN;
  if (p === 0) return -Infinity;
  if (p === 1) return Infinity;
  if (p === 0.5) return 0;
  // Work on the lower tail for accuracy; start from a logistic-like guess and refine.
  const q = p < 0.5 ? p : 1 - p;
  let x = -Math.sqrt(-2 * Math.log(q));
  x = x + (2.30753 + 0.27061 * -x) / (1 + 0.99229 * -x + 0.04481 * x * x) ;
  for (let i = 0; i < 60; i++) {
    const density = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
    const step = (normalCdf(x) - q) / density;
    // Halley's correction keeps convergence cubic in the tails.
    const next = x - step / (1 + 0.5 * x * step);
    if (Math.abs(next - x) <= 1e-16 * Math.max(1, Math.abs(x))) {
      x = next;
      break;
    }
    x = next;
  }
  return p < 0.5 ? x : -x;
}
