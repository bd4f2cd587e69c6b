import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runFinetuneExperiment, SMOKE, summarise, curvesSvg } from "./finetune.js";

/** CI smoke run of the fine-tuning experiment: it must run end to end; no claim is asserted on a run this small. */
test("bench/finetune smoke run: pretrain, quantize, fine-tune on worker processes, perplexities for every method", async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), "loftq-finetune-cache-"));
  const { runs, basePerplexity } = await runFinetuneExperiment(SMOKE, { onLine: () => {}, cacheDir }).finally(() => rmSync(cacheDir, { recursive: true, force: true }));
  assert.ok(Number.isFinite(basePerplexity));
  assert.equal(runs.length, SMOKE.methods.length * SMOKE.seeds.length * SMOKE.ranks.length);
  for (const run of runs) assert.ok(Number.isFinite(run.perplexity) && run.perplexity > 1, `${run.method}: ${run.perplexity}`);
  assert.match(summarise(runs), /\| loftq \| 2 \| 1 \| 4 \|/);
  assert.match(curvesSvg(runs), /<polyline/);
});
