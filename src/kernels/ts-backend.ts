import { ShapeError } from "../errors.js";
import { encodeHalf } from "../tensor/dtype.js";
import type { GemmCall, KernelBackend } from "./backend.js";
import { checkGemm, checkSubtract, checkTranspose } from "./check-gemm.js";
import { checkDecodeCall, checkResidualCall, dequantizeBlocks, quantizeBlocks } from "./codebook.js";
import { applyReflectorsReference, tridiagonalizeReference } from "./tridiagonal.js";

/**
 * The reference backend: plain TypeScript, float64 accumulation, no tricks. Every other backend is
 * tested against it. The loop order keeps the innermost loop contiguous for each transpose case.
 */
export const tsBackend: KernelBackend = {
  name: "ts",
  allocate: (length) => new Float32Array(length),
  release: () => {},
  // Plain arrays are this backend's memory.
  holds: () => true,
  encodeCodebook({ values, spec, codes, absmax, dequantized, residualOf }) {
    checkResidualCall(values.length, dequantized, residualOf);
    quantizeBlocks(values, spec, codes, absmax, dequantized);
    if (!residualOf) return 0;
    let sum = 0;
    for (let i = 0; i < values.length; i++) {
      const d = Math.fround(residualOf[i]! - dequantized![i]!);
      dequantized![i] = d;
      sum += d * d;
    }
    return sum;
  },
  decodeCodebook(call) {
    checkDecodeCall(call);
    dequantizeBlocks(call.codes, call.absmax, call.table, call.blockSize, call.out);
  },
  transpose(call) {
    checkTranspose(call);
    const { a, rows, cols, lda, out } = call;
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * lda + j]!;
  },
  subtract(a, b, out) {
    checkSubtract(a, b, out);
    let sum = 0;
    for (let i = 0; i < a.length; i++) {
      const d = Math.fround(a[i]! - b[i]!);
      if (out) out[i] = d;
      sum += d * d;
    }
    return sum;
  },
  encodeBf16(values, out) {
    if (out.length < values.length) throw new ShapeError(`encodeBf16: ${out.length} outputs for ${values.length} values`);
    // The bulk encoder of the dtype layer, writing the words' little-endian bytes.
    encodeHalf(values, "bf16", new Uint8Array(out.buffer, out.byteOffset, 2 * values.length));
  },
  tridiagonalize: tridiagonalizeReference,
  applyReflectors: applyReflectorsReference,
  sumOfSquares(a) {
    let sum = 0;
    for (let i = 0; i < a.length; i++) sum += a[i]! * a[i]!;
    return sum;
  },
  gemm(call: GemmCall) {
    checkGemm(call);
    const { transA, transB, m, n, k, alpha, a, b, beta, c } = call;
    const source = call.cIn ?? c;
    const row = new Float64Array(n);
    for (let i = 0; i < m; i++) {
      row.fill(0);
      for (let p = 0; p < k; p++) {
        const aip = transA ? a[p * m + i]! : a[i * k + p]!;
        if (transB) {
          for (let j = 0; j < n; j++) row[j]! += aip * b[j * k + p]!;
        } else {
          const base = p * n;
          for (let j = 0; j < n; j++) row[j]! += aip * b[base + j]!;
        }
      }
      const out = i * n;
      for (let j = 0; j < n; j++) {
        c[out + j] = beta === 0 ? alpha * row[j]! : alpha * row[j]! + beta * source[out + j]!;
      }
    }
  },
};
