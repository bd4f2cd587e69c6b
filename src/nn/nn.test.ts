import { test } from "node:test";
import assert from "node:assert/strict";
import { Linear } from "./linear.js";
import { LoraLinear, requantizeMerged } from "./lora-linear.js";
import { LoftQLinear } from "./loftq-linear.js";
import { QuantLinear } from "./quant-linear.js";
import { AdamW, clipGradNorm, cosineSchedule } from "./optim.js";
import { parameter, zeroGrad, type Parameter } from "./parameter.js";
import type { Layer } from "./layer.js";
import { tsBackend } from "../kernels/ts-backend.js";
import { gaussianArray, mulberry32 } from "../linalg/random.js";
import { createQuantizer } from "../quant/quantizer.js";
import { llmLikeWeight } from "../synthetic/llm-like-weight.js";
import type { Matrix } from "../tensor/matrix.js";
import { worstGradientError } from "../../test/helpers/finite-differences.js";

const random = mulberry32(99);
const randomMatrix = (rows: number, cols: number, scale = 1): Matrix => ({ rows, cols, data: gaussianArray(rows * cols, random).map((v) => v * scale) });

/** L = Σ Y ⊙ R, so dL/dY = R. */
function loss(layer: Layer, x: Matrix, r: Matrix): number {
  const y = layer.forward(x);
  let sum = 0;
  for (let i = 0; i < y.data.length; i++) sum += y.data[i]! * r.data[i]!;
  return sum;
}

/** Worst relative difference between backward's gradients and central differences. */
function gradientCheck(layer: Layer, x: Matrix, checked: Parameter[], t: { diagnostic(message: string): void }): void {
  const r = randomMatrix(x.rows, layer.outFeatures);
  for (const p of layer.parameters()) p.grad.fill(0);
  layer.forward(x);
  const dx = layer.backward(x, r);
  const targets: Array<{ name: string; values: Float32Array; grad: Float32Array }> = [...checked, { name: "input", value: x.data, grad: dx.data }].map((p) => ({
    name: p.name,
    values: (p as Parameter).value,
    grad: p.grad,
  }));
  for (const { name, values, grad } of targets) {
    const worst = worstGradientError(values, grad, () => loss(layer, x, r), random, 12);
    t.diagnostic(`${name}: worst relative difference to finite differences ${worst.toExponential(2)}`);
    assert.ok(worst < 2e-3, `${name}: ${worst}`);
  }
}

test("Linear: gradients for the weight, the bias and the input match finite differences", (t) => {
  const layer = new Linear(randomMatrix(5, 7), gaussianArray(5, random), false, tsBackend);
  gradientCheck(layer, randomMatrix(4, 7), layer.parameters(), t);
});

test("LoRA on a frozen base: gradients for A, B and the input; the base gets none", (t) => {
  const base = new Linear(randomMatrix(6, 9), gaussianArray(6, random), true, tsBackend);
  const lora = new LoraLinear(base, { rank: 3, alpha: 6, init: { a: randomMatrix(3, 9), b: randomMatrix(6, 3) } }, tsBackend);
  assert.equal(lora.scaling, 2);
  gradientCheck(lora, randomMatrix(4, 9), lora.parameters(), t);
  assert.ok(base.weight.grad.every((g) => g === 0), "frozen base untouched");
  assert.deepEqual(lora.parameters().map((p) => p.name), ["lora_A", "lora_B"]);
  const rs = new LoraLinear(base, { rank: 4, alpha: 8, useRslora: true }, tsBackend);
  assert.equal(rs.scaling, 4);
  assert.ok(rs.b.value.every((v) => v === 0), "PEFT's default init: B = 0");
});

test("LoRA on a quantized base: gradients flow to the input through the dequantized weight", (t) => {
  const quantizer = createQuantizer({ kind: "nf", bits: 4 });
  const base = new QuantLinear(quantizer.quantize(randomMatrix(8, 64)), quantizer, undefined, false, tsBackend);
  const lora = new LoraLinear(base, { rank: 2, init: { a: randomMatrix(2, 64), b: randomMatrix(8, 2) } }, tsBackend);
  gradientCheck(lora, randomMatrix(3, 64), lora.parameters(), t);
});

test("dropout: identity in eval mode, mean-preserving in training, masked gradients", () => {
  const base = new Linear(randomMatrix(4, 16), undefined, true, tsBackend);
  const lora = new LoraLinear(base, { rank: 2, dropout: 0.5, init: { a: randomMatrix(2, 16), b: randomMatrix(4, 2) } }, tsBackend);
  const x = randomMatrix(2, 16);
  lora.training = false;
  const evalOut = lora.forward(x).data;
  lora.training = false;
  assert.deepEqual(lora.forward(x).data, evalOut);
  lora.training = true;
  const trainOut = lora.forward(x).data;
  assert.notDeepEqual(trainOut, evalOut);
  const dx = lora.backward(x, randomMatrix(2, 4));
  assert.ok(dx.data.every(Number.isFinite));
});

test("merge and unmerge share one delta: merged forward equals the adapter's, unmerge gives the base back", () => {
  const base = new Linear(randomMatrix(6, 10), gaussianArray(6, random), true, tsBackend);
  const lora = new LoraLinear(base, { rank: 3, alpha: 12, init: { a: randomMatrix(3, 10), b: randomMatrix(6, 3) } }, tsBackend);
  lora.training = false;
  const x = randomMatrix(5, 10);
  const merged = lora.merge();
  const difference = Math.max(...merged.forward(x).data.map((v, i) => Math.abs(v - lora.forward(x).data[i]!)));
  assert.ok(difference < 1e-5, `merged vs adapter ${difference}`);
  const restored = lora.unmerge(merged);
  assert.ok(Math.max(...restored.data.map((v, i) => Math.abs(v - base.weight.value[i]!))) < 1e-5);
  const warnings: string[] = [];
  const requantized = requantizeMerged(merged, createQuantizer({ kind: "nf", bits: 4 }), (message) => warnings.push(message));
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /re-quantizing a merged LoRA weight with nf4 loses/);
  assert.equal(requantized.outFeatures, 6);
});

test("LoftQLinear starts closer to the full-precision layer than QLoRA's zero-initialised adapter", () => {
  const weight = llmLikeWeight(128, 256, { seed: 4 });
  const dense = new Linear(weight, undefined, true, tsBackend);
  const x = randomMatrix(16, 256);
  const reference = dense.forward(x).data;
  const distance = (layer: Layer) => Math.sqrt(layer.forward(x).data.reduce((s, v, i) => s + (v - reference[i]!) ** 2, 0));
  for (const bits of [2, 4]) {
    const loftq = LoftQLinear.fromWeight(weight, { bits, rank: 16, iterations: 3, alpha: 32 });
    loftq.training = false;
    const quantizer = createQuantizer({ kind: "nf", bits });
    const qlora = new LoraLinear(new QuantLinear(quantizer.quantize(weight), quantizer), { rank: 16, alpha: 32 });
    assert.ok(distance(loftq) < 0.9 * distance(qlora), `${bits}-bit: LoftQ ${distance(loftq)} vs QLoRA ${distance(qlora)}`);
    assert.equal(loftq.trainableParameterCount(), 16 * (128 + 256));
    assert.equal(loftq.parameterCount(), 128 * 256 + 16 * (128 + 256));
  }
});

test("AdamW minimises a quadratic; the cosine schedule warms up and decays; clipping bounds the norm", () => {
  const p = parameter("x", Float32Array.from([3, -2, 5]));
  const optimizer = new AdamW([p], { lr: 0.1, weightDecay: 0 });
  for (let step = 0; step < 300; step++) {
    zeroGrad([p]);
    for (let i = 0; i < 3; i++) p.grad[i] = 2 * (p.value[i]! - 1); // d/dx (x − 1)²
    optimizer.update();
  }
  assert.ok(p.value.every((v) => Math.abs(v - 1) < 0.05), `converged to ${Array.from(p.value)}`);
  const decayed = parameter("w", Float32Array.from([1]));
  new AdamW([decayed], { lr: 0.1, weightDecay: 0.5 }).update();
  assert.ok(Math.abs(decayed.value[0]! - (1 - 0.1 * 0.5)) < 1e-6, "decoupled weight decay with a zero gradient");
  assert.equal(cosineSchedule(0, { peak: 1, total: 100, warmup: 10 }), 0.1);
  assert.equal(cosineSchedule(9, { peak: 1, total: 100, warmup: 10 }), 1);
  assert.ok(Math.abs(cosineSchedule(55, { peak: 1, total: 100, warmup: 10 }) - 0.5) < 1e-12);
  assert.equal(cosineSchedule(100, { peak: 1, total: 100, warmup: 10, min: 0.1 }), 0.1);
  const g = parameter("g", new Float32Array(2));
  g.grad.set([3, 4]);
  assert.equal(clipGradNorm([g], 1), 5);
  assert.ok(Math.abs(Math.hypot(g.grad[0]!, g.grad[1]!) - 1) < 1e-6);
});

test("LoftQLinear.fromWeight takes loraAlpha as alpha, refuses both disagreeing and unknown options", () => {
  const weight = llmLikeWeight(32, 48, { seed: 5 });
  assert.equal(LoftQLinear.fromWeight(weight, { bits: 4, rank: 8, loraAlpha: 32 }).scaling, 4);
  assert.equal(LoftQLinear.fromWeight(weight, { bits: 4, rank: 8, alpha: 32, loraAlpha: 32 }).scaling, 4);
  assert.throws(() => LoftQLinear.fromWeight(weight, { rank: 8, alpha: 16, loraAlpha: 32 }), /name the same LoRA alpha/);
  assert.throws(() => LoftQLinear.fromWeight(weight, { rank: 8, dropot: 0.1 } as never), /LoftQLinear.fromWeight: unknown option "dropot" \(did you mean "dropout"\?\)/);
});

test("optimizer settings that would train uphill, go NaN or double-step are refused", () => {
  const p = parameter("p", Float32Array.from([1, 2]));
  for (const options of [{ eps: -1 }, { eps: NaN }, { weightDecay: -0.1 }, { weightDecay: NaN }, { lr: Infinity }]) {
    assert.throws(() => new AdamW([p], options), /AdamW/, JSON.stringify(options));
  }
  assert.throws(() => new AdamW([p], { learningRate: 0.1 } as never), /unknown option "learningRate"/);
  assert.throws(() => new AdamW([p, p]), /listed twice/);
  const optimizer = new AdamW([p]);
  optimizer.lr = NaN; // as a broken schedule would set it
  assert.throws(() => optimizer.update(), /lr must be a finite number/);
  assert.deepEqual([...p.value], [1, 2]);
  for (const maxNorm of [-1, 0, NaN]) assert.throws(() => clipGradNorm([p], maxNorm), /maxNorm must be > 0/);
  assert.throws(() => cosineSchedule(0, { peak: 1, total: 10, warmup: 20 }), /warmup must be an integer in 0..10/);
  assert.throws(() => cosineSchedule(0, { peak: 1, total: 0 }), /total must be a positive integer/);
});
