import { linkSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
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
 * fails if one exists). A lock is taken over when its holder is gone: when it has not been refreshed
 * for LOCK_STALE_MS (a killed node cannot remove its lock, a rebooted one may give its pid to another
 * process; a running job refreshes it as it works), or sooner on this host when its process no longer
 * runs (or has this process's pid without this process holding it: a restarted container's new
 * process namespace hands out the same small pids). A stale lock is renamed away under a unique name,
 * so of two runs taking it over at once only one can move it (three at once can still both win).
 */
export const LOCK_STALE_MS = 15 * 60_000;
/** Refreshes closer together than this are skipped (events can come thousands of times a second). */
const REFRESH_INTERVAL_MS = 10_000;
/** Attempts at taking a lock whose holder keeps vanishing (each attempt only after a stale one moved). */
const MAX_ATTEMPTS = 5;
/** An unreadable lock younger than this is one being written (exclusive create), not garbage. */
const UNREADABLE_GRACE_MS = 10_000;

/** Tokens of the locks this process holds: a lock naming our own pid is ours only if its token is in here. */
const heldHere = new Set<string>();

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
  token: string;
}

export function acquireOutputLock(output: string, now: () => number = Date.now): OutputLock {
  const path = `${output}.lock`;
  // The output's parent may not exist yet (the run creates it): the lock goes beside the output.
  mkdirSync(dirname(path), { recursive: true });
  const me: Holder = { pid: process.pid, host: hostname(), started: new Date(now()).toISOString(), token: randomBytes(8).toString("hex") };
  const mine = `${path}.${me.token}`;
  writeFileSync(mine, JSON.stringify(me) + "\n");
  try {
    for (let attempt = 0; ; attempt++) {
      if (attempt >= MAX_ATTEMPTS) throw new OutputBusyError(`could not take the lock ${path} (it keeps changing, or is not a regular file); delete it and run again`);
      try {
        create(mine, path, me);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const text = readText(path);
      if (text === undefined) continue; // removed in between (or a link to nothing): try again
      const holder = parseHolder(text);
      const age = now() - (statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? 0);
      // Unreadable and seconds old: being written by an exclusive create (no hard links); busy.
      const beingWritten = holder === undefined && age < UNREADABLE_GRACE_MS;
      if (beingWritten || (holder && !holderGone(holder, age))) {
        const who = holder ? `another loftq run (pid ${holder.pid} on ${holder.host}, started ${holder.started})` : "another loftq run";
        throw new OutputBusyError(`${who} is writing ${output}; wait for it, or delete ${path} if that run is gone`);
      }
      // Move exactly the stale lock we judged: if another run replaced it meanwhile, put theirs back.
      const moved = `${path}.stale-${me.token}`;
      try {
        renameSync(path, moved);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw error;
      }
      if (readText(moved) !== text) {
        try {
          linkSync(moved, path);
        } catch {
          // Someone holds it again by now: theirs stays, and the next attempt reports them.
        }
      }
      rmSync(moved, { force: true });
    }
  } finally {
    rmSync(mine, { force: true });
  }
  heldHere.add(me.token);
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
      heldHere.delete(me.token);
      // Only our own lock: one taken over from us (we looked stale) belongs to the new holder.
      if (parseHolder(readText(path) ?? "")?.token === me.token) rmSync(path, { force: true });
    },
  };
}

/** Errors of file systems without hard links (some network and FUSE mounts, exFAT). */
const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV"]);

/**
 * The lock file at `path` with `me`'s content, or EEXIST: a hard link of the fully written `mine`
 * (atomic: nobody reads a half-written lock), or where links are not supported an exclusive create
 * and write (a reader may then see it empty for a moment, which it takes for garbage).
 */
function create(mine: string, path: string, me: Holder): void {
  try {
    linkSync(mine, path);
  } catch (error) {
    if (!NO_HARD_LINKS.has((error as NodeJS.ErrnoException).code ?? "")) throw error;
    writeFileSync(path, JSON.stringify(me) + "\n", { flag: "wx" });
  }
}

/**
 * Whether a lock's holder is gone: not refreshed for LOCK_STALE_MS (on any host: a live process that
 * old on this host is another one reusing the pid, e.g. after a reboot), or on this host a process that
 * no longer runs, or our own pid without this process holding the lock (a restarted container).
 */
function holderGone(holder: Holder, age: number): boolean {
  if (age > LOCK_STALE_MS) return true;
  if (holder.host !== hostname()) return false;
  if (holder.pid === process.pid) return !heldHere.has(holder.token);
  return !processAlive(holder.pid);
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    throw new OutputBusyError(`${path} cannot be read as a lock file (${code}); remove it if no loftq run is writing the output`);
  }
}

/** The holder a lock file names, or undefined for anything else (garbage: taken over). */
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
