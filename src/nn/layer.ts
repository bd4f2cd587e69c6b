import type { Matrix } from "../tensor/matrix.js";
import type { Parameter } from "./parameter.js";

/**
 * A layer maps a batch X (batch×in, row-major) to Y (batch×out). `backward` takes the X of the
 * forward pass and dL/dY, accumulates the gradients of its trainable parameters and returns dL/dX.
 */
export interface Layer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  forward(x: Matrix): Matrix;
  backward(x: Matrix, gradOutput: Matrix): Matrix;
  /** Trainable parameters (a frozen base has none). */
  parameters(): Parameter[];
  /** Every stored weight value, trainable or not (what memory holds). */
  parameterCount(): number;
}

/** A frozen base the adapters sit on: it can hand out its (dequantized) weight. */
export interface BaseLayer extends Layer {
  /** out×in weight as float32 (dequantized for quantized layers). */
  denseWeight(): Matrix;
  readonly bias: Float32Array | undefined;
}
