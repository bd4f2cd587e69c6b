/**
 * Typed errors. Every failure the library can predict is one of these, so callers can branch on
 * `error.code` instead of parsing messages. Nothing is returned half-done when one is thrown.
 */
export type LoftqErrorCode =
  | "INVALID_ARGUMENT"
  | "SHAPE_MISMATCH"
  | "NON_FINITE"
  | "OUT_OF_RANGE"
  | "UNSUPPORTED"
  | "BACKEND_UNAVAILABLE"
  | "PARSE_ERROR"
  /** Writing an output failed (a full disk, a rename the file system refuses). */
  | "IO_ERROR";

export class LoftqError extends Error {
  readonly code: LoftqErrorCode;
  constructor(code: LoftqErrorCode, message: string) {
    super(message);
    this.name = "LoftqError";
    this.code = code;
  }
}

/** An option or argument outside its documented range (bits, rank, block size, ...). */
export class InvalidArgumentError extends LoftqError {
  constructor(message: string) {
    super("INVALID_ARGUMENT", message);
    this.name = "InvalidArgumentError";
  }
}

/** Array lengths or matrix shapes that do not fit together. */
export class ShapeError extends LoftqError {
  constructor(message: string) {
    super("SHAPE_MISMATCH", message);
    this.name = "ShapeError";
  }
}

/** A NaN or ±Inf in a weight; `row`/`col` name the first offending element. */
export class NonFiniteError extends LoftqError {
  readonly row: number;
  readonly col: number;
  readonly value: number;
  constructor(what: string, row: number, col: number, value: number) {
    super("NON_FINITE", `${what} has a non-finite value ${value} at row ${row}, column ${col}`);
    this.name = "NonFiniteError";
    this.row = row;
    this.col = col;
    this.value = value;
  }
}

/**
 * Finite input whose values the computation cannot represent: a weight beyond float16's range for
 * LLM.int8, or one so close to float32's limit that W − Q or W − B·A overflows.
 */
export class OutOfRangeError extends LoftqError {
  constructor(message: string) {
    super("OUT_OF_RANGE", message);
    this.name = "OutOfRangeError";
  }
}

/** A requested backend (e.g. WebAssembly SIMD) that this runtime cannot provide. */
export class BackendUnavailableError extends LoftqError {
  constructor(message: string) {
    super("BACKEND_UNAVAILABLE", message);
    this.name = "BackendUnavailableError";
  }
}
