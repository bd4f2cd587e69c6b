import { statSync } from "node:fs";
import { openCheckpoint, type Checkpoint, type CheckpointTensor } from "./checkpoint.js";
import { SafetensorsFile } from "./safetensors-file.js";
import { selectTargets, checkBitsOption, noTargetsMessage, type TargetMatrix } from "./targets.js";
import { DEFAULT_BLOCK_SIZE, type QuantizerKind } from "../quant/quantizer.js";
import { packedByteLength } from "../quant/packing.js";
import { PREVIEW_MAX_CHARS, printable } from "./json-preview.js";

/**
 * What `loftq inspect` reports: every tensor (name, dtype, shape, shard), which ones LoftQ would
 * replace and at how many bits, and the sizes of the outputs (backbone unchanged in size; adapter
 * r·(in + out) float32 per target; the packed 4-bit equivalent).
 */
export interface InspectOptions {
  target: string;
  bits: number;
  rank: number;
  mixed?: boolean;
  quantizer?: QuantizerKind;
  /** Values per absmax block (default 64); int8 has one scale per row. */
  blockSize?: number;
}

export function inspectCheckpoint(path: string, options: InspectOptions) {
  checkBitsOption(options.bits, options.quantizer, options.mixed);
  let checkpoint: Pick<Checkpoint, "tensors" | "config" | "close">;
  if (statSync(path).isDirectory()) checkpoint = openCheckpoint(path);
  else {
    const file = SafetensorsFile.open(path);
    checkpoint = { tensors: file.tensors.map((t) => ({ ...t, shard: path })) as CheckpointTensor[], config: undefined, close: () => file.close() };
  }
  try {
    const targets = selectTargets(checkpoint.tensors, checkpoint.config, { target: options.target, bits: options.bits, allowNone: true, ...(options.mixed ? { mixed: true } : {}) });
    const byTensor = new Map(targets.map((t) => [t.tensor, t]));
    const bytes = (t: CheckpointTensor) => t.end - t.begin;
    const backboneBytes = checkpoint.tensors.reduce((sum, t) => sum + bytes(t), 0);
    const adapterBytes = targets.reduce((sum, t) => sum + 4 * options.rank * (t.rows + t.cols), 0);
    const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    const int8 = options.quantizer === "int8";
    // Codes plus float32 scales, as the quantizer packs them (QuantizedMatrix.bytes).
    const packed = (target: TargetMatrix) => {
      const count = target.rows * target.cols;
      return int8 ? count + 4 * target.rows : packedByteLength(count, target.bits) + 4 * Math.ceil(count / blockSize);
    };
    const packedBytes = checkpoint.tensors.reduce((sum, t) => {
      const target = byTensor.get(t.name);
      return sum + (target ? packed(target) : bytes(t));
    }, 0);
    const lines = checkpoint.tensors.map((t) => {
      const target = byTensor.get(t.name);
      return `${target ? `LoftQ ${target.bits}-bit${target.transposed ? " (Conv1D, transposed)" : ""}` : "kept"}`.padEnd(34) + `${t.dtype.padEnd(5)} ${`[${t.shape.join(", ")}]`.padEnd(16)} ${printable(t.name)}`;
    });
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    const text = [
      ...lines,
      "",
      `${checkpoint.tensors.length} tensors, ${targets.length} targeted (${printable(options.target)}); model_type ${typeof checkpoint.config?.model_type === "string" ? printable(checkpoint.config.model_type.slice(0, PREVIEW_MAX_CHARS)) : "unknown"}`,
      `backbone ${mib(backboneBytes)} (same size after LoftQ: Q is stored in the checkpoint dtype)`,
      `adapter ${mib(adapterBytes)} (rank ${options.rank}, float32)`,
      `packed low-bit backbone ${mib(packedBytes)} (codes + float32 ${int8 ? "scale per row" : `absmax per ${blockSize} values`})`,
      ...(targets.length === 0 ? [`warning: ${noTargetsMessage(options.target)}; "loftq quantize" would refuse it`] : []),
    ].join("\n");
    return {
      tensors: checkpoint.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, shard: t.shard, target: byTensor.get(t.name) ?? null })),
      targets: targets.length,
      backboneBytes,
      adapterBytes,
      packedBytes,
      text,
    };
  } finally {
    checkpoint.close();
  }
}
