import { readFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseSafetensors } from "../../src/io/safetensors.js";

/** ../shared/ref-vectors beside the repository (the compiled file sits in dist/test/helpers). */
export const REF_VECTORS_DIR = fileURLToPath(new URL("../../../../shared/ref-vectors/", import.meta.url));
export const haveRefVectors = existsSync(REF_VECTORS_DIR);

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
