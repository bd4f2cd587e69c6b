import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));

test("the published declarations type-check in a consumer's strict project without skipLibCheck or a DOM lib", () => {
  const work = mkdtempSync(join(tmpdir(), "loftq-types-"));
  try {
    const entry = (path: string) => JSON.stringify(join(ROOT, path));
    writeFileSync(join(work, "consumer.ts"), `import { loftq, qloraInit, matrix, getBackend } from ${entry("dist/src/index.js")};
import { quantizeCheckpoint, createThreadedBackend } from ${entry("dist/src/node/index.js")};
const w = matrix(4, 4, new Float32Array(16).fill(1));
const r = loftq(w, { bits: 4, rank: 1 });
const memory: ArrayBufferLike = createThreadedBackend(1).memory.buffer;
export const used = [r.history.length, qloraInit(w, { bits: 4, rank: 1 }).dequantized.rows, getBackend().name, quantizeCheckpoint, memory];
`);
    writeFileSync(join(work, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", lib: ["ES2022"], types: ["node"],
        typeRoots: [join(ROOT, "node_modules/@types")], strict: true, skipLibCheck: false, noEmit: true,
      },
      files: ["consumer.ts"],
    }));
    const tsc = spawnSync(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", work], { encoding: "utf8" });
    assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test("every source map the published JavaScript names is in the package and carries its sources", () => {
  const npm = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: ROOT, encoding: "utf8", shell: process.platform === "win32" });
  assert.equal(npm.status, 0, npm.stderr);
  const packed = new Set((JSON.parse(npm.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((file) => file.path));
  let checked = 0;
  for (const path of packed) {
    if (!path.endsWith(".js")) continue;
    const named = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(readFileSync(join(ROOT, path), "utf8"))?.[1];
    if (!named) continue;
    const mapPath = join(dirname(path), named);
    assert.ok(packed.has(mapPath), `${path} names ${mapPath}, which is not packed`);
    const map = JSON.parse(readFileSync(join(ROOT, mapPath), "utf8")) as { sources: string[]; sourcesContent?: string[] };
    assert.equal(map.sourcesContent?.length, map.sources.length, `${mapPath} lacks its sources (the .ts files are not packed)`);
    checked++;
  }
  assert.ok(checked > 20, `only ${checked} packed files name a source map`);
});
