import { Worker, MessageChannel, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { workerExecArgv } from "./worker-exec-argv.js";
import { LoftqError } from "../errors.js";
import { viewsOverlap } from "../tensor/matrix.js";

/**
 * Reads tensors ahead on a worker thread, so reading and widening the next weight overlaps with
 * LoftQ on the current one: `request` starts a read into one of two shared slots, `take` waits
 * for it (usually already done) and returns a float32 view of the slot. Only the two most recent
 * requests are kept: a slot is reused by the request after next, so a view from `take` is valid
 * until then. Synchronous for the caller (Atomics.wait), like the kernels. The slots may be the
 * caller's (e.g. arrays in the kernel backend's shared memory, so LoftQ reads W where the worker
 * wrote it instead of copying it there).
 */
export interface TensorRead {
  /** File and absolute byte position of the tensor's data. */
  path: string;
  position: number;
  dtype: "F32" | "F16" | "BF16";
  count: number;
}

export interface TensorPrefetcher {
  request(read: TensorRead): void;
  take(): Float32Array;
  /**
   * Waits for reads in flight (up to CLOSE_WAIT_MS) and stops the worker. Returns whether the slots
   * are free: false only when a read did not finish in time (a dead or stuck worker), in which case
   * the caller must not reuse the slots' memory.
   */
  close(): boolean;
}

const SLOTS = 2;
/** How long close() waits for a read in flight (a whole tensor from a slow disk) before giving up on it. */
export const CLOSE_WAIT_MS = 120_000;
/**
 * How long take() waits for its tensor before reporting the reader as stuck (a 70B model's largest
 * tensor is ~0.5 GB: minutes only on a very slow disk), instead of hanging if its thread died.
 */
export const TAKE_WAIT_MS = 600_000;
/** Slot states in the shared status array. */
export const SLOT_STATE = { pending: 0, ready: 1, failed: 2 } as const;
const { pending: PENDING, failed: FAILED } = SLOT_STATE;

/**
 * `slots`, when given: SLOTS arrays of at least `largestCount` floats over SharedArrayBuffers, which
 * the caller keeps alive (and does not touch) until close(); by default the prefetcher makes its own.
 */
export function createTensorPrefetcher(largestCount: number, slots?: readonly Float32Array[]): TensorPrefetcher {
  if (slots) {
    if (slots.length !== SLOTS || slots.some((slot) => !(slot.buffer instanceof SharedArrayBuffer))) {
      throw new LoftqError("INVALID_ARGUMENT", `the prefetcher needs ${SLOTS} slots over SharedArrayBuffers`);
    }
    if (slots.some((slot) => slot.length < largestCount)) throw new LoftqError("INVALID_ARGUMENT", `each prefetch slot needs at least ${largestCount} floats`);
    const [a, b] = slots as [Float32Array, Float32Array];
    if (viewsOverlap(a, b)) {
      throw new LoftqError("INVALID_ARGUMENT", "the two prefetch slots overlap");
    }
  }
  const views = slots ?? Array.from({ length: SLOTS }, () => new Float32Array(new SharedArrayBuffer(4 * Math.max(1, largestCount))));
  // What the worker needs to rebuild each view: the shared buffer and where the slot lies in it.
  const placements = views.map((view) => ({ buffer: view.buffer as SharedArrayBuffer, byteOffset: view.byteOffset }));
  const status = new Int32Array(new SharedArrayBuffer(4 * SLOTS));
  const { port1: errors, port2: workerErrors } = new MessageChannel();
  const worker = new Worker(new URL("./tensor-prefetch-worker.js", import.meta.url), {
    workerData: { slots: placements, status, errors: workerErrors },
    execArgv: workerExecArgv(),
    transferList: [workerErrors as MessagePort],
  });
  worker.unref();
  const queue: Array<{ slot: number; count: number }> = [];
  let nextSlot = 0;
  return {
    request(read) {
      if (read.count > largestCount) throw new LoftqError("INVALID_ARGUMENT", `prefetch of ${read.count} values exceeds the slot size ${largestCount}`);
      if (queue.length >= SLOTS) throw new LoftqError("INVALID_ARGUMENT", "take() the oldest prefetched tensor before requesting another");
      const slot = nextSlot;
      nextSlot = (nextSlot + 1) % SLOTS;
      Atomics.store(status, slot, PENDING);
      worker.postMessage({ slot, ...read });
      queue.push({ slot, count: read.count });
    },
    take() {
      const next = queue.shift();
      if (!next) throw new LoftqError("INVALID_ARGUMENT", "nothing was requested");
      const deadline = Date.now() + TAKE_WAIT_MS;
      while (Atomics.load(status, next.slot) === PENDING && Date.now() < deadline) Atomics.wait(status, next.slot, PENDING, deadline - Date.now());
      if (Atomics.load(status, next.slot) === PENDING) {
        // Still in flight: close() must not free this slot either.
        queue.unshift(next);
        throw new LoftqError("PARSE_ERROR", `reading a tensor ahead took over ${TAKE_WAIT_MS / 60_000} minutes: the reader thread is stuck or gone`);
      }
      if (Atomics.load(status, next.slot) === FAILED) {
        const message = (receiveMessageOnPort(errors)?.message as { error?: string } | undefined)?.error;
        throw new LoftqError("PARSE_ERROR", `reading a tensor ahead failed: ${message ?? "unknown error"}`);
      }
      return views[next.slot]!.subarray(0, next.count);
    },
    close() {
      // Reads still in flight finish first: the slots may be the caller's memory, reused after this.
      let free = true;
      const deadline = Date.now() + CLOSE_WAIT_MS;
      for (const { slot } of queue.splice(0)) {
        while (Atomics.load(status, slot) === PENDING && Date.now() < deadline) Atomics.wait(status, slot, PENDING, deadline - Date.now());
        if (Atomics.load(status, slot) === PENDING) free = false;
      }
      // The worker closes its file descriptors and exits by itself.
      worker.postMessage({ close: true });
      errors.close();
      return free;
    },
  };
}
