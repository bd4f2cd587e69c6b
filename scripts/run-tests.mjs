// Runs every compiled test file (dist/**/*.test.js) in one `node --test` run, so node's test runner
// prints one summary. The files are listed here because `node --test dist/` only works on Node 20:
// from Node 22 on, --test reads its arguments as glob patterns and a bare directory is an error.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const files = readdirSync(join(root, "dist"), { recursive: true })
  .map(String)
  .filter((file) => file.endsWith(".test.js"))
  .sort()
  .map((file) => join("dist", file));
if (files.length === 0) {
  console.error("no test files under dist/: run `npm run build` first");
  process.exit(1);
}
const run = spawnSync(process.execPath, ["--test", ...process.argv.slice(2), ...files], { cwd: root, stdio: "inherit" });
process.exit(run.status ?? 1);
