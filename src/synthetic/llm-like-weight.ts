import { householderQr } from "../linalg/householder-qr.js";
import { gaussian, mulberry32 } from "../linalg/random.js";
import type { Matrix } from "../tensor/matrix.js";

/**
 * A synthetic matrix built like an LLM weight, for benchmarks and tests at scales no bundled model
 * reaches: Gaussian noise (std 0.02) + a rank-`lowRank` part with geometrically decaying singular
 * values holding `lowRankEnergy` of the noise energy + `outlierColumns` columns scaled by
 * `outlierScale` (the activation-outlier channels real models have). Deterministic per seed.
 */
export interface LlmLikeOptions {
  seed?: number;
  lowRank?: number;
  decay?: number;
  lowRankEnergy?: number;
  outlierColumns?: number;
  outlierScale?: number;
}

export function llmLikeWeight(rows: number, cols: number, options: LlmLikeOptions = {}): Matrix {
  // Defaults follow the recipe of the PEFT reference vectors' "llm" matrices, with 8 outlier columns.
  const { seed = 1, lowRank = 32, decay = 0.85, lowRankEnergy = 0.25, outlierColumns = 8, outlierScale = 10 } = options;
  const random = mulberry32(seed);
  const data = new Float32Array(rows * cols);
  let noiseEnergy = 0;
  for (let i = 0; i < data.length; i++) {
    const v = Math.fround(gaussian(random) * 0.02);
    data[i] = v;
    noiseEnergy += v * v;
  }
  const rank = Math.min(lowRank, rows, cols);
  if (rank > 0 && lowRankEnergy > 0) {
    const u = householderQr(Float64Array.from({ length: rows * rank }, () => gaussian(random)), rows, rank).q;
    const v = householderQr(Float64Array.from({ length: cols * rank }, () => gaussian(random)), cols, rank).q;
    const sigma = Array.from({ length: rank }, (_, i) => decay ** i);
    const scale = Math.sqrt((lowRankEnergy * noiseEnergy) / sigma.reduce((sum, s) => sum + s * s, 0));
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        let sum = 0;
        for (let p = 0; p < rank; p++) sum += u[i * rank + p]! * sigma[p]! * v[j * rank + p]!;
        data[i * cols + j]! += sum * scale;
      }
    }
  }
  const chosen = new Set<number>();
  while (chosen.size < Math.min(outlierColumns, cols)) chosen.add(Math.floor(random() * cols));
  for (const j of chosen) for (let i = 0; i < rows; i++) data[i * cols + j]! *= outlierScale;
  return { rows, cols, data };
}
