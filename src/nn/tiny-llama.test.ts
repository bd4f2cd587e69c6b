import { test } from "node:test";
import assert from "node:assert/strict";
import { TinyLlama } from "./tiny-llama.js";
import { LoraLinear } from "./lora-linear.js";
import type { BaseLayer } from "./layer.js";
import { zeroGrad } from "./parameter.js";
import { applyRope } from "./rope.js";
import { AdamW } from "./optim.js";
import { gaussianArray, mulberry32 } from "../linalg/random.js";

const config = { vocabSize: 11, hiddenSize: 8, intermediateSize: 12, layers: 2, heads: 2 };
const tokens = [1, 5, 3, 9, 0, 7, 2];

test("RoPE is a rotation: norms kept, the inverse angle undoes it", () => {
  const x = { rows: 5, cols: 8, data: gaussianArray(40, mulberry32(1)) };
  const rotated = applyRope(x, 2);
  const back = applyRope(rotated, 2, -1);
  assert.ok(back.data.every((v, i) => Math.abs(v - x.data[i]!) < 1e-5));
  const norm = (d: Float32Array) => Math.hypot(...d);
  assert.ok(Math.abs(norm(rotated.data) - norm(x.data)) < 1e-4);
  assert.deepEqual(rotated.data.slice(0, 8), x.data.slice(0, 8), "position 0 is not rotated");
});

test("TinyLlama: every parameter's gradient matches finite differences of the loss", (t) => {
  const model = new TinyLlama(config, undefined, 3);
  const parameters = model.parameters();
  zeroGrad(parameters);
  model.trainStep(tokens);
  const random = mulberry32(5);
  let worst = 0;
  for (const p of parameters) {
    // Gradients far below the tensor's largest are dominated by float32 rounding in the forward
    // pass, so errors are measured against at least 1% of that largest gradient.
    const floor = 1e-2 * Math.max(...Array.from(p.grad, Math.abs));
    for (let trial = 0; trial < 3; trial++) {
      const i = Math.floor(random() * p.value.length);
      const original = p.value[i]!;
      const h = 1e-2 * Math.max(0.1, Math.abs(original));
      p.value[i] = original + h;
      const up = model.loss(tokens);
      p.value[i] = original - h;
      const down = model.loss(tokens);
      p.value[i] = original;
      const numeric = (up - down) / (2 * h);
      worst = Math.max(worst, Math.abs(numeric - p.grad[i]!) / Math.max(floor, Math.abs(numeric) + Math.abs(p.grad[i]!)));
    }
  }
  t.diagnostic(`${parameters.length} parameter tensors, worst relative difference ${worst.toExponential(2)}`);
  assert.ok(worst < 1e-2, `worst ${worst}`);
});

test("TinyLlama: a batch is the mean of its sequences (loss and gradients), each attending only within itself", () => {
  const other = [4, 4, 8, 2, 10, 1, 6];
  const model = new TinyLlama(config, undefined, 3);
  const parameters = model.parameters();
  const gradients = (batch: number[] | number[][]) => {
    zeroGrad(parameters);
    const loss = model.trainStep(batch);
    return { loss, grads: parameters.map((p) => Float64Array.from(p.grad)) };
  };
  const first = gradients(tokens);
  const second = gradients(other);
  const both = gradients([tokens, other]);
  assert.ok(Math.abs(both.loss - (first.loss + second.loss) / 2) < 1e-5, `${both.loss} vs ${(first.loss + second.loss) / 2}`);
  let worst = 0;
  both.grads.forEach((g, p) => g.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - (first.grads[p]![i]! + second.grads[p]![i]!) / 2)))));
  assert.ok(worst < 1e-5, `max gradient difference ${worst}`);
  assert.equal(model.loss([tokens, other]), both.loss);
  assert.throws(() => model.trainStep([tokens, [1, 2]]), /one length/);
});

test("TinyLlama learns a repeated sequence; LoRA-only training leaves the base frozen", () => {
  const model = new TinyLlama(config, undefined, 4);
  const optimizer = new AdamW(model.parameters(), { lr: 3e-2, weightDecay: 0 });
  const first = model.loss(tokens);
  for (let step = 0; step < 60; step++) {
    zeroGrad(optimizer.parameters);
    model.trainStep(tokens);
    optimizer.update();
  }
  assert.ok(model.loss(tokens) < 0.3 * first, `loss ${first} → ${model.loss(tokens)}`);

  const base = new TinyLlama(config, undefined, 4);
  base.freezeNonLinear();
  base.replaceLinears((_, __, current) => new LoraLinear(current as BaseLayer, { rank: 2, alpha: 4 }));
  const trainable = base.parameters();
  assert.ok(trainable.every((p) => p.name === "lora_A" || p.name === "lora_B"));
  assert.equal(trainable.length, 2 * 7 * 2);
  const before = base.stateDict().get("model.layers.0.self_attn.q_proj.weight")!.data.slice();
  const adapterOptimizer = new AdamW(trainable, { lr: 3e-2, weightDecay: 0 });
  const start = base.loss(tokens);
  for (let step = 0; step < 40; step++) {
    zeroGrad(trainable);
    base.trainStep(tokens);
    adapterOptimizer.update();
  }
  assert.ok(base.loss(tokens) < start, "adapters alone reduce the loss");
  const merged = base.stateDict().get("model.layers.0.self_attn.q_proj.weight")!.data;
  assert.notDeepEqual(merged, before, "stateDict merges the trained adapter");
});
