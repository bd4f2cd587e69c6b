import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readTfjsWeights } from "./tfjs-weights.js";
import { LoftqError } from "../errors.js";

test("readTfjsWeights reads shards in manifest order and refuses malformed manifests with typed errors", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-tfjs-"));
  try {
    writeFileSync(join(dir, "group1-shard1of1.bin"), new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]).buffer));
    const manifest = (weights: unknown, paths: unknown = ["group1-shard1of1.bin"]) => {
      writeFileSync(join(dir, "model.json"), JSON.stringify({ weightsManifest: [{ paths, weights }] }));
      return join(dir, "model.json");
    };
    const good = readTfjsWeights(manifest([{ name: "a", shape: [4], dtype: "float32" }, { name: "b", shape: [2, 2], dtype: "float32" }]));
    assert.deepEqual(Array.from(good[1]!.data), [5, 6, 7, 8]);
    const refused: Array<[string, () => unknown]> = [
      ["a negative dimension (it moved the offset back: b read a's values)", () => manifest([{ name: "a", shape: [4], dtype: "float32" }, { name: "neg", shape: [-4], dtype: "float32" }, { name: "b", shape: [4], dtype: "float32" }])],
      ["a fractional dimension", () => manifest([{ name: "a", shape: [1.5], dtype: "float32" }])],
      ["no shape", () => manifest([{ name: "a", dtype: "float32" }])],
      ["a weight that is null", () => manifest([null])],
      ["no weights list", () => manifest(undefined)],
      ["a path of ..", () => manifest([{ name: "a", shape: [1], dtype: "float32" }], [".."])],
      ["a path that is not a string", () => manifest([{ name: "a", shape: [1], dtype: "float32" }], [7])],
    ];
    for (const [what, write] of refused) assert.throws(() => readTfjsWeights(write() as string), (e: unknown) => e instanceof LoftqError, what);
    writeFileSync(join(dir, "model.json"), "{not json");
    assert.throws(() => readTfjsWeights(join(dir, "model.json")), (e: unknown) => e instanceof LoftqError && /not valid JSON/.test(String(e)));
    writeFileSync(join(dir, "model.json"), JSON.stringify({ weightsManifest: [null] }));
    assert.throws(() => readTfjsWeights(join(dir, "model.json")), (e: unknown) => e instanceof LoftqError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
