import { InvalidArgumentError } from "../errors.js";

/**
 * Bit packing of b-bit codes into bytes.
 * - "lsb-first": PEFT NFQuantizer / LoftQ order: code i of a byte sits at bit i·b (first code in the
 *   low bits). Generalised to a little-endian bit stream so 3-bit codes pack too.
 * - "msb-first": bitsandbytes order: the first code of a byte sits in the high bits (4-bit: high nibble).
 *   A trailing partial byte is padded with `padCode` (bnb pads with the code of 0.0).
 */
export type BitOrder = "lsb-first" | "msb-first";

export function packedByteLength(count: number, bits: number): number {
  return Math.ceil((count * bits) / 8);
}

export function packCodes(codes: Uint8Array, bits: number, order: BitOrder, padCode = 0): Uint8Array {
  checkBits(bits);
  const out = new Uint8Array(packedByteLength(codes.length, bits));
  if (bits === 8) {
    out.set(codes);
    return out;
  }
  if (order === "msb-first") {
    if (8 % bits !== 0) throw new InvalidArgumentError(`msb-first packing needs bits dividing 8, got ${bits}`);
    const perByte = 8 / bits;
    for (let byte = 0; byte < out.length; byte++) {
      let value = 0;
      for (let slot = 0; slot < perByte; slot++) {
        const index = byte * perByte + slot;
        const code = index < codes.length ? codes[index]! : padCode;
        value |= code << (8 - bits * (slot + 1));
      }
      out[byte] = value;
    }
    return out;
  }
  if (bits === 4 || bits === 2) {
    // Whole codes per byte (the common widths): no carries between bytes.
    const perByte = 8 / bits;
    for (let i = 0; i < codes.length; i++) out[(i / perByte) | 0]! |= codes[i]! << ((i % perByte) * bits);
    return out;
  }
  let bitPosition = 0;
  for (let i = 0; i < codes.length; i++, bitPosition += bits) {
    const byte = bitPosition >>> 3;
    const shift = bitPosition & 7;
    const shifted = codes[i]! << shift;
    out[byte]! |= shifted & 0xff;
    if (shift + bits > 8) out[byte + 1]! |= shifted >>> 8;
  }
  return out;
}

export function unpackCodes(packed: Uint8Array, bits: number, count: number, order: BitOrder, out: Uint8Array = new Uint8Array(count)): Uint8Array {
  checkBits(bits);
  if (packed.length < packedByteLength(count, bits)) {
    throw new InvalidArgumentError(`${count} codes of ${bits} bits need ${packedByteLength(count, bits)} bytes, got ${packed.length}`);
  }
  const mask = (1 << bits) - 1;
  if (bits === 8) {
    out.set(packed.subarray(0, count));
    return out;
  }
  if (order === "msb-first") {
    const perByte = 8 / bits;
    for (let i = 0; i < count; i++) {
      const slot = i % perByte;
      out[i] = (packed[(i / perByte) | 0]! >>> (8 - bits * (slot + 1))) & mask;
    }
    return out;
  }
  let bitPosition = 0;
  for (let i = 0; i < count; i++, bitPosition += bits) {
    const byte = bitPosition >>> 3;
    const shift = bitPosition & 7;
    const word = packed[byte]! | (shift + bits > 8 ? packed[byte + 1]! << 8 : 0);
    out[i] = (word >>> shift) & mask;
  }
  return out;
}

function checkBits(bits: number): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) throw new InvalidArgumentError(`code width must be 1..8 bits, got ${bits}`);
}
