import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, cpSync, lstatSync, mkdtempSync, renameSync, statSync, readFileSync, readdirSync, readlinkSync, rmSync, existsSync, symlinkSync, utimesSync, writeFileSync, mkdirSync } from "node:fs";
import { createHash } from "node:crypto";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { buildTinyLlama } from "../../examples/tiny-llama.js";
import { quantizeCheckpoint, mergeFragments, OutputExistsError, ADAPTER_DIR, REPORT_FILE, pipelineBuffersInBackend } from "./quantize-checkpoint.js";
import { openCheckpoint } from "./checkpoint.js";
import { OutputBusyError, OutputLockLostError } from "./output-lock.js";
import { SafetensorsFile } from "./safetensors-file.js";
import { DiskFullError, writeSafetensorsFile } from "./safetensors-writer.js";
import { tsBackend } from "../kernels/ts-backend.js";
import { LoftqError } from "../errors.js";
import { createQuantizer } from "../quant/quantizer.js";
import { loftq } from "../loftq/loftq.js";
import { llmLikeWeight } from "../synthetic/llm-like-weight.js";
import { transpose } from "../tensor/matrix.js";

let work: string;
let model: string;
const hashes = new Map<string, string>();

before(() => {
  work = mkdtempSync(join(tmpdir(), "loftq-e2e-"));
  model = buildTinyLlama(join(work, "tiny-llama"));
  for (const file of readdirSync(model)) hashes.set(file, sha256(join(model, file)));
});
after(() => rmSync(work, { recursive: true, force: true }));

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

test("end to end: every output reloads, Q + (α/r)·B·A matches W as reported, the rest is byte-identical", (t) => {
  const out = join(work, "out");
  const { reports } = quantizeCheckpoint({ input: model, output: out, bits: 4, rank: 8, iterations: 2, loraAlpha: 16 });
  assert.equal(reports.length, 14);
  const input = openCheckpoint(model);
  const output = openCheckpoint(out);
  const adapter = SafetensorsFile.open(join(out, ADAPTER_DIR, "adapter_model.safetensors"));
  try {
    assert.deepEqual(output.shardNames, input.shardNames, "same shard layout");
    assert.deepEqual(output.tensors.map((x) => [x.name, x.dtype, x.shape, x.shard]), input.tensors.map((x) => [x.name, x.dtype, x.shape, x.shard]));
    const targeted = new Set(reports.map((r) => r.tensor));
    for (const tensor of input.tensors) {
      if (!targeted.has(tensor.name)) assert.deepEqual(output.readBytes(tensor.name), input.readBytes(tensor.name), `${tensor.name} copied byte for byte`);
    }
    const scaling = 16 / 8;
    for (const report of reports) {
      const w = input.readFloat32(report.tensor);
      const q = output.readFloat32(report.tensor);
      const a = adapter.readFloat32(`base_model.model.${report.module}.lora_A.weight`);
      const b = adapter.readFloat32(`base_model.model.${report.module}.lora_B.weight`);
      const [rows, cols] = report.shape;
      const product = new Float32Array(rows * cols);
      tsBackend.gemm({ transA: false, transB: false, m: rows, n: cols, k: 8, alpha: scaling, a: b, b: a, beta: 0, c: product });
      let residual = 0;
      let norm = 0;
      for (let i = 0; i < w.length; i++) {
        residual += (w[i]! - q[i]! - product[i]!) ** 2;
        norm += w[i]! ** 2;
      }
      const measured = Math.sqrt(residual / norm);
      const reported = report.history[report.selectedIteration - 1]!.error;
      // Q is stored in bf16 (the checkpoint's dtype), which moves the error by well under 1%.
      assert.ok(Math.abs(measured - reported) < 0.01 * reported, `${report.module}: measured ${measured} vs reported ${reported}`);
      assert.ok(measured < report.qOnlyError, `${report.module}: LoftQ beats Q only`);
    }
    const best = reports[0]!;
    t.diagnostic(`${best.module}: ‖W−Q‖ ${best.qOnlyError.toFixed(4)} → ‖W−Q−(α/r)BA‖ ${best.history[best.selectedIteration - 1]!.error.toFixed(4)}`);
  } finally {
    input.close();
    output.close();
    adapter.close();
  }
  const config = JSON.parse(readFileSync(join(out, ADAPTER_DIR, "adapter_config.json"), "utf8"));
  assert.deepEqual(Object.keys(config), [...Object.keys(config)].sort(), "keys sorted");
  assert.equal(config.init_lora_weights, true);
  assert.equal(config.r, 8);
  assert.equal(config.lora_alpha, 16);
  assert.equal(config.task_type, "CAUSAL_LM");
  assert.equal(config.peft_type, "LORA");
  assert.equal(config.target_modules.length, 14);
  assert.match(readFileSync(join(out, ADAPTER_DIR, "adapter_config.json"), "utf8"), /"lora_dropout": 0\.0,/);
  const index = JSON.parse(readFileSync(join(out, "model.safetensors.index.json"), "utf8"));
  assert.deepEqual(index, JSON.parse(readFileSync(join(model, "model.safetensors.index.json"), "utf8")), "same index (same dtypes, same layout)");
  assert.ok(existsSync(join(out, "config.json")) && existsSync(join(out, "generation_config.json")));
  assert.equal(JSON.parse(readFileSync(join(out, REPORT_FILE), "utf8")).matrices.length, 14);
  for (const [file, hash] of hashes) assert.equal(sha256(join(model, file)), hash, `input ${file} unchanged`);
});

test("the pipeline's buffers go into the (≤ 4 GiB) WebAssembly memory for 7B–13B matrices, not for 70B ones", () => {
  assert.ok(pipelineBuffersInBackend(11008 * 4096), "Llama-2-7B MLP");
  assert.ok(pipelineBuffersInBackend(13824 * 5120), "Llama-2-13B MLP");
  assert.ok(pipelineBuffersInBackend(14336 * 4096), "Llama-3-8B MLP");
  assert.ok(!pipelineBuffersInBackend(28672 * 8192), "Llama-2/3-70B MLP: LoftQ's own working set needs the room");
});

test("a non-empty --out is refused without force, replaced with it; nothing partial is left", () => {
  const out = join(work, "occupied");
  mkdirSync(out);
  writeFileSync(join(out, "keep.txt"), "mine");
  assert.throws(() => quantizeCheckpoint({ input: model, output: out, rank: 4, target: "q_proj" }), OutputExistsError);
  assert.equal(readFileSync(join(out, "keep.txt"), "utf8"), "mine");
  // Library callers: a misspelt option or a string flag is refused before the output is touched.
  assert.throws(() => quantizeCheckpoint({ input: model, output: out, rank: 4, forse: true } as never), /quantizeCheckpoint: unknown option "forse" \(did you mean "force"\?\)/);
  assert.throws(() => quantizeCheckpoint({ input: model, output: out, rank: 4, force: "yes" } as never), /force must be true or false/);
  assert.equal(readFileSync(join(out, "keep.txt"), "utf8"), "mine");
  // --force replaces a loftq output only: any other directory (a mistyped --out) is refused and kept.
  assert.throws(() => quantizeCheckpoint({ input: model, output: out, rank: 4, target: "q_proj", force: true }), /it is not a loftq output \(no loftq_manifest\.json or loftq_fragment\.json; it holds "keep\.txt"\)/);
  assert.equal(readFileSync(join(out, "keep.txt"), "utf8"), "mine");
  rmSync(join(out, "keep.txt"));
  quantizeCheckpoint({ input: model, output: out, rank: 4, target: "q_proj" });
  writeFileSync(join(out, "keep.txt"), "mine"); // inside an output: replaced with it
  let done: { leftover?: string } | undefined;
  quantizeCheckpoint({ input: model, output: out, rank: 4, target: "q_proj", force: true, onEvent: (e) => { if (e.type === "done") done = e; } });
  assert.ok(!existsSync(join(out, "keep.txt")));
  assert.ok(!existsSync(`${out}.partial`));
  // The old output went aside and is gone: nothing named after it is left, and nothing to warn about.
  assert.deepEqual(readdirSync(work).filter((f) => f.startsWith("occupied.")), []);
  assert.equal(done?.leftover, undefined);
  // What a killed --force run left aside is named in the next run's plan warnings.
  mkdirSync(`${out}.replaced-12345`);
  const warnings: string[] = [];
  quantizeCheckpoint({ input: model, output: out, rank: 4, target: "q_proj", force: true, onEvent: (e) => { if (e.type === "plan") warnings.push(...e.warnings); } });
  assert.ok(warnings.some((w) => w.includes("occupied.replaced-12345") && /moved aside/.test(w)), warnings.join("\n"));
  rmSync(`${out}.replaced-12345`, { recursive: true });
  // A link to nothing at --out is refused (renaming onto it would drop the link); a link to a directory
  // stands for that directory: the output lands in the target, the link stays.
  const dangling = join(work, "dangling-out");
  symlinkSync(join(work, "nowhere"), dangling);
  assert.throws(() => quantizeCheckpoint({ input: model, output: dangling, rank: 4, target: "q_proj" }), /is a link to nothing/);
  const target = join(work, "link-target");
  mkdirSync(target);
  const link = join(work, "link-out");
  symlinkSync(target, link);
  quantizeCheckpoint({ input: model, output: link, rank: 4, target: "q_proj" });
  assert.ok(lstatSync(link).isSymbolicLink() && existsSync(join(target, REPORT_FILE)));
});

test("--out (or its .partial) never is, contains or lies inside the input, symbolic links resolved", () => {
  const parent = join(work, "parent");
  const nested = join(parent, "model");
  mkdirSync(parent);
  cpSync(model, nested, { recursive: true });
  const named = join(work, "named.partial");
  cpSync(model, named, { recursive: true });
  const link = join(work, "model-link");
  symlinkSync(nested, link);
  const refused = [
    { input: nested, output: parent, force: true }, // removing --out would delete the model
    { input: named, output: join(work, "named") }, // the .partial is the model
    { input: link, output: nested, force: true }, // the same directory through a link
    { input: nested, output: join(nested, "out") }, // written into the model
  ];
  for (const { input, output, force } of refused) {
    assert.throws(() => quantizeCheckpoint({ input, output, rank: 4, target: "q_proj", ...(force ? { force } : {}) }), /must not be, contain or lie inside the input directory/);
  }
  for (const dir of [nested, named]) for (const file of readdirSync(model)) assert.equal(sha256(join(dir, file)), hashes.get(file), `${dir}/${file} untouched`);
});

test("a resume refuses a changed input; an unreadable stored matrix is computed again", async () => {
  const cli = fileURLToPath(new URL("../cli/main.js", import.meta.url));
  const copy = join(work, "resume-input");
  cpSync(model, copy, { recursive: true });
  const killedAfter = async (out: string, matrices: number) => {
    const child = spawn(process.execPath, [cli, "quantize", copy, "--out", out, "--rank", "4", "--json"], { stdio: ["ignore", "pipe", "pipe"] });
    let finished = 0;
    await new Promise<void>((resolvePromise) => {
      createInterface({ input: child.stdout! }).on("line", (line) => {
        if (JSON.parse(line).type === "matrix-done" && ++finished === matrices) child.kill("SIGKILL");
      });
      child.on("exit", () => resolvePromise());
    });
  };
  // All 14 linear weights: the kill after the third lands long before the run could finish.
  const resume = (out: string) => spawnSync(process.execPath, [cli, "quantize", copy, "--out", out, "--rank", "4", "--resume", "--json"], { encoding: "utf8" });
  const corrupt = join(work, "resume-corrupt");
  const store = join(`${corrupt}.partial`, ".loftq-matrices");
  // Finished entries are renamed into the store on a worker thread after their fsync (50–150 ms each
  // here), so a kill right after the third "matrix-done" can find none renamed yet: kill later then.
  let stored: string[] = [];
  for (const matrices of [3, 6, 9, 12]) {
    rmSync(`${corrupt}.partial`, { recursive: true, force: true });
    await killedAfter(corrupt, matrices);
    stored = readdirSync(store).filter((f) => f.endsWith(".safetensors")); // a few, or more if the kill came late
    if (stored.length > 0) break;
  }
  assert.ok(stored.length > 0, "some finished entries in the store");
  writeFileSync(join(store, stored[0]!), ""); // what a power cut can leave
  const resumed = resume(corrupt);
  assert.equal(resumed.status, 0, resumed.stderr);
  const computed = resumed.stdout.trim().split("\n").map((l) => JSON.parse(l)).filter((e) => e.type === "matrix-start").length;
  assert.equal(computed, 14 - stored.length + 1, "the emptied matrix again, and those never finished");
  const shardFile = join(copy, readdirSync(copy).find((f) => f.endsWith(".safetensors"))!);
  // A copy of the same files (new modification times, as `cp` without -p gives) resumes...
  const touched = join(work, "resume-touched");
  await killedAfter(touched, 2);
  utimesSync(shardFile, new Date(), new Date(Date.now() + 60_000));
  assert.equal(resume(touched).status, 0);
  // ...weights replaced meanwhile (same names and sizes: another revision) do not.
  const stale = join(work, "resume-stale");
  await killedAfter(stale, 2);
  const bytes = readFileSync(shardFile);
  bytes[bytes.length - 1] ^= 0x40;
  writeFileSync(shardFile, bytes);
  const refused = resume(stale);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /the input's files changed since/);
  // Without --resume the interrupted run is started over (what a retried cluster job without the flag does).
  const fresh = spawnSync(process.execPath, [cli, "quantize", copy, "--out", stale, "--rank", "4", "--quiet"], { encoding: "utf8" });
  assert.equal(fresh.status, 0, fresh.stderr);
});

test("module names that make poor file names are stored under a hash; a --bits-map width is checked before any work", () => {
  const odd = join(work, "odd-names");
  mkdirSync(odd);
  const values = Float32Array.from({ length: 32 * 32 }, (_, i) => Math.sin(i) * 0.02);
  const names = [`model.layers.0.${"x".repeat(300)}.weight`, "model.layers.0.some proj.weight"];
  writeSafetensorsFile(join(odd, "model.safetensors"), names.map((name) => ({ name, dtype: "F32", shape: [32, 32] })), { format: "pt" }, () => new Uint8Array(values.buffer));
  const result = quantizeCheckpoint({ input: odd, output: join(work, "odd-out"), rank: 4 });
  assert.deepEqual(result.reports.map((r) => r.tensor).sort(), [...names].sort());
  const started: string[] = [];
  assert.throws(
    () => quantizeCheckpoint({ input: odd, output: join(work, "odd-out-2"), rank: 4, bitsMap: "*some proj=5", onEvent: (e) => void (e.type === "matrix-start" && started.push(e.module)) }),
    /supports bits 2, 3, 4, 8, got 5/,
  );
  assert.deepEqual(started, []);
});

test("--dtype F16 refuses a Q beyond float16's range instead of writing infinities", () => {
  const big = join(work, "big-values");
  mkdirSync(big);
  const values = Float32Array.from({ length: 32 * 32 }, (_, i) => Math.sin(i) * 1e5);
  writeSafetensorsFile(join(big, "model.safetensors"), [{ name: "model.layers.0.self_attn.q_proj.weight", dtype: "F32", shape: [32, 32] }], { format: "pt" }, () => new Uint8Array(values.buffer));
  assert.throws(() => quantizeCheckpoint({ input: big, output: join(work, "big-out"), rank: 4, dtype: "F16" }), { name: "OutOfRangeError", message: /beyond float16's range/ });
  assert.ok(!existsSync(join(work, "big-out")));
});

test("NaN weights: an error naming the tensor, no output, no partial directory", () => {
  const broken = join(work, "broken");
  mkdirSync(broken);
  const good = new Float32Array(64 * 64).fill(0.01);
  const bad = good.slice();
  bad[70] = NaN;
  const tensors = [
    { name: "model.layers.0.mlp.up_proj.weight", dtype: "F32", shape: [64, 64] },
    { name: "model.layers.0.self_attn.q_proj.weight", dtype: "F32", shape: [64, 64] },
  ];
  writeSafetensorsFile(join(broken, "model.safetensors"), tensors, { format: "pt" }, (tensor) => new Uint8Array((tensor.name.includes("q_proj") ? bad : good).buffer));
  const out = join(work, "broken-out");
  assert.throws(() => quantizeCheckpoint({ input: broken, output: out, rank: 4 }), /model\.layers\.0\.self_attn\.q_proj\.weight has a non-finite value NaN at row 1, column 6/);
  assert.ok(!existsSync(out) && !existsSync(`${out}.partial`));
  // A GPT-2 Conv1D weight is stored (in, out) and transposed for LoftQ: the NaN is named where it is stored.
  const gpt2 = join(work, "broken-gpt2");
  mkdirSync(gpt2);
  writeFileSync(join(gpt2, "config.json"), JSON.stringify({ model_type: "gpt2", architectures: ["GPT2LMHeadModel"] }));
  const conv = new Float32Array(64 * 96).fill(0.01);
  conv[2 * 96 + 5] = NaN;
  writeSafetensorsFile(join(gpt2, "model.safetensors"), [{ name: "h.0.attn.c_attn.weight", dtype: "F32", shape: [64, 96] }], { format: "pt" }, () => new Uint8Array(conv.buffer));
  assert.throws(() => quantizeCheckpoint({ input: gpt2, output: join(work, "broken-gpt2-out"), rank: 4 }), /h\.0\.attn\.c_attn\.weight has a non-finite value NaN at row 2, column 5/);
});

test("GPT-2 Conv1D targets (stored in, out): Q goes back in the stored orientation, equal to LoftQ of the transposed weight", () => {
  const gpt2 = join(work, "gpt2");
  mkdirSync(gpt2);
  writeFileSync(join(gpt2, "config.json"), JSON.stringify({ model_type: "gpt2", architectures: ["GPT2LMHeadModel"] }));
  // Two shapes, so the transposing buffer is reused at another size (and the prefetcher runs).
  const shapes = new Map([["h.0.attn.c_attn.weight", [64, 96]], ["h.0.mlp.c_fc.weight", [64, 128]]]);
  const weights = new Map([...shapes].map(([name, [rows, cols]], i) => [name, llmLikeWeight(rows!, cols!, { seed: 7 + i }).data]));
  writeSafetensorsFile(join(gpt2, "model.safetensors"), [...shapes].map(([name, shape]) => ({ name, dtype: "F32", shape })), { format: "pt" }, (tensor) => new Uint8Array(weights.get(tensor.name)!.buffer));
  const out = join(work, "gpt2-out");
  const { reports } = quantizeCheckpoint({ input: gpt2, output: out, rank: 4, iterations: 2 });
  assert.deepEqual(reports.map((r) => [r.tensor, r.transposed, r.shape]), [["h.0.attn.c_attn.weight", true, [96, 64]], ["h.0.mlp.c_fc.weight", true, [128, 64]]]);
  const output = openCheckpoint(out);
  try {
    for (const [name, [rows, cols]] of shapes) {
      const expected = loftq(transpose({ rows: rows!, cols: cols!, data: weights.get(name)! }), { rank: 4, iterations: 2 });
      assert.deepEqual(output.readFloat32(name), transpose(expected.dequantized).data, name);
      // `loftq matrix` turns it round the same way.
      const cli = fileURLToPath(new URL("../cli/main.js", import.meta.url));
      const matrix = spawnSync(process.execPath, [cli, "matrix", gpt2, "--tensor", name, "--rank", "4", "--iters", "2", "--json"], { encoding: "utf8" });
      assert.equal(matrix.status, 0, matrix.stderr);
      const summary = JSON.parse(matrix.stdout) as { shape: number[]; history: Array<{ quantError: number; error: number }>; qOnlyError: number };
      assert.deepEqual(summary.shape, [cols, rows]);
      // (The CLI's backend may differ from this process's: errors agree to float rounding.)
      summary.history.forEach((h, i) => {
        assert.ok(Math.abs(h.error - expected.history[i]!.error) < 1e-6 && Math.abs(h.quantError - expected.history[i]!.quantError) < 1e-6, `${name} via loftq matrix, iteration ${i + 1}`);
      });
      assert.equal(summary.qOnlyError, summary.history[0]!.quantError);
    }
  } finally {
    output.close();
  }
  // One target alone (read without the prefetcher, into a buffer of its own): the same Q.
  const one = join(work, "gpt2-one");
  quantizeCheckpoint({ input: gpt2, output: one, rank: 4, iterations: 2, target: "c_fc" });
  const [alone, together] = [openCheckpoint(one), openCheckpoint(out)];
  try {
    assert.deepEqual(alone.readFloat32("h.0.mlp.c_fc.weight"), together.readFloat32("h.0.mlp.c_fc.weight"));
  } finally {
    alone.close();
    together.close();
  }
  // The bitsandbytes export quantizes Q as LoftQ saw it, (out, in): turned round again on the way.
  const bnbOut = join(work, "gpt2-bnb4");
  quantizeCheckpoint({ input: gpt2, output: bnbOut, rank: 4, iterations: 2, format: "bnb4" });
  const [backbone, bnb] = [openCheckpoint(bnbOut), openCheckpoint(join(bnbOut, "bnb-4bit"))];
  try {
    for (const [name, [rows, cols]] of shapes) {
      const q = transpose({ rows: rows!, cols: cols!, data: backbone.readFloat32(name) });
      const expected = createQuantizer({ kind: "bnb-nf4", zeroBlocks: "cuda" }).quantize(q);
      assert.deepEqual([bnb.readBytes(name), bnb.readFloat32(name.replace(/weight$/, "weight.absmax"))], [expected.packed, expected.absmax], `${name} in 4 bits`);
    }
  } finally {
    backbone.close();
    bnb.close();
  }
});

test("the CLI: quantize --json, exit codes 0 / 1 / 2, help for every command", () => {
  const cli = fileURLToPath(new URL("../cli/main.js", import.meta.url));
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });
  const ok = run("quantize", model, "--out", join(work, "cli-out"), "--rank", "4", "--target", "q_proj,v_proj", "--json");
  assert.equal(ok.status, 0, ok.stderr);
  const events = ok.stdout.trim().split("\n").map((line) => JSON.parse(line));
  assert.equal(events[0].type, "plan");
  assert.equal(events.at(-1).type, "done");
  assert.equal(run("quantize", join(work, "missing"), "--out", join(work, "x")).status, 1);
  assert.equal(run("quantize", model, "--out", join(work, "cli-out")).status, 1, "refuses to overwrite");
  assert.equal(run("quantize", model, "--bogus").status, 2);
  assert.equal(run("quantize", model, "--out", join(work, "z"), "--rank", "").status, 2, "an empty --rank is not rank 0");
  // Values out of range are usage errors, named by their flag, before the checkpoint is read.
  for (const bad of [
    ["--bits", "5"], ["--rank", "0"], ["--shard", "3/2"], ["--lora-alpha=0"], ["--seed", "4294967296"], ["--quantizer", "bnb-nf4", "--bits", "2.5"], ["--block-size", "99999999"],
    // Whole numbers in decimal digits only (Number() read "0x10" as 16 and "1e1" as 10), and at most 1000 iterations.
    ["--shard", "99999999999999999999/99999999999999999999"], ["--rank", "0x10"], ["--rank", "1e1"], ["--iters", "1e9"], ["--iters", "1001"], ["--lora-alpha", "0x10"], ["--lora-alpha", "1e14"],
  ]) {
    const refused = run("quantize", model, "--out", join(work, "y"), ...bad);
    assert.equal(refused.status, 2, `${bad.join(" ")}: ${refused.stderr}`);
    assert.match(refused.stderr, new RegExp(`${bad[0]!.slice(2).split("=")[0]!.replace("quantizer", "bits")}`));
  }
  // So are selections and formats that need no checkpoint to be refused; what needs the checkpoint exits 1.
  for (const bad of [["--bits-map", "*.mlp.*=5"], ["--bits-map", "garbage"], ["--bits-map", "*.mlp.*=2=3"], ["--bits-map", "*.mlp.*=0x4"], ["--target", ","], ["--format", "bnb4", "--bits", "2"], ["--format", "bnb4", "--bits-map", "*.mlp.*=2"], ["--format", "fp4"]]) {
    const refused = run("quantize", model, "--out", join(work, "y"), ...bad);
    assert.equal(refused.status, 2, `${bad.join(" ")}: ${refused.stderr}`);
    assert.match(refused.stderr, new RegExp(`--${bad[0]!.slice(2)}`));
  }
  // Options a command does not take, a second input path, and --json with --quiet: usage errors, not ignored.
  for (const [bad, message] of [[["quantize", model, "--out", join(work, "y"), "--out", join(work, "z")], /--out is given twice with different values/], [["merge", model, "--out", join(work, "y"), "--bits", "2"], /merge does not take --bits/], [["quantize", model, model, "--out", join(work, "y")], /takes one input path/], [["quantize", model, "--out", join(work, "y"), "--json", "--quiet"], /alternatives/], [["inspect", model, "--force"], /inspect does not take --force/]] as const) {
    const refused = run(...bad);
    assert.equal(refused.status, 2, `${bad.join(" ")}: ${refused.stderr}`);
    assert.match(refused.stderr, message);
  }
  // An --out whose <out>.replaced-<pid> would not fit a file name fails before the work, not after it.
  const longOut = run("quantize", model, "--out", join(work, "o".repeat(240)), "--rank", "4");
  assert.equal(longOut.status, 1);
  assert.match(longOut.stderr, /is too long/);
  // A file named as --out is never replaced by a directory, --force or not.
  writeFileSync(join(work, "a-file"), "mine");
  assert.match(run("quantize", model, "--out", join(work, "a-file"), "--force").stderr, /is a file, not a directory/);
  assert.equal(readFileSync(join(work, "a-file"), "utf8"), "mine");
  assert.equal(run("quantize", model, "--out", join(work, "y"), "--rank", "5000").status, 1, "a rank larger than a matrix is found in the checkpoint");
  assert.ok(!existsSync(join(work, "y")) && !existsSync(join(work, "y.partial")));
  // A reader that closes early (`| head`) ends the printing, not the job.
  const piped = spawnSync("sh", ["-c", `"${process.execPath}" "${cli}" quantize "${model}" --out "${join(work, "piped")}" --rank 4 --target q_proj --json | head -1 >/dev/null`], { encoding: "utf8" });
  assert.doesNotMatch(piped.stderr, /EPIPE/, piped.stderr);
  assert.ok(existsSync(join(work, "piped", "loftq_report.json")));
  // The same for plain progress on stderr, on backends made with --threads.
  const stderrPiped = spawnSync("sh", ["-c", `"${process.execPath}" "${cli}" quantize "${model}" --out "${join(work, "piped-2")}" --rank 4 --target q_proj --threads 1 2>&1 >/dev/null | head -1 >/dev/null; echo done`], { encoding: "utf8" });
  assert.equal(stderrPiped.stdout.trim(), "done");
  assert.doesNotMatch(stderrPiped.stderr, /EPIPE/, stderrPiped.stderr);
  assert.ok(existsSync(join(work, "piped-2", "loftq_report.json")), "--threads 1 ran");
  const notAReport = join(work, "not-a-report");
  mkdirSync(notAReport);
  writeFileSync(join(notAReport, REPORT_FILE), "{bad");
  const report = run("report", notAReport);
  assert.equal(report.status, 1);
  assert.match(report.stderr, /loftq_report\.json: not valid JSON/);
  // The page replaces an earlier page only: not a shard, the report itself, or a directory (and leaves no .partial).
  const piped1 = join(work, "piped");
  for (const target of [join(piped1, "model-00001-of-00003.safetensors"), join(piped1, REPORT_FILE), join(work, "summary")]) {
    const before = existsSync(target) ? sha256(target) : undefined;
    const refused = run("report", piped1, "--out", target);
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /--out must name an \.html page/);
    if (before) assert.equal(sha256(target), before);
    else assert.ok(!existsSync(target));
    assert.ok(!existsSync(`${target}.partial`));
  }
  mkdirSync(join(work, "a-directory.html"));
  const directory = run("report", piped1, "--out", join(work, "a-directory.html"));
  assert.equal(directory.status, 1);
  assert.match(directory.stderr, /is not a file/);
  assert.ok(!existsSync(join(work, "a-directory.html.partial")));
  // A malformed manifest drops only the scaling note.
  writeFileSync(join(piped1, "loftq_manifest.json"), "null");
  assert.equal(run("report", piped1, "--quiet").status, 0);
  for (const command of ["quantize", "inspect", "matrix"]) {
    const help = run(command, "--help");
    assert.equal(help.status, 0);
    assert.match(help.stdout, /Usage: loftq/);
  }
  const matrix = run("matrix", model, "--tensor", "model.layers.0.self_attn.q_proj.weight", "--bits", "2", "--iters", "2", "--json");
  assert.equal(matrix.status, 0, matrix.stderr);
  const summary = JSON.parse(matrix.stdout);
  assert.deepEqual(summary.shape, [512, 512]);
  assert.ok(summary.history[1].error < summary.qOnlyError);
  assert.equal(run("matrix", model, "--tensor", "nope").status, 1);
  const inspect = run("inspect", model);
  assert.equal(inspect.status, 0);
  assert.match(inspect.stdout, /14 targeted/);
});

/**
 * Every file of a directory (recursively) with its bytes, the report's timings aside and the
 * directory's own path (recorded in the adapter config and manifest) written as <out>.
 */
function snapshot(dir: string, prefix = ""): Map<string, string> {
  const out = new Map<string, string>();
  for (const entry of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const relative = join(prefix, entry.name);
    if (entry.isDirectory()) for (const [k, v] of snapshot(dir, relative)) out.set(k, v);
    else if (entry.name === REPORT_FILE) {
      const report = JSON.parse(readFileSync(join(dir, relative), "utf8"));
      for (const m of report.matrices) delete m.seconds;
      out.set(relative, JSON.stringify(report));
    } else if (entry.name.endsWith(".json")) out.set(relative, readFileSync(join(dir, relative), "utf8").split(dir).join("<out>"));
    else out.set(relative, sha256(join(dir, relative)));
  }
  return out;
}

test("a link to nothing among the files to copy (tokenizer.json) is refused before any matrix is computed", () => {
  const broken = join(work, "broken-link-model");
  cpSync(model, broken, { recursive: true });
  symlinkSync(join(work, "nothing-here"), join(broken, "tokenizer.json"));
  const events: string[] = [];
  assert.throws(() => quantizeCheckpoint({ input: broken, output: join(work, "broken-out"), rank: 4, onEvent: (e) => events.push(e.type) }), (e: unknown) => e instanceof LoftqError && /link to nothing/.test(String(e)));
  assert.deepEqual(events, []);
  assert.ok(!existsSync(join(work, "broken-out.partial")));
  rmSync(broken, { recursive: true });
});

test("--shard 1/2 + 2/2 then merge: byte-identical to one run", () => {
  const settings = { input: model, bits: 4, rank: 4, iterations: 2, loraAlpha: 8 } as const;
  const whole = join(work, "whole");
  quantizeCheckpoint({ ...settings, output: whole });
  const fragments = [1, 2].map((index) => {
    const dir = join(work, `fragment-${index}`);
    const { reports } = quantizeCheckpoint({ ...settings, output: dir, shard: { index, count: 2 } });
    assert.equal(reports.length, 7);
    return dir;
  });
  const merged = join(work, "merged");
  assert.throws(() => mergeFragments({ input: model, output: merged, fragments: fragments.slice(0, 1) }), /in no fragment/);
  // Options are checked whole before anything is read or created.
  const mergeMisuse = { input: model, output: merged, fragments, froce: true } as Parameters<typeof mergeFragments>[0];
  assert.throws(() => mergeFragments(mergeMisuse), /unknown option "froce" \(did you mean "force"\?\)/);
  assert.throws(() => mergeFragments({ input: model, output: merged, fragments: [] }), /fragments must be a non-empty array/);
  assert.throws(() => mergeFragments({ input: join(work, "no-such-model"), output: join(work, "merge-parent", "out"), fragments }), (e: unknown) => e instanceof LoftqError);
  assert.ok(!existsSync(join(work, "merge-parent")));
  mergeFragments({ input: model, output: merged, fragments });
  assert.deepEqual(snapshot(merged), snapshot(whole));
  // A damaged fragment is a typed error, whatever is wrong with it.
  const damaged = join(work, "damaged-fragment");
  const recorded = JSON.parse(readFileSync(join(fragments[0]!, "loftq_settings.json"), "utf8"));
  const mistyped = JSON.stringify({ ...recorded, settings: { ...recorded.settings, target: 5 } });
  for (const [file, text] of [["loftq_settings.json", "{"], ["loftq_settings.json", "null"], ["loftq_settings.json", '{"input": 1}'], ["loftq_settings.json", mistyped]] as const) {
    cpSync(fragments[0]!, damaged, { recursive: true });
    writeFileSync(join(damaged, file), text);
    assert.throws(() => mergeFragments({ input: model, output: join(work, "never"), fragments: [damaged, fragments[1]!] }), (e: unknown) => e instanceof LoftqError && /damaged/.test(String(e)), text);
    rmSync(damaged, { recursive: true });
  }
  cpSync(fragments[0]!, damaged, { recursive: true });
  rmSync(join(damaged, "loftq_settings.json"));
  spawnSync("mkfifo", [join(damaged, "loftq_settings.json")]);
  assert.throws(() => mergeFragments({ input: model, output: join(work, "never"), fragments: [damaged, fragments[1]!] }), (e: unknown) => e instanceof LoftqError && /not a regular file/.test(String(e)), "a FIFO would block the read");
  rmSync(damaged, { recursive: true });
  // lora_A and lora_B relabelled [2, 64] / [64, 2] with the same bytes: refused, not a wrong adapter.
  cpSync(fragments[0]!, damaged, { recursive: true });
  const storeDir = join(damaged, ".loftq-matrices");
  const entry = join(storeDir, readdirSync(storeDir).find((f) => f.endsWith(".safetensors"))!);
  const stored = SafetensorsFile.open(entry);
  const tensors = stored.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.name === "q" ? t.shape : t.name === "lora_A" ? [2, (t.shape[0]! * t.shape[1]!) / 2] : [(t.shape[0]! * t.shape[1]!) / 2, 2], bytes: stored.readBytes(t.name) }));
  const metadata = stored.header.metadata;
  stored.close();
  writeSafetensorsFile(entry, tensors, metadata, (_, i) => tensors[i]!.bytes);
  assert.throws(() => mergeFragments({ input: model, output: join(work, "never"), fragments: [damaged, fragments[1]!] }), (e: unknown) => e instanceof LoftqError && /damaged/.test(String(e)));
  assert.ok(!existsSync(join(work, "never")) && !existsSync(join(work, "never.partial")));
  rmSync(damaged, { recursive: true });
  // Factors stored as another dtype of the same size (the store writes F32 only): refused, not read as floats.
  cpSync(fragments[0]!, damaged, { recursive: true });
  const relabelled = join(storeDir, readdirSync(storeDir).find((f) => f.endsWith(".safetensors"))!);
  const entryFileOpen = SafetensorsFile.open(relabelled);
  const retyped = entryFileOpen.tensors.map((t) => ({ name: t.name, dtype: t.name === "lora_A" ? "I32" : t.dtype, shape: t.shape, bytes: entryFileOpen.readBytes(t.name) }));
  const retypedMetadata = entryFileOpen.header.metadata;
  entryFileOpen.close();
  writeSafetensorsFile(relabelled, retyped, retypedMetadata, (_, i) => retyped[i]!.bytes);
  assert.throws(() => mergeFragments({ input: model, output: join(work, "never"), fragments: [damaged, fragments[1]!] }), (e: unknown) => e instanceof LoftqError && /lora_A is I32, not the F32 the store writes/.test(String(e)));
  rmSync(damaged, { recursive: true });
  // An entry whose report is another matrix's or another width's (copied in from another run), or malformed: refused.
  for (const edit of [(r: Record<string, unknown>) => ({ ...r, bits: 2 }), (r: Record<string, unknown>) => ({ ...r, module: "evil" }), () => ({ module: "x" })]) {
    cpSync(fragments[0]!, damaged, { recursive: true });
    const entryFile = join(storeDir, readdirSync(storeDir).find((f) => f.endsWith(".safetensors"))!);
    const original = SafetensorsFile.open(entryFile);
    const parts = original.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: original.readBytes(t.name) }));
    const meta = { ...original.header.metadata, report: JSON.stringify(edit(JSON.parse(original.header.metadata.report!))) };
    original.close();
    writeSafetensorsFile(entryFile, parts, meta, (_, i) => parts[i]!.bytes);
    assert.throws(() => mergeFragments({ input: model, output: join(work, "never"), fragments: [damaged, fragments[1]!] }), (e: unknown) => e instanceof LoftqError && /damaged store entry/.test(String(e)), meta.report);
    assert.ok(!existsSync(join(work, "never")));
    rmSync(damaged, { recursive: true });
  }
  // Fragments of other weights under the same path and sizes (another revision) are refused.
  const revised = join(work, "revised");
  cpSync(model, revised, { recursive: true });
  const revisedFragments = [1, 2].map((index) => {
    const dir = join(work, `revised-fragment-${index}`);
    quantizeCheckpoint({ ...settings, input: revised, output: dir, rank: 4, target: "q_proj", shard: { index, count: 2 } });
    return dir;
  });
  const shardFile = join(revised, readdirSync(revised).find((f) => f.endsWith(".safetensors"))!);
  const bytes = readFileSync(shardFile);
  bytes[bytes.length - 1] ^= 0x40;
  writeFileSync(shardFile, bytes);
  assert.throws(() => mergeFragments({ input: revised, output: join(work, "revised-merged"), fragments: revisedFragments }), /differ from those the fragments were made from/);
});

test("fragments from copies of the model at other paths merge; --resume on a finished --out does nothing; a busy --out is refused", () => {
  const settings = { bits: 4, rank: 4, iterations: 1, target: "q_proj" } as const;
  const copies = ["copy-a", "copy-b"].map((name) => {
    cpSync(model, join(work, name), { recursive: true });
    return join(work, name);
  });
  const fragments = copies.map((input, i) => {
    const output = join(work, `copy-fragment-${i + 1}`);
    quantizeCheckpoint({ ...settings, input, output, shard: { index: i + 1, count: 2 } });
    return output;
  });
  mergeFragments({ input: model, output: join(work, "copies-merged"), fragments });
  assert.equal(JSON.parse(readFileSync(join(work, "copies-merged", REPORT_FILE), "utf8")).matrices.length, 2);
  // A retried job array re-runs finished shards and the whole run: nothing is recomputed or replaced.
  const whole = join(work, "finished");
  quantizeCheckpoint({ ...settings, input: model, output: whole });
  const before = snapshot(whole);
  for (const [options, count] of [[{ input: model, output: whole }, 2], [{ input: copies[0]!, output: fragments[0]!, shard: { index: 1, count: 2 } }, 1]] as const) {
    const events: string[] = [];
    const again = quantizeCheckpoint({ ...settings, ...options, resume: true, onEvent: (e) => events.push(e.type === "done" && e.alreadyComplete ? "already" : e.type) });
    assert.equal(again.reports.length, count);
    assert.ok(events.includes("already") && !events.includes("plan"), events.join(" "));
  }
  assert.deepEqual(snapshot(whole), before);
  // Other settings with --resume: the finished output is not theirs.
  assert.throws(() => quantizeCheckpoint({ ...settings, rank: 2, input: model, output: whole, resume: true }), OutputExistsError);
  // A second run while one holds the output's lock (a live process) is refused, however long it has
  // been silent; a lock whose process is gone, or that names this process's pid with another start time
  // (a restarted container's fresh pid namespace), is taken over at once; one from another host (or
  // without the boot and namespace this version records) once unrefreshed for 15 minutes.
  const busy = join(work, "busy");
  const identity = { host: hostname(), boot: readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim(), pidNamespace: readlinkSync("/proc/self/ns/pid"), started: "x", token: "x" };
  const lockAs = (fields: Record<string, unknown>, ageMinutes = 0) => {
    writeFileSync(`${busy}.lock`, JSON.stringify({ ...identity, ...fields }));
    const time = new Date(Date.now() - ageMinutes * 60_000);
    utimesSync(`${busy}.lock`, time, time);
  };
  const refused = () => assert.throws(() => quantizeCheckpoint({ ...settings, input: model, output: busy, force: true }), (e: unknown) => e instanceof OutputBusyError && /another loftq run \(pid \d+/.test(e.message));
  const taken = () => quantizeCheckpoint({ ...settings, input: model, output: busy, force: true });
  const holder = spawn("sleep", ["30"]);
  try {
    lockAs({ pid: holder.pid });
    refused();
    assert.ok(!existsSync(`${busy}.partial`) && existsSync(`${busy}.lock`));
    lockAs({ pid: holder.pid }, 60);
    refused();
    lockAs({ pid: holder.pid, host: "elsewhere" }, 5);
    refused();
    lockAs({ pid: holder.pid, host: "elsewhere" }, 16);
    taken();
    lockAs({ pid: holder.pid, boot: undefined, pidNamespace: undefined }, 16);
    taken();
  } finally {
    holder.kill();
  }
  lockAs({ pid: spawnSync(process.execPath, ["-e", ""]).pid });
  taken();
  lockAs({ pid: process.pid, processStart: "ticks:1" });
  taken();
  lockAs({ pid: 12345, boot: "another-boot" });
  taken();
  // A run whose lock another run took over (it looked stale) stops at its next progress event and leaves
  // the .partial, which is the other run's now.
  rmSync(busy, { recursive: true, force: true });
  let stolen = false;
  assert.throws(
    () => quantizeCheckpoint({
      ...settings, input: model, output: busy,
      onEvent: (e) => {
        if (e.type === "matrix-done" && !stolen) {
          stolen = true;
          writeFileSync(`${busy}.lock`, JSON.stringify({ ...identity, pid: 1, token: "theirs" }));
        }
      },
    }),
    (e: unknown) => e instanceof OutputLockLostError && /taken over by pid 1/.test(e.message),
  );
  assert.ok(existsSync(`${busy}.partial`) && !existsSync(busy) && readFileSync(`${busy}.lock`, "utf8").includes("theirs"));
  rmSync(`${busy}.partial`, { recursive: true });
  rmSync(`${busy}.lock`);
  // Anything but a regular file at <out>.lock (a link to nothing, a directory) is an error, never a hang.
  symlinkSync(join(work, "nowhere"), `${busy}.lock`);
  assert.throws(taken, (e: unknown) => e instanceof OutputBusyError && /not a regular file/.test(e.message));
  rmSync(`${busy}.lock`);
  mkdirSync(`${busy}.lock`);
  assert.throws(taken, (e: unknown) => e instanceof OutputBusyError && /not a regular file/.test(e.message));
  rmSync(`${busy}.lock`, { recursive: true });
  // A run that fails before any work (no such input) leaves nothing, not even --out's parent; a run
  // that starts creates the parent.
  assert.throws(() => quantizeCheckpoint({ ...settings, input: join(work, "no-such-model"), output: join(work, "new", "parent", "out") }), /no-such-model: not a directory/);
  assert.ok(!existsSync(join(work, "new")));
  quantizeCheckpoint({ ...settings, input: model, output: join(work, "new", "parent", "out") });
  assert.ok(existsSync(join(work, "new", "parent", "out", REPORT_FILE)) && !existsSync(join(work, "new", "parent", "out.lock")));
});

test("the manifest's load recipe asks bitsandbytes only for what re-quantizes Q to itself", () => {
  const recipe = (options: Record<string, unknown>) => {
    const output = join(work, `recipe-${Object.values(options).join("-")}`);
    quantizeCheckpoint({ input: model, output, rank: 4, target: "q_proj,k_proj", force: true, ...options });
    return (JSON.parse(readFileSync(join(output, "loftq_manifest.json"), "utf8")).load.python as string[]).join("\n");
  };
  assert.match(recipe({ bits: 4 }), /load_in_4bit=True, bnb_4bit_quant_type="nf4"/);
  assert.match(recipe({ bits: 4, quantizer: "bnb-fp4" }), /bnb_4bit_quant_type="fp4"/);
  assert.match(recipe({ quantizer: "int8", bits: 8 }), /load_in_8bit=True/);
  for (const options of [{ bits: 4, blockSize: 128 }, { bits: 4, bitsMap: "*.k_proj=8" }, { bits: 2 }, { bits: 8 }]) {
    assert.doesNotMatch(recipe(options), /BitsAndBytesConfig\(/, JSON.stringify(options));
  }
  // The architecture's own class (no Auto class fits T5, LLaVA and BERT classifiers alike), computing in
  // the stored weights' dtype.
  assert.match(recipe({ bits: 4 }), /^from transformers import LlamaForCausalLM, BitsAndBytesConfig$/m);
  assert.match(recipe({ bits: 4 }), /base = LlamaForCausalLM\.from_pretrained\(.*bnb_4bit_compute_dtype="bfloat16"\)\)$/m);
  assert.match(recipe({ bits: 4, dtype: "F32" }), /bnb_4bit_compute_dtype="float32"/);
});

test("an input whose files link into --out is refused before anything is replaced; so is a merge whose --out is one of its fragments", () => {
  // A model directory made of links into an earlier output's backbone, quantized with --force onto that output.
  const real = join(work, "linked-real");
  quantizeCheckpoint({ input: model, output: real, rank: 4, target: "q_proj" });
  const links = join(work, "linked-model");
  mkdirSync(links);
  for (const file of readdirSync(real).filter((f) => f !== ADAPTER_DIR)) symlinkSync(join(real, file), join(links, file));
  const hashes = () => readdirSync(real).filter((file) => file !== ADAPTER_DIR).map((file) => sha256(join(real, file)));
  const before = hashes();
  assert.throws(() => quantizeCheckpoint({ input: links, output: real, rank: 4, force: true }), /links to, a file in .*linked-real, which this run would replace/);
  assert.deepEqual(hashes(), before, "the linked weights are intact");
  const fragment = join(work, "self-fragment");
  quantizeCheckpoint({ input: model, output: fragment, rank: 4, target: "q_proj", shard: { index: 1, count: 1 } });
  assert.throws(() => mergeFragments({ input: model, output: fragment, fragments: [fragment], force: true }), /is, contains or lies in --out/);
  assert.ok(existsSync(join(fragment, "loftq_fragment.json")));
});

test("a model that is already quantized (a quantization_config) is refused before any matrix; other tokenizer files are copied", () => {
  const quantized = join(work, "already-quantized");
  cpSync(model, quantized, { recursive: true });
  const config = JSON.parse(readFileSync(join(quantized, "config.json"), "utf8"));
  writeFileSync(join(quantized, "config.json"), JSON.stringify({ ...config, quantization_config: { quant_method: "fp8" } }));
  const events: string[] = [];
  for (const format of ["fp", "bnb4"] as const) {
    assert.throws(
      () => quantizeCheckpoint({ input: quantized, output: join(work, `never-${format}`), rank: 4, format, onEvent: (e) => events.push(e.type) }),
      /has a quantization_config \(quant_method "fp8"\): the model is already quantized/,
    );
  }
  assert.deepEqual(events, [], "nothing computed");
  assert.ok(!existsSync(join(work, "never-fp.partial")) && !existsSync(join(work, "never-bnb4.partial")));
  // A real pre-quantized layout (bitsandbytes' U8 [n/2, 1] weights) has no float targets: the reason given is still this one.
  const bnb = join(work, "bnb-quantized");
  mkdirSync(bnb);
  writeFileSync(join(bnb, "config.json"), JSON.stringify({ model_type: "llama", quantization_config: { quant_method: "bitsandbytes" } }));
  writeSafetensorsFile(join(bnb, "model.safetensors"), [{ name: "model.layers.0.self_attn.q_proj.weight", dtype: "U8", shape: [2048, 1] }], { format: "pt" }, () => new Uint8Array(2048));
  assert.throws(() => quantizeCheckpoint({ input: bnb, output: join(work, "never-bnb"), rank: 4 }), /quant_method "bitsandbytes"\): the model is already quantized/);
  // "quantization_config": null (written by some tools) is no quantization.
  const nulled = join(work, "null-quantization-config");
  cpSync(model, nulled, { recursive: true });
  writeFileSync(join(nulled, "config.json"), JSON.stringify({ ...config, quantization_config: null }));
  quantizeCheckpoint({ input: nulled, output: join(work, "null-quantization-config-out"), rank: 4, target: "q_proj" });
  // DeBERTa-v3's spm.model, Marian's *.spm, Qwen's *.tiktoken, Mistral's tekken.json reach the output.
  const tokenizers = join(work, "other-tokenizers");
  cpSync(model, tokenizers, { recursive: true });
  const extra = ["spm.model", "source.spm", "qwen.tiktoken", "tekken.json", "bpe.codes", "video_preprocessor_config.json"];
  for (const file of extra) writeFileSync(join(tokenizers, file), file);
  writeFileSync(join(tokenizers, "notes.bin"), "not copied");
  // Read-only files (a shared model store) give writable copies: the copy is flushed through a write
  // handle, which failed for a non-root user after all the work (root is let through either way, so the mode is checked).
  chmodSync(join(tokenizers, "spm.model"), 0o444);
  const out = join(work, "other-tokenizers-out");
  quantizeCheckpoint({ input: tokenizers, output: out, rank: 4, target: "q_proj" });
  for (const file of extra) assert.equal(readFileSync(join(out, file), "utf8"), file);
  assert.equal(statSync(join(out, "spm.model")).mode & 0o777, 0o644);
  assert.ok(!existsSync(join(out, "notes.bin")));
});

test("--resume after kill -9: finished matrices are kept and the files equal an uninterrupted run's", async () => {
  const cli = fileURLToPath(new URL("../cli/main.js", import.meta.url));
  const out = join(work, "resumed");
  const args = [cli, "quantize", model, "--out", out, "--rank", "4", "--iters", "2", "--json"];
  // Entries reach the store once fsynced, on another thread: the last few done may be missing, all of
  // them when the kill comes right after fast matrices (then kill later).
  let kept = 0;
  for (const matrices of [6, 9, 12]) {
    rmSync(`${out}.partial`, { recursive: true, force: true });
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    let finished = 0;
    await new Promise<void>((resolvePromise) => {
      createInterface({ input: child.stdout! }).on("line", (line) => {
        if (JSON.parse(line).type === "matrix-done" && ++finished === matrices) child.kill("SIGKILL");
      });
      child.on("exit", () => resolvePromise());
    });
    assert.ok(existsSync(`${out}.partial`) && !existsSync(out), "killed mid-run: only the .partial exists");
    kept = readdirSync(join(`${out}.partial`, ".loftq-matrices")).filter((f) => f.endsWith(".safetensors")).length;
    assert.ok(kept <= matrices, `${kept} of ${matrices} finished matrices kept`);
    if (kept >= 1) break;
  }
  assert.ok(kept >= 1, "some finished matrices kept");
  const resumed = spawnSync(process.execPath, [...args.slice(0, -1), "--resume", "--json"], { encoding: "utf8" });
  assert.equal(resumed.status, 0, resumed.stderr);
  const computed = resumed.stdout.trim().split("\n").map((l) => JSON.parse(l)).filter((e) => e.type === "matrix-start").length;
  assert.equal(computed, 14 - kept, `resumed run recomputed ${computed} matrices`);
  const reference = join(work, "uninterrupted");
  const uninterrupted = spawnSync(process.execPath, [cli, "quantize", model, "--out", reference, "--rank", "4", "--iters", "2", "--quiet"], { encoding: "utf8" });
  assert.equal(uninterrupted.status, 0, uninterrupted.stderr);
  assert.deepEqual(snapshot(out), snapshot(reference));
});

test("the store gives up each q once its shard is written; an assembly cut short resumes without recomputing, keeping the shards written", () => {
  const out = join(work, "assembly-cut");
  const reference = join(work, "assembly-whole");
  const options = { input: model, rank: 4, iterations: 2 };
  quantizeCheckpoint({ ...options, output: reference });
  const shardSizes: number[] = [];
  assert.throws(() => quantizeCheckpoint({
    ...options, output: out,
    onEvent: (event) => {
      if (event.type !== "shard-written") return;
      // The entries of the written shard's targets hold their factors only now.
      const store = join(`${out}.partial`, ".loftq-matrices");
      shardSizes.push(readdirSync(store).reduce((sum, f) => sum + readFileSync(join(store, f)).length, 0));
      if (event.written === 2) throw new DiskFullError("simulated: the disk filled up while writing the shards");
    },
  }), DiskFullError);
  assert.ok(existsSync(`${out}.partial`) && !existsSync(out), "a full disk keeps the .partial");
  assert.ok(shardSizes[1]! < shardSizes[0]!, `the store shrinks as shards are written (${shardSizes.join(" → ")} bytes)`);
  // A whole run's .partial is not a fragment's: resuming it with --shard is refused (and keeps it).
  assert.throws(() => quantizeCheckpoint({ ...options, output: out, resume: true, shard: { index: 1, count: 2 } }), /other settings/);
  // Kept as it is: a copy to damage below.
  cpSync(`${out}.partial`, `${out}-damaged.partial`, { recursive: true });
  const events: string[] = [];
  quantizeCheckpoint({ ...options, output: out, resume: true, onEvent: (event) => events.push(event.type) });
  assert.equal(events.filter((type) => type === "matrix-start").length, 0, "no matrix is computed again");
  assert.equal(events.filter((type) => type === "shard-written").length, 3);
  assert.deepEqual(snapshot(out), snapshot(reference));

  // A written shard lost (its rename undone by a power cut) and one cut short: their matrices, whose q
  // the store gave up, are computed again; the output is the same.
  const damaged = `${out}-damaged`;
  const [first, second] = readdirSync(`${damaged}.partial`).filter((f) => f.endsWith(".safetensors")).sort();
  rmSync(join(`${damaged}.partial`, second!));
  writeFileSync(join(`${damaged}.partial`, first!), readFileSync(join(`${damaged}.partial`, first!)).subarray(0, 1000));
  const recomputed: string[] = [];
  quantizeCheckpoint({ ...options, output: damaged, resume: true, onEvent: (event) => void (event.type === "matrix-start" && recomputed.push(event.module)) });
  const source = openCheckpoint(model);
  const inDamaged = source.tensors.filter((t) => (t.shard === first || t.shard === second) && /_proj\.weight$/.test(t.name)).map((t) => t.name.replace(/\.weight$/, ""));
  source.close();
  assert.ok(inDamaged.length > 0);
  assert.deepEqual(recomputed.sort(), inDamaged.sort());
  assert.deepEqual(snapshot(damaged), snapshot(reference));
});

test("--format bnb4: a pre-quantized bitsandbytes NF4 checkpoint whose dequantized weights are the backbone's Q", () => {
  const out = join(work, "bnb4");
  quantizeCheckpoint({ input: model, output: out, bits: 4, rank: 4, target: "q_proj,down_proj", format: "bnb4" });
  const backbone = openCheckpoint(out);
  const bnb = openCheckpoint(join(out, "bnb-4bit"));
  try {
    const configText = readFileSync(join(out, "bnb-4bit", "config.json"), "utf8");
    const config = JSON.parse(configText);
    assert.equal(config.quantization_config.bnb_4bit_quant_type, "nf4");
    assert.equal(config.quantization_config.bnb_4bit_compute_dtype, "bfloat16");
    // Python reads 6 as an int and BitsAndBytesConfig refuses it; the model's own config stays as written.
    assert.match(configText, /"llm_int8_threshold": 6\.0,/);
    const original = readFileSync(join(model, "config.json"), "utf8");
    assert.ok(configText.startsWith(original.slice(0, original.lastIndexOf("}")).trimEnd()));
    // Every Linear left in 16 bits is named, or transformers would convert it and find no quant state.
    assert.deepEqual(config.quantization_config.llm_int8_skip_modules, [
      "lm_head", "model.embed_tokens",
      ...[0, 1].flatMap((l) => ["mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj", "self_attn.o_proj", "self_attn.v_proj"].map((m) => `model.layers.${l}.${m}`)),
    ].sort());
    const quantizer = createQuantizer({ kind: "bnb-nf4" });
    for (const module of ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]) {
      const state = JSON.parse(new TextDecoder().decode(bnb.readBytes(`${module}.weight.quant_state.bitsandbytes__nf4`)));
      const q = backbone.readFloat32(`${module}.weight`);
      assert.deepEqual(Object.keys(state), ["quant_type", "blocksize", "dtype", "shape"]);
      const [rows, cols] = state.shape as [number, number];
      assert.equal(rows * cols, q.length);
      const packed = bnb.readBytes(`${module}.weight`);
      const absmax = bnb.readFloat32(`${module}.weight.absmax`);
      // Exactly bitsandbytes' quantization of the backbone's Q (CUDA's handling of all-zero blocks).
      const expected = createQuantizer({ kind: "bnb-nf4", zeroBlocks: "cuda" }).quantize({ rows, cols, data: q });
      assert.deepEqual([packed, absmax], [expected.packed, expected.absmax], module);
      const dequantized = quantizer.dequantize({ ...quantizer.quantize({ rows, cols, data: q }), packed, absmax }).data;
      let worst = 0;
      for (let i = 0; i < q.length; i++) worst = Math.max(worst, Math.abs(dequantized[i]! - q[i]!) / (absmax[(i / 64) | 0]! || 1));
      assert.ok(worst < 1e-2, `${module}: dequantized NF4 within 1% of each block's absmax of Q (got ${worst})`);
    }
    assert.deepEqual(bnb.readBytes("model.embed_tokens.weight"), backbone.readBytes("model.embed_tokens.weight"));
    assert.ok(!bnb.tensors.some((t) => t.name === "model.layers.0.self_attn.k_proj.weight.absmax"), "only targets are quantized");
  } finally {
    backbone.close();
    bnb.close();
  }
  assert.throws(() => quantizeCheckpoint({ input: model, output: join(work, "bnb2"), bits: 2, rank: 4, format: "bnb4" }), /needs every target at NF4/);
});

test("quantizeCheckpoint refuses what every matrix's loftq() would, before the first one", () => {
  for (const [options, message] of [[{ iterations: 1e9 }, /iterations must be an integer in 1..1000/], [{ loraAlpha: 1e300 }, /outside 1e-12..1000000000000/]] as const) {
    const events: string[] = [];
    assert.throws(() => quantizeCheckpoint({ input: model, output: join(work, "never-up-front"), rank: 4, ...options, onEvent: (e) => events.push(e.type) }), message);
    assert.deepEqual(events, []);
    assert.ok(!existsSync(join(work, "never-up-front")) && !existsSync(join(work, "never-up-front.partial")));
  }
});

test("--resume after a kill between the last write and the rename publishes the finished .partial without computing", () => {
  const out = join(work, "killed-at-rename");
  const settings = { input: model, rank: 4, target: "q_proj,v_proj" };
  quantizeCheckpoint({ ...settings, output: out });
  const bytes = readFileSync(join(out, ADAPTER_DIR, "adapter_model.safetensors"));
  renameSync(out, `${out}.partial`); // what the rename had not done yet
  mkdirSync(`${out}.replaced-4242`); // and an earlier output a killed --force run moved aside
  const events: Array<{ type: string; warnings?: string[] }> = [];
  const { reports } = quantizeCheckpoint({ ...settings, output: out, resume: true, onEvent: (e) => events.push(e) });
  assert.equal(reports.length, 4);
  assert.ok(!events.some((e) => e.type === "matrix-start"), events.map((e) => e.type).join(","));
  assert.ok(events[0]!.type === "plan" && events[0]!.warnings!.some((w) => w.includes("replaced-4242")), "the plan and its warnings come first");
  rmSync(`${out}.replaced-4242`, { recursive: true });
  assert.ok(!existsSync(`${out}.partial`));
  assert.deepEqual(readFileSync(join(out, ADAPTER_DIR, "adapter_model.safetensors")), bytes);
  // A finished .partial of other settings is not published as this run's: it is computed afresh.
  renameSync(out, `${out}.partial`);
  let computed = 0;
  quantizeCheckpoint({ ...settings, rank: 8, output: out, resume: true, onEvent: (e) => { if (e.type === "matrix-start") computed++; } });
  assert.equal(computed, 4);
  assert.equal(JSON.parse(readFileSync(join(out, ADAPTER_DIR, "adapter_config.json"), "utf8")).r, 8);
});

test("--resume: an entry of this run's own store whose report is malformed is computed again, not fatal", () => {
  const out = join(work, "malformed-own-entry");
  const settings = { input: model, rank: 4, target: "q_proj" };
  quantizeCheckpoint({ ...settings, output: out, shard: { index: 1, count: 1 } }); // a fragment keeps its store
  renameSync(out, `${out}.partial`);
  rmSync(join(`${out}.partial`, "loftq_fragment.json"));
  const store = join(`${out}.partial`, ".loftq-matrices");
  const entryFile = join(store, readdirSync(store).find((f) => f.endsWith(".safetensors"))!);
  const original = SafetensorsFile.open(entryFile);
  const parts = original.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: original.readBytes(t.name) }));
  const meta = { ...original.header.metadata, report: JSON.stringify({ ...JSON.parse(original.header.metadata.report!), seconds: null }) };
  original.close();
  writeSafetensorsFile(entryFile, parts, meta, (_, i) => parts[i]!.bytes);
  let computed = 0;
  quantizeCheckpoint({ ...settings, output: out, resume: true, shard: { index: 1, count: 1 }, onEvent: (e) => { if (e.type === "matrix-start") computed++; } });
  assert.equal(computed, 1, "only the malformed entry is computed again");
});

test("a bind-mounted --out (same file system) is refused before any work", (t) => {
  const source = join(work, "bind-source");
  const mounted = join(work, "bind-mounted");
  mkdirSync(source);
  mkdirSync(mounted);
  const cli = fileURLToPath(new URL("../cli/main.js", import.meta.url));
  // In a private mount namespace (nothing leaks out); skipped where there is none or mounting is not allowed.
  const script = `mount --bind "${source}" "${mounted}" || { echo nomount; exit 0; }; "${process.execPath}" "${cli}" quantize "${model}" --out "${mounted}" --rank 4 --target q_proj --json; echo "exit $?"`;
  const result = spawnSync("unshare", ["-m", "--propagation", "private", "sh", "-c", script], { encoding: "utf8", timeout: 120_000 });
  const exit = /^exit (\d+)$/m.exec(result.stdout);
  if (!exit) return t.skip(`no private mount namespace or mount here (${(result.stdout + result.stderr || String(result.error)).trim().slice(0, 80)})`);
  assert.equal(exit[1], "1", result.stderr);
  assert.doesNotMatch(result.stdout, /matrix-start/);
  assert.match(result.stderr, /is a mount point/);
});

test("--resume on a finished output whose report was edited (malformed, or not one entry per target) is not taken as finished", () => {
  const out = join(work, "edited-report");
  const settings = { input: model, rank: 4, target: "q_proj" };
  quantizeCheckpoint({ ...settings, output: out });
  for (const text of ['{"matrices":[{}]}', '{"matrices":[]}', JSON.stringify({ matrices: JSON.parse(readFileSync(join(out, REPORT_FILE), "utf8")).matrices.slice(1) })]) {
    writeFileSync(join(out, REPORT_FILE), text);
    assert.throws(() => quantizeCheckpoint({ ...settings, output: out, resume: true }), (e: unknown) => e instanceof OutputExistsError && /not an output finished with these settings/.test(String(e)), text);
  }
});

test("lm_head as a target of a model whose head is tied to the embeddings is refused before any work", () => {
  const tied = join(work, "tied-head");
  cpSync(model, tied, { recursive: true });
  const config = JSON.parse(readFileSync(join(tied, "config.json"), "utf8"));
  writeFileSync(join(tied, "config.json"), JSON.stringify({ ...config, tie_word_embeddings: true }));
  const events: string[] = [];
  assert.throws(() => quantizeCheckpoint({ input: tied, output: join(work, "tied-head-out"), rank: 4, target: "lm_head,q_proj", onEvent: (e) => events.push(e.type) }), /lm_head\.weight is tied to the input embeddings/);
  assert.deepEqual(events, []);
  quantizeCheckpoint({ input: tied, output: join(work, "tied-head-out"), rank: 4, target: "q_proj" });
});

test("names with control characters print escaped: one line, no terminal escapes", () => {
  const cli = fileURLToPath(new URL("../cli/main.js", import.meta.url));
  const odd = join(work, "control-character-names");
  mkdirSync(odd);
  const name = "model.layers.0.self_attn.q\u001b[31m\nproj.weight";
  writeSafetensorsFile(join(odd, "model.safetensors"), [{ name, dtype: "F32", shape: [8, 8] }], { format: "pt" }, () => new Uint8Array(new Float32Array(64).fill(NaN).buffer));
  writeFileSync(join(odd, "config.json"), JSON.stringify({ model_type: "llama" }));
  const inspect = spawnSync(process.execPath, [cli, "inspect", odd], { encoding: "utf8" });
  assert.ok(inspect.stdout.includes("q\\u001b[31m\\u000aproj.weight") && !inspect.stdout.includes("\u001b"), inspect.stdout);
  const failed = spawnSync(process.execPath, [cli, "quantize", odd, "--out", join(work, "control-character-out"), "--rank", "2"], { encoding: "utf8" });
  assert.equal(failed.status, 1);
  // The progress lines, then the error on one line of its own.
  assert.match(failed.stderr.trim().split("\n").at(-1)!, /^loftq: model\.layers\.0\.self_attn\.q\\u001b\[31m\\u000aproj\.weight has a non-finite value NaN/, failed.stderr);
  assert.ok(!failed.stderr.includes("\u001b"));
});

test("each output shard keeps its own input shard's __metadata__", () => {
  const varied = join(work, "varied-metadata");
  cpSync(model, varied, { recursive: true });
  const second = join(varied, "model-00002-of-00003.safetensors");
  const file = SafetensorsFile.open(second);
  const parts = file.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: file.readBytes(t.name) }));
  file.close();
  writeSafetensorsFile(second, parts, { format: "pt", custom: "second shard" }, (_, i) => parts[i]!.bytes);
  const out = join(work, "varied-metadata-out");
  quantizeCheckpoint({ input: varied, output: out, rank: 4 });
  const metadataOf = (path: string) => {
    const shard = SafetensorsFile.open(path);
    try {
      return shard.header.metadata;
    } finally {
      shard.close();
    }
  };
  assert.equal(metadataOf(join(out, "model-00002-of-00003.safetensors")).custom, "second shard");
  assert.equal(metadataOf(join(out, "model-00001-of-00003.safetensors")).custom, undefined);
});
