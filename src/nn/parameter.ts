/** A trainable tensor and its gradient (same length), as optimizers see it. */
export interface Parameter {
  readonly name: string;
  readonly value: Float32Array;
  readonly grad: Float32Array;
}

export function parameter(name: string, value: Float32Array): Parameter {
  return { name, value, grad: new Float32Array(value.length) };
}

export function zeroGrad(parameters: readonly Parameter[]): void {
  for (const p of parameters) p.grad.fill(0);
}
