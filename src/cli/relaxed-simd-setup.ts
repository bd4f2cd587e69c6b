/**
 * Imported first by the CLI (and the benches): relaxed SIMD on before `loftq/node` creates its
 * backends at import time, so they get the fused multiply-add kernels on Node 20 too.
 */
import { enableRelaxedSimd } from "../node/relaxed-simd.js";

enableRelaxedSimd();
