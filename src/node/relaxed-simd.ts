import { setFlagsFromString } from "node:v8";
import { relaxedSimdSupported } from "../kernels/wasm-backend.js";

/** The V8 flag under which Node 20 validates WebAssembly relaxed SIMD (on by default from Node 22). */
export const RELAXED_SIMD_FLAG = "--experimental-wasm-relaxed-simd";

/**
 * Lets this process compile the relaxed-SIMD kernels (the gemm's fused multiply-add): where the runtime
 * refuses them (Node 20), turns V8's flag on. V8 reads it when a module is compiled, so setting it at
 * run time takes effect for later compilations; it only widens what validates. Node documents run-time
 * flags as use-with-care, so the library never does this by itself: the CLI and the benches call it
 * before creating backends. Returns whether relaxed SIMD is available now.
 */
export function enableRelaxedSimd(): boolean {
  if (relaxedSimdSupported()) return true;
  setFlagsFromString(RELAXED_SIMD_FLAG);
  return relaxedSimdSupported();
}
