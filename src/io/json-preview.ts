/** The most characters of a hostile value an error message quotes. */
export const PREVIEW_MAX_CHARS = 60;

/**
 * A short rendering of a value read from an untrusted file, for error messages: JSON.stringify alone
 * overflows the stack on deeply nested input (a 10 KB header nests 5000 deep) and echoes megabytes.
 */
export function jsonPreview(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? "[…]" : typeof value === "object" && value !== null ? "{…}" : typeof value;
  }
  return text.length > PREVIEW_MAX_CHARS ? `${text.slice(0, PREVIEW_MAX_CHARS)}…` : text;
}

/**
 * `text` safe to print on one terminal line: control characters (a newline or an escape sequence in a
 * tensor name from a hostile checkpoint, a line break in a parser's message) as `\uXXXX`.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
