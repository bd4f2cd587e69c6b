import { InvalidArgumentError } from "../errors.js";

/**
 * `loftq report`: one self-contained HTML page (inline CSS and SVG, no scripts, no network) from
 * loftq_report.json: per-layer error (Q only against LoftQ), per-iteration curves, the bits map
 * and the full table. Pure string building, so it runs anywhere.
 */
export interface ReportMatrix {
  module: string;
  shape: [number, number];
  bits: number;
  rank: number;
  qOnlyError: number;
  history: Array<{ quantError: number; error: number }>;
  selectedIteration: number;
  seconds: number;
}

/**
 * The report's matrices, checked entry by entry (the JSON is a file, and may have been edited): every
 * number a finite number, the history non-empty, the selected iteration inside it. Only then does
 * anything go into the page, so no field can carry markup and no chart gets NaN coordinates.
 */
export function checkReportMatrices(value: unknown, where: string): ReportMatrix[] {
  if (!Array.isArray(value) || value.length === 0) throw new InvalidArgumentError(`${where}: "matrices" must be a non-empty list`);
  const finite = (x: unknown) => typeof x === "number" && Number.isFinite(x);
  value.forEach((entry: unknown, i) => {
    const bad = (field: string) => new InvalidArgumentError(`${where}: matrix ${i} has a missing or malformed ${field}`);
    if (typeof entry !== "object" || entry === null) throw bad("entry");
    const m = entry as Record<string, unknown>;
    if (typeof m.module !== "string") throw bad("module");
    if (!Array.isArray(m.shape) || m.shape.length !== 2 || !m.shape.every((d) => Number.isSafeInteger(d) && (d as number) > 0)) throw bad("shape");
    for (const field of ["bits", "rank", "qOnlyError", "seconds"]) if (!finite(m[field])) throw bad(field);
    const history = m.history;
    if (!Array.isArray(history) || history.length === 0 || !history.every((h) => typeof h === "object" && h !== null && finite(h.quantError) && finite(h.error))) throw bad("history");
    if (!Number.isSafeInteger(m.selectedIteration) || (m.selectedIteration as number) < 1 || (m.selectedIteration as number) > history.length) throw bad("selectedIteration");
  });
  return value as ReportMatrix[];
}

const COLORS = { qOnly: "#c0504d", loftq: "#1f77b4", grid: "#ddd", text: "#333" };
const BIT_COLORS: Record<number, string> = { 2: "#d62728", 3: "#ff7f0e", 4: "#2ca02c", 8: "#1f77b4" };

/** `notes`: lines shown under the summary (e.g. that the run kept PEFT's uncompensated scaling). */
export function renderReportHtml(entries: readonly ReportMatrix[], title = "LoftQ report", notes: readonly string[] = []): string {
  const matrices = checkReportMatrices(entries, "report");
  const best = (m: ReportMatrix) => m.history[m.selectedIteration - 1]!.error;
  const meanQ = mean(matrices.map((m) => m.qOnlyError));
  const meanL = mean(matrices.map(best));
  const totalSeconds = matrices.reduce((s, m) => s + m.seconds, 0);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;color:${COLORS.text};margin:24px;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.summary span{display:inline-block;margin-right:24px}.summary b{font-size:18px}
table{border-collapse:collapse;font-size:12px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left;font-family:ui-monospace,monospace}
.legend span{margin-right:16px}.swatch{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}
</style></head><body>
<h1>${escape(title)}</h1>
<p class="summary"><span><b>${matrices.length}</b> matrices</span><span>mean ‖W−Q‖/‖W‖ <b>${meanQ.toFixed(4)}</b> (Q only)</span>
<span>mean ‖W−Q−BA‖/‖W‖ <b>${meanL.toFixed(4)}</b> (LoftQ, ${((1 - meanL / meanQ) * 100).toFixed(1)}% lower)</span><span><b>${totalSeconds.toFixed(1)}</b> s</span></p>
${notes.map((note) => `<p class="note"><b>Note:</b> ${escape(note)}</p>`).join("\n")}
<h2>Error per layer</h2>
<p class="legend"><span><i class="swatch" style="background:${COLORS.qOnly}"></i>Q only (QLoRA start)</span><span><i class="swatch" style="background:${COLORS.loftq}"></i>LoftQ</span></p>
${layerChart(matrices, best)}
<h2>Error per iteration</h2>
${iterationChart(matrices)}
<h2>Bits map</h2>
${bitsMap(matrices)}
<h2>All matrices</h2>
<table><thead><tr><th>module</th><th>shape</th><th>bits</th><th>rank</th><th>‖W−Q‖</th><th>‖W−Q−BA‖</th><th>best iteration</th><th>time</th></tr></thead><tbody>
${matrices.map((m) => `<tr><td>${escape(m.module)}</td><td>${m.shape.join("×")}</td><td>${m.bits}</td><td>${m.rank}</td><td>${m.qOnlyError.toFixed(4)}</td><td>${best(m).toFixed(4)}</td><td>${m.selectedIteration}/${m.history.length}</td><td>${m.seconds.toFixed(2)} s</td></tr>`).join("\n")}
</tbody></table>
</body></html>
`;
}

function layerChart(matrices: readonly ReportMatrix[], best: (m: ReportMatrix) => number): string {
  const rowHeight = 18;
  const labelWidth = 300;
  const plotWidth = 700;
  const height = matrices.length * rowHeight + 30;
  const max = Math.max(largest(matrices.map((m) => m.qOnlyError)), 1e-12);
  const x = (v: number) => labelWidth + (v / max) * plotWidth;
  const bars = matrices.map((m, i) => {
    const y = i * rowHeight + 4;
    return `<text x="${labelWidth - 6}" y="${y + 12}" text-anchor="end" font-size="11" font-family="monospace">${escape(shorten(m.module, 42))}</text>
<rect x="${labelWidth}" y="${y}" width="${(x(m.qOnlyError) - labelWidth).toFixed(1)}" height="7" fill="${COLORS.qOnly}"><title>Q only ${m.qOnlyError.toFixed(4)}</title></rect>
<rect x="${labelWidth}" y="${y + 7}" width="${(x(best(m)) - labelWidth).toFixed(1)}" height="7" fill="${COLORS.loftq}"><title>LoftQ ${best(m).toFixed(4)}</title></rect>`;
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const tx = labelWidth + f * plotWidth;
    return `<line x1="${tx}" y1="0" x2="${tx}" y2="${height - 20}" stroke="${COLORS.grid}"/><text x="${tx}" y="${height - 6}" text-anchor="middle" font-size="10">${(f * max).toFixed(3)}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${labelWidth + plotWidth + 20}" height="${height}" role="img" aria-label="error per layer">${ticks.join("")}${bars.join("")}</svg>`;
}

function iterationChart(matrices: readonly ReportMatrix[]): string {
  const width = 700;
  const height = 300;
  const pad = 50;
  const iterations = largest(matrices.map((m) => m.history.length));
  const values = matrices.flatMap((m) => m.history.map((h) => h.error));
  const lo = -largest(values.map((v) => -v));
  const hi = largest(values);
  const span = hi - lo || hi || 1;
  const x = (i: number) => pad + (iterations === 1 ? (width - 2 * pad) / 2 : (i / (iterations - 1)) * (width - 2 * pad));
  const y = (v: number) => height - pad - ((v - lo) / span) * (height - 2 * pad);
  const lines = matrices.map((m) => {
    const points = m.history.map((h, i) => `${x(i).toFixed(1)},${y(h.error).toFixed(1)}`).join(" ");
    const color = BIT_COLORS[m.bits] ?? "#777";
    const marker = m.history.map((h, i) => `<circle cx="${x(i).toFixed(1)}" cy="${y(h.error).toFixed(1)}" r="${i === m.selectedIteration - 1 ? 3.5 : 2}" fill="${color}"/>`).join("");
    return `<g><title>${escape(m.module)}</title><polyline points="${points}" fill="none" stroke="${color}" stroke-opacity="0.6"/>${marker}</g>`;
  });
  const axis = Array.from({ length: iterations }, (_, i) => `<text x="${x(i)}" y="${height - pad + 18}" text-anchor="middle" font-size="11">T=${i + 1}</text>`);
  const yTicks = [0, 0.5, 1].map((f) => {
    const v = lo + f * span;
    return `<line x1="${pad}" x2="${width - pad}" y1="${y(v)}" y2="${y(v)}" stroke="${COLORS.grid}"/><text x="${pad - 6}" y="${y(v) + 4}" text-anchor="end" font-size="10">${v.toFixed(4)}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="error per iteration">${yTicks.join("")}${axis.join("")}${lines.join("")}
<text x="${width / 2}" y="16" text-anchor="middle" font-size="12">‖W−Q−BA‖/‖W‖ per iteration (larger dot: the iterate kept), colour = bits</text></svg>`;
}

function bitsMap(matrices: readonly ReportMatrix[]): string {
  const cell = 22;
  const layers = new Map<string, ReportMatrix[]>();
  for (const m of matrices) {
    const layer = /\.(\d+)\./.exec(m.module)?.[1] ?? "–";
    layers.set(layer, [...(layers.get(layer) ?? []), m]);
  }
  const rows = [...layers.entries()];
  const width = 80 + largest(rows.map(([, ms]) => ms.length)) * (cell + 2);
  const svgRows = rows.map(([layer, ms], r) => {
    const y = r * (cell + 2);
    const cells = ms.map((m, c) => `<rect x="${80 + c * (cell + 2)}" y="${y}" width="${cell}" height="${cell}" fill="${BIT_COLORS[m.bits] ?? "#999"}"><title>${escape(m.module)}: ${m.bits}-bit</title></rect><text x="${80 + c * (cell + 2) + cell / 2}" y="${y + 15}" text-anchor="middle" font-size="11" fill="#fff">${m.bits}</text>`);
    return `<text x="0" y="${y + 15}" font-size="11">layer ${escape(layer)}</text>${cells.join("")}`;
  });
  const legend = Object.entries(BIT_COLORS).map(([bits, color]) => `<span><i class="swatch" style="background:${color}"></i>${bits}-bit</span>`).join("");
  return `<p class="legend">${legend}</p><svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${rows.length * (cell + 2)}" role="img" aria-label="bits map">${svgRows.join("")}</svg>`;
}

/** Math.max(...values) without spreading: a 50k-expert model's values would overflow the call stack. */
function largest(values: readonly number[]): number {
  let out = -Infinity;
  for (const v of values) if (v > out) out = v;
  return out;
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / Math.max(values.length, 1);
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `…${text.slice(text.length - max + 1)}`;
}

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}
