import { test } from "node:test";
import assert from "node:assert/strict";
import { InvalidArgumentError, ShapeError } from "../errors.js";
import { createQuantizer } from "../quant/quantizer.js";
import { gaussianArray, mulberry32 } from "../linalg/random.js";
import type { Matrix } from "../tensor/matrix.js";
import { CausalSelfAttention } from "./causal-attention.js";
import { crossEntropy } from "./cross-entropy.js";
import { Embedding } from "./embedding.js";
import { Linear } from "./linear.js";
import { layerSeed, LoraLinear } from "./lora-linear.js";
import { QuantLinear } from "./quant-linear.js";
import { applyRope } from "./rope.js";
import { TinyLlama } from "./tiny-llama.js";

const random = mulberry32(3);
const randomMatrix = (rows: number, cols: number): Matrix => ({ rows, cols, data: gaussianArray(rows * cols, random) });

test("LoRA backward belongs to the last forward's input: another forward in between or a wrong dY shape is an error", () => {
  const layer = new LoraLinear(new Linear(randomMatrix(3, 4), undefined, true), { rank: 2, init: { a: randomMatrix(2, 4), b: randomMatrix(3, 2) } });
  const x1 = randomMatrix(2, 4);
  const x2 = randomMatrix(2, 4);
  layer.forward(x1);
  layer.forward(x2);
  assert.throws(() => layer.backward(x1, randomMatrix(2, 3)), InvalidArgumentError);
  assert.throws(() => layer.backward(x2, randomMatrix(2, 5)), ShapeError);
  layer.backward(x2, randomMatrix(2, 3));
  for (const alpha of [NaN, -8, 0, Infinity]) assert.throws(() => new LoraLinear(new Linear(randomMatrix(3, 4)), { rank: 2, alpha }), InvalidArgumentError);
});

test("LoRA layers made without a seed draw different A and dropout masks; layerSeed differs by layer name", () => {
  const base = () => new Linear(randomMatrix(3, 4), undefined, true);
  const [first, second] = [new LoraLinear(base(), { rank: 2 }), new LoraLinear(base(), { rank: 2 })];
  assert.notDeepEqual(first.a.value, second.a.value);
  const seeded = (seed: number) => new LoraLinear(base(), { rank: 2, seed }).a.value;
  assert.deepEqual(seeded(7), seeded(7));
  assert.notEqual(layerSeed(0, "model.layers.0.self_attn.q_proj"), layerSeed(0, "model.layers.0.self_attn.k_proj"));
  assert.notEqual(layerSeed(0, "q"), layerSeed(1, "q"));
});

test("nn layers refuse mismatched shapes, bad targets and fractional tokens with typed errors", () => {
  assert.throws(() => crossEntropy(randomMatrix(2, 4), [1, 4]), InvalidArgumentError);
  assert.throws(() => crossEntropy(randomMatrix(2, 4), [1, 0.5]), InvalidArgumentError);
  assert.throws(() => crossEntropy(randomMatrix(2, 4), [-1, 0]), InvalidArgumentError);
  const quantizer = createQuantizer({ kind: "nf", bits: 4 });
  assert.throws(() => new QuantLinear(quantizer.quantize(randomMatrix(4, 64)), quantizer, new Float32Array(2)), ShapeError);
  assert.throws(() => new Linear({ rows: 3, cols: 4, data: new Float32Array(13) }), ShapeError);
  const linear = new Linear(randomMatrix(3, 4));
  const x = randomMatrix(2, 4);
  linear.forward(x);
  assert.throws(() => linear.backward(x, randomMatrix(2, 5)), ShapeError);
  const attention = new CausalSelfAttention(2);
  assert.throws(() => attention.forward(randomMatrix(4, 4), randomMatrix(2, 4), randomMatrix(4, 4)), ShapeError);
  assert.throws(() => attention.forward(randomMatrix(4, 4), randomMatrix(4, 4), randomMatrix(4, 6)), ShapeError);
  attention.forward(randomMatrix(4, 4), randomMatrix(4, 4), randomMatrix(4, 4));
  assert.throws(() => attention.backward(randomMatrix(4, 2)), ShapeError);
  assert.throws(() => applyRope(randomMatrix(2, 6), 4), ShapeError);
  assert.throws(() => applyRope(randomMatrix(2, 6), 2), ShapeError);
  assert.throws(() => new Embedding(3, 2, new Float32Array(6)).forward([0.5]), InvalidArgumentError);
});

test("TinyLlama: weights given without one of the model's tensors are an error; loss() runs without dropout", () => {
  const config = { vocabSize: 11, hiddenSize: 8, intermediateSize: 12, layers: 1, heads: 2 };
  const weights = new TinyLlama(config).stateDict();
  const map = new Map([...weights].map(([name, { data }]) => [name, data]));
  map.delete("lm_head.weight");
  assert.throws(() => new TinyLlama(config, map), (error: unknown) => error instanceof InvalidArgumentError && /lm_head\.weight/.test((error as Error).message));
  const model = new TinyLlama(config);
  model.replaceLinears((_, __, current) => new LoraLinear(current as Linear, { rank: 2, dropout: 0.5, init: { a: randomMatrix(2, current.inFeatures), b: randomMatrix(current.outFeatures, 2) } }));
  const sequence = [1, 5, 3, 9, 0, 7, 2];
  assert.equal(model.loss(sequence), model.loss(sequence));
});

test("LoRA checks its input whole before any work, and backward leaves the base's gradients alone", () => {
  const trainableBase = new Linear(randomMatrix(3, 4));
  const layer = new LoraLinear(trainableBase, { rank: 2, init: { a: randomMatrix(2, 4), b: randomMatrix(3, 2) } });
  // Right column count, too few values: refused by forward, so backward never half-runs.
  assert.throws(() => layer.forward({ rows: 2, cols: 4, data: new Float32Array(6) }), /needs 8 values, got 6/);
  assert.throws(() => layer.forward(null as unknown as Matrix), ShapeError);
  assert.deepEqual([...layer.a.grad, ...layer.b.grad].filter((g) => g !== 0), []);
  const x = randomMatrix(2, 4);
  layer.forward(x);
  layer.backward(x, randomMatrix(2, 3));
  assert.ok(layer.a.grad.some((g) => g !== 0));
  assert.ok(trainableBase.weight.grad.every((g) => g === 0), "the base is frozen under the adapter");
  const quantBase = new QuantLinear(createQuantizer({ bits: 4 }).quantize(randomMatrix(3, 64)), createQuantizer({ bits: 4 }));
  assert.throws(() => quantBase.backward({ rows: 2, cols: 8, data: new Float32Array(16) }, randomMatrix(2, 3)), /input is 2×8, expected 2×64/);
  // Options: unknown keys, a wrong-typed flag, a seed the generator would truncate, init arrays that do not fit their shape.
  assert.throws(() => new LoraLinear(trainableBase, { rank: 2, lora_alpha: 4 } as never), /unknown option "lora_alpha" \(did you mean "alpha"\?\)/);
  assert.throws(() => new LoraLinear(trainableBase, { rank: 2, useRslora: "yes" } as never), /useRslora must be true or false/);
  assert.throws(() => new LoraLinear(trainableBase, { rank: 2, seed: 1.5 }), /seed must be an integer/);
  assert.throws(() => new LoraLinear(trainableBase, { rank: 2, init: { a: { rows: 2, cols: 4, data: new Float32Array(3) }, b: randomMatrix(3, 2) } }), /needs 8 values, got 3/);
});

test("unmerge takes a merged Linear of the layer's shape", () => {
  const layer = new LoraLinear(new Linear(randomMatrix(3, 4), undefined, true), { rank: 2, init: { a: randomMatrix(2, 4), b: randomMatrix(3, 2) } });
  assert.throws(() => layer.unmerge(new Linear(randomMatrix(3, 5))), /merged weight is 3×5, expected 3×4/);
  assert.throws(() => layer.unmerge(randomMatrix(3, 4) as never), /takes the Linear that merge\(\) returned/);
  const merged = layer.merge();
  const back = layer.unmerge(merged);
  assert.ok(back.data.every((v, i) => Math.abs(v - layer.base.denseWeight().data[i]!) < 1e-5));
});
