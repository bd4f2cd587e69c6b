/**
 * Exact float16 / bfloat16 ↔ float32 conversions (Node 20 has no Float16Array).
 * float32 → 16-bit rounds to nearest, ties to even; NaN stays NaN (quiet), ±Inf and signed zeros
 * are preserved, float16 subnormals are produced and read exactly.
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function float32ToBits(value: number): number {
  f32[0] = value;
  return u32[0]!;
}

export function bitsToFloat32(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0]!;
}

/** bfloat16 bits (uint16) → float32 value. Exact: bf16 is the top half of a float32. */
export function bf16ToFloat32(bits: number): number {
  return bitsToFloat32((bits & 0xffff) << 16);
}

/** float32 value → bfloat16 bits, round-to-nearest-even. */
export function float32ToBf16(value: number): number {
  return bf16Bits(float32ToBits(value) | 0);
}

/** float16 bits (uint16) → float32 value, subnormals included. */
export function f16ToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) {
    // Keep the NaN's sign and payload (quietened), as hardware conversions do.
    return mantissa === 0 ? sign * Infinity : bitsToFloat32(((bits & 0x8000) << 16) | 0x7fc00000 | (mantissa << 13));
  }
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** float32 value → float16 bits, round-to-nearest-even, overflow to ±Inf. */
export function float32ToF16(value: number): number {
  const bits = float32ToBits(value);
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return mantissa === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mantissa >>> 13);
  const unbiased = exponent - 127;
  if (unbiased > 15) return sign | 0x7c00;
  if (unbiased >= -14) {
    // Normal half: drop 13 mantissa bits with RNE; a carry may ripple into the exponent (and to Inf).
    const half = ((unbiased + 15) << 10) | (mantissa >>> 13);
    const rest = mantissa & 0x1fff;
    const roundUp = rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1);
    return sign | (half + (roundUp ? 1 : 0));
  }
  if (unbiased < -25) return sign; // below half the smallest subnormal: rounds to ±0
  // Subnormal half: value = m · 2^-24, m = significand · 2^(unbiased + 1), so drop -unbiased-1 bits.
  // A round-up from 0x3ff carries into the smallest normal, which is the correct encoding.
  const significand = mantissa | 0x800000;
  const dropBits = -unbiased - 1;
  const kept = significand >>> dropBits;
  const rest = significand & ((1 << dropBits) - 1);
  const halfway = 1 << (dropBits - 1);
  const roundUp = rest > halfway || (rest === halfway && (kept & 1) === 1);
  return sign | (kept + (roundUp ? 1 : 0));
}

/** Decodes little-endian 16-bit floats (f16 or bf16) into float32. (Typed-array views assume a little-endian host, as every supported one is.) */
export function decodeHalf(bytes: Uint8Array, kind: "f16" | "bf16", out: Float32Array = new Float32Array(bytes.length >>> 1)): Float32Array {
  if (kind === "bf16") {
    // bf16 is the top half of a float32: a shift, with no per-element call (hot when reading checkpoints).
    const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
    if (bytes.byteOffset % 2 === 0) {
      const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, out.length);
      for (let i = 0; i < out.length; i++) bits[i] = halves[i]! << 16;
    } else {
      for (let i = 0; i < out.length; i++) bits[i] = ((bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) << 16) >>> 0;
    }
    return out;
  }
  for (let i = 0; i < out.length; i++) out[i] = f16ToFloat32(bytes[2 * i]! | (bytes[2 * i + 1]! << 8));
  return out;
}

/** Encodes float32 values as little-endian 16-bit floats (f16 or bf16), RNE. */
export function encodeHalf(values: Float32Array, kind: "f16" | "bf16", out: Uint8Array = new Uint8Array(values.length * 2)): Uint8Array {
  if (kind === "bf16") {
    // Int32 bits keep the arithmetic in small integers (Uint32 values above 2³¹ are doubles in V8),
    // and two results go out per 32-bit store: ~2× the one-Uint16-at-a-time loop (16M values: 82 →
    // 43 ms). The word view assumes a little-endian platform, as the float32 view of the input does.
    const bits = new Int32Array(values.buffer, values.byteOffset, values.length);
    let i = 0;
    if (out.byteOffset % 4 === 0) {
      const words = new Int32Array(out.buffer, out.byteOffset, values.length >> 1);
      for (; i + 2 <= values.length; i += 2) words[i >> 1] = bf16Bits(bits[i]!) | (bf16Bits(bits[i + 1]!) << 16);
    }
    for (; i < values.length; i++) {
      const half = bf16Bits(bits[i]!);
      out[2 * i] = half & 0xff;
      out[2 * i + 1] = half >>> 8;
    }
    return out;
  }
  for (let i = 0; i < values.length; i++) {
    const bits = float32ToF16(values[i]!);
    out[2 * i] = bits & 0xff;
    out[2 * i + 1] = bits >>> 8;
  }
  return out;
}

/**
 * bf16 bits of the float32 whose bits are `b` (as an int32): a NaN keeps its sign and gets a quiet
 * payload bit; everything else rounds to nearest even (the largest finite values round to ±Inf).
 */
function bf16Bits(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x007fffff) !== 0) return ((b >>> 16) | 0x0040) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) | 0) >>> 16;
}

/** The little-endian bytes of float32 values, as safetensors stores F32 (a view, no copy). */
export function float32Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/** The largest finite float16. */
export const F16_MAX = 65504;
/** Values from here up round to infinity in float16 (ties to even: 65520 lies halfway to 65536). */
export const F16_OVERFLOW = 65520;
