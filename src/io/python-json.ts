/**
 * JSON text as Python's `json.dumps` writes it by default (`ensure_ascii`): every character beyond printable ASCII (DEL too)
 * as a lowercase `\uXXXX` escape (an astral one as its surrogate pair), so files PEFT and transformers
 * write (adapter_config.json, the shard index) come out byte for byte the same for any tensor name.
 */
export function asciiJson(text: string): string {
  return text.replace(/[\u007f-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
