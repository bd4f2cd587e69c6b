import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { createWasmBackend, type KernelArgs, type WasmBackend } from "../kernels/wasm-backend.js";
import { CONTROL, MAX_WORKERS, writeSlot } from "./kernel-control.js";

/**
 * The WebAssembly kernel on every core: each gemm is cut into one share per thread (rows of C, or
 * columns when C is short and wide); the calling thread runs the first share itself and then
 * blocks in Atomics.wait until the workers are done, so `gemm` stays synchronous. Workers share
 * the backend's memory, so nothing is copied between threads. Small products skip the handoff.
 */
export const PARALLEL_MIN_FLOPS = 1 << 21;
const STARTUP_TIMEOUT_MS = 10_000;

export interface ThreadedBackend extends WasmBackend {
  readonly threads: number;
  terminate(): void;
}

export function createThreadedBackend(threads = availableParallelism()): ThreadedBackend {
  const base = createWasmBackend("wasm-threads");
  const workerCount = Math.max(0, Math.min(threads - 1, MAX_WORKERS));
  const control = new Int32Array(base.memory.buffer, 0, CONTROL.words);
  const workers = Array.from({ length: workerCount }, (_, slot) => {
    const worker = new Worker(new URL("./kernel-worker.js", import.meta.url), { workerData: { memory: base.memory, module: base.module, slot } });
    worker.unref();
    return worker;
  });
  const started = Date.now();
  while (Atomics.load(control, CONTROL.ready) < workerCount) {
    if (Date.now() - started > STARTUP_TIMEOUT_MS) throw new Error("gemm worker threads did not start");
    Atomics.wait(control, CONTROL.ready, Atomics.load(control, CONTROL.ready), 100);
  }
  const runSingle = base.run;
  const run = (args: KernelArgs) => {
    if (workerCount === 0 || 2 * args.m * args.n * args.k < PARALLEL_MIN_FLOPS) {
      runSingle(args);
      return;
    }
    const shares = splitWork(args, workerCount + 1);
    Atomics.store(control, CONTROL.done, 0);
    shares.slice(1).forEach((share, slot) => writeSlot(base.memory, slot, share));
    for (let slot = shares.length - 1; slot < workerCount; slot++) writeSlot(base.memory, slot, { ...args, m: 0, n: 0 });
    Atomics.add(control, CONTROL.generation, 1);
    Atomics.notify(control, CONTROL.generation);
    runSingle(shares[0]!);
    for (let done = Atomics.load(control, CONTROL.done); done < workerCount; done = Atomics.load(control, CONTROL.done)) {
      Atomics.wait(control, CONTROL.done, done);
    }
  };
  return Object.assign(base, {
    threads: workerCount + 1,
    run,
    terminate() {
      Atomics.store(control, CONTROL.generation, -1);
      Atomics.notify(control, CONTROL.generation);
      for (const worker of workers) void worker.terminate();
    },
  });
}

/** Cuts the output into `parts` shares: by rows of C, or by columns when C has fewer rows than parts·8. */
function splitWork(args: KernelArgs, parts: number): KernelArgs[] {
  const byRows = args.m >= parts * 8 || args.m >= args.n;
  const total = byRows ? args.m : args.n;
  const shares: KernelArgs[] = [];
  const step = Math.ceil(total / parts / 8) * 8; // keep shares on whole 4×8 tiles
  for (let start = 0; start < total; start += step) {
    const size = Math.min(step, total - start);
    shares.push(
      byRows
        ? { ...args, m: size, a: args.a + 4 * start * args.aRowStride, c: args.c + 4 * start * args.ldc }
        : { ...args, n: size, b: args.b + 4 * start, c: args.c + 4 * start },
    );
  }
  return shares;
}
