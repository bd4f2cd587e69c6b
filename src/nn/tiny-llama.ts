import { InvalidArgumentError } from "../errors.js";
import { gaussianArray, mulberry32 } from "../linalg/random.js";
import type { Matrix } from "../tensor/matrix.js";
import { CausalSelfAttention } from "./causal-attention.js";
import { crossEntropy } from "./cross-entropy.js";
import { Embedding } from "./embedding.js";
import type { Layer } from "./layer.js";
import { Linear } from "./linear.js";
import type { Parameter } from "./parameter.js";
import { applyRope } from "./rope.js";
import { RmsNorm } from "./rms-norm.js";

/**
 * A small decoder-only transformer in Llama's shape, trainable in JS: token embedding, pre-norm
 * blocks (RMSNorm → causal multi-head attention with RoPE → residual; RMSNorm → SwiGLU MLP →
 * residual), final RMSNorm, lm_head. Weights are named as in Hugging Face's Llama, so checkpoints
 * round-trip through safetensors + config.json and `loftq quantize` works on them; every linear can
 * be swapped for a LoRA / LoftQ layer (`replaceLinears`).
 */
export interface TinyLlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  rmsNormEps?: number;
}

export const LINEAR_ROLES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"] as const;
export type LinearRole = (typeof LINEAR_ROLES)[number];

interface Block {
  inputNorm: RmsNorm;
  postNorm: RmsNorm;
  linears: Record<LinearRole, Layer>;
  attention: CausalSelfAttention;
}

/** Activations one forward pass keeps for backward. */
interface BlockCache {
  x: Matrix; normed1: Matrix; q: Matrix; k: Matrix; v: Matrix; attended: Matrix;
  x1: Matrix; normed2: Matrix; gate: Matrix; up: Matrix; hidden: Matrix;
}

export class TinyLlama {
  readonly embed: Embedding;
  readonly blocks: Block[];
  readonly norm: RmsNorm;
  lmHead: Layer;
  private cache: { tokens: ArrayLike<number>; sequenceLength: number; blocks: BlockCache[]; final: Matrix; normedFinal: Matrix } | undefined;

  constructor(readonly config: TinyLlamaConfig, weights?: Map<string, Float32Array>, seed = 0) {
    const { vocabSize: vocab, hiddenSize: d, intermediateSize: ff, layers, heads } = config;
    if (d % heads !== 0 || (d / heads) % 2 !== 0) throw new InvalidArgumentError(`hidden size ${d} must split into ${heads} heads of even width`);
    if (weights) {
      // A checkpoint missing a tensor must not load with a random one in its place.
      const missing = expectedWeightNames(layers).filter((name) => !weights.has(name));
      if (missing.length > 0) throw new InvalidArgumentError(`${missing.length} weights missing: ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", …" : ""}`);
    }
    const random = mulberry32(seed);
    const init = (name: string, length: number, scale: number) => weights?.get(name) ?? gaussianArray(length, random).map((v) => v * scale);
    const linear = (name: string, rows: number, cols: number, scale = 1 / Math.sqrt(cols)) => new Linear({ rows, cols, data: init(name, rows * cols, scale) });
    const eps = config.rmsNormEps ?? 1e-6;
    this.embed = new Embedding(vocab, d, init("model.embed_tokens.weight", vocab * d, 0.02));
    this.blocks = Array.from({ length: layers }, (_, l) => {
      const prefix = `model.layers.${l}.`;
      const residualScale = 1 / Math.sqrt(2 * layers * ff);
      return {
        inputNorm: new RmsNorm(d, eps, weights?.get(`${prefix}input_layernorm.weight`)),
        postNorm: new RmsNorm(d, eps, weights?.get(`${prefix}post_attention_layernorm.weight`)),
        attention: new CausalSelfAttention(heads),
        linears: {
          "self_attn.q_proj": linear(`${prefix}self_attn.q_proj.weight`, d, d),
          "self_attn.k_proj": linear(`${prefix}self_attn.k_proj.weight`, d, d),
          "self_attn.v_proj": linear(`${prefix}self_attn.v_proj.weight`, d, d),
          "self_attn.o_proj": linear(`${prefix}self_attn.o_proj.weight`, d, d, 1 / Math.sqrt(2 * layers * d)),
          "mlp.gate_proj": linear(`${prefix}mlp.gate_proj.weight`, ff, d),
          "mlp.up_proj": linear(`${prefix}mlp.up_proj.weight`, ff, d),
          "mlp.down_proj": linear(`${prefix}mlp.down_proj.weight`, d, ff, residualScale),
        },
      };
    });
    this.norm = new RmsNorm(d, eps, weights?.get("model.norm.weight"));
    this.lmHead = linear("lm_head.weight", vocab, d, 1 / Math.sqrt(d));
  }

  /**
   * Logits (T × vocab). `tokens` is one sequence, or a batch of sequences of `sequenceLength`
   * tokens laid end to end: every linear then sees the whole batch as one matrix (one large gemm
   * instead of many small ones) while attention and positions stay within each sequence.
   */
  forward(tokens: ArrayLike<number>, sequenceLength = tokens.length): Matrix {
    const heads = this.config.heads;
    let x = this.embed.forward(tokens);
    const caches: BlockCache[] = [];
    for (const block of this.blocks) {
      const l = block.linears;
      const normed1 = block.inputNorm.forward(x);
      const q = applyRope(l["self_attn.q_proj"].forward(normed1), heads, 1, sequenceLength);
      const k = applyRope(l["self_attn.k_proj"].forward(normed1), heads, 1, sequenceLength);
      const v = l["self_attn.v_proj"].forward(normed1);
      const attended = block.attention.forward(q, k, v, sequenceLength);
      const x1 = add(x, l["self_attn.o_proj"].forward(attended));
      const normed2 = block.postNorm.forward(x1);
      const gate = l["mlp.gate_proj"].forward(normed2);
      const up = l["mlp.up_proj"].forward(normed2);
      const hidden = swiglu(gate, up);
      const out = add(x1, l["mlp.down_proj"].forward(hidden));
      caches.push({ x, normed1, q, k, v, attended, x1, normed2, gate, up, hidden });
      x = out;
    }
    const normedFinal = this.norm.forward(x);
    this.cache = { tokens, sequenceLength, blocks: caches, final: x, normedFinal };
    return this.lmHead.forward(normedFinal);
  }

  /**
   * Mean next-token cross-entropy (predicting tokens[1..] from tokens[..−1]) of one sequence or of
   * a batch of equally long sequences.
   */
  loss(batch: ArrayLike<number> | ArrayLike<number>[]): number {
    const { input, targets, sequenceLength } = nextTokenPairs(batch);
    // An evaluation: adapters run without dropout, whatever mode training left them in.
    const training = this.linears().filter((layer) => layer.training);
    for (const layer of training) layer.training = false;
    try {
      return crossEntropy(this.forward(input, sequenceLength), targets).loss;
    } finally {
      for (const layer of training) layer.training = true;
    }
  }

  /**
   * Training mode of every layer that has one (LoRA dropout): false for evaluation or inference with
   * `forward`, true again to train. (`loss` always evaluates without dropout.)
   */
  setTraining(training: boolean): void {
    for (const layer of this.linears()) if (layer.training !== undefined) layer.training = training;
  }

  /** Every linear layer, lm_head included, as the ones with a training mode (LoRA) expose it. */
  private linears(): Array<Layer & { training?: boolean }> {
    return [...this.blocks.flatMap((b) => LINEAR_ROLES.map((r) => b.linears[r])), this.lmHead];
  }

  /** Forward + backward on one sequence or a batch; accumulates gradients, returns the mean loss. */
  trainStep(batch: ArrayLike<number> | ArrayLike<number>[]): number {
    const { input, targets, sequenceLength } = nextTokenPairs(batch);
    const { loss, grad } = crossEntropy(this.forward(input, sequenceLength), targets);
    this.backward(grad);
    return loss;
  }

  backward(gradLogits: Matrix): void {
    const cache = this.cache;
    if (!cache) throw new InvalidArgumentError("backward needs a forward pass first");
    const heads = this.config.heads;
    let dx = this.norm.backward(cache.final, this.lmHead.backward(cache.normedFinal, gradLogits));
    for (let b = this.blocks.length - 1; b >= 0; b--) {
      const block = this.blocks[b]!;
      const c = cache.blocks[b]!;
      const l = block.linears;
      // MLP: out = x1 + down(silu(gate) ⊙ up)
      const dHidden = l["mlp.down_proj"].backward(c.hidden, dx);
      const { dGate, dUp } = swigluBackward(c.gate, c.up, dHidden);
      const dNormed2 = add(l["mlp.gate_proj"].backward(c.normed2, dGate), l["mlp.up_proj"].backward(c.normed2, dUp));
      const dx1 = add(dx, block.postNorm.backward(c.x1, dNormed2));
      // Attention: x1 = x + o(attn(rope(q(n1)), rope(k(n1)), v(n1)))
      const dAttended = l["self_attn.o_proj"].backward(c.attended, dx1);
      const { dq, dk, dv } = block.attention.backward(dAttended); // each block owns its attention and its cache
      const dNormed1 = add(
        add(
          l["self_attn.q_proj"].backward(c.normed1, applyRope(dq, heads, -1, cache.sequenceLength)),
          l["self_attn.k_proj"].backward(c.normed1, applyRope(dk, heads, -1, cache.sequenceLength)),
        ),
        l["self_attn.v_proj"].backward(c.normed1, dv),
      );
      dx = add(dx1, block.inputNorm.backward(c.x, dNormed1));
    }
    this.embed.backward(cache.tokens, dx);
  }

  /** Every trainable parameter (the frozen bases of LoRA layers contribute none). */
  parameters(): Parameter[] {
    return [
      ...this.embed.parameters(),
      ...this.blocks.flatMap((b) => [...b.inputNorm.parameters(), ...b.postNorm.parameters(), ...LINEAR_ROLES.flatMap((r) => b.linears[r].parameters())]),
      ...this.norm.parameters(),
      ...this.lmHead.parameters(),
    ];
  }

  /** Swaps every block linear (e.g. for LoRA or LoftQ layers); `make` gets the current one. */
  replaceLinears(make: (layer: number, role: LinearRole, current: Layer) => Layer): void {
    this.blocks.forEach((block, l) => {
      for (const role of LINEAR_ROLES) block.linears[role] = make(l, role, block.linears[role]);
    });
  }

  /** Replaces lm_head (e.g. with a LoRA layer over it); `make` gets the current one. */
  replaceLmHead(make: (current: Layer) => Layer): void {
    this.lmHead = make(this.lmHead);
  }

  /** Freezes the embedding, norms and lm_head (for adapter-only fine-tuning). */
  freezeNonLinear(): void {
    this.embed.parameters = () => [];
    this.norm.parameters = () => [];
    for (const b of this.blocks) {
      b.inputNorm.parameters = () => [];
      b.postNorm.parameters = () => [];
    }
    if (this.lmHead instanceof Linear) this.lmHead = new Linear(this.lmHead.denseWeight(), undefined, true);
  }

  /** Hugging Face names → float32 values (dense weights; LoRA layers contribute their merged weight). */
  stateDict(): Map<string, { shape: number[]; data: Float32Array }> {
    const d = this.config.hiddenSize;
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    out.set("model.embed_tokens.weight", { shape: [this.config.vocabSize, d], data: this.embed.weight.value });
    this.blocks.forEach((block, l) => {
      out.set(`model.layers.${l}.input_layernorm.weight`, { shape: [d], data: block.inputNorm.weight.value });
      out.set(`model.layers.${l}.post_attention_layernorm.weight`, { shape: [d], data: block.postNorm.weight.value });
      for (const role of LINEAR_ROLES) {
        const weight = mergedWeight(block.linears[role]);
        out.set(`model.layers.${l}.${role}.weight`, { shape: [weight.rows, weight.cols], data: weight.data });
      }
    });
    out.set("model.norm.weight", { shape: [d], data: this.norm.weight.value });
    const head = mergedWeight(this.lmHead);
    out.set("lm_head.weight", { shape: [head.rows, head.cols], data: head.data });
    return out;
  }

  /** config.json in Hugging Face's Llama format. */
  hfConfig(): Record<string, unknown> {
    const c = this.config;
    return {
      architectures: ["LlamaForCausalLM"], model_type: "llama", vocab_size: c.vocabSize, hidden_size: c.hiddenSize,
      intermediate_size: c.intermediateSize, num_hidden_layers: c.layers, num_attention_heads: c.heads,
      num_key_value_heads: c.heads, rms_norm_eps: c.rmsNormEps ?? 1e-6, hidden_act: "silu", tie_word_embeddings: false,
      rope_theta: 10000, torch_dtype: "float32",
    };
  }
}

/** A linear's dense weight, a LoRA layer's merged into it (what a saved checkpoint holds). */
function mergedWeight(layer: Layer): Matrix {
  const linear = layer as Layer & { denseWeight?: () => Matrix; merge?: () => Linear };
  return linear.merge ? linear.merge().denseWeight() : linear.denseWeight!();
}

/** The Hugging Face names of every weight of a model with `layers` blocks. */
function expectedWeightNames(layers: number): string[] {
  const names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"];
  for (let l = 0; l < layers; l++) {
    names.push(`model.layers.${l}.input_layernorm.weight`, `model.layers.${l}.post_attention_layernorm.weight`, ...LINEAR_ROLES.map((r) => `model.layers.${l}.${r}.weight`));
  }
  return names;
}

/** Inputs and targets of next-token prediction, the sequences of a batch laid end to end. */
function nextTokenPairs(batch: ArrayLike<number> | ArrayLike<number>[]): { input: Int32Array; targets: Int32Array; sequenceLength: number } {
  const sequences = Array.isArray(batch) && typeof batch[0] !== "number" ? (batch as ArrayLike<number>[]) : [batch as ArrayLike<number>];
  const sequenceLength = (sequences[0]?.length ?? 0) - 1;
  if (sequenceLength < 1 || sequences.some((s) => s.length !== sequenceLength + 1)) {
    throw new InvalidArgumentError(`a batch needs sequences of one length ≥ 2, got lengths ${sequences.map((s) => s.length).join(", ")}`);
  }
  const input = new Int32Array(sequences.length * sequenceLength);
  const targets = new Int32Array(sequences.length * sequenceLength);
  sequences.forEach((sequence, b) => {
    for (let i = 0; i < sequenceLength; i++) {
      input[b * sequenceLength + i] = sequence[i]!;
      targets[b * sequenceLength + i] = sequence[i + 1]!;
    }
  });
  return { input, targets, sequenceLength };
}

function add(a: Matrix, b: Matrix): Matrix {
  const x = a.data;
  const y = b.data;
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! + y[i]!;
  return { rows: a.rows, cols: a.cols, data: out };
}

/** silu(gate) ⊙ up. */
function swiglu(gate: Matrix, up: Matrix): Matrix {
  const g = gate.data;
  const u = up.data;
  const out = new Float32Array(g.length);
  for (let i = 0; i < g.length; i++) out[i] = (g[i]! / (1 + Math.exp(-g[i]!))) * u[i]!;
  return { rows: gate.rows, cols: gate.cols, data: out };
}

/** d/dgate = dH ⊙ up ⊙ silu'(gate), d/dup = dH ⊙ silu(gate), with silu'(z) = σ(z)(1 + z(1 − σ(z))). */
function swigluBackward(gate: Matrix, up: Matrix, gradHidden: Matrix): { dGate: Matrix; dUp: Matrix } {
  const g = gate.data;
  const u = up.data;
  const dh = gradHidden.data;
  const dGate = new Float32Array(g.length);
  const dUp = new Float32Array(g.length);
  for (let i = 0; i < g.length; i++) {
    const z = g[i]!;
    const sigma = 1 / (1 + Math.exp(-z));
    dGate[i] = dh[i]! * u[i]! * sigma * (1 + z * (1 - sigma));
    dUp[i] = dh[i]! * z * sigma;
  }
  return { dGate: { rows: gate.rows, cols: gate.cols, data: dGate }, dUp: { rows: up.rows, cols: up.cols, data: dUp } };
}
