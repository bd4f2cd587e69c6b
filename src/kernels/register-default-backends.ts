import { registerBackend } from "./registry.js";
import { createWasmBackend, wasmSimdSupported } from "./wasm-backend.js";

/** Registers the WebAssembly SIMD backend above the TS reference when the runtime supports it. */
export function registerWasmBackend(): boolean {
  if (!wasmSimdSupported()) return false;
  registerBackend(createWasmBackend(), 10);
  return true;
}
