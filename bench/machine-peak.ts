/**
 * The fp32 peak of the machine the benches run on, estimated rather than assumed:
 *   peak = cores × clock × flops per cycle per core,
 * with the clock from a dependent chain of one-cycle integer operations (so it is the sustained
 * clock under load, not the nominal one) and the flops per cycle from the SIMD features the guest
 * exposes (/proc/cpuinfo): two FMA pipes of 16 float32 lanes with AVX-512, 8 with AVX2 + FMA,
 * 4 (separate multiply and add) without. A hypervisor that hides AVX-512 halves the peak, whatever
 * the host CPU is.
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

export interface MachinePeak {
  cores: number;
  ghz: number;
  /** Widest float32 SIMD the guest reports: "avx512", "avx2+fma" or "sse". */
  simd: string;
  flopsPerCycle: number;
  gflops: number;
}

const CHAIN_ITERATIONS = 100_000_000;
/** Dependent one-cycle operations per iteration of the clock probe. */
const CHAIN_LENGTH = 8;

function dependentChain(iterations: number, y: number): number {
  let x = 0;
  for (let i = 0; i < iterations; i++) {
    x = (x + y) | 0; x = (x ^ y) | 0; x = (x + y) | 0; x = (x ^ y) | 0;
    x = (x + y) | 0; x = (x ^ y) | 0; x = (x + y) | 0; x = (x ^ y) | 0;
  }
  return x;
}

/** Sustained clock in GHz (best of 3): each iteration is CHAIN_LENGTH dependent single-cycle ops. */
export function measureClockGhz(): number {
  dependentChain(1_000_000, 1);
  let best = 0;
  for (let r = 0; r < 3; r++) {
    const started = performance.now();
    dependentChain(CHAIN_ITERATIONS, r + 3);
    best = Math.max(best, (CHAIN_LENGTH * CHAIN_ITERATIONS) / ((performance.now() - started) / 1000) / 1e9);
  }
  return best;
}

function simdFeatures(): { simd: string; flopsPerCycle: number } {
  let flags = "";
  try {
    flags = readFileSync("/proc/cpuinfo", "utf8").match(/^flags\s*:(.*)$/m)?.[1] ?? "";
  } catch {
    // Not Linux: assume AVX2 + FMA, today's common x86 baseline.
    return { simd: "avx2+fma (assumed)", flopsPerCycle: 32 };
  }
  const has = (flag: string) => new RegExp(`\\b${flag}\\b`).test(flags);
  if (has("avx512f")) return { simd: "avx512", flopsPerCycle: 64 };
  if (has("avx2") && has("fma")) return { simd: "avx2+fma", flopsPerCycle: 32 };
  return { simd: "sse", flopsPerCycle: 16 };
}

export function estimatePeak(): MachinePeak {
  const cores = availableParallelism();
  const ghz = measureClockGhz();
  const { simd, flopsPerCycle } = simdFeatures();
  return { cores, ghz, simd, flopsPerCycle, gflops: cores * ghz * flopsPerCycle };
}

export function describePeak(peak: MachinePeak): string {
  return `fp32 peak ≈ ${peak.gflops.toFixed(0)} GFLOP/s (${peak.cores} cores × ${peak.ghz.toFixed(2)} GHz measured × ${peak.flopsPerCycle} flops/cycle, ${peak.simd})`;
}
