import { escapeRegex } from "./escape-regex.js";
import { InvalidArgumentError } from "../errors.js";
import { supportedBits, type QuantizerKind } from "../quant/quantizer.js";
import type { CheckpointTensor } from "./checkpoint.js";
import { peftModulePrefix } from "./peft-adapter.js";

/**
 * Which weights LoftQ touches, from tensor names, shapes and config.json.
 * "all-linear": every 2-D `*.weight` inside the repeated transformer blocks (a `.<n>.` layer index
 * in the name: Llama/Mistral/Qwen/Phi `model.layers.N`, GPT-2 `h.N`, BERT `encoder.layer.N`,
 * T5 `block.N`, BART `layers.N`), never embeddings, norms, position tables or `lm_head`.
 * A comma list instead names module suffixes (`q_proj,v_proj`) or full module paths.
 * GPT-2-style `Conv1D` weights are stored (in, out) and are transposed for LoftQ and back.
 */
export interface TargetMatrix {
  /** The tensor name (`model.layers.0.self_attn.q_proj.weight`). */
  readonly tensor: string;
  /** The module path PEFT sees (`model.layers.0.self_attn.q_proj`). */
  readonly module: string;
  /** Stored transposed ((in, out), GPT-2 Conv1D). */
  readonly transposed: boolean;
  /** out × in after any transpose. */
  readonly rows: number;
  readonly cols: number;
  /** Transformer block index, when the name has one. */
  readonly layer: number | undefined;
  readonly bits: number;
}

const LAYER_INDEX = /\.(?:layers|layer|h|block|blocks)\.(\d+)\./;
const NEVER_TARGET = /(?:^|\.)(?:embed\w*|wte|wpe|lm_head|shared|\w*norm\w*|ln_\w+|layernorm\w*|rotary\w*|relative_attention_bias)(?:\.|$)/i;
/**
 * Mixture-of-experts routers (Mixtral `block_sparse_moe.gate`, Qwen-MoE `mlp.gate` and
 * `shared_expert_gate`, DBRX `ffn.router.layer`, JetMoE/GraniteMoE `router.layer`, Switch
 * `router.classifier`, Hunyuan `mlp.gate.wg`): one row per expert, not a projection to adapt, and
 * usually narrower than the rank. "all-linear" leaves them alone, as bitsandbytes users skip them. The
 * name alone is not enough (RWKV's `attention.gate` is a full hidden×hidden projection): a router has one
 * output per expert (config.json's expert count) or, without one, at most MAX_ROUTER_ROWS outputs.
 */
const ROUTER = /(?:^|\.)(?:gate|router|shared_expert_gate)(?:\.(?:layer|classifier|wg))?$/;
export const MAX_ROUTER_ROWS = 256;
/**
 * Embedding tables, by their usual names (Llama `embed_tokens`, NeoX `embed_in`, GPT-2 `wte`/`wpe`, T5
 * `shared`, BERT-style `word_/position_/token_type_embeddings`, CLIP `token_embedding`): PEFT keeps their
 * adapters as lora_embedding_A/B and its LoftQ init is Linear-only. (`embed_out`, NeoX's LM head, and
 * ALBERT's `embedding_hidden_mapping_in` are Linear layers.)
 */
const EMBEDDING = /(?:^|\.)(?:embed_tokens|embed_in|wte|wpe|shared|word_embeddings|position_embeddings|token_type_embeddings|token_embedding|embeddings)$/i;
const FLOAT_DTYPES = new Set(["F32", "F16", "BF16"]);
// (GPTBigCode/StarCoder keeps GPT-2's module names but uses nn.Linear: not transposed.)
const CONV1D_MODEL_TYPES = new Set(["gpt2", "openai-gpt"]);

export interface TargetOptions {
  /** "all-linear" or a comma list of module suffixes / paths. */
  target: string;
  /** Default bits (2, 3, 4, 8) or a fractional LoftQ mixed-precision spec (2.25, 2.5, 3…). */
  bits: number;
  /** Explicit `pattern=bits` rules, first match wins; `*` matches anything. */
  bitsMap?: string;
  /** Treat `bits` as LoftQ's mixed 2/4-bit spec even when it is an integer (e.g. LoftQ's "3-bit"). */
  mixed?: boolean;
  /** An empty selection is an answer (for `inspect`), not an error. */
  allowNone?: boolean;
}

/** What an empty selection says, as an error or a warning. */
export function noTargetsMessage(target: string): string {
  return `--target ${target} matches no 2-D F32, F16 or BF16 weight in this checkpoint (F64 and integer weights are not quantized)`;
}

/** Whether `module`'s weight is stored (in, out): GPT-2's Conv1D layers, which LoftQ transposes and back. */
export function storedTransposed(config: Record<string, unknown> | undefined, module: string): boolean {
  const conv1d = typeof config?.model_type === "string" && CONV1D_MODEL_TYPES.has(config.model_type);
  return conv1d && /(?:^|\.)(?:c_attn|c_proj|c_fc|q_attn)$/.test(module);
}

export function selectTargets(tensors: readonly CheckpointTensor[], config: Record<string, unknown> | undefined, options: TargetOptions): TargetMatrix[] {
  const explicit = explicitTargets(options.target);
  // A module named as PEFT sees it (transformer.h.0.attn.c_attn, where the file says h.0.attn.c_attn) counts too.
  const prefix = explicit ? peftModulePrefix(config, tensors.map((t) => t.name)) : "";
  const layers = layerCount(config, tensors);
  const experts = expertCount(config);
  const rules = parseBitsMap(options.bitsMap);
  const out: TargetMatrix[] = [];
  for (const tensor of tensors) {
    if (!tensor.name.endsWith(".weight") || tensor.shape.length !== 2 || !FLOAT_DTYPES.has(tensor.dtype)) continue;
    if (tensor.shape[0] === 0 || tensor.shape[1] === 0) continue; // nothing to quantize
    const module = tensor.name.slice(0, -".weight".length);
    const layerMatch = LAYER_INDEX.exec(`.${module}.`);
    if (explicit) {
      const named = explicit.filter((name) => names(module, name) || (prefix !== "" && names(prefix + module, name)));
      if (named.length === 0) continue;
      if (EMBEDDING.test(module)) throw new InvalidArgumentError(`--target ${named.join(", ")}: ${module} is an embedding, and PEFT's LoftQ initialises Linear layers only`);
    } else if (!layerMatch || NEVER_TARGET.test(module)) {
      continue;
    }
    const [first, second] = tensor.shape as [number, number];
    const transposed = storedTransposed(config, module);
    const outputs = transposed ? second : first;
    if (!explicit && ROUTER.test(module) && (outputs <= MAX_ROUTER_ROWS || outputs === experts)) continue;
    const layer = layerMatch ? Number(layerMatch[1]) : undefined;
    out.push({
      tensor: tensor.name,
      module,
      transposed,
      rows: transposed ? second : first,
      cols: transposed ? first : second,
      layer,
      bits: bitsFor(module, layer, options.bits, options.mixed ?? false, layers, rules),
    });
  }
  if (out.length === 0 && !options.allowNone) throw new InvalidArgumentError(noTargetsMessage(options.target));
  return out;
}

/**
 * The --target names and --bits-map patterns that select nothing in this checkpoint: not an error (as in
 * PEFT, one target list serves several architectures), but worth a warning, since a typo looks the same.
 */
export function unmatchedSelectors(targets: readonly TargetMatrix[], options: TargetOptions, peftPrefix = ""): string[] {
  const unmatched: string[] = [];
  for (const name of explicitTargets(options.target) ?? []) {
    if (!targets.some((t) => names(t.module, name) || (peftPrefix !== "" && names(peftPrefix + t.module, name)))) unmatched.push(`--target ${name}`);
  }
  for (const [pattern, , text] of parseBitsMap(options.bitsMap)) {
    if (!targets.some((t) => pattern.test(t.module))) unmatched.push(`--bits-map ${text}`);
  }
  return unmatched;
}

/** The module suffixes / paths of a comma-list --target (never empty); undefined for "all-linear". */
function explicitTargets(target: string): string[] | undefined {
  if (target === "all-linear") return undefined;
  const names = target.split(",").map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new InvalidArgumentError(`--target is empty`);
  return names;
}

/** Whether a --target entry names the module: its full path or a suffix after a dot. */
function names(module: string, name: string): boolean {
  return module === name || module.endsWith(`.${name}`);
}

/** Routed experts per MoE layer from config.json (Mixtral, Qwen-MoE, DeepSeek/Kimi spell it differently). */
function expertCount(config: Record<string, unknown> | undefined): number | undefined {
  for (const key of ["num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"]) {
    const value = config?.[key];
    if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
  }
  return undefined;
}

function layerCount(config: Record<string, unknown> | undefined, tensors: readonly CheckpointTensor[]): number {
  for (const key of ["num_hidden_layers", "n_layer", "num_layers"]) {
    const value = config?.[key];
    if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
  }
  let max = -1;
  for (const t of tensors) {
    const match = LAYER_INDEX.exec(`.${t.name}`);
    if (match) max = Math.max(max, Number(match[1]));
  }
  return max + 1;
}

/**
 * Bits of one matrix. An integer applies everywhere. A fraction b (or any b with `mixed`) follows yxli2123/LoftQ: the
 * first floor(L·(b − 2)/2) blocks are 4-bit, the rest 2-bit (L = number of blocks), so 2.5 bits
 * on 32 layers puts layers 0–7 at 4 bits.
 */
function bitsFor(module: string, layer: number | undefined, bits: number, mixed: boolean, layers: number, rules: BitsRule[]): number {
  for (const [pattern, value] of rules) if (pattern.test(module)) return value;
  if (Number.isInteger(bits) && !mixed) return bits;
  const fourBitLayers = Math.floor((layers * (bits - 2)) / 2);
  return layer !== undefined && layer < fourBitLayers ? 4 : 2;
}

/**
 * The checks on --target and --bits-map that need no checkpoint: a non-empty target list, rules of the
 * form pattern=bits, and rule widths the quantizer has. Run before any file is read (the CLI reports
 * them as usage errors); selectTargets runs the same parse. Returns the widths the rules ask for.
 */
export function checkSelectionOptions(options: { target: string; bitsMap?: string; quantizer: QuantizerKind }): number[] {
  explicitTargets(options.target);
  const widths = supportedBits(options.quantizer);
  const rules = parseBitsMap(options.bitsMap);
  for (const [, bits, pattern] of rules) {
    if (!widths.includes(bits)) throw new InvalidArgumentError(`--bits-map ${pattern}=${bits}: --quantizer ${options.quantizer} has bits ${widths.join(", ")}`);
  }
  return rules.map(([, bits]) => bits);
}

/** A --bits-map rule: the compiled pattern, its bits, and the pattern as written. */
type BitsRule = [RegExp, number, string];

function parseBitsMap(spec: string | undefined): BitsRule[] {
  if (!spec) return [];
  return spec.split(",").map((rule) => {
    const parts = rule.split("=").map((s) => s.trim());
    const [pattern, value] = parts;
    const bits = value !== undefined && /^\d+$/.test(value) ? Number(value) : NaN;
    if (parts.length !== 2 || !pattern || !Number.isInteger(bits)) throw new InvalidArgumentError(`--bits-map rule "${rule}" is not pattern=bits`);
    const regex = new RegExp(`^${pattern.split("*").map(escapeRegex).join(".*")}$`);
    return [regex, bits, pattern] as BitsRule;
  });
}

/**
 * Validates --bits against the quantizer: one of its widths, or (a fraction, or any value with
 * `mixed`) a mixed 2/4-bit value strictly between 2 and 4 for quantizers that have both widths.
 */
export function checkBitsOption(bits: number, quantizer: QuantizerKind = "nf", mixed = false): void {
  const widths = supportedBits(quantizer);
  if (Number.isInteger(bits) && !mixed) {
    if (widths.includes(bits)) return;
    const mixable = widths.includes(2) && widths.includes(4) ? " or a mixed-precision value between 2 and 4 (e.g. 2.5)" : "";
    throw new InvalidArgumentError(`--bits must be ${widths.join(", ")}${mixable} with --quantizer ${quantizer}, got ${bits}`);
  }
  if (!(bits > 2 && bits < 4)) throw new InvalidArgumentError(`mixed-precision --bits must lie strictly between 2 and 4 (e.g. 2.5), got ${bits}`);
  if (!widths.includes(2) || !widths.includes(4)) throw new InvalidArgumentError(`mixed 2/4-bit --bits ${bits} needs a quantizer with 2 and 4 bits; --quantizer ${quantizer} has ${widths.join(", ")}`);
}
