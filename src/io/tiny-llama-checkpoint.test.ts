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
    for (const [key, value] of [["num_hidden_layers", -1], ["num_hidden_layers", 0], ["num_hidden_layers", "abc"], ["num_hidden_layers", 1.5], ["num_hidden_layers", 1], ["num_hidden_layers", 3], ["num_hidden_layers", 3_000_000], ["rms_norm_eps", "x"], ["hidden_size", null],
      // What TinyLlama does not implement changes the model: refused, not loaded into another one.
      ["rope_theta", 500000], ["rope_scaling", { type: "linear", factor: 4 }], ["rope_parameters", { rope_type: "llama3", rope_theta: 500000, factor: 8 }], ["rope_parameters", []], ["hidden_act", "gelu"], ["head_dim", 128], ["attention_bias", true]] as const) {
      writeFileSync(join(dir, "config.json"), JSON.stringify({ ...original, [key]: value }));
      assert.throws(() => loadTinyLlama(dir), (e: unknown) => e instanceof InvalidArgumentError && e.message.includes(key), `${key} = ${JSON.stringify(value)}`);
    }
    // What means the plain model is accepted in either layout.
    for (const plain of [{ rope_parameters: { rope_type: "default", rope_theta: 10000, partial_rotary_factor: 1 } }, { rope_scaling: { rope_type: "default" } }, { rope_theta: 10000.0, rope_scaling: null }]) {
      writeFileSync(join(dir, "config.json"), JSON.stringify({ ...original, ...plain }));
      assert.equal(loadTinyLlama(dir).config.layers, 2, JSON.stringify(plain));
    }
    writeFileSync(join(dir, "config.json"), JSON.stringify(original));
    assert.equal(loadTinyLlama(dir).config.layers, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loadLoftqForFineTuning: a --target subset and an lm_head adapter load as they were written; foreign or unsupported adapters are refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-tiny-targets-"));
  try {
    const model = new TinyLlama({ vocabSize: 40, hiddenSize: 64, intermediateSize: 128, layers: 2, heads: 4 }, undefined, 1);
    saveTinyLlama(model, join(dir, "model"));
    const out = join(dir, "loftq");
    quantizeCheckpoint({ input: join(dir, "model"), output: out, bits: 4, rank: 4, target: "q_proj,v_proj,lm_head" });
    const loaded = loadLoftqForFineTuning(out, { dropout: 0.1, seed: 3 });
    // Two adapted linears per block and lm_head: 5 LoRA layers, A and B each.
    assert.equal(loaded.parameters().length, 2 * (2 * 2 + 1));
    const tokens = Array.from({ length: 16 }, (_, i) => (i * 5) % 40);
    loaded.setTraining(false);
    const evaluated = loaded.forward(tokens).data.slice();
    assert.deepEqual(loaded.forward(tokens).data, evaluated, "no dropout once training is off");
    assert.throws(() => loadLoftqForFineTuning(out, { droput: 0.1 } as never), /unknown option "droput"/);
    // With the head adapted too, the model saves (merged) and reloads.
    saveTinyLlama(loaded, join(dir, "saved"));
    assert.equal(loadTinyLlama(join(dir, "saved")).config.layers, 2);
    const config = join(out, "loftq_init", "adapter_config.json");
    const original = JSON.parse(readFileSync(config, "utf8")) as Record<string, unknown>;
    for (const [change, message] of [[{ use_rslora: "false" }, /use_rslora must be true or false/], [{ use_dora: true }, /DoRA/], [{ rank_pattern: { q_proj: 8 } }, /rank_pattern/], [{ r: 8 }, /rank 4, adapter_config.json says r = 8|not this backbone's/], [{ lora_alpha: 32 }, /not this backbone's/]] as const) {
      writeFileSync(config, JSON.stringify({ ...original, ...change }));
      assert.throws(() => loadLoftqForFineTuning(out), (e: unknown) => e instanceof InvalidArgumentError && message.test(e.message), JSON.stringify(change));
    }
    rmSync(join(out, "loftq_init"), { recursive: true });
    assert.throws(() => loadLoftqForFineTuning(out), (e: unknown) => e instanceof InvalidArgumentError && /no loftq_init/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
