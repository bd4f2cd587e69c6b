import { test } from "node:test";
import assert from "node:assert/strict";
import { getBackend, listBackends, registerBackend, registerBackendFactory } from "./registry.js";
import { tsBackend } from "./ts-backend.js";
import { BackendUnavailableError } from "../errors.js";

test("a backend factory runs on first use only, once, and takes its priority then", () => {
  let made = 0;
  registerBackendFactory("lazy-test", -1, () => {
    made++;
    return { ...tsBackend, name: "lazy-test" };
  });
  assert.ok(listBackends().includes("lazy-test"));
  assert.equal(made, 0, "listing does not make it");
  assert.notEqual(getBackend().name, "lazy-test", "priority -1 is not the default");
  assert.equal(made, 0);
  assert.equal(getBackend("lazy-test").name, "lazy-test");
  assert.equal(getBackend("lazy-test").name, "lazy-test");
  assert.equal(made, 1);
});

test("a factory that makes a backend of another name is refused; an unknown name is a typed error", () => {
  registerBackendFactory("misnamed-test", -1, () => tsBackend);
  assert.throws(() => getBackend("misnamed-test"), BackendUnavailableError);
  assert.throws(() => getBackend("no-such-backend"), (error: unknown) => error instanceof BackendUnavailableError && /available: /.test(String(error)));
  registerBackend({ ...tsBackend, name: "misnamed-test" }, -1); // replaced by a made backend: usable again
  assert.equal(getBackend("misnamed-test").name, "misnamed-test");
});
