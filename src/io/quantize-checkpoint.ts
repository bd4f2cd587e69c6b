import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, realpathSync, renameSync, rmSync, statSync } from "node:fs";
import { createHash } from "node:crypto";
import { basename, dirname, join, resolve } from "node:path";
import { InvalidArgumentError, LoftqError, NonFiniteError, OutOfRangeError } from "../errors.js";
import type { KernelBackend } from "../kernels/backend.js";
import { resolveBackend } from "../kernels/registry.js";
import { checkOptionalBoolean, checkOptionalFunction, checkOptionKeys, optionKeysOf } from "../options.js";
import { loftq } from "../loftq/loftq.js";
import { checkIterations, loraScaling } from "../loftq/options.js";
import { checkSeed } from "../linalg/random.js";
import type { IterationErrors } from "../loftq/loftq.js";
import { createQuantizer, type QuantizerKind } from "../quant/quantizer.js";
import { encodeHalf, F16_MAX, F16_OVERFLOW, float32Bytes } from "../tensor/dtype.js";
import type { Matrix } from "../tensor/matrix.js";
import { CheckpointError, checkCheckpointDir, INDEX_FILE, openCheckpoint, readJsonFile, type Checkpoint } from "./checkpoint.js";
import { jsonPreview } from "./json-preview.js";
import { checkReportMatrices, type ReportMatrix } from "../report/html-report.js";
import { copyFileDurably, syncDirectory, writeFileDurably } from "./durable-file.js";
import { createBackgroundPublisher } from "./background-publisher.js";
import { dropBackboneWeight, hasMatrix, holdsBackboneWeight, keepIfReadable, removeMatrix, loadEntryHeader, loadFactors, readBackboneWeight, saveMatrix, streamBackboneWeight, STORE_DIR, type StoredEntryHeader } from "./matrix-store.js";
import { acquireOutputLock, OutputLockLostError } from "./output-lock.js";
import { createTensorPrefetcher, type TensorRead } from "./tensor-prefetcher.js";
import { writeShards, type ShardPlan } from "./sharded-checkpoint.js";
import { BNB4_DIR, bnb4QuantizationConfig, bnb4SkipModules, checkBnb4Names, bnb4Tensors, torchDtypeName, withQuantizationConfig } from "./bnb4-export.js";
import { adapterConfig, architectureOf, autoMappingOf, formatAdapterConfig, loraTensorNames, peftModulePrefix, peftTargetModules, taskTypeOf, usesRemoteCode, type TaskType } from "./peft-adapter.js";
import { DiskFullError, upstreamOrder, writeSafetensorsFile, type PlannedTensor } from "./safetensors-writer.js";
import { SafetensorsFile } from "./safetensors-file.js";
import { checkBitsOption, selectTargets, unmatchedSelectors, type TargetMatrix } from "./targets.js";

/**
 * The model pipeline: a Hugging Face safetensors checkpoint in; out, the layout of the LoftQ hub
 * checkpoints: `<out>/` the backbone (same shards and dtypes, every target weight replaced by its
 * dequantized Q, config/tokenizer files copied) and `<out>/loftq_init/` a PEFT adapter. One matrix
 * at a time; everything goes to `<out>.partial` first and is renamed to `<out>` when complete.
 */
export const ADAPTER_DIR = "loftq_init";
export const REPORT_FILE = "loftq_report.json";
export const MANIFEST_FILE = "loftq_manifest.json";
/**
 * Config, tokenizer, processor and remote-code files: what transformers' save_pretrained and the
 * tokenizers write beside the weights (SentencePiece `*.model` such as DeBERTa-v3's spm.model, Marian's
 * `*.spm`, Qwen's `*.tiktoken`, Mistral's tekken.json, XLM's bpe.codes, …), never weights.
 */
const COPIED_FILE =
  /^(?:config|generation_config|tokenizer(?:_config)?|special_tokens_map|added_tokens|vocab|merges|(?:video_)?preprocessor_config|processor_config|chat_template|tekken)\.(?:json|txt|jinja)$|^[\w.-]+\.(?:model|spm|tiktoken|py)$|^bpe\.codes$/;

export type OutputDtype = "F32" | "F16" | "BF16";

export interface QuantizeCheckpointOptions {
  input: string;
  output: string;
  bits?: number;
  /** Treat `bits` as LoftQ's mixed 2/4-bit spec. */
  mixed?: boolean;
  bitsMap?: string;
  rank?: number;
  iterations?: number;
  quantizer?: QuantizerKind;
  blockSize?: number;
  target?: string;
  loraAlpha?: number;
  upstreamScaling?: boolean;
  /** Backbone dtype of the replaced weights (default: each weight's own). */
  dtype?: OutputDtype;
  seed?: number;
  /** Replace a non-empty output directory. */
  force?: boolean;
  /** "bnb4" also writes `<out>/bnb-4bit/`, a pre-quantized bitsandbytes NF4 checkpoint. */
  format?: "fp" | "bnb4";
  backend?: KernelBackend | string;
  onEvent?: (event: PipelineEvent) => void;
}

export interface MatrixReport {
  tensor: string;
  module: string;
  shape: [number, number];
  transposed: boolean;
  bits: number;
  rank: number;
  /** ‖W − Q‖/‖W‖ of the plain quantization (the QLoRA start). */
  qOnlyError: number;
  history: IterationErrors[];
  selectedIteration: number;
  seconds: number;
}

export type PipelineEvent =
  | { type: "plan"; matrices: number; shards: number; tensors: number; /** --target names and --bits-map patterns that select nothing. */ unmatched: string[]; /** Other things that need the user's attention. */ warnings: string[] }
  | { type: "matrix-start"; index: number; total: number; module: string; rows: number; cols: number; bits: number }
  | { type: "iteration"; index: number; total: number; module: string; iteration: number; iterations: number; quantError: number; error: number }
  | { type: "matrix-done"; index: number; total: number; report: MatrixReport }
  | { type: "shard-written"; file: string; written: number; shards: number; /** Left by an interrupted assembly and kept. */ kept: boolean }
  | {
      type: "done"; output: string; seconds: number; matrices: number;
      /** What --force replaced and could not remove. */ leftover?: string;
      /** --resume found --out finished by an earlier run with the same settings and input: nothing was done. */ alreadyComplete?: boolean;
    };

export class OutputExistsError extends LoftqError {
  constructor(path: string, why = "pass --force to replace it") {
    super("INVALID_ARGUMENT", `${path} exists and is not empty; ${why}`);
    this.name = "OutputExistsError";
  }
}

/** What to do after a failed final rename of a quantize run: --resume renames a finished .partial. */
const QUANTIZE_RETRY = "rerun with --resume (and --force if --out held an earlier output), which renames it without computing";

/** The output is complete in `<out>.partial`, but the final rename onto --out failed: nothing is removed. */
export class PublishError extends LoftqError {
  constructor(partial: string, output: string, cause: Error, retry: string) {
    super("IO_ERROR", `the output is complete in ${partial} but could not be renamed to ${output} (${cause.message}); fix that and ${retry}`);
    this.name = "PublishError";
  }
}

export interface QuantizeCheckpointResult {
  output: string;
  reports: MatrixReport[];
}

/**
 * A checkpoint without config.json quantizes, but its output cannot be loaded by transformers as it
 * is (no model type); the bnb4 checkpoint's config would be nothing but a quantization_config.
 */
function configWarnings(checkpoint: Checkpoint, targets: readonly TargetMatrix[], settings: Settings): string[] {
  // The skip list's clash check, before any work rather than after the last matrix.
  if (settings.format === "bnb4") {
    const exported = new Map(targets.map((t) => [t.tensor, t]));
    bnb4SkipModules(checkpoint.tensors, exported);
    checkBnb4Names(checkpoint.tensors, exported);
  }
  // A head tied to the embeddings is re-tied on load (to the embedding, i.e. the original W): its Q would be
  // dropped and B·A = W − Q added to W itself. PEFT warns about tied targets; here nothing good can come of it.
  const textConfig = checkpoint.config?.text_config;
  const tied = checkpoint.config?.tie_word_embeddings === true || (typeof textConfig === "object" && textConfig !== null && (textConfig as Record<string, unknown>).tie_word_embeddings === true);
  const tiedHead = tied ? targets.find((t) => /(?:^|\.)lm_head$/.test(t.module)) : undefined;
  if (tiedHead) {
    throw new InvalidArgumentError(`${tiedHead.tensor} is tied to the input embeddings (tie_word_embeddings in config.json): transformers re-ties it on load, dropping its Q, so the model would not start at W; leave lm_head out of --target`);
  }
  if (checkpoint.config) return [];
  if (settings.format === "bnb4") throw new InvalidArgumentError(`${checkpoint.dir} has no config.json: --format bnb4 writes the model's config with a quantization_config, so it needs the original`);
  return [`${checkpoint.dir} has no config.json: the output has none either, and transformers needs one to load it (copy the model's config.json next to the output's shards)`];
}

/**
 * The config, tokenizer and code files copied next to the output's shards: regular files only (a FIFO
 * would block the copy). A name that should be copied but cannot be read (a dangling link) is refused
 * here, before any matrix is computed, instead of failing the run after the last one.
 */
function filesToCopy(dir: string): string[] {
  const files: string[] = [];
  for (const file of readdirSync(dir).sort()) {
    if (!COPIED_FILE.test(file)) continue;
    const stats = statSync(join(dir, file), { throwIfNoEntry: false });
    if (stats === undefined) throw new CheckpointError(`${join(dir, file)}: a link to nothing (the output would lack it); fix or remove it`);
    if (stats.isFile()) files.push(file);
  }
  return files;
}

/**
 * Earlier outputs that --force moved aside and a killed run never removed (`<out>.replaced-<pid>`):
 * whole old outputs, left for the user to delete, but worth a word since nothing else names them.
 */
function replacedLeftovers(output: string): string[] {
  const prefix = `${basename(output)}.replaced-`;
  let siblings: string[];
  try {
    siblings = readdirSync(dirname(output));
  } catch {
    return [];
  }
  return siblings.filter((name) => name.startsWith(prefix)).map((name) => `${join(dirname(output), name)} is an earlier output that --force moved aside and did not remove (the run was stopped); delete it once you no longer need it`);
}

/** Settings that must match between a run and its resumption, or between shards being merged. */
function settingsOf(options: QuantizeCheckpointOptions) {
  return {
    bits: options.bits ?? 4, mixed: options.mixed ?? false, bitsMap: options.bitsMap ?? null, rank: options.rank ?? 16,
    iterations: options.iterations ?? 1, quantizer: options.quantizer ?? "nf", blockSize: options.blockSize ?? 64,
    target: options.target ?? "all-linear", loraAlpha: options.loraAlpha ?? null, upstreamScaling: options.upstreamScaling ?? false,
    dtype: options.dtype ?? null, seed: options.seed ?? 0, format: options.format ?? "fp",
  };
}

const SETTINGS_FILE = "loftq_settings.json";
export const FRAGMENT_FILE = "loftq_fragment.json";

/**
 * `--shard i/N`: this process computes targets i−1, i−1+N, … (in checkpoint order) and writes a
 * fragment (their matrices); `mergeFragments` assembles the checkpoint from all N fragments.
 */
export interface ShardSpec {
  index: number;
  count: number;
}

export function parseShard(spec: string): ShardSpec {
  const match = /^(\d+)\/(\d+)$/.exec(spec);
  const index = match ? Number(match[1]) : NaN;
  const count = match ? Number(match[2]) : NaN;
  if (!(Number.isSafeInteger(count) && count >= 1 && index >= 1 && index <= count)) throw new InvalidArgumentError(`--shard must be i/N with 1 ≤ i ≤ N, got "${spec}"`);
  return { index, count };
}

const QUANTIZE_CHECKPOINT_OPTION_KEYS = optionKeysOf<QuantizeCheckpointOptions & { resume?: boolean; shard?: ShardSpec }>()([
  "input", "output", "bits", "mixed", "bitsMap", "rank", "iterations", "quantizer", "blockSize", "target", "loraAlpha", "upstreamScaling",
  "dtype", "seed", "force", "format", "backend", "onEvent", "resume", "shard",
]);

export function quantizeCheckpoint(options: QuantizeCheckpointOptions & { resume?: boolean; shard?: ShardSpec }): QuantizeCheckpointResult {
  const started = Date.now();
  checkOptionKeys(options, QUANTIZE_CHECKPOINT_OPTION_KEYS, "quantizeCheckpoint", false);
  for (const flag of ["mixed", "upstreamScaling", "force", "resume"] as const) checkOptionalBoolean(options[flag], flag);
  checkOptionalFunction(options.onEvent, "onEvent");
  for (const path of ["input", "output"] as const) {
    if (typeof options[path] !== "string" || options[path] === "") throw new InvalidArgumentError(`quantizeCheckpoint: ${path} must be a path, got ${typeof options[path]}`);
  }
  const settings = settingsOf(options);
  checkBitsOption(settings.bits, settings.quantizer, settings.mixed);
  // What each matrix's loftq() would refuse, refused before the first one (the rank is checked per matrix).
  checkIterations(settings.iterations);
  if (settings.loraAlpha !== null) loraScaling(settings.loraAlpha, settings.rank, false, !settings.upstreamScaling);
  const output = outputPath(options.output);
  const input = resolve(options.input);
  checkOutputPlace(input, output);
  // Before the lock, which creates --out's parent: a mistyped input path leaves nothing behind.
  checkCheckpointDir(input);
  const partial = `${output}.partial`;
  const lock = acquireOutputLock(output);
  try {
    const tracked = { ...options, onEvent: (event: PipelineEvent) => (lock.refresh(), options.onEvent?.(event)) };
    // Checked under the lock, so no other run can publish in between. With --resume an --out that
    // this very run already finished is fine (checked below, once the input's fingerprint is known):
    // a retried job array re-runs its finished shards too.
    const occupied = outputOccupied(output);
    if (occupied) checkReplaceable(output);
    if (occupied && !options.force && !options.resume) throw new OutputExistsError(output);
    return withCheckpoint(input, (checkpoint) => {
      checkInputFilesOutside(checkpoint, output);
      checkNotQuantized(checkpoint);
      const targets = planTargets(checkpoint, settings);
      const mine = options.shard ? targets.filter((_, i) => i % options.shard!.count === options.shard!.index - 1) : targets;
      // The shard spec too: a whole run's .partial resumed as a fragment (or the reverse) must be refused.
      const shardSpec = options.shard ? { shard: `${options.shard.index}/${options.shard.count}` } : {};
      const inputFiles = inputFingerprint(checkpoint);
      const settingsText = JSON.stringify({ input, inputFiles, settings, ...shardSpec }, null, 2) + "\n";
      if (occupied && options.resume && !options.force) {
        const reports = finishedReports(output, { inputFiles, settings, ...shardSpec }, mine);
        if (!reports) {
          const why = recordsNoFingerprint(output)
            ? "it was made by an older loftq, whose manifest does not record the input files, so it cannot be recognised as finished; pass --force to compute it again"
            : "it is not an output finished with these settings and input files, so there is nothing to resume; pass --force to replace it, or another --out";
          throw new OutputExistsError(output, why);
        }
        tracked.onEvent({ type: "done", output, seconds: (Date.now() - started) / 1000, matrices: reports.length, alreadyComplete: true });
        return { output, reports };
      }
      const resuming = options.resume === true && existsSync(join(partial, SETTINGS_FILE));
      const selection = { target: settings.target, bits: settings.bits, ...(settings.bitsMap ? { bitsMap: settings.bitsMap } : {}) };
      const unmatched = unmatchedSelectors(targets, selection, peftModulePrefix(checkpoint.config, checkpoint.tensors.map((t) => t.name)));
      // Killed between the last write and the rename (or the rename failed): the .partial is the finished
      // output (its manifest, written last, matches this run), so it is published rather than computed again.
      const finishedPartial = options.resume === true && !options.shard ? finishedReports(partial, { inputFiles, settings }, mine) : undefined;
      if (!finishedPartial && resuming && readFileSync(join(partial, SETTINGS_FILE), "utf8") !== settingsText) {
        throw new InvalidArgumentError(`${partial} was started with other settings or another input, or the input's files changed since; run without --resume to start over`);
      }
      tracked.onEvent({ type: "plan", matrices: mine.length, shards: checkpoint.shardNames.length, tensors: checkpoint.tensors.length, unmatched, warnings: [...configWarnings(checkpoint, targets, settings), ...replacedLeftovers(output)] });
      if (finishedPartial) {
        rmSync(join(partial, STORE_DIR), { recursive: true, force: true });
        rmSync(join(partial, SETTINGS_FILE), { force: true });
        return publish(partial, output, finishedPartial, started, tracked.onEvent, () => lock.refresh(), QUANTIZE_RETRY);
      }
      return removeOnError(partial, () => {
        if (!resuming) {
          rmSync(partial, { recursive: true, force: true });
          mkdirSync(partial, { recursive: true });
          writeFileDurably(join(partial, SETTINGS_FILE), settingsText);
        }
        // A kill leaves a resumable .partial (finished matrices in its store); an error removes it.
        const store = join(partial, STORE_DIR);
        if (resuming && !options.shard) reconcileAssembly(checkpoint, targets, store, partial, settings);
        const reports = computeMatrices(checkpoint, mine, store, settings, tracked);
        if (options.shard) {
          writeFileDurably(join(partial, FRAGMENT_FILE), JSON.stringify({ shard: `${options.shard.index}/${options.shard.count}`, modules: mine.map((t) => t.module) }, null, 2) + "\n");
        } else {
          assemble(checkpoint, targets, [store], partial, output, settings, inputFiles, { consumeStore: true, onEvent: tracked.onEvent, ...(options.backend ? { backend: options.backend } : {}) });
          rmSync(store, { recursive: true, force: true });
          rmSync(join(partial, SETTINGS_FILE));
        }
        return publish(partial, output, reports, started, tracked.onEvent, () => lock.refresh(), QUANTIZE_RETRY);
      }, true);
    });
  } finally {
    lock.release();
  }
}

/** Whether --out is a finished output from before manifests recorded the input's fingerprint. */
function recordsNoFingerprint(output: string): boolean {
  try {
    const recorded = readJsonFile(join(output, MANIFEST_FILE)) as Record<string, unknown>;
    return typeof recorded === "object" && recorded !== null && !("inputFiles" in recorded);
  } catch {
    return false;
  }
}

/** Runs `work` on the opened checkpoint, closed however it ends. */
function withCheckpoint<T>(input: string, work: (checkpoint: Checkpoint) => T): T {
  const checkpoint = openCheckpoint(input);
  try {
    return work(checkpoint);
  } finally {
    checkpoint.close();
  }
}

/**
 * The reports of an --out finished earlier by a run with these very settings and input files, or
 * undefined when it is anything else. A fragment is compared by its recorded settings, a whole run by
 * its manifest; the input's path may differ (a retried shard on a machine with its own copy).
 */
function finishedReports(output: string, expected: { inputFiles: InputFile[]; settings: Settings; shard?: string }, mine: readonly TargetMatrix[]): MatrixReport[] | undefined {
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  try {
    if (expected.shard !== undefined) {
      if (!existsSync(join(output, FRAGMENT_FILE))) return undefined;
      const recorded = readFragmentSettings(output) as { inputFiles?: unknown; settings: unknown; shard?: unknown };
      if (recorded.shard !== expected.shard || !same(recorded.inputFiles, expected.inputFiles) || !same(recorded.settings, expected.settings)) return undefined;
      const store = join(output, STORE_DIR);
      if (!mine.every((t) => hasMatrix(store, t.module))) return undefined;
      return mine.map((t) => storedReport(store, t, expected.settings));
    }
    const recorded = readJsonFile(join(output, MANIFEST_FILE)) as { inputFiles?: unknown; settings?: unknown };
    if (!same(recorded.inputFiles, expected.inputFiles) || !same(recorded.settings, manifestSettings(expected.settings))) return undefined;
    const report = readJsonFile(join(output, REPORT_FILE)) as { matrices?: unknown };
    // The report is what the caller prints: whole, and one entry per target of this run.
    checkReportMatrices(report.matrices, REPORT_FILE);
    const matrices = report.matrices as MatrixReport[];
    const matches = (m: MatrixReport, t: TargetMatrix) => m.module === t.module && m.tensor === t.tensor && m.shape[0] === t.rows && m.shape[1] === t.cols && m.bits === t.bits;
    return matrices.length === mine.length && matrices.every((m, i) => matches(m, mine[i]!)) ? matrices : undefined;
  } catch {
    return undefined;
  }
}

/** What a fragment recorded of its run, checked for the shape we write (fragments come from other machines). */
function readFragmentSettings(dir: string): { input: string; inputFiles?: InputFile[]; settings: Settings } {
  const path = join(dir, SETTINGS_FILE);
  if (!existsSync(path) || !existsSync(join(dir, FRAGMENT_FILE))) throw new InvalidArgumentError(`${dir} is not a finished --shard fragment`);
  const broken = (why: string) => new InvalidArgumentError(`${path}: ${why}; this fragment is damaged, run its shard again`);
  let recorded: unknown;
  try {
    recorded = readJsonFile(path);
  } catch (error) {
    if (error instanceof CheckpointError) throw broken(error.message);
    throw error;
  }
  const flat = (value: unknown) => typeof value === "object" && value !== null && !Array.isArray(value) && Object.values(value).every((v) => v === null || typeof v !== "object");
  const { input, inputFiles, settings } = (typeof recorded === "object" && recorded !== null ? recorded : {}) as Record<string, unknown>;
  if (typeof input !== "string" || !flat(settings)) throw broken("not the settings of a loftq run");
  // Each setting of the type a run records (null for the optional ones): the merge plans with them.
  const defaults = settingsOf({ input: "", output: "" });
  const optional: Record<string, string> = { bitsMap: "string", loraAlpha: "number", dtype: "string" };
  for (const [key, fallback] of Object.entries(defaults)) {
    const value = (settings as Record<string, unknown>)[key];
    const type = fallback === null ? optional[key] : typeof fallback;
    if (!(value === null && fallback === null) && typeof value !== type) throw broken(`its setting ${key} is ${jsonPreview(value)}, not a ${type}`);
  }
  if (inputFiles !== undefined && !(Array.isArray(inputFiles) && inputFiles.every(flat))) throw broken("its input file list is malformed");
  return recorded as { input: string; inputFiles?: InputFile[]; settings: Settings };
}

/**
 * `loftq merge`: the checkpoint assembled from the fragments of every `--shard i/N` run (same
 * input, same settings), byte-identical to a single unsharded run.
 */
export interface MergeFragmentsOptions {
  input: string;
  output: string;
  fragments: string[];
  force?: boolean;
  onEvent?: (event: PipelineEvent) => void;
}

const MERGE_FRAGMENTS_OPTION_KEYS = optionKeysOf<MergeFragmentsOptions>()(["input", "output", "fragments", "force", "onEvent"]);

export function mergeFragments(options: MergeFragmentsOptions): QuantizeCheckpointResult {
  const started = Date.now();
  checkOptionKeys(options, MERGE_FRAGMENTS_OPTION_KEYS, "mergeFragments", false);
  checkOptionalBoolean(options.force, "force");
  checkOptionalFunction(options.onEvent, "onEvent");
  for (const path of ["input", "output"] as const) {
    if (typeof options[path] !== "string" || options[path] === "") throw new InvalidArgumentError(`mergeFragments: ${path} must be a path, got ${typeof options[path]}`);
  }
  if (!Array.isArray(options.fragments) || options.fragments.length === 0 || !options.fragments.every((f) => typeof f === "string" && f !== "")) {
    throw new InvalidArgumentError("mergeFragments: fragments must be a non-empty array of paths");
  }
  const output = outputPath(options.output);
  const input = resolve(options.input);
  checkOutputPlace(input, output);
  // Shards may run on machines with their own copy of the model, at any path: the same settings and
  // input contents (their fingerprint) are what must agree; fragments from before the fingerprint
  // carry none, and are held to one input path instead.
  for (const fragment of options.fragments) {
    if (isOrLiesIn(fragment, output) || isOrLiesIn(output, fragment)) throw new InvalidArgumentError(`the fragment ${fragment} is, contains or lies in --out ${output}, which the merge would replace`);
  }
  const recordedAll = options.fragments.map(readFragmentSettings);
  const inputOf = (r: (typeof recordedAll)[number]) => r.inputFiles ?? r.input;
  if (new Set(recordedAll.map((r) => JSON.stringify({ inputs: inputOf(r), settings: r.settings }))).size !== 1) {
    throw new InvalidArgumentError("the fragments were made with different settings or input files");
  }
  const recorded = recordedAll[0]!;
  if (!recorded.inputFiles && recorded.input !== input) throw new InvalidArgumentError(`the fragments were made from ${recorded.input}, not ${input}`);
  checkCheckpointDir(input);
  const lock = acquireOutputLock(output);
  try {
    const onEvent = (event: PipelineEvent) => (lock.refresh(), options.onEvent?.(event));
    const partial = `${output}.partial`;
    const occupied = outputOccupied(output);
    if (occupied) checkReplaceable(output);
    if (occupied && !options.force) throw new OutputExistsError(output);
    return withCheckpoint(input, (checkpoint) => {
      checkInputFilesOutside(checkpoint, output);
      const inputFiles = inputFingerprint(checkpoint);
      if (recorded.inputFiles && JSON.stringify(recorded.inputFiles) !== JSON.stringify(inputFiles)) {
        throw new InvalidArgumentError(`the files of ${input} differ from those the fragments were made from; run the shards again`);
      }
      return removeOnError(partial, () => mergeInto(checkpoint, partial, output, options.fragments, recorded.settings, inputFiles, started, onEvent, () => lock.refresh()));
    });
  } finally {
    lock.release();
  }
}

function mergeInto(
  checkpoint: Checkpoint, partial: string, output: string, fragments: string[], settings: Settings, inputFiles: InputFile[], started: number,
  onEvent: (event: PipelineEvent) => void, stillOurs: () => void,
): QuantizeCheckpointResult {
  const targets = planTargets(checkpoint, settings);
  const stores = fragments.map((dir) => join(dir, STORE_DIR));
  const missing = targets.filter((t) => !stores.some((store) => hasMatrix(store, t.module)));
  if (missing.length > 0) throw new InvalidArgumentError(`${missing.length} matrices are in no fragment (first: ${missing[0]!.module}); is a shard missing?`);
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  const reports = assemble(checkpoint, targets, stores, partial, output, settings, inputFiles, { onEvent });
  return publish(partial, output, reports, started, onEvent, stillOurs, "run the merge again (it only reads the fragments)");
}

/**
 * Runs `work`; an error removes the `.partial` (only a kill leaves one behind, to resume), except a
 * full disk when `resumable`: then the finished matrices stay for `--resume` once space is freed.
 */
function removeOnError<T>(partial: string, work: () => T, resumable = false): T {
  try {
    return work();
  } catch (error) {
    // The run that took our lock over owns the .partial now; a finished one that could not be renamed stays.
    if (error instanceof OutputLockLostError || error instanceof PublishError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    const diskFull = error instanceof DiskFullError || code === "ENOSPC" || code === "EDQUOT";
    if (resumable && diskFull && existsSync(join(partial, SETTINGS_FILE))) {
      const finished = existsSync(join(partial, STORE_DIR)) ? readdirSync(join(partial, STORE_DIR)).filter((f) => f.endsWith(".safetensors")).length : 0;
      throw new DiskFullError(`${(error as Error).message}; the ${finished} finished matrices are kept in ${partial}: free space and rerun with --resume`);
    }
    rmSync(partial, { recursive: true, force: true });
    throw error;
  }
}

type Settings = ReturnType<typeof settingsOf>;

/** One input file as a settings file records it: its size and a digest of sampled content. */
interface InputFile {
  file: string;
  bytes: number;
  sample: string;
}

/** Content the input fingerprint reads per file: FINGERPRINT_SAMPLES pieces of FINGERPRINT_PIECE bytes. */
export const FINGERPRINT_SAMPLES = 16;
export const FINGERPRINT_PIECE = 64 * 1024;

/**
 * Every file the run reads (config, index, shards) by size and the SHA-256 of evenly spaced pieces of
 * its content (all of it when small; ~1 MiB read per shard): a resume or a merge must not mix matrices
 * computed from weights that have since been replaced (another revision or fine-tune has the same
 * sizes), while a copy of the same files, on another machine or without preserved times, matches.
 */
function inputFingerprint(checkpoint: Checkpoint): InputFile[] {
  const files = ["config.json", INDEX_FILE, ...checkpoint.shardNames].filter((file, i, all) => all.indexOf(file) === i);
  return files.filter((file) => existsSync(join(checkpoint.dir, file))).map((file) => {
    const path = join(checkpoint.dir, file);
    const bytes = statSync(path).size;
    const hash = createHash("sha256");
    if (bytes <= FINGERPRINT_SAMPLES * FINGERPRINT_PIECE) {
      hash.update(readFileSync(path));
    } else {
      const fd = openSync(path, "r");
      try {
        const piece = Buffer.alloc(FINGERPRINT_PIECE);
        for (let k = 0; k < FINGERPRINT_SAMPLES; k++) {
          const offset = Math.floor(((bytes - FINGERPRINT_PIECE) * k) / (FINGERPRINT_SAMPLES - 1));
          hash.update(piece.subarray(0, readSync(fd, piece, 0, FINGERPRINT_PIECE, offset)));
        }
      } finally {
        closeSync(fd);
      }
    }
    return { file, bytes, sample: hash.digest("hex") };
  });
}

/**
 * Inputs are never written to, and a non-empty output is only replaced with `force`. The output and
 * its `.partial` are both removed whole at some point, so neither may be, contain or lie inside the
 * input directory (`--out ..`, or a link to the output, would otherwise delete the model being read).
 */
/** --out and its .partial must not be, contain or lie inside the input; a file there is a mistake, never replaced. */
function checkOutputPlace(input: string, output: string): void {
  for (const [what, path] of [["--out", output], ["--out's .partial", `${output}.partial`]] as const) {
    if (isOrLiesIn(path, input) || isOrLiesIn(input, path)) {
      throw new InvalidArgumentError(`${what} (${path}) must not be, contain or lie inside the input directory ${input} (inputs are never modified)`);
    }
  }
  // A file named as --out is a mistake (a model file?), never something to replace with a directory.
  if (existsSync(output) && !statSync(output).isDirectory()) throw new InvalidArgumentError(`--out ${output} is a file, not a directory`);
  // The output is written to <out>.partial beside --out and renamed onto it, which a mount point (a
  // container volume) refuses: found now, not after the work.
  if (isMountPoint(output)) {
    throw new InvalidArgumentError(`--out ${output} is a mount point: the output is written beside it and renamed into place, which a mount point cannot be; give a directory inside it`);
  }
  // The names beside --out (its .partial, .lock, and the .replaced-<pid> an old output is moved to) must
  // fit the file system's 255-byte limit, or publishing fails after all the work.
  const longest = `${basename(output)}.replaced-${"9".repeat(10)}`;
  if (Buffer.byteLength(longest) > MAX_FILE_NAME_BYTES) {
    throw new InvalidArgumentError(`--out's name ${jsonPreview(basename(output))} is too long: "${basename(output)}.replaced-<pid>" must fit in ${MAX_FILE_NAME_BYTES} bytes`);
  }
}

/**
 * Whether `path` is a mount point, bind mounts of a directory of the same file system included (Docker
 * volumes, Kubernetes subPath): on Linux the mount visible at that path in /proc/self/mountinfo's tree
 * (a btrfs subvolume has its own device number but renames like any directory), elsewhere another
 * device than its parent's.
 */
function isMountPoint(path: string): boolean {
  if (!existsSync(path)) return false;
  const deviceDiffers = () => statSync(path).dev !== statSync(dirname(path)).dev;
  let table: string;
  try {
    table = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return deviceDiffers(); // not Linux
  }
  // Fields: mount id, parent id, major:minor, root, mount point (space, tab, newline, backslash octal-escaped).
  const unescape = (field: string) => field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
  const mounts = table.split("\n").filter(Boolean).map((line) => {
    const fields = line.split(" ");
    return { id: fields[0]!, parent: fields[1]!, point: unescape(fields[4] ?? "") };
  });
  const ids = new Set(mounts.map((m) => m.id));
  let current = mounts.find((m) => !ids.has(m.parent) && m.point === "/");
  if (!current) return deviceDiffers();
  const real = realpathSync(path);
  const covers = (point: string) => point === real || real.startsWith(point === "/" ? "/" : `${point}/`);
  // Walk down the tree along the path: at each mount, into the child mounted nearest above the path (a
  // child at the same point is stacked over it and hides it, with everything mounted below it before).
  for (;;) {
    const parent: string = current.id;
    const children = mounts.filter((m) => m.parent === parent && covers(m.point));
    if (children.length === 0) break;
    const nearest = Math.min(...children.map((m) => m.point.length));
    current = children.filter((m) => m.point.length === nearest).at(-1)!;
  }
  return current.point === real;
}

/** The longest file name Linux, macOS and Windows file systems take (bytes of UTF-8, or UTF-16 units). */
const MAX_FILE_NAME_BYTES = 255;

/**
 * A checkpoint whose config.json has a quantization_config holds someone's quantized codes (bitsandbytes'
 * U8, GPTQ's I32, FP8), or, rarely, full-precision weights under a stray config that the copied
 * config.json would then impose on the backbone: either way not a start for LoftQ. Checked before the
 * targets are planned, whose "matches no 2-D F32, F16 or BF16 weight" would hide the reason.
 */
function checkNotQuantized(checkpoint: Checkpoint): void {
  const quantization = checkpoint.config?.quantization_config;
  if (quantization === undefined || quantization === null) return;
  const method = typeof quantization === "object" ? (quantization as { quant_method?: unknown }).quant_method : undefined;
  throw new InvalidArgumentError(
    `${join(checkpoint.dir, "config.json")} has a quantization_config${typeof method === "string" ? ` (quant_method ${jsonPreview(method)})` : ""}: ` +
      "the model is already quantized, and LoftQ starts from the full-precision weights; use the original model " +
      "(if these weights are in fact full precision, give a directory whose config.json has no quantization_config)",
  );
}

/**
 * The input's files themselves (shards, index, config and the files copied) must not lie in --out or
 * its .partial: a model directory of links into an earlier output (or the --out itself) would lose
 * its weights when --force replaced that output.
 */
function checkInputFilesOutside(checkpoint: Checkpoint, output: string): void {
  const read = [...checkpoint.shardNames, INDEX_FILE, ...filesToCopy(checkpoint.dir)];
  for (const file of read) {
    const path = join(checkpoint.dir, file);
    if (!existsSync(path)) continue;
    for (const place of [output, `${output}.partial`]) {
      if (isOrLiesIn(path, place)) throw new InvalidArgumentError(`the input file ${path} is, or links to, a file in ${place}, which this run would replace (inputs are never modified)`);
    }
  }
}

/**
 * Runs LoftQ on a target, a NaN named by its place in the stored tensor: a GPT-2 Conv1D weight is
 * stored (in, out) and transposed for LoftQ, whose error would give the transposed row and column.
 */
function namedAsStored<T>(target: TargetMatrix, work: () => T): T {
  try {
    return work();
  } catch (error) {
    if (target.transposed && error instanceof NonFiniteError) throw new NonFiniteError(target.tensor, error.col, error.row, error.value);
    throw error;
  }
}

/**
 * --out as an absolute path; a symbolic link to a directory stands for that directory (the output is
 * written beside the target and renamed onto it: renaming onto the link would replace the link).
 */
function outputPath(path: string): string {
  const absolute = resolve(path);
  const stats = lstatSync(absolute, { throwIfNoEntry: false });
  if (!stats?.isSymbolicLink()) return absolute;
  if (!existsSync(absolute)) throw new InvalidArgumentError(`--out ${absolute} is a link to nothing (${readlinkSync(absolute)})`);
  return realpathSync(absolute);
}

/**
 * --force replaces an earlier loftq output, never any other directory: a mistyped --out (a home
 * directory, a dataset) would otherwise be deleted with everything in it.
 */
function checkReplaceable(output: string): void {
  if (existsSync(join(output, MANIFEST_FILE)) || existsSync(join(output, FRAGMENT_FILE))) return;
  const entries = readdirSync(output);
  throw new OutputExistsError(output, `it is not a loftq output (no ${MANIFEST_FILE} or ${FRAGMENT_FILE}; it holds ${entries.slice(0, 3).map((e) => jsonPreview(e)).join(", ")}${entries.length > 3 ? ", …" : ""}), and --force replaces only loftq outputs: empty it or choose another --out`);
}

/** Whether --out holds anything (a run then needs --force, or --resume on its own finished output). */
function outputOccupied(output: string): boolean {
  return existsSync(output) && readdirSync(output).length > 0;
}

/**
 * Whether `path` (which need not exist) is the directory `dir` or lies inside it. Compared by file
 * identity (device and inode of `path`'s nearest existing ancestor and each one above it, links
 * resolved), so symbolic links, bind mounts and case-insensitive file systems (`Model` and `model`)
 * cannot disguise the input.
 */
function isOrLiesIn(path: string, dir: string): boolean {
  if (!existsSync(dir)) return false;
  const target = statSync(dir);
  let current = resolve(path);
  while (!existsSync(current)) {
    const parent = dirname(current);
    if (parent === current) return false;
    current = parent;
  }
  for (current = realpathSync(current); ; current = dirname(current)) {
    const here = statSync(current);
    if (here.dev === target.dev && here.ino === target.ino) return true;
    if (dirname(current) === current) return false;
  }
}

/** The finished `.partial` takes the output's place in one rename. */
/** `stillOurs` throws when the output's lock is no longer this run's: then nothing is renamed. */
/** Makes the entries of an output directory and of its subdirectories (adapter, bnb-4bit, store) durable. */
function syncOutputDirectories(dir: string): void {
  for (const sub of [dir, ...readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name))]) syncDirectory(sub);
}

function publish(partial: string, output: string, reports: MatrixReport[], started: number, onEvent: ((event: PipelineEvent) => void) | undefined, stillOurs: () => void, retry: string): QuantizeCheckpointResult {
  // The files inside were fsynced (a fragment's matrix store too, entry by entry); their directory
  // entries too, then the rename itself.
  syncOutputDirectories(partial);
  stillOurs();
  // --force: the old output moves aside and is removed only once the new one is in place, so a removal
  // that fails half-way (a read-only subdirectory) loses neither of them.
  // lstat, not exists: a link to nothing at --out is replaced too (exists follows it and says no).
  const replaced = lstatSync(output, { throwIfNoEntry: false }) ? `${output}.replaced-${process.pid}` : undefined;
  // Any rename failing here (a mount point, an immutable directory) keeps the finished .partial.
  let movedAside = false;
  try {
    if (replaced) {
      rmSync(replaced, { recursive: true, force: true });
      renameSync(output, replaced);
      movedAside = true;
    }
    renameSync(partial, output);
  } catch (error) {
    let where = "";
    try {
      if (movedAside) renameSync(replaced!, output);
    } catch {
      where = `; the earlier output is in ${replaced}`;
    }
    throw new PublishError(partial, output, error as Error, `${retry}${where}`);
  }
  syncDirectory(dirname(output));
  let leftover: string | undefined;
  try {
    if (replaced) rmSync(replaced, { recursive: true, force: true });
  } catch (error) {
    leftover = `${replaced}: the replaced output could not be removed (${(error as Error).message})`;
  }
  onEvent?.({ type: "done", output, seconds: (Date.now() - started) / 1000, matrices: reports.length, ...(leftover ? { leftover } : {}) });
  return { output, reports };
}

function planTargets(checkpoint: Checkpoint, settings: Settings): TargetMatrix[] {
  const targets = selectTargets(checkpoint.tensors, checkpoint.config, {
    target: settings.target,
    bits: settings.bits,
    ...(settings.bitsMap ? { bitsMap: settings.bitsMap } : {}),
    ...(settings.mixed ? { mixed: true } : {}),
  });
  checkSeed(settings.seed, "--seed");
  // Every bit width the plan uses must exist for the quantizer before the first matrix is computed
  // (a --bits-map rule "=5" with NF failed only when its first matrix came up).
  for (const bits of new Set(targets.map((t) => t.bits))) createQuantizer({ kind: settings.quantizer, bits, blockSize: settings.blockSize });
  for (const t of targets) {
    if (!Number.isInteger(settings.rank) || settings.rank < 1 || settings.rank > Math.min(t.rows, t.cols)) {
      throw new InvalidArgumentError(`--rank ${settings.rank} does not fit ${t.module} (${t.rows}×${t.cols})`);
    }
    if (settings.format === "bnb4" && /(?:^|\.)lm_head$/.test(t.module)) {
      throw new InvalidArgumentError(`--format bnb4 cannot hold ${t.module} in 4 bits: transformers keeps lm_head unquantized when it loads the checkpoint`);
    }
    if (settings.format === "bnb4" && (t.bits !== 4 || !["nf", "bnb-nf4"].includes(settings.quantizer) || settings.blockSize !== 64)) {
      throw new InvalidArgumentError(`--format bnb4 needs every target at NF4 with block 64 (${t.module} is ${t.bits}-bit ${settings.quantizer}, block ${settings.blockSize}); 2/3/8-bit backbones stay fake-quantized`);
    }
  }
  return targets;
}

/**
 * Bytes per value of the largest target that the pipeline's own buffers take (two prefetch slots in
 * float32, one of which then holds Q; Q's 16-bit bytes; the codes' byte), and how many of those may go
 * into backend memory. The WebAssembly
 * backends share one memory of at most 4 GiB with LoftQ's working set (~5 more bytes per value), so a
 * 70B model's 28672×8192 matrices keep these buffers outside it, as before (LoftQ then copies W in and
 * Q out), while 7B–13B models get them in place.
 */
export const PIPELINE_BYTES_PER_VALUE = 11;
/** More bytes per value when targets are stored transposed (GPT-2's Conv1D): W and Q are turned round in one more buffer. */
export const TRANSPOSED_TARGET_BYTES_PER_VALUE = 4;
export const PIPELINE_BACKEND_BUDGET_BYTES = 2 ** 31;

/** Whether the pipeline's buffers for a largest target of `values` values go into backend memory. */
export function pipelineBuffersInBackend(values: number, transposedTargets = false): boolean {
  return values * (PIPELINE_BYTES_PER_VALUE + (transposedTargets ? TRANSPOSED_TARGET_BYTES_PER_VALUE : 0)) <= PIPELINE_BACKEND_BUDGET_BYTES;
}

/** Runs LoftQ on every target not yet in the store, one at a time, saving each as it finishes. */
function computeMatrices(checkpoint: Checkpoint, targets: readonly TargetMatrix[], store: string, settings: Settings, options: QuantizeCheckpointOptions): MatrixReport[] {
  const reports: MatrixReport[] = [];
  const pending = targets.filter((t) => !keepIfValid(store, t, settings));
  if (pending.length === 0) return targets.map((target, index) => reportStored(store, target, index, targets.length, options, settings));
  const backend = resolveBackend(options.backend);
  // W, Q, Q's 16-bit bytes and its codes go through buffers sized for the largest target and reused for
  // every matrix: W through the prefetcher's two slots (or one slot of its own when only one matrix is
  // left to compute), Q over W in its slot. Fresh arrays of that size cost more in page faults than
  // decoding or encoding them. Where the backend's memory is shared and has room, they lie there:
  // LoftQ then reads W and writes Q and the codes in place (three copies fewer per matrix), and the
  // bf16 encoding kernel writes the bytes in place. (The codes are not saved: the backbone stores Q.)
  // Targets stored transposed (in, out) are turned round on the backend into one more reused buffer
  // for LoftQ, and Q back into W's slot (a JS transpose into fresh arrays took ~0.35 s each at 2048×8192).
  const largest = Math.max(0, ...targets.map((t) => t.rows * t.cols));
  const anyTransposed = targets.some((t) => t.transposed);
  const inBackend = pipelineBuffersInBackend(largest, anyTransposed);
  const fromBackend: Float32Array[] = [];
  /** `floats` values in backend memory when it is shared (and `inBackend`), else in a fresh SharedArrayBuffer. */
  const sharedBuffer = (floats: number): Float32Array => {
    if (inBackend) {
      const buffer = backend.allocate(floats, false);
      if (buffer.buffer instanceof SharedArrayBuffer) {
        fromBackend.push(buffer);
        return buffer;
      }
      backend.release(buffer);
    }
    return new Float32Array(new SharedArrayBuffer(4 * Math.max(1, floats)));
  };
  let buffers: { bytes: Uint8Array; codes: Uint8Array; transposed?: Float32Array } | undefined;
  let prefetcher: ReturnType<typeof createTensorPrefetcher> | undefined;
  const readOf = (target: TargetMatrix): TensorRead => {
    const info = checkpoint.tensors.find((t) => t.name === target.tensor)!;
    const file = checkpoint.files.get(info.shard)!;
    if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16") {
      throw new InvalidArgumentError(`${target.tensor} is ${info.dtype}, not a float type (F32, F16, BF16)`);
    }
    return { path: file.path, position: file.header.dataStart + info.begin, dtype: info.dtype, count: target.rows * target.cols };
  };
  let requested = 0;
  let unprefetched: Float32Array | undefined;
  const nextWeight = (): Float32Array => {
    if (!prefetcher) {
      // One matrix to compute: read on this thread, into backend memory all the same (LoftQ uses it in place).
      const target = pending[requested++]!;
      unprefetched ??= sharedBuffer(largest);
      return checkpoint.readFloat32(target.tensor, unprefetched.subarray(0, target.rows * target.cols));
    }
    if (requested === 0) prefetcher.request(readOf(pending[requested++]!));
    if (requested < pending.length) prefetcher.request(readOf(pending[requested++]!));
    return prefetcher.take();
  };
  let slotsFree = true;
  // Each finished entry is fsynced and renamed into place on another thread while the next matrix runs.
  const publisher = createBackgroundPublisher();
  try {
    // The next weight is read and widened on a worker thread while LoftQ runs on this one.
    if (pending.length > 1) prefetcher = createTensorPrefetcher(largest, [sharedBuffer(largest), sharedBuffer(largest)]);
    targets.forEach((target, index) => {
      const total = targets.length;
      if (hasMatrix(store, target.module)) {
        reports.push(reportStored(store, target, index, total, options, settings));
        return;
      }
      const info = checkpoint.tensors.find((t) => t.name === target.tensor)!;
      if (!buffers) {
        const halves = sharedBuffer(Math.ceil(largest / 2));
        const quarters = sharedBuffer(Math.ceil(largest / 4));
        buffers = {
          bytes: new Uint8Array(halves.buffer, halves.byteOffset, 2 * largest),
          codes: new Uint8Array(quarters.buffer, quarters.byteOffset, largest),
          ...(anyTransposed ? { transposed: sharedBuffer(largest) } : {}),
        };
      }
      const size = target.rows * target.cols;
      const stored = nextWeight();
      const asStored: Matrix = { rows: info.shape[0]!, cols: info.shape[1]!, data: stored };
      const transposedSlot = buffers.transposed?.subarray(0, size);
      const weight: Matrix = target.transposed ? { rows: target.rows, cols: target.cols, data: transposeOnBackend(backend, asStored.data, asStored.rows, asStored.cols, transposedSlot!) } : asStored;
      options.onEvent?.({ type: "matrix-start", index, total, module: target.module, rows: target.rows, cols: target.cols, bits: target.bits });
      const matrixStarted = Date.now();
      // Q is written over W's own buffer (LoftQ reads W for the last time before it decodes Q).
      const output = weight.data;
      const codesOutput = buffers.codes.subarray(0, size);
      const result = namedAsStored(target, () => loftq(weight, {
        bits: target.bits,
        rank: settings.rank,
        iterations: settings.iterations,
        quantizer: settings.quantizer,
        blockSize: settings.blockSize,
        seed: settings.seed,
        name: target.tensor,
        output,
        codesOutput,
        ...(settings.loraAlpha !== null ? { loraAlpha: settings.loraAlpha } : {}),
        ...(settings.upstreamScaling ? { upstreamScaling: true } : {}),
        backend,
        onIteration: (r) =>
          options.onEvent?.({ type: "iteration", index, total, module: target.module, iteration: r.iteration, iterations: r.iterations, quantError: r.quantError, error: r.error }),
      }));
      const report: MatrixReport = {
        tensor: target.tensor,
        module: target.module,
        shape: [target.rows, target.cols],
        transposed: target.transposed,
        bits: target.bits,
        rank: settings.rank,
        qOnlyError: result.history[0]!.quantError,
        history: result.history,
        selectedIteration: result.selectedIteration,
        seconds: (Date.now() - matrixStarted) / 1000,
      };
      // A transposed target's Q goes back to the stored orientation in the slot W was read into.
      const q = target.transposed ? transposeOnBackend(backend, result.dequantized.data, target.rows, target.cols, stored) : result.dequantized.data;
      const qDtype = settings.dtype ?? info.dtype;
      saveMatrix(store, target.module, qDtype, info.shape, { q: encodeFloats(q, qDtype, buffers.bytes.subarray(0, 2 * size), backend, target.tensor), a: result.loraA, b: result.loraB, report }, publisher);
      reports.push(report);
      options.onEvent?.({ type: "matrix-done", index, total, report });
    });
    publisher.drain();
  } finally {
    // After a failure the entries already finished still reach the store, for --resume.
    publisher.close();
    if (prefetcher) slotsFree = prefetcher.close();
    // A slot a stuck read may still write into stays out of the backend's free list.
    if (slotsFree) for (const buffer of fromBackend) backend.release(buffer);
  }
  return reports;
}

/** The report of a matrix already in the store (a resumed run), announced as done. */
/**
 * A target's stored factors, their report checked against the target: store entries come from earlier
 * runs and from fragments made on other machines, and an entry copied in from another run (another
 * width, another matrix) must not merge silently into this one's files.
 */
function storedFactors(store: string, target: TargetMatrix, settings: Settings): ReturnType<typeof loadFactors> {
  const factors = loadFactors(store, target.module);
  checkStoredEntry(factors, target, settings);
  return factors;
}

/** A target's stored report, checked like storedFactors' but read from the entry's header alone. */
function storedReport(store: string, target: TargetMatrix, settings: Settings): MatrixReport {
  const entry = loadEntryHeader(store, target.module);
  checkStoredEntry(entry, target, settings);
  return entry.report;
}

/** Throws a CheckpointError unless the entry's report and factor shapes are those of `target` in this run. */
function checkStoredEntry(factors: StoredEntryHeader, target: TargetMatrix, settings: Settings): void {
  const where = `the stored entry of ${target.module}`;
  let report: ReportMatrix;
  try {
    [report] = checkReportMatrices([factors.report], where) as [ReportMatrix];
  } catch (error) {
    throw new CheckpointError(`${(error as Error).message.replace(": matrix 0 has", " has")}: a damaged store entry or fragment`);
  }
  if (factors.a.rows !== settings.rank || factors.a.cols !== target.cols || factors.b.rows !== target.rows) {
    throw new CheckpointError(`the stored factors of ${target.module} are ${factors.b.rows}×${factors.a.rows} and ${factors.a.rows}×${factors.a.cols}, not ${target.rows}×${settings.rank} and ${settings.rank}×${target.cols}: a damaged store entry or fragment`);
  }
  const stored = factors.report;
  if (report.module !== target.module || stored.tensor !== target.tensor || report.shape[0] !== target.rows || report.shape[1] !== target.cols || report.bits !== target.bits || report.rank !== settings.rank) {
    throw new CheckpointError(
      `${where} is a report of ${jsonPreview(stored.tensor)} (${report.shape.join("×")}, ${report.bits} bits, rank ${report.rank}), not of ${target.tensor} (${target.rows}×${target.cols}, ${target.bits} bits, rank ${settings.rank}): a damaged store entry or fragment`,
    );
  }
}

/**
 * Whether this run's own store holds a usable entry for `target`: one that cannot be read, or whose
 * report is not this target's, is removed and computed again (a fragment from elsewhere with such an
 * entry is an error instead: see storedFactors).
 */
function keepIfValid(store: string, target: TargetMatrix, settings: Settings): boolean {
  if (!hasMatrix(store, target.module)) return false;
  try {
    // Reading the header is the readability check too (an unreadable entry throws a LoftqError).
    storedReport(store, target, settings);
    return true;
  } catch (error) {
    if (!(error instanceof LoftqError)) throw error;
    removeMatrix(store, target.module);
    return false;
  }
}

function reportStored(store: string, target: TargetMatrix, index: number, total: number, options: QuantizeCheckpointOptions, settings: Settings): MatrixReport {
  const report = storedReport(store, target, settings);
  options.onEvent?.({ type: "matrix-done", index, total, report });
  return report;
}

/** A shard's own `__metadata__` as the output keeps it (format "pt", as transformers writes it). */
function shardMetadata(checkpoint: Checkpoint, file: string): Record<string, string> {
  return { ...checkpoint.files.get(file)!.header.metadata, format: "pt" };
}

/** The backbone's shards as the output will hold them: the input's layout, targets in the output dtype. */
function plannedShards(checkpoint: Checkpoint, byTensor: ReadonlyMap<string, TargetMatrix>, settings: Settings) {
  return checkpoint.shardNames.map((file) => ({
    file,
    metadata: shardMetadata(checkpoint, file),
    tensors: checkpoint.files.get(file)!.tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: byTensor.has(t.name) && settings.dtype ? settings.dtype : t.dtype })),
  }));
}

/**
 * Before a resumed run computes anything: a backbone shard left in `dir` by an assembly cut short is
 * kept only if it reads back as planned (header, size, names, dtypes, shapes), else removed; the
 * entries whose q was dropped for a shard that is not there (removed, or its rename lost in a power
 * cut) are removed too, to be computed again, as their q exists nowhere else.
 */
function reconcileAssembly(checkpoint: Checkpoint, targets: readonly TargetMatrix[], store: string, dir: string, settings: Settings): void {
  const byTensor = new Map(targets.map((t) => [t.tensor, t]));
  for (const shard of plannedShards(checkpoint, byTensor, settings)) {
    const path = join(dir, shard.file);
    if (existsSync(path) && !readsBackAs(path, shard.tensors)) rmSync(path);
    if (existsSync(path)) continue;
    for (const t of shard.tensors) {
      const target = byTensor.get(t.name);
      // (An unreadable entry is removed by keepIfReadable itself.)
      if (target && keepIfReadable(store, target.module) && !holdsBackboneWeight(store, target.module)) removeMatrix(store, target.module);
    }
  }
}

function readsBackAs(path: string, tensors: ReadonlyArray<{ name: string; dtype: string; shape: readonly number[] }>): boolean {
  let file: SafetensorsFile;
  try {
    file = SafetensorsFile.open(path);
  } catch (error) {
    if (error instanceof LoftqError) return false;
    throw error;
  }
  try {
    const found = new Map(file.tensors.map((t) => [t.name, t]));
    return found.size === tensors.length && tensors.every((t) => found.get(t.name)?.dtype === t.dtype && JSON.stringify(found.get(t.name)!.shape) === JSON.stringify(t.shape));
  } finally {
    file.close();
  }
}

/**
 * Writes the backbone shards, index, copied files, adapter, report and manifest into `dir`.
 * `consumeStore` (a run's own store, not a merge's fragments): once a shard is written, its targets'
 * entries drop their q, so the store does not hold a second copy of the backbone until the end (a
 * 70B model needed the input, the store and the output on disk at once: three copies, now two and a
 * shard); shards already in `dir` from an interrupted assembly are kept, as their q is gone.
 * Not with --format bnb4, whose export reads every q again after the backbone.
 */
function assemble(
  checkpoint: Checkpoint, targets: readonly TargetMatrix[], stores: readonly string[], dir: string, output: string, settings: Settings, inputFiles: InputFile[],
  options: { consumeStore?: boolean; onEvent?: (event: PipelineEvent) => void; backend?: KernelBackend | string } = {},
): MatrixReport[] {
  const storeOf = (module: string) => stores.find((store) => hasMatrix(store, module))!;
  const byTensor = new Map(targets.map((t) => [t.tensor, t]));
  const shards = plannedShards(checkpoint, byTensor, settings);
  const consume = options.consumeStore === true && settings.format !== "bnb4";
  let written = 0;
  writeShards(dir, shards, shardMetadata(checkpoint, checkpoint.shardNames[0]!), (tensor) => {
    const target = byTensor.get(tensor.name);
    return target ? streamBackboneWeight(storeOf(target.module), target.module) : checkpoint.streamBytes(tensor.name);
  }, checkpoint.sharded, {
    keep: (file) => consume && existsSync(join(dir, file)),
    done: (file, kept) => {
      if (consume) {
        // The shard's name must be on disk before its matrices' q is dropped (a rename lost in a
        // power cut would otherwise leave neither); reconcileAssembly handles what is left anyway.
        syncDirectory(dir);
        for (const t of checkpoint.files.get(file)!.tensors) {
          const target = byTensor.get(t.name);
          if (target) dropBackboneWeight(storeOf(target.module), target.module);
        }
      }
      options.onEvent?.({ type: "shard-written", file, written: ++written, shards: shards.length, kept });
    },
  });
  for (const file of filesToCopy(checkpoint.dir)) copyFileDurably(join(checkpoint.dir, file), join(dir, file));
  if (settings.format === "bnb4") writeBnb4(checkpoint, byTensor, storeOf, join(dir, BNB4_DIR), settings, resolveBackend(options.backend));
  // Factors only (r·(m + n) floats each): every q of a 7B model at once would be ~13 GB.
  const matrices = targets.map((t) => {
    return { target: t, ...storedFactors(storeOf(t.module), t, settings) };
  });
  writeAdapter(dir, output, matrices, settings, checkpoint.config, checkpoint.tensors.map((t) => t.name));
  const reports = matrices.map((m) => m.report);
  writeFileDurably(join(dir, REPORT_FILE), JSON.stringify({ matrices: reports }, null, 2) + "\n");
  // The manifest marks the .partial finished (--resume then only renames it): every entry before it must be durable.
  syncOutputDirectories(dir);
  writeFileDurably(join(dir, MANIFEST_FILE), JSON.stringify(manifest(settings, checkpoint, output, targets, inputFiles), null, 2) + "\n");
  return reports;
}

/**
 * The bytes of `values` in `dtype`; 16-bit encodings go into `scratch` (2 bytes per value). bf16 (what
 * Llama-family checkpoints store) is a backend kernel: ~0.1 s instead of ~0.7 s of main-thread JS per
 * 7B block.
 */
function encodeFloats(values: Float32Array, dtype: string, scratch: Uint8Array, backend: KernelBackend, what: string): Uint8Array {
  if (dtype === "F32") return float32Bytes(values);
  if (dtype === "F16") {
    // A plain loop: findIndex with a closure took ~0.4 s per 4096² matrix on Node 20, this ~85 ms.
    for (let i = 0; i < values.length; i++) {
      if (Math.abs(values[i]!) >= F16_OVERFLOW) throw new OutOfRangeError(`${what}: Q's value ${values[i]} (element ${i} in storage order) is beyond float16's range (±${F16_MAX}); write it as BF16 or F32 (--dtype)`);
    }
    return encodeHalf(values, "f16", scratch);
  }
  if (dtype === "BF16") {
    if (!backend.encodeBf16) return encodeHalf(values, "bf16", scratch);
    // Uint16 words are little-endian here, as the safetensors bytes must be (the float32 views assume it too).
    backend.encodeBf16(values, new Uint16Array(scratch.buffer, scratch.byteOffset, values.length));
    return scratch.subarray(0, 2 * values.length);
  }
  throw new InvalidArgumentError(`cannot write a quantized weight as ${dtype}`);
}

/** The cols×rows transpose of a rows×cols matrix (a target stored transposed), into `out`, on the backend's kernel. */
function transposeOnBackend(backend: KernelBackend, values: Float32Array, rows: number, cols: number, out: Float32Array): Float32Array {
  backend.transpose({ a: values, rows, cols, lda: cols, out });
  return out;
}

/** The bitsandbytes NF4 checkpoint beside the backbone: same shards, target weights replaced by their 4-bit state. */
function writeBnb4(checkpoint: Checkpoint, byTensor: Map<string, TargetMatrix>, storeOf: (module: string) => string, dir: string, settings: Settings, backend: KernelBackend): void {
  mkdirSync(dir, { recursive: true });
  let computeDtype = "float32";
  // Each Q is read back (and turned round when stored transposed) into buffers reused for every
  // target, in backend memory, and its codes into another: fresh arrays of a matrix's size cost more
  // in page faults than the quantization (~1 s per 4096×11008 target, against ~0.3 s). LoftQ's
  // working set (more than these 5–9 bytes per value) is free again by now.
  const largest = Math.max(0, ...[...byTensor.values()].map((t) => t.rows * t.cols));
  const anyTransposed = [...byTensor.values()].some((t) => t.transposed);
  const buffers: Float32Array[] = [];
  const inBackend = (floats: number) => {
    const buffer = backend.allocate(floats, false);
    buffers.push(buffer);
    return buffer;
  };
  // One shard at a time, so only that shard's 4-bit states are held in memory.
  function* shards(storedQ: Float32Array, turnedQ: Float32Array | undefined, codes: Uint8Array): Generator<ShardPlan> {
    for (const file of checkpoint.shardNames) {
      const quantized = new Map<string, Uint8Array>();
      const tensors: PlannedTensor[] = [];
      for (const t of checkpoint.files.get(file)!.tensors) {
        const target = byTensor.get(t.name);
        if (!target) {
          tensors.push({ name: t.name, dtype: t.dtype, shape: t.shape });
          continue;
        }
        const dtype = settings.dtype ?? t.dtype;
        computeDtype = torchDtypeName(dtype);
        const size = target.rows * target.cols;
        const stored = readBackboneWeight(storeOf(target.module), target.module, storedQ.subarray(0, size));
        // (t.shape is the stored (rows, cols): (in, out) for a transposed target.)
        const q: Matrix = { rows: target.rows, cols: target.cols, data: target.transposed ? transposeOnBackend(backend, stored, t.shape[0]!, t.shape[1]!, turnedQ!.subarray(0, size)) : stored };
        for (const tensor of bnb4Tensors(target.module, q, dtype, backend, codes.subarray(0, size))) {
          tensors.push(tensor);
          quantized.set(tensor.name, tensor.bytes);
        }
      }
      yield { file, tensors, metadata: shardMetadata(checkpoint, file), produce: (tensor) => quantized.get(tensor.name) ?? checkpoint.streamBytes(tensor.name) };
    }
  }
  try {
    const codeStorage = inBackend(Math.ceil(largest / 4));
    const codes = new Uint8Array(codeStorage.buffer, codeStorage.byteOffset, largest);
    const plan = shards(inBackend(largest), anyTransposed ? inBackend(largest) : undefined, codes);
    writeShards(dir, plan, shardMetadata(checkpoint, checkpoint.shardNames[0]!), (tensor) => checkpoint.streamBytes(tensor.name), checkpoint.sharded);
  } finally {
    for (const buffer of buffers) backend.release(buffer);
  }
  for (const file of filesToCopy(checkpoint.dir)) {
    if (file !== "config.json") copyFileDurably(join(checkpoint.dir, file), join(dir, file));
  }
  const skipped = bnb4SkipModules(checkpoint.tensors, byTensor);
  writeFileDurably(join(dir, "config.json"), withQuantizationConfig(readFileSync(join(checkpoint.dir, "config.json"), "utf8"), bnb4QuantizationConfig(computeDtype, skipped)));
}

function writeAdapter(
  dir: string, output: string, matrices: ReadonlyArray<{ target: TargetMatrix; a: Matrix; b: Matrix }>, settings: Settings, config: Record<string, unknown> | undefined,
  tensorNames: readonly string[],
): void {
  const tensors: Array<PlannedTensor & { data: Float32Array }> = [];
  // target_modules as the file names them (PEFT matches them as suffixes of the module paths), in both
  // layouts where transformers renames them on load.
  const prefix = peftModulePrefix(config, tensorNames);
  for (const { target, a, b } of matrices) {
    const names = loraTensorNames(prefix + target.module);
    tensors.push({ name: names.a, dtype: "F32", shape: [a.rows, a.cols], data: a.data });
    tensors.push({ name: names.b, dtype: "F32", shape: [b.rows, b.cols], data: b.data });
  }
  const ordered = upstreamOrder(tensors);
  mkdirSync(join(dir, ADAPTER_DIR), { recursive: true });
  writeSafetensorsFile(join(dir, ADAPTER_DIR, "adapter_model.safetensors"), ordered, { format: "pt" }, (_, i) => float32Bytes(ordered[i]!.data));
  const taskType = taskTypeOf(config);
  const adapter = adapterConfig({
    baseModel: output,
    rank: settings.rank,
    loraAlpha: settings.loraAlpha ?? settings.rank,
    targetModules: peftTargetModules(matrices.map((m) => m.target.module), config),
    taskType,
    autoMapping: autoMappingOf(config, taskType),
    fanInFanOut: matrices.some((m) => m.target.transposed),
    useRslora: false,
  });
  writeFileDurably(join(dir, ADAPTER_DIR, "adapter_config.json"), formatAdapterConfig(adapter));
}

/** Settings and load recipe. No timestamps: a resumed or merged run writes the same bytes. */
/**
 * The bitsandbytes config that re-quantizes the stored Q to itself on load, or "" when none does: every
 * target NF4 (or FP4) with block 64, bitsandbytes' own, or every target int8 row-wise (LLM.int8:
 * Q's rows re-quantize to their own codes). Anything else (2/3/8-bit NF, other block sizes, a --bits-map
 * mixing widths) loads as stored, fake-quantized in 16 bits: a 4-bit config would re-quantize it.
 */
function bitsAndBytesLoadConfig(settings: Settings, targets: readonly TargetMatrix[], computeDtype: string): string {
  const allBits = (bits: number) => targets.length > 0 && targets.every((t) => t.bits === bits);
  if (settings.quantizer === "int8" && allBits(8)) return ", quantization_config=BitsAndBytesConfig(load_in_8bit=True)";
  if (!allBits(4) || settings.blockSize !== 64) return "";
  const type = settings.quantizer === "nf" || settings.quantizer === "bnb-nf4" ? "nf4" : settings.quantizer === "bnb-fp4" ? "fp4" : undefined;
  // Computing in the weights' dtype, as the --format bnb4 checkpoint's config says (bitsandbytes' default is float32).
  return type ? `, quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="${type}", bnb_4bit_use_double_quant=False, bnb_4bit_compute_dtype="${computeDtype}")` : "";
}

/** The Auto class transformers loads a PEFT task type's models with. */
const AUTO_CLASS: Record<NonNullable<TaskType>, string> = {
  CAUSAL_LM: "AutoModelForCausalLM", SEQ_2_SEQ_LM: "AutoModelForSeq2SeqLM", SEQ_CLS: "AutoModelForSequenceClassification",
  TOKEN_CLS: "AutoModelForTokenClassification", QUESTION_ANS: "AutoModelForQuestionAnswering", FEATURE_EXTRACTION: "AutoModel",
};

/**
 * The class the recipe loads the model with: the config's architecture itself (LLaVA's, T5's, BERT's
 * classifier: no Auto class fits them all), or for remote-code models and configs without one the Auto
 * class of the task type, with trust_remote_code where the repository brings the code.
 */
function modelClassOf(config: Record<string, unknown> | undefined): { name: string; extra: string } {
  const first = architectureOf(config);
  const remote = usesRemoteCode(config);
  if (first !== undefined && !remote) return { name: first, extra: "" };
  return { name: AUTO_CLASS[taskTypeOf(config) ?? "CAUSAL_LM"], extra: remote ? ", trust_remote_code=True" : "" };
}

/** What the manifest records of a run's settings: compared whole by `--resume` on a finished output. */
function manifestSettings(settings: Settings) {
  return {
    ...settings,
    loraAlpha: settings.loraAlpha ?? settings.rank,
    scaling: settings.upstreamScaling ? "upstream (not compensated)" : "compensated: (lora_alpha / r) · B · A = W − Q",
  };
}

function manifest(settings: Settings, checkpoint: Checkpoint, output: string, targets: readonly TargetMatrix[], inputFiles: InputFile[]) {
  const model = modelClassOf(checkpoint.config);
  const firstTarget = targets.length > 0 ? checkpoint.tensors.find((t) => t.name === targets[0]!.tensor) : undefined;
  const computeDtype = torchDtypeName(settings.dtype ?? firstTarget?.dtype ?? "F32");
  return {
    tool: "loftq (TypeScript)",
    input: checkpoint.dir,
    /** Sizes and sampled hashes of the input's files: what `--resume` on a finished output compares. */
    inputFiles,
    settings: manifestSettings(settings),
    bitsHistogram: targets.reduce<Record<string, number>>((h, t) => ((h[t.bits] = (h[t.bits] ?? 0) + 1), h), {}),
    load: {
      python: [
        `from transformers import ${model.name}, BitsAndBytesConfig`,
        "from peft import PeftModel",
        `base = ${model.name}.from_pretrained(${JSON.stringify(output)}, torch_dtype="auto"${model.extra}${bitsAndBytesLoadConfig(settings, targets, computeDtype)})`,
        `model = PeftModel.from_pretrained(base, ${JSON.stringify(output)}, subfolder="${ADAPTER_DIR}", is_trainable=True)`,
      ],
      ...(settings.format === "bnb4"
        ? {
            pythonPrequantized: [
              // torch_dtype: without it transformers puts the 16-bit modules (embeddings, norms, head) in float16.
              `base = ${model.name}.from_pretrained(${JSON.stringify(join(output, BNB4_DIR))}, torch_dtype="auto"${model.extra})  # already NF4: no quantization_config needed`,
              `model = PeftModel.from_pretrained(base, ${JSON.stringify(output)}, subfolder="${ADAPTER_DIR}", is_trainable=True)`,
            ],
          }
        : {}),
      javascript: [`import { openCheckpoint, SafetensorsFile } from "loftq/node";`, `const backbone = openCheckpoint(${JSON.stringify(output)});`],
      note: "Backbones bitsandbytes cannot hold as they are (2-, 3- and 8-bit NF, block sizes other than 64, mixed widths) load fake-quantized: the dequantized Q in the model dtype.",
    },
  };
}
