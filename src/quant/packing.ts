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

/** Packs `codes` (each below 2^bits: a wider code would spill into its neighbours, so it is an error). */
export function packCodes(codes: Uint8Array, bits: number, order: BitOrder, padCode = 0): Uint8Array {
  checkLayout(bits, order);
  if (!(codes instanceof Uint8Array)) throw new InvalidArgumentError("codes must be a Uint8Array");
  if (!Number.isInteger(padCode) || padCode < 0 || padCode >> bits !== 0) throw new InvalidArgumentError(`padCode must be a ${bits}-bit code, got ${padCode}`);
  const out = new Uint8Array(packedByteLength(codes.length, bits));
  if (bits === 8) {
    out.set(codes);
    return out;
  }
  // OR of every code, checked once at the end: cheaper than a test per code in these loops.
  let allBits = 0;
  if (order === "msb-first") {
    const perByte = 8 / bits;
    for (let byte = 0; byte < out.length; byte++) {
      let value = 0;
      for (let slot = 0; slot < perByte; slot++) {
        const index = byte * perByte + slot;
        const code = index < codes.length ? codes[index]! : padCode;
        allBits |= code;
        value |= code << (8 - bits * (slot + 1));
      }
      out[byte] = value;
    }
  } else if (bits === 4 || bits === 2) {
    // Whole codes per byte (the common widths): no carries between bytes.
    const perByte = 8 / bits;
    for (let i = 0; i < codes.length; i++) {
      allBits |= codes[i]!;
      out[(i / perByte) | 0]! |= codes[i]! << ((i % perByte) * bits);
    }
  } else {
    let bitPosition = 0;
    for (let i = 0; i < codes.length; i++, bitPosition += bits) {
      const byte = bitPosition >>> 3;
      const shift = bitPosition & 7;
      allBits |= codes[i]!;
      const shifted = codes[i]! << shift;
      out[byte]! |= shifted & 0xff;
      if (shift + bits > 8) out[byte + 1]! |= shifted >>> 8;
    }
  }
  if (allBits >> bits !== 0) {
    const wide = codes.findIndex((code) => code >> bits !== 0);
    throw new InvalidArgumentError(`code ${codes[wide]} at index ${wide} does not fit in ${bits} bits`);
  }
  return out;
}

export function unpackCodes(packed: Uint8Array, bits: number, count: number, order: BitOrder, out?: Uint8Array): Uint8Array {
  checkLayout(bits, order);
  if (!Number.isSafeInteger(count) || count < 0) throw new InvalidArgumentError(`count must be a non-negative integer, got ${count}`);
  if (out === undefined) out = new Uint8Array(count);
  else if (out.length < count) throw new InvalidArgumentError(`out holds ${out.length} codes, ${count} asked for`);
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

const BIT_ORDERS: readonly BitOrder[] = ["lsb-first", "msb-first"];

function checkLayout(bits: number, order: BitOrder): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) throw new InvalidArgumentError(`code width must be 1..8 bits, got ${bits}`);
  if (!BIT_ORDERS.includes(order)) throw new InvalidArgumentError(`bit order must be one of ${BIT_ORDERS.join(", ")}, got ${String(order)}`);
  if (order === "msb-first" && 8 % bits !== 0) throw new InvalidArgumentError(`msb-first packing needs bits dividing 8, got ${bits}`);
}
