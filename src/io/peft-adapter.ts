import { asciiJson } from "./python-json.js";
import { escapeRegex } from "./escape-regex.js";

/**
 * PEFT LoRA adapter files: `adapter_config.json` with the full key set PEFT 0.18.1 writes (sorted,
 * indent 2, `init_lora_weights: true` so loading never re-runs LoftQ) and the tensor names of
 * `adapter_model.safetensors` (`base_model.model.<module>.lora_A.weight` r×in, `lora_B.weight` out×r).
 */
export const PEFT_VERSION = "0.18.1";

export type TaskType = "CAUSAL_LM" | "SEQ_2_SEQ_LM" | "SEQ_CLS" | "TOKEN_CLS" | "QUESTION_ANS" | "FEATURE_EXTRACTION" | null;

/**
 * Encoder–decoder model types, for configs that do not say `is_encoder_decoder` themselves (transformers
 * writes it for these; hand-made or old configs may not).
 */
const ENCODER_DECODER_TYPES = new Set([
  "t5", "mt5", "umt5", "longt5", "switch_transformers", "bart", "mbart", "plbart", "marian", "pegasus", "pegasus_x", "bigbird_pegasus",
  "led", "blenderbot", "blenderbot-small", "m2m_100", "nllb-moe", "fsmt", "prophetnet", "xlm-prophetnet", "mvp", "whisper", "speecht5", "encoder-decoder",
]);

/**
 * The model class config.json names (`architectures[0]`) when it is a Python identifier; only a string
 * names one (String() of a 5000-deep array overflows the stack).
 */
export function architectureOf(config: Record<string, unknown> | undefined): string | undefined {
  const first = Array.isArray(config?.architectures) ? (config!.architectures as unknown[])[0] : undefined;
  return typeof first === "string" && /^[A-Za-z_]\w*$/.test(first) ? first : undefined;
}

/** Whether the model's code comes from its repository (`auto_map` in config.json), not from transformers. */
export function usesRemoteCode(config: Record<string, unknown> | undefined): boolean {
  return config !== undefined && Object.hasOwn(config, "auto_map");
}

/**
 * PEFT's task type from config.json `architectures`. `…ForConditionalGeneration` names encoder–decoder
 * models (T5, BART, Whisper: SEQ_2_SEQ_LM) and decoder-only multimodal ones (LLaVA, Gemma 3, Qwen2-VL:
 * CAUSAL_LM) alike; `is_encoder_decoder` (or a known model type) tells them apart.
 */
export function taskTypeOf(config: Record<string, unknown> | undefined): TaskType {
  const name = architectureOf(config) ?? "";
  if (/ForCausalLM$|LMHeadModel$/.test(name)) return "CAUSAL_LM";
  if (/ForSeq2SeqLM$/.test(name)) return "SEQ_2_SEQ_LM";
  if (/ForConditionalGeneration$/.test(name)) {
    const modelType = config?.model_type;
    const encoderDecoder = config?.is_encoder_decoder === true || (typeof modelType === "string" && ENCODER_DECODER_TYPES.has(modelType));
    return encoderDecoder ? "SEQ_2_SEQ_LM" : "CAUSAL_LM";
  }
  if (/ForSequenceClassification$/.test(name)) return "SEQ_CLS";
  if (/ForTokenClassification$/.test(name)) return "TOKEN_CLS";
  if (/ForQuestionAnswering$/.test(name)) return "QUESTION_ANS";
  if (/Model$/.test(name)) return "FEATURE_EXTRACTION";
  return null;
}

/** Model types whose transformers module (package, modeling file) is not the type's own name. */
const MODULE_OF_MODEL_TYPE: Record<string, [string, string]> = {
  "data2vec-text": ["data2vec", "data2vec_text"], "data2vec-audio": ["data2vec", "data2vec_audio"], "data2vec-vision": ["data2vec", "data2vec_vision"],
  "openai-gpt": ["openai", "openai"], "kosmos-2": ["kosmos2", "kosmos2"], siglip_vision_model: ["siglip", "siglip"], clip_vision_model: ["clip", "clip"],
  clip_text_model: ["clip", "clip"], "gpt-sw3": ["gpt2", "gpt2"],
};

/**
 * What PEFT writes as `auto_mapping` when `task_type` is None (AutoPeftModel then finds the base class
 * from it): the architecture class and the transformers module it lives in. Null with a task type, as
 * in PEFT, and for remote-code models (`auto_map`), whose module only the Hub repository names.
 */
export function autoMappingOf(config: Record<string, unknown> | undefined, taskType: TaskType): { base_model_class: string; parent_library: string } | null {
  if (taskType !== null || config === undefined || usesRemoteCode(config)) return null;
  const first = architectureOf(config);
  const modelType = config.model_type;
  if (first === undefined || typeof modelType !== "string" || !/^[\w-]+$/.test(modelType)) return null;
  // transformers' module names are mostly the model type with hyphens as underscores (xlm-roberta →
  // xlm_roberta); the exceptions a base class without a PEFT task type can come from are listed.
  const [module, file] = MODULE_OF_MODEL_TYPE[modelType] ?? [modelType.replace(/-/g, "_"), modelType.replace(/-/g, "_")];
  return { base_model_class: first, parent_library: `transformers.models.${module}.modeling_${file}` };
}

/**
 * Module paths (a prefix, or the whole path) that transformers ≥ 4.52 renames on load for vision–
 * language models saved in the older layout (LLaVA, Gemma 3, Mistral 3, PaliGemma, Mllama, …:
 * `language_model.model.layers.0…` is built as `model.language_model.layers.0…`; Qwen2-VL's
 * `model.layers.0…` as `model.language_model.layers.0…`). PEFT maps old adapter keys itself, but
 * matches `target_modules` against the built model only.
 */
const LEGACY_PATHS: ReadonlyArray<{ old: string; renamed: string; modelTypes?: ReadonlySet<string> }> = [
  { old: "language_model.model", renamed: "model.language_model" },
  { old: "language_model.lm_head", renamed: "lm_head" },
  { old: "vision_tower", renamed: "model.vision_tower" },
  { old: "vision_model", renamed: "model.vision_model", modelTypes: new Set(["mllama"]) },
  { old: "multi_modal_projector", renamed: "model.multi_modal_projector" },
  { old: "model", renamed: "model.language_model", modelTypes: new Set(["qwen2_vl", "qwen2_5_vl"]) },
  { old: "visual", renamed: "model.visual", modelTypes: new Set(["qwen2_vl", "qwen2_5_vl"]) },
];

/**
 * `target_modules` as PEFT should see them: the module paths, sorted (PEFT matches each as the whole
 * path or a suffix after a dot), or, when some lie under a path transformers renames on load, one
 * regular expression (PEFT full-matches a string) with the same suffix rule that accepts each path in
 * both layouts, so the adapter loads into old and new transformers alike. The old spelling stays one of
 * the alternatives: a model never renamed (BLIP-2's `language_model.model.decoder…` is its real path)
 * matches as before.
 */
export function peftTargetModules(modules: readonly string[], config: Record<string, unknown> | undefined): string[] | string {
  const modelType = typeof config?.model_type === "string" ? config.model_type : "";
  const applicable = LEGACY_PATHS.filter((p) => !p.modelTypes || p.modelTypes.has(modelType));
  const under = (module: string, path: string) => module === path || module.startsWith(`${path}.`);
  // A module already under a new-layout path (Qwen2-VL's model.visual, LLaVA's model.language_model) has no old name.
  const aliasOf = (module: string) => (applicable.some((p) => under(module, p.renamed)) ? undefined : applicable.find((p) => under(module, p.old)));
  const sorted = [...modules].sort();
  if (!sorted.some((m) => aliasOf(m))) return sorted;
  const groups = new Map<string, string[]>();
  for (const module of sorted) {
    const alias = aliasOf(module);
    const head = alias ? `(?:${escapeRegex(alias.old)}|${escapeRegex(alias.renamed)})` : "";
    const rest = alias ? module.slice(alias.old.length) : module;
    groups.set(head, [...(groups.get(head) ?? []), escapeRegex(rest)]);
  }
  const alternatives = [...groups].flatMap(([head, rests]) => (head ? [`${head}(?:${rests.join("|")})`] : rests));
  return `(?:.*\\.)?(?:${alternatives.join("|")})`;
}

export interface AdapterConfigOptions {
  baseModel: string;
  rank: number;
  loraAlpha: number;
  /** A list (written sorted) or one regular expression, as `peftTargetModules` gives them. */
  targetModules: readonly string[] | string;
  taskType: TaskType;
  autoMapping?: { base_model_class: string; parent_library: string } | null;
  fanInFanOut: boolean;
  useRslora: boolean;
}

export function adapterConfig(options: AdapterConfigOptions): Record<string, unknown> {
  const config: Record<string, unknown> = {
    alora_invocation_tokens: null,
    alpha_pattern: {},
    arrow_config: null,
    auto_mapping: options.autoMapping ?? null,
    base_model_name_or_path: options.baseModel,
    bias: "none",
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: options.fanInFanOut,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    // PEFT resets loftq_config to {} when init_lora_weights is not "loftq"; the values used are in
    // loftq_manifest.json instead.
    loftq_config: {},
    lora_alpha: options.loraAlpha,
    lora_bias: false,
    lora_dropout: 0.0,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    peft_type: "LORA",
    peft_version: PEFT_VERSION,
    qalora_group_size: 16,
    r: options.rank,
    rank_pattern: {},
    revision: null,
    target_modules: typeof options.targetModules === "string" ? options.targetModules : [...options.targetModules].sort(),
    target_parameters: null,
    task_type: options.taskType,
    trainable_token_indices: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: options.useRslora,
  };
  return Object.fromEntries(Object.entries(config).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** The config as PEFT writes it (`json.dumps(indent=2, sort_keys=True)`): Python spells the float 0.0. */
export function formatAdapterConfig(config: Record<string, unknown>): string {
  return asciiJson(JSON.stringify(config, null, 2).replace(/"lora_dropout": 0(?=,)/, '"lora_dropout": 0.0'));
}

/**
 * The attribute under which a model type's head classes (…ForCausalLM, …LMHeadModel) hold the base
 * model: transformers' `base_model_prefix`, for the types whose checkpoints are often saved from the
 * base class without it (openai-community/gpt2: `h.0.attn.c_attn.weight`, bigscience/bloom-*:
 * `h.0.…`, facebook/opt-*: `decoder.layers.…`) and for the common prefixed ones.
 */
const BASE_MODEL_PREFIX: Record<string, string> = {
  gpt2: "transformer", bloom: "transformer", opt: "model", gpt_neo: "transformer", gptj: "transformer", falcon: "transformer",
  gpt_bigcode: "transformer", codegen: "transformer", mpt: "transformer", gpt_neox: "gpt_neox",
  llama: "model", mistral: "model", mixtral: "model", qwen2: "model", qwen3: "model", gemma: "model", gemma2: "model", phi: "model", phi3: "model",
};

/**
 * What to put before a checkpoint's module names to get the module paths of the model PEFT wraps.
 * transformers loads a checkpoint saved from the base class into a head class by adding the prefix
 * (`h.0.attn.c_attn` becomes `transformer.h.0.attn.c_attn`); adapter keys named after the file would
 * then match nothing, and PEFT would silently keep its own zero-B init instead of LoftQ's.
 */
export function peftModulePrefix(config: Record<string, unknown> | undefined, tensorNames: readonly string[]): string {
  const prefix = typeof config?.model_type === "string" && Object.hasOwn(BASE_MODEL_PREFIX, config.model_type) ? BASE_MODEL_PREFIX[config.model_type] : undefined;
  // A base-class model (architectures …Model) is loaded without a head: no prefix then.
  if (!prefix || taskTypeOf(config) === "FEATURE_EXTRACTION" || tensorNames.some((name) => name.startsWith(`${prefix}.`))) return "";
  return `${prefix}.`;
}

export function loraTensorNames(module: string): { a: string; b: string } {
  return { a: `base_model.model.${module}.lora_A.weight`, b: `base_model.model.${module}.lora_B.weight` };
}
