import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const NODE_INDEX = fileURLToPath(new URL("../node/index.js", import.meta.url));
/** Makes the threaded backend (its workers) and runs one product large enough to be split across them. */
const COMPUTE = `const m = await import(${JSON.stringify(NODE_INDEX)});
const b = m.getBackend("wasm-threads");
const n = 256, a = new Float32Array(n * n).fill(1), c = new Float32Array(n * n);
b.gemm({ transA: false, transB: false, m: n, n, k: n, alpha: 1, a, b: a, beta: 0, c });
console.log(m.activeBackendName(), c[0]);`;

test("the kernel workers start whatever options node was started with (--input-type, per-process and V8 flags)", () => {
  for (const options of [["--input-type=module"], ["--max-old-space-size=4096", "--expose-gc", "--stack-size=2000", "--input-type=module"]]) {
    const printed = execFileSync(process.execPath, [...options, "-e", COMPUTE], { encoding: "utf8", timeout: 60_000 });
    assert.match(printed.trim(), /^\S+ 256$/, `${options.join(" ")}: ${printed}`);
  }
  const piped = execFileSync(process.execPath, ["--input-type=module"], { input: COMPUTE, encoding: "utf8", timeout: 60_000 });
  assert.match(piped.trim(), /^\S+ 256$/);
});
