import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import { float32Bytes } from "../tensor/dtype.js";
import { Linear } from "../nn/linear.js";
import { layerSeed, LoraLinear } from "../nn/lora-linear.js";
import { TinyLlama, type TinyLlamaConfig } from "../nn/tiny-llama.js";
import { openCheckpoint, readJsonFile } from "./checkpoint.js";
import { jsonPreview } from "./json-preview.js";
import { SafetensorsFile } from "./safetensors-file.js";
import { upstreamOrder, writeSafetensorsFile } from "./safetensors-writer.js";

/**
 * TinyLlama checkpoints in the Hugging Face layout (`model.safetensors` F32 + Llama `config.json`),
 * so `loftq quantize` runs on them, and LoftQ outputs loaded back for fine-tuning: the backbone's Q
 * as frozen bases with the `loftq_init/` adapters on top.
 */
export function saveTinyLlama(model: TinyLlama, dir: string): void {
  mkdirSync(dir, { recursive: true });
  const state = model.stateDict();
  const tensors = upstreamOrder([...state].map(([name, { shape }]) => ({ name, dtype: "F32", shape })));
  writeSafetensorsFile(join(dir, "model.safetensors"), tensors, { format: "pt" }, (t) => float32Bytes(state.get(t.name)!.data));
  writeFileSync(join(dir, "config.json"), JSON.stringify(model.hfConfig(), null, 2) + "\n");
}

/** Largest vocabulary, width or layer count a config.json may give (beyond any model this trains). */
const MAX_CONFIG_SIZE = 1 << 20;

export function loadTinyLlama(dir: string): TinyLlama {
  const checkpoint = openCheckpoint(dir);
  try {
    const config = checkpoint.config;
    if (!config || config.model_type !== "llama") throw new InvalidArgumentError(`${dir}: not a Llama config.json`);
    // Sizes come from a file: integers in range, checked against the tensors the checkpoint holds
    // (a layer count of 3e6 built millions of blocks before any weight was looked for).
    const size = (key: string, fallback?: unknown): number => {
      const value = config[key] ?? fallback;
      if (!Number.isSafeInteger(value) || (value as number) < 1 || (value as number) > MAX_CONFIG_SIZE) throw new InvalidArgumentError(`${dir}: config.json's ${key} must be an integer in 1..${MAX_CONFIG_SIZE}, got ${jsonPreview(value)}`);
      return value as number;
    };
    const rmsNormEps = config.rms_norm_eps ?? 1e-6;
    if (typeof rmsNormEps !== "number" || !(rmsNormEps > 0 && rmsNormEps < 1)) throw new InvalidArgumentError(`${dir}: config.json's rms_norm_eps must be a number in (0, 1), got ${jsonPreview(rmsNormEps)}`);
    const tinyConfig: TinyLlamaConfig = {
      vocabSize: size("vocab_size"), hiddenSize: size("hidden_size"), intermediateSize: size("intermediate_size"),
      layers: size("num_hidden_layers"), heads: size("num_attention_heads"), rmsNormEps,
    };
    const names = new Set(checkpoint.tensors.map((t) => t.name));
    if (!names.has(`model.layers.${tinyConfig.layers - 1}.self_attn.q_proj.weight`) || names.has(`model.layers.${tinyConfig.layers}.self_attn.q_proj.weight`)) {
      throw new InvalidArgumentError(`${dir}: config.json's num_hidden_layers is ${tinyConfig.layers}, the checkpoint's tensors say otherwise`);
    }
    const kvHeads = size("num_key_value_heads", config.num_attention_heads);
    if (kvHeads !== tinyConfig.heads) throw new InvalidArgumentError(`${dir}: grouped-query attention (${kvHeads} key/value heads for ${tinyConfig.heads}) is not supported`);
    const weights = new Map(checkpoint.tensors.map((t) => [t.name, checkpoint.readFloat32(t.name)]));
    // Tied embeddings (no lm_head tensor): the head starts as a copy, trained apart from the table.
    if (config.tie_word_embeddings === true && !weights.has("lm_head.weight") && weights.has("model.embed_tokens.weight")) {
      weights.set("lm_head.weight", Float32Array.from(weights.get("model.embed_tokens.weight")!));
    }
    return new TinyLlama(tinyConfig, weights);
  } finally {
    checkpoint.close();
  }
}

/**
 * A LoftQ output directory as a model ready for adapter fine-tuning: block linears become LoRA
 * layers over the frozen backbone weights (Q), initialised from `loftq_init/`; embeddings, norms
 * and lm_head are frozen.
 */
export function loadLoftqForFineTuning(dir: string, options: { dropout?: number; seed?: number } = {}): TinyLlama {
  const model = loadTinyLlama(dir);
  const adapterConfig = readJsonFile(join(dir, "loftq_init", "adapter_config.json")) as { r: number; lora_alpha: number; use_rslora?: boolean };
  const adapters = SafetensorsFile.open(join(dir, "loftq_init", "adapter_model.safetensors"));
  try {
    model.freezeNonLinear();
    model.replaceLinears((layer, role, current) => {
      const module = `model.layers.${layer}.${role}`;
      const dense = (current as Linear).denseWeight();
      const matrix = (name: string) => {
        const info = adapters.info(name);
        return { rows: info.shape[0]!, cols: info.shape[1]!, data: adapters.readFloat32(name) };
      };
      return new LoraLinear(new Linear(dense, undefined, true), {
        rank: adapterConfig.r,
        alpha: adapterConfig.lora_alpha,
        ...(adapterConfig.use_rslora ? { useRslora: true } : {}),
        ...(options.dropout !== undefined ? { dropout: options.dropout } : {}),
        seed: layerSeed(options.seed ?? 0, module),
        init: { a: matrix(`base_model.model.${module}.lora_A.weight`), b: matrix(`base_model.model.${module}.lora_B.weight`) },
      });
    });
  } finally {
    adapters.close();
  }
  return model;
}
