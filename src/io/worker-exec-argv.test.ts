import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { workerExecArgv } from "./worker-exec-argv.js";

test("workers drop the parent's --input-type and keep its other options", () => {
  assert.deepEqual(workerExecArgv(["--input-type=module", "-e", "x", "--max-old-space-size=4096"]), ["-e", "x", "--max-old-space-size=4096"]);
  assert.deepEqual(workerExecArgv(["--input-type", "commonjs", "--enable-source-maps"]), ["--enable-source-maps"]);
  assert.deepEqual(workerExecArgv([]), []);
});

test("loftq/node loads from `node --input-type=module -e` (its kernel workers start)", () => {
  const entry = fileURLToPath(new URL("../node/index.js", import.meta.url));
  const code = `const m = await import(${JSON.stringify(entry)}); console.log(m.activeBackendName());`;
  const printed = execFileSync(process.execPath, ["--input-type=module", "-e", code], { encoding: "utf8", timeout: 60_000 });
  assert.match(printed.trim(), /^(ort|wasm-threads|wasm|ts)$/);
});
