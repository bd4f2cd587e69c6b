/**
 * gemm throughput per backend (a benchmark, not a test). Shapes: square, and the products of the LoftQ loop (R·Ω and Rᵀ·Q with a 24- and 120-column block,
 * W − B·A at r = 16). The `ort` column times the Krylov shapes inside `withReadOnly`, as the SVD
 * runs them (the residual copied out of shared memory once, not per product). Beside it: the SIMD
 * ceiling of one WebAssembly thread (register-only multiply-adds) and the wasm backend's share of
 * it, and the fastest backend's share of the machine's estimated fp32 peak (bench/machine-peak.ts).
 */
import "../src/cli/relaxed-simd-setup.js"; // first: relaxed SIMD on before any kernel backend exists
import { writeFileSync } from "node:fs";
import type { KernelBackend } from "../src/kernels/backend.js";
import { tsBackend } from "../src/kernels/ts-backend.js";
import { createWasmBackend, instantiateKernels, kernelModule, relaxedSimdSupported } from "../src/kernels/wasm-backend.js";
import { createThreadedBackend } from "../src/node/thread-pool-backend.js";
import { createOrtBackend, ortInstalled } from "../src/node/ort-backend.js";
import { gaussianArray, mulberry32 } from "../src/linalg/random.js";
import { describePeak, estimatePeak } from "./machine-peak.js";
import { parseBenchArgs } from "./bench-args.js";

const SHAPES: Array<{ label: string; transA: boolean; m: number; n: number; k: number }> = [
  { label: "512³", transA: false, m: 512, n: 512, k: 512 },
  { label: "1024³", transA: false, m: 1024, n: 1024, k: 1024 },
  { label: "R·Ω 4096²·24", transA: false, m: 4096, n: 24, k: 4096 },
  { label: "Rᵀ·Q 4096²·24", transA: true, m: 4096, n: 24, k: 4096 },
  { label: "Rᵀ·Q 4096²·120", transA: true, m: 4096, n: 120, k: 4096 },
  { label: "W−B·A 4096²·16", transA: false, m: 4096, n: 4096, k: 16 },
];

/** GFLOP/s of the register-only SIMD loop on one thread (best of 5). */
export function wasmCeilingGflops(): number {
  const kernel = instantiateKernels(kernelModule(), new WebAssembly.Memory({ initial: 1, maximum: 65536, shared: true }));
  const iterations = 20_000_000;
  kernel.simdCeiling(1000);
  let best = 0;
  for (let r = 0; r < 5; r++) {
    const started = performance.now();
    kernel.simdCeiling(iterations);
    best = Math.max(best, (96 * iterations) / ((performance.now() - started) / 1000) / 1e9);
  }
  return best;
}

if (process.argv[1]?.endsWith("bench/gemm-throughput.js")) {
  const USAGE = `
node dist/bench/gemm-throughput.js [--json FILE]

GFLOP/s of every kernel backend on square products and the LoftQ loop's products.`;
  const args = parseBenchArgs(USAGE, { json: { type: "string", default: "" } });
  const threaded = createThreadedBackend();
  // "wasm": the baseline-SIMD build (what the ceiling column compares), "wasm-relaxed": the build with
  // the fused multiply-add; wasm-threads runs the relaxed one where the runtime has it.
  const single = [createWasmBackend("wasm", "simd"), ...(relaxedSimdSupported() ? [createWasmBackend("wasm-relaxed", "relaxed-simd")] : [])];
  const backends: KernelBackend[] = [tsBackend, ...single, threaded, ...(ortInstalled() ? [createOrtBackend(threaded)] : [])];
  const random = mulberry32(1);
  const ceiling = wasmCeilingGflops();
  const peak = estimatePeak();
  const rows: Array<{ backend: string; shape: string; gflops: number }> = [];
  console.log(`WebAssembly SIMD ceiling, one thread: ${ceiling.toFixed(1)} GFLOP/s (register-only multiply + add)`);
  console.log(`${describePeak(peak)}\n`);
  console.log(["shape", ...backends.map((b) => b.name), "wasm/ceiling", "best/peak"].map((s) => s.padStart(16)).join(""));
  for (const shape of SHAPES) {
    const cells: string[] = [shape.label.padStart(16)];
    let wasmGflops = 0;
    let bestGflops = 0;
    for (const backend of backends) {
      const { m, n, k, transA } = shape;
      const a = gaussianArray(m * k, random, backend.allocate(m * k));
      const b = gaussianArray(k * n, random, backend.allocate(k * n));
      const c = backend.allocate(m * n);
      const call = { transA, transB: false, m, n, k, alpha: 1, a, b, beta: 0, c };
      const repeats = backend === tsBackend ? 1 : 5;
      const time = () => {
        backend.gemm(call);
        const started = performance.now();
        for (let i = 0; i < repeats; i++) backend.gemm(call);
        return (performance.now() - started) / 1000;
      };
      const seconds = backend.withReadOnly ? backend.withReadOnly(a, time) : time();
      const gflops = (2 * m * n * k * repeats) / seconds / 1e9;
      if (backend.name === "wasm") wasmGflops = gflops;
      bestGflops = Math.max(bestGflops, gflops);
      rows.push({ backend: backend.name, shape: shape.label, gflops });
      cells.push(`${gflops.toFixed(1)} GFLOP/s`.padStart(16));
      for (const array of [a, b, c]) backend.release(array);
    }
    cells.push(`${((wasmGflops / ceiling) * 100).toFixed(0)} %`.padStart(16));
    cells.push(`${((bestGflops / peak.gflops) * 100).toFixed(0)} %`.padStart(16));
    console.log(cells.join(""));
  }
  threaded.terminate();
  if (args.json) {
    writeFileSync(args.json, JSON.stringify({ date: new Date().toISOString(), wasmCeilingGflops: ceiling, peak, runs: rows }, null, 2) + "\n");
  }
}
