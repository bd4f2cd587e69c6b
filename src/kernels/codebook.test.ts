import { test } from "node:test";
import assert from "node:assert/strict";
import { argminThresholds } from "./codebook.js";
import { midpoints, normalFloatTable, symmetricNormalFloatTable, uniformTable } from "../quant/tables.js";
import { mulberry32 } from "../linalg/random.js";
import { ulpsAway } from "../../test/helpers/float32-steps.js";

/** PEFT's rule as upstream computes it: argmin_k |s − t_k| in float32, ties to the lower code. */
function argminInFloat32(s: number, table: Float32Array): number {
  let best = 0;
  let bestDistance = Infinity;
  for (let k = 0; k < table.length; k++) {
    const distance = Math.abs(Math.fround(s - table[k]!));
    if (distance < bestDistance) {
      best = k;
      bestDistance = distance;
    }
  }
  return best;
}

function countAbove(s: number, thresholds: Float32Array): number {
  let count = 0;
  for (const t of thresholds) if (s > t) count++;
  return count;
}

test("argminThresholds reproduce PEFT's float32 argmin for every float32 near a threshold and at random", (t) => {
  const tables: [string, Float32Array][] = [
    ...[2, 3, 4, 8].map((bits) => [`nf${bits}`, normalFloatTable(bits)] as [string, Float32Array]),
    ...[2, 3, 4].map((bits) => [`nf-sym${bits}`, symmetricNormalFloatTable(bits)] as [string, Float32Array]),
    ...[2, 3, 4, 8].map((bits) => [`uniform${bits}`, uniformTable(bits)] as [string, Float32Array]),
  ];
  const random = mulberry32(5);
  let checked = 0;
  let movedFromMidpoint = 0;
  for (const [name, table] of tables) {
    const thresholds = argminThresholds(table);
    const mid = midpoints(table);
    const samples: number[] = [...table, -1, 1, 0, -0];
    thresholds.forEach((threshold, j) => {
      if (threshold !== mid[j]) movedFromMidpoint++;
      for (let step = -300; step <= 300; step++) samples.push(ulpsAway(threshold, step));
    });
    for (let i = 0; i < 20_000; i++) samples.push(Math.fround(random() * 2 - 1));
    for (const s of samples) {
      assert.equal(countAbove(s, thresholds), argminInFloat32(s, table), `${name}: s = ${s}`);
    }
    checked += samples.length;
  }
  t.diagnostic(`${checked} values over ${tables.length} tables agree; ${movedFromMidpoint} thresholds differ from the float32 midpoint`);
});
