/**
 * Node entry point (`loftq/node`): everything in `loftq`, plus the fastest kernel backends this
 * runtime offers registered as the default.
 */
import { getBackend } from "../kernels/registry.js";
export * from "../index.js";
export { readTfjsWeights, tfjsLinearWeights } from "../io/tfjs-weights.js";

/** The backend `loftq()` uses when none is named. */
export function activeBackendName(): string {
  return getBackend().name;
}
