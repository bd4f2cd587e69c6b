import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { MessageChannel, receiveMessageOnPort, Worker } from "node:worker_threads";
import { createWasmBackend, defaultKernelVariant, GEMM_SCRATCH_BYTES, MAX_GEMM_SHARES, type KernelJob, type KernelVariant, type WasmBackend } from "../kernels/wasm-backend.js";
import { CONTROL, MAX_WORKERS, readResult, writeJob } from "./kernel-control.js";
import { workerExecArgv } from "../io/worker-exec-argv.js";
import { BackendUnavailableError, InvalidArgumentError } from "../errors.js";

/**
 * The WebAssembly kernels on every core. Each job is cut into one share per thread (gemm: rows of
 * C, or columns when C is short and wide; encode/decode: whole blocks; transpose: columns; subtract and
 * bf16: ranges; the eigensolver steps are not split); the calling
 * thread runs the first share itself and then blocks in Atomics.wait until the workers are done,
 * so every kernel stays synchronous. Workers share the backend's memory: nothing is copied
 * between threads. Small jobs skip the handoff.
 */
export const PARALLEL_MIN_WORK = 1 << 20;
const STARTUP_TIMEOUT_MS = 10_000;

export interface ThreadedBackend extends WasmBackend {
  readonly threads: number;
  terminate(): void;
}

export function createThreadedBackend(threads = availableParallelism(), variant: KernelVariant = defaultKernelVariant()): ThreadedBackend {
  // A fraction never reached the ready count (a 10 s wait for workers that all started), NaN none.
  if (!Number.isInteger(threads) || threads < 1) throw new InvalidArgumentError(`createThreadedBackend: threads must be a positive integer, got ${threads}`);
  // The workers instantiate the same compiled module, so they run the same variant.
  const base = createWasmBackend("wasm-threads", variant);
  const workerCount = Math.max(0, Math.min(threads - 1, MAX_WORKERS, MAX_GEMM_SHARES - 1));
  const control = new Int32Array(base.memory.buffer, 0, CONTROL.words);
  const script = new URL("./kernel-worker.js", import.meta.url);
  // A bundle that left the worker script behind would otherwise wait out the start-up timeout: the
  // worker's load error arrives as an event, and this thread's event loop is blocked below.
  if (workerCount > 0 && script.protocol === "file:" && !existsSync(fileURLToPath(script))) {
    throw new BackendUnavailableError(`the kernel worker script ${fileURLToPath(script)} is missing (copy it beside thread-pool-backend.js; the single-threaded "wasm" backend needs none)`);
  }
  // Each worker reports failures on its own port; this thread reads them synchronously (receiveMessageOnPort).
  const channels = Array.from({ length: workerCount }, () => new MessageChannel());
  const workers = channels.map(({ port1, port2 }, slot) => {
    port1.unref();
    const worker = new Worker(script, {
      workerData: { memory: base.memory, module: base.module, slot, errors: port2 },
      transferList: [port2],
      execArgv: workerExecArgv(),
    });
    worker.unref();
    return worker;
  });
  const failure = () => {
    const messages: string[] = [];
    for (const { port1 } of channels) {
      for (let message = receiveMessageOnPort(port1); message; message = receiveMessageOnPort(port1)) messages.push(String(message.message));
    }
    Atomics.store(control, CONTROL.failed, 0);
    return messages.join("; ") || "a kernel worker failed";
  };
  const stop = () => {
    Atomics.store(control, CONTROL.generation, -1);
    Atomics.notify(control, CONTROL.generation);
    for (const worker of workers) void worker.terminate();
  };
  const started = Date.now();
  while (Atomics.load(control, CONTROL.ready) < workerCount) {
    if (Date.now() - started > STARTUP_TIMEOUT_MS) {
      stop();
      throw new BackendUnavailableError(`kernel worker threads did not start within ${STARTUP_TIMEOUT_MS / 1000} s (the single-threaded "wasm" backend needs none)`);
    }
    Atomics.wait(control, CONTROL.ready, Atomics.load(control, CONTROL.ready), 100);
  }
  if (Atomics.load(control, CONTROL.failed) > 0) {
    const message = failure();
    stop();
    throw new BackendUnavailableError(`kernel worker threads could not start: ${message} (the single-threaded "wasm" backend needs none)`);
  }
  const runHere = base.runJob;
  const runJob = (job: KernelJob): number => {
    const shares = workerCount === 0 || workOf(job) < PARALLEL_MIN_WORK ? [job] : splitJob(job, workerCount + 1);
    if (shares.length === 1) return runHere(job);
    // After terminate() no worker would ever count its share done.
    if (Atomics.load(control, CONTROL.generation) < 0) throw new BackendUnavailableError("this thread pool was terminated");
    Atomics.store(control, CONTROL.done, 0);
    for (let slot = 0; slot < workerCount; slot++) writeJob(base.memory, slot, shares[slot + 1]);
    Atomics.add(control, CONTROL.generation, 1);
    Atomics.notify(control, CONTROL.generation);
    // The workers' shares are waited for even when this thread's own share throws: the next job
    // must not start while they still write this one's results.
    let total = 0;
    let ownFailure: unknown;
    try {
      total = runHere(shares[0]!);
    } catch (error) {
      ownFailure = error;
    }
    for (let done = Atomics.load(control, CONTROL.done); done < workerCount; done = Atomics.load(control, CONTROL.done)) {
      Atomics.wait(control, CONTROL.done, done);
    }
    const workerFailure = Atomics.load(control, CONTROL.failed) > 0 ? failure() : undefined;
    if (ownFailure !== undefined) throw ownFailure;
    if (workerFailure !== undefined) throw new Error(`${job.kind} kernel failed on a worker thread: ${workerFailure}`);
    for (let slot = 0; slot + 1 < shares.length; slot++) total += readResult(base.memory, slot);
    return total;
  };
  return Object.assign(base, {
    threads: workerCount + 1,
    runJob,
    terminate: stop,
  });
}

function workOf(job: KernelJob): number {
  switch (job.kind) {
    case "gemm":
      return 2 * job.args.m * job.args.n * job.args.k;
    case "transpose":
      return 16 * job.args.rows * job.args.cols;
    case "tridiagonalize":
    case "reflect":
      return 0; // sequential kernels: they run on the calling thread
    default:
      return 16 * job.args.n;
  }
}

/** Cuts a job into at most `parts` independent shares. */
function splitJob(job: KernelJob, parts: number): KernelJob[] {
  const ranges = (total: number, granule: number) => {
    const step = Math.ceil(total / parts / granule) * granule;
    const out: Array<[number, number]> = [];
    for (let start = 0; start < total; start += step) out.push([start, Math.min(step, total - start)]);
    return out;
  };
  switch (job.kind) {
    case "gemm": {
      const g = job.args;
      const byRows = g.m >= parts * 8 || g.m >= g.n;
      // Shares cover whole 4×8 register tiles.
      // Each share packs B into its own scratch.
      return ranges(byRows ? g.m : g.n, 8).map(([start, size], share) => ({
        kind: "gemm" as const,
        args: byRows
          ? { ...g, m: size, a: g.a + 4 * start * g.aRowStride, c: g.c + 4 * start * g.ldc, cIn: g.cIn + 4 * start * g.ldc, scratch: g.scratch + share * GEMM_SCRATCH_BYTES }
          : { ...g, n: size, b: g.b + 4 * start, c: g.c + 4 * start, cIn: g.cIn + 4 * start, scratch: g.scratch + share * GEMM_SCRATCH_BYTES },
      }));
    }
    case "encode": {
      const e = job.args;
      return ranges(e.n, e.blockSize).map(([start, size]) => ({
        kind: "encode" as const,
        args: { ...e, values: e.values + 4 * start, n: size, codes: e.codes + start, absmax: e.absmax + (4 * start) / e.blockSize, deq: e.deq === 0 ? 0 : e.deq + 4 * start, minuend: e.minuend === 0 ? 0 : e.minuend + 4 * start },
      }));
    }
    case "decode": {
      const d = job.args;
      return ranges(d.n, d.blockSize).map(([start, size]) => ({
        kind: "decode" as const,
        args: { ...d, codes: d.codes + start, n: size, absmax: d.absmax + (4 * start) / d.blockSize, out: d.out + 4 * start },
      }));
    }
    case "transpose": {
      // By columns of A: each share writes its own rows of the result.
      const t = job.args;
      return ranges(t.cols, 4).map(([start, size]) => ({
        kind: "transpose" as const,
        args: { ...t, a: t.a + 4 * start, cols: size, out: t.out + 4 * start * t.rows },
      }));
    }
    case "subtract": {
      const d = job.args;
      return ranges(d.n, 4).map(([start, size]) => ({
        kind: "subtract" as const,
        args: { a: d.a + 4 * start, b: d.b === 0 ? 0 : d.b + 4 * start, out: d.out === 0 ? 0 : d.out + 4 * start, n: size },
      }));
    }
    case "bf16": {
      const h = job.args;
      return ranges(h.n, 8).map(([start, size]) => ({ kind: "bf16" as const, args: { values: h.values + 4 * start, n: size, out: h.out + 2 * start } }));
    }
    case "tridiagonalize":
    case "reflect":
      return [job];
  }
}
