/* manymodels report: draws everything from the inline data blocks, with plain SVG.
 *
 * #mm-data   the run summary and one columnar table of all groups (parsed once);
 * #mm-series one JSON line per group with its chart data; a line is parsed only
 *            when its group is selected (the table holds each line's offset and length).
 */
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const D = JSON.parse(document.getElementById("mm-data").textContent);
  const SERIES_TEXT = document.getElementById("mm-series").textContent;
  const G = decode(D.groups);
  const N = G.label.length;
  const LOWER = G.label.map((l) => l.toLowerCase());
  const META = D.meta;

  // -- DOM helpers ------------------------------------------------------------
  function build(make, tag, attrs, children) {
    const e = make(tag);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of (children || []).flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const h = (tag, attrs, ...children) => build((t) => document.createElement(t), tag, attrs, children);
  const s = (tag, attrs, ...children) => build((t) => document.createElementNS(SVG, t), tag, attrs, children);
  const $ = (id) => document.getElementById(id);
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function empty(msg) { return h("p", { class: "empty", text: msg }); }

  function decode(obj) {
    if (obj && typeof obj === "object" && !Array.isArray(obj)) {
      if (Array.isArray(obj.levels) && Array.isArray(obj.codes)) return obj.codes.map((c) => (c < 0 ? null : obj.levels[c]));
      const out = {};
      for (const k in obj) out[k] = decode(obj[k]);
      return out;
    }
    return obj;
  }

  // -- numbers and scales -----------------------------------------------------
  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (Number.isInteger(v) && a < 1e7) return v.toLocaleString("en-US");
    if (a !== 0 && (a >= 1e7 || a < 1e-3)) return v.toExponential(2);
    if (a >= 1000) return Math.round(v).toLocaleString("en-US");
    if (a >= 100) return v.toFixed(1);
    if (a >= 1) return v.toFixed(2);
    return v.toPrecision(3);
  }
  function fmtSeconds(v) {
    if (v === null || v === undefined) return "–";
    if (v < 1) return (v * 1000).toFixed(0) + " ms";
    if (v < 120) return v.toFixed(2) + " s";
    return (v / 60).toFixed(1) + " min";
  }
  function linear(d0, d1, r0, r1) {
    const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
    return (v) => r0 + (v - d0) * k;
  }
  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    const norm = raw / mag;
    return (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
  }
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const step = niceStep(hi - lo, count);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }
  function quantile(sorted, q) {
    if (!sorted.length) return NaN;
    const pos = (sorted.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  }
  function stats(values) {
    const v = values.slice().sort((a, b) => a - b);
    const q1 = quantile(v, 0.25), med = quantile(v, 0.5), q3 = quantile(v, 0.75), iqr = q3 - q1;
    let lo = v[0], hi = v[v.length - 1];
    for (const x of v) { if (x >= q1 - 1.5 * iqr) { lo = x; break; } }
    for (let i = v.length - 1; i >= 0; i--) { if (v[i] <= q3 + 1.5 * iqr) { hi = v[i]; break; } }
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    return { sorted: v, n: v.length, q1, med, q3, lo, hi, min: v[0], max: v[v.length - 1], mean };
  }
  function finite(v) { return v !== null && v !== undefined && Number.isFinite(v); }

  // -- period labels ----------------------------------------------------------
  function periodLabel(p) {
    const a = META.axis;
    if (!a) return String(p);
    if (a.kind === "int") return String(a.offset + p * a.step);
    if (a.kind === "month") {
      const m = p * a.step, y = Math.floor(m / 12), mo = m - 12 * y + 1;
      return y + "-" + String(mo).padStart(2, "0");
    }
    const iso = new Date(a.offset_ms + p * a.step_ms).toISOString();
    return a.date_only ? iso.slice(0, 10) : iso.slice(0, 16).replace("T", " ");
  }

  // -- tables -------------------------------------------------------------------
  function table(columns, rows, onPick) {
    const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null, text: c.label })));
    const body = rows.map((r) =>
      h("tr", { class: onPick ? "pick" : null, onclick: onPick ? () => onPick(r) : null },
        columns.map((c) => {
          const v = c.get(r);
          return h("td", { class: (c.num ? "num " : "") + (c.cls || ""), text: v === null || v === undefined ? "" : String(v), title: c.title ? c.title(r) : null });
        })));
    return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
  }

  // -- summary ------------------------------------------------------------------
  function dl(pairs) {
    return h("dl", {}, pairs.filter((p) => p[1] !== null && p[1] !== undefined && p[1] !== "").map(([k, v]) => [h("dt", { text: k }), h("dd", { text: String(v) })]));
  }
  function when(iso) { return iso ? iso.slice(0, 19).replace("T", " ") + " UTC" : null; }
  function counts(c) { return Object.entries(c || {}).map(([k, v]) => `${k} ${v}`).join(", "); }
  function drawSummary() {
    $("title").textContent = META.title;
    $("subtitle").textContent = `datastore ${META.datastore} · generated ${META.generated} · manymodels ${META.mm_version}` + (META.config ? ` · config ${META.config}` : "");
    const box = clear($("summary-cards"));
    const sm = D.summary;
    if (sm.split) {
      box.appendChild(h("div", { class: "card", id: "card-split" }, h("h3", { text: "Split" }), dl([
        ["groups", `${sm.split.n_groups} (${sm.split.n_series} series)`],
        ["rows", `${sm.split.n_train_rows} train, ${sm.split.n_inference_rows} inference`],
        ["time span", `${sm.split.first_time} .. ${sm.split.last_time} (${sm.split.frequency})`],
        ["cutoff", sm.split.cutoff],
        ["run", sm.split.run_id],
      ])));
    }
    if (sm.train) {
      const t = sm.train;
      box.appendChild(h("div", { class: "card", id: "card-train" }, h("h3", { text: `Train: ${t.status}` }), dl([
        ["run", t.id],
        ["started", when(t.started)],
        ["duration", fmtSeconds(t.duration_s)],
        ["groups", counts(t.counts)],
        ["tuned", t.tuned],
        ["models chosen", Object.entries(t.winners).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ")],
        ["median backtest", Object.entries(t.median_backtest).map(([k, v]) => {
          const over = t.median_groups && t.median_groups[k] < t.n_models ? ` (${t.median_groups[k]} of ${t.n_models} groups)` : "";
          return metricText(k, v) + over;
        }).join(", ")],
        ["not scored", Object.entries(t.unscored || {}).filter(([, n]) => n).map(([k, n]) => `${NAMES[k]}: ${fmt(n)} of ${fmt(t.backtest_rows)} backtest rows ${SHORT[k]}`).join("; ")],
        ["metric fallback", Object.entries(t.metric_fallbacks || {}).map(([k, n]) => `${n} group(s) chosen by ${k}`).join(", ")],
        ["training time", `${fmtSeconds(t.training_seconds.total)} in all, median ${fmtSeconds(t.training_seconds.median)} per group`],
      ])));
    }
    if (sm.forecast) {
      const f = sm.forecast;
      const a = f.accuracy || {}, rows = a.n_rows, unscored = f.unscored || {};
      const acc = Object.keys(NAMES).filter((k) => k in a).map((k) => {
        const miss = unscored[k] || 0;
        if (miss) return metricText(k, a[k]) + ` (${fmt(rows - miss)} of ${fmt(rows)} rows scored; ${fmt(miss)} ${SHORT[k]})`;
        if (k === "smape" && a.n_both_zero) return metricText(k, a[k]) + ` (${fmt(a.n_both_zero)} rows with actual and forecast 0 count as exact)`;
        return metricText(k, a[k]);
      }).join(", ");
      box.appendChild(h("div", { class: "card", id: "card-forecast" }, h("h3", { text: `Forecast: ${f.status}` }), dl([
        ["run", f.id],
        ["models from", f.train_run_id],
        ["started", when(f.started)],
        ["duration", fmtSeconds(f.duration_s)],
        ["groups", counts(f.counts)],
        ["accuracy", acc ? `${acc} (${f.accuracy.n_rows} rows with actuals)` : "no actuals in the inference rows"],
        ["interval coverage", Object.entries(f.coverage || {}).map(([k, v]) => `below ${k}: ${(100 * v).toFixed(1)}%`).join(", ")],
      ])));
    }
    box.appendChild(h("div", { class: "card", id: "card-failures" }, h("h3", { text: "Failures" }),
      dl([["groups failed", D.summary.n_failed], ["groups in report", N]])));
    const runs = D.runs;
    $("recent-runs").appendChild(runs.length ? table([
      { label: "run", get: (r) => r.id }, { label: "step", get: (r) => r.step }, { label: "status", get: (r) => r.status },
      { label: "started (UTC)", get: (r) => (r.started || "").slice(0, 19) }, { label: "duration", num: true, get: (r) => fmtSeconds(r.duration_s) },
      { label: "groups", get: (r) => counts(r.counts) },
    ], runs) : empty("no runs"));
    $("footer").textContent = `${N} groups · chart data for each group is read when the group is selected`;
  }

  // -- box and violin plots ---------------------------------------------------------
  function metricValues(id) {
    const m = D.metrics.find((x) => x.id === id);
    return m ? G[m.src][m.key] : new Array(N).fill(null);
  }
  function metricLabel(id) { const m = D.metrics.find((x) => x.id === id); return m ? m.label : id; }

  // -- what a metric could not score (see core/metrics.py) --------------------------------
  const NAMES = { wape: "WAPE", mase: "MASE", smape: "sMAPE", mape: "MAPE", rmse: "RMSE" };
  const PERCENT = new Set(["wape", "smape", "mape"]);
  const WHY = {
    mape: "actual 0: MAPE is undefined there",
    wape: "groups whose actuals are all 0: WAPE is undefined there",
    mase: "groups with a constant history: no MASE scale",
  };
  const SHORT = { mape: "have actual 0", wape: "are in groups whose actuals are all 0", mase: "are in groups with a constant history (no scale)" };
  function metricText(key, v) { return `${NAMES[key] || key} ${fmt(v)}${PERCENT.has(key) && finite(v) ? "%" : ""}`; }
  /* rows of group i that metric key of src ("bt" or "fc") could not score, and the rows it had */
  function missed(src, key, i) {
    const miss = (G[`${src}_miss`] || {})[key], n = G[`${src}_n`];
    return miss && n && finite(miss[i]) && finite(n[i]) ? [miss[i], n[i]] : [0, 0];
  }
  function scoredText(src, key, i) {
    const [miss, n] = missed(src, key, i);
    return miss ? ` (${n - miss} of ${n} rows)` : "";
  }

  /* entries: [[name, values[]], ...]; draws one horizontal box (or violin) per entry. */
  function drawBoxes(container, entries, opts) {
    clear(container);
    if (!entries.length) { container.appendChild(empty(opts.emptyText || "no values")); return; }
    const st = entries.map(([name, vals]) => [name, stats(vals)]);
    const violin = opts.style === "violin";
    const width = Math.max(container.clientWidth || 900, 420);
    const rowH = violin ? 44 : 26, left = Math.min(190, width * 0.24), right = Math.min(200, width * 0.28), top = 8, bottom = 34;
    const height = top + bottom + rowH * st.length;
    // the axis reaches the farthest whisker or the 99th percentile: rarer outliers are counted, not drawn
    const everything = entries.flatMap((e) => e[1]).sort((a, b) => a - b);
    let lo = Math.min(0, ...st.map(([, x]) => x.lo)), hi = Math.max(...st.map(([, x]) => x.hi), quantile(everything, 0.99));
    if (!(hi > lo)) hi = lo + 1;
    hi = hi + (hi - lo) * 0.04;
    const x = linear(lo, hi, left, width - right);
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": opts.xLabel });
    const grid = s("g", { class: "grid" }), axis = s("g", { class: "axis" });
    for (const t of ticks(lo, hi, Math.max(3, Math.floor((width - left - right) / 80)))) {
      grid.appendChild(s("line", { x1: x(t), x2: x(t), y1: top, y2: height - bottom }));
      axis.appendChild(s("text", { x: x(t), y: height - bottom + 14, "text-anchor": "middle", text: fmt(t) }));
    }
    axis.appendChild(s("line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom }));
    axis.appendChild(s("text", { x: (left + width - right) / 2, y: height - 4, "text-anchor": "middle", text: opts.xLabel }));
    svg.append(grid, axis);
    st.forEach(([name, b], i) => {
      const cy = top + rowH * i + rowH / 2, half = rowH / 2 - 4;
      const g = s("g", { class: "box" });
      const label = String(name);
      g.appendChild(s("text", { x: left - 8, y: cy + 4, "text-anchor": "end", text: label.length > 28 ? label.slice(0, 27) + "…" : label }, s("title", { text: label })));
      if (violin && b.n > 1) g.appendChild(violinPath(b, x, cy, half, lo, hi));
      const boxH = violin ? Math.min(6, half) : half;
      g.appendChild(s("line", { x1: x(b.lo), x2: x(b.q1), y1: cy, y2: cy, stroke: "#4a5568" }));
      g.appendChild(s("line", { x1: x(b.q3), x2: x(b.hi), y1: cy, y2: cy, stroke: "#4a5568" }));
      for (const w of [b.lo, b.hi]) g.appendChild(s("line", { x1: x(w), x2: x(w), y1: cy - boxH / 2, y2: cy + boxH / 2, stroke: "#4a5568" }));
      g.appendChild(s("rect", { x: x(b.q1), y: cy - boxH, width: Math.max(x(b.q3) - x(b.q1), 1), height: 2 * boxH, fill: violin ? "#2d3748" : "#bee3f8", stroke: "#2b6cb0" }));
      g.appendChild(s("line", { x1: x(b.med), x2: x(b.med), y1: cy - boxH, y2: cy + boxH, stroke: violin ? "#fff" : "#1a365d", "stroke-width": 2 }));
      let beyond = 0;
      for (const v of b.sorted) {
        if (v >= b.lo && v <= b.hi) continue;
        if (v > hi) { beyond++; continue; }
        g.appendChild(s("circle", { cx: x(v), cy, r: 2, fill: "none", stroke: "#718096" }));
      }
      const more = beyond ? ` · ${beyond} > ${fmt(hi)}` : "";
      g.appendChild(s("text", { x: width - right + 8, y: cy + 4, text: `n ${b.n} · median ${fmt(b.med)}${more}` }));
      g.appendChild(s("title", { text: `${label}\nn ${b.n}\nmin ${fmt(b.min)}  q1 ${fmt(b.q1)}  median ${fmt(b.med)}  q3 ${fmt(b.q3)}  max ${fmt(b.max)}\nmean ${fmt(b.mean)}` }));
      svg.appendChild(g);
    });
    container.appendChild(svg);
  }
  function violinPath(b, x, cy, half, lo, hi) {
    const v = b.sorted, n = v.length;
    const sd = Math.sqrt(v.reduce((a, t) => a + (t - b.mean) * (t - b.mean), 0) / Math.max(n - 1, 1));
    const spread = Math.min(sd, (b.q3 - b.q1) / 1.34) || sd || Math.abs(b.mean) * 0.1 || 1;
    const bw = 1.06 * spread * Math.pow(n, -0.2);
    const from = Math.max(lo, b.min - 2 * bw), to = Math.min(hi, b.max + 2 * bw), steps = 60;
    const xs = [], ds = [];
    // a sorted sample: only points within 4 bandwidths matter for each grid point
    let start = 0;
    for (let k = 0; k <= steps; k++) {
      const at = from + ((to - from) * k) / steps;
      while (start < n && v[start] < at - 4 * bw) start++;
      let d = 0;
      for (let j = start; j < n && v[j] <= at + 4 * bw; j++) { const z = (at - v[j]) / bw; d += Math.exp(-0.5 * z * z); }
      xs.push(at); ds.push(d);
    }
    const peak = Math.max(...ds) || 1;
    const up = xs.map((t, k) => `${x(t).toFixed(1)},${(cy - (ds[k] / peak) * half).toFixed(1)}`);
    const down = xs.map((t, k) => `${x(t).toFixed(1)},${(cy + (ds[k] / peak) * half).toFixed(1)}`).reverse();
    return s("path", { d: `M${up.join("L")}L${down.join("L")}Z`, fill: "#bee3f8", stroke: "#2b6cb0", "stroke-width": 1 });
  }

  const MAX_CATEGORIES = 30;
  function categoriesOf(by) {
    if (by === "") return null;
    if (by === "@model") return G.model;
    if (by === "@status") return G.train_status;
    return G.cols[by];
  }
  function drawDistribution() {
    const id = $("dist-metric").value, by = $("dist-by").value, style = $("dist-style").value;
    const values = metricValues(id), cats = categoriesOf(by);
    const buckets = new Map();
    for (let i = 0; i < N; i++) {
      const v = values[i];
      if (!finite(v)) continue;
      const c = cats ? (cats[i] === null ? "(none)" : cats[i]) : "all groups";
      if (!buckets.has(c)) buckets.set(c, []);
      buckets.get(c).push(v);
    }
    let entries = [...buckets.entries()];
    let note = "";
    if (entries.length > MAX_CATEGORIES) {
      entries.sort((a, b) => b[1].length - a[1].length);
      note = `Showing the ${MAX_CATEGORIES} values with the most groups out of ${entries.length}; pick a coarser column to see them all. `;
      entries = entries.slice(0, MAX_CATEGORIES);
    }
    entries.sort((a, b) => String(a[0]).localeCompare(String(b[0]), undefined, { numeric: true }));
    drawBoxes($("dist-plot"), entries, { style, xLabel: metricLabel(id), emptyText: "no group has this metric" });
    const counted = entries.reduce((a, e) => a + e[1].length, 0);
    $("dist-note").textContent = note + `${counted} of ${N} groups have a ${metricLabel(id)}.${coverageNote(id)} Boxes: quartiles; whiskers: 1.5 IQR; circles: outliers.`;
    drawRanking(id);
  }

  /* " It could not score R of T rows (why)." over every group, when it skipped any */
  function coverageNote(id) {
    const m = D.metrics.find((x) => x.id === id);
    if (!m || !WHY[m.key]) return "";
    let miss = 0, total = 0;
    for (let i = 0; i < N; i++) { const [k, n] = missed(m.src, m.key, i); miss += k; total += n; }
    if (!miss) return "";
    const what = m.src === "bt" ? "backtest rows" : "rows with actuals";
    return ` It could not score ${fmt(miss)} of the ${fmt(total)} ${what} (${WHY[m.key]}).`;
  }

  // -- worst and best -------------------------------------------------------------------
  function rankColumns(id) {
    const values = metricValues(id);
    const cols = [
      { label: "group", get: (i) => G.label[i] },
      { label: "model", get: (i) => G.model[i] || "" },
      { label: metricLabel(id), num: true, get: (i) => fmt(values[i]) },
    ];
    const m = D.metrics.find((x) => x.id === id);
    if (m && WHY[m.key] && G.label.some((_, i) => finite(values[i]) && missed(m.src, m.key, i)[0])) {  // a ranked group it scored only in part
      cols.push({ label: "rows scored", num: true, get: (i) => { const [miss, n] = missed(m.src, m.key, i); return n ? `${n - miss} of ${n}` : ""; } });
    }
    for (const other of ["bt_wape", "fc_wape"]) {
      if (other !== id && D.metrics.some((m) => m.id === other)) {
        const ov = metricValues(other);
        cols.push({ label: metricLabel(other), num: true, get: (i) => fmt(ov[i]) });
      }
    }
    return cols;
  }
  function drawRanking(id) {
    const values = metricValues(id);
    const idx = [];
    for (let i = 0; i < N; i++) if (finite(values[i])) idx.push(i);
    idx.sort((a, b) => values[a] - values[b]);
    $("rank-metric").textContent = `by ${metricLabel(id)}`;
    const cols = rankColumns(id);
    const pick = (i) => { selectGroup(i); $("explorer").scrollIntoView(); };
    clear($("worst")).appendChild(idx.length ? table(cols, idx.slice(-10).reverse(), pick) : empty("no values"));
    clear($("best")).appendChild(idx.length ? table(cols, idx.slice(0, 10), pick) : empty("no values"));
  }

  // -- group explorer ------------------------------------------------------------------
  const LIST_MAX = 500;
  let matches = [];
  let current = -1;
  function refreshList() {
    const terms = $("group-search").value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    matches = [];
    for (let i = 0; i < N; i++) if (terms.every((t) => LOWER[i].includes(t))) matches.push(i);
    const list = clear($("group-list"));
    for (const i of matches.slice(0, LIST_MAX)) list.appendChild(h("option", { value: i, text: G.label[i], selected: i === current ? "selected" : null }));
    $("group-count").textContent = matches.length > LIST_MAX
      ? `${matches.length} of ${N} groups match; showing the first ${LIST_MAX}, type more to narrow`
      : `${matches.length} of ${N} groups`;
  }
  const cache = new Map();
  function groupData(i) {
    if (cache.has(i)) return cache.get(i);
    const off = G.off[i], len = G.len[i];
    const data = off >= 0 && len > 0 ? JSON.parse(SERIES_TEXT.substr(off, len)) : {};
    if (cache.size > 200) cache.delete(cache.keys().next().value);
    cache.set(i, data);
    return data;
  }
  function selectGroup(i, fromHash) {
    if (!(i >= 0 && i < N)) return;
    current = i;
    const list = $("group-list");
    const opt = [...list.options].find((o) => o.value === String(i));
    if (opt) opt.selected = true;
    else list.selectedIndex = -1; // picked from a table while the search shows other groups
    if (!fromHash) history.replaceState(null, "", "#group=" + encodeURIComponent(G.label[i]));
    const data = groupData(i);
    $("group-title").textContent = G.label[i];
    $("group-chart").dataset.group = G.label[i];
    const picker = clear($("series-picker"));
    const series = data.s || [];
    const draw = (k) => drawGroupChart($("group-chart"), series[k]);
    if (series.length > 1) {
      const sel = h("select", { id: "series-select", onchange: (e) => draw(+e.target.value) }, series.map((x, k) => h("option", { value: k, text: x.n || `series ${k + 1}` })));
      picker.appendChild(h("label", {}, `series (${series.length}) `, sel));
    }
    if (series.length) draw(0);
    else clear($("group-chart")).appendChild(empty("no chart data for this group (no train partition or forecast)"));
    drawFacts(i, data);
    drawGroupInsights(data);
  }
  function drawFacts(i, data) {
    const pairs = [];
    for (const c of META.group_columns) pairs.push([c, G.cols[c][i]]);
    pairs.push(["model", G.model[i] ? `${G.model[i]} v${G.version[i]}` : "none"]);
    pairs.push(["train status", G.train_status[i]]);
    if (G.decision[i]) pairs.push(["why", G.decision[i]]);
    if (G.n_train_rows[i] !== null) pairs.push(["training rows", G.n_train_rows[i]]);
    if (G.duration[i] !== null) pairs.push(["training time", fmtSeconds(G.duration[i])]);
    if (G.tuning[i]) pairs.push(["tuning", G.tuning[i]]);
    const bt = Object.entries(G.bt).filter(([, v]) => finite(v[i])).map(([k, v]) => `${k} ${fmt(v[i])}${scoredText("bt", k, i)}`).join(", ");
    if (bt) pairs.push(["backtest", bt]);
    if (G.bt_by && G.bt_by[i]) pairs.push(["chosen by", G.bt_by[i]]);
    if (G.fc_status[i]) pairs.push(["forecast status", G.fc_status[i] + (G.fc_decision[i] ? ` (${G.fc_decision[i]})` : "")]);
    const fc = Object.entries(G.fc).filter(([, v]) => finite(v[i])).map(([k, v]) => `${k} ${fmt(v[i])}${scoredText("fc", k, i)}`).join(", ");
    if (fc) pairs.push(["forecast accuracy", fc]);
    if (data.scores) pairs.push(["candidate scores", Object.entries(data.scores).filter(([, v]) => finite(v)).sort((a, b) => a[1] - b[1]).map(([k, v]) => `${k} ${fmt(v)}`).join(", ")]);
    if (data.note) pairs.push(["note", data.note]);
    const box = clear($("group-facts"));
    box.appendChild(table([{ label: "", get: (p) => p[0] }, { label: "", get: (p) => p[1] }], pairs.filter((p) => p[1] !== null && p[1] !== undefined && p[1] !== "")));
    for (const [what, reason, err] of [["train", G.train_reason[i], G.train_error[i]], ["forecast", G.fc_reason[i], G.fc_error[i]]]) {
      if (err) box.appendChild(h("p", { class: "err", text: `${what} failed (${reason || "error"}): ${err}` }));
    }
  }

  function drawGroupChart(container, sd) {
    clear(container);
    const width = Math.max(container.clientWidth || 900, 420), height = 320;
    const m = { l: 64, r: 16, t: 30, b: 36 };
    const hist = [], fc = [], lo = [], hi = [], act = [], base = [];
    (sd.y || []).forEach((v, k) => { if (finite(v)) hist.push([sd.p0 + k, v]); });
    (sd.f || []).forEach((v, k) => {
      const p = sd.f0 + k;
      if (finite(v)) fc.push([p, v]);
      if (sd.lo && finite(sd.lo[k]) && finite(sd.hi[k])) { lo.push([p, sd.lo[k]]); hi.push([p, sd.hi[k]]); }
      if (sd.a && finite(sd.a[k])) act.push([p, sd.a[k]]);
      if (sd.b && finite(sd.b[k])) base.push([p, sd.b[k]]); // a hierarchy node's base forecast
    });
    const all = [...hist, ...fc, ...lo, ...hi, ...act, ...base];
    if (!all.length) { container.appendChild(empty("no values to chart")); return; }
    const px = all.map((q) => q[0]), py = all.map((q) => q[1]);
    const x0 = Math.min(...px), x1 = Math.max(...px);
    let y0 = Math.min(...py), y1 = Math.max(...py);
    if (y0 >= 0 && y0 < 0.3 * y1) y0 = 0;
    const pad = (y1 - y0) * 0.06 || Math.abs(y1) * 0.1 || 1;
    y1 += pad; if (y0 !== 0) y0 -= pad;
    const x = linear(x0 - 0.5, x1 + 0.5, m.l, width - m.r), y = linear(y0, y1, height - m.b, m.t);
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "history and forecast" });
    const grid = s("g", { class: "grid" }), axis = s("g", { class: "axis" });
    for (const t of ticks(y0, y1, 6)) {
      grid.appendChild(s("line", { x1: m.l, x2: width - m.r, y1: y(t), y2: y(t) }));
      axis.appendChild(s("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end", text: fmt(t) }));
    }
    const step = Math.max(1, Math.round(niceStep(x1 - x0 + 1, 7)));
    for (let p = Math.ceil(x0 / step) * step; p <= x1; p += step) {
      axis.appendChild(s("line", { x1: x(p), x2: x(p), y1: height - m.b, y2: height - m.b + 4 }));
      axis.appendChild(s("text", { x: x(p), y: height - m.b + 16, "text-anchor": "middle", text: periodLabel(p) }));
    }
    axis.appendChild(s("line", { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b }));
    axis.appendChild(s("text", { x: 12, y: m.t - 12, text: META.target }));
    svg.append(grid, axis);
    if (hist.length && (fc.length || act.length)) {
      const cut = hist[hist.length - 1][0] + 0.5;
      svg.appendChild(s("line", { x1: x(cut), x2: x(cut), y1: m.t, y2: height - m.b, stroke: "#a0aec0", "stroke-dasharray": "4 3" }));
      svg.appendChild(s("text", { x: x(cut) + 4, y: m.t + 10, class: "muted", text: "cutoff" }));
    }
    if (lo.length) svg.appendChild(s("path", { class: "band", d: area(lo, hi, x, y), fill: "var(--band)", stroke: "none" }));
    if (hist.length) svg.appendChild(s("path", { class: "history", d: line(hist, x, y), fill: "none", stroke: "var(--hist)", "stroke-width": 1.6 }));
    if (act.length) svg.appendChild(s("path", { class: "actual", d: line(act, x, y), fill: "none", stroke: "var(--actual)", "stroke-width": 1.6, "stroke-dasharray": "5 3" }));
    if (base.length) svg.appendChild(s("path", { class: "base", d: line(base, x, y), fill: "none", stroke: "var(--muted, #718096)", "stroke-width": 1.6, "stroke-dasharray": "2 3" }));
    if (fc.length) svg.appendChild(s("path", { class: "forecast", d: line(fc, x, y), fill: "none", stroke: "var(--fc)", "stroke-width": 2 }));
    if (fc.length === 1) svg.appendChild(s("circle", { cx: x(fc[0][0]), cy: y(fc[0][1]), r: 3, fill: "var(--fc)" }));
    const legend = s("g", { class: "legend" });
    let lx = m.l + 60;
    const items = [["history", "var(--hist)", hist.length], [base.length ? "reconciled" : "forecast", "var(--fc)", fc.length], ["base", "var(--muted, #718096)", base.length],
      [META.band && META.band.length ? `interval ${META.band.join(" – ")}` : "interval", "var(--band)", lo.length], ["actual", "var(--actual)", act.length]];
    for (const [name, color, present] of items) {
      if (!present) continue;
      legend.appendChild(s("rect", { x: lx, y: m.t - 22, width: 14, height: 8, fill: color }));
      legend.appendChild(s("text", { x: lx + 18, y: m.t - 14, text: name }));
      lx += 30 + name.length * 6.5;
    }
    svg.appendChild(legend);
    hover(svg, { hist, fc, lo, hi, act }, x, y, m, width, height, x0, x1);
    container.appendChild(svg);
  }
  function line(points, x, y) {
    let d = "", prev = null;
    for (const [p, v] of points) {
      d += (prev !== null && p === prev + 1 ? "L" : "M") + x(p).toFixed(1) + "," + y(v).toFixed(1);
      prev = p;
    }
    return d;
  }
  function area(lo, hi, x, y) {
    let d = "", run = [];
    const flush = () => {
      if (!run.length) return;
      const up = run.map((k) => `${x(hi[k][0]).toFixed(1)},${y(hi[k][1]).toFixed(1)}`);
      const down = run.map((k) => `${x(lo[k][0]).toFixed(1)},${y(lo[k][1]).toFixed(1)}`).reverse();
      if (run.length === 1) { const k = run[0]; d += `M${x(lo[k][0]) - 2},${y(hi[k][1])}L${x(lo[k][0]) + 2},${y(hi[k][1])}L${x(lo[k][0]) + 2},${y(lo[k][1])}L${x(lo[k][0]) - 2},${y(lo[k][1])}Z`; }
      else d += `M${up.join("L")}L${down.join("L")}Z`;
      run = [];
    };
    lo.forEach((q, k) => { if (run.length && q[0] !== lo[run[run.length - 1]][0] + 1) flush(); run.push(k); });
    flush();
    return d;
  }
  function hover(svg, sets, x, y, m, width, height, x0, x1) {
    const maps = {};
    for (const k in sets) maps[k] = new Map(sets[k].map((q) => [q[0], q[1]]));
    const guide = s("line", { y1: m.t, y2: height - m.b, stroke: "#718096", visibility: "hidden" });
    const tip = s("text", { class: "tip", y: m.t + 24, visibility: "hidden" });
    const zone = s("rect", { x: m.l, y: m.t, width: width - m.l - m.r, height: height - m.t - m.b, fill: "transparent" });
    zone.addEventListener("mousemove", (e) => {
      const box = svg.getBoundingClientRect();
      const px = ((e.clientX - box.left) * width) / box.width;
      const p = Math.round(x0 + ((px - x(x0)) / (x(x1) - x(x0) || 1)) * (x1 - x0));
      const parts = [periodLabel(p)];
      for (const [k, name] of [["hist", "history"], ["act", "actual"], ["fc", "forecast"], ["lo", "low"], ["hi", "high"]]) {
        if (maps[k].has(p)) parts.push(`${name} ${fmt(maps[k].get(p))}`);
      }
      guide.setAttribute("x1", x(p)); guide.setAttribute("x2", x(p)); guide.setAttribute("visibility", "visible");
      tip.textContent = parts.join("  ·  ");
      const right = x(p) > width / 2;
      tip.setAttribute("x", right ? x(p) - 8 : x(p) + 8);
      tip.setAttribute("text-anchor", right ? "end" : "start");
      tip.setAttribute("visibility", "visible");
    });
    zone.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden"); tip.setAttribute("visibility", "hidden"); });
    svg.append(guide, tip, zone);
  }

  // -- training time ----------------------------------------------------------------------
  function histogram(container, values, xLabel) {
    clear(container);
    if (!values.length) { container.appendChild(empty("no training times (no group was trained)")); return; }
    const sorted = values.slice().sort((a, b) => a - b);
    const top = quantile(sorted, 0.99) || sorted[sorted.length - 1] || 1;
    const bins = 30, width = Math.max(container.clientWidth || 600, 360), height = 220, m = { l: 48, r: 12, t: 10, b: 34 };
    const counts = new Array(bins).fill(0);
    let beyond = 0;
    for (const v of sorted) {
      if (v > top) { beyond++; continue; }
      counts[Math.min(bins - 1, Math.floor((v / top) * bins))]++;
    }
    const x = linear(0, top, m.l, width - m.r), y = linear(0, Math.max(...counts), height - m.b, m.t);
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": xLabel });
    const axis = s("g", { class: "axis" });
    for (const t of ticks(0, top, 6)) axis.appendChild(s("text", { x: x(t), y: height - m.b + 14, "text-anchor": "middle", text: fmt(t) }));
    for (const t of ticks(0, Math.max(...counts), 4)) axis.appendChild(s("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end", text: fmt(t) }));
    axis.appendChild(s("line", { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b }));
    axis.appendChild(s("text", { x: (m.l + width - m.r) / 2, y: height - 4, "text-anchor": "middle", text: xLabel + (beyond ? ` (${beyond} slower groups not shown)` : "") }));
    svg.appendChild(axis);
    counts.forEach((c, k) => {
      if (!c) return;
      const a = (top * k) / bins, b = (top * (k + 1)) / bins;
      svg.appendChild(s("rect", { x: x(a) + 0.5, y: y(c), width: Math.max(x(b) - x(a) - 1, 1), height: y(0) - y(c), fill: "#90cdf4" }, s("title", { text: `${fmt(a)}–${fmt(b)} s: ${c} groups` })));
    });
    container.appendChild(svg);
  }
  function drawTiming() {
    const secs = [], byModel = new Map(), idx = [];
    for (let i = 0; i < N; i++) {
      const v = G.duration[i];
      if (!finite(v)) continue;
      secs.push(v); idx.push(i);
      const k = G.model[i] || "(failed)";
      if (!byModel.has(k)) byModel.set(k, []);
      byModel.get(k).push(v);
    }
    const total = secs.reduce((a, b) => a + b, 0);
    $("time-note").textContent = secs.length
      ? `${secs.length} groups, ${fmtSeconds(total)} of fitting in all (CPU time across workers), median ${fmtSeconds(quantile(secs.slice().sort((a, b) => a - b), 0.5))}. Reused models count with the time of the run that trained them.`
      : "";
    histogram($("time-hist"), secs, "seconds to train (backtest, tuning and refit)");
    drawBoxes($("time-by-model"), [...byModel.entries()].sort((a, b) => b[1].length - a[1].length), { style: "box", xLabel: "seconds to train" });
    idx.sort((a, b) => G.duration[b] - G.duration[a]);
    const pick = (i) => { selectGroup(i); $("explorer").scrollIntoView(); };
    clear($("slowest")).appendChild(idx.length ? table([
      { label: "group", get: (i) => G.label[i] }, { label: "model", get: (i) => G.model[i] || "" },
      { label: "training time", num: true, get: (i) => fmtSeconds(G.duration[i]) }, { label: "training rows", num: true, get: (i) => G.n_train_rows[i] },
    ], idx.slice(0, 10), pick) : empty("no training times"));
  }

  // -- models chosen ------------------------------------------------------------------------
  function drawModels() {
    const c = new Map();
    for (let i = 0; i < N; i++) if (G.model[i]) c.set(G.model[i], (c.get(G.model[i]) || 0) + 1);
    const entries = [...c.entries()].sort((a, b) => b[1] - a[1]);
    const box = clear($("model-bars"));
    if (!entries.length) { box.appendChild(empty("no models")); return; }
    const width = Math.max(box.clientWidth || 600, 360), rowH = 22, left = 140, height = rowH * entries.length + 10;
    const max = entries[0][1], x = linear(0, max, left, width - 90);
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "models chosen" });
    entries.forEach(([name, n], k) => {
      const cy = 5 + k * rowH + rowH / 2;
      svg.appendChild(s("text", { x: left - 8, y: cy + 4, "text-anchor": "end", text: name }));
      svg.appendChild(s("rect", { x: left, y: cy - 7, width: Math.max(x(n) - left, 1), height: 14, fill: "#68d391" }));
      svg.appendChild(s("text", { x: x(n) + 6, y: cy + 4, text: `${n} (${((100 * n) / N).toFixed(1)}%)` }));
    });
    box.appendChild(svg);
  }

  // -- failures --------------------------------------------------------------------------------
  const failures = [];
  function collectFailures() {
    for (let i = 0; i < N; i++) {
      if (G.train_status[i] === "failed") failures.push({ i, step: "train", reason: G.train_reason[i] || "error", error: G.train_error[i] || "" });
      if (G.fc_status[i] === "failed" || G.fc_status[i] === "no_model") failures.push({ i, step: "forecast", reason: G.fc_reason[i] || G.fc_status[i], error: G.fc_error[i] || "" });
    }
  }
  function drawFailures() {
    const reasons = new Map();
    for (const f of failures) { const k = `${f.step}\u0000${f.reason}`; reasons.set(k, (reasons.get(k) || 0) + 1); }
    const rows = [...reasons.entries()].sort((a, b) => b[1] - a[1]).map(([k, n]) => { const [step, reason] = k.split("\u0000"); return { step, reason, n }; });
    clear($("failure-reasons")).appendChild(rows.length
      ? table([{ label: "step", get: (r) => r.step }, { label: "reason", get: (r) => r.reason }, { label: "groups", num: true, get: (r) => r.n }], rows)
      : empty("no group failed in the latest runs"));
    $("failure-search").style.display = failures.length ? "" : "none";
    filterFailures();
  }
  function filterFailures() {
    const q = $("failure-search").value.trim().toLowerCase();
    const shown = failures.filter((f) => !q || LOWER[f.i].includes(q) || f.reason.toLowerCase().includes(q) || f.error.toLowerCase().includes(q));
    const box = clear($("failure-table"));
    if (!failures.length) return;
    const pick = (f) => { selectGroup(f.i); $("explorer").scrollIntoView(); };
    box.appendChild(table([
      { label: "group", get: (f) => G.label[f.i] }, { label: "step", get: (f) => f.step }, { label: "reason", get: (f) => f.reason },
      { label: "detail", cls: "err", get: (f) => f.error },
    ], shown.slice(0, 300), pick));
    if (shown.length > 300) box.appendChild(h("p", { class: "muted", text: `${shown.length - 300} more; filter to narrow` }));
  }

  // -- drivers, importance and realised accuracy (report_insights.py) ---------------------------
  /* entries: [[label, value], ...]; horizontal bars from 0, negative to the left. */
  function signedBars(container, entries, opts) {
    clear(container);
    if (!entries.length) { container.appendChild(empty(opts.emptyText)); return; }
    const width = Math.max(container.clientWidth || 360, 280), rowH = 20, left = Math.min(200, width * 0.45), right = 64, top = opts.title ? 22 : 4;
    const height = top + rowH * entries.length + 6;
    const vals = entries.map((e) => e[1]).filter(finite);
    const lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
    const x = linear(lo, hi > lo ? hi : lo + 1, left, width - right);
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": opts.title || "bars" });
    if (opts.title) svg.appendChild(s("text", { x: 4, y: 14, text: opts.title }));
    svg.appendChild(s("line", { x1: x(0), x2: x(0), y1: top, y2: height - 4, stroke: "#9aa5b1" }));
    entries.forEach(([name, v], k) => {
      const cy = top + k * rowH + rowH / 2, label = String(name);
      svg.appendChild(s("text", { x: left - 6, y: cy + 4, "text-anchor": "end", text: label.length > 30 ? label.slice(0, 29) + "…" : label }, s("title", { text: label })));
      if (!finite(v)) return;
      const a = x(Math.min(0, v)), b = x(Math.max(0, v));
      svg.appendChild(s("rect", { class: "bar", x: a, y: cy - 6, width: Math.max(b - a, 1), height: 12, fill: v < 0 ? "#fc8181" : opts.color || "#68d391" }, s("title", { text: `${label}: ${opts.fmt(v)}` })));
      svg.appendChild(s("text", { x: width - right + 6, y: cy + 4, text: opts.fmt(v) }));  // values in their own column: never over a label
    });
    container.appendChild(svg);
  }
  const share = (v) => (100 * v).toFixed(1) + "%";
  function drawImportance() {
    const rows = D.importance || [];
    $("importance-note").textContent = rows.length
      ? "Share of each model's gain (LightGBM) or standardised |coefficient| (linear) per feature, averaged over the groups whose model has features; the number is how many groups' models rank the feature first."
      : "";
    signedBars($("importance-bars"), rows.map((r) => [`${r.feature} (first in ${r.top_groups} of ${r.groups})`, r.mean_share]),
      { fmt: share, color: "#90cdf4", emptyText: "no model with features (LightGBM or linear) in the latest train run" });
  }
  /* xs: labels; lines: [{name, values, color}] */
  function lineChart(container, xs, lines, yLabel) {
    clear(container);
    const all = lines.flatMap((l) => l.values).filter(finite);
    if (!all.length) { container.appendChild(empty("nothing scored")); return; }
    const width = Math.max(container.clientWidth || 500, 320), height = 236, m = { l: 56, r: 12, t: 40, b: 40 };
    const y0 = Math.min(0, ...all), y1 = Math.max(...all) * 1.08 || 1;
    const x = linear(-0.5, xs.length - 0.5, m.l, width - m.r), y = linear(y0, y1, height - m.b, m.t);
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": yLabel });
    const axis = s("g", { class: "axis" }), grid = s("g", { class: "grid" });
    for (const t of ticks(y0, y1, 5)) {
      grid.appendChild(s("line", { x1: m.l, x2: width - m.r, y1: y(t), y2: y(t) }));
      axis.appendChild(s("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end", text: fmt(t) }));
    }
    const every = Math.max(1, Math.ceil(xs.length / 8));
    xs.forEach((lab, k) => { if (k % every === 0) axis.appendChild(s("text", { x: x(k), y: height - m.b + 16, "text-anchor": "middle", text: lab })); });
    axis.appendChild(s("text", { x: 4, y: 14, text: yLabel }));
    svg.append(grid, axis);
    let lx = m.l;
    for (const l of lines) {
      const pts = l.values.map((v, k) => [k, v]).filter((p) => finite(p[1]));
      let d = "";
      pts.forEach(([k, v], j) => { d += (j ? "L" : "M") + x(k).toFixed(1) + "," + y(v).toFixed(1); });
      svg.appendChild(s("path", { class: "realised", d, fill: "none", stroke: l.color, "stroke-width": 2 }));
      for (const [k, v] of pts) svg.appendChild(s("circle", { cx: x(k), cy: y(v), r: 3, fill: l.color }, s("title", { text: `${xs[k]}: ${l.name} ${fmt(v)}` })));
      svg.appendChild(s("rect", { x: lx, y: 22, width: 14, height: 8, fill: l.color }));
      svg.appendChild(s("text", { x: lx + 18, y: 30, text: l.name }));
      lx += 40 + l.name.length * 6.5;
    }
    container.appendChild(svg);
  }
  function drawRealised() {
    const r = D.realised;
    if (!r) {
      $("realised-note").textContent = "No stored forecast has an actual yet: the next split brings them ('mm run' scores them, or 'mm accuracy').";
      return;
    }
    const name = NAMES[r.metric] || r.metric;
    $("realised-metric").textContent = `by ${name}`;
    $("realised-note").textContent = `${fmt(r.n_rows)} forecast rows scored against the actuals that arrived after them. Value added: seasonal naive's ${name} minus the forecast's, on the same rows. Drift: ${name} over a group's last ${r.rule.window} scored periods above ${r.rule.factor} x its backtest ${name} (${r.n_drift} group(s) now).`;
    lineChart($("realised-time"), r.over_time.map((t) => t.first_period), [
      { name: "forecast", values: r.over_time.map((t) => t[r.metric]), color: "var(--fc)" },
      { name: "seasonal naive", values: r.over_time.map((t) => t.seasonal_naive), color: "#718096" },
    ], `${name} by forecast run (its first period)`);
    lineChart($("realised-steps"), r.by_step.map((t) => String(t.step)), [
      { name: "forecast", values: r.by_step.map((t) => t[r.metric]), color: "var(--fc)" },
      { name: "seasonal naive", values: r.by_step.map((t) => t.seasonal_naive), color: "#718096" },
    ], `${name} by periods ahead`);
    const pick = (d) => { const i = G.label.indexOf(d.group); if (i >= 0) { selectGroup(i); $("explorer").scrollIntoView(); } };
    clear($("realised-degraded")).appendChild(r.degraded.length ? table([
      { label: "group", get: (d) => d.group }, { label: `realised ${name}`, num: true, get: (d) => fmt(d.realised) },
      { label: `backtest ${name}`, num: true, get: (d) => fmt(d.backtest) }, { label: "ratio", num: true, get: (d) => fmt(d.ratio) },
      { label: "drift", get: (d) => (d.drift ? "yes" : "") },
    ], r.degraded, pick) : empty("no group has both a realised and a backtest error"));
  }
  function drawGroupInsights(data) {
    const drv = data.drv || [], imp = data.imp || [];
    if (drv.length) signedBars($("group-drivers"), drv, { fmt, title: `drivers: mean effect on ${META.target} per forecast row`, color: "#68d391", emptyText: "" });
    else signedBars($("group-drivers"), imp, { fmt: share, title: "feature importance of its model", color: "#90cdf4", emptyText: "no drivers: set forecast.explain (drivers per forecast row)" });
    const ra = data.ra || [];
    if (ra.length) lineChart($("group-realised"), ra.map((p) => p[0]), [{ name: "realised", values: ra.map((p) => p[1]), color: "var(--fc)" }], `realised ${NAMES[(D.realised || {}).metric] || ""} of this group by forecast run`);
    else clear($("group-realised"));
  }

  // -- wiring ------------------------------------------------------------------------------------
  // -- hierarchy: accuracy per level, and a node's history, base and reconciled forecast ----
  function drawHierarchy() {
    const H = D.hierarchy;
    if (!H) return;
    $("hierarchy").hidden = false;
    $("hier-link").hidden = false;
    $("hier-method").textContent = `(${H.method}${H.nonnegative ? ", nonnegative" : ""}; ${H.n_nodes} nodes)`;
    const notes = [];
    if (H.failed && H.failed.n) notes.push(`${H.failed.n} failed node(s), their branches bottom-up: ${H.failed.examples.join("; ")}`);
    if (H.note) notes.push(H.note);
    if (H.nodes.length < H.n_nodes) notes.push(`the picker lists ${H.nodes.length} of ${H.n_nodes} nodes; hierarchy_forecast.csv has them all`);
    $("hier-note").textContent = notes.join(". ");
    const levels = H.level_order || [];
    if (levels.length) {
      const cell = (lvl, src, k) => fmt((H.accuracy[lvl][src] || {})[k]);  // no base: a level hierarchy.train_level derived
      $("hier-accuracy").appendChild(table(
        [{ label: "level", get: (l) => l }, { label: "nodes", get: (l) => H.accuracy[l].n_nodes },
          { label: "MASE base", get: (l) => cell(l, "base", "mase") }, { label: "MASE reconciled", get: (l) => cell(l, "reconciled", "mase") },
          { label: "sMAPE % base", get: (l) => cell(l, "base", "smape") }, { label: "sMAPE % reconciled", get: (l) => cell(l, "reconciled", "smape") }],
        levels));
    }
    const byLevel = new Map();
    H.nodes.forEach((n, k) => { if (!byLevel.has(n.level)) byLevel.set(n.level, []); byLevel.get(n.level).push(k); });
    const levelSel = $("hier-level"), nodeSel = $("hier-node");
    for (const lvl of byLevel.keys()) levelSel.appendChild(h("option", { value: lvl, text: `${lvl} (${byLevel.get(lvl).length})` }));
    const fill = () => {
      clear(nodeSel);
      for (const k of byLevel.get(levelSel.value) || []) nodeSel.appendChild(h("option", { value: k, text: H.nodes[k].node }));
      drawNode();
    };
    const drawNode = () => {
      const n = H.nodes[+nodeSel.value];
      if (!n) return;
      const i = G.label.indexOf(n.group);
      const series = i >= 0 ? (groupData(i).s || [])[0] || {} : {};
      $("hier-chart").dataset.node = n.node;
      drawGroupChart($("hier-chart"), { p0: series.p0, y: series.y, f0: n.f0, f: n.r, b: n.b, a: n.a });
    };
    levelSel.addEventListener("change", fill);
    nodeSel.addEventListener("change", drawNode);
    fill();
  }

  function init() {
    drawSummary();
    const metricSel = $("dist-metric");
    for (const m of D.metrics) metricSel.appendChild(h("option", { value: m.id, text: m.label }));
    const bySel = $("dist-by");
    bySel.appendChild(h("option", { value: "", text: "(all groups)" }));
    bySel.appendChild(h("option", { value: "@model", text: "model chosen" }));
    for (const c of META.group_columns) bySel.appendChild(h("option", { value: c, text: c }));
    if (D.metrics.length) {
      for (const el of [metricSel, bySel, $("dist-style")]) el.addEventListener("change", drawDistribution);
      drawDistribution();
    } else {
      $("dist-plot").appendChild(empty("no metrics: no group has backtest or forecast accuracy"));
      clear($("worst")).appendChild(empty("no metrics"));
      clear($("best")).appendChild(empty("no metrics"));
    }
    $("group-search").addEventListener("input", refreshList);
    $("group-search").addEventListener("keydown", (e) => { if (e.key === "Enter" && matches.length) selectGroup(matches[0]); });
    $("group-list").addEventListener("change", (e) => selectGroup(+e.target.value));
    refreshList();
    drawHierarchy();
    drawTiming();
    drawModels();
    drawRealised();
    drawImportance();
    collectFailures();
    drawFailures();
    $("failure-search").addEventListener("input", filterFailures);
    const fromHash = () => {
      const m = /^#group=(.*)$/.exec(location.hash);
      if (!m) return false;
      const i = G.label.indexOf(decodeURIComponent(m[1]));
      if (i >= 0) selectGroup(i, true);
      return i >= 0;
    };
    window.addEventListener("hashchange", fromHash);
    if (!fromHash() && N) {
      const first = D.metrics.length ? metricValues(D.metrics[0].id) : null;
      let worst = 0;
      if (first) for (let i = 0; i < N; i++) if (finite(first[i]) && !(finite(first[worst]) && first[worst] >= first[i])) worst = i;
      selectGroup(worst, true);
    }
    document.body.dataset.ready = "1";
  }
  init();
})();
