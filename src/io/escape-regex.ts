/** `text` as a regular expression matching exactly it (every metacharacter escaped, `*` too). */
export function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
