import type { KernelArgs } from "../kernels/wasm-backend.js";

/**
 * Layout of the control block at the start of the shared memory (CONTROL_BYTES = 1024 bytes):
 * word 0 job generation (−1 = stop), word 1 finished count, word 2 ready count, then one 16-word
 * slot per worker holding its kernel arguments (alpha and beta as float32 bit patterns).
 */
export const CONTROL = { words: 256, generation: 0, done: 1, ready: 2, firstSlot: 16, slotWords: 16 } as const;
export const MAX_WORKERS = (CONTROL.words - CONTROL.firstSlot) / CONTROL.slotWords;

export function writeSlot(memory: WebAssembly.Memory, slot: number, args: KernelArgs): void {
  const ints = new Int32Array(memory.buffer, 0, CONTROL.words);
  const floats = new Float32Array(memory.buffer, 0, CONTROL.words);
  const at = CONTROL.firstSlot + slot * CONTROL.slotWords;
  ints[at] = args.m; ints[at + 1] = args.n; ints[at + 2] = args.k;
  floats[at + 3] = args.alpha;
  ints[at + 4] = args.a; ints[at + 5] = args.aRowStride; ints[at + 6] = args.aColStride;
  ints[at + 7] = args.b; ints[at + 8] = args.ldb;
  floats[at + 9] = args.beta;
  ints[at + 10] = args.c; ints[at + 11] = args.ldc;
}

export function readSlot(memory: WebAssembly.Memory, slot: number): KernelArgs {
  const ints = new Int32Array(memory.buffer, 0, CONTROL.words);
  const floats = new Float32Array(memory.buffer, 0, CONTROL.words);
  const at = CONTROL.firstSlot + slot * CONTROL.slotWords;
  return {
    m: ints[at]!, n: ints[at + 1]!, k: ints[at + 2]!, alpha: floats[at + 3]!,
    a: ints[at + 4]!, aRowStride: ints[at + 5]!, aColStride: ints[at + 6]!,
    b: ints[at + 7]!, ldb: ints[at + 8]!, beta: floats[at + 9]!, c: ints[at + 10]!, ldc: ints[at + 11]!,
  };
}
