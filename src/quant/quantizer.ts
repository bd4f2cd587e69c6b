import { InvalidArgumentError, OutOfRangeError, ShapeError } from "../errors.js";
import { checkMatrix, finiteFrobeniusNorm, type Matrix } from "../tensor/matrix.js";
import { checkOptionalBoolean, checkOptionKeys, optionKeysOf } from "../options.js";
import type { KernelBackend } from "../kernels/backend.js";
import { argminThresholds, buildThresholdLookup, dequantizeBlocks, type CodebookSpec } from "../kernels/codebook.js";
import { getBackend } from "../kernels/registry.js";
import { doubleDequantize, doubleQuantize, type DoubleQuantized } from "./double-quant.js";
import { quantizeFp4Blocks } from "./fp4.js";
import { dequantizeInt8Rows, quantizeInt8Rows } from "./int8-rowwise.js";
import { packCodes, packedByteLength, unpackCodes, type BitOrder } from "./packing.js";
import { FP4_TABLE_CODE_ORDER, midpoints, normalFloatTable, symmetricNormalFloatTable, uniformTable } from "./tables.js";

/**
 * The quantizers, behind one interface.
 * - "nf": PEFT / LoftQ NFQuantizer (normal-float table, x/absmax, argmin, first code in the low bits),
 *   bits 2, 3, 4, 8. Bit-exact with PEFT v0.18.1 (3 bits is our extension: PEFT cannot pack it).
 * - "nf-sym": a symmetric normal-float table (no lopsided single negative level at 2 bits), 2–4 bits.
 * - "uniform": `linspace(-1, 1, 2^b)` · absmax, bits 2–8, NFQuantizer mechanics.
 * - "bnb-nf4" / "bnb-fp4": bitsandbytes 4-bit (x·fl32(1/absmax), strict-midpoint decision, first code
 *   in the high nibble), optional double quantization of the absmax.
 * - "int8": LLM.int8 row-wise absmax (bitsandbytes CPU path); blockSize is the row length.
 */
export type QuantizerKind = "nf" | "nf-sym" | "uniform" | "bnb-nf4" | "bnb-fp4" | "int8";
export const QUANTIZER_KINDS: readonly QuantizerKind[] = ["nf", "nf-sym", "uniform", "bnb-nf4", "bnb-fp4", "int8"];

export const DEFAULT_BLOCK_SIZE = 64;
/**
 * Largest block size: far beyond any format's (bitsandbytes stops at 4096), and small enough that the
 * kernels' 32-bit block arithmetic (block start + size) cannot overflow.
 */
export const MAX_BLOCK_SIZE = 1 << 24;
const SUPPORTED_BITS: Record<QuantizerKind, readonly number[]> = {
  nf: [2, 3, 4, 8],
  "nf-sym": [2, 3, 4],
  uniform: [2, 3, 4, 5, 6, 7, 8],
  "bnb-nf4": [4],
  "bnb-fp4": [4],
  int8: [8],
};
/** The bit widths a quantizer kind supports. */
export function supportedBits(kind: QuantizerKind): readonly number[] {
  return SUPPORTED_BITS[kind];
}

/** bitsandbytes accepts only these 4-bit block sizes. */
const BNB_BLOCK_SIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096];

export interface QuantizerOptions {
  kind?: QuantizerKind;
  /** Code width; defaults to 4 (8 for int8). */
  bits?: number;
  /** Values per absmax block (default 64; checked, 1..2²⁴); int8 uses rows as its blocks whatever it is (its `Quantizer.blockSize` reads 0). */
  blockSize?: number;
  /** bnb-nf4 / bnb-fp4 only: quantize the absmax values too (bnb `compress_statistics`). */
  doubleQuant?: boolean;
  /** bnb-nf4 only: all-zero blocks as bnb's CUDA kernels write them (code 0) or its CPU path (code of 0.0). */
  zeroBlocks?: "cuda" | "cpu";
}

export interface QuantizedMatrix {
  readonly kind: QuantizerKind;
  readonly bits: number;
  readonly rows: number;
  readonly cols: number;
  /** Values per scale: blockSize for block quantizers, `cols` for int8. */
  readonly blockSize: number;
  readonly bitOrder: BitOrder;
  /** Packed codes (int8: the signed bytes as stored). */
  readonly packed: Uint8Array;
  /** One float32 scale per block (per row for int8); with double quantization, the reconstructed values. */
  readonly absmax: Float32Array;
  readonly doubleQuant?: DoubleQuantized;
  /** Code → value table (int8: empty). */
  readonly table: Float32Array;
  /** Storage in bytes: packed codes + scales (+ nested scales and offset); the code table is a format constant. */
  readonly bytes: number;
  /** `bytes · 8 / (rows · cols)`. */
  readonly bitsPerWeight: number;
}

/** Unpacked quantization of one matrix: a code per element and the scales that go with them. */
export interface Encoded {
  /** One code per element (int8: the signed values' bytes). */
  readonly codes: Uint8Array;
  /** Per-block absmax (per row for int8); with double quantization, the reconstructed values. */
  readonly scales: Float32Array;
  readonly doubleQuant?: DoubleQuantized;
}

export interface Quantizer {
  readonly kind: QuantizerKind;
  readonly bits: number;
  readonly blockSize: number;
  /** e.g. "nf4", "bnb-nf4+dq", "int8-rowwise". */
  readonly name: string;
  quantize(weight: Matrix): QuantizedMatrix;
  dequantize(q: QuantizedMatrix, out?: Float32Array): Matrix;
  /**
   * Codes and scales for `values` viewed as rows×cols, and (when given) dequantize(quantize(values))
   * written into `dequantized` in the same pass: the inner step of LoftQ. Codebook quantizers run
   * on `backend` (default: the registered default); the results are identical on every backend.
   * `codes` (optional, at least values.length bytes) receives the codes instead of a fresh array:
   * LoftQ passes buffers in the backend's memory so the kernel writes them in place.
   * The values must be finite: `quantize` and `loftq` check that first, this inner step does not
   * (a NaN is skipped by the absmax and gets code 0; an infinity turns its block to NaN).
   */
  encode(values: Float32Array, rows: number, cols: number, dequantized?: Float32Array, backend?: KernelBackend, codes?: Uint8Array): Encoded;
  /**
   * `encode`, but what it writes is the residual `minuend − dequantize(quantize(values))`, into
   * `residual` (which may be `values`, not `minuend`), and it also returns Σ residual² (float64):
   * LoftQ's Q and W − Q without holding Q. Codebook quantizers do it in the encoding pass itself.
   */
  encodeResidual(values: Float32Array, rows: number, cols: number, minuend: Float32Array, residual: Float32Array, backend?: KernelBackend, codes?: Uint8Array): { encoded: Encoded; residualSquared: number };
  /** dequantize(quantize(·)) from an encoding into `out`, bit-identical to what `encode` writes. */
  decode(encoded: Encoded, rows: number, cols: number, out: Float32Array, backend?: KernelBackend): Float32Array;
  /** Packs an encoding into the storage format. */
  pack(encoded: Encoded, rows: number, cols: number): QuantizedMatrix;
}

/** Throws unless `blockSize` is one the quantizer kind accepts (bitsandbytes: powers of two 32..4096). */
export function checkBlockSize(kind: QuantizerKind, blockSize: number, name = "blockSize"): void {
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > MAX_BLOCK_SIZE) {
    throw new InvalidArgumentError(`${name} must be an integer in 1..${MAX_BLOCK_SIZE}, got ${blockSize}`);
  }
  if ((kind === "bnb-nf4" || kind === "bnb-fp4") && !BNB_BLOCK_SIZES.includes(blockSize)) {
    throw new InvalidArgumentError(`${name} must be one of bitsandbytes' 4-bit block sizes ${BNB_BLOCK_SIZES.join(", ")}, got ${blockSize}`);
  }
}

const QUANTIZER_OPTION_KEYS = optionKeysOf<QuantizerOptions>()(["kind", "bits", "blockSize", "doubleQuant", "zeroBlocks"]);
const ZERO_BLOCK_MODES: ReadonlyArray<NonNullable<QuantizerOptions["zeroBlocks"]>> = ["cuda", "cpu"];

export function createQuantizer(options: QuantizerOptions = {}): Quantizer {
  checkOptionKeys(options, QUANTIZER_OPTION_KEYS, "createQuantizer", false);
  checkOptionalBoolean(options.doubleQuant, "doubleQuant");
  const kind = options.kind ?? "nf";
  if (!QUANTIZER_KINDS.includes(kind)) {
    throw new InvalidArgumentError(`unknown quantizer "${String(kind)}" (expected one of ${QUANTIZER_KINDS.join(", ")})`);
  }
  const bits = options.bits ?? (kind === "int8" ? 8 : 4);
  if (!SUPPORTED_BITS[kind].includes(bits)) {
    throw new InvalidArgumentError(`quantizer "${kind}" supports bits ${SUPPORTED_BITS[kind].join(", ")}, got ${bits}`);
  }
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(kind, blockSize);
  const isBnb = kind === "bnb-nf4" || kind === "bnb-fp4";
  const useDoubleQuant = options.doubleQuant ?? false;
  if (useDoubleQuant && !isBnb) throw new InvalidArgumentError(`doubleQuant applies to bnb-nf4 / bnb-fp4 only, not "${kind}"`);
  if (options.zeroBlocks !== undefined) {
    if (!ZERO_BLOCK_MODES.includes(options.zeroBlocks)) throw new InvalidArgumentError(`zeroBlocks must be one of ${ZERO_BLOCK_MODES.join(", ")}, got ${String(options.zeroBlocks)}`);
    if (kind !== "bnb-nf4") throw new InvalidArgumentError(`zeroBlocks applies to bnb-nf4 only, not "${kind}"`);
  }
  if (kind === "int8") return int8Quantizer();
  if (kind === "bnb-fp4") {
    return blockQuantizer({
      kind, bits, blockSize, useDoubleQuant, name: `bnb-fp4${useDoubleQuant ? "+dq" : ""}`, table: FP4_TABLE_CODE_ORDER, bitOrder: "msb-first", padCode: 0,
      encodeBlocks: (values, codes, absmax, dequantized) => quantizeFp4Blocks(values, blockSize, codes, absmax, dequantized),
    });
  }
  const table = kind === "uniform" ? uniformTable(bits) : kind === "nf-sym" ? symmetricNormalFloatTable(bits) : normalFloatTable(bits);
  const zeroBlockCode = kind === "bnb-nf4" && options.zeroBlocks === "cpu" ? table.indexOf(0) : 0;
  // bnb decides by the float32 midpoints of adjacent codes; PEFT by the float32 argmin of the
  // distances, which the exact thresholds of argminThresholds reproduce.
  const lookup = buildThresholdLookup(isBnb ? midpoints(table) : argminThresholds(table));
  if (!lookup) throw new InvalidArgumentError(`${kind}${bits}: code table too dense for the threshold lookup`);
  const spec: CodebookSpec = { table, selection: isBnb ? "bnb" : "peft", blockSize, zeroBlockCode, lookup };
  return blockQuantizer({
    kind, bits, blockSize, useDoubleQuant, table,
    name: isBnb ? `bnb-nf4${useDoubleQuant ? "+dq" : ""}` : `${kind}${bits}`,
    bitOrder: isBnb ? "msb-first" : "lsb-first",
    // bnb pads an odd trailing nibble with the code of 0.0.
    padCode: isBnb ? table.indexOf(0) : 0,
    encodeBlocks: (values, codes, absmax, dequantized, backend) =>
      void (backend ?? getBackend()).encodeCodebook({ values, spec, codes, absmax, ...(dequantized ? { dequantized } : {}) }),
    encodeResidualBlocks: (values, codes, absmax, minuend, residual, backend) =>
      (backend ?? getBackend()).encodeCodebook({ values, spec, codes, absmax, dequantized: residual, residualOf: minuend }),
  });
}

interface BlockQuantizerParts {
  kind: QuantizerKind;
  bits: number;
  blockSize: number;
  name: string;
  table: Float32Array;
  bitOrder: BitOrder;
  padCode: number;
  useDoubleQuant: boolean;
  encodeBlocks(values: Float32Array, codes: Uint8Array, absmax: Float32Array, dequantized: Float32Array | undefined, backend: KernelBackend | undefined): void;
  /** The fused residual form (codebook kernels); without it, encodeBlocks then a subtraction. */
  encodeResidualBlocks?(values: Float32Array, codes: Uint8Array, absmax: Float32Array, minuend: Float32Array, residual: Float32Array, backend: KernelBackend | undefined): number;
}

function blockQuantizer(parts: BlockQuantizerParts): Quantizer {
  const { kind, bits, blockSize, name, table, bitOrder, padCode, useDoubleQuant } = parts;
  /** One code per value (the caller's array when given) and one absmax per block. */
  const encodingBuffers = (count: number, codesOut: Uint8Array | undefined) => {
    if (codesOut && codesOut.length < count) throw new ShapeError(`encode: ${codesOut.length} code bytes for ${count} values`);
    return { codes: codesOut ? codesOut.subarray(0, count) : new Uint8Array(count), absmax: new Float32Array(Math.ceil(count / blockSize)) };
  };
  const quantizer: Quantizer = {
    kind,
    bits,
    blockSize,
    name,
    encode(values, _rows, _cols, dequantized, backend, codesOut) {
      const { codes, absmax } = encodingBuffers(values.length, codesOut);
      if (!useDoubleQuant) {
        parts.encodeBlocks(values, codes, absmax, dequantized, backend);
        return { codes, scales: absmax };
      }
      parts.encodeBlocks(values, codes, absmax, undefined, backend);
      const doubleQuant = doubleQuantize(absmax);
      const scales = doubleDequantize(doubleQuant);
      // map·nestedAbsmax + offset can round past float32's largest when the absmax values reach it.
      const overflow = scales.findIndex((scale) => !Number.isFinite(scale));
      if (overflow >= 0) throw new OutOfRangeError(`${name}: the double-quantized absmax of block ${overflow} overflows float32 (absmax ${absmax[overflow]}): scale the weight down`);
      if (dequantized) dequantizeBlocks(codes, scales, table, blockSize, dequantized);
      return { codes, scales, doubleQuant };
    },
    encodeResidual(values, rows, cols, minuend, residual, backend, codesOut) {
      checkResidual(values.length, minuend, residual);
      if (useDoubleQuant || !parts.encodeResidualBlocks) return residualBySubtraction(quantizer, values, rows, cols, minuend, residual, backend, codesOut);
      const { codes, absmax } = encodingBuffers(values.length, codesOut);
      const residualSquared = parts.encodeResidualBlocks(values, codes, absmax, minuend, residual, backend);
      return { encoded: { codes, scales: absmax }, residualSquared };
    },
    decode(encoded, _rows, _cols, out, backend) {
      (backend ?? getBackend()).decodeCodebook({ codes: encoded.codes, absmax: encoded.scales, table, blockSize, out });
      return out;
    },
    pack(encoded, rows, cols) {
      return finish({ kind, bits, rows, cols }, blockSize, bitOrder, packCodes(encoded.codes, bits, bitOrder, padCode), encoded.scales, table, encoded.doubleQuant);
    },
    quantize(weight) {
      checkQuantizeInput(weight, name);
      return quantizer.pack(quantizer.encode(weight.data, weight.rows, weight.cols), weight.rows, weight.cols);
    },
    dequantize(q, out) {
      checkQuantized(q, kind, bits, out);
      const codes = unpackCodes(q.packed, bits, q.rows * q.cols, q.bitOrder);
      return { rows: q.rows, cols: q.cols, data: dequantizeBlocks(codes, q.absmax, q.table, q.blockSize, out ?? new Float32Array(codes.length)) };
    },
  };
  return quantizer;
}

function int8Quantizer(): Quantizer {
  const quantizer: Quantizer = {
    kind: "int8",
    bits: 8,
    blockSize: 0,
    name: "int8-rowwise",
    encode(values, rows, cols, dequantized) {
      if (rows * cols !== values.length) throw new ShapeError(`int8: ${rows}×${cols} does not match ${values.length} values`);
      const codes = new Int8Array(values.length);
      const scales = new Float32Array(rows);
      quantizeInt8Rows(values, rows, cols, codes, scales, dequantized);
      return { codes: new Uint8Array(codes.buffer), scales };
    },
    encodeResidual(values, rows, cols, minuend, residual, backend) {
      checkResidual(values.length, minuend, residual);
      return residualBySubtraction(quantizer, values, rows, cols, minuend, residual, backend);
    },
    decode: (encoded, _rows, cols, out) => dequantizeInt8Rows(new Int8Array(encoded.codes.buffer, encoded.codes.byteOffset, encoded.codes.length), encoded.scales, cols, out),
    pack: (encoded, rows, cols) => finish({ kind: "int8", bits: 8, rows, cols }, cols, "lsb-first", encoded.codes, encoded.scales, new Float32Array(0)),
    quantize(weight) {
      checkQuantizeInput(weight, "int8-rowwise");
      return quantizer.pack(quantizer.encode(weight.data, weight.rows, weight.cols), weight.rows, weight.cols);
    },
    dequantize(q, out) {
      checkQuantized(q, "int8", 8, out);
      const codes = new Int8Array(q.packed.buffer, q.packed.byteOffset, q.packed.length);
      return { rows: q.rows, cols: q.cols, data: dequantizeInt8Rows(codes, q.absmax, q.cols, out ?? new Float32Array(codes.length)) };
    },
  };
  return quantizer;
}

/**
 * `quantize` takes whole matrices from users: shape first, then NaN/Inf named by position. In plain JS
 * (~40 ms per 4096² matrix): a WebAssembly backend would first copy the weight into its memory.
 */
function checkQuantizeInput(weight: Matrix, name: string): void {
  checkMatrix(weight, `${name}: weight`);
  finiteFrobeniusNorm(weight, `${name}: weight`);
}

function checkResidual(n: number, minuend: Float32Array, residual: Float32Array): void {
  if (minuend.length !== n || residual.length !== n) throw new ShapeError(`encodeResidual: ${n} values, ${minuend.length} in the minuend, ${residual.length} in the residual`);
  if (minuend === residual) throw new ShapeError("encodeResidual: the residual cannot overwrite its minuend");
}

/** encodeResidual for quantizers without a fused kernel: Q into `residual`, then minuend − Q in place. */
function residualBySubtraction(
  quantizer: Quantizer, values: Float32Array, rows: number, cols: number, minuend: Float32Array, residual: Float32Array,
  backend: KernelBackend | undefined, codes?: Uint8Array,
): { encoded: Encoded; residualSquared: number } {
  const encoded = quantizer.encode(values, rows, cols, residual, backend, codes);
  return { encoded, residualSquared: (backend ?? getBackend()).subtract(minuend, residual, residual) };
}

function finish(
  shape: { kind: QuantizerKind; bits: number; rows: number; cols: number },
  blockSize: number, bitOrder: BitOrder, packed: Uint8Array, absmax: Float32Array, table: Float32Array, doubleQuant?: DoubleQuantized,
): QuantizedMatrix {
  // The code tables (and bnb's nested 8-bit map) are constants of the format, so not counted.
  const scaleBytes = doubleQuant ? doubleQuant.codes.length + 4 * doubleQuant.nestedAbsmax.length + 4 : 4 * absmax.length;
  const bytes = packed.length + scaleBytes;
  const count = shape.rows * shape.cols;
  return {
    ...shape,
    blockSize,
    bitOrder,
    packed,
    absmax,
    ...(doubleQuant ? { doubleQuant } : {}),
    table,
    bytes,
    bitsPerWeight: count === 0 ? 0 : (bytes * 8) / count,
  };
}

/**
 * A QuantizedMatrix may come from a file or a caller's own object: its arrays must fit its shape
 * before any decoding, or missing scales would decode as NaN and short code arrays as zeros.
 */
function checkQuantized(q: QuantizedMatrix, kind: QuantizerKind, bits: number, out: Float32Array | undefined): void {
  if (q.kind !== kind || q.bits !== bits) {
    throw new InvalidArgumentError(`cannot dequantize a ${q.kind}/${q.bits}-bit matrix with a ${kind}/${bits}-bit quantizer`);
  }
  if (!Number.isSafeInteger(q.rows) || !Number.isSafeInteger(q.cols) || q.rows < 1 || q.cols < 1) throw new ShapeError(`dequantize: invalid shape ${q.rows}×${q.cols}`);
  const count = q.rows * q.cols;
  if (kind !== "int8" && (!Number.isInteger(q.blockSize) || q.blockSize < 1)) throw new ShapeError(`dequantize: invalid block size ${q.blockSize}`);
  const packedBytes = kind === "int8" ? count : packedByteLength(count, bits);
  if (!(q.packed instanceof Uint8Array) || q.packed.length !== packedBytes) {
    throw new ShapeError(`dequantize: ${q.rows}×${q.cols} ${kind} codes take ${packedBytes} bytes, got ${q.packed instanceof Uint8Array ? q.packed.length : typeof q.packed}`);
  }
  const scaleCount = kind === "int8" ? q.rows : Math.ceil(count / q.blockSize);
  if (!(q.absmax instanceof Float32Array) || q.absmax.length !== scaleCount) {
    throw new ShapeError(`dequantize: ${q.rows}×${q.cols} in blocks of ${kind === "int8" ? "a row" : q.blockSize} takes ${scaleCount} scales, got ${q.absmax instanceof Float32Array ? q.absmax.length : typeof q.absmax}`);
  }
  if (kind !== "int8" && (!(q.table instanceof Float32Array) || q.table.length < 2 ** bits)) throw new ShapeError(`dequantize: a ${bits}-bit code table needs ${2 ** bits} values`);
  if (out !== undefined && (!(out instanceof Float32Array) || out.length !== count)) throw new ShapeError(`dequantize: out must be a Float32Array of ${count} values`);
}
