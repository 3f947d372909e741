// The glass-box panels beside the chat: tokens, attention, next token, embeddings, the model.
// Each reads the conversation as the model sees it (token ids, chat markers included) from
// the host's context() and asks the API's /tokenize, /detokenize and /v1/inspect/... for
// what it shows. Only the visible panel loads; none loads while a reply streams.

import { get, post } from "./api.js";
import { bytesOf, count, el, fill, isSpecial, label, percent } from "./text.js";

const SAMPLE = "The cat sat on the mat because it was tired.";
const SAMPLE_NEXT = "The cat sat on the";
const MAX_ATTENTION = 384; // tokens: one head's matrix is at most this squared
const TAB = "lanternlm.tab";

export class Panels {
  constructor(host) {
    this.host = host; // {context(), sampling(), model(), onToken(id)}
    this.tab = localStorage.getItem(TAB) || "tokens";
    this.drawn = {}; // panel -> key of what it shows
    this.info = {}; // model name -> /v1/inspect/model card
    this.nextBusy = false;
    this.nextAgain = false;
    this.layer = 0;
    this.head = 0;
    this.tryText = null;
    this.embedding = null; // {tokens} or {words} asked for by the user
    for (const button of document.querySelectorAll(".tabs [data-tab]")) {
      button.addEventListener("click", () => this.show(button.dataset.tab));
    }
    this.show(this.tab, false);
  }

  show(tab, load = true) {
    this.tab = tab;
    localStorage.setItem(TAB, tab);
    for (const button of document.querySelectorAll(".tabs [data-tab]")) {
      button.setAttribute("aria-selected", String(button.dataset.tab === tab));
    }
    for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== `panel-${tab}`;
    if (load) this.load();
  }

  reset() {
    this.drawn = {};
    this.layer = this.head = 0;
    this.tryText = null;
    this.embedding = null;
  }

  refresh(user) {
    if (user) this.embedding = null;
    this.load();
  }

  redraw() {
    this.drawn.attention = null;
    if (this.tab === "attention") this.load();
  }

  samplingChanged() {
    if (this.tab === "next" && !this.host.context().running) this.loadNext(true);
  }

  showEmbeddings(tokens) {
    this.embedding = { tokens };
    this.show("embeddings");
  }

  panel(name) {
    return document.getElementById(`panel-${name}`);
  }

  async load() {
    const model = this.host.model();
    if (!model) return;
    if (this.host.context().running) { // no panel loads while a reply streams (it would slow the stream)
      fill(this.panel(this.tab), el("p", { class: "note" }, "This panel loads when the reply has ended."));
      this.drawn[this.tab] = null;
      return;
    }
    const run = {
      tokens: () => this.loadTokens(), attention: () => this.loadAttention(), next: () => this.loadNext(false),
      embeddings: () => this.loadEmbeddings(), model: () => this.loadModel(),
    }[this.tab];
    try {
      await run();
    } catch (err) {
      fill(this.panel(this.tab), el("p", { class: "note" }, `The server refused: ${err.message}`));
    }
  }

  async modelInfo() {
    const model = this.host.model();
    if (!this.info[model.id]) this.info[model.id] = await get(`/v1/inspect/model/${encodeURIComponent(model.id)}`);
    return this.info[model.id];
  }

  // ------------------------------------------------------------------ tokens

  async loadTokens() {
    const model = this.host.model();
    const ctx = this.host.context();
    const key = `${model.id}|${ctx.key}|${this.tryText}`;
    if (this.drawn.tokens === key) return;
    this.drawn.tokens = key;
    let pieces;
    let what;
    if (this.tryText !== null || !ctx.ids) {
      const text = this.tryText !== null ? this.tryText : SAMPLE;
      pieces = (await post("/tokenize", { model: model.id, prompt: text })).pieces;
      what = this.tryText !== null ? "your text" : "a sample text (no conversation yet)";
    } else {
      pieces = (await post("/detokenize", { model: model.id, tokens: ctx.ids })).pieces;
      what = model.chat ? "the conversation as the model sees it (chat markers included)" : "the prompt and its continuation";
    }
    const texts = pieces.map((p) => p.text);
    const plain = pieces.filter((p, i) => !isSpecial(texts[i]));
    const bytes = plain.reduce((n, p) => n + p.bytes.length, 0);
    const input = el("input", { type: "text", value: this.tryText !== null ? this.tryText : "", placeholder: "try any text, e.g. I love pizza!" });
    const go = () => { this.tryText = input.value || null; this.drawn.tokens = null; this.loadTokens(); };
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
    fill(this.panel("tokens"),
      el("div", { class: "try" }, input, el("button", { type: "button", onclick: go }, "Tokenize"),
        this.tryText !== null ? el("button", { type: "button", onclick: () => { this.tryText = null; this.drawn.tokens = null; this.loadTokens(); } }, "Back") : null),
      el("p", { class: "note" }, `Pieces of ${what}, each with its id. Click one to see its neighbours in the embedding table.`),
      el("div", { class: "stats" },
        el("span", {}, el("b", {}, pieces.length), " tokens"),
        el("span", {}, el("b", {}, bytes), " bytes of text"),
        el("span", {}, el("b", {}, plain.length ? (bytes / plain.length).toFixed(2) : "–"), " bytes per token"),
        el("span", {}, el("b", {}, pieces.length - plain.length), " special")),
      el("div", { class: "pieces" }, pieces.map((p, i) => el("span", {
        class: `piece ${isSpecial(texts[i]) ? "sp" : `c${i % 6}`}`, title: `id ${p.id} · bytes ${p.bytes.join(" ")}`,
        onclick: () => this.host.onToken(p.id),
      }, el("span", { class: "t" }, label(texts[i])), el("span", { class: "i" }, p.id)))));
  }

  // ------------------------------------------------------------------ attention

  async loadAttention() {
    const model = this.host.model();
    const info = await this.modelInfo();
    const ctx = this.host.context();
    let ids = ctx.ids;
    let note = model.chat ? "The conversation as the model reads it." : "The prompt and its continuation.";
    if (ids && ids.length > MAX_ATTENTION) {
      ids = ids.slice(-MAX_ATTENTION);
      note = `The last ${MAX_ATTENTION} tokens, read as a text of their own.`;
    }
    if (!ids) note = `A sample text (no conversation yet): “${SAMPLE}”`;
    const key = `${model.id}|${ctx.key}|${this.layer}|${this.head}`;
    if (this.drawn.attention === key) return;
    this.drawn.attention = key;
    const view = await post("/v1/inspect/attention", {
      model: model.id, layer: this.layer, head: this.head, ...(ids ? { tokens: ids } : { text: SAMPLE }),
    });
    const select = (n, value, name, set) => el("select", { "aria-label": name, onchange: (e) => { set(Number(e.target.value)); this.loadAttention(); } },
      Array.from({ length: n }, (_, i) => el("option", { value: i, selected: i === value }, i)));
    const canvas = el("canvas", { class: "heat", width: 600, height: 600, "aria-label": "attention heatmap: rows attend to columns" });
    const readout = el("div", { class: "readout" }, el("span", { class: "muted" },
      "Hover a row (or a token below): which earlier tokens that position reads from. Each row sums to 100%."));
    const labels = view.labels.map((l) => label(unquote(l)));
    const chips = labels.map((l, i) => el("span", { class: "chip", dataset: { i } }, l));
    const strip = el("div", { class: "strip" }, chips);
    fill(this.panel("attention"),
      el("div", { class: "att-controls" },
        el("label", { class: "field" }, "layer ", select(info.layers, this.layer, "layer", (v) => { this.layer = v; })),
        el("label", { class: "field" }, "head ", select(info.heads, this.head, "head", (v) => { this.head = v; })),
        el("span", { class: "muted" }, `${view.labels.length} tokens · ${info.layers} layers × ${info.heads} heads`)),
      el("p", { class: "note" }, note),
      el("div", { class: "att-wrap" }, canvas, readout), strip);
    const T = view.labels.length;
    const draw = (row) => heatmap(canvas, view.matrix, row);
    draw(null);
    const hover = (i) => {
      if (i === null || i < 0 || i >= T) return;
      draw(i);
      const row = view.matrix[i];
      const order = row.map((w, j) => [w, j]).filter(([, j]) => j <= i).sort((a, b) => b[0] - a[0]).slice(0, 5);
      fill(readout,
        el("div", {}, el("b", { class: "mono" }, labels[i]), ` (position ${i}) `, el("span", { class: "arrow" }, "→"), " attends most to:"),
        ...order.map(([w, j]) => el("div", { class: "mono" }, `${percent(w)}  ${labels[j]}  (position ${j})`)));
      const most = Math.max(...row.slice(0, i + 1), 1e-9);
      chips.forEach((c, j) => { // shaded by weight, relative to the row's largest
        c.classList.toggle("q", j === i);
        c.style.background = j <= i ? `color-mix(in srgb, var(--accent) ${Math.round((85 * row[j]) / most)}%, transparent)` : "";
        c.title = j <= i ? `${percent(row[j])} of ${labels[i]}'s attention` : "later: not visible to it";
      });
      readout.dataset.row = i;
    };
    const atRow = (e) => {
      const r = canvas.getBoundingClientRect();
      hover(Math.floor(((e.clientY - r.top) / r.height) * T));
    };
    canvas.addEventListener("mousemove", atRow);
    canvas.addEventListener("pointerdown", atRow); // a tap on a phone
    const atChip = (e) => {
      const chip = e.target.closest(".chip");
      if (chip) hover(Number(chip.dataset.i));
    };
    strip.addEventListener("mouseover", atChip);
    strip.addEventListener("pointerdown", atChip);
  }

  // ------------------------------------------------------------------ next token

  async loadNext(live) {
    if (this.nextBusy) { // one request at a time; the latest settings win
      this.nextAgain = true;
      return;
    }
    const model = this.host.model();
    const ctx = this.host.context();
    const s = this.host.sampling();
    const setting = { name: "your settings", temperature: s.temperature, top_k: s.top_k, top_p: s.top_p, min_p: s.min_p };
    const key = `${model.id}|${ctx.key}|${ctx.k}|${JSON.stringify(setting)}`;
    if (this.drawn.next === key) return;
    this.nextBusy = true;
    try {
      const view = await post("/v1/inspect/next_token", {
        model: model.id, k: 10, settings: [setting], ...(ctx.step ? { tokens: ctx.step } : { text: SAMPLE_NEXT }),
      });
      this.drawn.next = key;
      this.drawNext(view, ctx, s, live);
    } finally {
      this.nextBusy = false;
      if (this.nextAgain) {
        this.nextAgain = false;
        this.loadNext(true);
      }
    }
  }

  drawNext(view, ctx, s, live) {
    const mine = view.settings[0];
    const info = this.info[this.host.model().id];
    const where = ctx.step
      ? `At answer token ${ctx.k + 1} (click any answer token to move here). The model had read: `
      : "No conversation yet; the model has read: ";
    const top = Math.max(...view.raw.probs, ...mine.probs, 1e-9); // bars scaled to the largest
    const rows = view.candidates.map(([id, lab], i) => {
      const p = view.raw.probs[i];
      const q = mine.probs[i];
      return el("tr", { class: id === ctx.chosen ? "chosen" : "", dataset: { id, raw: p, filtered: q } },
        el("td", { class: "lab" }, label(unquote(lab))), el("td", { class: "id" }, id),
        el("td", { class: "num" }, percent(p)),
        el("td", { class: "bar-cell" }, el("div", { class: "barline raw", style: { width: `${(100 * p) / top}%` } }),
          el("div", { class: "barline", style: { width: `${(100 * q) / top}%` } })),
        el("td", { class: "num" }, q > 0 ? percent(q) : el("span", { class: "removed" }, "removed")));
    });
    const panel = this.panel("next");
    const body = [
      el("p", { class: "note" }, where, el("span", { class: "mono" }, `…${view.text.slice(-60)}`)),
      el("p", { class: "note" }, "Move the sampling sliders above: grey is the model's raw distribution, colour what "
        + "your settings keep and how they reshape it (temperature first, then top-k, top-p, min-p)."),
      el("table", { class: "dist" },
        el("tr", {}, el("th", {}, "next token"), el("th", {}, "id"), el("th", { class: "num" }, "raw"),
          el("th", { class: "bar-cell" }, ""), el("th", { class: "num" }, "yours")), rows),
      ctx.chosen !== null && ctx.chosen !== undefined && !view.candidates.some(([id]) => id === ctx.chosen)
        ? el("p", { class: "note" }, `It chose id ${ctx.chosen}, outside these ${view.candidates.length}.`) : null,
      el("div", { class: "stats" },
        el("span", {}, "keeps ", el("b", { class: "kept" }, count(mine.kept)), ` of ${count(info ? info.vocab : view.raw.kept)} tokens`),
        el("span", {}, "entropy ", el("b", {}, view.raw.entropy.toFixed(2)), " → ", el("b", {}, mine.entropy.toFixed(2)), " nats"),
        s.temperature === 0 ? el("span", {}, "temperature 0: always the top token") : null),
    ];
    fill(panel, body);
    panel.dataset.temperature = s.temperature; // what the bars show (the sliders may be ahead while it loads)
  }

  // ------------------------------------------------------------------ embeddings

  async loadEmbeddings() {
    const model = this.host.model();
    const ctx = this.host.context();
    let ask = this.embedding;
    if (!ask) {
      ask = { tokens: [] };
      if (ctx.ids) {
        const pieces = (await post("/detokenize", { model: model.id, tokens: ctx.ids })).pieces;
        for (const p of pieces) {
          if (/^ ?[A-Za-z]{2,}$/.test(p.text) && !ask.tokens.includes(p.id)) ask.tokens.push(p.id);
        }
        ask.tokens = ask.tokens.slice(-6);
      }
      if (!ask.tokens.length) ask = { words: ["cat", "dog", "the", "sat"] };
    }
    const key = `${model.id}|${ctx.key}|${JSON.stringify(ask)}`;
    if (this.drawn.embeddings === key) return;
    this.drawn.embeddings = key;
    const view = await post("/v1/inspect/embeddings", { model: model.id, k: 6, map_neighbours: 3, words: ask.words || [], tokens: ask.tokens || [] });
    const input = el("input", { type: "text", placeholder: "words, e.g. king queen cat dog" });
    const go = () => {
      const words = input.value.split(/[\s,]+/).filter(Boolean).slice(0, 16);
      if (words.length) { this.embedding = { words }; this.loadEmbeddings(); }
    };
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
    const missing = Object.entries(view.missing);
    fill(this.panel("embeddings"),
      el("div", { class: "try" }, input, el("button", { type: "button", onclick: go }, "Neighbours")),
      el("p", { class: "note" }, "Each token's nearest neighbours in the embedding table (cosine similarity), and the tokens "
        + "on the embeddings' first two principal axes. Click a piece in the Tokens panel to look at it here."),
      missing.length ? el("p", { class: "note" }, "Not one token: ", missing.map(([w, parts]) => `${w} = ${parts.join(" + ")}`).join("; ")) : null,
      el("div", { class: "emb-list" }, view.words.map((w) => el("div", {},
        el("div", { class: "w" }, label(unquote(w.label))),
        w.neighbours.map((n) => el("div", { class: "n" }, el("span", {}, label(unquote(n.label))), el("span", {}, n.similarity.toFixed(2))))))),
      view.map.length ? map(view) : null);
  }

  // ------------------------------------------------------------------ the model

  async loadModel() {
    const model = this.host.model();
    if (this.drawn.model === model.id) return;
    const info = await this.modelInfo();
    this.drawn.model = model.id;
    const row = (k, v) => el("tr", {}, el("td", {}, k), el("td", {}, v));
    const machine = Object.entries(info.machine);
    const names = { fp32: "fp32", bf16: "bf16", int8: "int8" };
    const total = (m) => m.weights + m.kv_cache + m.activations + m.runtime;
    fill(this.panel("model"),
      el("table", { class: "kv" },
        row("name", `${info.name} (stage ${info.stage || "?"}${model.chat ? ", chat" : ", base"})`),
        row("parameters", `${count(info.parameters)} (${info.parameters.toLocaleString("en")})`),
        row("layers", info.layers), row("attention heads", `${info.heads}${info.kv_heads !== info.heads ? ` (${info.kv_heads} key/value)` : ""}`),
        row("width", info.width), row("context", `${info.context} tokens`), row("vocabulary", `${info.vocab} tokens`),
        row("served on", `${info.device}, ${info.dtype}`)),
      el("h3", {}, "Memory estimate (batch 1, full context)"),
      el("div", { class: "scroll" }, el("table", { class: "mem" },
        el("tr", {}, el("th", {}, "weights as"), el("th", {}, "weights"), el("th", {}, "KV cache"), el("th", {}, "activations"),
          el("th", {}, "runtime"), el("th", {}, "total"), ...machine.map(([d]) => el("th", {}, `fits ${d.split(" ")[0]}?`))),
        Object.entries(info.memory).map(([dtype, m]) => el("tr", {}, el("td", {}, names[dtype] || dtype),
          el("td", {}, bytesOf(m.weights)), el("td", {}, bytesOf(m.kv_cache)), el("td", {}, bytesOf(m.activations)),
          el("td", {}, bytesOf(m.runtime)), el("td", {}, bytesOf(total(m))),
          ...machine.map(([, size]) => el("td", { class: total(m) <= size ? "fits" : "nofit" }, total(m) <= size ? "yes" : "no")))))),
      el("p", { class: "note" }, "This machine: ", machine.map(([d, size]) => `${d} ${bytesOf(size)}`).join(", "),
        " (total, before other programs' use)."));
  }
}

// "'text'" (a token label from the inspect views) -> text; special tokens stay as they are.
function unquote(l) {
  if (/^'.*'$/s.test(l) || /^".*"$/s.test(l)) {
    try { return JSON.parse(`"${l.slice(1, -1).replace(/\\'/g, "'").replace(/"/g, '\\"')}"`); } catch (_) { return l.slice(1, -1); }
  }
  return l;
}

function heatmap(canvas, matrix, row) {
  const T = matrix.length;
  const ctx = canvas.getContext("2d");
  const size = canvas.width;
  const cell = size / T;
  const css = getComputedStyle(document.documentElement);
  const bg = css.getPropertyValue("--panel").trim() || "#fff";
  const accent = css.getPropertyValue("--accent").trim() || "#c2410c";
  const future = css.getPropertyValue("--code").trim() || "#eee";
  ctx.fillStyle = bg;
  ctx.fillRect(0, 0, size, size);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < T; j++) {
      if (j > i) {
        ctx.fillStyle = future;
        ctx.globalAlpha = 1;
      } else {
        ctx.fillStyle = accent;
        ctx.globalAlpha = Math.sqrt(matrix[i][j]); // sqrt: small weights stay visible
      }
      const x = Math.round(j * cell), y = Math.round(i * cell); // whole pixels: no seams between cells
      ctx.fillRect(x, y, Math.round((j + 1) * cell) - x, Math.round((i + 1) * cell) - y);
    }
  }
  ctx.globalAlpha = 1;
  if (row !== null) {
    ctx.strokeStyle = css.getPropertyValue("--fg").trim() || "#000";
    ctx.lineWidth = Math.max(2, size / 200);
    ctx.strokeRect(1, row * cell, size - 2, cell);
  }
}

function map(view) {
  const W = 460, H = 280, pad = 34;
  const xs = view.map.map((p) => p.x), ys = view.map.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * pad);
  const sy = (y) => H - pad - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * pad);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "map");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "tokens on the first two principal axes of their embeddings");
  for (const p of view.map) {
    const c = document.createElementNS(NS, "circle");
    c.setAttribute("cx", sx(p.x));
    c.setAttribute("cy", sy(p.y));
    c.setAttribute("r", p.kind === "word" ? 5 : 3.5);
    c.setAttribute("class", p.kind);
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", sx(p.x) + 7);
    t.setAttribute("y", sy(p.y) + 4);
    t.textContent = label(unquote(p.label));
    if (p.kind === "word") t.setAttribute("font-weight", "600");
    svg.append(c, t);
  }
  const axes = document.createElementNS(NS, "text");
  axes.setAttribute("x", 6);
  axes.setAttribute("y", H - 8);
  axes.textContent = `PC1 ${(100 * (view.explained[0] || 0)).toFixed(0)}% · PC2 ${(100 * (view.explained[1] || 0)).toFixed(0)}% of the variance`;
  axes.setAttribute("opacity", "0.7");
  svg.append(axes);
  return svg;
}
