import { writeFileDurably } from "./durable-file.js";
import { asciiJson } from "./python-json.js";
import { join } from "node:path";
import { INDEX_FILE, SINGLE_FILE } from "./checkpoint.js";
import { tensorByteLength, upstreamOrder, writeSafetensorsFile, type PlannedTensor, type TensorBytes } from "./safetensors-writer.js";

/**
 * Writing checkpoints the way the hub lays them out: shards `model-0000i-of-0000n.safetensors`
 * (one shard: `model.safetensors` and no index), tensors in upstream order within each, and
 * `model.safetensors.index.json` with `total_size` and the sorted `weight_map`.
 */
export interface ShardPlan {
  readonly file: string;
  readonly tensors: readonly PlannedTensor[];
  /** This shard's tensor bytes, when they are not the ones `writeShards` is given. */
  readonly produce?: (tensor: PlannedTensor) => TensorBytes;
  /** This shard's `__metadata__`, when it is not the one `writeShards` is given (each input shard's own). */
  readonly metadata?: Record<string, string>;
}

export function shardFileName(index: number, count: number): string {
  return `model-${String(index + 1).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.safetensors`;
}

/** The hub's split: tensors in name order, a new shard when the next one would pass `maxShardBytes`. */
export function splitIntoShards(tensors: readonly PlannedTensor[], maxShardBytes: number): ShardPlan[] {
  const groups: PlannedTensor[][] = [[]];
  let size = 0;
  for (const tensor of [...tensors].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const bytes = tensorByteLength(tensor);
    if (size + bytes > maxShardBytes && groups.at(-1)!.length > 0) {
      groups.push([]);
      size = 0;
    }
    groups.at(-1)!.push(tensor);
    size += bytes;
  }
  if (groups.length === 1) return [{ file: SINGLE_FILE, tensors: groups[0]! }];
  return groups.map((group, i) => ({ file: shardFileName(i, groups.length), tensors: group }));
}

/**
 * Writes every shard (and the index when `withIndex`); `produce` gives each tensor's bytes. The
 * shards may come from a generator, so a caller can prepare one shard's data at a time.
 * `options.keep(file)`: the shard is already in `dir` (from an interrupted run of the same job) and is
 * kept as it is; `options.done(file, kept)` follows each shard written or kept.
 */
export function writeShards(
  dir: string,
  shards: Iterable<ShardPlan>,
  metadata: Record<string, string>,
  produce: (tensor: PlannedTensor) => TensorBytes,
  withIndex: boolean,
  options: { keep?: (file: string) => boolean; done?: (file: string, kept: boolean) => void } = {},
): void {
  const weightMap: Record<string, string> = Object.create(null) as Record<string, string>; // "__proto__" is a tensor name too
  let totalSize = 0;
  for (const shard of shards) {
    const ordered = upstreamOrder(shard.tensors);
    for (const t of ordered) {
      weightMap[t.name] = shard.file;
      totalSize += tensorByteLength(t);
    }
    const kept = options.keep?.(shard.file) ?? false;
    if (!kept) writeSafetensorsFile(join(dir, shard.file), ordered, shard.metadata ?? metadata, shard.produce ?? produce);
    options.done?.(shard.file, kept);
  }
  if (withIndex) {
    // As transformers writes it: json.dumps(indent=2, sort_keys=True) + "\n".
    const index = { metadata: { total_size: totalSize }, weight_map: Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1))) };
    writeFileDurably(join(dir, INDEX_FILE), asciiJson(JSON.stringify(index, null, 2)) + "\n");
  }
}

/** A whole checkpoint from a flat tensor list, split like the hub's. */
export function writeShardedCheckpoint(dir: string, tensors: readonly PlannedTensor[], maxShardBytes: number, produce: (tensor: PlannedTensor) => TensorBytes): void {
  const shards = splitIntoShards(tensors, maxShardBytes);
  writeShards(dir, shards, { format: "pt" }, produce, shards.length > 1);
}
