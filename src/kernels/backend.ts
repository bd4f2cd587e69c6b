import type { CodebookSpec } from "./codebook.js";

/**
 * The kernel interface every compute backend implements (tfjs-style registry: one interface, one
 * test suite run over every backend, a plain-TS reference beside each fast kernel).
 *
 * Matrices are row-major float32. `gemm` computes
 *   C (m×n) = alpha · op(A) · op(B) + beta · C   (or + beta · cIn when `cIn` is given)
 * where op(A) is m×k (A is stored k×m when `transA`), op(B) is k×n (B is stored n×k when `transB`).
 * When beta is 0, C's previous contents are ignored (NaN in C does not propagate).
 */
export interface GemmCall {
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
  alpha: number;
  a: Float32Array;
  b: Float32Array;
  beta: number;
  c: Float32Array;
  /**
   * Optional: the matrix beta scales, instead of C's old contents (C is then only written):
   * C = alpha·op(A)·op(B) + beta·cIn, e.g. W − B·A into another buffer without copying W first.
   */
  cIn?: Float32Array;
}

/** One block-wise codebook quantization (see codebook.ts for the semantics). */
export interface CodebookCall {
  values: Float32Array;
  spec: CodebookSpec;
  /** Out: one code per value. */
  codes: Uint8Array;
  /** Out: one absmax per block. */
  absmax: Float32Array;
  /** Out (optional): table[code] · absmax, or the residual when `residualOf` is given. May be `values`. */
  dequantized?: Float32Array;
  /**
   * Optional (with `dequantized`): write residualOf − table[code]·absmax into `dequantized` instead,
   * and return Σ of those residuals squared (float64): LoftQ's W − Q and its norm in the same pass.
   */
  residualOf?: Float32Array;
}

/** The inverse of a codebook encoding: out[i] = table[codes[i]] · absmax[⌊i / blockSize⌋]. */
export interface DecodeCall {
  codes: Uint8Array;
  absmax: Float32Array;
  table: Float32Array;
  blockSize: number;
  /** codes.length values. */
  out: Float32Array;
}

/** out (cols×rows, contiguous) = Aᵀ for the rows×cols matrix A stored at `a` with row stride `lda`. */
export interface TransposeCall {
  a: Float32Array;
  rows: number;
  cols: number;
  /** Row stride of A (≥ cols): a column strip of a wider matrix is `a.subarray(j0)` with its width. */
  lda: number;
  out: Float32Array;
}

/**
 * Householder reduction of a symmetric float64 matrix to tridiagonal form (the symmetric
 * eigensolver's O(n³) step; see kernels/tridiagonal.ts for the exact arithmetic).
 */
export interface TridiagonalizeCall {
  /** n×n row-major; only the lower triangle is read. Its contents afterwards are unspecified (scratch). */
  a: Float64Array;
  n: number;
  /** Out: the diagonal (n values) and the sub-diagonal (n − 1). */
  d: Float64Array;
  e: Float64Array;
  /**
   * Out (n×n): reflector k's unit vector in row k, columns k + 1…n − 1; zero elsewhere. Omit it when
   * only the eigenvalues are wanted.
   */
  reflectors?: Float64Array;
}
/** x ← H_0·H_1·…·H_{n−3}·x for every column of x, with the reflectors of a TridiagonalizeCall. */
export interface ReflectorsCall {
  reflectors: Float64Array;
  n: number;
  /** n×count, row-major (one vector per column), transformed in place. */
  x: Float64Array;
  count: number;
}
/** What a read-only scope will do with its array, so a backend can prepare for it. */
export interface ReadOnlyUsage {
  /** How many products will read the array transposed (transA). */
  transposedProducts?: number;
}

export interface KernelBackend {
  /** Short stable name: "ts", "wasm", "wasm-threads", ... */
  readonly name: string;
  /**
   * A Float32Array the backend can read and write without copying (e.g. a view into WebAssembly
   * memory), zeroed unless `zeroed` is false (for buffers the caller overwrites whole: clearing a
   * recycled 64 MiB block costs ~8 ms). Arrays from elsewhere are accepted by every kernel, at the
   * cost of a copy.
   */
  allocate(length: number, zeroed?: boolean): Float32Array;
  /** Returns an array from `allocate` to the backend. Using it afterwards is undefined. */
  release(array: Float32Array): void;
  /**
   * Optional: whether the kernels read and write `array` in place, with no copy into backend memory
   * (true for arrays from `allocate`). Lets a caller skip a copy of its own, e.g. LoftQ's private copy
   * of W when the caller already put W in backend memory. Absent means false.
   */
  holds?(array: ArrayBufferView): boolean;
  gemm(call: GemmCall): void;
  /** Returns Σ residual² when `residualOf` is given, else 0. */
  encodeCodebook(call: CodebookCall): number;
  decodeCodebook(call: DecodeCall): void;
  transpose(call: TransposeCall): void;
  /** out[i] = a[i] − b[i] when `out` is given; returns Σ(a[i] − b[i])², accumulated in float64. */
  subtract(a: Float32Array, b: Float32Array, out?: Float32Array): number;
  /** Σ a[i]², accumulated in float64; NaN or ±Inf anywhere makes it non-finite. */
  sumOfSquares(a: Float32Array): number;
  /**
   * Optional kernels (a backend written before them still works: callers fall back to the plain-TS
   * reference). out[i] = the bfloat16 bits of values[i] (round to nearest even; NaN quietened, sign kept).
   */
  encodeBf16?(values: Float32Array, out: Uint16Array): void;
  /** The symmetric eigensolver's O(n³) steps, float64 (references in kernels/tridiagonal.ts). */
  tridiagonalize?(call: TridiagonalizeCall): void;
  applyReflectors?(call: ReflectorsCall): void;
  /**
   * Optional: runs `body`, during which the caller promises not to modify `array` (e.g. the matrix
   * every pass of a truncated SVD reads). Backends that must copy operands into their own memory
   * (ort) copy it once for the whole scope instead of once per product.
   */
  withReadOnly?<T>(array: Float32Array, body: () => T, usage?: ReadOnlyUsage): T;
}
