import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { InvalidArgumentError, LoftqError } from "../errors.js";
import type { KernelBackend } from "../kernels/backend.js";
import { loftq } from "../loftq/loftq.js";
import type { IterationErrors } from "../loftq/loftq.js";
import type { QuantizerKind } from "../quant/quantizer.js";
import { encodeHalf } from "../tensor/dtype.js";
import { transpose, type Matrix } from "../tensor/matrix.js";
import { INDEX_FILE, openCheckpoint } from "./checkpoint.js";
import { adapterConfig, formatAdapterConfig, loraTensorNames, taskTypeOf } from "./peft-adapter.js";
import { tensorByteLength, upstreamOrder, writeSafetensorsFile, type PlannedTensor } from "./safetensors-writer.js";
import { checkBitsOption, selectTargets, type TargetMatrix } from "./targets.js";

/**
 * The model pipeline: a Hugging Face safetensors checkpoint in; out, the layout of the LoftQ hub
 * checkpoints: `<out>/` the backbone (same shards and dtypes, every target weight replaced by its
 * dequantized Q, config/tokenizer files copied) and `<out>/loftq_init/` a PEFT adapter. One matrix
 * at a time; everything goes to `<out>.partial` first and is renamed to `<out>` when complete.
 */
export const ADAPTER_DIR = "loftq_init";
export const REPORT_FILE = "loftq_report.json";
export const MANIFEST_FILE = "loftq_manifest.json";
const COPIED_FILE = /^(?:config|generation_config|tokenizer(?:_config)?|special_tokens_map|added_tokens|vocab|merges|preprocessor_config|chat_template)\.(?:json|txt|jinja)$|^tokenizer\.model$|^spiece\.model$/;

export type OutputDtype = "F32" | "F16" | "BF16";

export interface QuantizeCheckpointOptions {
  input: string;
  output: string;
  bits?: number;
  /** Treat `bits` as LoftQ's mixed 2/4-bit spec. */
  mixed?: boolean;
  bitsMap?: string;
  rank?: number;
  iterations?: number;
  quantizer?: QuantizerKind;
  blockSize?: number;
  target?: string;
  loraAlpha?: number;
  upstreamScaling?: boolean;
  /** Backbone dtype of the replaced weights (default: each weight's own). */
  dtype?: OutputDtype;
  seed?: number;
  /** Replace a non-empty output directory. */
  force?: boolean;
  backend?: KernelBackend | string;
  onEvent?: (event: PipelineEvent) => void;
}

export interface MatrixReport {
  tensor: string;
  module: string;
  shape: [number, number];
  transposed: boolean;
  bits: number;
  rank: number;
  /** ‖W − Q‖/‖W‖ of the plain quantization (the QLoRA start). */
  qOnlyError: number;
  history: IterationErrors[];
  selectedIteration: number;
  seconds: number;
}

export type PipelineEvent =
  | { type: "plan"; matrices: number; shards: number; tensors: number }
  | { type: "matrix-start"; index: number; total: number; module: string; rows: number; cols: number; bits: number }
  | { type: "iteration"; index: number; total: number; module: string; iteration: number; iterations: number; quantError: number; error: number }
  | { type: "matrix-done"; index: number; total: number; report: MatrixReport }
  | { type: "done"; output: string; seconds: number; matrices: number };

export class OutputExistsError extends LoftqError {
  constructor(path: string) {
    super("INVALID_ARGUMENT", `${path} exists and is not empty; pass --force to replace it`);
    this.name = "OutputExistsError";
  }
}

export interface QuantizeCheckpointResult {
  output: string;
  reports: MatrixReport[];
}

export function quantizeCheckpoint(options: QuantizeCheckpointOptions): QuantizeCheckpointResult {
  const started = Date.now();
  const bits = options.bits ?? 4;
  checkBitsOption(bits);
  const rank = options.rank ?? 16;
  const iterations = options.iterations ?? 1;
  const quantizer = options.quantizer ?? "nf";
  const output = resolve(options.output);
  const input = resolve(options.input);
  if (output === input) throw new InvalidArgumentError("--out must differ from the input directory (inputs are never modified)");
  if (existsSync(output) && (!statSync(output).isDirectory() || readdirSync(output).length > 0) && !options.force) throw new OutputExistsError(output);

  const checkpoint = openCheckpoint(input);
  const partial = `${output}.partial`;
  try {
    const targets = selectTargets(checkpoint.tensors, checkpoint.config, {
      target: options.target ?? "all-linear",
      bits,
      ...(options.bitsMap ? { bitsMap: options.bitsMap } : {}),
      ...(options.mixed ? { mixed: true } : {}),
    });
    for (const t of targets) {
      if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(t.rows, t.cols)) {
        throw new InvalidArgumentError(`--rank ${rank} does not fit ${t.module} (${t.rows}×${t.cols})`);
      }
    }
    const byTensor = new Map(targets.map((t) => [t.tensor, t]));
    options.onEvent?.({ type: "plan", matrices: targets.length, shards: checkpoint.shardNames.length, tensors: checkpoint.tensors.length });
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(join(partial, ADAPTER_DIR), { recursive: true });

    const reports: MatrixReport[] = [];
    const adapters = new Map<string, { a: Matrix; b: Matrix }>();
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    let index = 0;
    const processTarget = (target: TargetMatrix, outDtype: string): Uint8Array => {
      const position = index++;
      const stored = checkpoint.readFloat32(target.tensor);
      const asStored: Matrix = target.transposed ? { rows: target.cols, cols: target.rows, data: stored } : { rows: target.rows, cols: target.cols, data: stored };
      const weight = target.transposed ? transpose(asStored) : asStored;
      options.onEvent?.({ type: "matrix-start", index: position, total: targets.length, module: target.module, rows: target.rows, cols: target.cols, bits: target.bits });
      const matrixStarted = Date.now();
      const result = loftq(weight, {
        bits: target.bits,
        rank,
        iterations,
        quantizer,
        seed: options.seed ?? 0,
        name: target.tensor,
        ...(options.blockSize !== undefined ? { blockSize: options.blockSize } : {}),
        ...(options.loraAlpha !== undefined ? { loraAlpha: options.loraAlpha } : {}),
        ...(options.upstreamScaling ? { upstreamScaling: true } : {}),
        ...(options.backend !== undefined ? { backend: options.backend } : {}),
        onIteration: (r) =>
          options.onEvent?.({ type: "iteration", index: position, total: targets.length, module: target.module, iteration: r.iteration, iterations: r.iterations, quantError: r.quantError, error: r.error }),
      });
      adapters.set(target.module, { a: result.loraA, b: result.loraB });
      const report: MatrixReport = {
        tensor: target.tensor,
        module: target.module,
        shape: [target.rows, target.cols],
        transposed: target.transposed,
        bits: target.bits,
        rank,
        qOnlyError: result.history[0]!.quantError,
        history: result.history,
        selectedIteration: result.selectedIteration,
        seconds: (Date.now() - matrixStarted) / 1000,
      };
      reports.push(report);
      options.onEvent?.({ type: "matrix-done", index: position, total: targets.length, report });
      const q = target.transposed ? transpose(result.dequantized).data : result.dequantized.data;
      return encodeFloats(q, outDtype);
    };

    for (const shard of checkpoint.shardNames) {
      const planned: PlannedTensor[] = upstreamOrder(
        checkpoint.files.get(shard)!.tensors.map((t) => ({
          name: t.name,
          shape: t.shape,
          dtype: byTensor.has(t.name) && options.dtype ? options.dtype : t.dtype,
        })),
      );
      for (const t of planned) {
        weightMap[t.name] = shard;
        totalSize += tensorByteLength(t);
      }
      writeSafetensorsFile(join(partial, shard), planned, { ...checkpoint.metadata, format: "pt" }, (tensor) => {
        const target = byTensor.get(tensor.name);
        return target ? processTarget(target, tensor.dtype) : checkpoint.readBytes(tensor.name);
      });
    }
    if (checkpoint.sharded) {
      const index = { metadata: { total_size: totalSize }, weight_map: Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1))) };
      writeFileSync(join(partial, INDEX_FILE), JSON.stringify(index, null, 2) + "\n");
    }
    for (const file of readdirSync(input)) {
      if (COPIED_FILE.test(file) && statSync(join(input, file)).isFile()) copyFileSync(join(input, file), join(partial, file));
    }
    writeAdapter(partial, output, targets, adapters, rank, options, checkpoint.config);
    writeFileSync(join(partial, REPORT_FILE), JSON.stringify({ matrices: reports }, null, 2) + "\n");
    writeFileSync(join(partial, MANIFEST_FILE), JSON.stringify(manifest(options, input, output, targets, rank, iterations, quantizer, bits), null, 2) + "\n");
    rmSync(output, { recursive: true, force: true });
    renameSync(partial, output);
    options.onEvent?.({ type: "done", output, seconds: (Date.now() - started) / 1000, matrices: reports.length });
    return { output, reports };
  } catch (error) {
    rmSync(partial, { recursive: true, force: true });
    throw error;
  } finally {
    checkpoint.close();
  }
}

function encodeFloats(values: Float32Array, dtype: string): Uint8Array {
  if (dtype === "F32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (dtype === "F16") return encodeHalf(values, "f16");
  if (dtype === "BF16") return encodeHalf(values, "bf16");
  throw new InvalidArgumentError(`cannot write a quantized weight as ${dtype}`);
}

function writeAdapter(
  dir: string, output: string, targets: readonly TargetMatrix[], adapters: Map<string, { a: Matrix; b: Matrix }>,
  rank: number, options: QuantizeCheckpointOptions, config: Record<string, unknown> | undefined,
): void {
  const tensors: Array<PlannedTensor & { data: Float32Array }> = [];
  for (const target of targets) {
    const { a, b } = adapters.get(target.module)!;
    const names = loraTensorNames(target.module);
    tensors.push({ name: names.a, dtype: "F32", shape: [a.rows, a.cols], data: a.data });
    tensors.push({ name: names.b, dtype: "F32", shape: [b.rows, b.cols], data: b.data });
  }
  const ordered = upstreamOrder(tensors);
  writeSafetensorsFile(join(dir, ADAPTER_DIR, "adapter_model.safetensors"), ordered, { format: "pt" }, (_, i) => {
    const data = ordered[i]!.data;
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  });
  const adapter = adapterConfig({
    baseModel: output,
    rank,
    loraAlpha: options.loraAlpha ?? rank,
    targetModules: targets.map((t) => t.module),
    taskType: taskTypeOf(config),
    fanInFanOut: targets.some((t) => t.transposed),
    useRslora: false,
  });
  writeFileSync(join(dir, ADAPTER_DIR, "adapter_config.json"), formatAdapterConfig(adapter));
}

function manifest(
  options: QuantizeCheckpointOptions, input: string, output: string, targets: readonly TargetMatrix[],
  rank: number, iterations: number, quantizer: QuantizerKind, bits: number,
) {
  const loraAlpha = options.loraAlpha ?? rank;
  return {
    tool: "loftq (TypeScript)",
    created: new Date().toISOString(),
    input,
    settings: {
      bits, mixed: options.mixed ?? false, bitsMap: options.bitsMap ?? null, rank, iterations, quantizer,
      blockSize: options.blockSize ?? 64, target: options.target ?? "all-linear", loraAlpha,
      scaling: options.upstreamScaling ? "upstream (not compensated)" : "compensated: (lora_alpha / r) · B · A = W − Q",
      dtype: options.dtype ?? "as input", seed: options.seed ?? 0,
    },
    bitsHistogram: targets.reduce<Record<string, number>>((h, t) => ((h[t.bits] = (h[t.bits] ?? 0) + 1), h), {}),
    load: {
      python: [
        "from transformers import AutoModelForCausalLM, BitsAndBytesConfig",
        "from peft import PeftModel",
        `base = AutoModelForCausalLM.from_pretrained(${JSON.stringify(output)}, torch_dtype="auto"` +
          (bits === 4 && quantizer !== "int8" ? ', quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=False)' : "") + ")",
        `model = PeftModel.from_pretrained(base, ${JSON.stringify(output)}, subfolder="${ADAPTER_DIR}", is_trainable=True)`,
      ],
      javascript: [`import { openCheckpoint } from "loftq/node";`, `const backbone = openCheckpoint(${JSON.stringify(output)});`],
      note: "2- and 3-bit backbones are fake-quantized (dequantized Q stored in the model dtype): bitsandbytes has no kernel for them.",
    },
    directory: basename(output),
  };
}
