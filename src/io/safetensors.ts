import { LoftqError } from "../errors.js";
import { decodeHalf } from "../tensor/dtype.js";
import { jsonPreview } from "./json-preview.js";

/**
 * safetensors headers, treated as hostile input: bounded length, a JSON object, known dtypes,
 * non-negative integer dims, no duplicate names, offsets inside the data section, tensors
 * contiguous from 0 and covering it exactly, byte sizes equal to numel × dtype size. Every failure
 * is a SafetensorsParseError naming the file and, where there is one, the tensor.
 */
export const MAX_HEADER_BYTES = 100_000_000;

export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1, F8_E4M3FNUZ: 1, F8_E5M2FNUZ: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, C64: 8, F64: 8, I64: 8, U64: 8,
  // Sub-byte types are packed (upstream's bitsize / 8): a tensor must fill whole bytes.
  F4: 0.5, F6_E2M3: 0.75, F6_E3M2: 0.75,
};

/** Ascending enum order of upstream's Dtype; writers sort tensors by it, descending. */
export const DTYPE_ORDER = [
  "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
  "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
];

export class SafetensorsParseError extends LoftqError {
  constructor(message: string) {
    super("PARSE_ERROR", message);
    this.name = "SafetensorsParseError";
  }
}

export interface TensorInfo {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Byte range inside the data section. */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsHeader {
  readonly metadata: Record<string, string>;
  /** In file order (by offset). */
  readonly tensors: readonly TensorInfo[];
  /** Bytes before the data section: 8 + header length. */
  readonly dataStart: number;
}

/**
 * Parses and validates a header. `headerBytes` is the JSON text, `dataLength` the size of the data
 * section (file size − 8 − header length).
 */
export function parseHeader(headerBytes: Uint8Array, dataLength: number, fileName: string): SafetensorsHeader {
  const fail = (message: string): never => {
    throw new SafetensorsParseError(`${fileName}: ${message}`);
  };
  if (headerBytes[0] === 0xef && headerBytes[1] === 0xbb && headerBytes[2] === 0xbf) fail("header starts with a UTF-8 byte-order mark, which safetensors does not allow");
  let text = "";
  let header: unknown;
  try {
    // ignoreBOM: the decoder must not strip a byte-order mark silently (a leading one is named above).
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes);
    header = JSON.parse(text);
  } catch (error) {
    fail(`header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail("header is not a JSON object");
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const repeated = duplicateKey(text);
  if (repeated !== undefined) fail(`header has the key ${jsonPreview(repeated)} twice in one object`);
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    // A lone surrogate (\ud800) parses here but not in Rust, and no UTF-8 writer can name the tensor back.
    if (LONE_SURROGATE.test(name)) fail(`tensor name ${jsonPreview(name)} holds a lone UTF-16 surrogate`);
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("__metadata__ is not an object");
      for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof value !== "string") fail(`__metadata__ ${jsonPreview(key)} is not a string`);
        if (LONE_SURROGATE.test(key) || LONE_SURROGATE.test(value as string)) fail(`__metadata__ ${jsonPreview(key)} holds a lone UTF-16 surrogate`);
        metadata[key] = value as string;
      }
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof info !== "object" || info === null) fail(`tensor ${jsonPreview(name)}: entry is not an object`);
    const dtype = info.dtype;
    if (typeof dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, dtype)) fail(`tensor ${jsonPreview(name)}: unknown dtype ${jsonPreview(dtype)}`);
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`tensor ${jsonPreview(name)}: shape must be a list of non-negative integers`);
    const offsets = info.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(`tensor ${jsonPreview(name)}: data_offsets must be two non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    const elements = (shape as number[]).reduce((a, b) => a * b, 1);
    const bytes = elements * DTYPE_BYTES[dtype as string]!;
    if (!Number.isFinite(bytes) || bytes > Number.MAX_SAFE_INTEGER) fail(`tensor ${jsonPreview(name)}: size overflows`);
    if (!Number.isInteger(bytes)) fail(`tensor ${jsonPreview(name)}: ${elements} values of ${dtype} do not fill whole bytes`);
    if (end < begin || end > dataLength) fail(`tensor ${jsonPreview(name)}: data_offsets [${begin}, ${end}] outside the ${dataLength}-byte data section`);
    if (end - begin !== bytes) fail(`tensor ${jsonPreview(name)}: ${end - begin} bytes for shape [${(shape as number[]).join(", ")}] of ${dtype}`);
    tensors.push({ name, dtype: dtype as string, shape: shape as number[], begin, end });
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const tensor of tensors) {
    if (tensor.begin !== cursor) fail(`tensor "${tensor.name}": data is not contiguous (starts at ${tensor.begin}, expected ${cursor})`);
    cursor = tensor.end;
  }
  if (cursor !== dataLength) fail(`data section is ${dataLength} bytes but tensors cover ${cursor}`);
  return { metadata, tensors, dataStart: 8 + headerBytes.length };
}

/** Validates the 8-byte length prefix against the file size; returns the header length. */
export function headerLength(prefix: Uint8Array, fileSize: number, fileName: string): number {
  if (fileSize < 8 || prefix.length < 8) throw new SafetensorsParseError(`${fileName}: too short for a safetensors header (${fileSize} bytes)`);
  const length = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsParseError(`${fileName}: header length ${length} exceeds the ${MAX_HEADER_BYTES}-byte limit${formatHint(prefix)}`);
  if (8n + length > BigInt(fileSize)) throw new SafetensorsParseError(`${fileName}: header length ${length} runs past the end of the file${formatHint(prefix)}`);
  return Number(length);
}

/** What a file that is not safetensors probably is, from its first bytes (zip: PyTorch's torch.save format). */
function formatHint(prefix: Uint8Array): string {
  const start = String.fromCharCode(...prefix.subarray(0, 4));
  if (start.startsWith("PK")) return ": this is a zip archive (PyTorch's .bin/.pt format), not safetensors; convert it first (e.g. with safetensors' convert script)";
  if (/^\s*[{[]/.test(start)) return ": this is a JSON file, not safetensors";
  if (prefix[0] === 0x80) return ": this is a Python pickle (an old PyTorch .bin), not safetensors; convert it first";
  return " (is this a safetensors file?)";
}

/** With the u flag a surrogate pair is one code point, so this class matches only unpaired halves. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * The first key that occurs twice in one object of `text` (valid JSON), at any depth, or undefined.
 * JSON.parse keeps the last of duplicates silently, where the safetensors crate refuses the file: a
 * tensor named twice, or an entry with two `data_offsets`, must not be read one way here and another there.
 */
function duplicateKey(text: string): string | undefined {
  // One entry per open bracket: the keys seen so far in an object, null for an array.
  const open: Array<Set<string> | null> = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '"') {
      const start = i;
      for (i++; text[i] !== '"'; i++) if (text[i] === "\\") i++;
      const keys = open.at(-1);
      if (expectKey && keys) {
        const key = JSON.parse(text.slice(start, i + 1)) as string;
        if (keys.has(key)) return key;
        keys.add(key);
      }
      expectKey = false;
    } else if (ch === "{" || ch === "[") {
      open.push(ch === "{" ? new Set() : null);
      expectKey = ch === "{";
    } else if (ch === "}" || ch === "]") open.pop();
    else if (ch === ",") expectKey = open.at(-1) != null;
  }
  return undefined;
}

export interface TensorEntry extends TensorInfo {
  /** The raw little-endian bytes (a view into the input). */
  readonly bytes: Uint8Array;
}

export interface ParsedSafetensors {
  readonly metadata: Record<string, string>;
  readonly tensors: Map<string, TensorEntry>;
}

/** Parses a whole file held in memory (small files: tests, adapters). */
export function parseSafetensors(file: Uint8Array, fileName = "<buffer>"): ParsedSafetensors {
  const length = headerLength(file.subarray(0, 8), file.length, fileName);
  const header = parseHeader(file.subarray(8, 8 + length), file.length - 8 - length, fileName);
  const tensors = new Map<string, TensorEntry>();
  for (const info of header.tensors) {
    tensors.set(info.name, { ...info, bytes: file.subarray(header.dataStart + info.begin, header.dataStart + info.end) });
  }
  return { metadata: header.metadata, tensors };
}

/** Float32 values of an F32, F16 or BF16 tensor (copied, so alignment never matters). */
export function decodeFloatTensor(dtype: string, bytes: Uint8Array, name = "tensor"): Float32Array {
  if (dtype === "F32") return new Float32Array(new Uint8Array(bytes).buffer);
  if (dtype === "F16") return decodeHalf(bytes, "f16");
  if (dtype === "BF16") return decodeHalf(bytes, "bf16");
  throw new SafetensorsParseError(`tensor ${jsonPreview(name)} is ${dtype}, not a float type (F32, F16, BF16)`);
}

/** A float32 copy of an F32 tensor. */
export function tensorToFloat32(entry: TensorEntry): Float32Array {
  if (entry.dtype !== "F32") throw new SafetensorsParseError(`tensor "${entry.name}" is ${entry.dtype}, expected F32`);
  return decodeFloatTensor("F32", entry.bytes, entry.name);
}
