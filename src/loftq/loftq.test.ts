import { test } from "node:test";
import assert from "node:assert/strict";
import { loftq } from "./loftq.js";
import { qloraInit } from "./qlora-init.js";
import { matrix, frobeniusDistance, frobeniusNorm, type Matrix } from "../tensor/matrix.js";
import { llmLikeWeight } from "../synthetic/llm-like-weight.js";
import { tsBackend } from "../kernels/ts-backend.js";
import { createWasmBackend, wasmSimdSupported } from "../kernels/wasm-backend.js";
import type { KernelBackend } from "../kernels/backend.js";
import { unpackCodes } from "../quant/packing.js";
import { NonFiniteError, ShapeError, InvalidArgumentError } from "../errors.js";

const weight = llmLikeWeight(96, 160, { seed: 5 });

function adapterProduct(a: Float32Array, b: Float32Array, rows: number, cols: number, rank: number): Float32Array {
  const out = new Float32Array(rows * cols);
  tsBackend.gemm({ transA: false, transB: false, m: rows, n: cols, k: rank, alpha: 1, a: b, b: a, beta: 0, c: out });
  return out;
}

test("loftq returns PEFT-oriented shapes and errors consistent with its outputs", () => {
  const result = loftq(weight, { bits: 4, rank: 8, iterations: 2 });
  assert.deepEqual([result.loraA.rows, result.loraA.cols, result.loraB.rows, result.loraB.cols], [8, 160, 96, 8]);
  assert.equal(result.history.length, 2);
  const product = adapterProduct(result.loraA.data, result.loraB.data, 96, 160, 8);
  const approx = result.dequantized.data.map((q, i) => q + product[i]!);
  const measured = frobeniusDistance(weight.data, approx) / frobeniusNorm(weight.data);
  const reported = result.history[result.selectedIteration - 1]!.error;
  assert.ok(Math.abs(measured - reported) < 1e-6, `${measured} vs ${reported}`);
  assert.equal(result.quantized.rows, 96);
});

test("output: Q is written into the caller's array (reused across matrices); a wrong length is a ShapeError", () => {
  const output = new Float32Array(96 * 160).fill(NaN);
  const result = loftq(weight, { bits: 4, rank: 8, iterations: 2, output });
  assert.equal(result.dequantized.data, output);
  assert.deepEqual(output, loftq(weight, { bits: 4, rank: 8, iterations: 2 }).dequantized.data);
  assert.throws(() => loftq(weight, { rank: 8, output: new Float32Array(10) }), ShapeError);
});

test("codesOutput: the chosen iterate's codes go into the caller's array (in place when in backend memory), the same as without; bad ones are refused", () => {
  const backends: KernelBackend[] = [tsBackend, ...(wasmSimdSupported() ? [createWasmBackend()] : [])];
  // The last case picks iteration 2 of 4 (keepBest): its codes end in loftq's own buffer and are copied out.
  const cases = [
    { w: weight, quantizer: "nf", bits: 4, rank: 8, iterations: 1 },
    { w: weight, quantizer: "nf", bits: 2, rank: 8, iterations: 3 },
    { w: weight, quantizer: "int8", bits: 8, rank: 8, iterations: 2 },
    { w: llmLikeWeight(96, 160, { seed: 2 }), quantizer: "nf", bits: 2, rank: 64, iterations: 4 },
  ] as const;
  const codesBytes = Math.ceil((96 * 160) / 4);
  for (const backend of backends) {
    let codeBuffers = 0;
    const counting: KernelBackend = { ...backend, allocate: (length, zeroed) => ((codeBuffers += length === codesBytes ? 1 : 0), backend.allocate(length, zeroed)) };
    for (const { w, quantizer, bits, rank, iterations } of cases) {
      const options = { quantizer, bits, rank, iterations, backend: counting };
      const plain = loftq(w, options);
      const chosenCodes = quantizer === "int8" ? plain.quantized.packed : unpackCodes(plain.quantized.packed, bits, 96 * 160, plain.quantized.bitOrder);
      const ordinary = new Uint8Array(96 * 160).fill(255);
      const storage = backend.allocate(codesBytes, false);
      const held = new Uint8Array(storage.buffer, storage.byteOffset, 96 * 160).fill(255);
      for (const codesOutput of [ordinary, held]) {
        const what = `${backend.name} ${quantizer}${bits} r${rank} T${iterations}${codesOutput === held ? " (backend memory)" : ""}`;
        codeBuffers = 0;
        const result = loftq(w, { ...options, codesOutput });
        // In backend memory (for ts: any array) the caller's array is the quantizer's first code buffer
        // (int8 keeps codes of its own).
        const inPlace = backend.holds?.(codesOutput) ?? false;
        assert.equal(inPlace, codesOutput === held || backend === tsBackend);
        const ownBuffers = (iterations > 1 ? 2 : 1) - (inPlace ? 1 : 0);
        if (quantizer !== "int8") assert.equal(codeBuffers, ownBuffers, `${what}: code buffers taken from the backend`);
        assert.deepEqual(codesOutput, chosenCodes, `${what}: the chosen iterate's codes`);
        assert.deepEqual(result.quantized.packed, plain.quantized.packed, what);
        assert.deepEqual(result.history, plain.history, what);
        assert.equal(result.selectedIteration, plain.selectedIteration, what);
        const baseline = qloraInit(w, { ...options, codesOutput: codesOutput.fill(255) });
        assert.deepEqual(baseline.quantized.packed, qloraInit(w, options).quantized.packed, `qloraInit ${what}`);
        assert.ok(codesOutput.some((code) => code !== 255), `qloraInit ${what}: codes written`);
      }
      backend.release(storage);
    }
  }
  const { w: copiedCase, ...copiedOptions } = cases[3];
  assert.ok(loftq(copiedCase, copiedOptions).selectedIteration < copiedOptions.iterations, "a case whose chosen codes are copied from loftq's own buffer");
  // A `quantized` read before the buffer is reused keeps its values (int8's packed bytes are its codes).
  for (const quantizer of ["nf", "int8"] as const) {
    const codesOutput = new Uint8Array(96 * 160);
    const first = loftq(weight, { quantizer, rank: 8, codesOutput }).quantized;
    const kept = first.packed.slice();
    loftq(llmLikeWeight(96, 160, { seed: 9 }), { quantizer, rank: 8, codesOutput });
    assert.deepEqual(first.packed, kept, `${quantizer}: an earlier result's packed codes after the buffer is reused`);
  }
  assert.throws(() => loftq(weight, { rank: 8, codesOutput: new Float32Array(96 * 160) as unknown as Uint8Array }), /codesOutput must be a Uint8Array/);
  assert.throws(() => loftq(weight, { rank: 8, codesOutput: new Uint8Array(10) }), ShapeError);
  const shared = new Float32Array(2 * 96 * 160);
  const aliasedWeight = { rows: 96, cols: 160, data: shared.subarray(0, 96 * 160) };
  aliasedWeight.data.set(weight.data);
  const overWeight = new Uint8Array(shared.buffer, 4 * 96 * 160 - 8, 96 * 160);
  assert.throws(() => loftq(aliasedWeight, { rank: 8, codesOutput: overWeight }), InvalidArgumentError);
  const output = shared.subarray(96 * 160);
  assert.throws(() => loftq(weight, { rank: 8, output, codesOutput: new Uint8Array(output.buffer, output.byteOffset, 96 * 160) }), InvalidArgumentError);
});

test("output may be the weight's own array: Q is written over W after its last read, the same as elsewhere", () => {
  const backends: KernelBackend[] = [tsBackend, ...(wasmSimdSupported() ? [createWasmBackend()] : [])];
  for (const backend of backends) {
    for (const [quantizer, bits, iterations] of [["nf", 2, 4], ["int8", 8, 2], ["bnb-nf4", 4, 3]] as const) {
      const options = { quantizer, bits, rank: 8, iterations, backend };
      const plain = loftq(weight, options);
      const held = backend.allocate(96 * 160, false);
      for (const data of [Float32Array.from(weight.data), held]) {
        data.set(weight.data);
        const over = loftq({ rows: 96, cols: 160, data }, { ...options, output: data });
        const what = `${backend.name} ${quantizer} T${iterations}${data === held ? " (backend memory)" : ""}`;
        assert.deepEqual([over.dequantized.data, over.history, over.quantized.packed], [plain.dequantized.data, plain.history, plain.quantized.packed], what);
      }
      backend.release(held);
    }
  }
});

test("W and Q in backend memory are used in place: no copy of W, Q decoded into the output, same bytes", () => {
  const backends: KernelBackend[] = [tsBackend, ...(wasmSimdSupported() ? [createWasmBackend()] : [])];
  for (const backend of backends) {
    // Counts the matrix-sized buffers loftq takes from the backend, and records where Q is decoded.
    let matrixBuffers = 0;
    const decodedInto: Float32Array[] = [];
    const counting: KernelBackend = {
      ...backend,
      allocate: (length, zeroed) => ((matrixBuffers += length === 96 * 160 ? 1 : 0), backend.allocate(length, zeroed)),
      decodeCodebook: (call) => (decodedInto.push(call.out), backend.decodeCodebook(call)),
    };
    const options = { bits: 4, rank: 8, iterations: 3, backend: counting };
    const plain = loftq(weight, options);
    const held = counting.allocate(96 * 160, false);
    held.set(weight.data);
    const output = counting.allocate(96 * 160, false);
    matrixBuffers = 0;
    decodedInto.length = 0;
    const inPlace = loftq({ rows: 96, cols: 160, data: held }, { ...options, output });
    assert.equal(matrixBuffers, 1, `${backend.name}: the residual is the only matrix-sized buffer (W is not copied)`);
    assert.equal(inPlace.dequantized.data, output);
    assert.deepEqual(decodedInto, [output], `${backend.name}: Q decoded straight into the output`);
    assert.deepEqual(output, plain.dequantized.data, backend.name);
    assert.deepEqual([inPlace.loraA.data, inPlace.loraB.data, inPlace.history], [plain.loraA.data, plain.loraB.data, plain.history]);
    assert.deepEqual(held, weight.data, `${backend.name}: W is unchanged`);
    backend.release(held);
    backend.release(output);
  }
});

test("loraAlpha compensation: scaling·B·A equals the uncompensated B·A; upstreamScaling leaves it alone", () => {
  const plain = loftq(weight, { rank: 8 });
  const compensated = loftq(weight, { rank: 8, loraAlpha: 16 });
  const upstream = loftq(weight, { rank: 8, loraAlpha: 16, upstreamScaling: true });
  assert.equal(compensated.scaling, 2);
  const base = adapterProduct(plain.loraA.data, plain.loraB.data, 96, 160, 8);
  const scaled = adapterProduct(compensated.loraA.data, compensated.loraB.data, 96, 160, 8).map((v) => v * compensated.scaling);
  assert.ok(frobeniusDistance(base, scaled) < 1e-6 * frobeniusNorm(base));
  assert.deepEqual(upstream.loraA.data, plain.loraA.data);
  const rs = loftq(weight, { rank: 8, loraAlpha: 16, useRslora: true });
  assert.ok(Math.abs(rs.scaling - 16 / Math.sqrt(8)) < 1e-12);
});

test("keepBest picks the lowest-error iterate; keepBest: false returns the last", () => {
  const best = loftq(weight, { bits: 2, rank: 8, iterations: 4 });
  const last = loftq(weight, { bits: 2, rank: 8, iterations: 4, keepBest: false });
  const errors = best.history.map((h) => h.error);
  assert.equal(best.selectedIteration, errors.indexOf(Math.min(...errors)) + 1);
  assert.equal(last.selectedIteration, 4);
  assert.deepEqual(best.history, last.history);
});

test("same seed, same bytes; the randomized path too", () => {
  const big = llmLikeWeight(300, 400, { seed: 2 });
  const run = () => loftq(big, { rank: 8, iterations: 2, svd: "randomized", seed: 7 });
  const [x, y] = [run(), run()];
  assert.deepEqual(x.loraA.data, y.loraA.data);
  assert.deepEqual(x.quantized.packed, y.quantized.packed);
});

test("qloraInit: Q only, B = 0, A bounded by 1/√in; output and backend used as in loftq", () => {
  const output = new Float32Array(96 * 160);
  const calls: string[] = [];
  const spy: KernelBackend = { ...tsBackend, name: "spy", encodeCodebook: (call) => (calls.push("encode"), tsBackend.encodeCodebook(call)) };
  const result = qloraInit(weight, { bits: 4, rank: 8, output, backend: spy });
  assert.equal(result.dequantized.data, output);
  assert.deepEqual(calls, ["encode"]);
  assert.deepEqual(output, loftq(weight, { bits: 4, rank: 8 }).dequantized.data);
  assert.ok(result.loraB.data.every((v) => v === 0));
  assert.ok(result.loraA.data.every((v) => Math.abs(v) <= 1 / Math.sqrt(160)));
  assert.equal(result.history[0]!.error, result.history[0]!.quantError);
  assert.ok(loftq(weight, { bits: 4, rank: 8 }).history[0]!.error < result.history[0]!.error);
});

test("every quantizer runs through loftq", () => {
  for (const [quantizer, bits] of [["nf", 3], ["nf-sym", 2], ["uniform", 4], ["bnb-nf4", 4], ["bnb-fp4", 4], ["int8", 8]] as const) {
    const result = loftq(weight, { quantizer, bits, rank: 4 });
    assert.ok(result.history[0]!.error < result.history[0]!.quantError, quantizer);
  }
  const dq = loftq(weight, { quantizer: "bnb-nf4", doubleQuant: true, rank: 4 });
  assert.ok(dq.quantized.doubleQuant);
});

test("bad input: typed errors, up front", () => {
  const nan = matrix(4, 64, new Float32Array(256));
  nan.data[70] = NaN;
  assert.throws(() => loftq(nan, { rank: 2 }), (e: unknown) => e instanceof NonFiniteError && e.row === 1 && e.col === 6);
  const inf = matrix(4, 64, new Float32Array(256));
  inf.data[3] = -Infinity;
  assert.throws(() => loftq(inf, { rank: 2 }), /non-finite value -Infinity at row 0, column 3/);
  assert.throws(() => loftq(matrix(0, 0), { rank: 1 }), ShapeError);
  assert.throws(() => loftq({ rows: 4, cols: 4, data: new Float32Array(15) }, { rank: 1 }), /needs 16 values, got 15/);
  assert.throws(() => loftq(weight, { rank: 0 }), InvalidArgumentError);
  assert.throws(() => loftq(weight, { rank: 97 }), /rank must be an integer in 1..96/);
  assert.throws(() => loftq(weight, { rank: 2.5 }), InvalidArgumentError);
  assert.throws(() => loftq(weight, { bits: 5 }), /supports bits/);
  assert.throws(() => loftq(weight, { bits: 16 }), InvalidArgumentError);
  assert.throws(() => loftq(weight, { iterations: 0 }), /iterations/);
  assert.throws(() => loftq(weight, { iterations: 1e9 }), /iterations must be an integer in 1..1000/);
  assert.throws(() => loftq(weight, { loraAlpha: -1 }), /loraAlpha/);
  // Compensated factors are divided by √(alpha/r): alpha 1e-300 gave Inf factors, 1e300 all zeros.
  for (const loraAlpha of [1e-300, 1e300]) assert.throws(() => loftq(weight, { rank: 4, loraAlpha }), /outside 1e-12..1000000000000/);
  assert.equal(loftq(weight, { rank: 4, loraAlpha: 1e300, upstreamScaling: true }).scaling, 1e300 / 4);
  assert.throws(() => loftq(weight, { backend: "cuda" }), { name: "BackendUnavailableError" });
  // Options coerced silently before: a fractional or 33-bit seed gave seed 0's bytes.
  for (const seed of [0.7, -1, 2 ** 32, NaN]) assert.throws(() => loftq(weight, { seed }), /seed must be an integer in 0..4294967295/);
  assert.throws(() => loftq(weight, { svd: "bogus" as "auto" }), /svd must be one of auto, exact, randomized/);
  assert.throws(() => loftq(weight, { output: new Float64Array(96 * 160) as unknown as Float32Array }), /output must be a Float32Array/);
  assert.throws(() => loftq(weight, { blockSize: 2 ** 31 }), /blockSize must be an integer in 1..16777216/);
  assert.throws(() => loftq(null as unknown as Matrix), ShapeError);
  assert.throws(() => loftq(weight, null as unknown as object), InvalidArgumentError);
});

test("extreme magnitudes: the same relative result at any scale, a typed error where float32 overflows", () => {
  // The largest seed is valid at every iteration (each iteration's seed wraps into 32 bits).
  assert.equal(loftq(llmLikeWeight(300, 300, { seed: 1 }), { rank: 4, iterations: 3, seed: 0xffffffff }).history.length, 3);
  // 300×300 takes the randomized SVD, whose Rayleigh–Ritz Gram matrix is float32: unscaled it overflowed
  // (NaN adapters) above ~1e19 and lost the adapters' contribution below ~1e-19.
  const base = llmLikeWeight(300, 300, { seed: 7 });
  const reference = loftq(base, { rank: 8, iterations: 2 }).history;
  for (const scale of [2 ** -80, 2 ** 70]) {
    const scaled = matrix(300, 300, base.data.map((x) => x * scale));
    const history = loftq(scaled, { rank: 8, iterations: 2 }).history;
    for (const [i, entry] of history.entries()) {
      assert.ok(Math.abs(entry.error - reference[i]!.error) <= 1e-6 * reference[i]!.error, `scale 2^${Math.log2(scale)}: ${entry.error} vs ${reference[i]!.error}`);
    }
  }
  // Values near float32's largest: W − B·A overflows in iteration 2.
  const huge = matrix(64, 64, base.data.subarray(0, 4096).map((x, i) => (i % 3 === 0 ? Math.sign(x) * 3.4e38 : x * 1e37)));
  assert.throws(() => loftq(huge, { rank: 8, iterations: 2, keepBest: false }), { name: "OutOfRangeError", message: /overflows float32 in iteration/ });
  // Values among float32's subnormals: the randomized SVD's float32 scale factor would overflow (the
  // WebAssembly backends then blamed float32's largest values), so the exact path takes them, on
  // every backend alike, with what relative accuracy the subnormals' few bits allow.
  const subnormal = matrix(300, 300, base.data.map((x) => x * 2 ** -130));
  for (const backend of ["ts", "wasm"]) {
    const error = loftq(subnormal, { rank: 8, backend }).history[0]!.error;
    assert.ok(Math.abs(error - reference[0]!.error) < 0.02 * reference[0]!.error, `${backend}: ${error} vs ${reference[0]!.error}`);
  }
});

test('the package root exports loftq and qloraInit ("import { loftq, qloraInit } from \\"loftq\\"")', async () => {
  const specifier = "loftq"; // resolved through package.json "exports" (self-reference), not by tsc
  const root = (await import(specifier)) as Record<string, unknown>;
  assert.equal(typeof root.loftq, "function");
  assert.equal(typeof root.qloraInit, "function");
  const node = (await import(`${specifier}/node`)) as Record<string, unknown>;
  assert.equal(typeof node.loftq, "function");
});
