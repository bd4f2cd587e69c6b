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
