import { test } from "node:test";
import assert from "node:assert/strict";
import { runFinetuneExperiment, SMOKE, summarise, curvesSvg } from "./finetune.js";

/** CI smoke run of the fine-tuning experiment: it must run end to end; no claim is asserted on a run this small. */
test("bench/finetune smoke run: pretrain, quantize, fine-tune, perplexities for every method", () => {
  const runs = runFinetuneExperiment(SMOKE, () => {});
  assert.equal(runs.length, SMOKE.methods.length * SMOKE.seeds.length);
  for (const run of runs) assert.ok(Number.isFinite(run.perplexity) && run.perplexity > 1, `${run.method}: ${run.perplexity}`);
  assert.match(summarise(runs), /\| loftq \| 2 \| 1 \|/);
  assert.match(curvesSvg(runs), /<polyline/);
});
