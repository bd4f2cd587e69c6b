import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { DTYPE_BYTES, DTYPE_ORDER } from "./safetensors.js";
import { InvalidArgumentError, LoftqError } from "../errors.js";

/**
 * Writes safetensors files the way upstream does, byte for byte: tensors sorted by dtype
 * (descending enum order) then name, contiguous offsets, a compact JSON header with
 * `__metadata__` first, padded with spaces to a multiple of 8. Tensor bytes are produced one at a
 * time by a callback (so LoftQ can run while the file is written) into `<path>.partial`, which is
 * renamed onto `path` only once complete: a crash or a full disk never leaves a truncated file.
 */
export interface PlannedTensor {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
}

/**
 * A tensor's bytes for the writer: in memory, or streamed in pieces (a tensor copied from another file
 * through a reused buffer: a fresh buffer per tensor costs more in page faults than the copy itself on
 * VMs that fault memory in page by page, ~4 s per GB read against ~0.1 s through one 8 MiB buffer).
 * `stream` hands every piece to `write` in order; each piece is written before the next is asked for.
 */
export type TensorBytes = Uint8Array | { stream(write: (piece: Uint8Array) => void): void };

export class OutputWriteError extends LoftqError {
  constructor(message: string) {
    super("IO_ERROR", message);
    this.name = "OutputWriteError";
  }
}

/** ENOSPC or EDQUOT while writing: worth retrying once space is freed. */
export class DiskFullError extends OutputWriteError {
  constructor(message: string) {
    super(message);
    this.name = "DiskFullError";
  }
}

export function tensorByteLength(tensor: PlannedTensor): number {
  return tensor.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[tensor.dtype]!;
}

/** Upstream's writing order: dtype descending (by enum position), then name ascending by bytes. */
export function upstreamOrder<T extends PlannedTensor>(tensors: readonly T[]): T[] {
  const rank = (dtype: string) => DTYPE_ORDER.indexOf(dtype);
  return [...tensors].sort((a, b) => rank(b.dtype) - rank(a.dtype) || compareBytes(a.name, b.name));
}

function compareBytes(a: string, b: string): number {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return Buffer.compare(x, y);
}

/** The header bytes (length prefix included) for tensors in the given order. */
export function encodeHeader(tensors: readonly PlannedTensor[], metadata: Record<string, string>): Uint8Array {
  // No prototype: a tensor called "__proto__" must become a key, not replace the object's prototype.
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const tensor of tensors) {
    const length = tensorByteLength(tensor);
    // A name twice would keep the last entry's offsets over a data section holding both: a broken file.
    if (Object.hasOwn(header, tensor.name) || tensor.name === "__metadata__") throw new InvalidArgumentError(`safetensors: the tensor name ${JSON.stringify(tensor.name)} is given twice (or is the reserved __metadata__)`);
    header[tensor.name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + length] };
    offset += length;
  }
  let json = JSON.stringify(header);
  const padded = Math.ceil(Buffer.byteLength(json) / 8) * 8;
  json += " ".repeat(padded - Buffer.byteLength(json));
  const body = Buffer.from(json);
  const out = new Uint8Array(8 + body.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  return out;
}

export function writeSafetensorsFile(
  path: string,
  tensors: readonly PlannedTensor[],
  metadata: Record<string, string>,
  produce: (tensor: PlannedTensor, index: number) => TensorBytes,
  options: { publish?: (partial: string, path: string) => void } = {},
): number {
  const partial = `${path}.partial`;
  const fd = openSync(partial, "w");
  let written = 0;
  let open = true;
  try {
    const write = (bytes: Uint8Array) => {
      for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
      written += bytes.length;
    };
    write(encodeHeader(tensors, metadata));
    tensors.forEach((tensor, index) => {
      const bytes = produce(tensor, index);
      const expected = tensorByteLength(tensor);
      const wrongLength = (length: number) => new OutputWriteError(`${path}: tensor "${tensor.name}" produced ${length} bytes, expected ${expected}`);
      if (bytes instanceof Uint8Array) {
        if (bytes.length !== expected) throw wrongLength(bytes.length);
        write(bytes);
        return;
      }
      let streamed = 0;
      bytes.stream((piece) => {
        streamed += piece.length;
        if (streamed > expected) throw wrongLength(streamed);
        write(piece);
      });
      if (streamed !== expected) throw wrongLength(streamed);
    });
    // Durable: fsync before the rename, here or (options.publish) on another thread.
    if (!options.publish) fsyncSync(fd);
    open = false;
    closeSync(fd);
  } catch (error) {
    // A failed close must not be retried: the second close's EBADF would hide the real error.
    if (open) closeSync(fd);
    rmSync(partial, { force: true });
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT") throw new DiskFullError(`${path}: the disk is full (after ${written} bytes); this file was not left behind`);
    throw error;
  }
  if (!options.publish) {
    renameSync(partial, path);
    return written;
  }
  try {
    options.publish(partial, path);
  } catch (error) {
    rmSync(partial, { force: true });
    throw error;
  }
  return written;
}
