import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import { float32Bytes } from "../tensor/dtype.js";
import { Linear } from "../nn/linear.js";
import { layerSeed, LoraLinear } from "../nn/lora-linear.js";
import { TinyLlama, type TinyLlamaConfig } from "../nn/tiny-llama.js";
import type { Layer } from "../nn/layer.js";
import { checkSeed } from "../linalg/random.js";
import { checkOptionKeys, optionKeysOf } from "../options.js";
import { openCheckpoint, readJsonFile } from "./checkpoint.js";
import { MANIFEST_FILE } from "./quantize-checkpoint.js";
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

/** RoPE settings that leave Llama's plain rotary embedding (base 10000, no scaling, every dimension rotated). */
function plainRope(value: unknown): boolean {
  if (value === null) return true;
  if (typeof value !== "object" || Array.isArray(value)) return false;
  const plain: Record<string, unknown> = { rope_type: "default", type: "default", rope_theta: 10000, partial_rotary_factor: 1 };
  return Object.entries(value as object).every(([key, setting]) => Object.hasOwn(plain, key) && plain[key] === setting);
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
    // Settings that change what the model computes, beyond what TinyLlama implements (RoPE base 10000,
    // no scaling, SiLU, dₕ = hidden / heads, no biases): refused, not loaded into a different model.
    const implemented: Array<[string, (value: unknown) => boolean, string]> = [
      ["hidden_act", (v) => v === "silu", '"silu"'],
      ["rope_theta", (v) => v === 10000, "10000"],
      ["rope_scaling", plainRope, 'null or { rope_type: "default" }'],
      // transformers v5 nests them: { rope_type, rope_theta, … }.
      ["rope_parameters", plainRope, '{ rope_type: "default", rope_theta: 10000 }'],
      ["head_dim", (v) => v === tinyConfig.hiddenSize / tinyConfig.heads, "hidden_size / num_attention_heads"],
      ["attention_bias", (v) => v === false, "false"],
      ["mlp_bias", (v) => v === false, "false"],
    ];
    for (const [key, supported, expected] of implemented) {
      if (config[key] !== undefined && !supported(config[key])) throw new InvalidArgumentError(`${dir}: config.json's ${key} is ${jsonPreview(config[key])}; TinyLlama implements ${key} = ${expected} only`);
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

/** What loadLoftqForFineTuning takes besides the directory. */
export interface FineTuneLoadOptions {
  /** LoRA dropout (default 0). */
  dropout?: number;
  /** Seed of the dropout masks (each layer gets its own from it; default 0). */
  seed?: number;
}

const FINE_TUNE_LOAD_OPTION_KEYS = optionKeysOf<FineTuneLoadOptions>()(["dropout", "seed"]);

/**
 * A LoftQ output directory as a model ready for adapter fine-tuning: every linear with an adapter in
 * `loftq_init/` (block linears, and lm_head when it was a target) becomes a LoRA layer over its frozen
 * backbone weight (Q); the linears without one (outside `--target`), embeddings and norms are frozen.
 */
export function loadLoftqForFineTuning(dir: string, options: FineTuneLoadOptions = {}): TinyLlama {
  checkOptionKeys(options, FINE_TUNE_LOAD_OPTION_KEYS, "loadLoftqForFineTuning");
  if (options.seed !== undefined) checkSeed(options.seed);
  const adapterDir = join(dir, "loftq_init");
  for (const file of ["adapter_config.json", "adapter_model.safetensors"]) {
    if (!existsSync(join(adapterDir, file))) throw new InvalidArgumentError(`${dir}: no ${join("loftq_init", file)}; pass the --out of a "loftq quantize" run`);
  }
  const lora = adapterSettings(dir, readJsonFile(join(adapterDir, "adapter_config.json")));
  const model = loadTinyLlama(dir);
  const adapters = SafetensorsFile.open(join(adapterDir, "adapter_model.safetensors"));
  try {
    const names = new Set(adapters.tensors.map((t) => t.name));
    model.freezeNonLinear();
    const withAdapter = (module: string, current: Layer): Layer => {
      const [a, b] = [`base_model.model.${module}.lora_A.weight`, `base_model.model.${module}.lora_B.weight`];
      // Not a target: its weight as it was, frozen.
      if (!names.has(a) && !names.has(b)) return new Linear((current as Linear).denseWeight(), undefined, true);
      const matrix = (name: string) => {
        if (!names.has(name)) throw new InvalidArgumentError(`${dir}: the adapter has one factor of ${module} but not ${name}`);
        const info = adapters.info(name);
        return { rows: info.shape[0]!, cols: info.shape[1]!, data: adapters.readFloat32(name) };
      };
      const init = { a: matrix(a), b: matrix(b) };
      if (init.a.rows !== lora.rank || init.b.cols !== lora.rank) {
        throw new InvalidArgumentError(`${dir}: ${module}'s adapter has rank ${init.a.rows}, adapter_config.json says r = ${lora.rank}`);
      }
      const dense = (current as Linear).denseWeight();
      return new LoraLinear(new Linear(dense, undefined, true), {
        rank: lora.rank,
        alpha: lora.alpha,
        ...(lora.useRslora ? { useRslora: true } : {}),
        ...(options.dropout !== undefined ? { dropout: options.dropout } : {}),
        seed: layerSeed(options.seed ?? 0, module),
        init,
      });
    };
    const used = new Set<string>();
    const track = (module: string, current: Layer) => {
      for (const factor of ["lora_A", "lora_B"]) used.add(`base_model.model.${module}.${factor}.weight`);
      return withAdapter(module, current);
    };
    model.replaceLinears((layer, role, current) => track(`model.layers.${layer}.${role}`, current));
    model.replaceLmHead((current) => track("lm_head", current));
    // An adapter for modules this model lacks would load as nothing trainable, silently.
    const strays = [...names].filter((name) => !used.has(name));
    if (strays.length > 0) throw new InvalidArgumentError(`${dir}: the adapter has ${strays.length} tensors for no module of this TinyLlama (first: ${jsonPreview(strays[0])})`);
  } finally {
    adapters.close();
  }
  return model;
}

/**
 * The LoRA settings of an adapter_config.json, checked: what the layers are built with, and nothing
 * they would silently ignore (DoRA, per-module ranks). With the run's manifest beside it, the adapter
 * must also be that run's (an adapter copied from another run would start far from W).
 */
function adapterSettings(dir: string, config: unknown): { rank: number; alpha: number; useRslora: boolean } {
  const where = `${join(dir, "loftq_init", "adapter_config.json")}`;
  if (typeof config !== "object" || config === null || Array.isArray(config)) throw new InvalidArgumentError(`${where}: not a JSON object`);
  const c = config as Record<string, unknown>;
  const rank = c.r;
  if (!Number.isSafeInteger(rank) || (rank as number) < 1) throw new InvalidArgumentError(`${where}: r must be a positive integer, got ${jsonPreview(rank)}`);
  // PEFT's LoraConfig default when the key is absent.
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== "number" || !(alpha > 0) || !Number.isFinite(alpha)) throw new InvalidArgumentError(`${where}: lora_alpha must be a positive number, got ${jsonPreview(alpha)}`);
  const useRslora = c.use_rslora ?? false;
  if (typeof useRslora !== "boolean") throw new InvalidArgumentError(`${where}: use_rslora must be true or false, got ${jsonPreview(useRslora)}`);
  if (c.use_dora === true) throw new InvalidArgumentError(`${where}: DoRA adapters are not supported`);
  for (const key of ["rank_pattern", "alpha_pattern"]) {
    const pattern = c[key];
    if (pattern !== undefined && pattern !== null && !(typeof pattern === "object" && Object.keys(pattern).length === 0)) {
      throw new InvalidArgumentError(`${where}: per-module ${key} is not supported`);
    }
  }
  const manifestPath = join(dir, MANIFEST_FILE);
  if (existsSync(manifestPath)) {
    const settings = (readJsonFile(manifestPath) as { settings?: { rank?: unknown; loraAlpha?: unknown } }).settings;
    if (settings && (settings.rank !== rank || (settings.loraAlpha !== undefined && settings.loraAlpha !== alpha))) {
      const absent = c.lora_alpha === undefined ? " (lora_alpha is absent: PEFT's default 8)" : "";
      throw new InvalidArgumentError(`${where}: r = ${rank}, lora_alpha = ${alpha}${absent}, but ${MANIFEST_FILE} says the run used r = ${jsonPreview(settings.rank)}, alpha ${jsonPreview(settings.loraAlpha)}: the adapter is not this backbone's`);
    }
  }
  return { rank: rank as number, alpha, useRslora };
}
