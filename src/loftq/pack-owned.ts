import type { Encoded, QuantizedMatrix, Quantizer } from "../quant/quantizer.js";
import { viewsOverlap } from "../tensor/matrix.js";

/**
 * The packed form of an encoding, never sharing bytes with the caller's `codesOutput`: int8's packed
 * bytes are its codes themselves, and a `quantized` read before the buffer is reused must keep its
 * values afterwards.
 */
export function packOwned(quantizer: Quantizer, encoded: Encoded, rows: number, cols: number, codesOutput: Uint8Array | undefined): QuantizedMatrix {
  const packed = quantizer.pack(encoded, rows, cols);
  return codesOutput && viewsOverlap(packed.packed, codesOutput) ? { ...packed, packed: packed.packed.slice() } : packed;
}
