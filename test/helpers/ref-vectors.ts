import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseSafetensors } from "../../src/io/safetensors.js";

/**
 * The golden vectors, bundled in test/ref-vectors so every clone runs the bit-exactness tests (the
 * compiled file sits in dist/test/helpers). Copied from the team's ../shared/ref-vectors, which
 * ref-vectors.test.ts compares them with where it exists.
 */
export const REF_VECTORS_DIR = fileURLToPath(new URL("../../../test/ref-vectors/", import.meta.url));
/** The team's shared copy beside the repository, when there is one. */
export const SHARED_REF_VECTORS_DIR = fileURLToPath(new URL("../../../../shared/ref-vectors/", import.meta.url));

export function readJson<T = any>(relative: string): T {
  return JSON.parse(readFileSync(REF_VECTORS_DIR + relative, "utf8")) as T;
}

export function hexToFloat32(hex: readonly string[]): Float32Array {
  return new Float32Array(Uint32Array.from(hex, (h) => parseInt(h, 16)).buffer);
}

export function hexToBytes(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

export function loadRefTensors(relative: string) {
  return parseSafetensors(new Uint8Array(readFileSync(REF_VECTORS_DIR + relative)));
}

/** Largest |a − b| over two arrays of equal length. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}
