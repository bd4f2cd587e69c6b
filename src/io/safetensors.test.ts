import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseSafetensors, SafetensorsParseError } from "./safetensors.js";
import { tensorByteLength, upstreamOrder, writeSafetensorsFile } from "./safetensors-writer.js";
import { SafetensorsFile, STREAM_PIECE_BYTES } from "./safetensors-file.js";

/** Builds a file from a header object and a data section (no validation: that is the point). */
function file(header: unknown, data = new Uint8Array(0), rawHeader?: string): Uint8Array {
  const json = new TextEncoder().encode(rawHeader ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

test("parses a valid file with metadata and two tensors", () => {
  const parsed = parseSafetensors(file({ __metadata__: { format: "pt" }, a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "U8", shape: [3], data_offsets: [8, 11] } }, new Uint8Array(11)));
  assert.equal(parsed.metadata.format, "pt");
  assert.deepEqual(parsed.tensors.get("b")!.shape, [3]);
});

test("hostile headers are typed parse errors naming the file and tensor", () => {
  const bad: Array<[string, Uint8Array, RegExp]> = [
    ["too short", new Uint8Array(4), /too short/],
    ["length past end", (() => { const f = file({}); new DataView(f.buffer).setBigUint64(0, 1000n, true); return f; })(), /past the end/],
    ["huge length", (() => { const f = file({}); new DataView(f.buffer).setBigUint64(0, 2n ** 40n, true); return f; })(), /exceeds/],
    ["not json", file(null, new Uint8Array(0), "{nope"), /not valid UTF-8 JSON/],
    ["array header", file([]), /not a JSON object/],
    ["unknown dtype", file({ t: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /"t": unknown dtype/],
    ["negative dim", file({ t: { dtype: "U8", shape: [-1], data_offsets: [0, 1] } }, new Uint8Array(1)), /shape/],
    ["fractional dim", file({ t: { dtype: "U8", shape: [1.5], data_offsets: [0, 1] } }, new Uint8Array(1)), /shape/],
    ["offsets outside", file({ t: { dtype: "U8", shape: [4], data_offsets: [0, 4] } }, new Uint8Array(2)), /outside/],
    ["size mismatch", file({ t: { dtype: "F32", shape: [2], data_offsets: [0, 4] } }, new Uint8Array(4)), /4 bytes for shape \[2\] of F32/],
    ["gap", file({ t: { dtype: "U8", shape: [1], data_offsets: [1, 2] } }, new Uint8Array(2)), /not contiguous/],
    ["trailing bytes", file({ t: { dtype: "U8", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(2)), /tensors cover 1/],
    ["metadata not strings", file({ __metadata__: { a: 1 } }), /not a string/],
    ["half-filled F4 byte", file({ t: { dtype: "F4", shape: [3], data_offsets: [0, 2] } }, new Uint8Array(2)), /3 values of F4 do not fill whole bytes/],
    ["a dtype named like an Object property", file({ t: { dtype: "constructor", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /unknown dtype "constructor"/],
    ["a 1 MB tensor name, quoted in brief", file({ ["n".repeat(1 << 20)]: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /^.{0,200}$/],
  ];
  for (const [name, bytes, pattern] of bad) {
    assert.throws(() => parseSafetensors(bytes, "model.safetensors"), (e: unknown) => e instanceof SafetensorsParseError && pattern.test(e.message) && e.message.startsWith("model.safetensors:"), name);
  }
});

test("every upstream dtype is sized, sub-byte ones packed (F4: two per byte, F6: four per three bytes)", () => {
  const parsed = parseSafetensors(
    file(
      {
        a: { dtype: "F4", shape: [2, 4], data_offsets: [0, 4] },
        b: { dtype: "F6_E2M3", shape: [4], data_offsets: [4, 7] },
        c: { dtype: "F8_E8M0", shape: [2], data_offsets: [7, 9] },
        d: { dtype: "C64", shape: [1], data_offsets: [9, 17] },
      },
      new Uint8Array(17),
    ),
    "model.safetensors",
  );
  assert.deepEqual([...parsed.tensors.values()].map((t) => [t.name, t.end - t.begin]), [["a", 4], ["b", 3], ["c", 2], ["d", 8]]);
});

test("headers the safetensors crate refuses are refused: duplicate keys at any depth, a byte-order mark, lone surrogates", () => {
  const entry = '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}';
  const bad: Array<[string, string, RegExp]> = [
    // JSON.parse keeps the last of duplicates silently.
    ["a tensor named twice", `{"t":${entry},"t":${entry}}`, /the key "t" twice/],
    ["the same name, once escaped", `{"t":${entry},"\\u0074":${entry}}`, /the key "t" twice/],
    ["an entry with two data_offsets", '{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"data_offsets":[0,1]}}', /the key "data_offsets" twice/],
    ["a metadata key twice", `{"__metadata__":{"a":"1","a":"2"},"t":${entry}}`, /the key "a" twice/],
    ["a byte-order mark", `\uFEFF{"t":${entry}}`, /byte-order mark/],
    ["a lone surrogate in a tensor name", `{"\\ud800":${entry}}`, /lone UTF-16 surrogate/],
    ["a lone surrogate in metadata", `{"__metadata__":{"a":"\\udc00"},"t":${entry}}`, /lone UTF-16 surrogate/],
  ];
  for (const [name, raw, pattern] of bad) {
    assert.throws(() => parseSafetensors(file(null, new Uint8Array(1), raw), "x.safetensors"), (e: unknown) => e instanceof SafetensorsParseError && pattern.test(e.message), name);
  }
  // Equal keys in different objects, keys equal to values, brackets and escaped quotes inside strings are fine.
  const fine = `{"__metadata__":{"t":"t","q":"\\"}{[,"},"t":${entry}}`;
  assert.deepEqual([...parseSafetensors(file(null, new Uint8Array(1), fine)).tensors.keys()], ["t"]);
  // A surrogate pair (an emoji) is a well-formed name.
  assert.deepEqual([...parseSafetensors(file({ "w\u{1F600}": JSON.parse(entry) }, new Uint8Array(1))).tensors.keys()], ["w\u{1F600}"]);
});

test('a tensor named "__proto__" is written as a key like any other (not as the header\'s prototype)', () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-proto-"));
  try {
    const path = join(dir, "model.safetensors");
    writeSafetensorsFile(path, [{ name: "__proto__", dtype: "U8", shape: [2] }, { name: "w", dtype: "U8", shape: [1] }], {}, (t) => new Uint8Array(t.name === "w" ? 1 : 2));
    const file = SafetensorsFile.open(path);
    try {
      assert.deepEqual(file.tensors.map((t) => t.name).sort(), ["__proto__", "w"]);
    } finally {
      file.close();
    }
    // A name twice, or the reserved __metadata__, would make a file that reads back wrong: refused.
    for (const names of [["w", "w"], ["__metadata__"]]) {
      assert.throws(() => writeSafetensorsFile(join(dir, "bad.safetensors"), names.map((name) => ({ name, dtype: "U8", shape: [1] })), {}, () => new Uint8Array(1)), /is given twice \(or is the reserved __metadata__\)/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a failed write (full disk) leaves no file behind and says so", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-write-"));
  try {
    const path = join(dir, "model.safetensors");
    const full = () => {
      throw Object.assign(new Error("no space left on device"), { code: "ENOSPC" });
    };
    assert.throws(() => writeSafetensorsFile(path, [{ name: "t", dtype: "U8", shape: [1] }], {}, full), /disk is full/);
    assert.deepEqual(readdirSync(dir), []);
    assert.throws(() => writeSafetensorsFile(path, [{ name: "t", dtype: "F32", shape: [2] }], {}, () => new Uint8Array(4)), /produced 4 bytes, expected 8/);
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("tensors streamed from another file (through the shared piece buffer) are written byte for byte; a stream of the wrong length leaves no file", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-write-"));
  try {
    // Larger than one piece, so the copy takes several reads through the reused buffer.
    const big = { name: "big", dtype: "U8", shape: [STREAM_PIECE_BYTES + 12345] };
    const small = { name: "small", dtype: "F32", shape: [3] };
    const contents = (t: { name: string }) => Uint8Array.from({ length: tensorByteLength(t === big ? big : small) }, (_, i) => (i * 31 + t.name.length) % 251);
    const source = join(dir, "source.safetensors");
    writeSafetensorsFile(source, [big, small], {}, (t) => contents(t));
    const input = SafetensorsFile.open(source);
    try {
      const copy = join(dir, "copy.safetensors");
      writeSafetensorsFile(copy, [big, small], {}, (t) => input.streamBytes(t.name));
      assert.deepEqual(readFileSync(copy), readFileSync(source));
      const pieces: number[] = [];
      input.streamBytes("big").stream((piece) => pieces.push(piece.length));
      assert.deepEqual(pieces, [STREAM_PIECE_BYTES, 12345]);
      const wrong = join(dir, "wrong.safetensors");
      assert.throws(() => writeSafetensorsFile(wrong, [{ ...small, shape: [2] }], {}, () => input.streamBytes("small")), /produced 12 bytes, expected 8/);
      assert.throws(() => writeSafetensorsFile(wrong, [{ ...small, shape: [4] }], {}, () => input.streamBytes("small")), /produced 12 bytes, expected 16/);
      // A stream that fails midway (a read error, a damaged store entry) leaves no file either.
      const failing = { stream: (write: (piece: Uint8Array) => void) => { write(new Uint8Array(4)); throw new Error("read failed"); } };
      assert.throws(() => writeSafetensorsFile(wrong, [big], {}, () => failing), /read failed/);
      // Empty tensors stream no piece at all.
      writeSafetensorsFile(join(dir, "empty.safetensors"), [{ name: "e", dtype: "F32", shape: [0] }], {}, () => ({ stream: () => {} }));
      assert.deepEqual(readdirSync(dir).sort(), ["copy.safetensors", "empty.safetensors", "source.safetensors"]);
    } finally {
      input.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the writer reproduces upstream's layout: dtype-descending then name order, padded header, readable back", () => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-write-"));
  try {
    const path = join(dir, "x.safetensors");
    const tensors = upstreamOrder([
      { name: "b", dtype: "U8", shape: [3] },
      { name: "a", dtype: "BF16", shape: [2] },
      { name: "c", dtype: "F32", shape: [1] },
      { name: "B", dtype: "F32", shape: [1] },
    ]);
    assert.deepEqual(tensors.map((t) => t.name), ["B", "c", "a", "b"]);
    writeSafetensorsFile(path, tensors, { format: "pt" }, (t) => new Uint8Array(tensorByteLength(t)).fill(7));
    const bytes = new Uint8Array(readFileSync(path));
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(headerLength % 8, 0);
    assert.match(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)), /^\{"__metadata__":\{"format":"pt"\},"B":\{"dtype":"F32","shape":\[1\],"data_offsets":\[0,4\]\}/);
    const parsed = parseSafetensors(bytes);
    assert.deepEqual([...parsed.tensors.keys()], ["B", "c", "a", "b"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
