/**
 * Worker side of the thread-pool backend: instantiate the kernels on the shared memory, then loop
 * forever waiting (Atomics.wait) for a new job generation, run this worker's slot, count it done.
 * A failure (at start or in a share) is counted in CONTROL.failed and its message sent on `errors`
 * before the count that wakes the calling thread, which is blocked and reads it synchronously:
 * an uncaught error here would leave it waiting forever.
 */
import { workerData, type MessagePort } from "node:worker_threads";
import { instantiateKernels, runKernelJob, type KernelMemory, type KernelModule } from "../kernels/wasm-backend.js";
import { CONTROL, readJob, writeResult } from "./kernel-control.js";

const { memory, module, slot, errors } = workerData as { memory: KernelMemory; module: KernelModule; slot: number; errors: MessagePort };
const control = new Int32Array(memory.buffer, 0, CONTROL.words);
const fail = (error: unknown) => {
  errors.postMessage(`kernel worker ${slot + 1}: ${error instanceof Error ? error.message : String(error)}`);
  Atomics.add(control, CONTROL.failed, 1);
};
let kernel: ReturnType<typeof instantiateKernels> | undefined;
try {
  kernel = instantiateKernels(module, memory);
} catch (error) {
  fail(error);
}
Atomics.add(control, CONTROL.ready, 1);
Atomics.notify(control, CONTROL.ready);
let seen = 0;
while (kernel) {
  Atomics.wait(control, CONTROL.generation, seen);
  seen = Atomics.load(control, CONTROL.generation);
  if (seen < 0) break;
  let result = 0;
  try {
    const job = readJob(memory, slot);
    if (job) result = runKernelJob(kernel, job);
  } catch (error) {
    fail(error);
  }
  writeResult(memory, slot, result);
  Atomics.add(control, CONTROL.done, 1);
  Atomics.notify(control, CONTROL.done);
}
errors.close();
