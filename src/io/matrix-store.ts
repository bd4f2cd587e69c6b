import { existsSync, mkdirSync, rmSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { LoftqError } from "../errors.js";
import type { Matrix } from "../tensor/matrix.js";
import { float32Bytes } from "../tensor/dtype.js";
import { SafetensorsFile } from "./safetensors-file.js";
import { SafetensorsParseError } from "./safetensors.js";
import { writeSafetensorsFile, type TensorBytes } from "./safetensors-writer.js";
import type { MatrixReport } from "./quantize-checkpoint.js";
import type { BackgroundPublisher } from "./background-publisher.js";

/**
 * Finished matrices on disk, one safetensors file per module (`q` in the backbone dtype and stored
 * orientation, `lora_A`, `lora_B`, the report in the metadata), each written atomically. This is
 * what makes runs resumable after a kill -9 and shardable across machines: computing a matrix and
 * assembling the checkpoint are separate steps, and a store can come from another process.
 */
export const STORE_DIR = ".loftq-matrices";
const MODULE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/** What the adapter and the report need: the factors, without the (large) backbone weight. */
export interface StoredFactors {
  a: Matrix;
  b: Matrix;
  report: MatrixReport;
}

export interface StoredMatrix extends StoredFactors {
  q: Uint8Array;
}

/** Longest module name used as a file name as it is (file systems allow 255 bytes per name). */
export const MAX_MODULE_FILE_NAME = 200;

/**
 * The module's own name when it makes a portable file name, else its SHA-256 (names with spaces,
 * slashes or hundreds of characters are legal in a checkpoint and must not fail after the work).
 */
function fileOf(store: string, module: string): string {
  const name = MODULE_NAME.test(module) && module.length <= MAX_MODULE_FILE_NAME ? module : `sha256-${createHash("sha256").update(module).digest("hex")}`;
  return join(store, `${name}.safetensors`);
}

/**
 * Writes a module's entry; `publisher` fsyncs and renames it into place on another thread (without
 * one, here), so an entry exists only with all of its data on disk: a resumed run after a power cut
 * finds whole entries or none.
 */
export function saveMatrix(store: string, module: string, qDtype: string, qShape: readonly number[], result: StoredMatrix, publisher?: BackgroundPublisher): void {
  mkdirSync(store, { recursive: true });
  const tensors = [...factorTensors(result), { name: "q", dtype: qDtype, shape: qShape, bytes: result.q }];
  writeSafetensorsFile(fileOf(store, module), tensors, { report: JSON.stringify(result.report) }, (_, i) => tensors[i]!.bytes, publisher ? { publish: publisher.publish } : {});
}

function factorTensors({ a, b }: StoredFactors) {
  return [
    { name: "lora_A", dtype: "F32", shape: [a.rows, a.cols], bytes: float32Bytes(a.data) },
    { name: "lora_B", dtype: "F32", shape: [b.rows, b.cols], bytes: float32Bytes(b.data) },
  ];
}

/**
 * Drops `q` from a module's entry once it is in the output's shards (durably): the entry keeps the
 * factors and the report (all the adapter and a resumed run need), and the store stops holding a
 * second copy of the backbone. Atomic (temporary name, fsync, rename): the entry is whole either way.
 */
export function dropBackboneWeight(store: string, module: string): void {
  if (!holdsBackboneWeight(store, module)) return; // dropped already, before an interruption
  const factors = loadFactors(store, module);
  const tensors = factorTensors(factors);
  writeSafetensorsFile(fileOf(store, module), tensors, { report: JSON.stringify(factors.report) }, (_, i) => tensors[i]!.bytes);
}

/** Whether the module's entry still holds its q (see dropBackboneWeight). */
export function holdsBackboneWeight(store: string, module: string): boolean {
  const file = SafetensorsFile.open(fileOf(store, module));
  try {
    return file.tensors.some((t) => t.name === "q");
  } finally {
    file.close();
  }
}

/** Removes a module's entry, to be computed again. */
export function removeMatrix(store: string, module: string): void {
  rmSync(fileOf(store, module), { force: true });
}

export function hasMatrix(store: string, module: string): boolean {
  return existsSync(fileOf(store, module));
}

/**
 * Whether a readable entry for `module` is in the store; an unreadable one (a store written by a
 * version that skipped the fsync, or a damaged disk) is removed, to be computed again.
 */
export function keepIfReadable(store: string, module: string): boolean {
  const path = fileOf(store, module);
  if (!existsSync(path)) return false;
  try {
    SafetensorsFile.open(path).close();
    return true;
  } catch (error) {
    if (!(error instanceof LoftqError)) throw error;
    rmSync(path, { force: true });
    return false;
  }
}

/** A module's q streamed from its entry (see TensorBytes): assembling the backbone copies it without holding it. */
export function streamBackboneWeight(store: string, module: string): TensorBytes {
  // Checked as every read is (a damaged entry from a fragment fails here, before the shard is written on).
  return { stream: (write) => read(store, module, (file) => file.streamBytes("q").stream(write)) };
}

/** A module's q as float32 into `out` (its stored orientation; exactly its size), read without a fresh buffer. */
export function readBackboneWeight(store: string, module: string, out: Float32Array): Float32Array {
  return read(store, module, (file) => file.readFloat32("q", out));
}

/** The factors and report only: assembling an adapter for a whole model must not hold every q. */
export function loadFactors(store: string, module: string): StoredFactors {
  return read(store, module, withFactors);
}

/** An entry's report and its factors' shapes, from the header alone (what checking an entry needs). */
export interface StoredEntryHeader {
  a: { rows: number; cols: number };
  b: { rows: number; cols: number };
  report: MatrixReport;
}

export function loadEntryHeader(store: string, module: string): StoredEntryHeader {
  return read(store, module, (_, entry) => entry);
}

function withFactors(file: SafetensorsFile, entry: StoredEntryHeader): StoredFactors {
  return { a: { ...entry.a, data: file.readFloat32("lora_A") }, b: { ...entry.b, data: file.readFloat32("lora_B") }, report: entry.report };
}

function read<T>(store: string, module: string, pick: (file: SafetensorsFile, entry: StoredEntryHeader) => T): T {
  const file = SafetensorsFile.open(fileOf(store, module));
  try {
    // Entries can come from other machines (merge): a damaged one is an error, not a wrong adapter.
    const damaged = (why: string) => new SafetensorsParseError(`${file.path}: ${why}; the entry is damaged (run its matrix or shard again)`);
    const shape = (name: string) => {
      const info = file.info(name);
      if (info.shape.length !== 2) throw damaged(`${name} has shape [${info.shape.join(", ")}], not a matrix`);
      if (info.dtype !== "F32") throw damaged(`${name} is ${info.dtype}, not the F32 the store writes`);
      return { rows: info.shape[0]!, cols: info.shape[1]! };
    };
    let report: unknown;
    try {
      report = JSON.parse(file.header.metadata.report ?? "null");
    } catch {
      throw damaged("its report is not valid JSON");
    }
    if (typeof report !== "object" || report === null || Array.isArray(report)) throw damaged("it has no report");
    const a = shape("lora_A");
    const b = shape("lora_B");
    if (a.rows !== b.cols) throw damaged(`lora_A is ${a.rows}×${a.cols} but lora_B ${b.rows}×${b.cols}`);
    return pick(file, { a, b, report: report as MatrixReport });
  } finally {
    file.close();
  }
}
