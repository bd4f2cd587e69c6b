/**
 * Byte-level tokenizer: a token is a UTF-8 byte (ids 0–255), plus BOS = 256 and EOS = 257.
 * Lossless for any text and needs no trained vocabulary, which suits a small experiment.
 */
export const BYTE_VOCAB_SIZE = 258;
export const BOS = 256;
export const EOS = 257;

export function encodeBytes(text: string, options: { bos?: boolean; eos?: boolean } = {}): Int32Array {
  const bytes = new TextEncoder().encode(text);
  const out = new Int32Array(bytes.length + (options.bos ? 1 : 0) + (options.eos ? 1 : 0));
  let i = 0;
  if (options.bos) out[i++] = BOS;
  for (const b of bytes) out[i++] = b;
  if (options.eos) out[i] = EOS;
  return out;
}

/** Special tokens are dropped; invalid UTF-8 (a sampled model can produce it) becomes U+FFFD. */
export function decodeBytes(tokens: ArrayLike<number>): string {
  const bytes: number[] = [];
  for (let i = 0; i < tokens.length; i++) if (tokens[i]! < 256) bytes.push(tokens[i]!);
  return new TextDecoder().decode(new Uint8Array(bytes));
}
