import { BackendUnavailableError, InvalidArgumentError, ShapeError } from "../errors.js";
import type { CodebookCall, DecodeCall, GemmCall, KernelBackend, ReflectorsCall, TransposeCall, TridiagonalizeCall } from "./backend.js";
import { checkGemm, checkSubtract, checkTranspose } from "./check-gemm.js";
import { checkDecodeCall, checkResidualCall, type CodebookSpec } from "./codebook.js";
import { checkReflectorsCall, checkTridiagonalizeCall } from "./tridiagonal.js";
import { KERNELS_RELAXED_WASM_BASE64, KERNELS_WASM_BASE64 } from "./simd-kernels-bytes.js";

/**
 * The WebAssembly SIMD backend (runs in browsers too): the kernels of assembly/simd-kernels.ts over a
 * shared WebAssembly.Memory, so worker threads can run the same kernel on the same matrices (see
 * src/node/thread-pool-backend.ts). Arrays from `allocate` live in that memory and are used in place;
 * other arrays are copied in (and C copied back) around each call.
 */

/** Bytes at the start of the memory reserved for the thread control block. */
export const CONTROL_BYTES = 1024;
const PAGE = 65536;
const MAX_PAGES = 65536;

export interface KernelExports {
  gemm(
    m: number, n: number, k: number, alpha: number,
    a: number, aRowStride: number, aColStride: number,
    b: number, ldb: number, beta: number, c: number, ldc: number, cIn: number, scratch: number,
  ): void;
  encodeCodebook(
    values: number, n: number, blockSize: number,
    table: number, below: number, inside: number,
    thresholds: number, thresholdCount: number,
    peft: number, zeroCode: number, codes: number, absmax: number, deq: number, minuend: number,
  ): number;
  decodeCodebook(codes: number, n: number, blockSize: number, table: number, absmax: number, out: number): void;
  transpose(a: number, rows: number, cols: number, lda: number, out: number): void;
  subtract(a: number, b: number, out: number, n: number): number;
  encodeBf16(values: number, n: number, out: number): void;
  tridiagonalize(a: number, n: number, d: number, e: number, reflectors: number, p: number): void;
  applyReflectors(reflectors: number, n: number, x: number, count: number, dots: number): void;
  /** Benchmark probe: 96·iterations flops in registers only (see bench/gemm-throughput.ts). */
  simdCeiling(iterations: number): number;
}

/** Pointer-level arguments of one gemm (what a thread needs to run its share). */
export interface GemmArgs {
  m: number; n: number; k: number; alpha: number;
  a: number; aRowStride: number; aColStride: number;
  b: number; ldb: number; beta: number; c: number; ldc: number;
  /** Where beta's operand is read (same layout as c; equal to c for the usual C += …). */
  cIn: number;
  /** GEMM_SCRATCH_BYTES of this share's own memory, where the kernel packs panels of B. */
  scratch: number;
}

/** Scratch one gemm share needs (assembly/simd-kernels.ts: K_CHUNK × PACK_COLUMNS floats). */
export const GEMM_SCRATCH_BYTES = 256 * 512 * 4;
/** Shares of one gemm that can run at once (one per thread); each gets its own scratch. */
export const MAX_GEMM_SHARES = 8;

/** Pointer-level arguments of one codebook encoding. */
export interface EncodeArgs {
  values: number; n: number; blockSize: number;
  table: number; below: number; inside: number;
  /** thresholdCount = 0 selects the scalar path (tables of more than MAX_VECTOR_CODES codes). */
  thresholds: number; thresholdCount: number;
  peft: number; zeroCode: number; codes: number; absmax: number; deq: number;
  /** 0, or where the residual's minuend is (deq then receives minuend − Q). */
  minuend: number;
}

/** Tables up to this many codes are encoded four values per step by SIMD threshold counting. */
export const MAX_VECTOR_CODES = 16;

/** Pointer-level arguments of one codebook decoding. */
export interface DecodeArgs {
  codes: number; n: number; blockSize: number; table: number; absmax: number; out: number;
}

/** Pointer-level arguments of one transpose (out is cols×rows). */
export interface TransposeArgs {
  a: number; rows: number; cols: number; lda: number; out: number;
}

/** Pointer-level arguments of one subtraction (out = 0: sum only; b = 0: b is all zeros, Σa²). */
export interface SubtractArgs {
  a: number; b: number; out: number; n: number;
}

/** Pointer-level arguments of one float32 → bfloat16 encoding (out: n u16). */
export interface Bf16Args {
  values: number; n: number; out: number;
}

/** Pointer-level arguments of the eigensolver steps (float64; p and dots are scratch). */
export interface TridiagonalizeArgs {
  a: number; n: number; d: number; e: number; reflectors: number; p: number;
}
export interface ReflectorsArgs {
  reflectors: number; n: number; x: number; count: number; dots: number;
}

/**
 * One kernel invocation on resolved pointers; `subtract` and residual `encode` jobs return their sum
 * of squares. The eigensolver steps are sequential (a few ms at the sizes LoftQ meets) and never split.
 */
export type KernelJob =
  | { kind: "gemm"; args: GemmArgs }
  | { kind: "encode"; args: EncodeArgs }
  | { kind: "decode"; args: DecodeArgs }
  | { kind: "transpose"; args: TransposeArgs }
  | { kind: "subtract"; args: SubtractArgs }
  | { kind: "bf16"; args: Bf16Args }
  | { kind: "tridiagonalize"; args: TridiagonalizeArgs }
  | { kind: "reflect"; args: ReflectorsArgs };

export interface WasmBackend extends KernelBackend {
  readonly memory: KernelMemory;
  readonly module: KernelModule;
  readonly variant: KernelVariant;
  /** Runs a job on this thread; the threaded backend overrides it to share the work. */
  runJob(job: KernelJob): number;
}

/** Runs a job with one instance of the kernels (any thread). */
export function runKernelJob(kernel: KernelExports, job: KernelJob): number {
  switch (job.kind) {
    case "gemm": {
      const g = job.args;
      kernel.gemm(g.m, g.n, g.k, g.alpha, g.a, g.aRowStride, g.aColStride, g.b, g.ldb, g.beta, g.c, g.ldc, g.cIn, g.scratch);
      return 0;
    }
    case "encode": {
      const e = job.args;
      return kernel.encodeCodebook(e.values, e.n, e.blockSize, e.table, e.below, e.inside, e.thresholds, e.thresholdCount, e.peft, e.zeroCode, e.codes, e.absmax, e.deq, e.minuend);
    }
    case "decode": {
      const d = job.args;
      kernel.decodeCodebook(d.codes, d.n, d.blockSize, d.table, d.absmax, d.out);
      return 0;
    }
    case "transpose": {
      const t = job.args;
      kernel.transpose(t.a, t.rows, t.cols, t.lda, t.out);
      return 0;
    }
    case "subtract":
      return kernel.subtract(job.args.a, job.args.b, job.args.out, job.args.n);
    case "bf16":
      kernel.encodeBf16(job.args.values, job.args.n, job.args.out);
      return 0;
    case "tridiagonalize": {
      const t = job.args;
      kernel.tridiagonalize(t.a, t.n, t.d, t.e, t.reflectors, t.p);
      return 0;
    }
    case "reflect": {
      const r = job.args;
      kernel.applyReflectors(r.reflectors, r.n, r.x, r.count, r.dots);
      return 0;
    }
  }
}

/**
 * The kernels are built twice: "simd" (baseline WebAssembly SIMD) and "relaxed-simd", whose gemm tile
 * uses relaxed SIMD's fused multiply-add (results differ from "simd" in the last bits of the float32
 * products; on one machine either is deterministic). Relaxed SIMD is on by default from Node 22; Node 20
 * validates it only with --experimental-wasm-relaxed-simd (the CLI sets it: src/node/relaxed-simd.ts).
 */
export type KernelVariant = "simd" | "relaxed-simd";

/**
 * A backend's shared WebAssembly.Memory and compiled kernel module, as the package's declarations show
 * them: structurally, so programs compile against them with neither a DOM lib nor a WebAssembly
 * declaration (ES2022 and @types/node declare none).
 */
export interface KernelMemory {
  readonly buffer: ArrayBufferLike;
  grow(pages: number): number;
}
/** A compiled WebAssembly.Module of the kernels (opaque: passed to workers and instantiated). */
export type KernelModule = object;

const compiled = new Map<KernelVariant, WebAssembly.Module>();

function moduleBytes(variant: KernelVariant): Uint8Array {
  const binary = atob(variant === "relaxed-simd" ? KERNELS_RELAXED_WASM_BASE64 : KERNELS_WASM_BASE64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function kernelModule(variant: KernelVariant = "simd"): KernelModule {
  let module = compiled.get(variant);
  if (!module) {
    module = new WebAssembly.Module(moduleBytes(variant));
    compiled.set(variant, module);
  }
  return module;
}

/** Whether this runtime can compile the SIMD kernel and create shared memory. */
export function wasmSimdSupported(): boolean {
  try {
    kernelModule();
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    return true;
  } catch {
    return false;
  }
}

/** Whether this runtime compiles the relaxed-SIMD build (a refusal is not cached: a flag may turn it on). */
export function relaxedSimdSupported(): boolean {
  try {
    kernelModule("relaxed-simd");
    return true;
  } catch {
    return false;
  }
}

/**
 * Set to "simd" to keep the baseline build everywhere (results then match across CPUs with and without
 * a fused multiply-add, and across Node versions). Read from the environment where there is one.
 */
export const KERNEL_VARIANT_VARIABLE = "LOFTQ_WASM_KERNELS";

/** The variant new backends use: relaxed SIMD where the runtime has it, unless LOFTQ_WASM_KERNELS=simd. */
export function defaultKernelVariant(): KernelVariant {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  if (env?.[KERNEL_VARIANT_VARIABLE] === "simd") return "simd";
  return relaxedSimdSupported() ? "relaxed-simd" : "simd";
}

export function instantiateKernels(module: KernelModule, memory: KernelMemory): KernelExports {
  return new WebAssembly.Instance(module as WebAssembly.Module, { env: { memory } }).exports as unknown as KernelExports;
}


export function createWasmBackend(name = "wasm", variant: KernelVariant = defaultKernelVariant()): WasmBackend {
  if (!wasmSimdSupported()) throw new BackendUnavailableError("WebAssembly SIMD with shared memory is not available in this runtime");
  if (variant === "relaxed-simd" && !relaxedSimdSupported()) throw new BackendUnavailableError("this runtime does not validate WebAssembly relaxed SIMD (Node 20: --experimental-wasm-relaxed-simd)");
  const module = kernelModule(variant);
  const memory = new WebAssembly.Memory({ initial: 16, maximum: MAX_PAGES, shared: true });
  const kernel = instantiateKernels(module, memory);
  const heap = new Heap(memory);
  const gemmScratch = heap.allocate((MAX_GEMM_SHARES * GEMM_SCRATCH_BYTES) / 4, false).byteOffset;
  // Code tables and lookups copied into the memory once per spec (they are tiny).
  const specPointers = new WeakMap<CodebookSpec, { table: number; below: number; inside: number; thresholds: number }>();
  const pointersOf = (spec: CodebookSpec) => {
    let pointers = specPointers.get(spec);
    if (!pointers) {
      const copy = (values: Float32Array | Uint8Array) => {
        const local = heap.allocate(Math.ceil(values.byteLength / 4));
        new Uint8Array(local.buffer, local.byteOffset, values.byteLength).set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
        return local.byteOffset;
      };
      const { below, inside, thresholds } = spec.lookup;
      // The vector kernel compares against MAX_VECTOR_CODES − 1 thresholds; +∞ pads shorter lists.
      const padded = new Float32Array(Math.max(MAX_VECTOR_CODES - 1, thresholds.length)).fill(Infinity);
      padded.set(thresholds);
      pointers = { table: copy(spec.table), below: copy(below), inside: copy(inside), thresholds: copy(padded) };
      specPointers.set(spec, pointers);
    }
    return pointers;
  };

  /** `array` itself when it lives in the memory, else a copy (recorded in `scratch` for release). */
  const stage = (scratch: Float32Array[], array: Float32Array, length: number, copy: boolean) => {
    if (heap.owns(array)) return array;
    // A block the copy overwrites whole needs no clearing (~8 ms per 64 MiB).
    const local = heap.allocate(length, !copy);
    if (copy) local.set(array.subarray(0, length));
    scratch.push(local);
    return local;
  };

  /**
   * The byte address of an integer array (codes, bf16 output) for a kernel: the array itself when it
   * lives in the memory, else a scratch copy (filled when `copyIn`); `copyBack` then returns what the
   * kernel wrote to the caller's array.
   */
  const stageView = (scratch: Float32Array[], view: Uint8Array | Uint16Array, copyIn: boolean) => {
    if (heap.owns(view)) return { at: view.byteOffset, copyBack: () => {} };
    const local = heap.allocate(Math.ceil(view.byteLength / 4), false);
    scratch.push(local);
    const mirror = view instanceof Uint16Array ? new Uint16Array(local.buffer, local.byteOffset, view.length) : new Uint8Array(local.buffer, local.byteOffset, view.length);
    if (copyIn) mirror.set(view);
    return { at: local.byteOffset, copyBack: () => view.set(mirror) };
  };

  /** A float64 working copy of `array` (first `length` values, or zeros) in the memory. */
  const stage64 = (scratch: Float32Array[], array: Float64Array | undefined, length: number) => {
    const local = heap.allocate(2 * Math.max(length, 1), array === undefined);
    scratch.push(local);
    const view = new Float64Array(local.buffer, local.byteOffset, length);
    if (array) view.set(array.subarray(0, length));
    return view;
  };

  const backend: WasmBackend = {
    name,
    memory,
    module,
    variant,
    allocate: (length, zeroed) => heap.allocate(length, zeroed),
    release: (array) => heap.release(array),
    holds: (array) => heap.owns(array),
    runJob: (job) => runKernelJob(kernel, job),
    encodeCodebook({ values, spec, codes, absmax, dequantized, residualOf }: CodebookCall) {
      const n = values.length;
      const blocks = Math.ceil(n / spec.blockSize);
      if (codes.length < n || absmax.length < blocks || (dequantized && dequantized.length < n)) {
        throw new ShapeError(`encodeCodebook: outputs too short for ${n} values`);
      }
      checkResidualCall(n, dequantized, residualOf);
      const scratch: Float32Array[] = [];
      try {
        const input = stage(scratch, values, n, true);
        // Codes already in this memory (LoftQ keeps its code buffers here) are written in place.
        const codesOut = stageView(scratch, codes.subarray(0, n), false);
        const absmaxOut = heap.allocate(blocks);
        scratch.push(absmaxOut);
        // In place (dequantized = values) stays in place: the staged input is the output too.
        const deq = dequantized === values ? input : dequantized ? stage(scratch, dequantized, n, false) : undefined;
        const minuend = residualOf === values ? input : residualOf ? stage(scratch, residualOf, n, true) : undefined;
        const pointers = pointersOf(spec);
        const residualSquared = backend.runJob({
          kind: "encode",
          args: {
          values: input.byteOffset, n, blockSize: spec.blockSize,
          table: pointers.table, below: pointers.below, inside: pointers.inside,
          thresholds: pointers.thresholds, thresholdCount: spec.table.length <= MAX_VECTOR_CODES ? spec.lookup.thresholds.length : 0,
          peft: spec.selection === "peft" ? 1 : 0, zeroCode: spec.zeroBlockCode,
          codes: codesOut.at, absmax: absmaxOut.byteOffset, deq: deq ? deq.byteOffset : 0,
          minuend: minuend ? minuend.byteOffset : 0,
          },
        });
        codesOut.copyBack();
        absmax.set(absmaxOut.subarray(0, blocks));
        if (dequantized && deq !== dequantized) dequantized.set(deq!.subarray(0, n));
        return residualSquared;
      } finally {
        for (const array of scratch) heap.release(array);
      }
    },
    decodeCodebook(call: DecodeCall) {
      checkDecodeCall(call);
      const n = call.codes.length;
      const scratch: Float32Array[] = [];
      try {
        // Codes already in this memory (LoftQ's) are read in place.
        const codesAt = stageView(scratch, call.codes, true).at;
        const blocks = Math.ceil(n / call.blockSize);
        const out = stage(scratch, call.out, n, false);
        backend.runJob({
          kind: "decode",
          args: {
            codes: codesAt, n, blockSize: call.blockSize, table: stage(scratch, call.table, call.table.length, true).byteOffset,
            absmax: stage(scratch, call.absmax, blocks, true).byteOffset, out: out.byteOffset,
          },
        });
        if (out !== call.out) call.out.set(out.subarray(0, n));
      } finally {
        for (const array of scratch) heap.release(array);
      }
    },
    transpose(call: TransposeCall) {
      checkTranspose(call);
      const { rows, cols, lda } = call;
      if (rows === 0 || cols === 0) return;
      const scratch: Float32Array[] = [];
      try {
        const a = stage(scratch, call.a, (rows - 1) * lda + cols, true);
        const out = stage(scratch, call.out, rows * cols, false);
        backend.runJob({ kind: "transpose", args: { a: a.byteOffset, rows, cols, lda, out: out.byteOffset } });
        if (out !== call.out) call.out.set(out.subarray(0, rows * cols));
      } finally {
        for (const array of scratch) heap.release(array);
      }
    },
    subtract(a, b, out) {
      checkSubtract(a, b, out);
      const scratch: Float32Array[] = [];
      try {
        const n = a.length;
        const target = out ? stage(scratch, out, n, false) : undefined;
        const sum = backend.runJob({
          kind: "subtract",
          args: { a: stage(scratch, a, n, true).byteOffset, b: stage(scratch, b, n, true).byteOffset, out: target ? target.byteOffset : 0, n },
        });
        if (out && target !== out) out.set(target!);
        return sum;
      } finally {
        for (const array of scratch) heap.release(array);
      }
    },
    encodeBf16(values: Float32Array, out: Uint16Array) {
      const n = values.length;
      if (out.length < n) throw new ShapeError(`encodeBf16: ${out.length} outputs for ${n} values`);
      if (n === 0) return;
      const scratch: Float32Array[] = [];
      try {
        const input = stage(scratch, values, n, true);
        // The output in place when it lies in this memory (the CLI's byte buffer does), else staged.
        const output = stageView(scratch, out.subarray(0, n), false);
        backend.runJob({ kind: "bf16", args: { values: input.byteOffset, n, out: output.at } });
        output.copyBack();
      } finally {
        for (const array of scratch) heap.release(array);
      }
    },
    tridiagonalize(call: TridiagonalizeCall) {
      checkTridiagonalizeCall(call);
      const { n } = call;
      const scratch: Float32Array[] = [];
      try {
        // Float64 arrays are always copied in and out: they are small (n ≤ a few hundred here); `a` is
        // scratch, not copied back.
        const a = stage64(scratch, call.a, n * n);
        const d = stage64(scratch, undefined, n);
        const e = stage64(scratch, undefined, Math.max(n - 1, 0));
        // The kernel keeps each reflector in its row here even when the caller does not want them.
        const reflectors = stage64(scratch, undefined, n * n);
        const p = stage64(scratch, undefined, n);
        backend.runJob({ kind: "tridiagonalize", args: { a: a.byteOffset, n, d: d.byteOffset, e: e.byteOffset, reflectors: reflectors.byteOffset, p: p.byteOffset } });
        call.d.set(d);
        call.e.set(e);
        call.reflectors?.set(reflectors);
      } finally {
        for (const array of scratch) heap.release(array);
      }
    },
    applyReflectors(call: ReflectorsCall) {
      checkReflectorsCall(call);
      const { n, count } = call;
      const scratch: Float32Array[] = [];
      try {
        const reflectors = stage64(scratch, call.reflectors, n * n);
        const x = stage64(scratch, call.x, n * count);
        const dots = stage64(scratch, undefined, count);
        backend.runJob({ kind: "reflect", args: { reflectors: reflectors.byteOffset, n, x: x.byteOffset, count, dots: dots.byteOffset } });
        call.x.set(x);
      } finally {
        for (const array of scratch) heap.release(array);
      }
    },
    sumOfSquares(a) {
      const scratch: Float32Array[] = [];
      try {
        return backend.runJob({ kind: "subtract", args: { a: stage(scratch, a, a.length, true).byteOffset, b: 0, out: 0, n: a.length } });
      } finally {
        for (const array of scratch) heap.release(array);
      }
    },
    gemm(call: GemmCall) {
      checkGemm(call);
      const { transA, transB, m, n, k, alpha, beta } = call;
      if (m === 0 || n === 0) return;
      const scratch: Float32Array[] = [];
      try {
        const a = stage(scratch, call.a, m * k, true);
        let b = call.b;
        if (transB) {
          // The kernel wants rows of op(B) contiguous: transpose the (usually thin) B once.
          const transposed = heap.allocate(k * n);
          for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) transposed[p * n + j] = b[j * k + p]!;
          scratch.push(transposed);
          b = transposed;
        } else {
          b = stage(scratch, b, k * n, true);
        }
        const cIn = call.cIn && beta !== 0 ? stage(scratch, call.cIn, m * n, true) : undefined;
        const c = stage(scratch, call.c, m * n, beta !== 0 && !cIn);
        backend.runJob({
          kind: "gemm",
          args: {
            m, n, k, alpha,
            a: a.byteOffset, aRowStride: transA ? 1 : k, aColStride: transA ? m : 1,
            b: b.byteOffset, ldb: n, beta, c: c.byteOffset, ldc: n, cIn: (cIn ?? c).byteOffset, scratch: gemmScratch,
          },
        });
        if (c !== call.c) call.c.set(c.subarray(0, m * n));
      } finally {
        for (const array of scratch) heap.release(array);
      }
    },
  };
  return backend;
}

/**
 * A best-fit allocator over the shared memory with coalescing: freed blocks are kept sorted by
 * offset and merged with free neighbours, a request takes an exact-size block when one is free (the
 * LoftQ loop reuses the same few sizes every iteration) or else the smallest larger one, split; a free
 * block at the top lowers the top. So calls on ever-new shapes reuse memory instead of growing it
 * (WebAssembly memory never shrinks). Growing shared memory never detaches existing views.
 */
class Heap {
  private top = CONTROL_BYTES;
  /** Bytes below this have been handed out before and may hold old values; above it the memory is still zero. */
  private highWater = CONTROL_BYTES;
  /** Free blocks, sorted by offset, never adjacent (merged on release), none ending at the top. */
  private readonly free: Array<{ offset: number; bytes: number }> = [];
  private readonly buffers = new WeakSet<ArrayBufferLike>();

  constructor(private readonly memory: KernelMemory) {
    this.buffers.add(memory.buffer);
  }

  owns(array: ArrayBufferView): boolean {
    return this.buffers.has(array.buffer);
  }

  allocate(length: number, zeroed = true): Float32Array {
    const bytes = Heap.blockBytes(length);
    let offset = this.takeFree(bytes);
    let dirty = offset !== undefined;
    if (offset === undefined) {
      offset = this.top;
      const end = this.top + bytes;
      const needed = Math.ceil(end / PAGE) - this.memory.buffer.byteLength / PAGE;
      if (needed > 0) {
        try {
          this.memory.grow(needed);
        } catch {
          throw new BackendUnavailableError(`WebAssembly memory cannot grow to ${end / 2 ** 20} MiB (4 GiB maximum)`);
        }
      }
      this.top = end;
      dirty = offset < this.highWater;
      this.highWater = Math.max(this.highWater, end);
    }
    const buffer = this.memory.buffer;
    this.buffers.add(buffer);
    const view = new Float32Array(buffer, offset, length);
    if (dirty && zeroed) view.fill(0);
    return view;
  }

  release(array: Float32Array): void {
    if (!this.owns(array)) return;
    let offset = array.byteOffset;
    let bytes = Heap.blockBytes(array.length);
    // Insert in offset order, merging with the free neighbours on either side.
    let index = this.free.findIndex((block) => block.offset > offset);
    if (index === -1) index = this.free.length;
    // A block released twice, or a view into one, would be handed out again while still in use.
    const overlapsFree = (this.free[index - 1] && this.free[index - 1]!.offset + this.free[index - 1]!.bytes > offset) || (this.free[index] && this.free[index]!.offset < offset + bytes);
    if (offset % 16 !== 0 || offset < CONTROL_BYTES || offset + bytes > this.top || overlapsFree) {
      throw new InvalidArgumentError("release: not a live allocation of this backend (released twice, or a view into one)");
    }
    const after = this.free[index];
    if (after && offset + bytes === after.offset) {
      bytes += after.bytes;
      this.free.splice(index, 1);
    }
    const before = this.free[index - 1];
    if (before && before.offset + before.bytes === offset) {
      offset = before.offset;
      bytes += before.bytes;
      this.free.splice(--index, 1);
    }
    if (offset + bytes === this.top) this.top = offset;
    else this.free.splice(index, 0, { offset, bytes });
  }

  /** A free block of `bytes`: an exact fit, else the smallest larger one split (its tail stays free). */
  private takeFree(bytes: number): number | undefined {
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const size = this.free[i]!.bytes;
      if (size === bytes) {
        best = i;
        break;
      }
      if (size > bytes && (best === -1 || size < this.free[best]!.bytes)) best = i;
    }
    if (best === -1) return undefined;
    const block = this.free[best]!;
    const offset = block.offset;
    if (block.bytes === bytes) this.free.splice(best, 1);
    else {
      block.offset += bytes;
      block.bytes -= bytes;
    }
    return offset;
  }

  private static blockBytes(length: number): number {
    return Math.max(16, Math.ceil((length * 4) / 16) * 16);
  }
}
