import { existsSync } from "node:fs";
import { test, after } from "node:test";
import assert from "node:assert/strict";
import type { KernelBackend } from "./backend.js";
import { tsBackend } from "./ts-backend.js";
import { createWasmBackend, defaultKernelVariant, KERNEL_VARIANT_VARIABLE, relaxedSimdSupported, wasmSimdSupported, type WasmBackend } from "./wasm-backend.js";
import { createThreadedBackend } from "../node/thread-pool-backend.js";
import { enableRelaxedSimd } from "../node/relaxed-simd.js";
import { createOrtBackend, ORT_TELEMETRY_VARIABLE, ORT_WIDE_OUTPUT_MIN_INNER, ortInstalled, SCRATCH_MAX_VALUES, TRANSPOSE_STRIP_COLUMNS, TRANSPOSED_COPY_MIN_PRODUCTS } from "../node/ort-backend.js";
import { gaussianArray, mulberry32 } from "../linalg/random.js";
import { createQuantizer } from "../quant/quantizer.js";
import { midpoints, normalFloatTable } from "../quant/tables.js";
import { ulpsAway } from "../../test/helpers/float32-steps.js";
import { encodeHalf } from "../tensor/dtype.js";

/**
 * One suite over every backend, each compared with the plain-TS reference (max |Δ| printed): both
 * WebAssembly builds (baseline SIMD and relaxed SIMD) on one thread, the threaded one (relaxed where the
 * runtime has it) and onnxruntime on top of it.
 */
// This suite covers the relaxed-SIMD build too (on Node 20 that takes V8's flag), before any backend exists.
enableRelaxedSimd();
const threaded = wasmSimdSupported() ? createThreadedBackend(2) : undefined;
after(() => threaded?.terminate());
const ort = threaded && ortInstalled() ? createOrtBackend(threaded, 2) : undefined;
const singleThreaded: WasmBackend[] = threaded
  ? [createWasmBackend("wasm", "simd"), ...(relaxedSimdSupported() ? [createWasmBackend("wasm-relaxed", "relaxed-simd")] : [])]
  : [];
const backends: KernelBackend[] = [tsBackend, ...singleThreaded, ...(threaded ? [threaded] : []), ...(ort ? [ort] : [])];

test("both WebAssembly builds are covered: relaxed SIMD validates here (Node 20 after the V8 flag); LOFTQ_WASM_KERNELS=simd opts out", { skip: threaded ? false : "no WebAssembly SIMD" }, () => {
  assert.ok(relaxedSimdSupported());
  assert.deepEqual(singleThreaded.map((backend) => backend.variant), ["simd", "relaxed-simd"]);
  assert.equal((threaded as unknown as WasmBackend).variant, "relaxed-simd");
  const before = process.env[KERNEL_VARIANT_VARIABLE];
  try {
    process.env[KERNEL_VARIANT_VARIABLE] = "simd";
    assert.equal(defaultKernelVariant(), "simd");
    assert.equal(createWasmBackend().variant, "simd");
    delete process.env[KERNEL_VARIANT_VARIABLE];
    assert.equal(defaultKernelVariant(), "relaxed-simd");
  } finally {
    if (before === undefined) delete process.env[KERNEL_VARIANT_VARIABLE];
    else process.env[KERNEL_VARIANT_VARIABLE] = before;
  }
});

const SHAPES: Array<[number, number, number]> = [
  [0, 3, 4], [3, 0, 4], [2, 3, 0], [1, 1, 1], [3, 5, 7], [17, 33, 9], [64, 64, 64], [130, 70, 50], [5, 700, 300], [2000, 24, 1500], [300, 400, 500],
];

for (const backend of backends) {
  test(`gemm on "${backend.name}" matches the reference in every transpose case`, (t) => {
    const random = mulberry32(17);
    for (const [m, n, k] of SHAPES) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          for (const fromBackend of [false, true]) {
            const make = (length: number) => {
              const array = fromBackend ? backend.allocate(length) : new Float32Array(length);
              return gaussianArray(length, random, array);
            };
            const a = make(m * k);
            const b = make(k * n);
            const c = make(m * n);
            const expected = Float32Array.from(c);
            const alpha = 0.75;
            const beta = m === 17 ? 0 : -0.5;
            if (beta === 0) c.fill(NaN); // beta = 0 must ignore C entirely
            tsBackend.gemm({ transA, transB, m, n, k, alpha, a, b, beta, c: expected });
            backend.gemm({ transA, transB, m, n, k, alpha, a, b, beta, c });
            let diff = 0;
            for (let i = 0; i < expected.length; i++) diff = Math.max(diff, Math.abs(expected[i]! - c[i]!));
            if (!fromBackend) t.diagnostic(`${m}×${n}×${k} transA=${transA} transB=${transB}: max |Δ| ${diff.toExponential(2)}`);
            assert.ok(diff <= 2e-6 * Math.max(1, k), `${backend.name} ${m}×${n}×${k} ${transA}/${transB}: ${diff}`);
            if (fromBackend) for (const array of [a, b, c]) backend.release(array);
          }
        }
      }
    }
  });
}

test("ort: products inside withReadOnly read one copy of the operand; after the scope, its current contents", { skip: ort ? false : "onnxruntime-node is not installed" }, () => {
  const [m, n, k] = [600, 24, 700];
  const random = mulberry32(31);
  const a = gaussianArray(m * k, random, threaded!.allocate(m * k));
  const b = gaussianArray(k * n, random);
  const product = (backend: KernelBackend, transA: boolean) => {
    const c = new Float32Array(transA ? k * n : m * n);
    const x = transA ? gaussianArray(m * n, mulberry32(2)) : b;
    backend.gemm({ transA, transB: false, m: transA ? k : m, n, k: transA ? m : k, alpha: 1, a, b: x, beta: 0, c });
    return c;
  };
  const maxDiff = (x: Float32Array, y: Float32Array) => x.reduce((worst, v, i) => Math.max(worst, Math.abs(v - y[i]!)), 0);
  ort!.withReadOnly!(a, () => {
    for (const transA of [false, true]) assert.ok(maxDiff(product(ort!, transA), product(tsBackend, transA)) < 1e-3);
  });
  a[0] = 100; // outside the scope the backend must not serve a stale copy
  assert.ok(maxDiff(product(ort!, false), product(tsBackend, false)) < 1e-3);
  // Announcing enough transposed products gets A a private transposed copy (made in three column
  // strips here, 700 columns of 600 rows, the last one narrower): the same products, and nothing
  // stale after the scope either.
  assert.ok(TRANSPOSE_STRIP_COLUMNS < k && k % TRANSPOSE_STRIP_COLUMNS !== 0, "the copy takes several strips, the last one partial");
  for (const value of [1, -3]) {
    a[1] = value;
    ort!.withReadOnly!(a, () => {
      for (const transA of [true, false, true]) assert.ok(maxDiff(product(ort!, transA), product(tsBackend, transA)) < 1e-3);
    }, { transposedProducts: TRANSPOSED_COPY_MIN_PRODUCTS });
  }
  threaded!.release(a);
  // onnxruntime's telemetry stays off: its client would have left this file behind.
  assert.equal(process.env[ORT_TELEMETRY_VARIABLE], "1");
  assert.ok(!existsSync(`/tmp/mat-debug-${process.pid}.log`), "onnxruntime telemetry started");
});

test("ort: products with a wide output and a short inner dimension (W − B·A) run on the base backend, thin ones on onnxruntime", { skip: ort ? false : "onnxruntime-node is not installed" }, () => {
  let baseProducts = 0;
  const spy: KernelBackend = { ...threaded!, gemm: (call) => ((baseProducts += 1), threaded!.gemm(call)) };
  const routed = createOrtBackend(spy, 2);
  const random = mulberry32(43);
  const run = (m: number, n: number, k: number) => {
    const a = gaussianArray(m * k, random);
    const b = gaussianArray(k * n, random);
    const cIn = gaussianArray(m * n, random);
    const [c, expected] = [new Float32Array(m * n), new Float32Array(m * n)];
    routed.gemm({ transA: false, transB: false, m, n, k, alpha: -1, a, b, beta: 1, c, cIn });
    threaded!.gemm({ transA: false, transB: false, m, n, k, alpha: -1, a, b, beta: 1, c: expected, cIn });
    assert.ok(c.every((v, i) => Math.abs(v - expected[i]!) < 1e-3), `${m}×${n}×${k}`);
  };
  const side = Math.ceil(Math.sqrt(SCRATCH_MAX_VALUES)) + 1;
  run(side, side, 128);
  assert.equal(baseProducts, 1, "wide output, k = 128, accumulating: the WebAssembly kernel");
  run(4096, 16, 1024);
  assert.equal(baseProducts, 1, "thin output: onnxruntime");
  run(side, side, ORT_WIDE_OUTPUT_MIN_INNER);
  assert.equal(baseProducts, 1, "wide output, long inner dimension: onnxruntime");
  const [a, b, c] = [gaussianArray(side * 128, random), gaussianArray(128 * side, random), new Float32Array(side * side)];
  routed.gemm({ transA: false, transB: false, m: side, n: side, k: 128, alpha: 1, a, b, beta: 0, c });
  assert.equal(baseProducts, 1, "wide output, plain product (no JS pass for alpha, beta): onnxruntime");
});

test("gemm with cIn: C = alpha·A·B + beta·cIn on every backend, cIn untouched, C's old contents ignored", (t) => {
  const random = mulberry32(19);
  for (const backend of backends) {
    for (const [m, n, k] of [[2, 3, 0], [17, 33, 9], [130, 70, 300], [300, 400, 500], [2000, 24, 16]] as const) {
      for (const fromBackend of [false, true]) {
        const make = (length: number) => gaussianArray(length, random, fromBackend ? backend.allocate(length) : new Float32Array(length));
        const a = make(m * k);
        const b = make(k * n);
        const cIn = make(m * n);
        const before = Float32Array.from(cIn);
        const c = make(m * n).fill(NaN);
        const expected = Float32Array.from(cIn);
        tsBackend.gemm({ transA: false, transB: false, m, n, k, alpha: -1, a, b, beta: 1, c: expected });
        backend.gemm({ transA: false, transB: false, m, n, k, alpha: -1, a, b, beta: 1, c, cIn });
        let diff = 0;
        for (let i = 0; i < expected.length; i++) diff = Math.max(diff, Math.abs(expected[i]! - c[i]!));
        if (!fromBackend) t.diagnostic(`${backend.name} ${m}×${n}×${k}: max |Δ| ${diff.toExponential(2)}`);
        assert.ok(diff <= 2e-6 * Math.max(1, k), `${backend.name} ${m}×${n}×${k}: ${diff}`);
        assert.deepEqual(cIn, before, `${backend.name}: cIn changed`);
        if (fromBackend) for (const array of [a, b, cIn, c]) backend.release(array);
      }
    }
  }
});

test("gemm rejects arrays too short for the shape, on every backend", () => {
  for (const backend of backends) {
    assert.throws(() => backend.gemm({ transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, a: new Float32Array(3), b: new Float32Array(4), beta: 0, c: new Float32Array(4) }), { name: "ShapeError" });
  }
});

test("codebook encoding and decoding are bit-identical on every backend (zero blocks, partial blocks, values on the thresholds)", (t) => {
  const random = mulberry32(23);
  const n = 64 * 300 + 37;
  const values = gaussianArray(n, random);
  values.fill(0, 128, 192); // an all-zero block
  // Values exactly on, and one float32 ulp around, every NF4 midpoint (scaled by the block absmax 1).
  for (let i = 0; i < 64; i++) values[256 + i] = i === 0 ? 1 : 0;
  const thresholds = midpoints(normalFloatTable(4));
  thresholds.forEach((threshold, j) => {
    values[320 + 3 * j] = threshold;
    values[320 + 3 * j + 1] = ulpsAway(threshold, 1);
    values[320 + 3 * j + 2] = ulpsAway(threshold, -1);
  });
  values[320 + 63] = -1;
  // A NaN in the vector part and one in the scalar tail of their blocks: absmax skips it, as in the
  // reference, and the NaN itself gets the reference's code.
  values[448 + 5] = NaN;
  // Blocks whose absmax is subnormal (fl32(1/absmax) = Inf for bnb): one in the vector part, and the
  // last partial block, whose final values go through the scalar tail (it read past the lookup there).
  values.fill(0, 512, 576);
  values.set([1e-39, -2e-39, 2e-39, 5e-40], 512);
  for (let i = n - 37; i < n; i++) values[i] = ((i % 3) - 1) * 1e-39;
  values[n - 2] = NaN;
  for (const [kind, bits] of [["nf", 4], ["nf", 3], ["nf", 2], ["nf", 8], ["bnb-nf4", 4], ["uniform", 3]] as const) {
    const quantizer = createQuantizer({ kind, bits });
    const reference = new Float32Array(n);
    const expected = quantizer.encode(values, 1, n, reference, tsBackend);
    for (const backend of backends.slice(1)) {
      const dequantized = new Float32Array(n);
      const got = quantizer.encode(values, 1, n, dequantized, backend);
      assert.deepEqual(got.codes, expected.codes, `${kind}${bits} codes on ${backend.name}`);
      assert.deepEqual(got.scales, expected.scales, `${kind}${bits} absmax on ${backend.name}`);
      assert.deepEqual(dequantized, reference, `${kind}${bits} dequantized on ${backend.name}`);
    }
    for (const backend of backends) {
      // Decoding (codes in and out of backend memory) gives back exactly what the encoder wrote.
      const codes = backend.allocate(Math.ceil(n / 4), false);
      const codeBytes = new Uint8Array(codes.buffer, codes.byteOffset, n);
      codeBytes.set(expected.codes);
      for (const [label, source] of [["codes in backend memory", codeBytes], ["codes elsewhere", expected.codes]] as const) {
        const decoded = new Float32Array(n).fill(7);
        quantizer.decode({ ...expected, codes: source }, 1, n, decoded, backend);
        assert.deepEqual(decoded, reference, `${kind}${bits} decoded on ${backend.name}, ${label}`);
      }
      backend.release(codes);
    }
  }
  t.diagnostic(`${n} values incl. ${thresholds.length * 3} on/around the NF4 midpoints and two subnormal-absmax blocks: identical codes and decodings on ${backends.map((b) => b.name).join(", ")}`);
});

test("residual encoding (W − Q and Σ of its squares in the encoding pass) on every backend, in place too", (t) => {
  const random = mulberry32(37);
  // Long enough for the threaded backend to split it; odd, so the last block is partial.
  const n = (1 << 16) + 64 * 5 + 19;
  const minuend = gaussianArray(n, random);
  const target = gaussianArray(n, random);
  target.fill(0, 640, 704); // an all-zero block
  target[1000] = NaN; // gets the reference's code, so its residual is finite
  let worst = 0;
  for (const [kind, bits] of [["nf", 4], ["nf", 2], ["nf", 8], ["bnb-nf4", 4]] as const) {
    const quantizer = createQuantizer({ kind, bits });
    const q = new Float32Array(n);
    const expected = quantizer.encode(target, 1, n, q, tsBackend);
    const residual = Float32Array.from(minuend, (w, i) => Math.fround(w - q[i]!));
    let expectedSum = 0;
    for (const r of residual) expectedSum += r * r;
    for (const backend of backends) {
      for (const inPlace of [false, true]) {
        const values = backend.allocate(n, false);
        values.set(target);
        const weight = backend.allocate(n, false);
        weight.set(minuend);
        const out = inPlace ? values : backend.allocate(n, false);
        const { encoded, residualSquared } = quantizer.encodeResidual(values, 1, n, weight, out, backend);
        const label = `${kind}${bits} on ${backend.name}${inPlace ? " in place" : ""}`;
        assert.deepEqual(encoded.codes, expected.codes, `${label}: codes`);
        assert.deepEqual(encoded.scales, expected.scales, `${label}: absmax`);
        assert.deepEqual(out, residual, `${label}: residual`);
        assert.ok(Math.abs(residualSquared - expectedSum) <= 1e-12 * expectedSum, `${label}: Σr² ${residualSquared} vs ${expectedSum}`);
        worst = Math.max(worst, Math.abs(residualSquared - expectedSum) / expectedSum);
        for (const array of new Set([values, weight, out])) backend.release(array);
      }
    }
  }
  assert.throws(() => createQuantizer().encodeResidual(target, 1, n, minuend, minuend), /cannot overwrite its minuend/);
  t.diagnostic(`residuals bit-identical on ${backends.map((b) => b.name).join(", ")}; max relative Δ of Σr² ${worst.toExponential(1)}`);
});

test("transpose of a strided block (a column strip of a wider matrix) on every backend", (t) => {
  const random = mulberry32(41);
  // Odd sizes for the scalar edges, ones large enough for the threaded backend to split and for
  // several row tiles of the WebAssembly kernel (with rows and columns left over).
  for (const [rows, cols, lda, offset] of [[1, 1, 1, 0], [5, 3, 7, 2], [33, 18, 40, 5], [1000, 70, 300, 101], [1030, 13, 20, 3], [0, 4, 4, 0]] as const) {
    const a = gaussianArray(rows * lda + offset, random);
    const expected = new Float32Array(rows * cols);
    tsBackend.transpose({ a: a.subarray(offset), rows, cols, lda, out: expected });
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) assert.equal(expected[j * rows + i], a[offset + i * lda + j]);
    for (const backend of backends.slice(1)) {
      const out = new Float32Array(rows * cols).fill(NaN);
      backend.transpose({ a: a.subarray(offset), rows, cols, lda, out });
      assert.deepEqual(out, expected, `${rows}×${cols} (lda ${lda}) on ${backend.name}`);
      // In backend memory too (no staging copies), as the ort backend calls it.
      const inside = backend.allocate(a.length, false);
      inside.set(a);
      const outInside = backend.allocate(rows * cols);
      backend.transpose({ a: inside.subarray(offset), rows, cols, lda, out: outInside });
      assert.deepEqual(outInside, expected, `${rows}×${cols} in backend memory on ${backend.name}`);
      backend.release(inside);
      backend.release(outInside);
    }
  }
  assert.throws(() => tsBackend.transpose({ a: new Float32Array(10), rows: 3, cols: 4, lda: 3, out: new Float32Array(12) }), /row stride/);
  t.diagnostic(`exact on ${backends.map((b) => b.name).join(", ")}`);
});

test("encodeBf16: bit-identical to the scalar conversion on every backend, every bf16 and the rounding edges", (t) => {
  // Every upper half (all signs, exponents, NaN and Inf patterns) with the lower halves that decide the
  // rounding: exact, just below and at the tie, just above it, all ones. Odd count: the scalar tail too.
  const lowers = [0x0000, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234];
  const bits = new Int32Array(65536 * lowers.length + 3);
  for (let upper = 0; upper < 65536; upper++) for (let l = 0; l < lowers.length; l++) bits[upper * lowers.length + l] = (upper << 16) | lowers[l]!;
  const values = new Float32Array(bits.buffer);
  const expected = new Uint16Array(new Uint8Array(encodeHalf(values, "bf16")).buffer);
  for (const backend of backends) {
    for (const inside of [false, true]) {
      const input = inside ? backend.allocate(values.length, false) : values;
      if (inside) input.set(values);
      const outFloats = inside ? backend.allocate(Math.ceil(values.length / 2) + 1, false) : undefined;
      // Inside backend memory, at a 2-byte (not 4-byte aligned) offset too.
      for (const shift of inside ? [0, 1] : [0]) {
        const out = outFloats ? new Uint16Array(outFloats.buffer, outFloats.byteOffset + 2 * shift, values.length) : new Uint16Array(values.length);
        backend.encodeBf16!(input, out);
        assert.deepEqual(out, expected, `${backend.name}${inside ? ` in backend memory, offset ${shift}` : ""}`);
      }
      if (inside) {
        backend.release(input);
        backend.release(outFloats!);
      }
    }
  }
  // Short arrays at every offset: the kernel's scalar tail (and the threaded split's last share) on the
  // rounding edges and NaN payloads.
  const edgeValues = new Float32Array(new Int32Array([0x3f808000, 0x3f818000, 0x3f807fff, 0x7f7fffff, 0x80808000 | 0, 0x7fa00001, 0xffa00001 | 0, 0x00008000, 0x7f800000]).buffer);
  const edgeExpected = new Uint16Array(new Uint8Array(encodeHalf(edgeValues, "bf16")).buffer);
  for (const backend of backends) {
    for (let start = 0; start < 4; start++) {
      for (let length = 1; start + length <= edgeValues.length; length++) {
        const out = new Uint16Array(length);
        backend.encodeBf16!(edgeValues.subarray(start, start + length), out);
        assert.deepEqual(out, edgeExpected.subarray(start, start + length), `${backend.name}: ${length} values from ${start}`);
      }
    }
  }
  assert.throws(() => tsBackend.encodeBf16!(new Float32Array(4), new Uint16Array(3)), /outputs/);
  t.diagnostic(`${values.length} values bit-identical on ${backends.map((b) => b.name).join(", ")}`);
});

test("tridiagonalize and applyReflectors (the eigensolver's float64 steps) on every backend", (t) => {
  const random = mulberry32(43);
  let worst = 0;
  // Sizes around the two-lane loops' edges, a Rayleigh–Ritz-sized one, and a matrix whose first
  // column is zero below the diagonal (the reduction skips that reflector). The lanes add in another
  // order, and later reflectors amplify early rounding differences: tolerances, not equality.
  for (const n of [0, 1, 2, 3, 4, 5, 17, 64, 101]) {
    for (const zeroColumn of n > 3 ? [false, true] : [false]) {
      const b = gaussianArray(n * (n + 3), random);
      const a = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) {
        let sum = 0;
        for (let p = 0; p < n + 3; p++) sum += b[i * (n + 3) + p]! * b[j * (n + 3) + p]!;
        a[i * n + j] = a[j * n + i] = sum;
      }
      if (zeroColumn) for (let i = 1; i < n; i++) a[i * n] = a[i] = 0;
      const run = (backend: KernelBackend) => {
        const out = { a: Float64Array.from(a), n, d: new Float64Array(n), e: new Float64Array(Math.max(n - 1, 0)), reflectors: new Float64Array(n * n).fill(NaN) };
        backend.tridiagonalize!(out);
        return out;
      };
      const expected = run(tsBackend);
      // Eigenvalues only (no reflectors kept): the same tridiagonal form.
      const bare = { a: Float64Array.from(a), n, d: new Float64Array(n), e: new Float64Array(Math.max(n - 1, 0)) };
      tsBackend.tridiagonalize!(bare);
      assert.deepEqual([bare.d, bare.e], [expected.d, expected.e]);
      const scale = Math.max(1, ...expected.d.map(Math.abs));
      const count = Math.min(n, 7);
      const vectors = Float64Array.from(gaussianArray(n * count, random));
      const mapped = Float64Array.from(vectors);
      tsBackend.applyReflectors!({ reflectors: expected.reflectors!, n, x: mapped, count });
      for (const backend of backends.slice(1)) {
        const got = run(backend);
        for (const [name, x, y, tolerance] of [["d", got.d, expected.d, 1e-11 * scale], ["e", got.e, expected.e, 1e-11 * scale], ["reflectors", got.reflectors, expected.reflectors, 1e-9]] as const) {
          const difference = x.reduce((max, value, i) => Math.max(max, Math.abs(value - y[i]!)), 0);
          worst = Math.max(worst, difference / (name === "reflectors" ? 1 : scale));
          assert.ok(difference <= tolerance, `${name} of n = ${n}${zeroColumn ? " (zero column)" : ""} on ${backend.name}: ${difference}`);
        }
        // The same reflectors give the same vectors, bit for bit (the additions are in the same order).
        const x = Float64Array.from(vectors);
        backend.applyReflectors!({ reflectors: expected.reflectors!, n, x, count });
        assert.deepEqual(x, mapped, `applyReflectors n = ${n} on ${backend.name}`);
      }
    }
  }
  assert.throws(() => tsBackend.tridiagonalize!({ a: new Float64Array(3), n: 2, d: new Float64Array(2), e: new Float64Array(1), reflectors: new Float64Array(4) }), /too short/);
  t.diagnostic(`max relative |Δ| of the reduction against the reference: ${worst.toExponential(2)}`);
});

test("sumOfSquares: float64 sum of squares on every backend, split across threads, non-finite on NaN/Inf", () => {
  // Long enough for the threaded backend to split it (PARALLEL_MIN_WORK), odd for the scalar tail.
  const a = gaussianArray((1 << 17) + 3, mulberry32(31));
  const expected = tsBackend.sumOfSquares(a);
  for (const backend of backends) {
    const sum = backend.sumOfSquares(a);
    assert.ok(Math.abs(sum - expected) <= 1e-12 * expected, `${backend.name}: ${sum} vs ${expected}`);
    for (const bad of [NaN, Infinity]) {
      const spoiled = Float32Array.from(a);
      spoiled[(1 << 16) + 1] = bad;
      assert.ok(!Number.isFinite(backend.sumOfSquares(spoiled)), `${backend.name} with ${bad}`);
    }
  }
});

test("subtract returns the float64 sum of squares and the difference on every backend", () => {
  const random = mulberry32(29);
  const a = gaussianArray(1001, random);
  const b = gaussianArray(1001, random);
  const expected = new Float32Array(1001);
  const expectedSum = tsBackend.subtract(a, b, expected);
  for (const backend of backends) {
    const out = new Float32Array(1001);
    const sum = backend.subtract(a, b, out);
    assert.deepEqual(out, expected);
    assert.ok(Math.abs(sum - expectedSum) <= 1e-12 * expectedSum, `${backend.name}: ${sum} vs ${expectedSum}`);
    assert.equal(backend.subtract(a, b), sum);
    // Mismatched lengths are the same typed error on every backend (the reference read NaN past the end).
    assert.throws(() => backend.subtract(a, b.subarray(0, 500)), /subtract: lengths 1001, 500 differ/, backend.name);
  }
  for (const threads of [0, 1.5, NaN]) assert.throws(() => createThreadedBackend(threads), /threads must be a positive integer/);
});


test("a worker thread whose share fails makes the call throw with its message, and the pool goes on", { skip: threaded ? false : "no WebAssembly SIMD" }, () => {
  const pool = createThreadedBackend(2);
  try {
    // A subtraction split in two ranges whose second half (the worker's) lies past the end of memory.
    const n = 1 << 18;
    const start = pool.memory.buffer.byteLength - 4 * (n / 2);
    assert.throws(() => pool.runJob({ kind: "subtract", args: { a: start, b: 0, out: 0, n } }), /subtract kernel failed on a worker thread: kernel worker 1: .*out of bounds/);
    // The next call neither hangs nor reports the old failure.
    const values = pool.allocate(n);
    values.fill(2);
    assert.equal(pool.sumOfSquares(values), 4 * n);
    // A terminated pool refuses work it would have to share instead of waiting forever for its workers.
    pool.terminate();
    assert.throws(() => pool.sumOfSquares(values), /terminated/);
  } finally {
    pool.terminate();
  }
});

test("WebAssembly memory: blocks never overlap, zeroed ones are zero, and calls on ever-new sizes reuse freed memory", { skip: wasmSimdSupported() ? false : "no WebAssembly SIMD" }, () => {
  const backend = createWasmBackend("wasm-heap-test");
  const random = mulberry32(77);
  let largestWorkingSet = 0;
  for (let round = 0; round < 60; round++) {
    // Three live blocks of new sizes each round (LoftQ on a new shape: W, residual, codes), plus a
    // short-lived one freed in between, as a rank-pattern run over many layer shapes would do.
    const lengths = Array.from({ length: 3 }, () => 1 + Math.floor(random() * 400_000));
    const blocks = lengths.map((length) => backend.allocate(length));
    for (const [i, block] of blocks.entries()) {
      assert.ok(block.every((v) => v === 0), `round ${round}: block ${i} is zeroed`);
      block.fill(round * 3 + i + 1);
    }
    const scratch = backend.allocate(1 + Math.floor(random() * 100_000), false);
    scratch.fill(-1);
    backend.release(scratch);
    for (const [i, block] of blocks.entries()) assert.ok(block.every((v) => v === round * 3 + i + 1), `round ${round}: block ${i} was overwritten`);
    largestWorkingSet = Math.max(largestWorkingSet, 4 * lengths.reduce((a, b) => a + b, 0));
    for (const block of blocks.reverse()) backend.release(block);
  }
  // Misuse is refused, not remembered as free memory another allocation would then overwrite.
  const live = backend.allocate(1000);
  backend.release(live);
  assert.throws(() => backend.release(live), /not a live allocation/);
  const whole = backend.allocate(64);
  assert.throws(() => backend.release(whole.subarray(1, 3)), /not a live allocation/);
  backend.release(whole);
  const grown = backend.memory.buffer.byteLength;
  assert.ok(grown <= 2 * largestWorkingSet + 2 ** 20, `memory ${grown} bytes for a largest working set of ${largestWorkingSet}`);
});
