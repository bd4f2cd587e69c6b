import { closeSync, fstatSync, openSync, readSync, statSync } from "node:fs";
import { ShapeError } from "../errors.js";
import { decodeHalf } from "../tensor/dtype.js";
import { decodeFloatTensor, headerLength, parseHeader, SafetensorsParseError, type SafetensorsHeader, type TensorInfo } from "./safetensors.js";

/** Bytes per read of a streamed tensor (streamBytes): large enough that per-call costs vanish. */
export const STREAM_PIECE_BYTES = 8 << 20;
/** The one buffer streamed reads go through, made on first use and kept (a fresh one per tensor costs page faults). */
let pieceBuffer: Uint8Array | undefined;

/**
 * A safetensors file read by offsets: only the header is parsed up front; each tensor is read on
 * demand, so a shard is never held in memory whole (and Node's 4 GiB Buffer limit never matters
 * for the file, only for a single tensor).
 */
export class SafetensorsFile {
  readonly header: SafetensorsHeader;
  private readonly byName: Map<string, TensorInfo>;

  private constructor(readonly path: string, private readonly fd: number, header: SafetensorsHeader) {
    this.header = header;
    this.byName = new Map(header.tensors.map((t) => [t.name, t]));
  }

  static open(path: string): SafetensorsFile {
    // Opening a FIFO for reading blocks until something writes to it: refuse anything but a file first.
    if (!statSync(path).isFile()) throw new SafetensorsParseError(`${path}: not a regular file`);
    const fd = openSync(path, "r");
    try {
      const stats = fstatSync(fd);
      if (!stats.isFile()) throw new SafetensorsParseError(`${path}: not a regular file`);
      const size = stats.size;
      const prefix = new Uint8Array(8);
      readSync(fd, prefix, 0, Math.min(8, size), 0);
      const length = headerLength(prefix, size, path);
      const headerBytes = new Uint8Array(length);
      readExactly(fd, headerBytes, 8);
      return new SafetensorsFile(path, fd, parseHeader(headerBytes, size - 8 - length, path));
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  get tensors(): readonly TensorInfo[] {
    return this.header.tensors;
  }

  info(name: string): TensorInfo {
    const info = this.byName.get(name);
    if (!info) throw new SafetensorsParseError(`${this.path}: no tensor named "${name}"`);
    return info;
  }

  /**
   * The tensor's bytes as a stream for the writer (see TensorBytes): read STREAM_PIECE_BYTES at a time
   * into one buffer shared by every stream, so a piece is valid only inside its `write` call and streams
   * must not run inside one another. The file must stay open until the stream has run.
   */
  streamBytes(name: string): { stream(write: (piece: Uint8Array) => void): void } {
    const info = this.info(name);
    const start = this.header.dataStart + info.begin;
    const length = info.end - info.begin;
    return {
      stream: (write) => {
        pieceBuffer ??= new Uint8Array(STREAM_PIECE_BYTES);
        for (let done = 0; done < length; ) {
          const piece = pieceBuffer.subarray(0, Math.min(STREAM_PIECE_BYTES, length - done));
          readExactly(this.fd, piece, start + done);
          write(piece);
          done += piece.length;
        }
      },
    };
  }

  readBytes(name: string): Uint8Array {
    const info = this.info(name);
    const out = new Uint8Array(info.end - info.begin);
    readExactly(this.fd, out, this.header.dataStart + info.begin);
    return out;
  }

  /**
   * The tensor as float32 (F32, F16 or BF16 on disk). With `out` (exactly the tensor's element
   * count) nothing is allocated, else one array: 16-bit data is read into the back half of it and
   * widened in place, front to back (element i is written only after every source at or before it
   * was read).
   */
  readFloat32(name: string, out?: Float32Array): Float32Array {
    const info = this.info(name);
    if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16") return decodeFloatTensor(info.dtype, new Uint8Array(0), name); // throws the typed error
    const count = info.shape.reduce((a, b) => a * b, 1);
    // Without `out`, one new array read into as `out` would be (not the bytes, then a float32 copy).
    if (!out) out = new Float32Array(count);
    if (out.length !== count) throw new ShapeError(`tensor "${name}" has ${count} values, the output array ${out.length}`);
    const position = this.header.dataStart + info.begin;
    if (info.dtype === "F32") {
      readExactly(this.fd, new Uint8Array(out.buffer, out.byteOffset, 4 * count), position);
      return out;
    }
    const halves = new Uint8Array(out.buffer, out.byteOffset + 2 * count, 2 * count);
    readExactly(this.fd, halves, position);
    return decodeHalf(halves, info.dtype === "F16" ? "f16" : "bf16", out);
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** readSync until `out` is full (a single call may return fewer bytes, and caps at 2 GiB). */
function readExactly(fd: number, out: Uint8Array, position: number): void {
  const CHUNK = 1 << 30;
  for (let done = 0; done < out.length; ) {
    const read = readSync(fd, out, done, Math.min(CHUNK, out.length - done), position + done);
    if (read === 0) throw new SafetensorsParseError(`unexpected end of file at byte ${position + done}`);
    done += read;
  }
}
