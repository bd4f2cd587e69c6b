import { Worker, MessageChannel, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { OutputWriteError, DiskFullError } from "./safetensors-writer.js";

/**
 * Makes finished files durable without stalling the caller: `publish` hands over a complete
 * temporary file, which a worker thread fsyncs, renames to its final name and records in its
 * directory. A file therefore appears under its final name only with all of its data on disk, so a
 * power cut (or a cloud VM stopped hard) can lose the last few files but never leave one whose header
 * is valid and whose data is zeros. The fsync of a 32–90 MiB matrix takes 50–150 ms: on LoftQ's
 * thread that was ~7 % of a 7B run, here it overlaps with the next matrix.
 */
export interface BackgroundPublisher {
  /** Queues `partial` (closed, complete) to become `path`; throws a failure of an earlier file. */
  publish(partial: string, path: string): void;
  /** Waits until every queued file is in place; throws the first failure. */
  drain(): void;
  /** Drains without throwing (for cleanup after another error) and stops the worker. */
  close(): void;
}

/** Slots of the shared state array. */
export const PUBLISH_STATE = { completed: 0 } as const;
/** How long drain() waits for one file before reporting the worker as stuck (a very slow disk). */
export const PUBLISH_WAIT_MS = 600_000;

export interface PublishFailure {
  path: string;
  code: string | undefined;
  message: string;
}

export function createBackgroundPublisher(): BackgroundPublisher {
  const state = new Int32Array(new SharedArrayBuffer(4));
  const { port1: failures, port2: workerFailures } = new MessageChannel();
  const worker = new Worker(new URL("./background-publish-worker.js", import.meta.url), {
    workerData: { state, failures: workerFailures },
    transferList: [workerFailures as MessagePort],
  });
  worker.unref();
  // A worker that died (it could not load, say) must not crash the process with an unhandled 'error'
  // event; the wait below then times out naming it, as this thread cannot take events while it waits.
  let died: Error | undefined;
  worker.on("error", (error) => (died = error));
  let queued = 0;
  let closed = false;
  const throwFailure = (): void => {
    const failure = receiveMessageOnPort(failures)?.message as PublishFailure | undefined;
    if (!failure) return;
    const text = `${failure.path}: ${failure.message}`;
    if (failure.code === "ENOSPC" || failure.code === "EDQUOT") throw new DiskFullError(`${failure.path}: the disk is full; this file was not left behind`);
    throw new OutputWriteError(text);
  };
  const wait = (): void => {
    let completed = Atomics.load(state, PUBLISH_STATE.completed);
    while (completed < queued) {
      if (Atomics.wait(state, PUBLISH_STATE.completed, completed, PUBLISH_WAIT_MS) === "timed-out") {
        throw new OutputWriteError(`making a finished file durable took over ${PUBLISH_WAIT_MS / 60_000} minutes: the disk or its writer thread is stuck${died ? ` (${died.message})` : ""}`);
      }
      completed = Atomics.load(state, PUBLISH_STATE.completed);
    }
  };
  return {
    publish(partial, path) {
      if (closed) throw new OutputWriteError("the publisher is closed");
      throwFailure();
      queued++;
      worker.postMessage({ partial, path });
    },
    drain() {
      wait();
      throwFailure();
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        wait();
      } catch {
        // stuck: the files left behind are temporary names, ignored by a resumed run
      }
      worker.postMessage({ close: true });
      failures.close();
    },
  };
}
