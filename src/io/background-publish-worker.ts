/**
 * Worker side of the background publisher: fsync a finished temporary file, rename it to its final
 * name, fsync the directory, then count it as completed (failures are posted first, so the counter
 * never runs ahead of them).
 */
import { renameSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { workerData, parentPort, type MessagePort } from "node:worker_threads";
import { syncDirectory, syncFile } from "./durable-file.js";
import { PUBLISH_STATE, type PublishFailure } from "./background-publisher.js";

const { state, failures } = workerData as { state: Int32Array; failures: MessagePort };
Atomics.store(state, PUBLISH_STATE.started, 1);

parentPort!.on("message", (job: { partial: string; path: string } | { close: true }) => {
  if ("close" in job) process.exit(0);
  try {
    syncFile(job.partial);
    renameSync(job.partial, job.path);
    syncDirectory(dirname(job.path));
  } catch (error) {
    try {
      rmSync(job.partial, { force: true });
    } catch {
      // left behind under its temporary name, which a resumed run ignores
    }
    const failure: PublishFailure = { path: job.path, code: (error as NodeJS.ErrnoException).code, message: (error as Error).message };
    failures.postMessage(failure);
  }
  Atomics.add(state, PUBLISH_STATE.completed, 1);
  Atomics.notify(state, PUBLISH_STATE.completed);
});
