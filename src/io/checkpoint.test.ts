import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openCheckpoint, CheckpointError } from "./checkpoint.js";
import { SafetensorsFile } from "./safetensors-file.js";
import { LoftqError } from "../errors.js";
import { writeSafetensorsFile } from "./safetensors-writer.js";
import { encodeHalf } from "../tensor/dtype.js";

function shard(dir: string, file: string, names: string[]): void {
  writeSafetensorsFile(join(dir, file), names.map((name) => ({ name, dtype: "F32", shape: [2] })), { format: "pt" }, () => new Uint8Array(8));
}

function withDir(run: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "loftq-ckpt-"));
  try {
    run(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const index = (dir: string, weightMap: Record<string, string>) =>
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));

test("a sharded checkpoint opens through its index; tensors read from the right shard", () => {
  withDir((dir) => {
    shard(dir, "model-00001-of-00002.safetensors", ["a"]);
    shard(dir, "model-00002-of-00002.safetensors", ["b"]);
    index(dir, { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" });
    const checkpoint = openCheckpoint(dir);
    assert.equal(checkpoint.sharded, true);
    assert.deepEqual(checkpoint.tensors.map((t) => [t.name, t.shard]), [["a", "model-00001-of-00002.safetensors"], ["b", "model-00002-of-00002.safetensors"]]);
    assert.deepEqual(checkpoint.readFloat32("b"), new Float32Array(2));
    checkpoint.close();
  });
});

test("readFloat32 into a caller's array (16-bit data widened in place) equals the allocating read, for F32, F16 and BF16", () => {
  withDir((dir) => {
    const values = Float32Array.from({ length: 1001 }, (_, i) => Math.sin(i) * 3);
    const bytes = { F32: new Uint8Array(values.buffer), F16: encodeHalf(values, "f16"), BF16: encodeHalf(values, "bf16") } as const;
    const dtypes = ["F32", "F16", "BF16"] as const;
    writeSafetensorsFile(join(dir, "model.safetensors"), dtypes.map((dtype) => ({ name: dtype, dtype, shape: [7, 143] })), { format: "pt" }, (t) => bytes[t.name as keyof typeof bytes]);
    const checkpoint = openCheckpoint(dir);
    try {
      for (const dtype of dtypes) {
        const out = new Float32Array(1003).fill(NaN);
        const into = checkpoint.readFloat32(dtype, out.subarray(1, 1002));
        assert.deepEqual(into, checkpoint.readFloat32(dtype), dtype);
        assert.ok(Number.isNaN(out[0]!) && Number.isNaN(out[1002]!), `${dtype}: nothing outside the view is touched`);
      }
      assert.throws(() => checkpoint.readFloat32("F32", new Float32Array(5)), { name: "ShapeError" });
    } finally {
      checkpoint.close();
    }
  });
});

test("an index whose weight_map is empty or an array is a CheckpointError", () => {
  withDir((dir) => {
    shard(dir, "model.safetensors", ["a"]);
    for (const [map, message] of [["{}", /lists no tensors/], ["[]", /no "weight_map" object/]] as const) {
      writeFileSync(join(dir, "model.safetensors.index.json"), `{"weight_map":${map}}`);
      assert.throws(() => openCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && message.test(e.message));
    }
  });
});

test("hostile indexes: shard names outside the directory, mismatches with the shards, missing files", () => {
  for (const [name, build, pattern] of [
    ["path traversal", (dir: string) => index(dir, { a: "../model.safetensors" }), /not a plain \*\.safetensors file name/],
    ["absolute path", (dir: string) => index(dir, { a: "/etc/passwd" }), /not a plain/],
    ["not safetensors", (dir: string) => index(dir, { a: "model.bin" }), /not a plain/],
    ["listed but absent", (dir: string) => { shard(dir, "s1.safetensors", ["a"]); index(dir, { a: "s1.safetensors", ghost: "s1.safetensors" }); }, /"ghost" is listed but missing/],
    ["in another shard than the index says", (dir: string) => { shard(dir, "s1.safetensors", ["a", "b"]); shard(dir, "s2.safetensors", ["c"]); index(dir, { a: "s1.safetensors", b: "s2.safetensors", c: "s2.safetensors" }); }, /"b" is in s1\.safetensors but the index maps it to s2\.safetensors/],
    ["shard missing", (dir: string) => { shard(dir, "s1.safetensors", ["a"]); index(dir, { a: "s1.safetensors", b: "s2.safetensors" }); }, /shard s2\.safetensors, listed in the index, is missing/],
    ["no checkpoint at all", (_dir: string) => {}, /no model\.safetensors or model\.safetensors\.index\.json/],
    ["index without weight_map", (dir: string) => writeFileSync(join(dir, "model.safetensors.index.json"), "{}"), /no "weight_map"/],
  ] as const) {
    withDir((dir) => {
      build(dir);
      assert.throws(() => openCheckpoint(dir), (e: unknown) => e instanceof Error && pattern.test(e.message), name);
    });
  }
  assert.throws(() => openCheckpoint(join(tmpdir(), "definitely-not-here-loftq")), CheckpointError);
});

test("hostile side files: config.json or the index as a device or FIFO, a config that is not an object, deeply nested JSON", () => {
  withDir((dir) => {
    shard(dir, "model.safetensors", ["a"]);
    symlinkSync("/dev/zero", join(dir, "config.json"));
    assert.throws(() => openCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /not a regular file/.test(String(e)));
    rmSync(join(dir, "config.json"));
    spawnSync("mkfifo", [join(dir, "config.json")]);
    assert.throws(() => openCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /not a regular file/.test(String(e)), "a FIFO would block");
    rmSync(join(dir, "config.json"));
    for (const text of ["[1]", "null", '"llama"', "5"]) {
      writeFileSync(join(dir, "config.json"), text);
      assert.throws(() => openCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /not a JSON object/.test(String(e)), text);
    }
    rmSync(join(dir, "config.json"));
    // 5000 levels of nesting in a header's dtype or an index entry: typed errors, not a stack overflow.
    const deep = "[".repeat(5000) + "]".repeat(5000);
    const header = `{"w":{"dtype":${deep},"shape":[1],"data_offsets":[0,4]}}`;
    const bytes = Buffer.alloc(8 + header.length + 4);
    bytes.writeBigUInt64LE(BigInt(header.length));
    bytes.write(header, 8);
    writeFileSync(join(dir, "model.safetensors"), bytes);
    assert.throws(() => openCheckpoint(dir), (e: unknown) => e instanceof LoftqError && /unknown dtype \[…\]/.test(String(e)) && String(e).length < 300);
    shard(dir, "model-00001-of-00001.safetensors", ["a"]);
    writeFileSync(join(dir, "model.safetensors.index.json"), `{"weight_map":{"a":${deep}}}`);
    assert.throws(() => openCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /not a plain \*\.safetensors file name/.test(String(e)));
  });
});

test("an index naming 100 000 tensors over a few shards opens in linear time", () => {
  withDir((dir) => {
    const names = Array.from({ length: 100_000 }, (_, i) => `t${i}`);
    const weightMap: Record<string, string> = {};
    for (const [i, name] of names.entries()) weightMap[name] = `model-0000${(i % 4) + 1}-of-00004.safetensors`;
    index(dir, weightMap);
    // Shards missing: the error comes after the whole index is read (it was quadratic in distinct shard names).
    const started = Date.now();
    assert.throws(() => openCheckpoint(dir), /missing or not a file/);
    assert.ok(Date.now() - started < 5000);
  });
});

test("a safetensors path that is a FIFO is refused without opening it (opening would block)", () => {
  withDir((dir) => {
    spawnSync("mkfifo", [join(dir, "model.safetensors")]);
    assert.throws(() => SafetensorsFile.open(join(dir, "model.safetensors")), (e: unknown) => e instanceof LoftqError && /not a regular file/.test(String(e)));
  });
});
