import { BackendUnavailableError, InvalidArgumentError } from "../errors.js";
import type { KernelBackend } from "./backend.js";
import { tsBackend } from "./ts-backend.js";
import { createWasmBackend, wasmSimdSupported } from "./wasm-backend.js";

/**
 * Backends by name, each with a priority; the default is the highest-priority one registered.
 * The core registers "ts" (and "wasm" when WebAssembly SIMD is available); Node entry points
 * register the multi-threaded backend on top.
 */
const backends = new Map<string, { backend?: KernelBackend; create?: () => KernelBackend; priority: number }>();

export function registerBackend(backend: KernelBackend, priority: number): void {
  backends.set(backend.name, { backend, priority });
}

/**
 * A backend made on first use: one that starts threads or loads a native library costs nothing to
 * programs that import the package without computing (or that pick another backend).
 */
export function registerBackendFactory(name: string, priority: number, create: () => KernelBackend): void {
  backends.set(name, { create, priority });
}

export function listBackends(): string[] {
  registerDefaults();
  return [...backends.entries()].sort((x, y) => y[1].priority - x[1].priority).map(([name]) => name);
}

let defaultsRegistered = false;

/**
 * The reference backend always, and WebAssembly SIMD wherever the runtime has it. Done on first
 * use rather than on import, so the default does not depend on which modules happen to be loaded.
 */
function registerDefaults(): void {
  if (defaultsRegistered) return;
  defaultsRegistered = true;
  registerBackend(tsBackend, 0);
  if (wasmSimdSupported()) registerBackend(createWasmBackend(), 10);
}

/** The named backend, or the fastest registered one when `name` is omitted. */
export function getBackend(name?: string): KernelBackend {
  registerDefaults();
  if (name === undefined) {
    const best = listBackends()[0];
    return best === undefined ? tsBackend : resolve(best);
  }
  if (!backends.has(name)) {
    throw new BackendUnavailableError(`backend "${name}" is not available here (available: ${listBackends().join(", ")})`);
  }
  return resolve(name);
}

/** The methods every backend has: what tells a backend object from a wrong value passed as one. */
const BACKEND_METHODS = ["allocate", "release", "gemm", "encodeCodebook", "decodeCodebook", "transpose", "subtract", "sumOfSquares"] as const;

/** An options' `backend`: a backend, a backend's name, or undefined for the fastest registered one. */
export function resolveBackend(value: KernelBackend | string | undefined): KernelBackend {
  if (value === undefined || typeof value === "string") return getBackend(value);
  if (value === null || typeof value !== "object" || BACKEND_METHODS.some((method) => typeof value[method] !== "function")) {
    throw new InvalidArgumentError(`backend must be a backend name (${listBackends().join(", ")}) or a KernelBackend, got ${value === null ? "null" : typeof value}`);
  }
  return value;
}

function resolve(name: string): KernelBackend {
  const entry = backends.get(name)!;
  if (entry.backend === undefined) {
    const backend = entry.create!();
    if (backend.name !== name) throw new BackendUnavailableError(`the factory registered as backend "${name}" made one named "${backend.name}"`);
    entry.backend = backend;
  }
  return entry.backend;
}

