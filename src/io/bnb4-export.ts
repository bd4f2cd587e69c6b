import { InvalidArgumentError } from "../errors.js";
import { createQuantizer } from "../quant/quantizer.js";
import { decodeFloatTensor } from "./safetensors.js";
import { transpose } from "../tensor/matrix.js";
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

/** The four tensors replacing `<module>.weight`, from Q as stored (dtype, stored orientation). */
export function bnb4Tensors(module: string, q: Uint8Array, dtype: string, storedShape: readonly number[], transposed: boolean): Bnb4Tensors[] {
  const torchDtype = TORCH_DTYPE[dtype];
  if (!torchDtype) throw new InvalidArgumentError(`${module}: cannot export a ${dtype} weight to bitsandbytes 4-bit`);
  const stored = { rows: storedShape[0]!, cols: storedShape[1]!, data: decodeFloatTensor(dtype, q, module) };
  const weight = transposed ? transpose(stored) : stored;
  const quantized = createQuantizer({ kind: "bnb-nf4", blockSize: BNB_BLOCK_SIZE, zeroBlocks: "cuda" }).quantize(weight);
  // Python's json.dumps defaults: ", " and ": " separators, keys in insertion order.
  const state = `{"quant_type": "nf4", "blocksize": ${BNB_BLOCK_SIZE}, "dtype": "${torchDtype}", "shape": [${weight.rows}, ${weight.cols}]}`;
  const stateBytes = new TextEncoder().encode(state);
  return [
    { name: `${module}.weight`, dtype: "U8", shape: [quantized.packed.length, 1], bytes: quantized.packed },
    { name: `${module}.weight.absmax`, dtype: "F32", shape: [quantized.absmax.length], bytes: float32Bytes(quantized.absmax) },
    { name: `${module}.weight.quant_map`, dtype: "F32", shape: [16], bytes: float32Bytes(quantized.table) },
    { name: `${module}.weight.quant_state.bitsandbytes__nf4`, dtype: "U8", shape: [stateBytes.length], bytes: stateBytes },
  ];
}

/** The `quantization_config` transformers writes for such a checkpoint (keys sorted). */
export function bnb4QuantizationConfig(computeDtype: string): Record<string, unknown> {
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: computeDtype,
    bnb_4bit_quant_storage: "uint8",
    bnb_4bit_quant_type: "nf4",
    bnb_4bit_use_double_quant: false,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: null,
    llm_int8_threshold: 6.0,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: "bitsandbytes",
  };
}

export function torchDtypeName(dtype: string): string {
  return TORCH_DTYPE[dtype] ?? "float32";
}
