import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { renderReportHtml, type ReportMatrix } from "./html-report.js";

const matrices: ReportMatrix[] = [0, 1].flatMap((layer) =>
  ["self_attn.q_proj", "mlp.down_proj"].map((role, i) => ({
    module: `model.layers.${layer}.${role}`,
    shape: [512, 1536] as [number, number],
    bits: layer === 0 ? 4 : 2,
    rank: 16,
    qOnlyError: layer === 0 ? 0.092 : 0.56,
    history: [0.9, 0.85, 0.83].map((f) => ({ quantError: 0.5, error: (layer === 0 ? 0.092 : 0.56) * (f - 0.01 * i) })),
    selectedIteration: 3,
    seconds: 0.1,
  })),
);

test("the HTML report is self-contained: charts as inline SVG, no scripts, escaped names", () => {
  const html = renderReportHtml([...matrices, { ...matrices[0]!, module: "evil.<script>alert(1)</script>" }]);
  assert.equal((html.match(/<svg /g) ?? []).length, 3, "per-layer, per-iteration and bits-map charts");
  assert.ok(!/<script|src=|href=/i.test(html), "no scripts, no external resources");
  assert.match(html, /evil\.&lt;script&gt;/);
  assert.match(html, /mean ‖W−Q−BA‖\/‖W‖ <b>/);
  assert.match(renderReportHtml(matrices, "t", ["kept PEFT's <scaling>"]), /<b>Note:<\/b> kept PEFT&#39;s &lt;scaling&gt;/);
});

test("a report file's entries are checked before any of them reaches the page; 60k matrices render", () => {
  const hostile: Array<[Partial<Record<keyof ReportMatrix, unknown>>, RegExp]> = [
    [{ bits: "<img src=x onerror=alert(1)>" }, /matrix 0 has a missing or malformed bits/],
    [{ shape: ["<script>alert(3)</script>", 1] }, /malformed shape/],
    [{ rank: "<script>" }, /malformed rank/],
    [{ selectedIteration: 9 }, /malformed selectedIteration/],
    [{ history: [] }, /malformed history/],
    [{ qOnlyError: undefined }, /malformed qOnlyError/],
  ];
  for (const [change, message] of hostile) {
    assert.throws(() => renderReportHtml([{ ...matrices[0]!, ...change } as ReportMatrix]), message, JSON.stringify(change));
  }
  assert.throws(() => renderReportHtml([]), /non-empty list/);
  // A DeepSeek-sized MoE run: Math.max(...values) over 300k errors overflowed the call stack.
  const many = Array.from({ length: 60_000 }, (_, i) => ({ ...matrices[i % 4]!, module: `model.layers.${i % 61}.mlp.experts.${i}.up_proj` }));
  assert.match(renderReportHtml(many), /<b>60000<\/b> matrices/);
});

const chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((path) => existsSync(path));

test("the report renders in headless Chromium (screenshot)", { skip: chromium ? false : "Debian's chromium is not installed (.ci/run installs it)" }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), "loftq-report-"));
  try {
    writeFileSync(join(dir, "report.html"), renderReportHtml(matrices));
    const screenshot = join(dir, "report.png");
    const result = spawnSync(
      chromium!,
      ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        `--user-data-dir=${join(dir, "profile")}`, "--window-size=1100,1200", `--screenshot=${screenshot}`, `file://${join(dir, "report.html")}`],
      { encoding: "utf8", timeout: 60_000 },
    );
    assert.ok(existsSync(screenshot), `chromium wrote no screenshot: ${result.stderr}`);
    const png = readFileSync(screenshot);
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], "a PNG");
    const [width, height] = [png.readUInt32BE(16), png.readUInt32BE(20)];
    assert.deepEqual([width, height], [1100, 1200]);
    // A blank page compresses to a few KiB; charts and a table do not.
    assert.ok(png.length > 30_000, `screenshot is ${png.length} bytes`);
    t.diagnostic(`screenshot ${width}×${height}, ${png.length} bytes`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
