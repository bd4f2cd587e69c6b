/**
 * Imported first by the CLI (and the benches): relaxed SIMD on before any kernel module is compiled,
 * so the backends get the fused multiply-add kernels on Node 20 too.
 */
import { enableRelaxedSimd } from "../node/relaxed-simd.js";

enableRelaxedSimd();
