import { test } from "node:test";
import assert from "node:assert/strict";
import { RmsNorm } from "./rms-norm.js";
import { Embedding } from "./embedding.js";
import { crossEntropy } from "./cross-entropy.js";
import { CausalSelfAttention } from "./causal-attention.js";
import { gaussianArray, mulberry32 } from "../linalg/random.js";
import type { Matrix } from "../tensor/matrix.js";
import { worstGradientError } from "../../test/helpers/finite-differences.js";

const random = mulberry32(7);
const randomMatrix = (rows: number, cols: number): Matrix => ({ rows, cols, data: gaussianArray(rows * cols, random) });

/** Central differences at 16 random elements against `grad`, printed and bounded. */
function check(name: string, values: Float32Array, grad: Float32Array, lossOf: () => number, t: { diagnostic(m: string): void }): void {
  const worst = worstGradientError(values, grad, lossOf, random, 16);
  t.diagnostic(`${name}: worst relative difference to finite differences ${worst.toExponential(2)}`);
  assert.ok(worst < 5e-3, `${name}: ${worst}`);
}

const weighted = (m: Matrix, r: Matrix) => m.data.reduce((s, v, i) => s + v * r.data[i]!, 0);

test("RMSNorm: gradients for the input and the gain", (t) => {
  const norm = new RmsNorm(12, 1e-6, gaussianArray(12, random));
  const x = randomMatrix(5, 12);
  const r = randomMatrix(5, 12);
  const dx = norm.backward(x, r);
  check("input", x.data, dx.data, () => weighted(norm.forward(x), r), t);
  check("gain", norm.weight.value, norm.weight.grad, () => weighted(norm.forward(x), r), t);
});

test("causal self-attention: dQ, dK, dV match finite differences; the future is masked", (t) => {
  const attention = new CausalSelfAttention(2);
  const [q, k, v] = [randomMatrix(6, 8), randomMatrix(6, 8), randomMatrix(6, 8)];
  const r = randomMatrix(6, 8);
  attention.forward(q, k, v);
  const { dq, dk, dv } = attention.backward(r);
  const loss = () => weighted(attention.forward(q, k, v), r);
  check("dQ", q.data, dq.data, loss, t);
  check("dK", k.data, dk.data, loss, t);
  check("dV", v.data, dv.data, loss, t);
  const before = attention.forward(q, k, v).data.slice(0, 8);
  v.data[5 * 8] = v.data[5 * 8]! + 100; // the last position's value cannot reach the first output
  assert.deepEqual(attention.forward(q, k, v).data.slice(0, 8), before);
});

test("cross-entropy: loss of uniform logits is log(vocab); gradient matches finite differences", (t) => {
  assert.ok(Math.abs(crossEntropy({ rows: 2, cols: 5, data: new Float32Array(10) }, [1, 3]).loss - Math.log(5)) < 1e-12);
  const logits = randomMatrix(4, 7);
  const targets = [0, 6, 3, 3];
  const { grad } = crossEntropy(logits, targets);
  check("logits", logits.data, grad.data, () => crossEntropy(logits, targets).loss, t);
});

test("embedding: lookup and scatter-add gradient; out-of-vocabulary tokens are errors", () => {
  const table = gaussianArray(5 * 3, random);
  const embedding = new Embedding(5, 3, table);
  const out = embedding.forward([4, 0, 4]);
  assert.deepEqual(out.data.slice(0, 3), table.slice(12, 15));
  embedding.backward([4, 0, 4], { rows: 3, cols: 3, data: Float32Array.from([1, 1, 1, 2, 2, 2, 3, 3, 3]) });
  assert.deepEqual(Array.from(embedding.weight.grad.slice(12, 15)), [4, 4, 4]);
  assert.deepEqual(Array.from(embedding.weight.grad.slice(0, 3)), [2, 2, 2]);
  assert.throws(() => embedding.forward([5]), /outside the vocabulary/);
});
