import { Worker, MessageChannel, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { LoftqError } from "../errors.js";

/**
 * Reads tensors ahead on a worker thread, so reading and widening the next weight overlaps with
 * LoftQ on the current one: `request` starts a read into one of two shared slots, `take` waits
 * for it (usually already done) and returns a float32 view of the slot. Only the two most recent
 * requests are kept: a slot is reused by the request after next, so a view from `take` is valid
 * until then. Synchronous for the caller (Atomics.wait), like the kernels.
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
  close(): void;
}

const SLOTS = 2;
/** Slot states in the shared status array. */
export const SLOT_STATE = { pending: 0, ready: 1, failed: 2 } as const;
const { pending: PENDING, failed: FAILED } = SLOT_STATE;

export function createTensorPrefetcher(largestCount: number): TensorPrefetcher {
  const slots = Array.from({ length: SLOTS }, () => new SharedArrayBuffer(4 * Math.max(1, largestCount)));
  const status = new Int32Array(new SharedArrayBuffer(4 * SLOTS));
  const { port1: errors, port2: workerErrors } = new MessageChannel();
  const worker = new Worker(new URL("./tensor-prefetch-worker.js", import.meta.url), {
    workerData: { slots, status, errors: workerErrors },
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
      while (Atomics.load(status, next.slot) === PENDING) Atomics.wait(status, next.slot, PENDING);
      if (Atomics.load(status, next.slot) === FAILED) {
        const message = (receiveMessageOnPort(errors)?.message as { error?: string } | undefined)?.error;
        throw new LoftqError("PARSE_ERROR", `reading a tensor ahead failed: ${message ?? "unknown error"}`);
      }
      return new Float32Array(slots[next.slot]!, 0, next.count);
    },
    close() {
      // The worker closes its file descriptors and exits by itself.
      worker.postMessage({ close: true });
      errors.close();
    },
  };
}
