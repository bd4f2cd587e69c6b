#!/usr/bin/env node
/**
 * The `loftq` command. Only this layer prints. Exit codes: 0 success, 1 failure (bad or missing
 * input, non-finite weights, output exists, disk full), 2 usage error.
 */
import "./relaxed-simd-setup.js"; // first: before any kernel module is compiled
import { existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { checkReportMatrices, renderReportHtml } from "../report/html-report.js";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { InvalidArgumentError, LoftqError } from "../errors.js";
import { SafetensorsFile } from "../io/safetensors-file.js";
import { openCheckpoint, readJsonFile } from "../io/checkpoint.js";
import { printable } from "../io/json-preview.js";
import { checkBitsOption, checkSelectionOptions, storedTransposed } from "../io/targets.js";
import { checkSeed } from "../linalg/random.js";
import { MANIFEST_FILE, mergeFragments, parseShard, quantizeCheckpoint, REPORT_FILE, type OutputDtype } from "../io/quantize-checkpoint.js";
import { inspectCheckpoint } from "../io/inspect-checkpoint.js";
import { checkBlockSize } from "../quant/quantizer.js";
import { checkIterations, loraScaling } from "../loftq/options.js";
import { loftq, activeBackendName, getBackend, QUANTIZER_KINDS, listBackends, registerNodeBackends, type QuantizerKind } from "../node/index.js";
import { progressRenderer, type ProgressMode } from "./progress.js";

/** The package's own version (dist/src/cli/main.js lies three folders below package.json). */
const VERSION = (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }).version;

const BITS_BY_QUANTIZER = `a width the quantizer has (nf 2, 3, 4, 8; nf-sym 2, 3, 4; uniform 2-8;
                      bnb-nf4/bnb-fp4 4; int8 8)`;
const MODEL_BITS_OPTION = `  --bits N            ${BITS_BY_QUANTIZER}, or mixed 2/4-bit like 2.25 / 2.5
                      (default 4; 8 for int8)`;
const MATRIX_BITS_OPTION = `  --bits N            ${BITS_BY_QUANTIZER} (default 4; 8 for int8)`;
const COMMON_LOFTQ_OPTIONS = `  --rank R            LoRA rank (default 16)
  --iters T           alternations (default 1)
  --quantizer Q       ${QUANTIZER_KINDS.join(" | ")} (default nf)
  --block-size B      values per absmax block (default 64)
  --seed S            SVD seed (default 0): same seed, same bytes
  --backend NAME      kernel backend: ort, wasm-threads, wasm or ts (default: the fastest available)
  --threads N         threads for the wasm-threads and ort backends (default: all cores)`;

const HELP: Record<string, string> = {
  main: `loftq ${VERSION}: LoftQ initialisation (quantized backbone + LoRA adapters) on the CPU

Usage:
  loftq quantize <model-dir> --out <dir> [options]   a Hugging Face checkpoint → LoftQ backbone + PEFT adapter
  loftq merge <model-dir> --out <dir> <fragment>...  assemble the outputs of "quantize --shard i/N" runs
  loftq report <out-dir>                             write <out-dir>/loftq_report.html (SVG charts) from loftq_report.json
  loftq inspect <model-dir | file.safetensors>       tensors, dtypes, shapes, what would be targeted
  loftq matrix <file | model-dir> --tensor NAME      LoftQ on one tensor, print per-iteration errors
  loftq <command> --help                             options of one command
  loftq --version                                    the version

Exit codes: 0 ok, 1 failure (bad input, non-finite weights, output exists, another run writing the same --out,
disk full), 2 usage error.`,
  quantize: `Usage: loftq quantize <model-dir> --out <dir> [options]

Reads model.safetensors or a sharded checkpoint (model.safetensors.index.json); writes <dir>/ (the backbone:
same shards and dtypes, every target weight replaced by the dequantized Q; config and tokenizer files copied),
<dir>/loftq_init/ (adapter_config.json + adapter_model.safetensors for PEFT), loftq_report.json and
loftq_manifest.json. Everything is written to <dir>.partial and renamed when complete; the input is never modified.

Options:
  --out DIR           output directory (required; a non-empty one is refused unless it holds an earlier loftq
                      output and --force is given; a link to a directory writes into that directory)
${MODEL_BITS_OPTION}
${COMMON_LOFTQ_OPTIONS}
  --mixed             treat --bits as LoftQ's mixed 2/4-bit spec even when it is an integer (LoftQ's "3-bit")
  --bits-map RULES    per-module bits, first match wins: "*.mlp.*=2,*.self_attn.*=4"
  --target T          all-linear (default) or a comma list of module names (q_proj,v_proj)
  --lora-alpha A      LoRA alpha (default r); A and B are scaled so (alpha/r)·B·A = W − Q
  --upstream-scaling  do not compensate the LoRA scaling (PEFT's behaviour)
  --dtype D           F32 | F16 | BF16 for the replaced weights (default: the checkpoint's)
  --format F          fp (default): backbone + adapter; bnb4: also write <dir>/bnb-4bit/, a pre-quantized
                      bitsandbytes NF4 checkpoint (NF4, block 64 targets)
  --force             replace a non-empty --out that holds an earlier loftq output (never another directory)
  --resume            continue an interrupted run (finished matrices in <dir>.partial are kept); the files
                      are byte-identical to an uninterrupted run's (timings in loftq_report.json aside);
                      on an --out already finished with the same settings and input: nothing to do, exit 0
  --shard i/N         compute only targets i−1, i−1+N, … and write a fragment to --out; join all N
                      fragments with "loftq merge" (a Kubernetes Indexed Job or a Slurm array, one per shard)
  --json              JSON progress events on stdout
  --quiet             no progress output`,
  merge: `Usage: loftq merge <model-dir> --out <dir> <fragment-dir>... [--force] [--json] [--quiet]

Assembles the checkpoint from the fragments written by "loftq quantize <model-dir> --shard i/N --out <fragment>"
for i = 1..N (same input and settings). The result is byte-identical to one unsharded run (the --out path in
loftq_init/adapter_config.json and loftq_manifest.json and the timings in loftq_report.json aside).`,
  report: `Usage: loftq report <out-dir> [--out FILE] [--quiet]

Writes one self-contained HTML page (default <out-dir>/loftq_report.html): error per layer (Q only against
LoftQ), per-iteration curves, the bits map and the full table, from <out-dir>/loftq_report.json. FILE must
be an .html name (a new page, or an earlier one replaced).`,
  inspect: `Usage: loftq inspect <model-dir | file.safetensors> [--target T] [--bits N] [--mixed] [--quantizer Q] [--rank R] [--block-size B] [--json]

Lists tensors (name, dtype, shape), marks what "loftq quantize" would target and estimates the output sizes.`,
  matrix: `Usage: loftq matrix <file.safetensors | model-dir> --tensor NAME [options]

${MATRIX_BITS_OPTION}
${COMMON_LOFTQ_OPTIONS}
  --json              print the result as JSON`,
};

class UsageError extends Error {}

/** Runs a library check of an option's value, its InvalidArgumentError reported as a usage error. */
function asUsageError<T>(check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new UsageError(error.message);
    throw error;
  }
}

const OPTIONS = {
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
  out: { type: "string" },
  tensor: { type: "string" },
  bits: { type: "string" },
  mixed: { type: "boolean" },
  "bits-map": { type: "string" },
  rank: { type: "string" },
  iters: { type: "string" },
  quantizer: { type: "string" },
  "block-size": { type: "string" },
  seed: { type: "string" },
  backend: { type: "string" },
  threads: { type: "string" },
  target: { type: "string" },
  "lora-alpha": { type: "string" },
  "upstream-scaling": { type: "boolean" },
  dtype: { type: "string" },
  format: { type: "string" },
  force: { type: "boolean" },
  resume: { type: "boolean" },
  shard: { type: "string" },
  json: { type: "boolean" },
  quiet: { type: "boolean" },
} satisfies ParseArgsConfig["options"];

type OptionName = keyof typeof OPTIONS;
const LOFTQ_FLAGS: OptionName[] = ["bits", "rank", "iters", "quantizer", "block-size", "seed", "backend", "threads"];
/** What each command takes (help and version are handled before). */
const COMMAND_OPTIONS: Record<string, OptionName[]> = {
  quantize: ["out", ...LOFTQ_FLAGS, "mixed", "bits-map", "target", "lora-alpha", "upstream-scaling", "dtype", "format", "force", "resume", "shard", "json", "quiet"],
  merge: ["out", "force", "json", "quiet"],
  report: ["out", "quiet"],
  inspect: ["target", "bits", "mixed", "quantizer", "rank", "block-size", "json"],
  matrix: ["tensor", ...LOFTQ_FLAGS, "json"],
};

function main(argv: string[]): number {
  const { values, positionals, tokens } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: OPTIONS, tokens: true });
  if (values.version) {
    console.log(VERSION);
    return 0;
  }
  const [command, path] = positionals;
  if (command === undefined) {
    // Asked for, the help is output (stdout); as the answer to a bare `loftq`, a usage error (stderr).
    if (values.help) console.log(HELP.main);
    else console.error(HELP.main);
    return values.help ? 0 : 2;
  }
  if (!Object.hasOwn(HELP, command) || command === "main") throw new UsageError(`unknown command "${command}"`);
  if (values.help) {
    console.log(HELP[command]);
    return 0;
  }
  // parseArgs keeps the last of a repeated option: two different values (`--out a … --out b`) are more
  // likely a mistake than a choice. The same value twice, or a flag twice, is harmless.
  const valuesGiven = new Map<string, Set<string>>();
  for (const token of tokens) {
    if (token.kind === "option" && token.value !== undefined) valuesGiven.set(token.name, (valuesGiven.get(token.name) ?? new Set()).add(token.value));
  }
  const conflicting = [...valuesGiven].find(([, given]) => given.size > 1);
  if (conflicting) throw new UsageError(`--${conflicting[0]} is given twice with different values (${[...conflicting[1]].map((v) => JSON.stringify(v)).join(", ")})`);
  // An option the command does not take, or a second input path, is a mistake to report, not to ignore.
  const accepted = COMMAND_OPTIONS[command]!;
  const foreign = Object.keys(values).filter((name) => !accepted.includes(name as keyof typeof OPTIONS));
  if (foreign.length > 0) throw new UsageError(`${command} does not take ${foreign.map((name) => `--${name}`).join(", ")} (see loftq ${command} --help)`);
  const extra = command === "merge" ? [] : positionals.slice(2);
  if (extra.length > 0) throw new UsageError(`${command} takes one input path; unexpected ${extra.map((arg) => JSON.stringify(arg)).join(", ")}`);
  if (values.json && values.quiet) throw new UsageError("--json and --quiet are alternatives");
  const number = (name: string, raw: string | undefined, fallback: number, integer = true) => {
    if (raw === undefined) return fallback;
    // Decimal digits only: Number() also reads "" and " " as 0, "0x10" as 16 and "1e1" as 10.
    const value = (integer ? /^\s*\d+\s*$/ : /^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$/).test(raw) ? Number(raw) : NaN;
    if (!Number.isFinite(value) || (integer && !Number.isSafeInteger(value))) throw new UsageError(`--${name} must be ${integer ? "a whole number" : "a number"}, got "${raw}"`);
    return value;
  };
  const quantizer = (values.quantizer ?? "nf") as QuantizerKind;
  if (!QUANTIZER_KINDS.includes(quantizer)) throw new UsageError(`--quantizer must be one of ${QUANTIZER_KINDS.join(", ")}`);
  if (values.backend && !listBackends().includes(values.backend)) {
    const why = values.backend === "ort" ? " (ort needs the optional dependency onnxruntime-node, which is not installed: see the README)" : "";
    throw new UsageError(`--backend must be one of ${listBackends().join(", ")}${why}`);
  }
  const bits = number("bits", values.bits, quantizer === "int8" ? 8 : 4, false);
  const rank = number("rank", values.rank, 16);
  const iterations = number("iters", values.iters, 1);
  const seed = number("seed", values.seed, 0);
  const blockSize = number("block-size", values["block-size"], 64);
  if (!path) throw new UsageError(`usage: ${HELP[command]!.split("\n")[0]!.replace("Usage: ", "")}`);
  // Values out of range are usage errors too, named by their flag, before any file is opened.
  for (const [name, value] of [["rank", rank], ["iters", iterations]] as const) {
    if (value < 1) throw new UsageError(`--${name} must be at least 1, got ${value}`);
  }
  asUsageError(() => checkIterations(iterations, "--iters"));
  asUsageError(() => checkSeed(seed, "--seed"));
  const loraAlpha = values["lora-alpha"] === undefined ? undefined : number("lora-alpha", values["lora-alpha"], rank, false);
  if (loraAlpha !== undefined) asUsageError(() => loraScaling(loraAlpha, rank, false, !values["upstream-scaling"], "--lora-alpha"));
  if (command === "quantize" || command === "inspect" || command === "matrix") {
    // `matrix` runs one tensor at one width: no mixed 2/4-bit values there.
    asUsageError(() => checkBitsOption(bits, quantizer, command !== "matrix" && (values.mixed ?? false)));
    if (command === "matrix" && !Number.isInteger(bits)) throw new UsageError(`--bits must be an integer for matrix (mixed 2/4-bit applies to whole models), got ${bits}`);
    asUsageError(() => checkBlockSize(quantizer, blockSize, "--block-size"));
  }
  // (inspect takes --target but not --bits-map, matrix neither; only quantize writes a --format.)
  const ruleWidths = command !== "quantize" && command !== "inspect" ? [] : asUsageError(() => checkSelectionOptions({ target: values.target ?? "all-linear", quantizer, ...(command === "quantize" && values["bits-map"] ? { bitsMap: values["bits-map"] } : {}) }));
  const format = values.format === undefined || command !== "quantize" ? undefined : parseFormat(values.format);
  if (format === "bnb4") {
    // What --format bnb4 can hold, known from the options alone (lm_head and per-module rules are checked against the checkpoint).
    // A default width other than 4 may still be overridden by rules for every target: the checkpoint tells.
    const fourBit = ruleWidths.every((width) => width === 4) && ((bits === 4 && !values.mixed) || ruleWidths.length > 0);
    if (!fourBit || !["nf", "bnb-nf4"].includes(quantizer) || blockSize !== 64) {
      throw new UsageError(`--format bnb4 needs NF4 with block 64 on every target (--bits 4, --quantizer nf or bnb-nf4, --block-size 64, no --bits-map rule of another width); got --bits ${bits}${values.mixed ? " --mixed" : ""}${values["bits-map"] ? ` --bits-map "${values["bits-map"]}"` : ""} --quantizer ${quantizer} --block-size ${blockSize}`);
    }
  }
  const shard = values.shard === undefined ? undefined : asUsageError(() => parseShard(values.shard!));
  if (values.threads !== undefined) {
    const threads = number("threads", values.threads, 1);
    if (threads < 1) throw new UsageError("--threads must be at least 1");
    registerNodeBackends(threads);
  }

  if (command === "quantize") {
    if (!values.out) throw new UsageError("quantize needs --out <dir>");
    const dtype = values.dtype?.toUpperCase();
    if (dtype !== undefined && !["F32", "F16", "BF16"].includes(dtype)) throw new UsageError(`--dtype must be F32, F16 or BF16`);
    const mode: ProgressMode = values.quiet ? "quiet" : values.json ? "json" : process.stderr.isTTY ? "tty" : "plain";
    const result = quantizeCheckpoint({
      input: path,
      output: values.out,
      bits, rank, iterations, quantizer, blockSize, seed,
      ...(values.mixed ? { mixed: true } : {}),
      ...(values["bits-map"] ? { bitsMap: values["bits-map"] } : {}),
      ...(values.target ? { target: values.target } : {}),
      ...(loraAlpha !== undefined ? { loraAlpha } : {}),
      ...(values["upstream-scaling"] ? { upstreamScaling: true } : {}),
      ...(dtype ? { dtype: dtype as OutputDtype } : {}),
      ...(values.force ? { force: true } : {}),
      ...(values.backend ? { backend: values.backend } : {}),
      ...(values.resume ? { resume: true } : {}),
      ...(format ? { format } : {}),
      ...(shard ? { shard } : {}),
      onEvent: progressRenderer(mode),
    });
    if (mode === "tty" || mode === "plain") printReportTable(result.reports);
    return 0;
  }
  if (command === "merge") {
    if (!values.out) throw new UsageError("merge needs --out <dir>");
    const fragments = positionals.slice(2);
    if (fragments.length === 0) throw new UsageError("merge needs at least one fragment directory");
    const mode: ProgressMode = values.quiet ? "quiet" : values.json ? "json" : "plain";
    const result = mergeFragments({ input: path, output: values.out, fragments, ...(values.force ? { force: true } : {}), onEvent: progressRenderer(mode) });
    if (mode === "plain") printReportTable(result.reports);
    return 0;
  }
  if (command === "report") {
    if (values.out !== undefined && !/\.html?$/i.test(values.out)) throw new UsageError(`--out must name an .html page, got "${values.out}"`);
    const reportPath = join(path, REPORT_FILE);
    if (!existsSync(reportPath)) throw new InvalidArgumentError(`${path} is not a loftq output directory (no ${REPORT_FILE}): pass the --out of a "loftq quantize" run`);
    const report = readJsonFile(reportPath) as { matrices?: unknown };
    if (typeof report !== "object" || report === null || !Array.isArray(report.matrices)) throw new InvalidArgumentError(`${reportPath} has no "matrices" list: not a loftq report`);
    const matrices = checkReportMatrices(report.matrices, reportPath);
    const target = resolve(values.out ?? join(path, "loftq_report.html"));
    // The page replaces an earlier page, nothing else (a mistyped --out could name a shard, or the report itself).
    const existing = statSync(target, { throwIfNoEntry: false });
    if (existing && !existing.isFile()) throw new InvalidArgumentError(`--out ${target} is not a file; the report writes a new .html page or replaces an earlier one`);
    // The report's errors are of B·A unscaled: with PEFT's uncompensated scaling the model starts elsewhere.
    // The manifest only adds that note: a malformed one drops the note, not the page.
    const settings = manifestSettingsOf(join(path, MANIFEST_FILE));
    const notes = settings?.upstreamScaling === true && settings.loraAlpha !== settings.rank
      ? [`this run kept PEFT's uncompensated scaling (--upstream-scaling, lora_alpha ${String(settings.loraAlpha)}, r ${String(settings.rank)}): the model starts at Q + (lora_alpha/r)·B·A, not at the LoftQ errors shown`]
      : [];
    // A temporary name first: an interrupted write leaves no half page behind, a failed one nothing.
    try {
      writeFileSync(`${target}.partial`, renderReportHtml(matrices, `LoftQ report: ${basename(resolve(path))}`, notes));
      renameSync(`${target}.partial`, target);
    } catch (error) {
      rmSync(`${target}.partial`, { force: true });
      throw error;
    }
    if (!values.quiet) console.log(`wrote ${target}`);
    return 0;
  }
  if (command === "inspect") {
    const summary = inspectCheckpoint(path, { target: values.target ?? "all-linear", bits, rank, quantizer, blockSize, ...(values.mixed ? { mixed: true } : {}) });
    if (values.json) console.log(JSON.stringify(summary, null, 2));
    else console.log(summary.text);
    return 0;
  }
  // matrix
  if (!values.tensor) throw new UsageError("matrix needs --tensor NAME");
  // W, Q (written over W's buffer: LoftQ reads W for the last time before Q is decoded) and the
  // codes lie in backend memory: fresh arrays of a matrix's size cost more in page faults than the
  // kernels spend on them.
  const backend = getBackend(values.backend ?? activeBackendName());
  const owned: Float32Array[] = [];
  const inBackend = (floats: number) => {
    const buffer = backend.allocate(floats, false);
    owned.push(buffer);
    return buffer;
  };
  try {
    // Read by offsets (a shard is never loaded whole), from a file or a checkpoint directory.
    const source = statSync(path).isDirectory() ? openCheckpoint(path) : SafetensorsFile.open(path);
    let weight: { rows: number; cols: number; data: Float32Array };
    try {
      const info = source.tensors.find((t) => t.name === values.tensor);
      if (!info) throw new LoftqError("INVALID_ARGUMENT", `${path}: no tensor named "${values.tensor}"`);
      if (info.shape.length !== 2) throw new LoftqError("INVALID_ARGUMENT", `${values.tensor}: expected a 2-D tensor, got shape [${info.shape.join(", ")}]`);
      const [rows, cols] = [info.shape[0]!, info.shape[1]!];
      weight = { rows, cols, data: source.readFloat32(values.tensor, inBackend(rows * cols)) };
      // GPT-2's Conv1D weights are stored (in, out): LoftQ sees them (out, in), as `quantize` does.
      if ("config" in source && storedTransposed(source.config, values.tensor.replace(/\.weight$/, ""))) {
        const turned = inBackend(rows * cols);
        backend.transpose({ a: weight.data, rows, cols, lda: cols, out: turned });
        owned.splice(owned.indexOf(weight.data), 1);
        backend.release(weight.data);
        weight = { rows: cols, cols: rows, data: turned };
      }
    } finally {
      source.close();
    }
    const codes = inBackend(Math.ceil((weight.rows * weight.cols) / 4));
    const started = performance.now();
    const result = loftq(weight, {
      bits, rank, iterations, quantizer, blockSize, seed, name: values.tensor, backend,
      output: weight.data,
      codesOutput: new Uint8Array(codes.buffer, codes.byteOffset, weight.rows * weight.cols),
      onIteration: (r) => {
        if (!values.json) console.error(`iteration ${r.iteration}/${r.iterations}: ‖W−Q‖ ${r.quantError.toFixed(5)}  ‖W−Q−BA‖ ${r.error.toFixed(5)}`);
      },
    });
    const seconds = (performance.now() - started) / 1000;
    // The first iteration quantizes W itself: its ‖W − Q‖ is the Q-only (QLoRA) start's error.
    const baseline = result.history[0]!.quantError;
    const bitsPerWeight = result.quantized.bitsPerWeight;
    const summary = {
      tensor: values.tensor, shape: [weight.rows, weight.cols], bits, rank, iterations, quantizer, blockSize, seed,
      backend: backend.name, seconds, qOnlyError: baseline, history: result.history,
      selectedIteration: result.selectedIteration, bitsPerWeight,
    };
    if (values.json) console.log(JSON.stringify(summary, null, 2));
    else {
      const best = result.history[result.selectedIteration - 1]!;
      console.log(`${values.tensor} ${weight.rows}×${weight.cols}: Q-only ${baseline.toFixed(5)} → LoftQ ${best.error.toFixed(5)} (iteration ${result.selectedIteration}), ` +
        `${bitsPerWeight.toFixed(3)} bits/weight, ${seconds.toFixed(2)} s on ${summary.backend}`);
    }
    return 0;
  } finally {
    for (const buffer of owned) backend.release(buffer);
  }
}

/** The settings a run's manifest records, or undefined when there is none or it is not an object. */
function manifestSettingsOf(path: string): { upstreamScaling?: unknown; loraAlpha?: unknown; rank?: unknown } | undefined {
  if (!existsSync(path)) return undefined;
  let manifest: unknown;
  try {
    manifest = readJsonFile(path);
  } catch {
    return undefined;
  }
  const settings = typeof manifest === "object" && manifest !== null ? (manifest as { settings?: unknown }).settings : undefined;
  return typeof settings === "object" && settings !== null ? (settings as { upstreamScaling?: unknown; loraAlpha?: unknown; rank?: unknown }) : undefined;
}

function parseFormat(value: string): "fp" | "bnb4" {
  if (value !== "fp" && value !== "bnb4") throw new UsageError(`--format must be fp or bnb4, got "${value}"`);
  return value;
}

function printReportTable(reports: ReturnType<typeof quantizeCheckpoint>["reports"]): void {
  const rows = [["module", "shape", "bits", "‖W−Q‖", "‖W−Q−BA‖", "iter", "time"]];
  for (const r of reports) {
    const best = r.history[r.selectedIteration - 1]!;
    rows.push([printable(r.module), r.shape.join("×"), String(r.bits), r.qOnlyError.toFixed(4), best.error.toFixed(4), String(r.selectedIteration), `${r.seconds.toFixed(2)} s`]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  for (const row of rows) console.log(row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  "));
}

// A reader that stops early (`loftq quantize --json | head`, or progress on stderr piped) ends what is printed, not the work: the
// files are the job's output, so it finishes and the exit code says how that went. Any other write failure (a full disk
// behind a redirect) loses printed output the caller may rely on: exit 1 with one line, no stack.
let printingFailed = false;
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") return;
    printingFailed = true;
    process.exitCode = 1;
    if (stream === process.stdout) process.stderr.write(`loftq: cannot write to standard output: ${error.message}\n`);
  });
}

try {
  const code = main(process.argv.slice(2));
  process.exitCode = printingFailed ? 1 : code;
} catch (error) {
  const code = (error as NodeJS.ErrnoException).code;
  if (error instanceof UsageError || (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))) {
    const message = printable((error as Error).message);
    console.error(`loftq: ${message}${/\(see loftq [\w ]*--help\)/.test(message) ? "" : "\n(see loftq --help)"}`);
    process.exitCode = 2;
  } else if (error instanceof LoftqError || (typeof code === "string" && typeof (error as NodeJS.ErrnoException).syscall === "string")) {
    // Typed errors and the operating system's (ENOENT, EACCES, ENOSPC, ENAMETOOLONG, EISDIR, …): a message, no stack.
    // A new line first on a terminal, where a progress line may be open.
    console.error(`${process.stderr.isTTY ? "\n" : ""}loftq: ${printable((error as Error).message)}`);
    process.exitCode = 1;
  } else {
    throw error;
  }
}
