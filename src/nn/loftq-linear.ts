import { loftq } from "../loftq/loftq.js";
import { InvalidArgumentError } from "../errors.js";
import { LOFTQ_OPTION_KEYS, type LoftqOptions } from "../loftq/options.js";
import { checkOptionKeys, optionKeysOf } from "../options.js";
import { createQuantizer } from "../quant/quantizer.js";
import type { Matrix } from "../tensor/matrix.js";
import { LoraLinear } from "./lora-linear.js";
import { QuantLinear } from "./quant-linear.js";

/** What fromWeight takes beyond loftq's options: the LoRA layer's own. */
interface LayerOptions {
  /** LoRA alpha (default: the rank, s = 1); `loraAlpha` is accepted as the same thing. */
  alpha?: number;
  dropout?: number;
  bias?: Float32Array;
  /** Keep the dequantized Q in float32 after the first product (default true: speed over memory). */
  cacheDequantized?: boolean;
}

const LAYER_OPTION_KEYS = [...LOFTQ_OPTION_KEYS, ...optionKeysOf<LayerOptions>()(["alpha", "dropout", "bias", "cacheDequantized"])];

/**
 * A LoRA layer initialised by LoftQ: the packed Q as the frozen base and (A, B) carrying W − Q,
 * compensated for the LoRA scaling so that the layer starts at Q + s·B·A ≈ W (with
 * `upstreamScaling` it starts where PEFT's would, at Q + s·(W − Q)).
 */
export const LoftQLinear = {
  fromWeight(weight: Matrix, options: LoftqOptions & LayerOptions = {}): LoraLinear {
    checkOptionKeys(options, LAYER_OPTION_KEYS, "LoftQLinear.fromWeight");
    if (options.alpha !== undefined && options.loraAlpha !== undefined && options.alpha !== options.loraAlpha) {
      throw new InvalidArgumentError(`alpha (${options.alpha}) and loraAlpha (${options.loraAlpha}) name the same LoRA alpha: give one`);
    }
    const { alpha: _alpha, dropout: _dropout, bias: _bias, cacheDequantized: _cache, ...loftqOptions } = options;
    const rank = options.rank ?? 16;
    const alpha = options.alpha ?? options.loraAlpha ?? rank;
    const result = loftq(weight, { ...loftqOptions, rank, loraAlpha: alpha });
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
