import { Worker, MessageChannel, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { workerExecArgv } from "./worker-exec-argv.js";
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

/** Slots of the shared state array: files completed, and whether the worker has started. */
export const PUBLISH_STATE = { completed: 0, started: 1 } as const;
/** How long a worker may take to start before it is reported as dead (it starts in ~50 ms). */
export const PUBLISH_START_WAIT_MS = 30_000;
/** How long drain() waits for one file before reporting the worker as stuck (a very slow disk). */
export const PUBLISH_WAIT_MS = 600_000;

export interface PublishFailure {
  path: string;
  code: string | undefined;
  message: string;
}

export function createBackgroundPublisher(): BackgroundPublisher {
  const state = new Int32Array(new SharedArrayBuffer(8));
  const created = Date.now();
  const { port1: failures, port2: workerFailures } = new MessageChannel();
  const worker = new Worker(new URL("./background-publish-worker.js", import.meta.url), {
    workerData: { state, failures: workerFailures },
    execArgv: workerExecArgv(),
    transferList: [workerFailures as MessagePort],
  });
  worker.unref();
  // A worker that died must not crash the process with an unhandled 'error' event later; this thread
  // takes no events while it waits, so wait() tells a worker that never started by the started flag.
  worker.on("error", () => undefined);
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
      // A worker that never started (it could not load) is reported after seconds, not minutes.
      const starting = Atomics.load(state, PUBLISH_STATE.started) === 0;
      if (starting && Date.now() - created > PUBLISH_START_WAIT_MS) throw new OutputWriteError("the thread that makes finished files durable did not start");
      const timeout = starting ? 1000 : PUBLISH_WAIT_MS;
      if (Atomics.wait(state, PUBLISH_STATE.completed, completed, timeout) === "timed-out" && !starting) {
        throw new OutputWriteError(`making a finished file durable took over ${PUBLISH_WAIT_MS / 60_000} minutes: the disk or its writer thread is stuck`);
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
