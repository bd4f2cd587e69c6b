import type { KernelJob, KernelMemory } from "../kernels/wasm-backend.js";
import { CONTROL_BYTES } from "../kernels/wasm-backend.js";

/**
 * The control block at the start of the shared memory (CONTROL_BYTES): int32 words 0–3 hold the
 * job generation (−1 = stop), the finished count, the ready count and the failed count (workers
 * whose start or share threw: their message follows on the pool's message port); from byte 64 on, one slot
 * of SLOT_WORDS float64 per worker holds its job (kind code, then the arguments in declaration order —
 * every pointer and size is an exact integer in float64) and, in the last word, its result.
 */
export const CONTROL = { words: 16, generation: 0, done: 1, ready: 2, failed: 3 } as const;
const SLOT_OFFSET = 64;

const KINDS = ["gemm", "encode", "decode", "transpose", "subtract", "bf16", "tridiagonalize", "reflect"] as const;
const FIELDS = {
  gemm: ["m", "n", "k", "alpha", "a", "aRowStride", "aColStride", "b", "ldb", "beta", "c", "ldc", "cIn", "scratch"],
  encode: ["values", "n", "blockSize", "table", "below", "inside", "thresholds", "thresholdCount", "peft", "zeroCode", "codes", "absmax", "deq", "minuend"],
  decode: ["codes", "n", "blockSize", "table", "absmax", "out"],
  transpose: ["a", "rows", "cols", "lda", "out"],
  subtract: ["a", "b", "out", "n"],
  bf16: ["values", "n", "out"],
  // Never sent to workers (the pool runs them on the calling thread), listed so every job kind encodes.
  tridiagonalize: ["a", "n", "d", "e", "reflectors", "p"],
  reflect: ["reflectors", "n", "x", "count", "dots"],
} as const;
/** The kind code, the longest argument list and the result word. */
const SLOT_WORDS = 2 + Math.max(...Object.values(FIELDS).map((fields) => fields.length));
export const MAX_WORKERS = Math.floor((CONTROL_BYTES - SLOT_OFFSET) / (SLOT_WORDS * 8));

function slotView(memory: KernelMemory, slot: number): Float64Array {
  return new Float64Array(memory.buffer, SLOT_OFFSET + slot * SLOT_WORDS * 8, SLOT_WORDS);
}

export function writeJob(memory: KernelMemory, slot: number, job: KernelJob | undefined): void {
  const view = slotView(memory, slot);
  view.fill(0);
  view[0] = job ? KINDS.indexOf(job.kind) + 1 : 0;
  if (!job) return;
  const args = job.args as unknown as Record<string, number>;
  FIELDS[job.kind].forEach((field, i) => (view[i + 1] = args[field]!));
}

export function readJob(memory: KernelMemory, slot: number): KernelJob | undefined {
  const view = slotView(memory, slot);
  const kind = KINDS[view[0]! - 1];
  if (!kind) return undefined;
  const args: Record<string, number> = {};
  FIELDS[kind].forEach((field, i) => (args[field] = view[i + 1]!));
  return { kind, args } as unknown as KernelJob;
}

export function writeResult(memory: KernelMemory, slot: number, value: number): void {
  slotView(memory, slot)[SLOT_WORDS - 1] = value;
}

export function readResult(memory: KernelMemory, slot: number): number {
  return slotView(memory, slot)[SLOT_WORDS - 1]!;
}
