// WebAssembly SIMD kernels (AssemblyScript, compiled with --runtime stub: raw pointers, no allocation).
//
// gemm:
//   C(i, j) = alpha · Σ_p A(i, p) · B(p, j) + beta · C(i, j)
//   A(i, p) = a[i·aRowStride + p·aColStride]   (covers A and Aᵀ without copies)
//   B(p, j) = b[p·ldb + j]                      (rows of B contiguous: the vector direction)
//   C(i, j) = c[i·ldc + j]; beta's operand is read at cIn (same layout; cIn = c for C += …)
//
// Register tile: 4 rows × 8 columns (8 f32x4 accumulators); K is processed in chunks so the A and
// B panels of a chunk stay in cache. When beta is 0, C's old contents are never read.
//
// B is packed per K chunk and block of PACK_COLUMNS columns into `scratch` (GEMM_SCRATCH_BYTES per
// thread), each 8-column tile's panel contiguous. Unpacked, a tile reads one 32-byte piece of each of
// K rows of B, ldb apart; with ldb a multiple of 4 KiB (B = LoftQ's A factor, r×4096) those rows all
// map to the same few cache sets and every load of B missed L1 and L2.

const K_CHUNK: i32 = 256;
const PACK_COLUMNS: i32 = 512;
// K_CHUNK × PACK_COLUMNS floats, the scratch each thread's share of a gemm needs: GEMM_SCRATCH_BYTES
// in src/kernels/wasm-backend.ts.

@inline function loadA(a: usize, i: i32, p: i32, rowStride: i32, colStride: i32): f32 {
  return load<f32>(a + ((<usize>(i * rowStride + p * colStride)) << 2));
}

export function gemm(
  m: i32, n: i32, k: i32, alpha: f32,
  a: usize, aRowStride: i32, aColStride: i32,
  b: usize, ldb: i32,
  beta: f32, c: usize, ldc: i32, cIn: usize, scratch: usize,
): void {
  if (k == 0) {
    scaleC(m, n, beta, c, ldc, cIn);
    return;
  }
  const tiledColumns = m >= 4 ? n & ~7 : 0;
  for (let p0: i32 = 0; p0 < k; p0 += K_CHUNK) {
    const p1 = min(p0 + K_CHUNK, k);
    // The first chunk applies beta to cIn; later chunks accumulate onto C.
    const chunkBeta: f32 = p0 == 0 ? beta : 1;
    const from: usize = p0 == 0 ? cIn : c;
    const panelBytes = (<usize>(p1 - p0)) << 5; // one 8-column tile's panel: (p1 − p0) × 8 floats
    for (let j0: i32 = 0; j0 < tiledColumns; j0 += PACK_COLUMNS) {
      const tiles = min(PACK_COLUMNS, tiledColumns - j0) >> 3;
      packB(b, ldb, p0, p1, j0, tiles, scratch);
      for (let i: i32 = 0; i + 4 <= m; i += 4) {
        for (let t: i32 = 0; t < tiles; t++) {
          tile4x8(i, j0 + (t << 3), p0, p1, alpha, a, aRowStride, aColStride, scratch + (<usize>t) * panelBytes, chunkBeta, c, ldc, from);
        }
      }
    }
    let i: i32 = 0;
    for (; i + 4 <= m; i += 4) {
      for (let j = tiledColumns; j < n; j++) for (let r: i32 = 0; r < 4; r++) scalarCell(i + r, j, p0, p1, alpha, a, aRowStride, aColStride, b, ldb, chunkBeta, c, ldc, from);
    }
    for (; i < m; i++) {
      let j: i32 = 0;
      for (; j + 4 <= n; j += 4) row1x4(i, j, p0, p1, alpha, a, aRowStride, aColStride, b, ldb, chunkBeta, c, ldc, from);
      for (; j < n; j++) scalarCell(i, j, p0, p1, alpha, a, aRowStride, aColStride, b, ldb, chunkBeta, c, ldc, from);
    }
  }
}

/** Copies B[p0..p1) × [j0, j0 + 8·tiles) into `out`, tile by tile, each tile's rows of 8 contiguous. */
function packB(b: usize, ldb: i32, p0: i32, p1: i32, j0: i32, tiles: i32, out: usize): void {
  for (let t: i32 = 0; t < tiles; t++) {
    let source = b + ((<usize>(p0 * ldb + j0 + (t << 3))) << 2);
    const step = (<usize>ldb) << 2;
    for (let p = p0; p < p1; p++) {
      v128.store(out, v128.load(source));
      v128.store(out, v128.load(source, 16), 16);
      source += step;
      out += 32;
    }
  }
}

function scaleC(m: i32, n: i32, beta: f32, c: usize, ldc: i32, cIn: usize): void {
  for (let i: i32 = 0; i < m; i++) {
    for (let j: i32 = 0; j < n; j++) {
      const offset = (<usize>(i * ldc + j)) << 2;
      store<f32>(c + offset, beta == 0 ? 0 : beta * load<f32>(cIn + offset));
    }
  }
}

/** Stores alpha·acc (+ beta · the old value read `shift` bytes away: cIn − c). */
@inline function finish(at: usize, acc: v128, alpha: v128, beta: f32, shift: usize): void {
  let out = f32x4.mul(acc, alpha);
  if (beta != 0) out = f32x4.add(out, f32x4.mul(v128.load(at + shift), f32x4.splat(beta)));
  v128.store(at, out);
}

/**
 * a·b + c for the gemm's register tile. The module is built twice (scripts/compile-wasm.mjs): with
 * baseline SIMD this is a multiply and an add; with relaxed SIMD a fused multiply-add where the CPU
 * has one (10–20 % off the thin products and W − B·A, which are compute-bound here). The tile's edge
 * paths (row1x4, scalarCell) keep the multiply and add: they are deterministic either way.
 */
@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(c, f32x4.mul(a, b));
}

/** One 4×8 tile of C over K rows [p0, p1), B read from a packed panel (8 floats per row). */
function tile4x8(
  i: i32, j: i32, p0: i32, p1: i32, alpha: f32,
  a: usize, rs: i32, cs: i32, panel: usize, beta: f32, c: usize, ldc: i32, from: usize,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  let bRow = panel;
  let a0 = a + ((<usize>(i * rs + p0 * cs)) << 2);
  const aRow = (<usize>rs) << 2;
  const aStep = (<usize>cs) << 2;
  for (let p = p0; p < p1; p++) {
    const b0 = v128.load(bRow);
    const b1 = v128.load(bRow, 16);
    const x0 = v128.load32_splat(a0);
    const x1 = v128.load32_splat(a0 + aRow);
    const x2 = v128.load32_splat(a0 + 2 * aRow);
    const x3 = v128.load32_splat(a0 + 3 * aRow);
    c00 = madd(x0, b0, c00); c01 = madd(x0, b1, c01);
    c10 = madd(x1, b0, c10); c11 = madd(x1, b1, c11);
    c20 = madd(x2, b0, c20); c21 = madd(x2, b1, c21);
    c30 = madd(x3, b0, c30); c31 = madd(x3, b1, c31);
    bRow += 32;
    a0 += aStep;
  }
  const al = f32x4.splat(alpha);
  const row = (<usize>ldc) << 2;
  const at = c + ((<usize>(i * ldc + j)) << 2);
  const shift = from - c; // wraps for from < c; the address sum wraps back
  finish(at, c00, al, beta, shift); finish(at + 16, c01, al, beta, shift);
  finish(at + row, c10, al, beta, shift); finish(at + row + 16, c11, al, beta, shift);
  finish(at + 2 * row, c20, al, beta, shift); finish(at + 2 * row + 16, c21, al, beta, shift);
  finish(at + 3 * row, c30, al, beta, shift); finish(at + 3 * row + 16, c31, al, beta, shift);
}

function row1x4(
  i: i32, j: i32, p0: i32, p1: i32, alpha: f32,
  a: usize, rs: i32, cs: i32, b: usize, ldb: i32, beta: f32, c: usize, ldc: i32, from: usize,
): void {
  let acc = f32x4.splat(0);
  for (let p = p0; p < p1; p++) {
    acc = f32x4.add(acc, f32x4.mul(f32x4.splat(loadA(a, i, p, rs, cs)), v128.load(b + ((<usize>(p * ldb + j)) << 2))));
  }
  finish(c + ((<usize>(i * ldc + j)) << 2), acc, f32x4.splat(alpha), beta, from - c);
}

function scalarCell(
  i: i32, j: i32, p0: i32, p1: i32, alpha: f32,
  a: usize, rs: i32, cs: i32, b: usize, ldb: i32, beta: f32, c: usize, ldc: i32, from: usize,
): void {
  let acc: f32 = 0;
  for (let p = p0; p < p1; p++) acc += loadA(a, i, p, rs, cs) * load<f32>(b + ((<usize>(p * ldb + j)) << 2));
  const offset = (<usize>(i * ldc + j)) << 2;
  store<f32>(c + offset, beta == 0 ? alpha * acc : alpha * acc + beta * load<f32>(from + offset));
}

// ---------------------------------------------------------------------------------------------
// Block-wise codebook quantization (the reference is src/kernels/codebook.ts; results are
// identical). Each block of `blockSize` values gets absmax = max|x|; s = x / absmax ("peft", true
// division) or x · fl32(1/absmax) ("bnb"); code = #{thresholds < s} through the bucket lookup
// (bucket index in f64, exact); for "peft" the thresholds reproduce the float32 argmin exactly.
// Writes codes (u8), absmax (f32 per block) and, when deq != 0, table[code] · absmax there, or with
// minuend != 0 the residual minuend − table[code] · absmax (LoftQ's W − Q, without a pass of its own),
// returning Σ residual² in f64 (0 without minuend). deq may be `values` itself (in place), since each
// block is scanned for its absmax before any of it is written.

const BUCKETS_HALF: f64 = 2048;

export function encodeCodebook(
  values: usize, n: i32, blockSize: i32,
  table: usize, below: usize, inside: usize,
  thresholds: usize, thresholdCount: i32,
  peft: i32, zeroCode: i32, codes: usize, absmax: usize, deq: usize, minuend: usize,
): f64 {
  // Small tables (≤ 16 codes) take four values per step when blocks are whole vectors.
  const vectorised = thresholdCount > 0 && (blockSize & 3) == 0;
  residualSum = f64x2.splat(0);
  let scalarSum: f64 = 0;
  let block: i32 = 0;
  for (let start: i32 = 0; start < n; start += blockSize, block++) {
    const end = min(start + blockSize, n);
    // pmax(m, x) = m < x ? x : m: one maxps (max is a NaN-propagating sequence of ~8 instructions),
    // and a NaN x leaves m unchanged, as the reference's `if (a > max) max = a` does. Four
    // independent chains: the absmax scan was latency-bound and cost as much as the encoding.
    let m0 = f32x4.splat(0); let m1 = f32x4.splat(0); let m2 = f32x4.splat(0); let m3 = f32x4.splat(0);
    let i = start;
    for (; i + 16 <= end; i += 16) {
      const p = values + ((<usize>i) << 2);
      const x0 = f32x4.abs(v128.load(p)); const x1 = f32x4.abs(v128.load(p, 16));
      const x2 = f32x4.abs(v128.load(p, 32)); const x3 = f32x4.abs(v128.load(p, 48));
      m0 = f32x4.pmax(m0, x0); m1 = f32x4.pmax(m1, x1); m2 = f32x4.pmax(m2, x2); m3 = f32x4.pmax(m3, x3);
    }
    for (; i + 4 <= end; i += 4) {
      const x = f32x4.abs(v128.load(values + ((<usize>i) << 2)));
      m0 = f32x4.pmax(m0, x);
    }
    const vmax = f32x4.pmax(f32x4.pmax(m0, m1), f32x4.pmax(m2, m3));
    let peak: f32 = max(max(f32x4.extract_lane(vmax, 0), f32x4.extract_lane(vmax, 1)), max(f32x4.extract_lane(vmax, 2), f32x4.extract_lane(vmax, 3)));
    for (; i < end; i++) {
      const a = abs(load<f32>(values + ((<usize>i) << 2)));
      if (a > peak) peak = a;
    }
    store<f32>(absmax + ((<usize>block) << 2), peak);
    if (peak == 0) {
      const zero: f32 = load<f32>(table + ((<usize>zeroCode) << 2)) * 0;
      for (let j = start; j < end; j++) {
        store<u8>(codes + <usize>j, <u8>zeroCode);
        if (deq != 0) scalarSum += storeOutput(deq, minuend, j, zero);
      }
      continue;
    }
    const reciprocal: f32 = 1 / peak;
    let j = start;
    if (vectorised) j = encodeVectors(values, j, end, peak, reciprocal, table, thresholds, thresholdCount, peft, codes, deq, minuend);
    for (; j < end; j++) {
      const x = load<f32>(values + ((<usize>j) << 2));
      // ±Inf (x · 1/absmax when absmax is below ~2.9e-39) to the end codes, as the vector path's
      // comparisons do; NaN (0 · Inf) stays NaN and takes bucket 0, as in the reference.
      const s: f32 = min<f32>(max<f32>(peft != 0 ? x / peak : x * reciprocal, -1), 1);
      const bucket = <usize>(<i32>((<f64>s + 1.0) * BUCKETS_HALF));
      const code: i32 = <i32>load<u8>(below + bucket) + (s > load<f32>(inside + (bucket << 2)) ? 1 : 0);
      store<u8>(codes + <usize>j, <u8>code);
      if (deq != 0) scalarSum += storeOutput(deq, minuend, j, load<f32>(table + ((<usize>code) << 2)) * peak);
    }
  }
  return f64x2.extract_lane(residualSum, 0) + f64x2.extract_lane(residualSum, 1) + scalarSum;
}

/** Σ of the squared residuals the vector path wrote in this call (an instance, i.e. thread, each). */
let residualSum: v128 = f64x2.splat(0);

/** Writes q (or minuend − q, returning its square) at index j of deq. */
@inline function storeOutput(deq: usize, minuend: usize, j: i32, q: f32): f64 {
  const offset = (<usize>j) << 2;
  if (minuend == 0) {
    store<f32>(deq + offset, q);
    return 0;
  }
  const r: f32 = load<f32>(minuend + offset) - q;
  store<f32>(deq + offset, r);
  return <f64>r * <f64>r;
}

/**
 * Four values per step over [start, end) (stops before a partial vector; returns where it stopped):
 * code = Σₜ (s > thresholdₜ) by SIMD comparisons against every threshold, which equals the bucket
 * lookup's count (for "peft" the thresholds are exact for the float32 argmin, so s = x / absmax
 * needs no second look). NaN lanes compare false everywhere and get code 0, like the scalar path.
 */
function encodeVectors(
  values: usize, start: i32, end: i32, peak: f32, reciprocal: f32,
  table: usize, thresholds: usize, thresholdCount: i32,
  peft: i32, codes: usize, deq: usize, minuend: usize,
): i32 {
  const peakV = f32x4.splat(peak);
  let sum = residualSum;
  const reciprocalV = f32x4.splat(reciprocal);
  // Up to 3 thresholds: count them in a loop. More (NF3, NF4: 7 or 15): count all 15 (padded with
  // +∞, which no value exceeds) unrolled, as a balanced sum of independent comparisons. This beat a
  // branch-free 4-step binary search by bit selects (~15 % on the whole kernel, measured on this
  // machine class): the search's 11 selects form a dependent chain, the 15 comparisons do not.
  const many = thresholdCount > 3;
  const t0 = v128.load32_splat(thresholds); const t1 = v128.load32_splat(thresholds, 4);
  const t2 = v128.load32_splat(thresholds, 8); const t3 = v128.load32_splat(thresholds, 12);
  const t4 = v128.load32_splat(thresholds, 16); const t5 = v128.load32_splat(thresholds, 20);
  const t6 = v128.load32_splat(thresholds, 24); const t7 = v128.load32_splat(thresholds, 28);
  const t8 = v128.load32_splat(thresholds, 32); const t9 = v128.load32_splat(thresholds, 36);
  const t10 = v128.load32_splat(thresholds, 40); const t11 = v128.load32_splat(thresholds, 44);
  const t12 = v128.load32_splat(thresholds, 48); const t13 = v128.load32_splat(thresholds, 52);
  const t14 = v128.load32_splat(thresholds, 56);
  let j = start;
  for (; j + 4 <= end; j += 4) {
    const x = v128.load(values + ((<usize>j) << 2));
    const s = peft != 0 ? f32x4.div(x, peakV) : f32x4.mul(x, reciprocalV);
    let code: v128;
    if (many) {
      // Each comparison is −1 (all bits set) where s exceeds the threshold: the sum is −code.
      const g0 = i32x4.add(f32x4.gt(s, t0), f32x4.gt(s, t1)); const g1 = i32x4.add(f32x4.gt(s, t2), f32x4.gt(s, t3));
      const g2 = i32x4.add(f32x4.gt(s, t4), f32x4.gt(s, t5)); const g3 = i32x4.add(f32x4.gt(s, t6), f32x4.gt(s, t7));
      const g4 = i32x4.add(f32x4.gt(s, t8), f32x4.gt(s, t9)); const g5 = i32x4.add(f32x4.gt(s, t10), f32x4.gt(s, t11));
      const g6 = i32x4.add(f32x4.gt(s, t12), f32x4.gt(s, t13));
      const sum = i32x4.add(i32x4.add(i32x4.add(g0, g1), i32x4.add(g2, g3)), i32x4.add(i32x4.add(g4, g5), i32x4.add(g6, f32x4.gt(s, t14))));
      code = i32x4.neg(sum);
    } else {
      code = i32x4.splat(0);
      for (let t: i32 = 0; t < thresholdCount; t++) code = i32x4.sub(code, f32x4.gt(s, v128.load32_splat(thresholds + ((<usize>t) << 2))));
    }
    // Codes < 16 fit a byte: narrow the four lanes into the low 32 bits and store them at once.
    const halves = i16x8.narrow_i32x4_u(code, code);
    const bytes = i8x16.narrow_i16x8_u(halves, halves);
    v128.store32_lane(codes + <usize>j, bytes, 0);
    if (deq != 0) {
      let q = f32x4.mul(lookup4(table, i32x4.extract_lane(code, 0), i32x4.extract_lane(code, 1), i32x4.extract_lane(code, 2), i32x4.extract_lane(code, 3)), peakV);
      if (minuend != 0) {
        // The residual minuend − Q and its square, in f64 like the subtract kernel.
        q = f32x4.sub(v128.load(minuend + ((<usize>j) << 2)), q);
        const low = f64x2.promote_low_f32x4(q);
        const high = f64x2.promote_low_f32x4(v128.shuffle<f32>(q, q, 2, 3, 0, 1));
        sum = f64x2.add(sum, f64x2.add(f64x2.mul(low, low), f64x2.mul(high, high)));
      }
      v128.store(deq + ((<usize>j) << 2), q);
    }
  }
  residualSum = sum;
  return j;
}

/** table[c0], …, table[c3] in one vector (there is no gather instruction). */
@inline function lookup4(table: usize, c0: i32, c1: i32, c2: i32, c3: i32): v128 {
  let q = f32x4.splat(load<f32>(table + ((<usize>c0) << 2)));
  q = f32x4.replace_lane(q, 1, load<f32>(table + ((<usize>c1) << 2)));
  q = f32x4.replace_lane(q, 2, load<f32>(table + ((<usize>c2) << 2)));
  return f32x4.replace_lane(q, 3, load<f32>(table + ((<usize>c3) << 2)));
}

/** The inverse: out[j] = table[codes[j]] · absmax[j / blockSize], four values per step. */
export function decodeCodebook(codes: usize, n: i32, blockSize: i32, table: usize, absmax: usize, out: usize): void {
  let block: i32 = 0;
  for (let start: i32 = 0; start < n; start += blockSize, block++) {
    const end = min(start + blockSize, n);
    const scale = load<f32>(absmax + ((<usize>block) << 2));
    const scaleV = f32x4.splat(scale);
    let j = start;
    for (; j + 4 <= end; j += 4) {
      const c = codes + <usize>j;
      const q = lookup4(table, <i32>load<u8>(c), <i32>load<u8>(c, 1), <i32>load<u8>(c, 2), <i32>load<u8>(c, 3));
      v128.store(out + ((<usize>j) << 2), f32x4.mul(q, scaleV));
    }
    for (; j < end; j++) store<f32>(out + ((<usize>j) << 2), load<f32>(table + ((<usize>load<u8>(codes + <usize>j)) << 2)) * scale);
  }
}

// ---------------------------------------------------------------------------------------------
// Transpose: out (cols×rows, contiguous) = the rows×cols block at a (row stride lda)ᵀ, 4×4 tiles
// transposed in registers. A caller copying a large matrix out transposed takes it in column strips
// whose transposes are contiguous rows of the result (see src/node/ort-backend.ts).
//
// The 4×4 tiles are visited TRANSPOSE_TILE_ROWS rows × TRANSPOSE_TILE_COLS columns at a time, so only
// that many output rows are written at once, each in a contiguous run. Walking whole rows of A
// instead wrote one 16-byte piece to each of `cols` output rows lying `rows`·4 bytes apart: at 4096
// rows (16 KiB) those all map to the same few cache sets, and a 4096×11008 transpose took 139 ms on
// one thread against 24 ms tiled (4096² in 256-column strips: 34 → 9 ms).

const TRANSPOSE_TILE_ROWS: i32 = 512;
const TRANSPOSE_TILE_COLS: i32 = 8;

/** The 4×4 tile at `at` (row stride rowBytes) transposed to `d` (row stride outRow). */
@inline
function transposeTile4(at: usize, rowBytes: usize, d: usize, outRow: usize): void {
  const x0 = v128.load(at); const x1 = v128.load(at + rowBytes);
  const x2 = v128.load(at + 2 * rowBytes); const x3 = v128.load(at + 3 * rowBytes);
  const t0 = v128.shuffle<f32>(x0, x1, 0, 4, 1, 5); const t1 = v128.shuffle<f32>(x0, x1, 2, 6, 3, 7);
  const t2 = v128.shuffle<f32>(x2, x3, 0, 4, 1, 5); const t3 = v128.shuffle<f32>(x2, x3, 2, 6, 3, 7);
  v128.store(d, v128.shuffle<f32>(t0, t2, 0, 1, 4, 5));
  v128.store(d + outRow, v128.shuffle<f32>(t0, t2, 2, 3, 6, 7));
  v128.store(d + 2 * outRow, v128.shuffle<f32>(t1, t3, 0, 1, 4, 5));
  v128.store(d + 3 * outRow, v128.shuffle<f32>(t1, t3, 2, 3, 6, 7));
}

export function transpose(a: usize, rows: i32, cols: i32, lda: i32, out: usize): void {
  const rowBytes = (<usize>lda) << 2;
  const outRow = (<usize>rows) << 2;
  const rows4 = rows & ~3;
  const cols4 = cols & ~3;
  for (let i0: i32 = 0; i0 < rows4; i0 += TRANSPOSE_TILE_ROWS) {
    const iEnd = min(i0 + TRANSPOSE_TILE_ROWS, rows4);
    for (let j0: i32 = 0; j0 < cols4; j0 += TRANSPOSE_TILE_COLS) {
      const jEnd = min(j0 + TRANSPOSE_TILE_COLS, cols4);
      for (let i = i0; i < iEnd; i += 4) {
        const source = a + (<usize>i) * rowBytes;
        const target = out + ((<usize>i) << 2);
        for (let j = j0; j < jEnd; j += 4) transposeTile4(source + ((<usize>j) << 2), rowBytes, target + (<usize>j) * outRow, outRow);
      }
    }
  }
  // The last cols % 4 columns of the first rows4 rows, then the last rows % 4 rows whole.
  for (let i: i32 = 0; i < rows4; i++) {
    for (let j = cols4; j < cols; j++) store<f32>(out + (<usize>j) * outRow + ((<usize>i) << 2), load<f32>(a + (<usize>i) * rowBytes + ((<usize>j) << 2)));
  }
  for (let i = rows4; i < rows; i++) {
    for (let j: i32 = 0; j < cols; j++) store<f32>(out + (<usize>j) * outRow + ((<usize>i) << 2), load<f32>(a + (<usize>i) * rowBytes + ((<usize>j) << 2)));
  }
}

// ---------------------------------------------------------------------------------------------
// Element-wise pass of the LoftQ loop, the sum of squares accumulated in f64.

/**
 * out = a − b (skipped when out is 0; b = 0 reads as all zeros, for Σa²); returns Σ(a − b)². Four
 * f64x2 accumulators: a single scalar sum serialises on the float64 add latency and made this pass
 * latency-bound, not memory-bound.
 */
export function subtract(a: usize, b: usize, out: usize, n: i32): f64 {
  let s0 = f64x2.splat(0);
  let s1 = f64x2.splat(0);
  let s2 = f64x2.splat(0);
  let s3 = f64x2.splat(0);
  let i: i32 = 0;
  for (; i + 8 <= n; i += 8) {
    const offset = (<usize>i) << 2;
    const d0 = b != 0 ? f32x4.sub(v128.load(a + offset), v128.load(b + offset)) : v128.load(a + offset);
    const d1 = b != 0 ? f32x4.sub(v128.load(a + offset, 16), v128.load(b + offset, 16)) : v128.load(a + offset, 16);
    if (out != 0) {
      v128.store(out + offset, d0);
      v128.store(out + offset, d1, 16);
    }
    const l0 = f64x2.promote_low_f32x4(d0);
    const h0 = f64x2.promote_low_f32x4(v128.shuffle<f32>(d0, d0, 2, 3, 0, 1));
    const l1 = f64x2.promote_low_f32x4(d1);
    const h1 = f64x2.promote_low_f32x4(v128.shuffle<f32>(d1, d1, 2, 3, 0, 1));
    s0 = f64x2.add(s0, f64x2.mul(l0, l0));
    s1 = f64x2.add(s1, f64x2.mul(h0, h0));
    s2 = f64x2.add(s2, f64x2.mul(l1, l1));
    s3 = f64x2.add(s3, f64x2.mul(h1, h1));
  }
  const total = f64x2.add(f64x2.add(s0, s1), f64x2.add(s2, s3));
  let sum: f64 = f64x2.extract_lane(total, 0) + f64x2.extract_lane(total, 1);
  for (; i < n; i++) {
    const offset = (<usize>i) << 2;
    const d: f32 = load<f32>(a + offset) - (b != 0 ? load<f32>(b + offset) : 0);
    if (out != 0) store<f32>(out + offset, d);
    sum += <f64>d * <f64>d;
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// float32 → bfloat16 (reference: bf16Bits in src/tensor/dtype.ts): round to nearest even on the bits,
// a NaN keeps its sign and gets the quiet bit. Eight values per step, narrowed to u16 and stored at once.

export function encodeBf16(values: usize, n: i32, out: usize): void {
  const one = i32x4.splat(1);
  const bias = i32x4.splat(0x7fff);
  const magnitude = i32x4.splat(0x7fffffff);
  const infinity = i32x4.splat(0x7f800000);
  const quiet = i32x4.splat(0x0040);
  let i: i32 = 0;
  for (; i + 8 <= n; i += 8) {
    const at = values + ((<usize>i) << 2);
    const low = bf16Lanes(v128.load(at), one, bias, magnitude, infinity, quiet);
    const high = bf16Lanes(v128.load(at, 16), one, bias, magnitude, infinity, quiet);
    v128.store(out + ((<usize>i) << 1), i16x8.narrow_i32x4_u(low, high));
  }
  for (; i < n; i++) {
    const b = load<i32>(values + ((<usize>i) << 2));
    const half: i32 = (b & 0x7fffffff) > 0x7f800000 ? ((b >>> 16) | 0x0040) & 0xffff : ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16);
    store<u16>(out + ((<usize>i) << 1), <u16>half);
  }
}

/** Four lanes of float32 bits → bf16 bits (in the low 16 bits of each i32 lane). */
@inline function bf16Lanes(b: v128, one: v128, bias: v128, magnitude: v128, infinity: v128, quiet: v128): v128 {
  const rounded = i32x4.shr_u(i32x4.add(i32x4.add(b, bias), v128.and(i32x4.shr_u(b, 16), one)), 16);
  const nan = i32x4.gt_s(v128.and(b, magnitude), infinity);
  return v128.bitselect(v128.or(i32x4.shr_u(b, 16), quiet), rounded, nan);
}

// ---------------------------------------------------------------------------------------------
// The symmetric eigensolver's O(n³) steps in float64 (reference: src/kernels/tridiagonal.ts, same
// arithmetic), two lanes per f64x2 step over the contiguous loops. Only the order of additions in
// each row's A22·v sum differs from the reference (two partial sums); applyReflectors is identical.

/** Householder tridiagonalisation of the lower triangle of a (n×n f64); p: n f64 of scratch. */
export function tridiagonalize(a: usize, n: i32, d: usize, e: usize, reflectors: usize, p: usize): void {
  const rowBytes = (<usize>n) << 3;
  memory.fill(reflectors, 0, (<usize>n) * rowBytes);
  for (let k: i32 = 0; k < n - 2; k++) {
    const column = (<usize>k) << 3;
    let norm: f64 = 0;
    for (let i = k + 1; i < n; i++) {
      const x = load<f64>(a + (<usize>i) * rowBytes + column);
      norm += x * x;
    }
    norm = sqrt<f64>(norm);
    store<f64>(d + column, load<f64>(a + (<usize>k) * rowBytes + column));
    if (norm == 0) {
      store<f64>(e + column, 0);
      continue;
    }
    const alpha: f64 = load<f64>(a + (<usize>(k + 1)) * rowBytes + column) > 0 ? -norm : norm;
    const v = reflectors + (<usize>k) * rowBytes;
    const first = (<usize>(k + 1)) << 3;
    const tail = (<usize>(n - k - 1)) << 3;
    let vNorm: f64 = 0;
    for (let i = k + 1; i < n; i++) {
      const value = load<f64>(a + (<usize>i) * rowBytes + column) - (i == k + 1 ? alpha : 0);
      store<f64>(v + ((<usize>i) << 3), value);
      vNorm += value * value;
    }
    vNorm = sqrt<f64>(vNorm);
    store<f64>(e + column, alpha);
    if (vNorm == 0) {
      memory.fill(v + first, 0, tail);
      continue;
    }
    for (let i = k + 1; i < n; i++) store<f64>(v + ((<usize>i) << 3), load<f64>(v + ((<usize>i) << 3)) / vNorm);
    // p = A22·v from the lower triangle: each a_ij (j < i) adds to p_i and, for a_ji, to p_j.
    memory.fill(p + first, 0, tail);
    for (let i = k + 1; i < n; i++) {
      const row = a + (<usize>i) * rowBytes;
      const vi = load<f64>(v + ((<usize>i) << 3));
      const viV = f64x2.splat(vi);
      let sumV = f64x2.splat(0);
      let j = k + 1;
      for (; j + 2 <= i; j += 2) {
        const at = (<usize>j) << 3;
        const aij = v128.load(row + at);
        sumV = f64x2.add(sumV, f64x2.mul(aij, v128.load(v + at)));
        v128.store(p + at, f64x2.add(v128.load(p + at), f64x2.mul(aij, viV)));
      }
      let sum = load<f64>(row + ((<usize>i) << 3)) * vi + (f64x2.extract_lane(sumV, 0) + f64x2.extract_lane(sumV, 1));
      for (; j < i; j++) {
        const at = (<usize>j) << 3;
        const aij = load<f64>(row + at);
        sum += aij * load<f64>(v + at);
        store<f64>(p + at, load<f64>(p + at) + aij * vi);
      }
      store<f64>(p + ((<usize>i) << 3), load<f64>(p + ((<usize>i) << 3)) + sum);
    }
    let vp: f64 = 0;
    for (let i = k + 1; i < n; i++) vp += load<f64>(v + ((<usize>i) << 3)) * load<f64>(p + ((<usize>i) << 3));
    for (let i = k + 1; i < n; i++) {
      const at = (<usize>i) << 3;
      store<f64>(p + at, load<f64>(p + at) - vp * load<f64>(v + at));
    }
    // A22 −= 2(v·qᵀ + q·vᵀ) on the lower triangle (q = p now). 2·(x + y) = 2x + 2y exactly.
    for (let i = k + 1; i < n; i++) {
      const row = a + (<usize>i) * rowBytes;
      const vi2 = 2 * load<f64>(v + ((<usize>i) << 3));
      const qi2 = 2 * load<f64>(p + ((<usize>i) << 3));
      const vi2V = f64x2.splat(vi2);
      const qi2V = f64x2.splat(qi2);
      let j = k + 1;
      for (; j + 2 <= i + 1; j += 2) {
        const at = (<usize>j) << 3;
        const update = f64x2.add(f64x2.mul(vi2V, v128.load(p + at)), f64x2.mul(qi2V, v128.load(v + at)));
        v128.store(row + at, f64x2.sub(v128.load(row + at), update));
      }
      for (; j <= i; j++) {
        const at = (<usize>j) << 3;
        store<f64>(row + at, load<f64>(row + at) - (vi2 * load<f64>(p + at) + qi2 * load<f64>(v + at)));
      }
    }
  }
  if (n >= 2) {
    store<f64>(d + ((<usize>(n - 2)) << 3), load<f64>(a + (<usize>(n - 2)) * rowBytes + ((<usize>(n - 2)) << 3)));
    store<f64>(e + ((<usize>(n - 2)) << 3), load<f64>(a + (<usize>(n - 1)) * rowBytes + ((<usize>(n - 2)) << 3)));
  }
  if (n >= 1) store<f64>(d + ((<usize>(n - 1)) << 3), load<f64>(a + (<usize>(n - 1)) * rowBytes + ((<usize>(n - 1)) << 3)));
}

/** x (n×count f64, row-major) ← H_0·…·H_{n−3}·x, the last reflector first; dots: count f64 of scratch. */
export function applyReflectors(reflectors: usize, n: i32, x: usize, count: i32, dots: usize): void {
  const rowBytes = (<usize>n) << 3;
  const xRow = (<usize>count) << 3;
  for (let k = n - 3; k >= 0; k--) {
    const v = reflectors + (<usize>k) * rowBytes;
    // dots = vᵀ·x, then x −= 2·v·dotsᵀ (adding −(2vᵢ)·dots is exactly subtracting (2vᵢ)·dots).
    memory.fill(dots, 0, xRow);
    for (let i = k + 1; i < n; i++) axpy(dots, x + (<usize>i) * xRow, load<f64>(v + ((<usize>i) << 3)), count);
    for (let i = k + 1; i < n; i++) axpy(x + (<usize>i) * xRow, dots, -2 * load<f64>(v + ((<usize>i) << 3)), count);
  }
}

/** y ← y + alpha·x over `count` f64 values, two lanes per step. */
@inline function axpy(y: usize, x: usize, alpha: f64, count: i32): void {
  const alphaV = f64x2.splat(alpha);
  let j: i32 = 0;
  for (; j + 2 <= count; j += 2) {
    const at = (<usize>j) << 3;
    v128.store(y + at, f64x2.add(v128.load(y + at), f64x2.mul(alphaV, v128.load(x + at))));
  }
  for (; j < count; j++) {
    const at = (<usize>j) << 3;
    store<f64>(y + at, load<f64>(y + at) + alpha * load<f64>(x + at));
  }
}

// ---------------------------------------------------------------------------------------------
// Benchmark probe (not used by the library): the SIMD ceiling of this runtime on this CPU.

/**
 * `iterations` rounds of multiply-then-add on 12 independent f32x4 registers (enough chains to hide
 * the add and multiply latencies), no memory traffic: 96 flops per round. What any gemm kernel in
 * this WebAssembly could reach at best (there is no fused multiply-add in baseline SIMD).
 */
export function simdCeiling(iterations: i32): f32 {
  const m = f32x4.splat(0.99999);
  const c = f32x4.splat(0.00001);
  let a0 = f32x4.splat(1.0); let a1 = f32x4.splat(1.1); let a2 = f32x4.splat(1.2); let a3 = f32x4.splat(1.3);
  let a4 = f32x4.splat(1.4); let a5 = f32x4.splat(1.5); let a6 = f32x4.splat(1.6); let a7 = f32x4.splat(1.7);
  let a8 = f32x4.splat(1.8); let a9 = f32x4.splat(1.9); let a10 = f32x4.splat(2.0); let a11 = f32x4.splat(2.1);
  for (let i = 0; i < iterations; i++) {
    a0 = f32x4.add(f32x4.mul(a0, m), c); a1 = f32x4.add(f32x4.mul(a1, m), c); a2 = f32x4.add(f32x4.mul(a2, m), c);
    a3 = f32x4.add(f32x4.mul(a3, m), c); a4 = f32x4.add(f32x4.mul(a4, m), c); a5 = f32x4.add(f32x4.mul(a5, m), c);
    a6 = f32x4.add(f32x4.mul(a6, m), c); a7 = f32x4.add(f32x4.mul(a7, m), c); a8 = f32x4.add(f32x4.mul(a8, m), c);
    a9 = f32x4.add(f32x4.mul(a9, m), c); a10 = f32x4.add(f32x4.mul(a10, m), c); a11 = f32x4.add(f32x4.mul(a11, m), c);
  }
  const sum = f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7)), f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11))));
  return f32x4.extract_lane(sum, 0) + f32x4.extract_lane(sum, 1) + f32x4.extract_lane(sum, 2) + f32x4.extract_lane(sum, 3);
}
