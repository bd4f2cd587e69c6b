import { linkSync, lstatSync, mkdirSync, readFileSync, readlinkSync, renameSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { LoftqError } from "../errors.js";

/**
 * A lock beside an output (`<out>.lock`) held while a run writes `<out>.partial` and renames it into
 * place: two runs on one --out (a job retry that overlaps the job still running) would otherwise
 * delete and rewrite each other's .partial and lose both.
 *
 * The lock appears whole or not at all (written to a private name, then hard-linked into place, which
 * fails if one exists; an exclusive create where the file system has no hard links). It names its
 * holder: pid, host, and what makes a pid mean one process (the boot, the pid namespace, the process's
 * start time). A lock is taken over when its holder is gone:
 * - in the same boot and pid namespace of this host, when its pid no longer runs, or is this process's
 *   pid with another start time (a restarted container's namespace hands out the same small pids);
 *   a live holder keeps it however long it is silent, and a lock of this very process (another
 *   worker thread's) is busy;
 * - on this host after a reboot, at once;
 * - anywhere else (another host, a container on host networking with its own pid namespace, a lock
 *   from a version that did not record these), once it has not been refreshed for LOCK_STALE_MS (a
 *   running job refreshes it as it works).
 * A stale lock is renamed away under a unique name and put back if it changed meanwhile, so of two runs
 * taking it over at once only one wins (three at once can still both win).
 */
export const LOCK_STALE_MS = 15 * 60_000;
/** Refreshes closer together than this are skipped (events can come thousands of times a second). */
const REFRESH_INTERVAL_MS = 10_000;
/** Attempts at taking a lock whose holder keeps vanishing (each attempt only after a stale one moved). */
const MAX_ATTEMPTS = 5;
/** How often, and how far apart, a holder that finds its lock missing or changed looks again. */
const RECHECKS = 4;
const RECHECK_DELAY_MS = 50;
/** An unreadable lock younger than this is one being written (exclusive create), not garbage. */
const UNREADABLE_GRACE_MS = 10_000;

export class OutputBusyError extends LoftqError {
  constructor(message: string) {
    super("INVALID_ARGUMENT", message);
    this.name = "OutputBusyError";
  }
}

/** This run's lock was taken over (it looked stale to another run, which now owns `<out>.partial`). */
export class OutputLockLostError extends OutputBusyError {
  constructor(message: string) {
    super(message);
    this.name = "OutputLockLostError";
  }
}

export interface OutputLock {
  /**
   * Checks the lock is still this run's (OutputLockLostError if not) and marks it alive (the file
   * time at most once per REFRESH_INTERVAL_MS). Called as the run makes progress and before it publishes.
   */
  refresh(): void;
  release(): void;
}

interface Holder {
  pid: number;
  host: string;
  started: string;
  token: string;
  /** Linux: /proc/sys/kernel/random/boot_id and the pid namespace; "" elsewhere. */
  boot?: string;
  pidNamespace?: string;
  /** When the holding process started ("ticks:…" since boot on Linux, "clock:…" seconds elsewhere): tells a reused pid from its owner. */
  processStart?: string;
}

export function acquireOutputLock(output: string, now: () => number = Date.now): OutputLock {
  const path = `${output}.lock`;
  // The output's parent may not exist yet (the run creates it): the lock goes beside the output.
  mkdirSync(dirname(path), { recursive: true });
  const me: Holder = { ...thisProcess(), started: new Date(now()).toISOString(), token: randomBytes(8).toString("hex") };
  const mine = `${path}.${me.token}`;
  try {
    writeFileSync(mine, JSON.stringify(me) + "\n");
    for (let attempt = 0; ; attempt++) {
      if (attempt >= MAX_ATTEMPTS) throw new OutputBusyError(`could not take the lock ${path} (it keeps changing); delete it and run again`);
      try {
        create(mine, path, JSON.stringify(me) + "\n");
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const judged = lstatSync(path, { throwIfNoEntry: false });
      const text = readText(path);
      if (text === undefined || !judged) continue; // removed in between: try again
      const holder = parseHolder(text);
      const age = now() - judged.mtimeMs;
      // Unreadable and seconds old: being written by an exclusive create (no hard links); busy.
      const beingWritten = holder === undefined && age < UNREADABLE_GRACE_MS;
      if (beingWritten || (holder && !holderGone(holder, me, age))) {
        const who = holder ? `another loftq run (pid ${holder.pid} on ${holder.host}, started ${holder.started})` : "another loftq run";
        throw new OutputBusyError(`${who} is writing ${output}; wait for it, or delete ${path} if that run is gone`);
      }
      // Move exactly the stale lock we judged: the same file still (else look again), and if another run
      // replaced it between that check and the rename, put theirs back.
      const current = lstatSync(path, { throwIfNoEntry: false });
      if (!current || current.ino !== judged.ino || current.mtimeMs !== judged.mtimeMs) continue;
      const moved = `${path}.stale-${me.token}`;
      try {
        renameSync(path, moved);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOENT") continue;
        throw new OutputBusyError(`the stale lock ${path} cannot be moved away (${code}); delete it and run again`);
      }
      try {
        const movedText = readText(moved);
        if (movedText !== undefined && movedText !== text) {
          try {
            create(moved, path, movedText);
          } catch {
            // Someone holds it again by now: theirs stays, and the next attempt reports them.
          }
        }
      } finally {
        rmSync(moved, { force: true });
      }
    }
  } finally {
    rmSync(mine, { force: true });
  }
  let lastRefresh = now();
  return {
    refresh() {
      // Only a lock that is readably someone else's, or missing on every look, means this run lost it:
      // a concurrent takeover of a stale lock moves the file away and back (or rewrites it where there
      // are no hard links), and a read error says nothing about who holds it.
      let text: string | undefined;
      for (let look = 0; look < RECHECKS; look++) {
        if (look > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, RECHECK_DELAY_MS);
        try {
          text = readText(path);
        } catch {
          return;
        }
        const holder = parseHolder(text ?? "");
        if (holder?.token === me.token) break;
        if (holder && look > 0) break; // someone else's, twice: decided
      }
      const holder = parseHolder(text ?? "");
      if (holder?.token !== me.token) {
        throw new OutputLockLostError(
          text === undefined
            ? `the lock ${path} was removed while this run held it; stopping, ${output}.partial is kept`
            : `the lock ${path} was taken over by ${holder ? `pid ${holder.pid} on ${holder.host}` : "someone"} (this run looked stale to it); stopping without touching ${output}.partial, which is theirs now`,
        );
      }
      if (now() - lastRefresh < REFRESH_INTERVAL_MS) return;
      lastRefresh = now();
      const time = new Date(lastRefresh);
      try {
        utimesSync(path, time, time);
      } catch {
        // Removed just now: the next refresh reports it.
      }
    },
    release() {
      // Only our own lock: one taken over from us (we looked stale) belongs to the new holder.
      if (parseHolder(readText(path) ?? "")?.token === me.token) rmSync(path, { force: true });
    },
  };
}

/** Errors of file systems without hard links (some network and FUSE mounts, exFAT). */
const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV"]);

/**
 * The lock file at `path` with `text`, or EEXIST: a hard link of `source`, which holds `text` in full
 * (atomic: nobody reads a half-written lock), or where links are not supported an exclusive create
 * and write (a reader may then see it empty for a moment, which it takes for busy).
 */
function create(source: string, path: string, text: string): void {
  try {
    linkSync(source, path);
  } catch (error) {
    if (!NO_HARD_LINKS.has((error as NodeJS.ErrnoException).code ?? "")) throw error;
    writeFileSync(path, text, { flag: "wx" });
  }
}

/** What identifies this process's pid: host, boot, pid namespace and start time. */
function thisProcess(): Pick<Holder, "pid" | "host" | "boot" | "pidNamespace" | "processStart"> {
  const read = (get: () => string) => {
    try {
      return get().trim();
    } catch {
      return "";
    }
  };
  // Linux: the start time in clock ticks since boot (field 22 of /proc/self/stat, after the command
  // name in parentheses), fixed for the process's life; elsewhere the wall clock less the uptime, to the second.
  const ticks = read(() => {
    const stat = readFileSync("/proc/self/stat", "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]!;
  });
  return {
    pid: process.pid,
    host: hostname(),
    boot: read(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8")),
    pidNamespace: read(() => readlinkSync("/proc/self/ns/pid")),
    processStart: ticks ? `ticks:${ticks}` : `clock:${Math.round((Date.now() - process.uptime() * 1000) / 1000)}`,
  };
}

/** Whether two start stamps name the same process (clock stamps may differ by a second of rounding). */
function sameStart(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined) return false;
  if (a.startsWith("clock:") && b.startsWith("clock:")) return Math.abs(Number(a.slice(6)) - Number(b.slice(6))) <= 1;
  return a === b;
}

function holderGone(holder: Holder, me: Holder, age: number): boolean {
  if (holder.host !== me.host) return age > LOCK_STALE_MS;
  const bothBoots = Boolean(holder.boot) && Boolean(me.boot);
  if (bothBoots && holder.boot !== me.boot) return true; // rebooted since: its process is gone
  // Pids mean one process only within one boot and one pid namespace (where there is no /proc to
  // tell, this host's pids are taken at their word): there liveness decides, and a live holder
  // keeps its lock however long it is silent (a suspended job must not lose it).
  const samePids = bothBoots ? holder.pidNamespace === me.pidNamespace : !holder.boot && !me.boot;
  if (!samePids) return age > LOCK_STALE_MS;
  if (holder.pid === me.pid) return !sameStart(holder.processStart, me.processStart);
  return !processAlive(holder.pid);
}

/** The lock's text; undefined when it is gone. Anything but a regular file is refused (a FIFO would block the read). */
function readText(path: string): string | undefined {
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (!stat) return undefined;
  if (!stat.isFile()) throw new OutputBusyError(`${path} is not a lock file (not a regular file); remove it if no loftq run is writing the output`);
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    throw new OutputBusyError(`${path} cannot be read as a lock file (${code}); remove it if no loftq run is writing the output`);
  }
}

/** The holder a lock file names, or undefined for anything else (garbage: taken over once old). */
function parseHolder(text: string): Holder | undefined {
  try {
    const value = JSON.parse(text) as Partial<Holder>;
    // pid > 0: kill(0 or −n, 0) would ask about a process group.
    const valid = Number.isSafeInteger(value.pid) && (value.pid as number) > 0 && typeof value.host === "string" && typeof value.started === "string" && typeof value.token === "string";
    return valid ? (value as Holder) : undefined;
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
