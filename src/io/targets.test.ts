import { test } from "node:test";
import assert from "node:assert/strict";
import { selectTargets, unmatchedSelectors } from "./targets.js";
import { peftModulePrefix, taskTypeOf } from "./peft-adapter.js";
import type { CheckpointTensor } from "./checkpoint.js";

const tensor = (name: string, shape: number[], dtype = "BF16"): CheckpointTensor => ({ name, shape, dtype, begin: 0, end: 0, shard: "model.safetensors" });

test("all-linear on Llama names: block linears only, never embeddings, norms or lm_head", () => {
  const tensors = [
    tensor("model.embed_tokens.weight", [100, 64]),
    tensor("model.layers.0.self_attn.q_proj.weight", [64, 64]),
    tensor("model.layers.0.mlp.down_proj.weight", [64, 128]),
    tensor("model.layers.0.input_layernorm.weight", [64]),
    tensor("model.norm.weight", [64]),
    tensor("lm_head.weight", [100, 64]),
  ];
  assert.deepEqual(selectTargets(tensors, { model_type: "llama" }, { target: "all-linear", bits: 4 }).map((t) => t.module), [
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.mlp.down_proj",
  ]);
});

test("GPT-2 Conv1D weights are transposed; BERT pooler and T5 shared embeddings are left alone", () => {
  const gpt2 = selectTargets([tensor("h.0.attn.c_attn.weight", [64, 192]), tensor("wte.weight", [100, 64]), tensor("h.0.ln_1.weight", [64])], { model_type: "gpt2" }, { target: "all-linear", bits: 4 });
  assert.deepEqual(gpt2.map((t) => [t.module, t.transposed, t.rows, t.cols]), [["h.0.attn.c_attn", true, 192, 64]]);
  const bert = selectTargets([tensor("bert.encoder.layer.0.attention.self.query.weight", [64, 64]), tensor("bert.pooler.dense.weight", [64, 64])], { model_type: "bert" }, { target: "all-linear", bits: 4 });
  assert.deepEqual(bert.map((t) => t.module), ["bert.encoder.layer.0.attention.self.query"]);
  const t5 = selectTargets([tensor("encoder.block.0.layer.0.SelfAttention.q.weight", [64, 64]), tensor("shared.weight", [100, 64])], { model_type: "t5" }, { target: "all-linear", bits: 4 });
  assert.deepEqual(t5.map((t) => t.module), ["encoder.block.0.layer.0.SelfAttention.q"]);
});

test("mixed precision follows LoftQ (2.5 bits on 32 layers: layers 0–7 at 4 bits), bits-map rules win", () => {
  const tensors = Array.from({ length: 32 }, (_, i) => tensor(`model.layers.${i}.self_attn.q_proj.weight`, [64, 64]));
  const mixed = selectTargets(tensors, { num_hidden_layers: 32 }, { target: "all-linear", bits: 2.5 });
  assert.deepEqual(mixed.map((t) => t.bits), [...Array(8).fill(4), ...Array(24).fill(2)]);
  const threeMixed = selectTargets(tensors, { num_hidden_layers: 32 }, { target: "all-linear", bits: 3, mixed: true });
  assert.equal(threeMixed.filter((t) => t.bits === 4).length, 16);
  const mapped = selectTargets(tensors, {}, { target: "all-linear", bits: 4, bitsMap: "model.layers.3.*=2" });
  assert.equal(mapped[3]!.bits, 2);
  assert.equal(mapped[4]!.bits, 4);
  assert.throws(() => selectTargets(tensors, {}, { target: "nothing_here", bits: 4 }), /matches no/);
});

test("MoE routers and zero-size weights are skipped; unmatched --target names and --bits-map patterns are reported", () => {
  const moe = [
    tensor("model.layers.0.mlp.gate.weight", [8, 64]),
    tensor("model.layers.0.mlp.shared_expert_gate.weight", [1, 64]),
    tensor("model.layers.0.block_sparse_moe.gate.weight", [8, 64]),
    tensor("transformer.blocks.0.ffn.router.layer.weight", [16, 64]),
    tensor("model.layers.0.mlp.gate_proj.weight", [128, 64]),
    tensor("model.layers.0.mlp.experts.0.up_proj.weight", [128, 64]),
    tensor("model.layers.0.self_attn.k_proj.weight", [0, 64]),
    tensor("rwkv.blocks.0.attention.gate.weight", [512, 512]), // a projection named like a router
  ];
  assert.deepEqual(selectTargets(moe, { model_type: "qwen2_moe" }, { target: "all-linear", bits: 4 }).map((t) => t.module), [
    "model.layers.0.mlp.gate_proj",
    "model.layers.0.mlp.experts.0.up_proj",
    "rwkv.blocks.0.attention.gate",
  ]);
  // Many experts (Kimi-K2: 384): the config's expert count identifies the router.
  const kimi = [tensor("model.layers.1.mlp.gate.weight", [384, 64]), tensor("model.layers.1.mlp.experts.0.up_proj.weight", [128, 64])];
  assert.deepEqual(selectTargets(kimi, { n_routed_experts: 384 }, { target: "all-linear", bits: 4 }).map((t) => t.module), ["model.layers.1.mlp.experts.0.up_proj"]);
  const llama = [tensor("model.layers.0.self_attn.q_proj.weight", [64, 64]), tensor("model.layers.0.self_attn.v_proj.weight", [64, 64])];
  const options = { target: "q_proj,qproj,qkv_proj", bits: 4, bitsMap: "*.mlp.*=2,*q_proj=8" };
  assert.deepEqual(unmatchedSelectors(selectTargets(llama, undefined, options), options), ["--target qproj", "--target qkv_proj", "--bits-map *.mlp.*"]);
  // A GPT-2 saved from the base class: its modules named as PEFT sees them (with the head model's prefix) select too.
  const gpt2 = [tensor("h.0.attn.c_attn.weight", [64, 192]), tensor("h.0.mlp.c_fc.weight", [64, 256])];
  const gpt2Config = { model_type: "gpt2", architectures: ["GPT2LMHeadModel"] };
  const peftNamed = { target: "transformer.h.0.attn.c_attn", bits: 4 };
  const selected = selectTargets(gpt2, gpt2Config, peftNamed);
  assert.deepEqual(selected.map((t) => [t.module, t.transposed, t.rows]), [["h.0.attn.c_attn", true, 192]]);
  assert.deepEqual(unmatchedSelectors(selected, peftNamed, peftModulePrefix(gpt2Config, gpt2.map((t) => t.name))), []);
  assert.throws(() => selectTargets([...llama, tensor("model.embed_tokens.weight", [100, 64])], undefined, { target: "embed_tokens", bits: 4 }), /is an embedding, and PEFT's LoftQ initialises Linear layers only/);
  assert.throws(() => selectTargets([tensor("bert.embeddings.word_embeddings.weight", [100, 64])], undefined, { target: "word_embeddings", bits: 4 }), /is an embedding/);
  assert.deepEqual(selectTargets([tensor("gpt_neox.layers.0.mlp.dense_h_to_4h.weight", [256, 64]), tensor("embed_out.weight", [100, 64])], undefined, { target: "embed_out", bits: 4 }).map((t) => t.module), ["embed_out"]);
});

test("config values of the wrong type are ignored, not stringified (a 5000-deep array overflowed the stack)", () => {
  const deep = JSON.parse("[".repeat(5000) + "]".repeat(5000)) as unknown;
  const config = { model_type: deep, architectures: [deep] };
  const tensors = [tensor("model.layers.0.self_attn.q_proj.weight", [64, 64])];
  assert.deepEqual(selectTargets(tensors, config, { target: "all-linear", bits: 4 }).map((t) => t.transposed), [false]);
  assert.equal(taskTypeOf(config), null);
  assert.equal(peftModulePrefix(config, ["model.layers.0.self_attn.q_proj.weight"]), "");
});
