/**
 * The Node options our worker threads start with: none. Workers inherit `process.execArgv` by default,
 * and some of the parent's options break a worker that loads a file: `--input-type` (set by
 * `node --input-type=module -e "…"` or a module piped to stdin) fails it before its first line, as can a
 * user's `--import` preload, and a thread that waits synchronously for its workers cannot see why. An
 * explicit copy is no way out: Node refuses per-process options there (`--max-old-space-size`,
 * `--expose-gc`, V8 flags). Our workers run only our own modules, and V8 flags are process-wide anyway.
 */
export function workerExecArgv(): string[] {
  return [];
}
