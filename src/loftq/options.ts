import { InvalidArgumentError, ShapeError } from "../errors.js";
import { checkOptionalBoolean, checkOptionalFunction, checkOptionKeys, optionKeysOf } from "../options.js";
import type { KernelBackend } from "../kernels/backend.js";
import { resolveBackend } from "../kernels/registry.js";
import { createQuantizer, type Quantizer, type QuantizerKind } from "../quant/quantizer.js";
import { checkMatrix, viewsOverlap, type Matrix } from "../tensor/matrix.js";
import { SVD_METHODS } from "../linalg/truncated-svd.js";
import { checkSeed } from "../linalg/random.js";

export interface IterationReport {
  /** 1-based. */
  iteration: number;
  iterations: number;
  /** ‖W − Q‖_F / ‖W‖_F for this iteration's Q. */
  quantError: number;
  /** ‖W − Q − B·A‖_F / ‖W‖_F. */
  error: number;
  elapsedMs: number;
}

export interface LoftqOptions {
  /** Code width (default 4; 8 for `int8`). */
  bits?: number;
  /** LoRA rank r (default 16). */
  rank?: number;
  /** Alternations T (default 1, as PEFT). */
  iterations?: number;
  /** Quantizer family (default "nf", PEFT's NFQuantizer). */
  quantizer?: QuantizerKind;
  blockSize?: number;
  /** bnb-nf4 / bnb-fp4 only. */
  doubleQuant?: boolean;
  /** Seed for the randomized SVD (default 0): same seed, same bytes. */
  seed?: number;
  /**
   * Return the iterate with the lowest ‖W − Q − B·A‖ rather than the last one (default true).
   * Upstream returns the last, and users report more iterations getting worse.
   */
  keepBest?: boolean;
  /**
   * LoRA alpha. When given, A and B are divided by √scaling (scaling = alpha/r, or alpha/√r with
   * `useRslora`) so that scaling·B·A = W − Q, which is what the adapter adds at run time.
   * PEFT never divides (its effective init is scaling·B·A, right only when alpha = r); set
   * `upstreamScaling` to reproduce that.
   */
  loraAlpha?: number;
  useRslora?: boolean;
  upstreamScaling?: boolean;
  /**
   * Krylov depth of the first randomized SVD (default FIRST_SVD_POWER_ITERATIONS, 5); later
   * iterations start warm with fewer.
   */
  powerIterations?: number;
  /** SVD method (default "auto": exact for small matrices, randomized for large ones). */
  svd?: "auto" | "exact" | "randomized";
  /** Kernel backend or its name (default: the fastest registered). */
  backend?: KernelBackend | string;
  /** Called after every iteration (the library never prints). */
  onIteration?: (report: IterationReport) => void;
  /** What to call the weight in error messages (e.g. its tensor name). */
  name?: string;
  /**
   * Where to write Q (rows·cols values; becomes `dequantized.data`) instead of a new array. Reusing
   * one buffer across a model's matrices saves the page faults of a fresh one (~50 ms per 64 MiB).
   * It may be the weight's own array: Q is written after W is last read.
   */
  output?: Float32Array;
  /**
   * Where to write the returned iterate's codes (rows·cols bytes) instead of a new array. A new 16 MiB
   * array per 4096² matrix costs ~45 ms of page faults on VMs that fault fresh memory in page by page;
   * a buffer reused across matrices costs them once. One in backend memory (`backend.allocate`) is
   * also the quantizer's working buffer: at T = 1 (or when the chosen iterate was written there) the
   * codes are not copied at all (int8 excepted: it keeps codes of its own and copies them in). Like `output` for `dequantized`, the result reads this buffer:
   * `quantized` is packed from it when first read, so read `quantized` before reusing the buffer.
   */
  codesOutput?: Uint8Array;
}

export interface ResolvedLoftqOptions {
  /** What errors call the weight (options.name, or "weight"). */
  name: string;
  rank: number;
  iterations: number;
  quantizer: Quantizer;
  seed: number;
  keepBest: boolean;
  /** The factor B and A are each divided by (1 when not compensating). */
  adapterDivisor: number;
  scaling: number;
  powerIterations: number;
  svd: "auto" | "exact" | "randomized";
  backend: KernelBackend;
  onIteration?: (report: IterationReport) => void;
  output?: Float32Array;
  codesOutput?: Uint8Array;
}

export const LOFTQ_OPTION_KEYS = optionKeysOf<LoftqOptions>()([
  "bits", "rank", "iterations", "quantizer", "blockSize", "doubleQuant", "seed", "keepBest", "loraAlpha", "useRslora",
  "upstreamScaling", "powerIterations", "svd", "backend", "onIteration", "name", "output",
  "codesOutput",
]);

export const DEFAULT_RANK = 16;
export const DEFAULT_BITS = 4;
/** Krylov depth of LoftQ's first SVD (the `powerIterations` default); see FIRST_SVD_OVERSAMPLE. */
export const FIRST_SVD_POWER_ITERATIONS = 5;

/** More LoftQ iterations than anyone runs (the paper uses 1–5; errors flatten after a few): a typo guard. */
export const MAX_ITERATIONS = 1000;
/** LoRA scalings (alpha/r, or alpha/√r) the compensated factors stay well inside float32 for. */
export const MIN_SCALING = 1e-12;
export const MAX_SCALING = 1e12;

/** Throws unless `iterations` is an integer in 1..MAX_ITERATIONS. */
export function checkIterations(iterations: number, name = "iterations"): void {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new InvalidArgumentError(`${name} must be an integer in 1..${MAX_ITERATIONS}, got ${iterations}`);
  }
}

/**
 * The LoRA scaling alpha/r (alpha/√r with rsLoRA), checked: alpha positive and finite, and, when the
 * factors are to be divided by its square root (`compensated`), within MIN_SCALING..MAX_SCALING, beyond
 * which they overflow or flush to zero.
 */
export function loraScaling(loraAlpha: number, rank: number, useRslora: boolean, compensated: boolean, name = "loraAlpha"): number {
  if (typeof loraAlpha !== "number" || !(loraAlpha > 0) || !Number.isFinite(loraAlpha)) throw new InvalidArgumentError(`${name} must be a positive number, got ${loraAlpha}`);
  const scaling = loraAlpha / (useRslora ? Math.sqrt(rank) : rank);
  if (compensated && !(scaling >= MIN_SCALING && scaling <= MAX_SCALING)) {
    throw new InvalidArgumentError(`${name} ${loraAlpha} gives a LoRA scaling of ${scaling}, outside ${MIN_SCALING}..${MAX_SCALING} (the factors are divided by its square root)`);
  }
  return scaling;
}

/**
 * Validates the weight's shape and every option up front, so nothing fails half-way. The weight's
 * values are checked by the caller's first pass over them (its norm: non-finite when any value is),
 * before any other work.
 */
export function resolveLoftqOptions(weight: Matrix, options: LoftqOptions, caller = "loftq"): ResolvedLoftqOptions {
  checkOptionKeys(options, LOFTQ_OPTION_KEYS, caller, false);
  for (const flag of ["doubleQuant", "keepBest", "useRslora", "upstreamScaling"] as const) checkOptionalBoolean(options[flag], flag);
  checkOptionalFunction(options.onIteration, "onIteration");
  if (options.name !== undefined && typeof options.name !== "string") throw new InvalidArgumentError(`name must be a string, got ${typeof options.name}`);
  const what = options.name ?? "weight";
  checkMatrix(weight, what);
  const rank = options.rank ?? DEFAULT_RANK;
  const maxRank = Math.min(weight.rows, weight.cols);
  if (!Number.isInteger(rank) || rank < 1 || rank > maxRank) {
    throw new InvalidArgumentError(`rank must be an integer in 1..${maxRank} for a ${weight.rows}×${weight.cols} ${what}, got ${rank}`);
  }
  const iterations = options.iterations ?? 1;
  checkIterations(iterations);
  const kind = options.quantizer ?? "nf";
  const bits = options.bits ?? (kind === "int8" ? 8 : DEFAULT_BITS);
  const quantizer = createQuantizer({
    kind,
    bits,
    ...(options.blockSize !== undefined ? { blockSize: options.blockSize } : {}),
    ...(options.doubleQuant !== undefined ? { doubleQuant: options.doubleQuant } : {}),
  });
  const scaling = options.loraAlpha === undefined ? 1 : loraScaling(options.loraAlpha, rank, options.useRslora ?? false, !options.upstreamScaling);
  const powerIterations = options.powerIterations ?? FIRST_SVD_POWER_ITERATIONS;
  if (!Number.isInteger(powerIterations) || powerIterations < 0) throw new InvalidArgumentError(`powerIterations must be a non-negative integer, got ${powerIterations}`);
  const backend = resolveBackend(options.backend);
  if (options.output !== undefined && options.output !== null) {
    if (!(options.output instanceof Float32Array)) throw new ShapeError("output must be a Float32Array");
    if (options.output.length !== weight.rows * weight.cols) throw new ShapeError(`output has ${options.output.length} values, Q needs ${weight.rows * weight.cols}`);
  }
  if (options.codesOutput !== undefined && options.codesOutput !== null) {
    if (!(options.codesOutput instanceof Uint8Array)) throw new ShapeError("codesOutput must be a Uint8Array");
    if (options.codesOutput.length !== weight.rows * weight.cols) throw new ShapeError(`codesOutput has ${options.codesOutput.length} bytes, the codes need ${weight.rows * weight.cols}`);
    // The codes are written during the iterations (in place when in backend memory), while W is read.
    if (viewsOverlap(weight.data, options.codesOutput) || (options.output && viewsOverlap(options.output, options.codesOutput))) {
      throw new InvalidArgumentError("codesOutput must not overlap the weight or output");
    }
  }
  const seed = options.seed ?? 0;
  checkSeed(seed);
  const svd = options.svd ?? "auto";
  if (!SVD_METHODS.includes(svd)) throw new InvalidArgumentError(`svd must be one of ${SVD_METHODS.join(", ")}, got ${String(svd)}`);
  return {
    name: what,
    rank,
    iterations,
    quantizer,
    seed,
    keepBest: options.keepBest ?? true,
    adapterDivisor: options.upstreamScaling ? 1 : Math.sqrt(scaling),
    scaling,
    powerIterations,
    svd,
    backend,
    ...(options.onIteration ? { onIteration: options.onIteration } : {}),
    ...(options.output ? { output: options.output } : {}),
    ...(options.codesOutput ? { codesOutput: options.codesOutput } : {}),
  };
}
