import { test } from "node:test";
import assert from "node:assert/strict";
import { createQuantizer, type QuantizerKind } from "./quantizer.js";
import { matrix } from "../tensor/matrix.js";
import { packCodes, unpackCodes } from "./packing.js";
import { dynamicMap8Bit, normalFloatTable, symmetricNormalFloatTable, uniformTable } from "./tables.js";
import { hexToBytes, hexToFloat32, loadRefTensors, maxAbsDiff, readJson } from "../../test/helpers/ref-vectors.js";
import { tensorToFloat32 } from "../io/safetensors.js";
import { mulberry32, gaussian } from "../linalg/random.js";
import { frobeniusDistance, frobeniusNorm } from "../tensor/matrix.js";

test("code tables match the upstream tables bit for bit", () => {
  const tables = readJson("derived/tables.json");
  assert.deepEqual(Array.from(normalFloatTable(2)), tables.nf2_peft_nfquantizer);
  assert.deepEqual(Array.from(normalFloatTable(4)), tables.nf4);
  assert.deepEqual(Array.from(dynamicMap8Bit()), tables.bnb_dynamic_map_signed_8bit_fma);
  // PEFT's real NF8 table (from the PEFT-produced vectors) comes from torch's vectorised CPU linspace.
  const peft = loadRefTensors("peft/loftq_gauss_64x128_b8_r8_t1.safetensors");
  for (const bits of [2, 4, 8]) {
    assert.deepEqual(normalFloatTable(bits), tensorToFloat32(peft.tensors.get(`nf_table_${bits}`)!), `NF${bits}`);
  }
  // The uniform tables follow the same vectorised linspace (16+ steps go in 8-lane vectors); the derived
  // tables.json rounds element by element, so it differs by ≤ 2 ulp at three entries of the 4-bit table.
  // PEFT's LoftQ never uses these tables, so no upstream-produced vector settles which one torch gives.
  assert.deepEqual(Array.from(uniformTable(2)), tables.uniform2_asym);
  const ulp = (x: number) => 2 ** (Math.floor(Math.log2(Math.abs(x))) - 23);
  const uniform4 = Array.from(uniformTable(4));
  const differing = uniform4.flatMap((v, i) => (v === tables.uniform4_asym[i] ? [] : [i]));
  assert.deepEqual(differing, [8, 9, 13]);
  for (const i of differing) assert.ok(Math.abs(uniform4[i]! - tables.uniform4_asym[i]) <= 2 * ulp(uniform4[i]!), `entry ${i}`);
});

test("bnb NF4 (CUDA and CPU zero-block semantics) matches the derived vectors: bytes, absmax, dequantized", () => {
  const vectors = readJson("derived/test_vectors.json");
  const input = matrix(4, 64, hexToFloat32(vectors.input_f32_hex));
  for (const [key, zeroBlocks] of [["bnb_nf4_cuda", "cuda"], ["bnb_nf4_default", "cpu"]] as const) {
    const quantizer = createQuantizer({ kind: "bnb-nf4", zeroBlocks });
    const q = quantizer.quantize(input);
    assert.deepEqual(q.packed, hexToBytes(vectors[key].packed_hex), `${key} bytes`);
    assert.deepEqual(q.absmax, hexToFloat32(vectors[key].absmax_f32_hex), `${key} absmax`);
    const expected = hexToFloat32(vectors[key].dequant_f32_hex);
    const got = quantizer.dequantize(q).data;
    for (let i = 0; i < got.length; i++) assert.ok(Object.is(got[i], expected[i]), `${key} dequant[${i}] ${got[i]} vs ${expected[i]}`);
  }
});

test("PEFT NFQuantizer NF4 / NF2 matches the derived vectors (low-bits-first packing)", () => {
  const vectors = readJson("derived/test_vectors.json");
  const input = matrix(4, 64, hexToFloat32(vectors.input_f32_hex));
  for (const bits of [4, 2]) {
    const key = `peft_nfquantizer_nf${bits}`;
    const quantizer = createQuantizer({ kind: "nf", bits });
    const q = quantizer.quantize(input);
    assert.deepEqual(q.packed, hexToBytes(vectors[key].packed_hex), `${key} bytes`);
    if (vectors[key].absmax_f32_hex) assert.deepEqual(q.absmax, hexToFloat32(vectors[key].absmax_f32_hex));
    if (vectors[key].dequant_f32_hex) {
      const expected = hexToFloat32(vectors[key].dequant_f32_hex);
      assert.equal(maxAbsDiff(quantizer.dequantize(q).data, expected), 0);
    }
  }
});

test("int8 row-wise matches the derived vectors (bnb CPU path)", () => {
  const vectors = readJson("derived/test_vectors.json");
  const expected = vectors.bnb_int8_rowwise_default;
  const rows = expected.SCB_f32_hex.length;
  const values = hexToFloat32(vectors.input_f32_hex).subarray(0, expected.int8.length);
  const quantizer = createQuantizer({ kind: "int8" });
  const q = quantizer.quantize(matrix(rows, values.length / rows, values));
  assert.deepEqual(Array.from(new Int8Array(q.packed.buffer, q.packed.byteOffset, q.packed.length)), expected.int8);
  assert.deepEqual(q.absmax, hexToFloat32(expected.SCB_f32_hex));
});

test("packing round-trips for every width and both bit orders", () => {
  const random = mulberry32(7);
  for (const bits of [1, 2, 3, 4, 5, 6, 7, 8]) {
    for (const count of [0, 1, 7, 64, 101]) {
      const codes = Uint8Array.from({ length: count }, () => Math.floor(random() * 2 ** bits));
      for (const order of bits === 3 || bits >= 5 && bits < 8 ? (["lsb-first"] as const) : (["lsb-first", "msb-first"] as const)) {
        assert.deepEqual(unpackCodes(packCodes(codes, bits, order), bits, count, order), codes, `${bits} bits ${order} n=${count}`);
      }
    }
  }
  // PEFT's documented example: codes [1,0,3,2] at 2 bits → 0b10110001.
  assert.equal(packCodes(Uint8Array.from([1, 0, 3, 2]), 2, "lsb-first")[0], 0b10110001);
  assert.equal(packCodes(Uint8Array.from([0xa, 0x5]), 4, "msb-first")[0], 0xa5);
});

test("every quantizer: round trip, partial last block, byte accounting", () => {
  const random = mulberry32(11);
  const data = Float32Array.from({ length: 37 * 29 }, () => gaussian(random) * 0.02);
  const weight = matrix(37, 29, data); // 1073 values: the last 64-block is partial
  const cases: Array<[QuantizerKind, number, boolean?]> = [
    ["nf", 2], ["nf", 3], ["nf", 4], ["nf", 8], ["nf-sym", 2], ["nf-sym", 3], ["uniform", 2], ["uniform", 4],
    ["bnb-nf4", 4], ["bnb-nf4", 4, true], ["bnb-fp4", 4], ["bnb-fp4", 4, true], ["int8", 8],
  ];
  for (const [kind, bits, doubleQuant] of cases) {
    const quantizer = createQuantizer({ kind, bits, ...(doubleQuant ? { doubleQuant } : {}) });
    const q = quantizer.quantize(weight);
    const deq = quantizer.dequantize(q).data;
    const fake = new Float32Array(data.length);
    quantizer.encode(data, weight.rows, weight.cols, fake);
    assert.deepEqual(fake, deq, `${quantizer.name}: encode's dequantized output equals dequantize(quantize)`);
    const encoded = quantizer.encode(data, weight.rows, weight.cols);
    assert.deepEqual(quantizer.decode(encoded, weight.rows, weight.cols, new Float32Array(data.length)), deq, `${quantizer.name}: decode`);
    // The residual form, in place over a copy of the input: minuend − Q and Σ of its squares.
    const minuend = data.map((x) => x * 1.5);
    const residual = Float32Array.from(data);
    const { encoded: again, residualSquared } = quantizer.encodeResidual(residual, weight.rows, weight.cols, minuend, residual);
    assert.deepEqual(again.codes, encoded.codes, `${quantizer.name}: encodeResidual codes`);
    const expected = minuend.map((w, i) => w - deq[i]!);
    assert.deepEqual(residual, expected, `${quantizer.name}: encodeResidual writes minuend − Q`);
    const expectedSum = expected.reduce((sum, r) => sum + r * r, 0);
    assert.ok(Math.abs(residualSquared - expectedSum) <= 1e-12 * expectedSum, `${quantizer.name}: Σr² ${residualSquared} vs ${expectedSum}`);
    const relative = frobeniusDistance(deq, data) / frobeniusNorm(data);
    const bound = { 2: 0.6, 3: 0.3, 4: 0.15, 8: 0.02 }[bits]!;
    assert.ok(relative < bound, `${quantizer.name}: relative error ${relative}`);
    const expectedPacked = kind === "int8" ? data.length : Math.ceil((data.length * bits) / 8);
    assert.equal(q.packed.length, expectedPacked);
    assert.ok(q.bitsPerWeight > bits && q.bitsPerWeight < bits + (doubleQuant ? 1 : 1.6), `${quantizer.name}: ${q.bitsPerWeight} bits/weight`);
  }
});

test("double quantization stores 1 byte per block and reconstructs absmax closely", () => {
  const random = mulberry32(3);
  const weight = matrix(64, 1024, Float32Array.from({ length: 64 * 1024 }, () => gaussian(random)));
  const plain = createQuantizer({ kind: "bnb-nf4" }).quantize(weight);
  const nested = createQuantizer({ kind: "bnb-nf4", doubleQuant: true }).quantize(weight);
  assert.equal(nested.doubleQuant!.codes.length, plain.absmax.length);
  assert.ok(maxAbsDiff(nested.absmax, plain.absmax) < 0.01 * Math.max(...plain.absmax));
  assert.ok(nested.bitsPerWeight < plain.bitsPerWeight - 0.35, `${nested.bitsPerWeight} vs ${plain.bitsPerWeight}`);
});

test("the symmetric 2-bit table beats upstream NF2 on Gaussian weights", (t) => {
  const random = mulberry32(5);
  const weight = matrix(256, 256, Float32Array.from({ length: 65536 }, () => gaussian(random)));
  const error = (kind: QuantizerKind) => {
    const q = createQuantizer({ kind, bits: 2 });
    return frobeniusDistance(q.dequantize(q.quantize(weight)).data, weight.data) / frobeniusNorm(weight.data);
  };
  const upstream = error("nf");
  const symmetric = error("nf-sym");
  t.diagnostic(`NF2 upstream ${upstream.toFixed(4)}, symmetric ${symmetric.toFixed(4)}; table ${Array.from(symmetricNormalFloatTable(2)).join(", ")}`);
  assert.ok(symmetric < upstream - 0.05);
});

test("bad options are typed errors", () => {
  assert.throws(() => createQuantizer({ kind: "nf", bits: 5 }), /supports bits 2, 3, 4, 8/);
  assert.throws(() => createQuantizer({ kind: "bnb-nf4", bits: 2 }), { name: "InvalidArgumentError" });
  assert.throws(() => createQuantizer({ kind: "bnb-nf4", blockSize: 48 }), /block size/);
  assert.throws(() => createQuantizer({ kind: "nf", doubleQuant: true }), /doubleQuant/);
  assert.throws(() => createQuantizer({ blockSize: 0 }), /blockSize/);
  assert.throws(() => createQuantizer({ kind: "nf4" as QuantizerKind }), /unknown quantizer/);
  // The kernels do 32-bit block arithmetic: 2^31 wrapped around before this limit.
  assert.throws(() => createQuantizer({ blockSize: 2 ** 31 }), /blockSize must be an integer in 1..16777216/);
});

test("quantize() checks its matrix: shape, NaN/Inf by position; int8 refuses values beyond float16", () => {
  for (const kind of ["nf", "bnb-nf4", "int8"] as const) {
    const quantizer = createQuantizer({ kind });
    assert.throws(() => quantizer.quantize({ rows: 4, cols: 16, data: new Float32Array(63) }), { name: "ShapeError", message: /needs 64 values, got 63/ });
    const nan = matrix(4, 16, new Float32Array(64));
    nan.data[21] = NaN;
    assert.throws(() => quantizer.quantize(nan), { name: "NonFiniteError", message: /row 1, column 5/ });
  }
  const big = matrix(2, 8, new Float32Array(16).fill(1));
  big.data[11] = 1e6;
  assert.throws(() => createQuantizer({ kind: "int8" }).quantize(big), { name: "OutOfRangeError", message: /row 1, column 3 is outside float16's range/ });
  // Double quantization: absmax values at float32's largest, one small block pulling the offset down.
  const nearMax = matrix(256, 64, Float32Array.from({ length: 256 * 64 }, (_, i) => (i < 64 ? 1 : 3.4028234663852886e38) * (i % 64 === 0 ? 1 : 0.5)));
  assert.throws(() => createQuantizer({ kind: "bnb-nf4", doubleQuant: true }).quantize(nearMax), { name: "OutOfRangeError", message: /double-quantized absmax of block \d+ overflows/ });
});
