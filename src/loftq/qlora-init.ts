import { OutOfRangeError } from "../errors.js";
import { assertFinite, sameBytes, viewsOverlap, type Matrix } from "../tensor/matrix.js";
import { mulberry32 } from "../linalg/random.js";
import type { LoftqResult } from "./loftq.js";
import { resolveLoftqOptions, type LoftqOptions } from "./options.js";
import { packOwned } from "./pack-owned.js";

/**
 * The QLoRA baseline in LoftQ's result shape: Q = dequant(quant(W)), B = 0 and A drawn as PEFT
 * draws it (Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in)), so the adapter starts at zero
 * and the model starts from Q. Takes the same options as `loftq` (iterations are validated but
 * ignored: there is one; `output`, `codesOutput` and `backend` are used as there).
 */
export function qloraInit(weight: Matrix, options: LoftqOptions = {}): LoftqResult {
  const started = Date.now();
  const settings = resolveLoftqOptions(weight, options, "qloraInit");
  const { rows: m, cols: n, data: w } = weight;
  const { backend } = settings;
  // Passes over W on the chosen backend, as loftq makes them; a non-finite sum means a NaN or
  // infinity somewhere, whose position is looked up before any other work.
  const weightSquared = backend.sumOfSquares(w);
  if (!Number.isFinite(weightSquared)) assertFinite(weight, settings.name);
  // Q is encoded next to W and only then copied into an `output` that shares W's memory (e.g. Q
  // written over W to save a buffer): encoding into it directly would make W − Q read Q − Q.
  const aliased = settings.output !== undefined && viewsOverlap(settings.output, w);
  const dequantized = settings.output && !aliased ? settings.output : new Float32Array(m * n);
  const { codesOutput } = settings;
  let encoded = settings.quantizer.encode(w, m, n, dequantized, backend, codesOutput);
  // Quantizers with codes of their own (int8) leave codesOutput alone: copied in.
  if (codesOutput && !sameBytes(encoded.codes, codesOutput)) {
    codesOutput.set(encoded.codes);
    encoded = { ...encoded, codes: codesOutput };
  }
  const quantSquared = backend.subtract(w, dequantized);
  // W is finite, so only float32 overflow of W − Q gets here (as in loftq).
  if (!Number.isFinite(quantSquared)) throw new OutOfRangeError(`${settings.name}: W − Q overflows float32 (values within a factor of ~2 of float32's largest); scale the weight down`);
  const quantError = Math.sqrt(quantSquared) / (Math.sqrt(weightSquared) || 1);
  const random = mulberry32(settings.seed);
  const bound = 1 / Math.sqrt(n);
  const a = Float32Array.from({ length: settings.rank * n }, () => (2 * random() - 1) * bound);
  const quantized = packOwned(settings.quantizer, encoded, m, n, codesOutput);
  if (aliased) settings.output!.set(dequantized);
  settings.onIteration?.({ iteration: 1, iterations: 1, quantError, error: quantError, elapsedMs: Date.now() - started });
  return {
    quantized,
    dequantized: { rows: m, cols: n, data: aliased ? settings.output! : dequantized },
    loraA: { rows: settings.rank, cols: n, data: a },
    loraB: { rows: m, cols: settings.rank, data: new Float32Array(m * settings.rank) },
    history: [{ quantError, error: quantError }],
    selectedIteration: 1,
    scaling: settings.scaling,
  };
}
