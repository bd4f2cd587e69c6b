import { test } from "node:test";
import assert from "node:assert/strict";
import { getBackend, listBackends, registerBackend, registerBackendFactory } from "./registry.js";
import { tsBackend } from "./ts-backend.js";
import { BackendUnavailableError, InvalidArgumentError } from "../errors.js";

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

test("a factory that cannot make its backend (a native library that does not load) is skipped by the default and named when asked for", () => {
  const before = getBackend().name;
  registerBackendFactory("broken-native-test", 1000, () => {
    throw new BackendUnavailableError("libsomething.so.1: cannot open shared object file");
  });
  assert.equal(listBackends()[0], "broken-native-test");
  assert.equal(getBackend().name, before, "the default falls back to the next one");
  assert.ok(!listBackends().includes("broken-native-test"));
  assert.throws(() => getBackend("broken-native-test"), (e: unknown) => e instanceof BackendUnavailableError && /cannot open shared object file/.test(String(e)));
  // A factory built on another that cannot be made (ort on wasm-threads without its worker script):
  // both leave, and the default moves past them.
  registerBackendFactory("dependent-test", 1001, () => ({ ...getBackend("dependency-test"), name: "dependent-test" }));
  registerBackendFactory("dependency-test", 1000, () => {
    throw new BackendUnavailableError("worker script missing");
  });
  assert.equal(getBackend().name, before);
  assert.ok(!listBackends().includes("dependent-test") && !listBackends().includes("dependency-test"));
  // Other errors are bugs, not unavailability: they surface.
  registerBackendFactory("buggy-test", 1000, () => {
    throw new TypeError("bug");
  });
  assert.throws(() => getBackend(), TypeError);
  registerBackendFactory("buggy-test", -1000, () => ({ ...tsBackend, name: "buggy-test" }));
});

test("registration is checked: a whole backend, a finite priority, and the reference backend kept", () => {
  assert.throws(() => registerBackend({ name: "bad-test" } as unknown as typeof tsBackend, 1), InvalidArgumentError);
  assert.throws(() => registerBackend({ ...tsBackend, name: "nan-test" }, NaN), /priority must be a finite number/);
  assert.throws(() => registerBackend({ ...tsBackend }, 100), /reference backend/);
  assert.throws(() => registerBackendFactory("f-test", 1, null as unknown as () => typeof tsBackend), /create must be a function/);
  assert.ok(!listBackends().includes("nan-test"));
});
