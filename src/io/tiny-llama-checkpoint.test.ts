import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { InvalidArgumentError } from "../errors.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TinyLlama } from "../nn/tiny-llama.js";
import { loadLoftqForFineTuning, loadTinyLlama, saveTinyLlama } from "./tiny-llama-checkpoint.js";
import { quantizeCheckpoint } from "./quantize-checkpoint.js";

test("TinyLlama → HF checkpoint → loftq quantize → back into JS with LoftQ adapters", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-tiny-"));
  try {
    const config = { vocabSize: 40, hiddenSize: 64, intermediateSize: 128, layers: 2, heads: 4 };
    const model = new TinyLlama(config, undefined, 1);
    const tokens = Array.from({ length: 24 }, (_, i) => (i * 7) % 40);
    saveTinyLlama(model, join(dir, "model"));
    const reloaded = loadTinyLlama(join(dir, "model"));
    assert.equal(reloaded.loss(tokens), model.loss(tokens), "save/load is exact (float32)");

    const { reports } = quantizeCheckpoint({ input: join(dir, "model"), output: join(dir, "loftq"), bits: 2, rank: 8, iterations: 3, loraAlpha: 16 });
    assert.equal(reports.length, 14);
    const loftq = loadLoftqForFineTuning(join(dir, "loftq"));
    const qOnly = loadTinyLlama(join(dir, "loftq")); // the backbone alone: QLoRA's start
    const full = model.loss(tokens);
    const gapLoftq = Math.abs(loftq.loss(tokens) - full);
    const gapQ = Math.abs(qOnly.loss(tokens) - full);
    assert.ok(gapLoftq < gapQ, `LoftQ start is closer to the full model: ${gapLoftq} vs ${gapQ}`);
    assert.ok(loftq.parameters().every((p) => p.name === "lora_A" || p.name === "lora_B"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loadTinyLlama refuses config sizes that are not integers in range or disagree with the tensors", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-tiny-config-"));
  try {
    saveTinyLlama(new TinyLlama({ vocabSize: 20, hiddenSize: 16, intermediateSize: 32, layers: 2, heads: 2 }, undefined, 1), dir);
    const original = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    for (const [key, value] of [["num_hidden_layers", -1], ["num_hidden_layers", 0], ["num_hidden_layers", "abc"], ["num_hidden_layers", 1.5], ["num_hidden_layers", 1], ["num_hidden_layers", 3], ["num_hidden_layers", 3_000_000], ["rms_norm_eps", "x"], ["hidden_size", null]] as const) {
      writeFileSync(join(dir, "config.json"), JSON.stringify({ ...original, [key]: value }));
      assert.throws(() => loadTinyLlama(dir), (e: unknown) => e instanceof InvalidArgumentError && e.message.includes(key), `${key} = ${JSON.stringify(value)}`);
    }
    writeFileSync(join(dir, "config.json"), JSON.stringify(original));
    assert.equal(loadTinyLlama(dir).config.layers, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
