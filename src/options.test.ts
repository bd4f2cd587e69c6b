import { test } from "node:test";
import assert from "node:assert/strict";
import { InvalidArgumentError, NonFiniteError, ShapeError } from "./errors.js";
import { loftq } from "./loftq/loftq.js";
import { qloraInit } from "./loftq/qlora-init.js";
import { truncatedSvd } from "./linalg/truncated-svd.js";
import { jacobiSvd } from "./linalg/jacobi-svd.js";
import { householderQr } from "./linalg/householder-qr.js";
import { optimalLowRankError, singularValues } from "./linalg/symmetric-eigenvalues.js";
import { createQuantizer } from "./quant/quantizer.js";
import { packCodes, unpackCodes } from "./quant/packing.js";
import { transpose } from "./tensor/matrix.js";
import { llmLikeWeight } from "./synthetic/llm-like-weight.js";

const weight = llmLikeWeight(48, 64, { seed: 2 });

test("a misspelt option is an error naming the nearest known one, not a silent default", () => {
  const cases: Array<[() => unknown, RegExp]> = [
    [() => loftq(weight, { iteration: 5 } as never), /loftq: unknown option "iteration" \(did you mean "iterations"\?\)/],
    [() => loftq(weight, { rnak: 4 } as never), /unknown option "rnak" \(did you mean "rank"\?\)/],
    [() => loftq(weight, { lora_alpha: 32 } as never), /unknown option "lora_alpha" \(did you mean "loraAlpha"\?\)/],
    [() => loftq(weight, { blocksize: 32 } as never), /did you mean "blockSize"/],
    [() => qloraInit(weight, { quantiser: "uniform" } as never), /qloraInit: unknown option "quantiser" \(did you mean "quantizer"\?\)/],
    [() => truncatedSvd(weight, { rank: 4, methd: "exact" } as never), /truncatedSvd: unknown option "methd" \(did you mean "method"\?\)/],
    [() => createQuantizer({ kind: "nf", bit: 2 } as never), /createQuantizer: unknown option "bit" \(did you mean "bits"\?\)/],
    [() => loftq(weight, { somethingElse: 1 } as never), /unknown option "somethingElse"; known options: bits, rank/],
    [() => loftq(weight, Object.create({ rnak: 2 }) as never), /unknown option "rnak"/],
  ];
  for (const [call, message] of cases) assert.throws(call, (e: unknown) => e instanceof InvalidArgumentError && message.test(e.message), message.source);
});

test("options of the wrong type are refused up front: flags, callbacks, backends, seeds, null options", () => {
  const cases: Array<[() => unknown, RegExp]> = [
    [() => loftq(weight, { keepBest: "false" } as never), /keepBest must be true or false, got "false"/],
    [() => loftq(weight, { upstreamScaling: "no" } as never), /upstreamScaling must be true or false/],
    [() => loftq(weight, { quantizer: "bnb-nf4", doubleQuant: 1 } as never), /doubleQuant must be true or false/],
    [() => loftq(weight, { onIteration: "x" } as never), /onIteration must be a function/],
    [() => loftq(weight, { backend: {} } as never), /backend must be a backend name/],
    [() => qloraInit(weight, null as never), /options must be an object, got null/],
    [() => truncatedSvd(weight, undefined as never), /options must be an object/],
    [() => truncatedSvd(weight, { rank: 4, seed: NaN }), /seed must be an integer/],
    [() => truncatedSvd(weight, { rank: 4, seed: 2 ** 32 }), /seed must be an integer/],
    [() => createQuantizer({ kind: "bnb-nf4", zeroBlocks: "gpu" } as never), /zeroBlocks must be one of cuda, cpu/],
    [() => createQuantizer({ kind: "nf", zeroBlocks: "cpu" }), /zeroBlocks applies to bnb-nf4 only/],
  ];
  for (const [call, message] of cases) assert.throws(call, (e: unknown) => e instanceof InvalidArgumentError && message.test(e.message), message.source);
  assert.throws(() => truncatedSvd(weight, { rank: 4, backend: "nope" }), /backend "nope" is not available/);
  // A backend by name works for truncatedSvd as for loftq.
  assert.equal(truncatedSvd(weight, { rank: 4, backend: "ts" }).s.length, 4);
});

test("qloraInit writing Q over W itself still reports ‖W − Q‖, and times its iteration", () => {
  const expected = qloraInit(weight, { bits: 2 }).history[0]!.quantError;
  const copy = { ...weight, data: Float32Array.from(weight.data) };
  let elapsed = -1;
  const result = qloraInit(copy, { bits: 2, output: copy.data, onIteration: (report) => (elapsed = report.elapsedMs) });
  assert.equal(result.history[0]!.quantError, expected);
  assert.ok(expected > 0.1);
  assert.equal(result.dequantized.data, copy.data);
  assert.deepEqual(result.dequantized.data, qloraInit(weight, { bits: 2 }).dequantized.data);
  assert.ok(elapsed >= 0);
});

test("dequantize checks a quantized matrix's arrays against its shape", () => {
  const quantizer = createQuantizer({ bits: 4 });
  const q = quantizer.quantize(weight);
  assert.throws(() => quantizer.dequantize({ ...q, absmax: q.absmax.subarray(0, 1) }), (e: unknown) => e instanceof ShapeError && /takes 48 scales, got 1/.test(e.message));
  assert.throws(() => quantizer.dequantize({ ...q, packed: q.packed.subarray(1) }), /codes take 1536 bytes, got 1535/);
  assert.throws(() => quantizer.dequantize(q, new Float32Array(3)), /out must be a Float32Array of 3072 values/);
  const int8 = createQuantizer({ kind: "int8" });
  const rows = int8.quantize(weight);
  assert.throws(() => int8.dequantize({ ...rows, absmax: rows.absmax.subarray(0, 47) }), /takes 48 scales, got 47/);
});

test("packing refuses codes wider than the code width and unknown bit orders", () => {
  assert.throws(() => packCodes(Uint8Array.of(17, 0), 4, "lsb-first"), /code 17 at index 0 does not fit in 4 bits/);
  assert.throws(() => packCodes(Uint8Array.of(1, 2, 3, 255), 2, "msb-first"), /code 255 at index 3/);
  assert.throws(() => packCodes(Uint8Array.of(1, 9), 3, "lsb-first"), /code 9 at index 1/);
  assert.throws(() => packCodes(Uint8Array.of(1), 4, "x" as never), /bit order must be one of lsb-first, msb-first/);
  assert.throws(() => unpackCodes(Uint8Array.of(0, 0), 3, 5, "msb-first"), /msb-first packing needs bits dividing 8/);
  assert.deepEqual([...unpackCodes(packCodes(Uint8Array.of(1, 2, 3, 0, 5), 3, "lsb-first"), 3, 5, "lsb-first")], [1, 2, 3, 0, 5]);
});

test("the dense linear-algebra helpers refuse malformed arrays instead of returning NaN", () => {
  assert.throws(() => jacobiSvd([1, 2, 3], 2, 2), /needs 4 values, got 3/);
  assert.throws(() => jacobiSvd([1, NaN, 3, 4], 2, 2), (e: unknown) => e instanceof NonFiniteError && e.row === 0 && e.col === 1);
  assert.throws(() => singularValues(Float32Array.of(3, 4, 5), 2, 2), ShapeError);
  assert.throws(() => householderQr(new Float64Array(6), 2, 3), /rows ≥ cols/);
  assert.throws(() => householderQr(new Float64Array(6), 1.5, 4), /positive integers/);
  for (const rank of [-1, 1.5, 4]) assert.throws(() => optimalLowRankError(Float64Array.of(3, 2, 1), rank), InvalidArgumentError);
  assert.equal(optimalLowRankError(Float64Array.of(3, 2, 1), 3), 0);
  assert.throws(() => transpose(null as never), ShapeError);
});
