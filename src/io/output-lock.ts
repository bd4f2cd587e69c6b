import { closeSync, openSync, readFileSync, rmSync, statSync, utimesSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { LoftqError } from "../errors.js";

/**
 * A lock beside an output (`<out>.lock`) held while a run writes `<out>.partial` and renames it into
 * place: two runs on one --out (a job retry that overlaps the job still running) would otherwise
 * delete and rewrite each other's .partial and lose both. The holder refreshes its time stamp as it
 * works; a lock whose process is gone (same host) or that has not been refreshed for
 * LOCK_STALE_MS (any host: a killed node cannot remove its lock) is taken over.
 */
export const LOCK_STALE_MS = 15 * 60_000;
/** Refreshes closer together than this are skipped (events can come thousands of times a second). */
const REFRESH_INTERVAL_MS = 10_000;

export class OutputBusyError extends LoftqError {
  constructor(message: string) {
    super("INVALID_ARGUMENT", message);
    this.name = "OutputBusyError";
  }
}

export interface OutputLock {
  /** Marks the lock as alive (cheap: at most one file-time update per REFRESH_INTERVAL_MS). */
  refresh(): void;
  release(): void;
}

interface Holder {
  pid: number;
  host: string;
  started: string;
}

export function acquireOutputLock(output: string, now: () => number = Date.now): OutputLock {
  const path = `${output}.lock`;
  const me: Holder = { pid: process.pid, host: hostname(), started: new Date(now()).toISOString() };
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(path, "wx");
      try {
        writeSync(fd, JSON.stringify(me) + "\n");
      } finally {
        closeSync(fd);
      }
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw error;
      const holder = readHolder(path);
      const age = now() - (statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? 0);
      // Not refreshed for that long: gone whatever its host says (a reused pid looks alive).
      const gone = age > LOCK_STALE_MS || (holder?.host === me.host && !processAlive(holder.pid));
      if (holder && !gone) {
        throw new OutputBusyError(
          `another loftq run (pid ${holder.pid} on ${holder.host}, started ${holder.started}) is writing ${output}; ` +
            `wait for it, or delete ${path} if that run is gone`,
        );
      }
      // Unreadable (a crash between create and write) or stale: take it over.
      rmSync(path, { force: true });
    }
  }
  let lastRefresh = now();
  return {
    refresh() {
      if (now() - lastRefresh < REFRESH_INTERVAL_MS) return;
      lastRefresh = now();
      const time = new Date(lastRefresh);
      try {
        utimesSync(path, time, time);
      } catch {
        // Removed by hand: the run goes on; the lock only guards against a second run.
      }
    },
    release() {
      // Only our own lock: one taken over from us (we looked stale) belongs to the new holder.
      if (readHolder(path)?.pid === me.pid && readHolder(path)?.host === me.host) rmSync(path, { force: true });
    },
  };
}

function readHolder(path: string): Holder | undefined {
  try {
    const value = JSON.parse(readFileSync(path, "utf8")) as Partial<Holder>;
    return typeof value.pid === "number" && typeof value.host === "string" && typeof value.started === "string" ? (value as Holder) : undefined;
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
