import { test } from "node:test";
import assert from "node:assert/strict";
import { autoMappingOf, formatAdapterConfig, loraTensorNames, peftModulePrefix, peftTargetModules, taskTypeOf } from "./peft-adapter.js";
import { asciiJson } from "./python-json.js";
import { bnb4SkipModules, checkBnb4Names, withQuantizationConfig } from "./bnb4-export.js";

test("adapter keys follow the module paths of the loaded head model: GPT-2, BLOOM and OPT files saved without the base prefix get it", () => {
  const gpt2 = { model_type: "gpt2", architectures: ["GPT2LMHeadModel"] };
  assert.equal(peftModulePrefix(gpt2, ["h.0.attn.c_attn.weight", "wte.weight"]), "transformer.");
  assert.equal(peftModulePrefix(gpt2, ["transformer.h.0.attn.c_attn.weight"]), "");
  assert.equal(peftModulePrefix({ model_type: "opt", architectures: ["OPTForCausalLM"] }, ["decoder.layers.0.self_attn.q_proj.weight"]), "model.");
  assert.equal(peftModulePrefix({ model_type: "llama", architectures: ["LlamaForCausalLM"] }, ["model.layers.0.self_attn.q_proj.weight"]), "");
  // A base-class checkpoint loads without a head, and unknown types are left as they are.
  assert.equal(peftModulePrefix({ model_type: "gpt2", architectures: ["GPT2Model"] }, ["h.0.attn.c_attn.weight"]), "");
  assert.equal(peftModulePrefix({ model_type: "something-new" }, ["h.0.x.weight"]), "");
  for (const name of ["__proto__", "constructor", "toString"]) assert.equal(peftModulePrefix({ model_type: name }, ["h.0.x.weight"]), "", name);
  assert.equal(peftModulePrefix(undefined, ["h.0.x.weight"]), "");
  assert.equal(loraTensorNames("transformer.h.0.attn.c_attn").a, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
  assert.equal(taskTypeOf(gpt2), "CAUSAL_LM");
  // …ForConditionalGeneration: encoder–decoder (by the config's flag or a known model type) or decoder-only multimodal.
  assert.equal(taskTypeOf({ model_type: "t5", architectures: ["T5ForConditionalGeneration"], is_encoder_decoder: true }), "SEQ_2_SEQ_LM");
  assert.equal(taskTypeOf({ model_type: "bart", architectures: ["BartForConditionalGeneration"] }), "SEQ_2_SEQ_LM");
  assert.equal(taskTypeOf({ model_type: "llava", architectures: ["LlavaForConditionalGeneration"] }), "CAUSAL_LM");
  assert.equal(taskTypeOf({ model_type: "gemma3", architectures: ["Gemma3ForConditionalGeneration"] }), "CAUSAL_LM");
  assert.equal(taskTypeOf({ architectures: ["SomethingForSeq2SeqLM"] }), "SEQ_2_SEQ_LM");
  assert.match(formatAdapterConfig({ lora_dropout: 0, r: 8 }), /"lora_dropout": 0\.0,/);
});

test("bnb4 config: the model's config text is kept, quantization_config appended with a float threshold; skip list clashes are refused", () => {
  const original = '{\n  "model_type": "llama",\n  "rope_theta": 10000.0\n}\n';
  const text = withQuantizationConfig(original, { llm_int8_skip_modules: ["lm_head"], llm_int8_threshold: 6 });
  assert.ok(text.startsWith('{\n  "model_type": "llama",\n  "rope_theta": 10000.0,\n  "quantization_config": {'));
  assert.match(text, /"llm_int8_threshold": 6\.0\n {2}\}\n\}\n$/);
  assert.deepEqual(JSON.parse(text).quantization_config.llm_int8_skip_modules, ["lm_head"]);
  assert.equal(JSON.parse(withQuantizationConfig("{}", { a: 1 })).quantization_config.a, 1);
  assert.throws(() => withQuantizationConfig('{"quantization_config": {}}', {}), /already has a quantization_config/);

  const tensor = (name: string, shape = [8, 8], dtype = "BF16") => ({ name, dtype, shape });
  const tensors = [tensor("model.layers.0.mlp.gate.weight"), tensor("model.layers.0.mlp.gate_proj.weight"), tensor("model.norm.weight", [8]), tensor("lm_head.weight")];
  const exported = new Map([["model.layers.0.mlp.gate_proj.weight", { module: "model.layers.0.mlp.gate_proj" }]]);
  assert.throws(() => bnb4SkipModules(tensors, exported), /contains it/);
  assert.deepEqual(bnb4SkipModules(tensors.filter((t) => !t.name.includes("mlp.gate.")), exported), ["lm_head"]);
  // A head tied to the embeddings is not in the file, but transformers would still convert it.
  assert.deepEqual(bnb4SkipModules([tensor("wte.weight"), tensor("h.0.attn.c_attn.weight")], new Map([["h.0.attn.c_attn.weight", { module: "h.0.attn.c_attn" }]])), ["lm_head", "wte"]);
});

test("target_modules: a sorted list, or for vision–language checkpoints in the old layout one regex matching both layouts", () => {
  const llama = { model_type: "llama", architectures: ["LlamaForCausalLM"] };
  assert.deepEqual(peftTargetModules(["model.layers.1.mlp.up_proj", "model.layers.0.self_attn.q_proj"], llama), ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj"]);
  // PEFT full-matches a string target_modules (re.fullmatch); a JS RegExp anchored both ends does the same here.
  const matcher = (pattern: string | string[]) => {
    assert.equal(typeof pattern, "string");
    const regex = new RegExp(`^(?:${pattern as string})$`);
    return (key: string) => regex.test(key);
  };
  const gemma3 = { model_type: "gemma3", architectures: ["Gemma3ForConditionalGeneration"] };
  const matches = matcher(peftTargetModules(["language_model.model.layers.0.self_attn.q_proj", "vision_tower.vision_model.encoder.layers.0.mlp.fc1", "multi_modal_projector.linear"], gemma3));
  for (const key of [
    "language_model.model.layers.0.self_attn.q_proj", "model.language_model.layers.0.self_attn.q_proj", // transformers < 4.52, ≥ 4.52
    "vision_tower.vision_model.encoder.layers.0.mlp.fc1", "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1",
    "multi_modal_projector.linear", "model.multi_modal_projector.linear",
    "base.language_model.model.layers.0.self_attn.q_proj", // PEFT's suffix rule kept
  ]) assert.ok(matches(key), key);
  for (const key of ["language_model.model.layers.0.self_attn.k_proj", "model.language_model.layers.10.self_attn.q_proj", "xlanguage_model.model.layers.0.self_attn.q_proj", "vision_tower.vision_model.encoder.layers.0.mlp.fc2"]) {
    assert.ok(!matches(key), key);
  }
  // Qwen2-VL's old layout had its text model at the top: model.layers.N (model.language_model.layers.N since).
  const qwen = matcher(peftTargetModules(["model.layers.0.mlp.down_proj", "visual.blocks.0.attn.qkv"], { model_type: "qwen2_vl", architectures: ["Qwen2VLForConditionalGeneration"] }));
  for (const key of ["model.layers.0.mlp.down_proj", "model.language_model.layers.0.mlp.down_proj", "visual.blocks.0.attn.qkv", "model.visual.blocks.0.attn.qkv"]) assert.ok(qwen(key), key);
  // Checkpoints already in the new layout, and Qwen-named paths of other model types, stay a plain list.
  assert.deepEqual(peftTargetModules(["model.language_model.layers.0.self_attn.q_proj"], gemma3), ["model.language_model.layers.0.self_attn.q_proj"]);
  assert.deepEqual(peftTargetModules(["model.language_model.layers.0.mlp.down_proj", "model.visual.blocks.0.attn.qkv"], { model_type: "qwen2_vl" }), [
    "model.language_model.layers.0.mlp.down_proj", "model.visual.blocks.0.attn.qkv",
  ]);
  assert.deepEqual(peftTargetModules(["lm_head", "model.language_model.layers.0.mlp.down_proj"], gemma3), ["lm_head", "model.language_model.layers.0.mlp.down_proj"]);
  assert.deepEqual(peftTargetModules(["model.layers.0.mlp.down_proj"], { model_type: "qwen2" }), ["model.layers.0.mlp.down_proj"]);
});

test("auto_mapping names the base class when PEFT has no task type for the architecture, as PEFT writes it", () => {
  assert.deepEqual(autoMappingOf({ model_type: "xlm-roberta", architectures: ["XLMRobertaForMaskedLM"] }, null), {
    base_model_class: "XLMRobertaForMaskedLM",
    parent_library: "transformers.models.xlm_roberta.modeling_xlm_roberta",
  });
  assert.equal(autoMappingOf({ model_type: "data2vec-text", architectures: ["Data2VecTextForMaskedLM"] }, null)?.parent_library, "transformers.models.data2vec.modeling_data2vec_text");
  assert.equal(autoMappingOf({ model_type: "llama", architectures: ["LlamaForCausalLM"] }, "CAUSAL_LM"), null);
  assert.equal(autoMappingOf({ model_type: "custom", architectures: ["CustomForX"], auto_map: {} }, null), null, "remote code: module unknown");
  assert.equal(autoMappingOf({ architectures: ["X"] }, null), null);
  assert.equal(autoMappingOf(undefined, null), null);
});

test("JSON files Python writes escape non-ASCII as json.dumps does", () => {
  assert.equal(asciiJson(JSON.stringify({ "é": "日本", emoji: "😀", del: "\u007f" })), '{"\\u00e9":"\\u65e5\\u672c","emoji":"\\ud83d\\ude00","del":"\\u007f"}');
  assert.equal(JSON.parse(asciiJson(JSON.stringify({ "é": "😀" })))["é"], "😀");
});

test("bnb4: a checkpoint that already has a tensor named like a target's 4-bit state is refused", () => {
  const exported = new Map([["model.layers.0.self_attn.q_proj.weight", { module: "model.layers.0.self_attn.q_proj" }]]);
  assert.throws(() => checkBnb4Names([{ name: "model.layers.0.self_attn.q_proj.weight" }, { name: "model.layers.0.self_attn.q_proj.weight.absmax" }], exported), /already has a tensor "model\.layers\.0\.self_attn\.q_proj\.weight\.absmax"/);
  checkBnb4Names([{ name: "model.layers.0.self_attn.q_proj.weight" }, { name: "model.layers.0.self_attn.k_proj.weight.absmax" }], exported);
});
