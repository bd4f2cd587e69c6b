/**
 * Node entry point (`loftq/node`): everything in `loftq`, with the fastest kernel backend this
 * runtime offers registered as the default: onnxruntime-node's MatMul for the large products when
 * that optional dependency is installed ("ort"), WebAssembly SIMD on every core for the rest
 * ("wasm-threads").
 */
import { getBackend, registerBackendFactory } from "../kernels/registry.js";
import { wasmSimdSupported } from "../kernels/wasm-backend.js";
import { createThreadedBackend } from "./thread-pool-backend.js";
import { createOrtBackend, ensureOrtLoaded, ortInstalled } from "./ort-backend.js";
export * from "../index.js";
export { readTfjsWeights, tfjsLinearWeights } from "../io/tfjs-weights.js";
export { openCheckpoint, type Checkpoint } from "../io/checkpoint.js";
export { SafetensorsFile } from "../io/safetensors-file.js";
export { writeSafetensorsFile, upstreamOrder } from "../io/safetensors-writer.js";
export { quantizeCheckpoint, mergeFragments, type QuantizeCheckpointOptions, type MergeFragmentsOptions, type PipelineEvent, type MatrixReport } from "../io/quantize-checkpoint.js";
export { inspectCheckpoint } from "../io/inspect-checkpoint.js";
export { saveTinyLlama, loadTinyLlama, loadLoftqForFineTuning } from "../io/tiny-llama-checkpoint.js";
export { createThreadedBackend, type ThreadedBackend } from "./thread-pool-backend.js";
export { createOrtBackend, ortInstalled, type OrtBackend } from "./ort-backend.js";
export { enableRelaxedSimd, RELAXED_SIMD_FLAG } from "./relaxed-simd.js";

// Made on first use: importing starts no threads. onnxruntime itself loads on the first large product.
if (wasmSimdSupported()) {
  registerBackendFactory("wasm-threads", 20, () => createThreadedBackend());
  // The library is loaded when the backend is made: where it cannot load, the default falls back to
  // wasm-threads instead of failing the first large product.
  if (ortInstalled()) registerBackendFactory("ort", 30, () => (ensureOrtLoaded(), createOrtBackend(getBackend("wasm-threads"))));
}

/** The backend `loftq()` uses when none is named (made on this call: a native library that cannot load is skipped). */
export function activeBackendName(): string {
  return getBackend().name;
}
