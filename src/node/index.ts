/**
 * Node entry point (`loftq/node`): everything in `loftq`, with the fastest kernel backend this
 * runtime offers registered as the default: onnxruntime-node's MatMul for the large products when
 * that optional dependency is installed ("ort"), WebAssembly SIMD on every core for the rest
 * ("wasm-threads").
 */
import { availableParallelism } from "node:os";
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

/**
 * Registers the Node backends: "wasm-threads" (the WebAssembly SIMD kernels on `threads` threads) and,
 * where onnxruntime-node is installed, "ort" (its MatMul for the large products) on top of it, replacing
 * any registered under those names. Both are made on first use: importing starts no threads, and
 * onnxruntime's library loads when "ort" is made (the first default computation); where it cannot
 * load, the default falls back to wasm-threads instead of failing the first large product.
 */
export function registerNodeBackends(threads = availableParallelism()): void {
  if (!wasmSimdSupported()) return;
  registerBackendFactory("wasm-threads", 20, () => createThreadedBackend(threads));
  if (ortInstalled()) registerBackendFactory("ort", 30, () => (ensureOrtLoaded(), createOrtBackend(getBackend("wasm-threads"), threads)));
}

registerNodeBackends();

/** The backend `loftq()` uses when none is named (made on this call: a native library that cannot load is skipped). */
export function activeBackendName(): string {
  return getBackend().name;
}
