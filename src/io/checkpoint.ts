import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { LoftqError } from "../errors.js";
import { SafetensorsFile } from "./safetensors-file.js";
import { jsonPreview } from "./json-preview.js";
import type { TensorInfo } from "./safetensors.js";

/**
 * A Hugging Face model directory: `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` (whose file names are checked: plain names in the directory,
 * nothing else), plus `config.json` when present. The index must describe the shards exactly.
 */
export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";
const SHARD_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]*\.safetensors$/;
const MAX_JSON_BYTES = 64 * 2 ** 20;

export class CheckpointError extends LoftqError {
  constructor(message: string) {
    super("PARSE_ERROR", message);
    this.name = "CheckpointError";
  }
}

export interface CheckpointTensor extends TensorInfo {
  /** Shard file name (relative to the directory). */
  readonly shard: string;
}

export interface Checkpoint {
  readonly dir: string;
  readonly sharded: boolean;
  /** Shard file names in index order (one entry when not sharded). */
  readonly shardNames: readonly string[];
  readonly files: ReadonlyMap<string, SafetensorsFile>;
  /** Every tensor, shard by shard in file order. */
  readonly tensors: readonly CheckpointTensor[];
  readonly config: Record<string, unknown> | undefined;
  /** Metadata of the first shard (e.g. {"format": "pt"}). */
  readonly metadata: Record<string, string>;
  /** Float32 values (into `out`, sized exactly, when given). */
  readFloat32(name: string, out?: Float32Array): Float32Array;
  readBytes(name: string): Uint8Array;
  /** The tensor's bytes streamed through a reused buffer, for copying it into another file (see TensorBytes). */
  streamBytes(name: string): { stream(write: (piece: Uint8Array) => void): void };
  close(): void;
}

export function readJsonFile(path: string): unknown {
  const stats = statSync(path);
  // A FIFO or a device (a config.json linked to /dev/zero) has no size to check and may never end.
  if (!stats.isFile()) throw new CheckpointError(`${path}: not a regular file`);
  const size = stats.size;
  if (size > MAX_JSON_BYTES) throw new CheckpointError(`${path}: ${size} bytes is too large for a JSON file here`);
  // Read errors (EACCES, EIO) keep their own message: only what fails to parse is "not valid JSON".
  const text = readFileSync(path, "utf8");
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new CheckpointError(`${path}: not valid JSON (${(error as Error).message})`);
  }
}

/** A config.json: a JSON object (transformers' PretrainedConfig), anything else is refused. */
function readConfig(path: string): Record<string, unknown> {
  const config = readJsonFile(path);
  if (typeof config !== "object" || config === null || Array.isArray(config)) throw new CheckpointError(`${path}: not a JSON object (got ${jsonPreview(config)})`);
  return config as Record<string, unknown>;
}

/** Throws unless `dir` is a directory: checked before anything is created for a run on it. */
export function checkCheckpointDir(dir: string): void {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CheckpointError(`${dir}: not a directory`);
}

export function openCheckpoint(dir: string): Checkpoint {
  checkCheckpointDir(dir);
  const indexPath = join(dir, INDEX_FILE);
  let shardNames: string[];
  let weightMap: Record<string, string> | undefined;
  if (existsSync(indexPath)) {
    const index = readJsonFile(indexPath) as { weight_map?: unknown };
    if (typeof index !== "object" || index === null || typeof index.weight_map !== "object" || index.weight_map === null || Array.isArray(index.weight_map)) {
      throw new CheckpointError(`${indexPath}: no "weight_map" object`);
    }
    if (Object.keys(index.weight_map).length === 0) throw new CheckpointError(`${indexPath}: its "weight_map" lists no tensors`);
    weightMap = index.weight_map as Record<string, string>;
    const shards = new Set<string>();
    for (const [tensor, shard] of Object.entries(weightMap)) {
      if (typeof shard !== "string" || !SHARD_NAME.test(shard)) {
        throw new CheckpointError(`${indexPath}: tensor ${jsonPreview(tensor)} maps to ${jsonPreview(shard)}, not a plain *.safetensors file name`);
      }
      shards.add(shard);
    }
    shardNames = [...shards];
  } else if (existsSync(join(dir, SINGLE_FILE))) {
    shardNames = [SINGLE_FILE];
  } else {
    const pytorch = readdirSync(dir).filter((f) => /^pytorch_model.*\.bin$|\.pt$|\.pth$/.test(f));
    const found = pytorch.length > 0 ? `; it holds PyTorch weights (${pytorch.slice(0, 2).join(", ")}${pytorch.length > 2 ? ", …" : ""}): convert them to safetensors first, e.g. load and save_pretrained(..., safe_serialization=True) in transformers` : "";
    throw new CheckpointError(`${dir}: no ${SINGLE_FILE} or ${INDEX_FILE} (only safetensors checkpoints are supported)${found}`);
  }
  const files = new Map<string, SafetensorsFile>();
  const tensors: CheckpointTensor[] = [];
  const where = new Map<string, string>();
  let config: Record<string, unknown> | undefined;
  try {
    for (const shard of shardNames) {
      const path = join(dir, shard);
      if (!existsSync(path) || !statSync(path).isFile()) throw new CheckpointError(`${dir}: shard ${shard}${weightMap ? ", listed in the index," : ""} is missing or not a file`);
      const file = SafetensorsFile.open(path);
      files.set(shard, file);
      for (const info of file.tensors) {
        if (where.has(info.name)) throw new CheckpointError(`${dir}: tensor ${jsonPreview(info.name)} appears in both ${where.get(info.name)} and ${shard}`);
        if (weightMap && weightMap[info.name] !== shard) {
          const listed = Object.hasOwn(weightMap, info.name) ? `maps it to ${weightMap[info.name]}` : "does not list it";
          throw new CheckpointError(`${indexPath}: tensor ${jsonPreview(info.name)} is in ${shard} but the index ${listed}`);
        }
        where.set(info.name, shard);
        tensors.push({ ...info, shard });
      }
    }
    if (weightMap) {
      for (const name of Object.keys(weightMap)) {
        if (!where.has(name)) throw new CheckpointError(`${indexPath}: tensor ${jsonPreview(name)} is listed but missing from ${weightMap[name]}`);
      }
    }
    const configPath = join(dir, "config.json");
    config = existsSync(configPath) ? readConfig(configPath) : undefined;
  } catch (error) {
    for (const file of files.values()) file.close();
    throw error;
  }
  const fileOf = (name: string) => {
    const shard = where.get(name);
    if (shard === undefined) throw new CheckpointError(`${dir}: no tensor named "${name}"`);
    return files.get(shard)!;
  };
  return {
    dir,
    sharded: weightMap !== undefined,
    shardNames,
    files,
    tensors,
    config,
    metadata: files.get(shardNames[0]!)!.header.metadata,
    readFloat32: (name, out) => fileOf(name).readFloat32(name, out),
    readBytes: (name) => fileOf(name).readBytes(name),
    streamBytes: (name) => fileOf(name).streamBytes(name),
    close: () => {
      for (const file of files.values()) file.close();
    },
  };
}
