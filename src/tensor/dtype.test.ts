import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16ToFloat32, bitsToFloat32, decodeHalf, encodeHalf, f16ToFloat32, float32ToBf16, float32ToBits, float32ToF16 } from "./dtype.js";

test("float16: all 65 536 bit patterns survive f16 → f32 → f16", () => {
  for (let bits = 0; bits < 0x10000; bits++) {
    const value = f16ToFloat32(bits);
    const back = float32ToF16(value);
    if (Number.isNaN(value)) {
      assert.ok((back & 0x7c00) === 0x7c00 && (back & 0x3ff) !== 0, `NaN ${bits.toString(16)} stays NaN`);
      assert.equal(back & 0x8000, bits & 0x8000);
    } else {
      assert.equal(back, bits, `f16 0x${bits.toString(16)} = ${value}`);
    }
  }
});

test("float16: round-to-nearest-even at every midpoint between neighbours", () => {
  // For every finite positive half h, the float32 midpoint between h and h+1 rounds to the even one.
  for (let bits = 0; bits < 0x7bff; bits++) {
    const lo = f16ToFloat32(bits);
    const hi = f16ToFloat32(bits + 1);
    const mid = Math.fround((lo + hi) / 2);
    const expected = bits % 2 === 0 ? bits : bits + 1;
    assert.equal(float32ToF16(mid), expected, `midpoint of 0x${bits.toString(16)}`);
    assert.equal(float32ToF16(-mid), expected | 0x8000);
    // Just above / below the midpoint round up / down.
    const above = bitsToFloat32(float32ToBits(mid) + 1);
    const below = bitsToFloat32(float32ToBits(mid) - 1);
    assert.equal(float32ToF16(above), bits + 1);
    assert.equal(float32ToF16(below), bits);
  }
});

test("float16: overflow, underflow, signed zero, infinities", () => {
  assert.equal(float32ToF16(65504), 0x7bff);
  assert.equal(float32ToF16(65519.99), 0x7bff);
  assert.equal(float32ToF16(65520), 0x7c00); // the midpoint to "65536" rounds to even = Inf
  assert.equal(float32ToF16(1e10), 0x7c00);
  assert.equal(float32ToF16(-Infinity), 0xfc00);
  assert.equal(float32ToF16(-0), 0x8000);
  assert.equal(float32ToF16(2 ** -25), 0); // exactly half the smallest subnormal: ties to even (0)
  assert.equal(float32ToF16(Math.fround(2 ** -25 * 1.0001)), 1);
  assert.equal(float32ToF16(1e-30), 0);
  assert.equal(f16ToFloat32(1), 2 ** -24);
});

test("bfloat16: all 65 536 bit patterns survive bf16 → f32 → bf16", () => {
  for (let bits = 0; bits < 0x10000; bits++) {
    const value = bf16ToFloat32(bits);
    const back = float32ToBf16(value);
    if (Number.isNaN(value)) assert.ok((back & 0x7f80) === 0x7f80 && (back & 0x7f) !== 0);
    else assert.equal(back, bits, `bf16 0x${bits.toString(16)}`);
  }
});

test("bfloat16: round-to-nearest-even and NaN handling", () => {
  assert.equal(float32ToBf16(bitsToFloat32(0x3f808000)), 0x3f80); // tie, even stays
  assert.equal(float32ToBf16(bitsToFloat32(0x3f818000)), 0x3f82); // tie, odd rounds up
  assert.equal(float32ToBf16(bitsToFloat32(0x3f808001)), 0x3f81);
  assert.equal(float32ToBf16(bitsToFloat32(0x7f7fffff)), 0x7f80); // max float32 rounds to Inf
  assert.ok(Number.isNaN(bf16ToFloat32(float32ToBf16(bitsToFloat32(0x7f800001))))); // signalling NaN stays NaN
});

test("bulk bf16/f16 encode and decode agree with the scalar conversions on every pattern", () => {
  const patterns = Uint16Array.from({ length: 0x10000 }, (_, i) => i);
  const bytes = new Uint8Array(patterns.buffer);
  for (const kind of ["bf16", "f16"] as const) {
    const decoded = decodeHalf(bytes, kind);
    const scalar = kind === "bf16" ? bf16ToFloat32 : f16ToFloat32;
    for (let i = 0; i < 0x10000; i++) {
      const expected = scalar(i);
      assert.ok(Object.is(decoded[i], expected) || (Number.isNaN(decoded[i]) && Number.isNaN(expected)), `${kind} decode 0x${i.toString(16)}`);
    }
  }
  // Encoding: every float32 midpoint case, compared with the scalar rounding and, for bf16, with RNE
  // written out independently here in unsigned (float64) arithmetic.
  const referenceBf16 = (value: number) => {
    const bits = float32ToBits(value);
    if (Number.isNaN(value)) return ((bits >>> 16) | 0x0040) & 0xffff;
    return Math.floor((bits + 0x7fff + (Math.floor(bits / 0x10000) % 2)) / 0x10000) % 0x10000;
  };
  const values = Float32Array.from({ length: 5000 }, (_, i) => bitsToFloat32((i * 2654435761) >>> 0));
  const toBf16 = encodeHalf(values, "bf16");
  const toF16 = encodeHalf(values, "f16");
  for (let i = 0; i < values.length; i++) {
    assert.equal(float32ToBf16(values[i]!), referenceBf16(values[i]!), `bf16 rounding ${values[i]}`);
    assert.equal(toBf16[2 * i]! | (toBf16[2 * i + 1]! << 8), float32ToBf16(values[i]!), `bf16 encode ${values[i]}`);
    assert.equal(toF16[2 * i]! | (toF16[2 * i + 1]! << 8), float32ToF16(values[i]!), `f16 encode ${values[i]}`);
  }
  // The bf16 fast path (two per 32-bit store) against the same bytes at any output alignment, odd
  // counts, and the edges: the largest finite floats (round to ±Inf), infinities, NaNs, ±0.
  const edges = [0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000, 0x7fc00001, 0xff800001, 0x80000000, 0, 0x3f808000, 0x3f818000];
  const mixed = Float32Array.from([...edges.map(bitsToFloat32), ...values.subarray(0, 1001)]);
  const expected = new Uint8Array(2 * mixed.length);
  mixed.forEach((v, i) => ((expected[2 * i] = referenceBf16(v) & 0xff), (expected[2 * i + 1] = referenceBf16(v) >>> 8)));
  for (const offset of [0, 1, 2, 3]) {
    const storage = new Uint8Array(2 * mixed.length + offset + 4);
    assert.deepEqual(encodeHalf(mixed, "bf16", storage.subarray(offset, offset + 2 * mixed.length)), expected, `bf16 at byte offset ${offset}`);
  }
});
