/**
 * Command-line options of the bench scripts. Strict: an unknown or misspelt flag is an error, not a
 * silent fall-back to the default grid (which runs for minutes), and `--help` prints the usage. Values
 * stay strings; the `numbers` and `integers` helpers below check them.
 */
import { parseArgs } from "node:util";

/** Exit status for usage errors, as the CLI uses. */
const USAGE_EXIT_CODE = 2;

export type BenchOptionSpec = Record<string, { type: "string" | "boolean"; default?: string | boolean }>;

/**
 * Parses `argv` against `spec`; prints `usage` and exits (0 on --help, 2 on a bad flag). Booleans come
 * back as booleans, everything else as strings.
 */
export function parseBenchArgs<Spec extends BenchOptionSpec>(
  usage: string,
  spec: Spec,
  argv: string[] = process.argv.slice(2),
): { [Name in keyof Spec]: Spec[Name]["type"] extends "boolean" ? boolean : string } {
  const options = { ...spec, help: { type: "boolean" as const, short: "h" } };
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (error) {
    usageError(usage, (error as Error).message);
  }
  if (values.help) {
    process.stdout.write(`${usage.trim()}\n`);
    process.exit(0);
  }
  for (const [name, option] of Object.entries(spec)) values[name] ??= option.default ?? (option.type === "boolean" ? false : "");
  return values as ReturnType<typeof parseBenchArgs<Spec>>;
}

/** Prints `message` and the usage to stderr and exits with the usage-error status. */
export function usageError(usage: string, message: string): never {
  process.stderr.write(`${message}\n\n${usage.trim()}\n`);
  process.exit(USAGE_EXIT_CODE);
}

/** The comma-separated entries of `text`, each matching `pattern`, or a usage error saying what `--flag` takes. */
function entries(usage: string, flag: string, text: string, pattern: RegExp, takes: string): string[] {
  const values = text.split(",").map((part) => part.trim()).filter(Boolean);
  if (values.length === 0 || !values.every((value) => pattern.test(value))) usageError(usage, `--${flag} takes ${takes} separated by commas, got ${JSON.stringify(text)}`);
  return values;
}

/** A comma-separated list of positive integers (`--ranks 16,64`), or a usage error naming the flag. */
export function integers(usage: string, flag: string, text: string): number[] {
  return entries(usage, flag, text, /^[1-9][0-9]*$/, "positive integers").map(Number);
}

/** One positive integer (`--repeat 5`), or a usage error naming the flag. */
export function integer(usage: string, flag: string, text: string): number {
  if (!/^[1-9][0-9]*$/.test(text.trim())) usageError(usage, `--${flag} takes one positive integer, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** A comma-separated list of ROWSxCOLS shapes (`--sizes 4096x4096,4096x11008`). */
export function shapes(usage: string, flag: string, text: string): Array<[number, number]> {
  return entries(usage, flag, text, /^[1-9][0-9]*x[1-9][0-9]*$/, "ROWSxCOLS shapes").map((value) => value.split("x").map(Number) as [number, number]);
}

/** One of a fixed set of words. */
export function oneOf<Word extends string>(usage: string, flag: string, text: string, words: readonly Word[]): Word {
  if (!(words as readonly string[]).includes(text)) usageError(usage, `--${flag} must be one of ${words.join(", ")}, got ${JSON.stringify(text)}`);
  return text as Word;
}

/** Colon-separated integer tuples (`--cases 4:16:1,2:64:5`), each of `arity` parts. */
export function tuples(usage: string, flag: string, text: string, arity: number, example: string): number[][] {
  const pattern = new RegExp(`^[1-9][0-9]*(:[1-9][0-9]*){${arity - 1}}$`);
  return entries(usage, flag, text, pattern, `cases like ${example}`).map((value) => value.split(":").map(Number));
}
