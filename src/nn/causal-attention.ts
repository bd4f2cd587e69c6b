import { InvalidArgumentError } from "../errors.js";
import type { KernelBackend } from "../kernels/backend.js";
import { getBackend } from "../kernels/registry.js";
import { checkShape, type Matrix } from "../tensor/matrix.js";

/**
 * The core of causal multi-head self-attention: given Q, K, V (T × d, heads laid side by side),
 * O_h = softmax(Q_h·K_hᵀ/√dₕ with future positions masked)·V_h. The rows may be a batch of
 * sequences of `sequenceLength` tokens laid end to end; each attends only within itself. `forward`
 * keeps the attention weights for `backward`, which returns dQ, dK, dV. The projections around it
 * are ordinary (LoRA-able) linear layers, which see the whole batch as one matrix.
 *
 * Each (sequence, head) pair is gathered into contiguous T × dₕ slices and its products run on the
 * backend's gemm; only the masked softmax and its derivative are scalar loops.
 */
export class CausalSelfAttention {
  private saved: { q: Matrix; k: Matrix; v: Matrix; weights: Float32Array[]; sequenceLength: number } | undefined;

  constructor(readonly heads: number, private readonly backend: KernelBackend = getBackend()) {
    if (!Number.isInteger(heads) || heads < 1) throw new InvalidArgumentError(`heads must be a positive integer, got ${heads}`);
  }

  forward(q: Matrix, k: Matrix, v: Matrix, sequenceLength = q.rows): Matrix {
    const { rows, cols: d } = q;
    checkShape(k, rows, d, "K");
    checkShape(v, rows, d, "V");
    if (d % this.heads !== 0) throw new InvalidArgumentError(`width ${d} is not divisible by ${this.heads} heads`);
    if (rows % sequenceLength !== 0) throw new InvalidArgumentError(`${rows} rows are not a whole number of ${sequenceLength}-token sequences`);
    const t = sequenceLength;
    const dh = d / this.heads;
    const scale = 1 / Math.sqrt(dh);
    const out = new Float32Array(rows * d);
    const qh = new Float32Array(t * dh);
    const kh = new Float32Array(t * dh);
    const vh = new Float32Array(t * dh);
    const oh = new Float32Array(t * dh);
    const weights: Float32Array[] = [];
    for (let start = 0; start < rows; start += t) {
      for (let h = 0; h < this.heads; h++) {
        const offset = start * d + h * dh;
        gather(q.data, offset, d, qh, t, dh);
        gather(k.data, offset, d, kh, t, dh);
        gather(v.data, offset, d, vh, t, dh);
        // p (t×t) = softmax over j ≤ i of scale·Q_h·K_hᵀ; the upper triangle is zero.
        const p = new Float32Array(t * t);
        this.backend.gemm({ transA: false, transB: true, m: t, n: t, k: dh, alpha: scale, a: qh, b: kh, beta: 0, c: p });
        for (let i = 0; i < t; i++) {
          const row = i * t;
          let max = -Infinity;
          for (let j = 0; j <= i; j++) if (p[row + j]! > max) max = p[row + j]!;
          let sum = 0;
          for (let j = 0; j <= i; j++) sum += p[row + j] = Math.exp(p[row + j]! - max);
          const inverse = 1 / sum;
          for (let j = 0; j <= i; j++) p[row + j]! *= inverse;
          for (let j = i + 1; j < t; j++) p[row + j] = 0;
        }
        this.backend.gemm({ transA: false, transB: false, m: t, n: dh, k: t, alpha: 1, a: p, b: vh, beta: 0, c: oh });
        scatter(oh, out, offset, d, t, dh);
        weights.push(p);
      }
    }
    this.saved = { q, k, v, weights, sequenceLength };
    return { rows, cols: d, data: out };
  }

  /** dV = Pᵀ·dO; dS = P ⊙ (dO·Vᵀ − rowsum(P ⊙ dO·Vᵀ)); dQ = dS·K/√dₕ; dK = dSᵀ·Q/√dₕ (per head). */
  backward(gradOutput: Matrix): { dq: Matrix; dk: Matrix; dv: Matrix } {
    if (!this.saved) throw new InvalidArgumentError("backward needs a forward pass first");
    const { q, k, v, weights, sequenceLength: t } = this.saved;
    const { rows, cols: d } = q;
    checkShape(gradOutput, rows, d, "gradient of the attention output");
    const dh = d / this.heads;
    const scale = 1 / Math.sqrt(dh);
    const dq = new Float32Array(rows * d);
    const dk = new Float32Array(rows * d);
    const dv = new Float32Array(rows * d);
    const [qh, kh, vh, goh, dqh, dkh, dvh] = Array.from({ length: 7 }, () => new Float32Array(t * dh));
    const ds = new Float32Array(t * t);
    const gemm = (transA: boolean, transB: boolean, m: number, n: number, inner: number, alpha: number, a: Float32Array, b: Float32Array, c: Float32Array) =>
      this.backend.gemm({ transA, transB, m, n, k: inner, alpha, a, b, beta: 0, c });
    let saved = 0;
    for (let start = 0; start < rows; start += t) {
      for (let h = 0; h < this.heads; h++) {
        const p = weights[saved++]!;
        const offset = start * d + h * dh;
        gather(q.data, offset, d, qh!, t, dh);
        gather(k.data, offset, d, kh!, t, dh);
        gather(v.data, offset, d, vh!, t, dh);
        gather(gradOutput.data, offset, d, goh!, t, dh);
        gemm(true, false, t, dh, t, 1, p, goh!, dvh!);
        gemm(false, true, t, t, dh, 1, goh!, vh!, ds); // dP = dO·Vᵀ, turned into dS in place
        for (let i = 0; i < t; i++) {
          const row = i * t;
          let rowDot = 0;
          for (let j = 0; j <= i; j++) rowDot += p[row + j]! * ds[row + j]!;
          for (let j = 0; j <= i; j++) ds[row + j] = p[row + j]! * (ds[row + j]! - rowDot) * scale;
          for (let j = i + 1; j < t; j++) ds[row + j] = 0;
        }
        gemm(false, false, t, dh, t, 1, ds, kh!, dqh!);
        gemm(true, false, t, dh, t, 1, ds, qh!, dkh!);
        scatter(dqh!, dq, offset, d, t, dh);
        scatter(dkh!, dk, offset, d, t, dh);
        scatter(dvh!, dv, offset, d, t, dh);
      }
    }
    return { dq: { rows, cols: d, data: dq }, dk: { rows, cols: d, data: dk }, dv: { rows, cols: d, data: dv } };
  }
}

/** out (t×w, contiguous) ← the t×w slice of `source` starting at `offset` with row stride `stride`. */
function gather(source: Float32Array, offset: number, stride: number, out: Float32Array, t: number, w: number): void {
  for (let i = 0; i < t; i++) out.set(source.subarray(offset + i * stride, offset + i * stride + w), i * w);
}

function scatter(slice: Float32Array, target: Float32Array, offset: number, stride: number, t: number, w: number): void {
  for (let i = 0; i < t; i++) target.set(slice.subarray(i * w, (i + 1) * w), offset + i * stride);
}
