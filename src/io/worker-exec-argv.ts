/**
 * The Node options a worker thread of ours starts with: the parent's, less those that only apply to
 * the parent's own entry. Workers inherit `process.execArgv`, and `--input-type` (set by
 * `node --input-type=module -e "…"` or a module piped to stdin) makes every worker that loads a file
 * fail before running a line, which a thread that waits synchronously for its workers cannot see.
 */
export function workerExecArgv(execArgv: readonly string[] = process.execArgv): string[] {
  const kept: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const option = execArgv[i]!;
    if (option.startsWith("--input-type=")) continue;
    if (option === "--input-type") {
      i++; // its value
      continue;
    }
    kept.push(option);
  }
  return kept;
}
