import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createBackgroundPublisher } from "./background-publisher.js";
import { OutputWriteError, writeSafetensorsFile } from "./safetensors-writer.js";
import { SafetensorsFile } from "./safetensors-file.js";

test("background publisher: files appear under their final names only once drained; a failure is a typed error and leaves no temporary file", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-publish-"));
  const publisher = createBackgroundPublisher();
  try {
    const bytes = new Uint8Array(4096).map((_, i) => i % 251);
    const paths = Array.from({ length: 5 }, (_, i) => join(dir, `m${i}.safetensors`));
    for (const path of paths) writeSafetensorsFile(path, [{ name: "q", dtype: "U8", shape: [4096] }], {}, () => bytes, { publish: publisher.publish });
    publisher.drain();
    for (const path of paths) {
      const file = SafetensorsFile.open(path);
      assert.deepEqual(file.readBytes("q"), bytes);
      file.close();
    }
    assert.deepEqual(readdirSync(dir).sort(), paths.map((p) => p.slice(dir.length + 1)).sort());

    // The rename fails (its directory is gone): drain reports it, and the temporary file is removed.
    const gone = join(dir, "gone");
    const partial = join(dir, "orphan.partial");
    writeSafetensorsFile(partial.replace(/\.partial$/, ""), [{ name: "q", dtype: "U8", shape: [1] }], {}, () => new Uint8Array(1), {
      publish: (from) => publisher.publish(from, join(gone, "x.safetensors")),
    });
    assert.throws(() => publisher.drain(), (error: unknown) => error instanceof OutputWriteError && /x\.safetensors/.test((error as Error).message));
    assert.equal(existsSync(partial), false);
    assert.equal(readFileSync(paths[0]!).length > 0, true);
  } finally {
    publisher.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
