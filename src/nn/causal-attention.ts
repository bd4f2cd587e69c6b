import { InvalidArgumentError } from "../errors.js";
import type { Matrix } from "../tensor/matrix.js";

/**
 * The core of causal multi-head self-attention for one sequence: given Q, K, V (T × d, heads laid
 * side by side), O_h = softmax(Q_h·K_hᵀ/√dₕ with future positions masked)·V_h. `forward` keeps the
 * attention weights for `backward`, which returns dQ, dK, dV. The projections around it are
 * ordinary (LoRA-able) linear layers.
 */
export class CausalSelfAttention {
  private saved: { q: Matrix; k: Matrix; v: Matrix; weights: Float64Array[] } | undefined;

  constructor(readonly heads: number) {
    if (!Number.isInteger(heads) || heads < 1) throw new InvalidArgumentError(`heads must be a positive integer, got ${heads}`);
  }

  forward(q: Matrix, k: Matrix, v: Matrix): Matrix {
    const { rows: t, cols: d } = q;
    if (d % this.heads !== 0) throw new InvalidArgumentError(`width ${d} is not divisible by ${this.heads} heads`);
    const dh = d / this.heads;
    const scale = 1 / Math.sqrt(dh);
    const out = new Float32Array(t * d);
    const weights: Float64Array[] = [];
    for (let h = 0; h < this.heads; h++) {
      const p = new Float64Array(t * t);
      for (let i = 0; i < t; i++) {
        let max = -Infinity;
        for (let j = 0; j <= i; j++) {
          let s = 0;
          for (let c = 0; c < dh; c++) s += q.data[i * d + h * dh + c]! * k.data[j * d + h * dh + c]!;
          p[i * t + j] = s * scale;
          max = Math.max(max, s * scale);
        }
        let sum = 0;
        for (let j = 0; j <= i; j++) sum += p[i * t + j] = Math.exp(p[i * t + j]! - max);
        for (let j = 0; j <= i; j++) p[i * t + j]! /= sum;
        for (let c = 0; c < dh; c++) {
          let o = 0;
          for (let j = 0; j <= i; j++) o += p[i * t + j]! * v.data[j * d + h * dh + c]!;
          out[i * d + h * dh + c] = o;
        }
      }
      weights.push(p);
    }
    this.saved = { q, k, v, weights };
    return { rows: t, cols: d, data: out };
  }

  /** dV = Pᵀ·dO; dS = P ⊙ (dO·Vᵀ − rowsum(P ⊙ dO·Vᵀ)); dQ = dS·K/√dₕ; dK = dSᵀ·Q/√dₕ (per head). */
  backward(gradOutput: Matrix): { dq: Matrix; dk: Matrix; dv: Matrix } {
    if (!this.saved) throw new InvalidArgumentError("backward needs a forward pass first");
    const { q, k, v, weights } = this.saved;
    const { rows: t, cols: d } = q;
    const dh = d / this.heads;
    const scale = 1 / Math.sqrt(dh);
    const dq = new Float32Array(t * d);
    const dk = new Float32Array(t * d);
    const dv = new Float32Array(t * d);
    const dp = new Float64Array(t);
    for (let h = 0; h < this.heads; h++) {
      const p = weights[h]!;
      for (let i = 0; i < t; i++) {
        let rowDot = 0;
        for (let j = 0; j <= i; j++) {
          let s = 0;
          for (let c = 0; c < dh; c++) s += gradOutput.data[i * d + h * dh + c]! * v.data[j * d + h * dh + c]!;
          dp[j] = s;
          rowDot += p[i * t + j]! * s;
        }
        for (let j = 0; j <= i; j++) {
          const weight = p[i * t + j]!;
          const ds = weight * (dp[j]! - rowDot) * scale;
          for (let c = 0; c < dh; c++) {
            dv[j * d + h * dh + c]! += weight * gradOutput.data[i * d + h * dh + c]!;
            dq[i * d + h * dh + c]! += ds * k.data[j * d + h * dh + c]!;
            dk[j * d + h * dh + c]! += ds * q.data[i * d + h * dh + c]!;
          }
        }
      }
    }
    return { dq: { rows: t, cols: d, data: dq }, dk: { rows: t, cols: d, data: dk }, dv: { rows: t, cols: d, data: dv } };
  }
}
