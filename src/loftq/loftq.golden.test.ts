import { test } from "node:test";
import assert from "node:assert/strict";
import { loftq } from "./loftq.js";
import { matrix, frobeniusDistance, frobeniusNorm } from "../tensor/matrix.js";
import { tsBackend } from "../kernels/ts-backend.js";
import { tensorToFloat32 } from "../io/safetensors.js";
import { unpackCodes } from "../quant/packing.js";
import { loadRefTensors, maxAbsDiff, readJson } from "../../test/helpers/ref-vectors.js";

/**
 * Golden vectors from running PEFT v0.18.1's own loftq_init (pure-torch NFQuantizer, CPU, float32):
 * Q bit-exact at T = 1, B·A within 1e-4 relative, per-iteration errors within 1e-3 relative.
 */
interface ManifestFile {
  file: string;
  bits: number;
  rank: number;
  iters: number;
  per_iter: Array<{ iter: number; err_q: number; err_loftq: number }>;
}

const manifest = readJson<{ files: ManifestFile[] }>("peft/manifest.json");

for (const entry of manifest.files) {
  test(`PEFT golden: ${entry.file}`, (t) => {
    const ref = loadRefTensors(`peft/${entry.file}`);
    const get = (name: string) => tensorToFloat32(ref.tensors.get(name)!);
    const [m, n] = ref.tensors.get("W")!.shape as [number, number];
    const w = matrix(m, n, get("W"));
    const result = loftq(w, { bits: entry.bits, rank: entry.rank, iterations: entry.iters, quantizer: "nf", keepBest: false, backend: tsBackend, svd: "exact" });

    const refQ = get("Q");
    const valueMismatches = countDifferent(result.dequantized.data, refQ);
    const codes = unpackCodes(result.quantized.packed, entry.bits, m * n, "lsb-first");
    const refCodes = unpackCodes(ref.tensors.get("qweight_packed")!.bytes, entry.bits, m * n, "lsb-first");
    const codeFlips = countDifferent(codes, refCodes);
    const maxQDiff = maxAbsDiff(result.dequantized.data, refQ);
    t.diagnostic(`Q: ${valueMismatches} of ${refQ.length} values differ (max |ΔQ| ${maxQDiff.toExponential(2)}), ${codeFlips} codes differ`);
    if (entry.iters === 1) {
      assert.equal(valueMismatches, 0, "Q bit-exact at T = 1");
      assert.deepEqual(result.quantized.packed, ref.tensors.get("qweight_packed")!.bytes, "packed codes bit-exact at T = 1");
      assert.deepEqual(result.quantized.absmax, get("absmax"), "absmax bit-exact at T = 1");
    } else {
      // Later targets W − B·A depend on matmul rounding: absmax moves by ulps, codes (almost) never.
      assert.ok(codeFlips <= refQ.length * 1e-3, `at most 0.1% of codes flip at T = ${entry.iters}`);
      assert.ok(maxQDiff <= 1e-5 * maxAbs(refQ), `Q within 1e-5 of max|Q| at T = ${entry.iters}`);
    }

    const product = (a: Float32Array, b: Float32Array, r: number) => {
      const out = new Float32Array(m * n);
      tsBackend.gemm({ transA: false, transB: false, m, n, k: r, alpha: 1, a: b, b: a, beta: 0, c: out });
      return out;
    };
    const ours = product(result.loraA.data, result.loraB.data, entry.rank);
    const theirs = product(get("lora_A"), get("lora_B"), entry.rank);
    const relative = frobeniusDistance(ours, theirs) / frobeniusNorm(theirs);
    t.diagnostic(`B·A relative difference ${relative.toExponential(2)}`);
    assert.ok(relative < 1e-4, `B·A within 1e-4 relative (got ${relative})`);

    entry.per_iter.forEach((expected, i) => {
      const got = result.history[i]!;
      const dq = Math.abs(got.quantError - expected.err_q) / expected.err_q;
      const de = Math.abs(got.error - expected.err_loftq) / expected.err_loftq;
      t.diagnostic(`iter ${i + 1}: ‖W−Q‖ ${got.quantError.toFixed(6)} (ref ${expected.err_q.toFixed(6)}), ‖W−Q−BA‖ ${got.error.toFixed(6)} (ref ${expected.err_loftq.toFixed(6)})`);
      assert.ok(dq < 1e-3 && de < 1e-3, `iteration ${i + 1} errors within 1e-3 relative`);
    });
  });
}

function maxAbs(values: Float32Array): number {
  let max = 0;
  for (const v of values) max = Math.max(max, Math.abs(v));
  return max;
}

function countDifferent(a: Float32Array | Uint8Array, b: Float32Array | Uint8Array): number {
  let count = 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i]) && a[i] !== b[i]) count++;
  return count;
}
