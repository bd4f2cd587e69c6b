/**
 * Worker side of the tensor prefetcher: reads a tensor's bytes into its shared slot and widens
 * 16-bit data to float32 in place (the back half holds the raw bytes), then flags the slot.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import { decodeHalf } from "../tensor/dtype.js";
import { SLOT_STATE, type TensorRead } from "./tensor-prefetcher.js";

const { slots, status, errors } = workerData as { slots: Array<{ buffer: SharedArrayBuffer; byteOffset: number }>; status: Int32Array; errors: MessagePort };
const descriptors = new Map<string, number>();

function readExactly(fd: number, out: Uint8Array, position: number): void {
  for (let done = 0; done < out.length; ) {
    const read = readSync(fd, out, done, Math.min(1 << 30, out.length - done), position + done);
    if (read === 0) throw new Error(`unexpected end of file at byte ${position + done}`);
    done += read;
  }
}

parentPort!.on("message", (job: (TensorRead & { slot: number }) | { close: true }) => {
  if ("close" in job) {
    for (const fd of descriptors.values()) closeSync(fd);
    process.exit(0);
  }
  try {
    let fd = descriptors.get(job.path);
    if (fd === undefined) descriptors.set(job.path, (fd = openSync(job.path, "r")));
    const { buffer, byteOffset } = slots[job.slot]!;
    const out = new Float32Array(buffer, byteOffset, job.count);
    if (job.dtype === "F32") {
      readExactly(fd, new Uint8Array(buffer, byteOffset, 4 * job.count), job.position);
    } else {
      const halves = new Uint8Array(buffer, byteOffset + 2 * job.count, 2 * job.count);
      readExactly(fd, halves, job.position);
      decodeHalf(halves, job.dtype === "F16" ? "f16" : "bf16", out);
    }
    Atomics.store(status, job.slot, SLOT_STATE.ready);
  } catch (error) {
    errors.postMessage({ error: `${job.path}: ${(error as Error).message}` });
    Atomics.store(status, job.slot, SLOT_STATE.failed);
  }
  Atomics.notify(status, job.slot);
});
