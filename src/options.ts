/**
 * Checks shared by every function that takes an options object. JavaScript callers get no compile-time
 * check, so a misspelt key (`iteration`, `lora_alpha`) would otherwise fall back to a default silently
 * and a string where a boolean belongs (`keepBest: "false"`) would read as true.
 */
import { InvalidArgumentError } from "./errors.js";

/**
 * Throws unless `options` is undefined (when `optional`) or a plain object whose own keys are all in
 * `known`; an unknown key is named with the nearest known one. `caller` names the function in messages.
 */
export function checkOptionKeys(options: unknown, known: readonly string[], caller: string, optional = true): void {
  if (options === undefined && optional) return;
  if (options === null || typeof options !== "object" || Array.isArray(options)) {
    throw new InvalidArgumentError(`${caller}: options must be an object, got ${describe(options)}`);
  }
  // for…in, not Object.keys: an inherited key (Object.create({ rnak: 2 })) is read like an own one.
  for (const key in options) {
    if (known.includes(key)) continue;
    const near = nearest(key, known);
    throw new InvalidArgumentError(
      `${caller}: unknown option ${JSON.stringify(key)}${near ? ` (did you mean ${JSON.stringify(near)}?)` : ""}; known options: ${known.join(", ")}`,
    );
  }
}

/** Throws unless `value` is undefined or a boolean. */
export function checkOptionalBoolean(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== "boolean") throw new InvalidArgumentError(`${name} must be true or false, got ${describe(value)}`);
}

/** Throws unless `value` is undefined or a function. */
export function checkOptionalFunction(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== "function") throw new InvalidArgumentError(`${name} must be a function, got ${describe(value)}`);
}

/** A short description of a wrong value for messages: its type, and the value itself when it is short. */
function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === "string") return value.length <= 40 ? JSON.stringify(value) : "a string";
  if (typeof value === "number" || typeof value === "boolean") return `${typeof value} ${String(value)}`;
  return Array.isArray(value) ? "an array" : typeof value;
}

/**
 * The known key a misspelling most likely meant: the same letters ignoring case and `_`/`-`, else
 * within edit distance 2, else one ending the other (PEFT's `lora_alpha` for a layer's `alpha`).
 */
function nearest(key: string, known: readonly string[]): string | undefined {
  const plain = (text: string) => text.toLowerCase().replace(/[_-]/g, "");
  const exact = known.find((candidate) => plain(candidate) === plain(key));
  if (exact) return exact;
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(plain(key), plain(candidate));
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  const ending = (long: string, short: string) => short.length >= 4 && long.endsWith(short);
  return best ?? known.find((candidate) => ending(plain(key), plain(candidate)) || ending(plain(candidate), plain(key)));
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * The keys of an options interface as a run-time list; the compiler rejects a list that misses one, so
 * the check above cannot fall behind the interface.
 */
export const optionKeysOf =
  <Options>() =>
  <const Keys extends readonly (keyof Options & string)[]>(
    keys: Keys & ([Exclude<keyof Options, Keys[number]>] extends [never] ? unknown : { missing: Exclude<keyof Options, Keys[number]> }),
  ): readonly string[] =>
    keys;
