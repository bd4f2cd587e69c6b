import { AdamW, LoftQLinear, Linear, clipGradNorm, cosineSchedule, frobeniusDistance, frobeniusNorm, matrix, zeroGrad } from "../src/index.js";

// A pretrained weight W and a task that wants W + ΔW (a rank-1 change): the 2-bit LoftQ layer starts
// at ≈ W, and training its adapter (A, B) learns ΔW on top of the frozen quantized Q.
let state = 1;
const random = () => (state = (state * 48271) % 2147483647) / 2147483647 - 0.5; // seeded: same run every time
const [outFeatures, inFeatures, batch, steps] = [64, 128, 32, 300];
const w = matrix(outFeatures, inFeatures, Float32Array.from({ length: outFeatures * inFeatures }, () => 0.2 * random()));
const [u, v] = [Float32Array.from({ length: outFeatures }, random), Float32Array.from({ length: inFeatures }, random)];
const goal = new Linear(matrix(outFeatures, inFeatures, w.data.map((x, i) => x + 0.2 * u[Math.floor(i / inFeatures)]! * v[i % inFeatures]!)), undefined, true);

const layer = LoftQLinear.fromWeight(w, { bits: 2, rank: 8, iterations: 5, alpha: 16, dropout: 0.05 });
const distance = (weight: Float32Array) => frobeniusDistance(weight, goal.weight.value) / frobeniusNorm(goal.weight.value);
const start = distance(layer.merge().weight.value);
const optimizer = new AdamW(layer.parameters(), { lr: 1e-2, weightDecay: 0.01 });
const losses: number[] = [];
for (let step = 0; step < steps; step++) {
  const x = matrix(batch, inFeatures, Float32Array.from({ length: batch * inFeatures }, random));
  const y = layer.forward(x); // batch×out
  const wanted = goal.forward(x).data;
  losses.push(y.data.reduce((sum, value, i) => sum + (value - wanted[i]!) ** 2, 0) / y.data.length);
  const dLossDy = matrix(batch, outFeatures, y.data.map((value, i) => (2 * (value - wanted[i]!)) / y.data.length)); // d(mean squared error)/dy
  zeroGrad(layer.parameters()); // backward adds to the gradients
  layer.backward(x, dLossDy); // the same x object as forward's; fills lora_A / lora_B gradients, returns dL/dx
  clipGradNorm(layer.parameters(), 1);
  optimizer.lr = cosineSchedule(step, { peak: 1e-2, total: steps, warmup: 10 });
  optimizer.update();
}
layer.training = false; // dropout off from here on
const merged = layer.merge(); // a Linear with W = Q + (alpha/r)·B·A; the layer is unchanged
const q = layer.unmerge(merged); // Q again, as a Matrix (to float32 rounding)
console.log(`loss ${losses[0]!.toExponential(2)} → ${losses.at(-1)!.toExponential(2)}`);
console.log(`‖W' − goal‖/‖goal‖: Q ${distance(q.data).toFixed(3)}, LoftQ start ${start.toFixed(3)}, trained ${distance(merged.weight.value).toFixed(3)}`);
