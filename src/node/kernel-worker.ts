/**
 * Worker side of the thread-pool backend: instantiate the kernels on the shared memory, then loop
 * forever waiting (Atomics.wait) for a new job generation, run this worker's slot, count it done.
 */
import { workerData } from "node:worker_threads";
import { instantiateKernels, runKernelJob, type KernelMemory, type KernelModule } from "../kernels/wasm-backend.js";
import { CONTROL, readJob, writeResult } from "./kernel-control.js";

const { memory, module, slot } = workerData as { memory: KernelMemory; module: KernelModule; slot: number };
const kernel = instantiateKernels(module, memory);
const control = new Int32Array(memory.buffer, 0, CONTROL.words);
Atomics.add(control, CONTROL.ready, 1);
Atomics.notify(control, CONTROL.ready);
let seen = 0;
for (;;) {
  Atomics.wait(control, CONTROL.generation, seen);
  seen = Atomics.load(control, CONTROL.generation);
  if (seen < 0) break;
  const job = readJob(memory, slot);
  writeResult(memory, slot, job ? runKernelJob(kernel, job) : 0);
  Atomics.add(control, CONTROL.done, 1);
  Atomics.notify(control, CONTROL.done);
}
