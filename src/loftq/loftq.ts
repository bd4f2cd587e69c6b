import { OutOfRangeError } from "../errors.js";
import type { QuantizedMatrix, Encoded } from "../quant/quantizer.js";
import { assertFinite, sameBytes, type Matrix } from "../tensor/matrix.js";
import { truncatedSvd } from "../linalg/truncated-svd.js";
import { resolveLoftqOptions, type LoftqOptions } from "./options.js";
import { packOwned } from "./pack-owned.js";

/**
 * Sketch columns beyond the rank in the first SVD (run at depth FIRST_SVD_POWER_ITERATIONS = 5): on
 * 4096² NF2/NF4 residuals at r = 16 and 64, k = r columns at depth 5 come within 0.035 % of a depth-10
 * SVD's error, against 0.033–0.061 % for the generic default (depth 4, k = r + 8), for 20 % fewer
 * column-passes at r = 16 (12 products of r columns instead of 10 of r + 8) and 7 % more at r = 64.
 */
export const FIRST_SVD_OVERSAMPLE = 0;
/** Krylov depth of the SVDs after the first: the previous subspace is already a good start. */
export const WARM_POWER_ITERATIONS = 1;
/**
 * How far Σσ² may exceed ‖W − Q‖² (both from float32 data; the Ritz values good to ~1e-6 relative)
 * before the factors are judged not orthonormal.
 */
const CAPTURED_ENERGY_TOLERANCE = 1e-4;
/**
 * Sketch columns beyond the rank in the SVDs after the first. With a warm start none are needed:
 * on 4096² LLM-like weights (NF2/NF4/NF8, r = 16 and 64, T = 5) the final errors equal those with 8
 * extra columns and those of depth-10 SVDs to five digits, and every warm product is r instead of
 * r + 8 columns wide (a third less work at r = 16).
 */
export const WARM_OVERSAMPLE = 0;

export interface IterationErrors {
  /** ‖W − Q‖_F / ‖W‖_F. */
  quantError: number;
  /**
   * ‖W − Q − L·R‖_F / ‖W‖_F for the SVD product L·R, which is what the adapter adds at run time
   * (scaling·B·A) unless `upstreamScaling` is set with alpha ≠ r.
   */
  error: number;
}

export interface LoftqResult {
  /** Packed codes and scales of Q (packed on first access). */
  quantized: QuantizedMatrix;
  /** Q, the dequantized weight (rows×cols). */
  dequantized: Matrix;
  /** r×in (PEFT's lora_A). */
  loraA: Matrix;
  /** out×r (PEFT's lora_B). */
  loraB: Matrix;
  /** One entry per iteration. */
  history: IterationErrors[];
  /** 1-based iteration whose Q, A and B are returned. */
  selectedIteration: number;
  /** LoRA scaling the adapter is meant to run with (alpha/r, or alpha/√r with useRslora; 1 when no alpha was given). */
  scaling: number;
}

/**
 * LoftQ initialisation of one weight W (out×in): alternate T times
 *   Q = dequant(quant(W − B·A)),  (B, A) = rank-r SVD split of (W − Q) with √S on each side,
 * starting from B·A = 0. Returns Q, its packed form, the adapters and the per-iteration errors.
 */
export function loftq(weight: Matrix, options: LoftqOptions = {}): LoftqResult {
  const settings = resolveLoftqOptions(weight, options);
  const { rows: m, cols: n, data: w } = weight;
  const { rank, quantizer, backend, adapterDivisor } = settings;
  const started = Date.now();

  // Working set, all in backend memory so no kernel copies: W and one buffer holding W − B·A (the
  // quantization target), overwritten in place by W − Q for the SVD. Q itself is never held: the
  // quantizer writes W − Q straight from the codes, and the returned Q is decoded from the chosen
  // iterate's codes at the end (two float32 matrices fewer than keeping current and best Q).
  // (Each is overwritten whole before it is read, so none needs clearing.) W is only ever read: when
  // the caller's array already lies in backend memory (the CLI's prefetcher reads weights straight
  // into it), it is used as it is instead of copied (~12 ms per 4096² matrix).
  const weightInPlace = backend.holds?.(w) ?? false;
  const weightOnBackend = weightInPlace ? w : backend.allocate(m * n, false);
  if (!weightInPlace) weightOnBackend.set(w);
  const ownBuffers = weightInPlace ? [] : [weightOnBackend];
  // ‖W‖ on the backend (a JS pass over a 4096² weight costs ~40 ms); a non-finite sum means a NaN
  // or infinity somewhere, and only then is its position looked up, before any other work.
  const weightSquared = backend.sumOfSquares(weightOnBackend);
  if (!Number.isFinite(weightSquared)) {
    for (const buffer of ownBuffers) backend.release(buffer);
    assertFinite(weight, settings.name);
  }
  const weightNorm = Math.sqrt(weightSquared) || 1;
  const swapsBest = settings.iterations > 1 && settings.keepBest;
  const residual = backend.allocate(m * n, false);
  ownBuffers.push(residual);
  // Codes (one byte per weight) live in backend memory too, current and best swapped rather than
  // copied: the kernel writes them in place and only the returned iterate's are copied out, once.
  // A caller's codesOutput in backend memory is one of the two, so a T = 1 run copies nothing.
  const codesOutput = settings.codesOutput;
  const codesOutputInPlace = codesOutput !== undefined && (backend.holds?.(codesOutput) ?? false);
  const codeStorage: Uint8Array[] = codesOutputInPlace ? [codesOutput] : [];
  while (codeStorage.length < (swapsBest ? 2 : 1)) {
    const storage = backend.allocate(Math.ceil((m * n) / 4), false);
    ownBuffers.push(storage);
    codeStorage.push(new Uint8Array(storage.buffer, storage.byteOffset, m * n));
  }
  let currentCodes = codeStorage[0]!;
  let bestCodes = codeStorage[1] ?? currentCodes;
  const history: IterationErrors[] = [];
  let chosen: { encoded: Encoded; a: Float32Array; b: Float32Array; iteration: number; error: number } | undefined;
  let subspace: Float32Array | undefined;
  let dequantized: Float32Array;
  try {
    for (let t = 1; t <= settings.iterations; t++) {
      const target = t === 1 ? weightOnBackend : residual;
      const { encoded, residualSquared: quantSquared } = quantizer.encodeResidual(target, m, n, weightOnBackend, residual, backend, currentCodes);
      // W is finite (checked above), so only float32 overflow of W − B·A or W − Q gets here.
      if (!Number.isFinite(quantSquared)) {
        throw new OutOfRangeError(`${settings.name}: ${t === 1 ? "W − Q" : "W − B·A"} overflows float32 in iteration ${t} (values within a factor of ~2 of float32's largest); scale the weight down`);
      }
      const quantError = Math.sqrt(quantSquared) / weightNorm;
      let svd = truncatedSvd(
        { rows: m, cols: n, data: residual },
        {
          rank,
          // One seed per iteration, wrapped into the generator's 32 bits (seed 2³²−1 is valid).
          seed: (settings.seed + t) >>> 0,
          backend,
          method: settings.svd,
          // A warm start from the previous right subspace needs fewer passes.
          ...(subspace
            ? { powerIterations: WARM_POWER_ITERATIONS, oversample: WARM_OVERSAMPLE, start: subspace }
            : { powerIterations: settings.powerIterations, oversample: FIRST_SVD_OVERSAMPLE }),
        },
      );
      // B·A = U·Uᵀ·(W − Q), the projection onto the (Ritz) singular vectors, so by Pythagoras
      // ‖W − Q − B·A‖² = ‖W − Q‖² − Σσᵢ²: no pass over the matrix is needed for the error.
      let captured = svd.s.reduce((sum, sigma) => sum + sigma * sigma, 0);
      // More than ‖W − Q‖² captured means factors that are not orthonormal: never report that as a
      // zero error. A backstop (the randomized SVD redraws collapsing Krylov columns): the exact SVD.
      if (captured > quantSquared * (1 + CAPTURED_ENERGY_TOLERANCE)) {
        svd = truncatedSvd({ rows: m, cols: n, data: residual }, { rank, backend, method: "exact" });
        captured = svd.s.reduce((sum, sigma) => sum + sigma * sigma, 0);
      }
      subspace = svd.subspace;
      const { a, b } = splitFactors(svd.u, svd.s, svd.v, m, n, rank);
      const error = Math.sqrt(Math.max(0, quantSquared - captured)) / weightNorm;
      if (t < settings.iterations) {
        // The next quantization target: W − B·A (exact SVD product, before any scaling compensation),
        // written over the residual straight from W (cIn) rather than copying W there first.
        backend.gemm({ transA: false, transB: false, m, n, k: rank, alpha: -1, a: b, b: a, beta: 1, c: residual, cIn: weightOnBackend });
      }
      history.push({ quantError, error });
      settings.onIteration?.({ iteration: t, iterations: settings.iterations, quantError, error, elapsedMs: Date.now() - started });
      if (!chosen || !settings.keepBest || error < chosen.error) {
        chosen = { encoded, a, b, iteration: t, error };
        if (bestCodes !== currentCodes) [bestCodes, currentCodes] = [currentCodes, bestCodes];
      }
    }
    // Q of the chosen iterate, decoded on the backend: straight into the output when the backend
    // writes that in place, else into the (now free) residual buffer and copied out with one bulk
    // set().
    dequantized = settings.output ?? new Float32Array(m * n);
    if (backend.holds?.(dequantized)) {
      quantizer.decode(chosen!.encoded, m, n, dequantized, backend);
    } else {
      quantizer.decode(chosen!.encoded, m, n, residual, backend);
      dequantized.set(residual);
    }
    // The codes leave backend memory before it is released (a new array costs page faults: see codesOutput).
    const codes = chosen!.encoded.codes;
    if (!codesOutput || !sameBytes(codes, codesOutput)) {
      const kept = codesOutput ?? new Uint8Array(m * n);
      kept.set(codes);
      chosen!.encoded = { ...chosen!.encoded, codes: kept };
    }
  } finally {
    for (const buffer of ownBuffers) backend.release(buffer);
  }
  const result = chosen!;
  if (adapterDivisor !== 1) {
    for (let i = 0; i < result.a.length; i++) result.a[i] = result.a[i]! / adapterDivisor;
    for (let i = 0; i < result.b.length; i++) result.b[i] = result.b[i]! / adapterDivisor;
  }
  // Packing costs a pass over every code; do it only for callers that read `quantized`.
  let packed: QuantizedMatrix | undefined;
  return {
    get quantized() {
      packed ??= packOwned(quantizer, result.encoded, m, n, settings.codesOutput);
      return packed;
    },
    dequantized: { rows: m, cols: n, data: dequantized },
    loraA: { rows: rank, cols: n, data: result.a },
    loraB: { rows: m, cols: rank, data: result.b },
    history,
    selectedIteration: result.iteration,
    scaling: settings.scaling,
  };
}

/** B = U·diag(√S) (m×r), A = diag(√S)·Vᵀ (r×n): PEFT's even split. */
function splitFactors(u: Float32Array, s: Float64Array, v: Float32Array, m: number, n: number, rank: number) {
  const root = Array.from(s, Math.sqrt);
  const b = new Float32Array(m * rank);
  for (let i = 0; i < m; i++) for (let j = 0; j < rank; j++) b[i * rank + j] = u[i * rank + j]! * root[j]!;
  const a = new Float32Array(rank * n);
  for (let j = 0; j < rank; j++) for (let i = 0; i < n; i++) a[j * n + i] = root[j]! * v[i * rank + j]!;
  return { a, b };
}
