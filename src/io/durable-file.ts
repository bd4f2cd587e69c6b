import { chmodSync, closeSync, fsyncSync, openSync, readFileSync, statSync, writeFileSync } from "node:fs";

/**
 * Small output files (configs, reports, indexes) written and fsynced, so that once the output directory
 * is renamed into place after a power cut it holds no empty files. The shards get the same from
 * writeSafetensorsFile.
 */
export function writeFileDurably(path: string, data: string | Uint8Array): void {
  writeFileSync(path, data);
  syncFile(path);
}

/**
 * Copies a file and flushes the copy. The copy is the output's own: written from a fresh file (so a
 * read-only source, common in shared model stores, gives a writable copy that can be flushed, replaced
 * and deleted), with the source's permission bits plus the owner's write.
 */
export function copyFileDurably(from: string, to: string): void {
  const mode = statSync(from).mode & 0o777;
  writeFileSync(to, readFileSync(from), { mode: mode | 0o200 });
  chmodSync(to, mode | 0o200);
  syncFile(to);
}

/** Flushes a complete file's data to disk. */
export function syncFile(path: string): void {
  syncPath(path, "r+");
}

/**
 * Makes the entries of a directory (files created or renamed in it) durable. Some platforms (Windows)
 * cannot open or fsync a directory: there the entries stand, only less durably.
 */
export function syncDirectory(dir: string): void {
  try {
    syncPath(dir, "r");
  } catch {
    // not supported here
  }
}

/** Files open "r+": Windows flushes only handles with write access (fsync on a read handle is EPERM there). */
function syncPath(path: string, flags: "r" | "r+"): void {
  const fd = openSync(path, flags);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
