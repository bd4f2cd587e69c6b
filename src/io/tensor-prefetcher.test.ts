import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTensorPrefetcher } from "./tensor-prefetcher.js";
import { writeSafetensorsFile } from "./safetensors-writer.js";
import { SafetensorsFile } from "./safetensors-file.js";
import { encodeHalf } from "../tensor/dtype.js";

test("prefetcher: tensors read ahead on a worker equal direct reads, in request order; failures are typed errors", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-prefetch-"));
  const prefetcher = createTensorPrefetcher(600);
  try {
    const values = Float32Array.from({ length: 600 }, (_, i) => Math.cos(i) * 2);
    const bytes = { a: new Uint8Array(values.buffer), b: encodeHalf(values.subarray(0, 500), "bf16"), c: encodeHalf(values.subarray(0, 300), "f16") };
    const path = join(dir, "model.safetensors");
    writeSafetensorsFile(path, [
      { name: "a", dtype: "F32", shape: [20, 30] },
      { name: "b", dtype: "BF16", shape: [25, 20] },
      { name: "c", dtype: "F16", shape: [300] },
    ], {}, (t) => bytes[t.name as keyof typeof bytes]);
    const file = SafetensorsFile.open(path);
    const read = (name: string) => {
      const info = file.info(name);
      return { path, position: file.header.dataStart + info.begin, dtype: info.dtype as "F32" | "BF16" | "F16", count: info.shape.reduce((x, y) => x * y, 1) };
    };
    prefetcher.request(read("a"));
    prefetcher.request(read("b"));
    assert.throws(() => prefetcher.request(read("c")), /take\(\) the oldest/);
    assert.deepEqual(Float32Array.from(prefetcher.take()), file.readFloat32("a"));
    prefetcher.request(read("c"));
    assert.deepEqual(Float32Array.from(prefetcher.take()), file.readFloat32("b"));
    assert.deepEqual(Float32Array.from(prefetcher.take()), file.readFloat32("c"));
    file.close();
    prefetcher.request({ path: join(dir, "missing.safetensors"), position: 0, dtype: "F32", count: 4 });
    assert.throws(() => prefetcher.take(), { name: "LoftqError", message: /reading a tensor ahead failed: .*missing\.safetensors/ });
  } finally {
    prefetcher.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("prefetcher: reads into the caller's slots (views into one larger shared buffer, as backend memory is); bad slots are refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-prefetch-"));
  const shared = new Float32Array(new SharedArrayBuffer(4 * 2000)).fill(-1);
  const slots = [shared.subarray(100, 700), shared.subarray(1000, 1600)];
  const prefetcher = createTensorPrefetcher(600, slots);
  try {
    const values = Float32Array.from({ length: 600 }, (_, i) => Math.sin(i));
    const path = join(dir, "model.safetensors");
    const bytes = { a: new Uint8Array(values.buffer), b: encodeHalf(values, "bf16") };
    writeSafetensorsFile(path, [
      { name: "a", dtype: "F32", shape: [600] },
      { name: "b", dtype: "BF16", shape: [600] },
    ], {}, (t) => bytes[t.name as keyof typeof bytes]);
    const file = SafetensorsFile.open(path);
    const read = (name: string) => ({ path, position: file.header.dataStart + file.info(name).begin, dtype: file.info(name).dtype as "F32" | "BF16", count: 600 });
    prefetcher.request(read("a"));
    prefetcher.request(read("b"));
    const first = prefetcher.take();
    assert.equal(first.buffer, shared.buffer);
    assert.equal(first.byteOffset, slots[0]!.byteOffset);
    assert.deepEqual(Float32Array.from(first), file.readFloat32("a"));
    assert.deepEqual(Float32Array.from(prefetcher.take()), file.readFloat32("b"));
    file.close();
    // Nothing outside the two slots was written.
    for (const [start, end] of [[0, 100], [700, 1000], [1600, 2000]] as const) assert.ok(shared.subarray(start, end).every((v) => v === -1));
  } finally {
    assert.equal(prefetcher.close(), true, "nothing in flight: the slots are free");
    rmSync(dir, { recursive: true, force: true });
  }
  assert.throws(() => createTensorPrefetcher(600, [new Float32Array(600), new Float32Array(600)]), /slots over SharedArrayBuffers/);
  assert.throws(() => createTensorPrefetcher(600, [shared.subarray(0, 599), shared.subarray(600, 1200)]), /at least 600 floats/);
  assert.throws(() => createTensorPrefetcher(600, [shared.subarray(0, 600), shared.subarray(599, 1199)]), /overlap/);
});
