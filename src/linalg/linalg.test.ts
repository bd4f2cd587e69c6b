import { test } from "node:test";
import assert from "node:assert/strict";
import { householderQr } from "./householder-qr.js";
import { jacobiSvd } from "./jacobi-svd.js";
import { singularValues, optimalLowRankError, symmetricEigenvalues, topEigenpairs } from "./symmetric-eigenvalues.js";
import { truncatedSvd, V_ORTHONORMALITY_TOLERANCE } from "./truncated-svd.js";
import { orthonormalizeBlock } from "./block-orthonormalize.js";
import { exactTruncatedSvd } from "./exact-truncated-svd.js";
import { gaussianArray, mulberry32 } from "./random.js";
import { createQuantizer } from "../quant/quantizer.js";
import { llmLikeWeight } from "../synthetic/llm-like-weight.js";
import { frobeniusNorm, type Matrix } from "../tensor/matrix.js";
import { tsBackend } from "../kernels/ts-backend.js";
import { createWasmBackend, wasmSimdSupported } from "../kernels/wasm-backend.js";

function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  return gaussianArray(rows * cols, mulberry32(seed));
}

/** ‖M − U·diag(S)·Vᵀ‖_F for row-major U (m×r), V (n×r). */
function reconstructionError(m: Matrix, u: ArrayLike<number>, s: ArrayLike<number>, v: ArrayLike<number>, rank: number): number {
  let sum = 0;
  for (let i = 0; i < m.rows; i++) {
    for (let j = 0; j < m.cols; j++) {
      let value = 0;
      for (let p = 0; p < rank; p++) value += u[i * rank + p]! * s[p]! * v[j * rank + p]!;
      const d = m.data[i * m.cols + j]! - value;
      sum += d * d;
    }
  }
  return Math.sqrt(sum);
}

function orthonormalityError(q: ArrayLike<number>, rows: number, cols: number): number {
  let worst = 0;
  for (let a = 0; a < cols; a++) {
    for (let b = 0; b < cols; b++) {
      let dot = 0;
      for (let i = 0; i < rows; i++) dot += q[i * cols + a]! * q[i * cols + b]!;
      worst = Math.max(worst, Math.abs(dot - (a === b ? 1 : 0)));
    }
  }
  return worst;
}

test("Householder QR: Q orthonormal and Q·R = A, rank-deficient input included", () => {
  const a = randomMatrix(50, 7, 1);
  for (let i = 0; i < 50; i++) a[i * 7 + 6] = a[i * 7 + 2]!; // a repeated column
  const { q, r } = householderQr(a, 50, 7);
  assert.ok(orthonormalityError(q, 50, 7) < 1e-12);
  let worst = 0;
  for (let i = 0; i < 50; i++) {
    for (let j = 0; j < 7; j++) {
      let sum = 0;
      for (let p = 0; p < 7; p++) sum += q[i * 7 + p]! * r[p * 7 + j]!;
      worst = Math.max(worst, Math.abs(sum - a[i * 7 + j]!));
    }
  }
  assert.ok(worst < 1e-5, `reconstruction ${worst}`);
});

test("Jacobi SVD: exact reconstruction, orthonormal factors, descending values, fixed signs (tall and wide)", () => {
  for (const [rows, cols] of [[40, 12], [12, 40], [1, 5], [9, 9]] as const) {
    const data = randomMatrix(rows, cols, rows * 100 + cols);
    const svd = jacobiSvd(data, rows, cols);
    const k = Math.min(rows, cols);
    assert.ok(reconstructionError({ rows, cols, data }, svd.u, svd.s, svd.v, k) < 1e-5 * frobeniusNorm(data));
    assert.ok(orthonormalityError(svd.u, rows, k) < 1e-10);
    assert.ok(orthonormalityError(svd.v, cols, k) < 1e-10);
    for (let i = 1; i < k; i++) assert.ok(svd.s[i - 1]! >= svd.s[i]!);
    for (let j = 0; j < k; j++) {
      let best = 0;
      for (let i = 0; i < rows; i++) if (Math.abs(svd.u[i * k + j]!) > Math.abs(best)) best = svd.u[i * k + j]!;
      assert.ok(best > 0, "largest entry of each left vector is positive");
    }
  }
});

test("tridiagonal eigen solver agrees with Jacobi singular values; top eigenvectors are eigenvectors", () => {
  const rows = 80;
  const cols = 30;
  const data = randomMatrix(rows, cols, 3);
  const reference = jacobiSvd(data, rows, cols).s;
  const fromGram = singularValues(data, rows, cols);
  for (let i = 0; i < cols; i++) assert.ok(Math.abs(fromGram[i]! - reference[i]!) < 1e-9 * reference[0]!, `σ${i}`);
  const gram = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) {
    let sum = 0;
    for (let p = 0; p < rows; p++) sum += data[p * cols + i]! * data[p * cols + j]!;
    gram[i * cols + j] = sum;
  }
  const eigen = symmetricEigenvalues(gram, cols);
  assert.ok(Math.abs(eigen[0]! - reference[0]! ** 2) < 1e-9 * eigen[0]!);
  const { values, vectors } = topEigenpairs(gram, cols, 5);
  // Orthonormal vectors, and the WebAssembly kernels give the same pairs.
  for (let j = 0; j < 5; j++) for (let l = 0; l <= j; l++) {
    let dot = 0;
    for (let i = 0; i < cols; i++) dot += vectors[i * 5 + j]! * vectors[i * 5 + l]!;
    assert.ok(Math.abs(dot - (j === l ? 1 : 0)) < 1e-12, `v${j}·v${l} = ${dot}`);
  }
  if (wasmSimdSupported()) {
    const wasm = topEigenpairs(gram, cols, 5, createWasmBackend());
    for (let j = 0; j < 5; j++) assert.ok(Math.abs(wasm.values[j]! - values[j]!) < 1e-12 * values[0]!);
    assert.ok(wasm.vectors.every((v, i) => Math.abs(v - vectors[i]!) < 1e-9), "same eigenvectors (signs included)");
  }
  for (let j = 0; j < 5; j++) {
    let residual = 0;
    for (let i = 0; i < cols; i++) {
      let sum = 0;
      for (let p = 0; p < cols; p++) sum += gram[i * cols + p]! * vectors[p * 5 + j]!;
      residual = Math.max(residual, Math.abs(sum - values[j]! * vectors[i * 5 + j]!));
    }
    assert.ok(residual < 1e-9 * values[0]!, `eigenpair ${j} residual ${residual}`);
  }
});

test("randomized truncated SVD is within 0.1% of the Eckart–Young optimum on LoftQ residuals (up to 1024 wide)", (t) => {
  const quantizer = createQuantizer({ kind: "nf", bits: 4 });
  for (const [rows, cols, rank] of [[256, 1024, 16], [512, 512, 32], [1024, 256, 8]] as const) {
    const w = llmLikeWeight(rows, cols, { seed: rows + cols });
    const q = new Float32Array(rows * cols);
    quantizer.encode(w.data, rows, cols, q);
    const residual = w.data.map((x, i) => x - q[i]!);
    const optimum = optimalLowRankError(singularValues(residual, rows, cols), rank);
    const svd = truncatedSvd({ rows, cols, data: residual }, { rank, method: "randomized", backend: tsBackend, seed: 1 });
    const error = reconstructionError({ rows, cols, data: residual }, svd.u, svd.s, svd.v, rank);
    t.diagnostic(`${rows}×${cols} r=${rank}: randomized ${error.toFixed(6)} vs optimum ${optimum.toFixed(6)} (+${((error / optimum - 1) * 100).toFixed(4)}%)`);
    assert.ok(error <= optimum * 1.001, `within 0.1%: ${error} vs ${optimum}`);
    const exact = exactTruncatedSvd({ rows, cols, data: residual }, rank);
    const exactError = reconstructionError({ rows, cols, data: residual }, exact.u, exact.s, exact.v, rank);
    assert.ok(Math.abs(exactError - optimum) <= 1e-5 * optimum, `exact path ${exactError} vs ${optimum}`);
  }
});

test("truncated SVD is reproducible for a seed and validates the rank", () => {
  const data = randomMatrix(60, 70, 9);
  const run = () => truncatedSvd({ rows: 60, cols: 70, data }, { rank: 5, method: "randomized", backend: tsBackend, seed: 42 });
  assert.deepEqual(run().u, run().u);
  assert.throws(() => truncatedSvd({ rows: 60, cols: 70, data }, { rank: 61 }), { name: "InvalidArgumentError" });
  assert.throws(() => truncatedSvd({ rows: 60, cols: 70, data }, { rank: 0 }), /rank/);
  const bad: Array<[Partial<Parameters<typeof truncatedSvd>[1]>, RegExp]> = [
    [{ oversample: -5 }, /oversample must be a non-negative integer/],
    [{ oversample: 1.5 }, /oversample/],
    [{ powerIterations: -1 }, /powerIterations must be a non-negative integer/],
    [{ powerIterations: NaN }, /powerIterations/],
    [{ method: "bogus" as "auto" }, /method must be one of/],
    [{ start: new Float32Array(7) }, /start must be an n×k' Float32Array/],
    [{ start: new Float32Array(70 * 5).fill(NaN) }, /truncatedSvd: start has a non-finite value NaN at row 0, column 0/],
  ];
  // Only a start's span matters: huge or tiny columns give the same result as unit ones.
  const start = randomMatrix(70, 5, 10);
  const warm = (scale: number) => truncatedSvd({ rows: 60, cols: 70, data }, { rank: 5, method: "randomized", backend: tsBackend, powerIterations: 1, oversample: 0, start: start.map((x) => x * scale) }).s;
  const unit = warm(1);
  for (const scale of [1e37, 1e-37]) warm(scale).forEach((sigma, j) => assert.ok(Math.abs(sigma - unit[j]!) <= 1e-5 * unit[0]!, `start × ${scale}: σ${j} ${sigma} vs ${unit[j]}`));
  for (const [options, message] of bad) assert.throws(() => truncatedSvd({ rows: 60, cols: 70, data }, { rank: 5, ...options }), message);
  assert.throws(() => truncatedSvd({ rows: 60, cols: 70, data: new Float32Array(100) }, { rank: 5 }), { name: "ShapeError" });
  const nan = data.slice();
  nan[75] = NaN;
  for (const method of ["randomized", "exact"] as const) {
    assert.throws(() => truncatedSvd({ rows: 60, cols: 70, data: nan }, { rank: 5, method, backend: tsBackend }), { name: "NonFiniteError", message: /row 1, column 5/ });
  }
  // Finite, but the float32 Krylov products overflow: an error, not σ = 0.
  const huge = randomMatrix(300, 280, 3).map((x) => Math.tanh(x) * 3e38);
  assert.throws(() => truncatedSvd({ rows: 300, cols: 280, data: huge }, { rank: 5, method: "randomized", backend: tsBackend }), { name: "OutOfRangeError" });
});

test("truncated SVD of a rank-deficient or zero matrix: orthonormal factors, zero singular values", () => {
  const [m, n, r] = [300, 280, 8];
  const random = mulberry32(3);
  const left = gaussianArray(m * 3, random), right = gaussianArray(3 * n, random);
  const rankThree = new Float32Array(m * n);
  tsBackend.gemm({ transA: false, transB: false, m, n, k: 3, alpha: 1, a: left, b: right, beta: 0, c: rankThree });
  for (const [label, data] of [["rank 3", rankThree], ["zero", new Float32Array(m * n)]] as const) {
    for (const method of ["randomized", "exact"] as const) {
      const svd = truncatedSvd({ rows: m, cols: n, data }, { rank: r, method, backend: tsBackend });
      for (const [side, factor, rows] of [["U", svd.u, m], ["V", svd.v, n]] as const) {
        const worst = orthonormalityError(factor, rows, r);
        assert.ok(worst < 1e-4, `${label} ${method}: ${side} orthonormal to ${worst}`);
      }
      const zeros = Array.from(svd.s).filter((sigma) => sigma === 0).length;
      assert.equal(zeros, label === "zero" ? r : r - 3, `${label} ${method}: zero singular values`);
    }
  }
});

test("randomized SVD of a spectrum spanning ten decades: U and V orthonormal to float32 precision, the same values and error as the exact SVD", (t) => {
  const [m, n, rank, planted] = [512, 384, 32, 64];
  const random = mulberry32(3);
  const left = householderQr(gaussianArray(m * planted, random), m, planted).q;
  const right = householderQr(gaussianArray(n * planted, random), n, planted).q;
  // σⱼ = 10^(−10·j/63): the kept 32 span five decades (V = Bᵀ·U_B/σ alone was off by 7e-6 on ts, 3e-5 on wasm).
  const data = new Float32Array(m * n);
  for (let j = 0; j < planted; j++) {
    const sigma = 10 ** ((-10 * j) / (planted - 1));
    for (let i = 0; i < m; i++) for (let c = 0; c < n; c++) data[i * n + c]! += sigma * left[i * planted + j]! * right[c * planted + j]!;
  }
  const matrix = { rows: m, cols: n, data };
  const exact = truncatedSvd(matrix, { rank, method: "exact" });
  for (const backend of [tsBackend, ...(wasmSimdSupported() ? [createWasmBackend()] : [])]) {
    const { u, s, v } = truncatedSvd(matrix, { rank, method: "randomized", backend });
    const loss = Math.max(orthonormalityError(u, m, rank), orthonormalityError(v, n, rank));
    t.diagnostic(`${backend.name}: max |UᵀU − I|, |VᵀV − I| = ${loss.toExponential(2)}`);
    assert.ok(loss <= V_ORTHONORMALITY_TOLERANCE, `${backend.name}: orthogonality loss ${loss}`);
    // Absolute: M's float32 rounding (~ε·σ₁) bounds how well any float32 method pins down σ₃₂ ≈ 1.2e-5·σ₁.
    for (let j = 0; j < rank; j++) assert.ok(Math.abs(s[j]! - exact.s[j]!) <= 1e-6 * exact.s[0]!, `${backend.name}: σ${j} ${s[j]} against ${exact.s[j]}`);
    // ‖M − U·S·Vᵀ‖ as small as the exact factors': orthonormalising V moved no column off its direction.
    const residual = (f: { u: Float32Array; s: Float64Array; v: Float32Array }) => {
      const rest = Float32Array.from(data);
      for (let i = 0; i < m; i++) for (let c = 0; c < n; c++) for (let j = 0; j < rank; j++) rest[i * n + c]! -= f.u[i * rank + j]! * f.s[j]! * f.v[c * rank + j]!;
      return frobeniusNorm(rest);
    };
    assert.ok(residual({ u, s, v }) <= residual(exact) + 1e-6, `${backend.name}: ‖M − U·S·Vᵀ‖ ${residual({ u, s, v })} against ${residual(exact)}`);
  }
});

test("orthonormalizeBlock: orthonormal to float32 precision for well- and ill-conditioned blocks, same span", (t) => {
  const rows = 2000;
  const cols = 12;
  // Well conditioned and columns scaled over 1.3 decades (κ ≈ 20: the float32-Gram CholeskyQR2 on the
  // backend, close to its limit) or six decades then mixed (κ ≈ 1e6: the float64 path, its second
  // round and, near breakdown, Householder take over).
  // The float32 path runs two Gram and two update products on the backend; a refused first round, one.
  for (const [decades, backendProducts] of [[0, 4], [1.3, 4], [6, 1]] as const) {
    const x = randomMatrix(rows, cols, 41 + decades);
    for (let j = 0; j < cols; j++) for (let i = 0; i < rows; i++) x[i * cols + j]! *= 10 ** (-decades * j / (cols - 1));
    for (let i = 0; i < rows; i++) x[i * cols + 1]! += x[i * cols]!;
    const original = Float32Array.from(x);
    let products = 0;
    const counting = { ...tsBackend, gemm: (call: Parameters<typeof tsBackend.gemm>[0]) => (products++, tsBackend.gemm(call)) };
    orthonormalizeBlock(x, rows, cols, [], counting, () => 0);
    assert.equal(products, backendProducts, `κ≈1e${decades}: ${products} backend products`);
    const loss = orthonormalityError(x, rows, cols);
    t.diagnostic(`orthonormalizeBlock κ≈1e${decades}: max |QᵀQ − I| = ${loss.toExponential(2)}`);
    assert.ok(loss < 2e-6, `orthogonality loss ${loss}`);
    // Same span: the original first column lies in span(Q).
    let inside = 0;
    let norm = 0;
    for (let a = 0; a < cols; a++) {
      let dot = 0;
      for (let i = 0; i < rows; i++) dot += x[i * cols + a]! * original[i * cols]!;
      inside += dot * dot;
    }
    for (let i = 0; i < rows; i++) norm += original[i * cols]! ** 2;
    assert.ok(Math.abs(inside / norm - 1) < 1e-5, `span: ${inside / norm}`);
  }
});

test("randomized SVD when the Krylov space stops growing (few nonzero rows, identity, permutation): exact values, orthonormal factors, every backend", (t) => {
  const backends = [tsBackend, ...(wasmSimdSupported() ? [createWasmBackend()] : [])];
  const n = 512;
  const rank = 16;
  // Each case with its exact top singular values (zeros after the listed ones).
  const cases: Array<[string, Float32Array, ArrayLike<number>]> = [];
  // Three nonzero rows (pruned or padded rows, new vocabulary rows): M·Mᵀ·Q lies in span(Q) already.
  const fewRows = new Float32Array(n * n);
  fewRows.set(randomMatrix(3, n, 5));
  cases.push(["3 nonzero rows", fewRows, jacobiSvd(fewRows.subarray(0, 3 * n), 3, n).s]);
  const identity = new Float32Array(n * n);
  for (let i = 0; i < n; i++) identity[i * n + i] = 1;
  cases.push(["identity", identity, new Float64Array(rank).fill(1)]);
  const permutation = new Float32Array(n * n);
  for (let i = 0; i < n; i++) permutation[i * n + ((i * 7 + 3) % n)] = 1;
  cases.push(["permutation", permutation, new Float64Array(rank).fill(1)]);
  for (const [name, data, exact] of cases) {
    const matrix = { rows: n, cols: n, data };
    for (const backend of backends) {
      const { u, s, v } = truncatedSvd(matrix, { rank, method: "randomized", backend });
      for (let j = 0; j < rank; j++) {
        const expected = exact[j] ?? 0;
        assert.ok(Math.abs(s[j]! - expected) <= 1e-4 * Math.max(1, expected), `${name} on ${backend.name}: σ${j} = ${s[j]}, expected ${expected}`);
      }
      const loss = Math.max(orthonormalityError(u, n, rank), orthonormalityError(v, n, rank));
      t.diagnostic(`${name} on ${backend.name}: max |σ − σ_exact| ok, max |UᵀU − I|, |VᵀV − I| = ${loss.toExponential(2)}`);
      assert.ok(loss < 1e-4, `${name} on ${backend.name}: orthogonality loss ${loss}`);
      // What LoftQ relies on: Σσ² never exceeds ‖M‖² (its error is ‖M‖² − Σσ² under a square root).
      const captured = s.reduce((sum, sigma) => sum + sigma * sigma, 0);
      const energy = frobeniusNorm(data) ** 2;
      assert.ok(captured <= energy * (1 + 1e-5), `${name} on ${backend.name}: Σσ² ${captured} > ‖M‖² ${energy}`);
    }
  }
});

test("randomized SVD under a dominant singular value (a large mean) keeps the Krylov directions that leak along σ₁", () => {
  const [m, n, rank] = [768, 1024, 16];
  const random = mulberry32(7);
  const data = Float32Array.from({ length: m * n }, () => 10 + gaussianArray(1, random)[0]! / Math.sqrt(n));
  const backend = wasmSimdSupported() ? createWasmBackend() : tsBackend;
  const exact = truncatedSvd({ rows: m, cols: n, data }, { rank, method: "exact", backend }).s;
  const fast = truncatedSvd({ rows: m, cols: n, data }, { rank, method: "randomized", backend }).s;
  let captured = 0;
  let optimal = 0;
  for (let j = 1; j < rank; j++) {
    captured += fast[j]! ** 2;
    optimal += exact[j]! ** 2;
  }
  // New directions keep ~1e-4 of a column's norm here: treating them as collapsed lost a quarter of this.
  assert.ok(captured / optimal > 0.95, `non-leading energy captured ${captured / optimal} of the optimum`);
});

test("dense float64 QR and SVD at any scale, and U orthonormal for a rank-deficient input", () => {
  const base = [1, 2, 3, 4, 5, 7];
  const reference = jacobiSvd(base, 3, 2).s;
  for (const scale of [1e-170, 1e-200, 1e160, 1]) {
    const a = base.map((x) => x * scale);
    const { q, r } = householderQr(a, 3, 2);
    let residual = 0;
    for (let i = 0; i < 3; i++) for (let j = 0; j < 2; j++) residual = Math.max(residual, Math.abs(q[i * 2]! * r[j]! + q[i * 2 + 1]! * r[2 + j]! - a[i * 2 + j]!) / (7 * scale));
    assert.ok(residual < 1e-14, `QR at scale ${scale}: max |QR − A|/max|A| = ${residual}`);
    const { s } = jacobiSvd(a, 3, 2);
    s.forEach((sigma, j) => assert.ok(Math.abs(sigma / scale - reference[j]!) <= 1e-13 * reference[0]!, `SVD at scale ${scale}: σ${j} = ${sigma}`));
  }
  const { u, s } = jacobiSvd([1, 2, 2, 4, 3, 6], 3, 2);
  assert.ok(s[1]! <= 1e-14 * s[0]!);
  assert.ok(orthonormalityError(u, 3, 2) < 1e-12, "the null column of U is completed");
});

test("sign convention: rows ±v of nearly equal size tie, and every backend picks the first", () => {
  const [m, n] = [300, 400];
  const random = mulberry32(2);
  const data = new Float32Array(m * n);
  for (let i = 2 * n; i < m * n; i++) data[i] = 0.05 * (random() - 0.5);
  for (let j = 0; j < n; j++) {
    const v = random() - 0.5;
    data[j] = 5 * v;
    data[n + j] = -5 * (1 + 6e-8) * v;
  }
  for (const backend of [tsBackend, ...(wasmSimdSupported() ? [createWasmBackend()] : [])]) {
    const { u } = truncatedSvd({ rows: m, cols: n, data }, { rank: 4, method: "randomized", backend });
    assert.ok(u[0]! > 0 && u[4]! < 0, `${backend.name}: u[0,0] = ${u[0]}, u[1,0] = ${u[4]}`);
  }
});

test("orthonormalizeBlock after earlier blocks: collapsed and mutually dependent columns still give [P X] orthonormal", () => {
  const rows = 200;
  const cols = 4;
  const p = Float32Array.from(householderQr(randomMatrix(rows, cols, 3), rows, cols).q);
  const a = randomMatrix(rows, 1, 4);
  const b = randomMatrix(rows, 1, 5);
  const x = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    x[i * cols] = a[i]!;
    x[i * cols + 1] = a[i]!; // dependent on column 0: the block is rank-deficient within itself
    x[i * cols + 2] = p[i * cols]! + p[i * cols + 1]!; // in the earlier span: collapses
    x[i * cols + 3] = b[i]!;
  }
  const random = mulberry32(6);
  orthonormalizeBlock(x, rows, cols, [p], tsBackend, () => gaussianArray(1, random)[0]!);
  const joined = new Float32Array(rows * 2 * cols);
  for (let i = 0; i < rows; i++) {
    joined.set(p.subarray(i * cols, (i + 1) * cols), i * 2 * cols);
    joined.set(x.subarray(i * cols, (i + 1) * cols), i * 2 * cols + cols);
  }
  const loss = orthonormalityError(joined, rows, 2 * cols);
  assert.ok(loss < 1e-6, `max |[P X]ᵀ[P X] − I| = ${loss}`);
});

test("exact SVD: a dominant singular value (a large mean) leaves the trailing ones and the vectors exact, tall and wide", () => {
  const random = mulberry32(11);
  for (const [rows, cols] of [[256, 128], [96, 200]] as const) {
    const data = Float32Array.from({ length: rows * cols }, () => 1000 + gaussianArray(1, random)[0]!);
    const rank = 16;
    const reference = jacobiSvd(data, rows, cols).s;
    const { u, s, v } = exactTruncatedSvd({ rows, cols, data }, rank);
    let worstValue = 0;
    for (let j = 0; j < rank; j++) worstValue = Math.max(worstValue, Math.abs(s[j]! - reference[j]!) / reference[j]!);
    assert.ok(worstValue < 1e-5, `${rows}×${cols}: worst relative singular value error ${worstValue}`);
    for (const [factor, length] of [[u, rows], [v, cols]] as const) {
      for (let j = 0; j < rank; j++) for (let l = 0; l <= j; l++) {
        let dot = 0;
        for (let i = 0; i < length; i++) dot += factor[i * rank + j]! * factor[i * rank + l]!;
        assert.ok(Math.abs(dot - (j === l ? 1 : 0)) < 1e-5, `${rows}×${cols}: column ${j}·${l} = ${dot}`);
      }
    }
  }
});

test("rank-deficient inputs: eigenvectors of a large zero cluster stay orthonormal eigenvectors, LoftQ's reported error is the real one", () => {
  // One nonzero weight: its residual after a 2-bit symmetric NF (no zero level) has rank 3, its 63×63 Gram a 60-fold zero eigenvalue.
  const weight = new Float32Array(63 * 65);
  weight[31 * 65 + 21] = -2.5;
  const quantizer = createQuantizer({ kind: "nf-sym", bits: 2, blockSize: 128 });
  const q = new Float32Array(weight.length);
  quantizer.encode(weight, 63, 65, q, tsBackend);
  const residual = weight.map((x, i) => x - q[i]!);
  const gram = new Float64Array(63 * 63);
  for (let i = 0; i < 63; i++) for (let j = 0; j < 63; j++) {
    let sum = 0;
    for (let p = 0; p < 65; p++) sum += residual[i * 65 + p]! * residual[j * 65 + p]!;
    gram[i * 63 + j] = sum;
  }
  const { values, vectors } = topEigenpairs(gram, 63, 63);
  assert.ok(orthonormalityError(vectors, 63, 63) < 1e-12, `VᵀV = I to ${orthonormalityError(vectors, 63, 63)}`);
  let worstResidual = 0;
  for (let k = 0; k < 63; k++) {
    let squares = 0;
    for (let i = 0; i < 63; i++) {
      let sum = 0;
      for (let j = 0; j < 63; j++) sum += gram[i * 63 + j]! * vectors[j * 63 + k]!;
      squares += (sum - values[k]! * vectors[i * 63 + k]!) ** 2;
    }
    worstResidual = Math.max(worstResidual, Math.sqrt(squares));
  }
  assert.ok(worstResidual < 1e-10 * values[0]!, `‖Gv − λv‖ ≤ ${worstResidual}`);
  // The exact SVD of that residual at full rank reproduces it; an exactly rank-32 matrix gets orthonormal completions.
  const svd = exactTruncatedSvd({ rows: 63, cols: 65, data: residual }, 63);
  assert.ok(reconstructionError({ rows: 63, cols: 65, data: residual }, svd.u, svd.s, svd.v, 63) < 1e-6 * frobeniusNorm(residual));
  const random = mulberry32(3);
  const left = gaussianArray(64 * 32, random);
  const right = gaussianArray(32 * 64, random);
  const lowRank = new Float32Array(64 * 64);
  for (let i = 0; i < 64; i++) for (let j = 0; j < 64; j++) {
    let sum = 0;
    for (let p = 0; p < 32; p++) sum += left[i * 32 + p]! * right[p * 64 + j]!;
    lowRank[i * 64 + j] = sum;
  }
  const full = exactTruncatedSvd({ rows: 64, cols: 64, data: lowRank }, 64);
  assert.ok(orthonormalityError(full.u, 64, 64) < 1e-6 && orthonormalityError(full.v, 64, 64) < 1e-6, "U and V orthonormal, null space completed");
});

test("tiny tridiagonal blocks deflate and the Wilkinson shift never divides 0 by 0 (a constant matrix)", () => {
  const ones = new Float32Array(64 * 64).fill(1);
  const singular = singularValues(ones, 64, 64);
  assert.ok(Math.abs(singular[0]! - 64) < 1e-9 && singular.every((s) => Number.isFinite(s)), `σ = ${singular.slice(0, 2).join(", ")}`);
  assert.ok(singular[1]! < 1e-6);
  const svd = truncatedSvd({ rows: 64, cols: 64, data: ones }, { rank: 1, backend: tsBackend });
  assert.ok(Math.abs(svd.s[0]! - 64) < 1e-4);
});
