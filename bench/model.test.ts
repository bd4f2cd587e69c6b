import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runModelBench } from "./model.js";

/** CI smoke test of the model benchmark: a 1-block, narrow model end to end. Checks it runs, not how fast. */
test("bench/model runs end to end on a scaled-down model (smoke test, no timing asserted)", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-bench-"));
  try {
    const runs = runModelBench({ layers: 1, hidden: 256, intermediate: 512, vocab: 1000 }, ["nf4-r16-t1", "nf2-r8-t2"], dir, () => {});
    assert.equal(runs.length, 2);
    for (const run of runs) {
      assert.equal(run.layers, 1);
      assert.ok(run.seconds > 0 && run.gflops > 0 && run.peakRssBytes > 0 && run.matricesPerSecond > 0);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
