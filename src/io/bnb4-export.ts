import { InvalidArgumentError } from "../errors.js";
import { createQuantizer } from "../quant/quantizer.js";
import type { KernelBackend } from "../kernels/backend.js";
import { getBackend } from "../kernels/registry.js";
import { assertFinite, checkMatrix, type Matrix } from "../tensor/matrix.js";
import { float32Bytes } from "../tensor/dtype.js";

/**
 * A pre-quantized bitsandbytes 4-bit checkpoint (what `from_pretrained(..., load_in_4bit=True)`
 * builds and `save_pretrained` writes), so users skip the 16-bit round trip. Each target weight P
 * becomes `P.weight` (U8 [(n+1)/2, 1], first code in the high nibble), `P.weight.absmax` (F32, one
 * per 64 values), `P.weight.quant_map` (the NF4 table) and `P.weight.quant_state.bitsandbytes__nf4`
 * (the UTF-8 JSON of the quant state), from re-quantizing the stored Q exactly as bitsandbytes'
 * CUDA kernels would; LoftQ's codes survive (spec §3.8).
 */
export const BNB4_DIR = "bnb-4bit";
export const BNB_BLOCK_SIZE = 64;

const TORCH_DTYPE: Record<string, string> = { BF16: "bfloat16", F16: "float16", F32: "float32" };

export interface Bnb4Tensors {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/**
 * The four tensors replacing `<module>.weight`, from Q as LoftQ sees it (out×in float32, as read back
 * from the stored `dtype`). `codes` (rows·cols bytes, reused across targets) and `backend` spare a
 * fresh code array per target; the packed codes and absmax are new arrays (the writer holds a shard's).
 */
export function bnb4Tensors(module: string, q: Matrix, dtype: string, backend?: KernelBackend, codes?: Uint8Array): Bnb4Tensors[] {
  const torchDtype = TORCH_DTYPE[dtype];
  if (!torchDtype) throw new InvalidArgumentError(`${module}: cannot export a ${dtype} weight to bitsandbytes 4-bit`);
  checkMatrix(q, `${module}: Q`);
  // Q comes from the store, written by LoftQ: finite unless the entry was damaged since.
  if (!Number.isFinite((backend ?? getBackend()).sumOfSquares(q.data))) assertFinite(q, `${module}'s stored Q`);
  const quantizer = createQuantizer({ kind: "bnb-nf4", blockSize: BNB_BLOCK_SIZE, zeroBlocks: "cuda" });
  const quantized = quantizer.pack(quantizer.encode(q.data, q.rows, q.cols, undefined, backend, codes), q.rows, q.cols);
  // Python's json.dumps defaults: ", " and ": " separators, keys in insertion order.
  const state = `{"quant_type": "nf4", "blocksize": ${BNB_BLOCK_SIZE}, "dtype": "${torchDtype}", "shape": [${q.rows}, ${q.cols}]}`;
  const stateBytes = new TextEncoder().encode(state);
  return [
    { name: `${module}.weight`, dtype: "U8", shape: [quantized.packed.length, 1], bytes: quantized.packed },
    { name: `${module}.weight.absmax`, dtype: "F32", shape: [quantized.absmax.length], bytes: float32Bytes(quantized.absmax) },
    { name: `${module}.weight.quant_map`, dtype: "F32", shape: [16], bytes: float32Bytes(quantized.table) },
    { name: `${module}.weight.quant_state.bitsandbytes__nf4`, dtype: "U8", shape: [stateBytes.length], bytes: stateBytes },
  ];
}

/**
 * The modules transformers must leave unconverted: every 2-D float weight not exported in 4 bits
 * (Linear layers outside --target, MoE routers, the output head, embeddings). With
 * `llm_int8_skip_modules` null it would turn every nn.Linear but the head into Linear4bit and then
 * find 16-bit weights without a quant state. A list given replaces transformers' default skips (the
 * head, tied weights), so `lm_head` is always in it, tied (absent from the file) or not. transformers matches entries as
 * prefixes (5.x, `re.match`) or substrings (4.x) of module paths, so an entry that is part of an
 * exported module's path would leave that one unconverted too: refused.
 */
export function bnb4SkipModules(tensors: ReadonlyArray<{ name: string; dtype: string; shape: readonly number[] }>, exported: ReadonlyMap<string, { module: string }>): string[] {
  const kept = tensors
    .filter((t) => t.shape.length === 2 && FLOAT_DTYPES.has(t.dtype) && t.name.endsWith(".weight") && !exported.has(t.name))
    .map((t) => t.name.slice(0, -".weight".length));
  // A head tied to the embeddings has no tensor of its own in the file, but is a Linear all the same.
  const skipped = [...new Set([...kept, OUTPUT_HEAD])].sort();
  for (const skip of skipped) {
    const clash = [...exported.values()].find((t) => t.module.includes(skip));
    if (clash) throw new InvalidArgumentError(`--format bnb4: "${skip}" stays 16-bit, but transformers would then also leave "${clash.module}" (whose path contains it) unconverted; target ${skip} too, or drop --format bnb4`);
  }
  return skipped;
}

/** The tensors the 4-bit export writes beside each target's `weight`. */
const BNB4_STATE_SUFFIXES = [".weight.absmax", ".weight.quant_map", ".weight.quant_state.bitsandbytes__nf4"];

/**
 * Refuses a checkpoint that already has a tensor of a name the 4-bit export would write for a target
 * (`P.weight.absmax`, …): the shard would hold the name twice. Checked before any work.
 */
export function checkBnb4Names(tensors: ReadonlyArray<{ name: string }>, exported: ReadonlyMap<string, { module: string }>): void {
  const names = new Set(tensors.map((t) => t.name));
  for (const { module } of exported.values()) {
    const clash = BNB4_STATE_SUFFIXES.map((suffix) => module + suffix).find((name) => names.has(name));
    if (clash) throw new InvalidArgumentError(`--format bnb4: the checkpoint already has a tensor ${JSON.stringify(clash)}, a name the 4-bit export of ${module} writes`);
  }
}

const FLOAT_DTYPES = new Set(["F32", "F16", "BF16", "F64"]);
/** transformers' name for the output head of nearly every causal LM (never exported: refused as a bnb4 target). */
const OUTPUT_HEAD = "lm_head";

/**
 * The model's config.json text with `quantization_config` added before its closing brace: the rest
 * stays byte for byte as written (a parse and JSON.stringify would turn 1.0 into 1, which Python then
 * reads as an int, and some config classes check types). The added object prints its one float as 6.0
 * for the same reason: BitsAndBytesConfig raises "llm_int8_threshold must be a float" on 6.
 */
export function withQuantizationConfig(configText: string, quantizationConfig: Record<string, unknown>): string {
  const parsed = JSON.parse(configText) as Record<string, unknown>;
  if ("quantization_config" in parsed) throw new InvalidArgumentError("config.json already has a quantization_config: the input is a quantized model");
  const body = JSON.stringify(quantizationConfig, null, 2)
    .replace(/"llm_int8_threshold": (\d+)(?=[,\n])/, '"llm_int8_threshold": $1.0')
    .replace(/\n/g, "\n  ");
  const close = configText.lastIndexOf("}");
  const before = configText.slice(0, close).trimEnd();
  const separator = before.endsWith("{") ? "" : ",";
  return `${before}${separator}\n  "quantization_config": ${body}\n}\n`;
}

/** The `quantization_config` transformers writes for such a checkpoint (keys sorted). */
export function bnb4QuantizationConfig(computeDtype: string, skipModules: readonly string[]): Record<string, unknown> {
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: computeDtype,
    bnb_4bit_quant_storage: "uint8",
    bnb_4bit_quant_type: "nf4",
    bnb_4bit_use_double_quant: false,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: [...skipModules],
    llm_int8_threshold: 6.0,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: "bitsandbytes",
  };
}

export function torchDtypeName(dtype: string): string {
  return TORCH_DTYPE[dtype] ?? "float32";
}
