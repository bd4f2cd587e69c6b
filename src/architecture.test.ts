import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The layering the project promises: imports only point down
 * (tensor → kernels → linalg → quant → loftq → nn; io/node/cli on top), and nothing reachable from
 * the package root (`src/index.ts`) imports a Node built-in, so the core runs in a browser.
 */
const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "../../src");
const LAYERS = ["errors", "options", "types", "tensor", "kernels", "linalg", "quant", "loftq", "synthetic", "nn", "report", "io", "node", "cli"];

function importsOf(file: string): string[] {
  return [...readFileSync(file, "utf8").matchAll(/(?:from|import)\s*\(?\s*"([^"]+)"/g)].map((m) => m[1]!);
}

function layerOf(file: string): number {
  const top = relative(SRC, file).split(/[\\/]/)[0]!.replace(/\.ts$/, "");
  return LAYERS.indexOf(top);
}

test("nothing reachable from the package root imports a Node built-in", () => {
  const seen = new Set<string>();
  const offenders: string[] = [];
  const walk = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const spec of importsOf(file)) {
      if (spec.startsWith("node:")) offenders.push(`${relative(SRC, file)} imports ${spec}`);
      else if (spec.startsWith(".")) walk(resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
    }
  };
  walk(resolve(SRC, "index.ts"));
  assert.deepEqual(offenders, []);
  assert.ok(seen.size > 20, `walked ${seen.size} files`);
});

test("imports point down the layers (tensor → kernels → linalg → quant → loftq → nn → io → node → cli)", () => {
  const files = new Set<string>();
  const collect = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const spec of importsOf(file)) if (spec.startsWith(".")) collect(resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
  };
  collect(resolve(SRC, "cli/main.ts"));
  collect(resolve(SRC, "index.ts"));
  const upward: string[] = [];
  for (const file of files) {
    if (file.endsWith(".test.ts") || !file.startsWith(SRC) || layerOf(file) < 0) continue; // index.ts: the barrel on top
    for (const spec of importsOf(file)) {
      if (!spec.startsWith(".")) continue;
      const target = resolve(dirname(file), spec.replace(/\.js$/, ".ts"));
      if (!target.startsWith(SRC) || relative(SRC, target) === "index.ts") continue;
      if (layerOf(target) > layerOf(file)) upward.push(`${relative(SRC, file)} → ${relative(SRC, target)}`);
    }
  }
  assert.deepEqual(upward, []);
});
