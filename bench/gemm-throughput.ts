/**
 * gemm throughput per backend (a benchmark, not a test):
 *   node dist/bench/gemm-throughput.js [--json FILE]
 * Shapes: square, and the thin products of the LoftQ SVD (R·Ω, Rᵀ·Q with a 24- and 120-column block).
 */
import { writeFileSync } from "node:fs";
import type { KernelBackend } from "../src/kernels/backend.js";
import { tsBackend } from "../src/kernels/ts-backend.js";
import { createWasmBackend } from "../src/kernels/wasm-backend.js";
import { createThreadedBackend } from "../src/node/thread-pool-backend.js";
import { gaussianArray, mulberry32 } from "../src/linalg/random.js";

const SHAPES: Array<{ label: string; transA: boolean; m: number; n: number; k: number }> = [
  { label: "512³", transA: false, m: 512, n: 512, k: 512 },
  { label: "1024³", transA: false, m: 1024, n: 1024, k: 1024 },
  { label: "R·Ω 4096²·24", transA: false, m: 4096, n: 24, k: 4096 },
  { label: "Rᵀ·Q 4096²·24", transA: true, m: 4096, n: 24, k: 4096 },
  { label: "Rᵀ·Q 4096²·120", transA: true, m: 4096, n: 120, k: 4096 },
  { label: "W−B·A 4096²·16", transA: false, m: 4096, n: 4096, k: 16 },
];
const threaded = createThreadedBackend();
const backends: KernelBackend[] = [tsBackend, createWasmBackend(), threaded];
const random = mulberry32(1);
const rows: Array<{ backend: string; shape: string; gflops: number }> = [];
console.log(["shape", ...backends.map((b) => b.name)].map((s) => s.padStart(16)).join(""));
for (const shape of SHAPES) {
  const cells: string[] = [shape.label.padStart(16)];
  for (const backend of backends) {
    const { m, n, k, transA } = shape;
    const a = gaussianArray(m * k, random, backend.allocate(m * k));
    const b = gaussianArray(k * n, random, backend.allocate(k * n));
    const c = backend.allocate(m * n);
    const call = { transA, transB: false, m, n, k, alpha: 1, a, b, beta: 0, c };
    backend.gemm(call);
    const repeats = backend === tsBackend ? 1 : 5;
    const started = performance.now();
    for (let i = 0; i < repeats; i++) backend.gemm(call);
    const gflops = (2 * m * n * k * repeats) / ((performance.now() - started) / 1000) / 1e9;
    rows.push({ backend: backend.name, shape: shape.label, gflops });
    cells.push(`${gflops.toFixed(1)} GFLOP/s`.padStart(16));
    for (const array of [a, b, c]) backend.release(array);
  }
  console.log(cells.join(""));
}
threaded.terminate();
const jsonIndex = process.argv.indexOf("--json");
if (jsonIndex > 0 && process.argv[jsonIndex + 1]) writeFileSync(process.argv[jsonIndex + 1]!, JSON.stringify({ date: new Date().toISOString(), runs: rows }, null, 2) + "\n");
