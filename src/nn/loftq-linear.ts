import { loftq } from "../loftq/loftq.js";
import type { LoftqOptions } from "../loftq/options.js";
import { createQuantizer } from "../quant/quantizer.js";
import type { Matrix } from "../tensor/matrix.js";
import { LoraLinear } from "./lora-linear.js";
import { QuantLinear } from "./quant-linear.js";

/**
 * A LoRA layer initialised by LoftQ: the packed Q as the frozen base and (A, B) carrying W − Q,
 * compensated for the LoRA scaling so that the layer starts at Q + s·B·A ≈ W.
 */
export const LoftQLinear = {
  fromWeight(weight: Matrix, options: LoftqOptions & { alpha?: number; dropout?: number; bias?: Float32Array; cacheDequantized?: boolean } = {}): LoraLinear {
    const rank = options.rank ?? 16;
    const alpha = options.alpha ?? rank;
    const result = loftq(weight, { ...options, rank, loraAlpha: alpha });
    const quantizer = createQuantizer({
      kind: options.quantizer ?? "nf",
      bits: result.quantized.bits,
      ...(options.blockSize !== undefined ? { blockSize: options.blockSize } : {}),
      ...(options.doubleQuant !== undefined ? { doubleQuant: options.doubleQuant } : {}),
    });
    const base = new QuantLinear(result.quantized, quantizer, options.bias, options.cacheDequantized ?? true);
    return new LoraLinear(base, {
      rank,
      alpha,
      ...(options.useRslora ? { useRslora: true } : {}),
      ...(options.dropout !== undefined ? { dropout: options.dropout } : {}),
      // The dropout masks follow the LoftQ seed, so one seed gives one run whatever was built before.
      ...(options.seed !== undefined ? { seed: options.seed } : {}),
      init: { a: result.loraA, b: result.loraB },
    });
  },
};
