// WebAssembly SIMD gemm (AssemblyScript, compiled with --runtime stub: raw pointers, no allocation).
//
//   C(i, j) = alpha · Σ_p A(i, p) · B(p, j) + beta · C(i, j)
//   A(i, p) = a[i·aRowStride + p·aColStride]   (covers A and Aᵀ without copies)
//   B(p, j) = b[p·ldb + j]                      (rows of B contiguous: the vector direction)
//   C(i, j) = c[i·ldc + j]
//
// Register tile: 4 rows × 8 columns (8 f32x4 accumulators); K is processed in chunks so the A and
// B panels of a chunk stay in cache. When beta is 0, C's old contents are never read.

const K_CHUNK: i32 = 256;

@inline function loadA(a: usize, i: i32, p: i32, rowStride: i32, colStride: i32): f32 {
  return load<f32>(a + ((<usize>(i * rowStride + p * colStride)) << 2));
}

export function gemm(
  m: i32, n: i32, k: i32, alpha: f32,
  a: usize, aRowStride: i32, aColStride: i32,
  b: usize, ldb: i32,
  beta: f32, c: usize, ldc: i32,
): void {
  if (k == 0) {
    scaleC(m, n, beta, c, ldc);
    return;
  }
  for (let p0: i32 = 0; p0 < k; p0 += K_CHUNK) {
    const p1 = min(p0 + K_CHUNK, k);
    // The first chunk applies beta; later chunks accumulate.
    const chunkBeta: f32 = p0 == 0 ? beta : 1;
    let i: i32 = 0;
    for (; i + 4 <= m; i += 4) {
      let j: i32 = 0;
      for (; j + 8 <= n; j += 8) tile4x8(i, j, p0, p1, alpha, a, aRowStride, aColStride, b, ldb, chunkBeta, c, ldc);
      for (; j < n; j++) for (let r: i32 = 0; r < 4; r++) scalarCell(i + r, j, p0, p1, alpha, a, aRowStride, aColStride, b, ldb, chunkBeta, c, ldc);
    }
    for (; i < m; i++) {
      let j: i32 = 0;
      for (; j + 4 <= n; j += 4) row1x4(i, j, p0, p1, alpha, a, aRowStride, aColStride, b, ldb, chunkBeta, c, ldc);
      for (; j < n; j++) scalarCell(i, j, p0, p1, alpha, a, aRowStride, aColStride, b, ldb, chunkBeta, c, ldc);
    }
  }
}

function scaleC(m: i32, n: i32, beta: f32, c: usize, ldc: i32): void {
  for (let i: i32 = 0; i < m; i++) {
    for (let j: i32 = 0; j < n; j++) {
      const at = c + ((<usize>(i * ldc + j)) << 2);
      store<f32>(at, beta == 0 ? 0 : beta * load<f32>(at));
    }
  }
}

@inline function finish(at: usize, acc: v128, alpha: v128, beta: f32): void {
  let out = f32x4.mul(acc, alpha);
  if (beta != 0) out = f32x4.add(out, f32x4.mul(v128.load(at), f32x4.splat(beta)));
  v128.store(at, out);
}

function tile4x8(
  i: i32, j: i32, p0: i32, p1: i32, alpha: f32,
  a: usize, rs: i32, cs: i32, b: usize, ldb: i32, beta: f32, c: usize, ldc: i32,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  let bRow = b + ((<usize>(p0 * ldb + j)) << 2);
  const bStep = (<usize>ldb) << 2;
  let a0 = a + ((<usize>(i * rs + p0 * cs)) << 2);
  const aRow = (<usize>rs) << 2;
  const aStep = (<usize>cs) << 2;
  for (let p = p0; p < p1; p++) {
    const b0 = v128.load(bRow);
    const b1 = v128.load(bRow, 16);
    const x0 = f32x4.splat(load<f32>(a0));
    const x1 = f32x4.splat(load<f32>(a0 + aRow));
    const x2 = f32x4.splat(load<f32>(a0 + 2 * aRow));
    const x3 = f32x4.splat(load<f32>(a0 + 3 * aRow));
    c00 = f32x4.add(c00, f32x4.mul(x0, b0)); c01 = f32x4.add(c01, f32x4.mul(x0, b1));
    c10 = f32x4.add(c10, f32x4.mul(x1, b0)); c11 = f32x4.add(c11, f32x4.mul(x1, b1));
    c20 = f32x4.add(c20, f32x4.mul(x2, b0)); c21 = f32x4.add(c21, f32x4.mul(x2, b1));
    c30 = f32x4.add(c30, f32x4.mul(x3, b0)); c31 = f32x4.add(c31, f32x4.mul(x3, b1));
    bRow += bStep;
    a0 += aStep;
  }
  const al = f32x4.splat(alpha);
  const row = (<usize>ldc) << 2;
  const at = c + ((<usize>(i * ldc + j)) << 2);
  finish(at, c00, al, beta); finish(at + 16, c01, al, beta);
  finish(at + row, c10, al, beta); finish(at + row + 16, c11, al, beta);
  finish(at + 2 * row, c20, al, beta); finish(at + 2 * row + 16, c21, al, beta);
  finish(at + 3 * row, c30, al, beta); finish(at + 3 * row + 16, c31, al, beta);
}

function row1x4(
  i: i32, j: i32, p0: i32, p1: i32, alpha: f32,
  a: usize, rs: i32, cs: i32, b: usize, ldb: i32, beta: f32, c: usize, ldc: i32,
): void {
  let acc = f32x4.splat(0);
  for (let p = p0; p < p1; p++) {
    acc = f32x4.add(acc, f32x4.mul(f32x4.splat(loadA(a, i, p, rs, cs)), v128.load(b + ((<usize>(p * ldb + j)) << 2))));
  }
  finish(c + ((<usize>(i * ldc + j)) << 2), acc, f32x4.splat(alpha), beta);
}

function scalarCell(
  i: i32, j: i32, p0: i32, p1: i32, alpha: f32,
  a: usize, rs: i32, cs: i32, b: usize, ldb: i32, beta: f32, c: usize, ldc: i32,
): void {
  let acc: f32 = 0;
  for (let p = p0; p < p1; p++) acc += loadA(a, i, p, rs, cs) * load<f32>(b + ((<usize>(p * ldb + j)) << 2));
  const at = c + ((<usize>(i * ldc + j)) << 2);
  store<f32>(at, beta == 0 ? alpha * acc : alpha * acc + beta * load<f32>(at));
}
