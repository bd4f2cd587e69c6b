import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";

const benches = ["loftq-matrix", "paired-ab", "reference-errors", "model", "finetune", "gemm-throughput"];
const run = (bench: string, args: string[]) =>
  spawnSync(process.execPath, [join(import.meta.dirname, `${bench}.js`), ...args], { encoding: "utf8", timeout: 30_000 });

test("every bench prints its usage on --help and exits 0 without running", () => {
  for (const bench of benches) {
    const result = run(bench, ["--help"]);
    assert.equal(result.status, 0, `${bench}: ${result.stderr}`);
    assert.match(result.stdout, new RegExp(`^node dist/bench/${bench}\\.js`), bench);
  }
});

test("a misspelt flag or a malformed value is a usage error (exit 2), not a silent default run", () => {
  const cases: Array<[string, string[], RegExp]> = [
    ["loftq-matrix", ["--size", "512x512"], /Unknown option '--size'/],
    ["loftq-matrix", ["--ranks", "0"], /--ranks takes positive integers/],
    ["loftq-matrix", ["--sizes", "512"], /--sizes takes ROWSxCOLS shapes/],
    ["loftq-matrix", ["--arrays", "shared"], /--arrays must be one of backend, plain/],
    ["loftq-matrix", ["--repeat", "3,9"], /--repeat takes one positive integer/],
    ["loftq-matrix", ["--backend", "nope"], /--backend must be one of .*ts/],
    ["paired-ab", ["--old", "x", "--size", "64x64,32x32"], /--size takes one ROWSxCOLS shape/],
    ["paired-ab", [], /--old DIST .* is required/],
    ["reference-errors", ["--cases", "4096x4096:4:16"], /--cases takes ROWSxCOLS:BITS:RANK:ITERATIONS/],
    ["model", ["--runs", "nf4-16"], /--runs entries look like nf4-r16-t5/],
    ["finetune", ["--smoke", "--medium"], /alternatives/],
    ["gemm-throughput", ["--jsn", "x"], /Unknown option '--jsn'/],
  ];
  for (const [bench, args, message] of cases) {
    const result = run(bench, args);
    assert.equal(result.status, 2, `${bench} ${args.join(" ")}: ${result.stdout}`);
    assert.match(result.stderr, message);
    assert.match(result.stderr, /Usage|node dist\/bench\//);
  }
});
