import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { BackendUnavailableError } from "../errors.js";
import type { GemmCall, KernelBackend, ReadOnlyUsage } from "../kernels/backend.js";
import { checkGemm } from "../kernels/check-gemm.js";
import { matmulModel, transposedAGemmModel } from "./onnx-matmul-model.js";

/**
 * The `ort` backend: large products go to onnxruntime-node's MatMul or Gemm (an optional dependency, ~2.5×
 * the WebAssembly kernel's throughput on this machine class), everything else — small or thin
 * products, quantization, the residual pass, memory — to the WebAssembly backend it wraps.
 *
 * Two constraints shape it:
 * - onnxruntime-node's public `session.run` is asynchronous, but the native session underneath is
 *   synchronous (the package only wraps it in setImmediate). Kernels here are synchronous, so the
 *   backend drives the native session directly (pinned major version; see ORT_SUPPORTED_MAJOR).
 * - The native binding rejects SharedArrayBuffer-backed tensors, and the WebAssembly backend's
 *   memory is shared. Operands are therefore copied into ordinary memory. The large operand of the
 *   block-Krylov passes (the residual, read 4–10 times per LoftQ iteration) is copied once per
 *   `withReadOnly` scope instead of once per product.
 *
 * Aᵀ·B runs as Gemm with transA, or, in a read-only scope that announced enough transposed products,
 * as MatMul on a private copy of Aᵀ made once; alpha and beta are applied on the way out.
 */
export const ORT_MIN_FLOPS = 1 << 24;
/** Below this inner dimension MatMul is slower than the WebAssembly kernel (e.g. W − B·A at r = 16). */
export const ORT_MIN_INNER = 128;
/**
 * Below this output height and width both operands are thin (e.g. the Gram matrix XᵀX of a
 * 4096×72 block): the copies and transposes around MatMul cost more than the WebAssembly kernel
 * (3.2 vs 1.4 ms for that Gram matrix).
 */
export const ORT_MIN_OUTER = 256;
/**
 * Products that scale or accumulate (alpha ≠ 1 or beta ≠ 0) into an output larger than
 * SCRATCH_MAX_VALUES go to onnxruntime only from this inner dimension on. Below it the output
 * dominates: onnxruntime writes it into a fresh array (and its own), and alpha, beta and cIn are then
 * applied in a JS pass over shared memory. W − B·A at r = 128 on 4096×11008 took 1.2 s that way
 * against 0.13–0.19 s on the WebAssembly kernel. Plain products (C = A·B) stay on onnxruntime, which
 * is faster there even with the fresh output (16384×1000·1000×264: 40–90 against 109–156 ms).
 */
export const ORT_WIDE_OUTPUT_MIN_INNER = 1024;
export const ORT_SUPPORTED_MAJOR = 1;
/** The environment variable that keeps onnxruntime's telemetry off (see loadOrt). */
export const ORT_TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY";
/**
 * Transposed products (Aᵀ·B) a read-only scope must announce before its operand gets a private
 * transposed copy. Gemm with transA re-packs (transposes) all of A for each product: on 4096² inside
 * LoftQ it takes ~5.5 ms at 16 columns and ~10 ms at 64, against ~2.6 and ~7 ms for MatMul on an
 * explicit Aᵀ, while making the copy takes ~12–14 ms: worth it for a first SVD's six products
 * (without the copy, T = 1 took 0–8 % longer in paired runs on 4096², 4096×11008 and 11008×4096),
 * not for a warm one's two. (Gemm replaced (Bᵀ·A)ᵀ, i.e. MatMul on the thin transposes, which took
 * ~6.5 and ~16 ms there: 2–5 % of a T = 5 run.)
 */
export const TRANSPOSED_COPY_MIN_PRODUCTS = 5;
/**
 * Columns per strip of a transposed copy. Each thread reads its share of a strip's width from every
 * row, so narrow strips read short runs: 256 columns (4 MiB of scratch at 4096 rows) took the copy of
 * a 4096² matrix from ~27 to ~19 ms and of a 4096×11008 one from ~70 to ~55 ms against 1 MiB strips
 * (64 and 20 columns).
 */
export const TRANSPOSE_STRIP_COLUMNS = 256;
/** Private buffers kept for later scopes: an operand and its transpose. */
export const POOL_BUFFERS = 2;
/**
 * Thin operands, products and their transposes up to this many values (16 MiB: an 11008×256 block is
 * 2.8 M) go through scratch arrays kept per purpose and reused by every product: fresh ones cost page
 * faults on VMs that fault in memory page by page (~2.8 ms per MiB on this machine class), 1–4 MiB
 * per product at r = 64. Larger ones are allocated per call, so the kept memory stays bounded (four
 * purposes, ~45 MiB at r = 256 on 11008-row matrices).
 */
export const SCRATCH_MAX_VALUES = 1 << 22;

interface NativeTensorClass {
  new (type: "float32", data: Float32Array, dims: number[]): unknown;
}
interface NativeSession {
  loadModel(buffer: ArrayBuffer, offset: number, length: number, options: Record<string, unknown>): void;
  run(feeds: Record<string, unknown>, fetches: Record<string, unknown>, options: Record<string, unknown>): Record<string, unknown>;
}
interface OrtModules {
  Tensor: NativeTensorClass;
  createSession(): NativeSession;
}

const require = createRequire(import.meta.url);

/** Where onnxruntime-node's native binding would be, or undefined when the package is not installed. */
function bindingPath(): string | undefined {
  try {
    const packageJson = require.resolve("onnxruntime-node/package.json");
    const path = join(dirname(packageJson), "bin", "napi-v6", process.platform, process.arch, "onnxruntime_binding.node");
    return existsSync(path) ? path : undefined;
  } catch {
    return undefined;
  }
}

/** Whether onnxruntime-node is installed with a native binding for this platform (cheap: loads nothing). */
export function ortInstalled(): boolean {
  return bindingPath() !== undefined;
}

let loaded: OrtModules | undefined;

/**
 * Loads onnxruntime-node's native library now (once per process), throwing BackendUnavailableError
 * when it cannot: the binding file can be there while its shared library is missing or built for
 * another system, and the default backend must learn that before a product needs it.
 */
export function ensureOrtLoaded(): void {
  loadOrt();
}

function loadOrt(): OrtModules {
  loaded ??= loadOrtModules();
  return loaded;
}

function loadOrtModules(): OrtModules {
  if (!ortInstalled()) throw new BackendUnavailableError("onnxruntime-node is not installed (it is an optional dependency: npm install onnxruntime-node)");
  // onnxruntime-node 1.30's Linux library starts Microsoft's 1DS telemetry client when its
  // environment is created (with a collector URL built in; it also leaves an empty
  // /tmp/mat-debug-<pid>.log behind per process). A tool that reads private weights should not report
  // anywhere: off unless the user set ORT_DISABLE_TELEMETRY themselves.
  process.env[ORT_TELEMETRY_VARIABLE] ??= "1";
  try {
    const version = (require("onnxruntime-node/package.json") as { version: string }).version;
    if (Number(version.split(".")[0]) !== ORT_SUPPORTED_MAJOR) throw new Error(`version ${version} is not supported (need ${ORT_SUPPORTED_MAJOR}.x)`);
    const { Tensor } = require("onnxruntime-node") as { Tensor: NativeTensorClass };
    const { binding, initOrt } = require("onnxruntime-node/dist/binding.js") as {
      binding: { InferenceSession: new () => NativeSession };
      initOrt(): void;
    };
    initOrt();
    return { Tensor, createSession: () => new binding.InferenceSession() };
  } catch (error) {
    throw new BackendUnavailableError(`onnxruntime-node could not be loaded: ${(error as Error).message}`);
  }
}

export interface OrtBackend extends KernelBackend {
  readonly threads: number;
}

export function createOrtBackend(base: KernelBackend, threads = availableParallelism()): OrtBackend {
  // One session per model, created on first use.
  const sessions = new Map<() => Uint8Array, NativeSession>();
  const session = (makeModel: () => Uint8Array): NativeSession => {
    let existing = sessions.get(makeModel);
    if (!existing) {
      existing = loadOrt().createSession();
      const model = makeModel();
      existing.loadModel(model.buffer as ArrayBuffer, model.byteOffset, model.byteLength, {
        intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: "all", executionMode: "sequential",
        // onnxruntime's pool threads spin after each product by default, on the cores the WebAssembly
        // kernels run on next: NF4 r=16 T=5 on 4096² took 0.90–1.00 s without spinning against
        // 1.12–1.18 s with it (four interleaved pairs), and ~20 % less CPU time.
        extra: { session: { intra_op: { allow_spinning: "0" } } },
      });
      sessions.set(makeModel, existing);
    }
    return existing;
  };
  /**
   * Y (m×n) = op(A) · B into a scratch array, all in ordinary (non-shared) memory: A is m×k, or k×m
   * when `transA` (Gemm reads it transposed).
   */
  const matmul = (a: Float32Array, m: number, k: number, b: Float32Array, n: number, transA = false): Float32Array => {
    const { Tensor } = loadOrt();
    const y = scratchArray("product", m * n);
    session(transA ? transposedAGemmModel : matmulModel).run(
      { A: new Tensor("float32", a, transA ? [k, m] : [m, k]), B: new Tensor("float32", b, [k, n]) },
      { Y: new Tensor("float32", y, [m, n]) },
      {},
    );
    return y;
  };
  // Private copies of operands the caller promised not to change (see withReadOnly): the operand
  // as it is and, when the scope announced enough transposed products, its transpose. Their memory
  // is kept between scopes: a fresh 64 MiB array costs ~50 ms of page faults, a copy into a
  // reused one ~15 ms. The pool holds the POOL_BUFFERS largest.
  const readOnly = new Map<Float32Array, { copy?: Float32Array; transposed?: Float32Array; transposedProducts: number }>();
  let pool: Float32Array[] = [];
  const takeBuffer = (length: number): Float32Array => {
    const reused = pool.findIndex((buffer) => buffer.length >= length);
    return (reused >= 0 ? pool.splice(reused, 1)[0]! : new Float32Array(length)).subarray(0, length);
  };
  /** Aᵀ (cols×rows) in ordinary memory for A (rows×cols) in the base backend's memory. */
  const transposedCopy = (shared: Float32Array, rows: number, cols: number): Float32Array => {
    // Column strips of A transpose (on every thread) into contiguous rows of Aᵀ in a scratch, each
    // then copied out with one set().
    const width = Math.min(cols, TRANSPOSE_STRIP_COLUMNS);
    const out = takeBuffer(rows * cols);
    const strip = base.allocate(width * rows, false);
    try {
      for (let j0 = 0; j0 < cols; j0 += width) {
        const w = Math.min(width, cols - j0);
        base.transpose({ a: shared.subarray(j0), rows, cols: w, lda: cols, out: strip });
        out.set(strip.subarray(0, w * rows), j0 * rows);
      }
    } finally {
      base.release(strip);
    }
    return out;
  };
  // Scratch arrays by purpose (see SCRATCH_MAX_VALUES). Kernels run one at a time and each purpose is
  // used once per product, so a purpose's array is free again when the next product starts.
  const scratch = new Map<ScratchPurpose, Float32Array>();
  const scratchArray = (purpose: ScratchPurpose, length: number): Float32Array => {
    if (length > SCRATCH_MAX_VALUES) return new Float32Array(length);
    let array = scratch.get(purpose);
    if (!array || array.length < length) {
      array = new Float32Array(length);
      scratch.set(purpose, array);
    }
    return array.subarray(0, length);
  };
  /** The first `length` values of `array` in ordinary memory: the array itself, its scope's copy or a scratch copy. */
  const ordinary = (array: Float32Array, length: number, purpose: ScratchPurpose): Float32Array => {
    const scope = readOnly.get(array);
    if (scope) {
      if (!scope.copy) {
        scope.copy = takeBuffer(length);
        scope.copy.set(array.subarray(0, length));
      }
      return scope.copy;
    }
    if (!(array.buffer instanceof SharedArrayBuffer) && array.length === length) return array;
    const copy = scratchArray(purpose, length);
    copy.set(array.subarray(0, length));
    return copy;
  };
  /** The cols×rows transpose of a row-major rows×cols array, into a scratch array. */
  const transposed = (array: Float32Array, rows: number, cols: number, purpose: ScratchPurpose): Float32Array => {
    // Element reads from shared memory are several times slower than from ordinary memory: one
    // bulk copy first.
    const source = array.buffer instanceof SharedArrayBuffer ? ordinary(array, rows * cols, "staging") : array;
    return transposeInto(source, rows, cols, scratchArray(purpose, rows * cols));
  };

  return {
    name: "ort",
    threads,
    allocate: (length, zeroed) => base.allocate(length, zeroed),
    release: (array) => base.release(array),
    holds: (array) => base.holds?.(array) ?? false,
    encodeCodebook: (call) => base.encodeCodebook(call),
    decodeCodebook: (call) => base.decodeCodebook(call),
    transpose: (call) => base.transpose(call),
    subtract: (a, b, out) => base.subtract(a, b, out),
    sumOfSquares: (a) => base.sumOfSquares(a),
    ...(base.encodeBf16 ? { encodeBf16: base.encodeBf16.bind(base) } : {}),
    ...(base.tridiagonalize ? { tridiagonalize: base.tridiagonalize.bind(base) } : {}),
    ...(base.applyReflectors ? { applyReflectors: base.applyReflectors.bind(base) } : {}),
    withReadOnly<T>(array: Float32Array, body: () => T, usage?: ReadOnlyUsage): T {
      if (readOnly.has(array)) return body();
      readOnly.set(array, { transposedProducts: usage?.transposedProducts ?? 0 });
      try {
        return body();
      } finally {
        const { copy, transposed } = readOnly.get(array)!;
        readOnly.delete(array);
        const returned = [copy, transposed].filter((buffer) => buffer !== undefined).map((buffer) => new Float32Array(buffer.buffer));
        pool = [...returned, ...pool].sort((x, y) => y.length - x.length).slice(0, POOL_BUFFERS);
      }
    },
    gemm(call: GemmCall) {
      checkGemm(call);
      const { transA, transB, m, n, k, alpha, beta, c } = call;
      const wideOutput = m * n > SCRATCH_MAX_VALUES && k < ORT_WIDE_OUTPUT_MIN_INNER && (alpha !== 1 || beta !== 0);
      if (2 * m * n * k < ORT_MIN_FLOPS || k < ORT_MIN_INNER || Math.max(m, n) < ORT_MIN_OUTER || wideOutput || m === 0 || n === 0) {
        base.gemm(call);
        return;
      }
      // B as k×n, in ordinary memory.
      const b = transB ? transposed(call.b, n, k, "b") : ordinary(call.b, k * n, "b");
      let product: Float32Array;
      if (!transA) {
        product = matmul(ordinary(call.a, m * k, "a"), m, k, b, n);
      } else {
        const scope = readOnly.get(call.a);
        if (scope && scope.transposedProducts >= TRANSPOSED_COPY_MIN_PRODUCTS && call.a.buffer instanceof SharedArrayBuffer) {
          // MatMul on an explicit Aᵀ: Gemm below re-packs all of A, transposing it, for every product.
          // (Shared memory here is the base backend's, whose transpose kernel reads it in place.)
          scope.transposed ??= transposedCopy(call.a, k, m);
          product = matmul(scope.transposed, m, k, b, n);
        } else {
          product = matmul(ordinary(call.a, k * m, "a"), m, k, b, n, true);
        }
      }
      if (alpha === 1 && beta === 0) c.set(product);
      else if (beta === 0) for (let i = 0; i < m * n; i++) c[i] = alpha * product[i]!;
      else {
        const source = call.cIn ?? c;
        for (let i = 0; i < m * n; i++) c[i] = alpha * product[i]! + beta * source[i]!;
      }
    },
  };
}

type ScratchPurpose = "a" | "b" | "product" | "staging";

/** out (cols×rows) = the transpose of the row-major rows×cols `source` (ordinary memory). */
function transposeInto(source: Float32Array, rows: number, cols: number, out: Float32Array): Float32Array {
  const tile = 32;
  for (let i0 = 0; i0 < rows; i0 += tile) {
    for (let j0 = 0; j0 < cols; j0 += tile) {
      const iEnd = Math.min(i0 + tile, rows);
      const jEnd = Math.min(j0 + tile, cols);
      for (let i = i0; i < iEnd; i++) for (let j = j0; j < jEnd; j++) out[j * rows + i] = source[i * cols + j]!;
    }
  }
  return out;
}
