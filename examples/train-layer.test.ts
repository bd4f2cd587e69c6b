import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = join(import.meta.dirname, "..", "..");

test("the README's layers example is examples/train-layer.ts, and it trains: the adapter closes on the goal", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const example = readFileSync(join(ROOT, "examples", "train-layer.ts"), "utf8").replace('from "../src/index.js"', 'from "loftq"');
  assert.ok(readme.includes("```ts\n" + example + "```\n"), "README's layers block differs from examples/train-layer.ts");
  const run = spawnSync(process.execPath, [join(ROOT, "dist", "examples", "train-layer.js")], { encoding: "utf8", timeout: 60_000 });
  assert.equal(run.status, 0, run.stderr);
  const [, first, last] = /loss (\S+) → (\S+)/.exec(run.stdout)!.map(Number) as [number, number, number];
  const [, q, start, trained] = /Q ([\d.]+), LoftQ start ([\d.]+), trained ([\d.]+)/.exec(run.stdout)!.map(Number) as [number, number, number, number];
  console.log(`train-layer: loss ${first} → ${last}; distance to the goal Q ${q}, LoftQ start ${start}, trained ${trained}`);
  assert.ok(last < 0.7 * first);
  assert.ok(trained < start && start < q);
});
