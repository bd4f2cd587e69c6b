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

/** Why each backend whose factory failed is gone from the registry (named again when asked for). */
const unavailable = new Map<string, string>();

export function registerBackend(backend: KernelBackend, priority: number): void {
  if (backend === null || typeof backend !== "object" || typeof backend.name !== "string" || BACKEND_METHODS.some((method) => typeof backend[method] !== "function")) {
    throw new InvalidArgumentError(`registerBackend: not a KernelBackend (it needs a name and ${BACKEND_METHODS.join(", ")})`);
  }
  checkRegistration(backend.name, priority);
  unavailable.delete(backend.name);
  backends.set(backend.name, { backend, priority });
}

/**
 * A backend made on first use: one that starts threads or loads a native library costs nothing to
 * programs that import the package without computing (or that pick another backend).
 */
export function registerBackendFactory(name: string, priority: number, create: () => KernelBackend): void {
  if (typeof create !== "function") throw new InvalidArgumentError("registerBackendFactory: create must be a function");
  checkRegistration(name, priority);
  unavailable.delete(name);
  backends.set(name, { create, priority });
}

/** A name and a finite priority; the reference backend "ts" stays the reference (every other is tested against it). */
function checkRegistration(name: unknown, priority: unknown): void {
  if (typeof name !== "string" || name === "") throw new InvalidArgumentError(`a backend's name must be a non-empty string, got ${typeof name}`);
  if (typeof priority !== "number" || !Number.isFinite(priority)) throw new InvalidArgumentError(`backend "${name}": priority must be a finite number, got ${String(priority)}`);
  if (name === tsBackend.name && defaultsRegistered) throw new InvalidArgumentError(`backend "${name}" is the reference backend and cannot be replaced`);
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
  registerBackend(tsBackend, 0);
  defaultsRegistered = true;
  if (wasmSimdSupported()) registerBackend(createWasmBackend(), 10);
}

/**
 * The named backend, or the fastest registered one when `name` is omitted. A factory that throws
 * BackendUnavailableError (a native library that does not load) takes its backend out of the
 * registry: the default moves on to the next one, and asking for it by name repeats the reason.
 */
export function getBackend(name?: string): KernelBackend {
  registerDefaults();
  if (name === undefined) {
    for (const candidate of listBackends()) {
      try {
        return resolve(candidate);
      } catch (error) {
        if (!(error instanceof BackendUnavailableError)) throw error;
      }
    }
    return tsBackend;
  }
  if (!backends.has(name)) {
    throw new BackendUnavailableError(`${notAvailable(name)} (available: ${listBackends().join(", ")})`);
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

/** "backend X is not available here", with the reason its factory gave when it failed. */
function notAvailable(name: string): string {
  const why = unavailable.get(name);
  return `backend "${name}" is not available here${why ? ` (${why})` : ""}`;
}

function resolve(name: string): KernelBackend {
  const entry = backends.get(name);
  // Gone while a factory ran (another factory it depends on could not be made).
  if (entry === undefined) throw new BackendUnavailableError(notAvailable(name));
  if (entry.backend === undefined) {
    let backend: KernelBackend;
    try {
      backend = entry.create!();
    } catch (error) {
      if (error instanceof BackendUnavailableError) {
        backends.delete(name);
        unavailable.set(name, error.message);
      }
      throw error;
    }
    if (backend.name !== name) throw new BackendUnavailableError(`the factory registered as backend "${name}" made one named "${backend.name}"`);
    entry.backend = backend;
  }
  return entry.backend;
}

