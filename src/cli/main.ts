#!/usr/bin/env node
/**
 * The `loftq` command. Only this layer prints. Exit codes: 0 success, 1 runtime failure (bad file,
 * non-finite weights), 2 usage error (unknown command or option).
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { LoftqError } from "../errors.js";
import { parseSafetensors } from "../io/safetensors.js";
import { decodeHalf } from "../tensor/dtype.js";
import { loftq, qloraInit, activeBackendName, QUANTIZER_KINDS, type QuantizerKind } from "../node/index.js";

const VERSION = "0.1.0";
const HELP = `loftq ${VERSION}: LoftQ initialisation (quantized weight + LoRA adapters) on the CPU

Usage:
  loftq matrix <file.safetensors> --tensor NAME [options]   LoftQ on one 2-D tensor, print per-iteration errors
  loftq --help | --version

Options (matrix):
  --bits N          code width (default 4)
  --rank R          LoRA rank (default 16)
  --iters T         alternations (default 1)
  --quantizer Q     ${QUANTIZER_KINDS.join(" | ")} (default nf)
  --block-size B    values per absmax block (default 64)
  --seed S          SVD seed (default 0)
  --json            print the result as JSON

Exit codes: 0 ok, 1 failure (unreadable file, bad tensor, non-finite weights), 2 usage error.`;

class UsageError extends Error {}

function main(argv: string[]): number {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      version: { type: "boolean" },
      tensor: { type: "string" },
      bits: { type: "string" },
      rank: { type: "string" },
      iters: { type: "string" },
      quantizer: { type: "string" },
      "block-size": { type: "string" },
      seed: { type: "string" },
      json: { type: "boolean" },
    },
  });
  if (values.version) {
    console.log(VERSION);
    return 0;
  }
  const [command, file] = positionals;
  if (values.help || command === undefined) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  if (command !== "matrix") throw new UsageError(`unknown command "${command}"`);
  if (!file || !values.tensor) throw new UsageError("usage: loftq matrix <file.safetensors> --tensor NAME");
  const integer = (name: string, raw: string | undefined, fallback: number) => {
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value)) throw new UsageError(`--${name} must be an integer, got "${raw}"`);
    return value;
  };
  const quantizer = (values.quantizer ?? "nf") as QuantizerKind;
  if (!QUANTIZER_KINDS.includes(quantizer)) throw new UsageError(`--quantizer must be one of ${QUANTIZER_KINDS.join(", ")}`);
  const parsed = parseSafetensors(new Uint8Array(readFileSync(file)), file);
  const entry = parsed.tensors.get(values.tensor);
  if (!entry) throw new LoftqError("INVALID_ARGUMENT", `${file}: no tensor named "${values.tensor}"`);
  if (entry.shape.length !== 2) throw new LoftqError("INVALID_ARGUMENT", `${values.tensor}: expected a 2-D tensor, got shape [${entry.shape.join(", ")}]`);
  const copy = new Uint8Array(entry.bytes);
  const data =
    entry.dtype === "F32" ? new Float32Array(copy.buffer) :
    entry.dtype === "F16" ? decodeHalf(copy, "f16") :
    entry.dtype === "BF16" ? decodeHalf(copy, "bf16") :
    undefined;
  if (!data) throw new LoftqError("UNSUPPORTED", `${values.tensor}: dtype ${entry.dtype} is not a float weight`);
  const weight = { rows: entry.shape[0]!, cols: entry.shape[1]!, data };
  const options = {
    bits: integer("bits", values.bits, quantizer === "int8" ? 8 : 4),
    rank: integer("rank", values.rank, 16),
    iterations: integer("iters", values.iters, 1),
    quantizer,
    blockSize: integer("block-size", values["block-size"], 64),
    seed: integer("seed", values.seed, 0),
  };
  const started = performance.now();
  const result = loftq(weight, {
    ...options,
    onIteration: (report) => {
      if (!values.json) console.error(`iteration ${report.iteration}/${report.iterations}: ‖W−Q‖ ${report.quantError.toFixed(5)}  ‖W−Q−BA‖ ${report.error.toFixed(5)}`);
    },
  });
  const seconds = (performance.now() - started) / 1000;
  const baseline = qloraInit(weight, options).history[0]!.quantError;
  const summary = {
    tensor: values.tensor, shape: [weight.rows, weight.cols], ...options, backend: activeBackendName(), seconds,
    qOnlyError: baseline, history: result.history, selectedIteration: result.selectedIteration, bitsPerWeight: result.quantized.bitsPerWeight,
  };
  if (values.json) console.log(JSON.stringify(summary, null, 2));
  else {
    const best = result.history[result.selectedIteration - 1]!;
    console.log(`${values.tensor} ${weight.rows}×${weight.cols}: Q-only ${baseline.toFixed(5)} → LoftQ ${best.error.toFixed(5)} (iteration ${result.selectedIteration}), ` +
      `${result.quantized.bitsPerWeight.toFixed(3)} bits/weight, ${seconds.toFixed(2)} s on ${summary.backend}`);
  }
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (error) {
  if (error instanceof UsageError || (error as NodeJS.ErrnoException).code?.startsWith?.("ERR_PARSE_ARGS")) {
    console.error(`loftq: ${(error as Error).message}\n(see loftq --help)`);
    process.exitCode = 2;
  } else if (error instanceof LoftqError || (error as NodeJS.ErrnoException).code === "ENOENT") {
    console.error(`loftq: ${(error as Error).message}`);
    process.exitCode = 1;
  } else {
    throw error;
  }
}
