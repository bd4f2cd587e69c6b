import { LoftqError } from "../errors.js";

/**
 * In-memory safetensors parsing with the header treated as hostile input: bounded length, JSON
 * object, known dtypes, integer dims, offsets inside the buffer, contiguous from 0, sizes that
 * match shape × dtype. (The streaming reader for whole checkpoints builds on the same checks.)
 */
export const MAX_HEADER_BYTES = 100_000_000;

export const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8,
};

export class SafetensorsParseError extends LoftqError {
  constructor(message: string) {
    super("PARSE_ERROR", message);
    this.name = "SafetensorsParseError";
  }
}

export interface TensorEntry {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  /** The raw little-endian bytes (a view into the input). */
  readonly bytes: Uint8Array;
}

export interface ParsedSafetensors {
  readonly metadata: Record<string, string>;
  readonly tensors: Map<string, TensorEntry>;
}

export function parseSafetensors(file: Uint8Array, fileName = "<buffer>"): ParsedSafetensors {
  const fail = (message: string): never => {
    throw new SafetensorsParseError(`${fileName}: ${message}`);
  };
  if (file.length < 8) fail(`too short for a safetensors header (${file.length} bytes)`);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES) fail(`header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (8 + headerLength > file.length) fail(`header length ${headerLength} runs past the end of the file`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(file.subarray(8, 8 + headerLength)));
  } catch (error) {
    fail(`header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail("header is not a JSON object");
  const dataStart = 8 + headerLength;
  const dataLength = file.length - dataStart;
  const metadata: Record<string, string> = {};
  const entries: Array<TensorEntry & { begin: number; end: number }> = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null) fail("__metadata__ is not an object");
      for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof value !== "string") fail(`__metadata__.${key} is not a string`);
        metadata[key] = value as string;
      }
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof info !== "object" || info === null) fail(`tensor "${name}": entry is not an object`);
    const dtype = info.dtype;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) fail(`tensor "${name}": unknown dtype ${JSON.stringify(dtype)}`);
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`tensor "${name}": shape must be a list of non-negative integers`);
    const offsets = info.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(`tensor "${name}": data_offsets must be two non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(numel * DTYPE_BYTES[dtype as string]!)) fail(`tensor "${name}": size overflows`);
    if (end < begin || end > dataLength) fail(`tensor "${name}": data_offsets [${begin}, ${end}] outside the ${dataLength}-byte data section`);
    if (end - begin !== numel * DTYPE_BYTES[dtype as string]!) {
      fail(`tensor "${name}": ${end - begin} bytes for shape [${(shape as number[]).join(", ")}] of ${dtype}`);
    }
    entries.push({ name, dtype: dtype as string, shape: shape as number[], begin, end, bytes: file.subarray(dataStart + begin, dataStart + end) });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const entry of entries) {
    if (entry.begin !== cursor) fail(`tensor "${entry.name}": data is not contiguous (starts at ${entry.begin}, expected ${cursor})`);
    cursor = entry.end;
  }
  if (cursor !== dataLength) fail(`data section is ${dataLength} bytes but tensors cover ${cursor}`);
  const tensors = new Map<string, TensorEntry>();
  for (const { name, dtype, shape, bytes } of entries) tensors.set(name, { name, dtype, shape, bytes });
  return { metadata, tensors };
}

/** A float32 copy of an F32 tensor (copying also fixes alignment). */
export function tensorToFloat32(entry: TensorEntry): Float32Array {
  if (entry.dtype !== "F32") throw new SafetensorsParseError(`tensor "${entry.name}" is ${entry.dtype}, expected F32`);
  const copy = new Uint8Array(entry.bytes);
  return new Float32Array(copy.buffer);
}
