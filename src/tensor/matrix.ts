import { NonFiniteError, ShapeError } from "../errors.js";

/** A dense row-major float32 matrix: element (i, j) is `data[i * cols + j]`. */
export interface Matrix {
  readonly rows: number;
  readonly cols: number;
  readonly data: Float32Array;
}

/** Wraps `data` (no copy) after checking that its length is `rows * cols`. */
export function matrix(rows: number, cols: number, data?: Float32Array | ArrayLike<number>): Matrix {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new ShapeError(`matrix dimensions must be non-negative integers, got ${rows}×${cols}`);
  }
  if (data === undefined) return { rows, cols, data: new Float32Array(rows * cols) };
  if (data.length !== rows * cols) {
    throw new ShapeError(`a ${rows}×${cols} matrix needs ${rows * cols} values, got ${data.length}`);
  }
  const values = data instanceof Float32Array ? data : Float32Array.from(data);
  return { rows, cols, data: values };
}

/**
 * Throws a ShapeError unless `m` is a non-empty Matrix whose Float32Array holds exactly rows·cols
 * values (what every quantizer and LoftQ entry point requires before touching the data).
 */
export function checkMatrix(m: Matrix, what = "matrix"): void {
  if (m === null || typeof m !== "object") throw new ShapeError(`${what} must be a Matrix { rows, cols, data }, got ${m === null ? "null" : typeof m}`);
  const { rows, cols, data } = m;
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new ShapeError(`${what}: dimensions must be non-negative integers, got ${rows}×${cols}`);
  }
  if (rows === 0 || cols === 0) throw new ShapeError(`${what} is empty (${rows}×${cols})`);
  if (!(data instanceof Float32Array)) throw new ShapeError(`${what}: data must be a Float32Array`);
  if (data.length !== rows * cols) throw new ShapeError(`${what}: a ${rows}×${cols} matrix needs ${rows * cols} values, got ${data.length}`);
}

/**
 * The (data, rows, cols) arguments of the dense linear-algebra helpers: positive integer dimensions,
 * exactly rows·cols numbers, and (unless `finite` is false) no NaN/±Inf, named by position.
 */
export function checkDenseArray(data: ArrayLike<number>, rows: number, cols: number, what: string, finite = true): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1) {
    throw new ShapeError(`${what}: dimensions must be positive integers, got ${rows}×${cols}`);
  }
  if (data === null || typeof data !== "object" || typeof data.length !== "number") throw new ShapeError(`${what}: data must be an array of numbers`);
  if (data.length !== rows * cols) throw new ShapeError(`${what}: a ${rows}×${cols} matrix needs ${rows * cols} values, got ${data.length}`);
  if (!finite) return;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (typeof v !== "number" || v - v !== 0) throw new NonFiniteError(what, Math.floor(i / cols), i % cols, v);
  }
}

/** A well-formed Matrix of exactly rows×cols (e.g. a gradient that must match its layer's output). */
export function checkShape(m: Matrix, rows: number, cols: number, what = "matrix"): void {
  checkMatrix(m, what);
  if (m.rows !== rows || m.cols !== cols) throw new ShapeError(`${what} is ${m.rows}×${m.cols}, expected ${rows}×${cols}`);
}

/** Throws a NonFiniteError naming the first NaN/±Inf element. */
export function assertFinite(m: Matrix, what = "matrix"): void {
  const { data, cols } = m;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    // v - v is NaN exactly for NaN and ±Inf, and is cheaper than two comparisons.
    if (v - v !== 0) throw new NonFiniteError(what, Math.floor(i / cols), i % cols, v);
  }
}

/**
 * ‖m‖_F in float64, throwing a NonFiniteError naming the first NaN/±Inf. One pass: a NaN or
 * infinity makes the sum non-finite, and only then is the position looked up.
 */
export function finiteFrobeniusNorm(m: Matrix, what = "matrix"): number {
  const norm = frobeniusNorm(m.data);
  if (!Number.isFinite(norm)) assertFinite(m, what);
  return norm;
}

/** Frobenius norm, accumulated in float64 (eight partial sums: one would wait on each add's latency). */
export function frobeniusNorm(data: Float32Array): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  let i = 0;
  for (; i + 8 <= data.length; i += 8) {
    const x0 = data[i]!, x1 = data[i + 1]!, x2 = data[i + 2]!, x3 = data[i + 3]!;
    const x4 = data[i + 4]!, x5 = data[i + 5]!, x6 = data[i + 6]!, x7 = data[i + 7]!;
    s0 += x0 * x0; s1 += x1 * x1; s2 += x2 * x2; s3 += x3 * x3;
    s4 += x4 * x4; s5 += x5 * x5; s6 += x6 * x6; s7 += x7 * x7;
  }
  for (; i < data.length; i++) s0 += data[i]! * data[i]!;
  return Math.sqrt((s0 + s1) + (s2 + s3) + ((s4 + s5) + (s6 + s7)));
}

/** ‖a − b‖_F in float64 without materialising the difference. */
export function frobeniusDistance(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new ShapeError(`cannot compare arrays of length ${a.length} and ${b.length}`);
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    sum += d * d;
  }
  return Math.sqrt(sum);
}

/** Whether two views are the same bytes of the same buffer (e.g. an array and a whole-length subarray of it). */
export function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteOffset === b.byteOffset && a.byteLength === b.byteLength;
}

/** Whether two views share bytes of one buffer (e.g. an output aliasing an input). */
export function viewsOverlap(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/** Row-major transpose into a new matrix. */
export function transpose(m: Matrix): Matrix {
  checkMatrix(m, "transpose: matrix");
  const out = new Float32Array(m.rows * m.cols);
  const { rows, cols, data } = m;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[j * rows + i] = data[i * cols + j]!;
  }
  return { rows: cols, cols: rows, data: out };
}
