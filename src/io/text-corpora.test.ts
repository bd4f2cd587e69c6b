import { test } from "node:test";
import assert from "node:assert/strict";
import { brownCorpus, sotuAddresses } from "./text-corpora.js";
import { BOS, BYTE_VOCAB_SIZE, decodeBytes, encodeBytes, EOS } from "../nn/byte-tokenizer.js";

test("the Brown corpus loads as plain text (tags stripped)", (t) => {
  const samples = brownCorpus(3);
  assert.equal(samples.length, 3);
  assert.match(samples[0]!, /^The Fulton County Grand Jury said Friday an investigation/);
  assert.ok(!/\/(at|nn|vbd)\b/.test(samples[0]!), "no POS tags left");
  t.diagnostic(`${brownCorpus().length} Brown samples; first: ${samples[0]!.slice(0, 80)}…`);
});

test("State of the Union addresses load by year", () => {
  const early = sotuAddresses(1790, 1792);
  assert.deepEqual(early.map((a) => a.year), [1790, 1791, 1792]);
  assert.ok(early.every((a) => a.text.length > 1000 && /washington/.test(a.president)));
  assert.ok(sotuAddresses(2000).length > 10);
});

test("byte tokenizer: lossless round trip, special tokens, vocabulary size", () => {
  const text = "LoftQ — naïve café, 2-bit 🚀";
  const tokens = encodeBytes(text, { bos: true, eos: true });
  assert.equal(tokens[0], BOS);
  assert.equal(tokens[tokens.length - 1], EOS);
  assert.ok(tokens.every((id) => id >= 0 && id < BYTE_VOCAB_SIZE));
  assert.equal(decodeBytes(tokens), text);
  assert.equal(decodeBytes([0xe2, 0x82]), "\ufffd", "a truncated character decodes to U+FFFD");
});
