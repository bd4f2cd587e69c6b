/**
 * loftq: LoRA-Fine-Tuning-aware Quantization in TypeScript. Runs anywhere JavaScript runs; the
 * Node entry point `loftq/node` adds the multi-threaded backend and file formats.
 */
export { loftq, type LoftqResult, type IterationErrors } from "./loftq/loftq.js";
export { qloraInit } from "./loftq/qlora-init.js";
export type { LoftqOptions, IterationReport } from "./loftq/options.js";
export { createQuantizer, QUANTIZER_KINDS, DEFAULT_BLOCK_SIZE } from "./quant/quantizer.js";
export type { Quantizer, QuantizerKind, QuantizerOptions, QuantizedMatrix, Encoded } from "./quant/quantizer.js";
export { normalFloatTable, symmetricNormalFloatTable, uniformTable, dynamicMap8Bit, FP4_TABLE_CODE_ORDER, NORMAL_FLOAT_OFFSET } from "./quant/tables.js";
export { packCodes, unpackCodes, type BitOrder } from "./quant/packing.js";
export { truncatedSvd, type TruncatedSvd, type TruncatedSvdOptions } from "./linalg/truncated-svd.js";
export { jacobiSvd, type DenseSvd } from "./linalg/jacobi-svd.js";
export { householderQr } from "./linalg/householder-qr.js";
export { singularValues, optimalLowRankError } from "./linalg/symmetric-eigenvalues.js";
export { matrix, transpose, frobeniusNorm, frobeniusDistance, assertFinite, type Matrix } from "./tensor/matrix.js";
export { bf16ToFloat32, float32ToBf16, f16ToFloat32, float32ToF16, decodeHalf, encodeHalf } from "./tensor/dtype.js";
export { getBackend, listBackends, registerBackend, registerBackendFactory } from "./kernels/registry.js";
export type { KernelBackend, GemmCall } from "./kernels/backend.js";
export { tsBackend } from "./kernels/ts-backend.js";
export { createWasmBackend, wasmSimdSupported } from "./kernels/wasm-backend.js";

export { LoftqError, InvalidArgumentError, ShapeError, NonFiniteError, OutOfRangeError, BackendUnavailableError } from "./errors.js";
export { Linear } from "./nn/linear.js";
export { QuantLinear } from "./nn/quant-linear.js";
export { LoraLinear, layerSeed, requantizeMerged, type LoraOptions } from "./nn/lora-linear.js";
export { LoftQLinear } from "./nn/loftq-linear.js";
export { AdamW, cosineSchedule, clipGradNorm, type AdamWOptions } from "./nn/optim.js";
export { parameter, zeroGrad, type Parameter } from "./nn/parameter.js";
export type { Layer, BaseLayer } from "./nn/layer.js";
export { RmsNorm } from "./nn/rms-norm.js";
export { Embedding } from "./nn/embedding.js";
export { CausalSelfAttention } from "./nn/causal-attention.js";
export { crossEntropy } from "./nn/cross-entropy.js";
export { encodeBytes, decodeBytes, BYTE_VOCAB_SIZE, BOS, EOS } from "./nn/byte-tokenizer.js";
export { TinyLlama, LINEAR_ROLES, type TinyLlamaConfig, type LinearRole } from "./nn/tiny-llama.js";
export { applyRope } from "./nn/rope.js";
