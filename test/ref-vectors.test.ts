import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { REF_VECTORS_DIR, SHARED_REF_VECTORS_DIR } from "./helpers/ref-vectors.js";

/** Data files under `dir`, relative and sorted (the bundled copy's README aside). */
function dataFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true }).map(String).filter((f) => f !== "README.md" && statSync(join(dir, f)).isFile()).sort();
}

test("the bundled golden vectors equal the team's shared copy, where there is one", (t) => {
  if (!existsSync(SHARED_REF_VECTORS_DIR)) {
    t.diagnostic("no ../shared/ref-vectors beside this clone: the bundled copy is used as it is");
    return;
  }
  const bundled = dataFiles(REF_VECTORS_DIR);
  assert.deepEqual(bundled, dataFiles(SHARED_REF_VECTORS_DIR));
  for (const file of bundled) assert.ok(readFileSync(join(REF_VECTORS_DIR, file)).equals(readFileSync(join(SHARED_REF_VECTORS_DIR, file))), `${file} differs from the shared copy`);
  t.diagnostic(`${bundled.length} files identical to ${SHARED_REF_VECTORS_DIR}`);
});
