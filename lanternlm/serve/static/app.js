// lanternlm's page: chat with a served run (or continue text with a base run) and see
// inside it while it answers. State lives here and in localStorage; panels.js draws the
// glass-box panels; api.js is the only way out (the documented HTTP API).

import { ApiError, get, post, setKey, stream } from "./api.js";
import { Panels } from "./panels.js";
import { el, fill, isSpecial, label, labelOfBytes, percent, prob, tokenTexts } from "./text.js";

const STORE = "lanternlm.page.v1";
const TOP = 10; // alternatives per token the page asks for (the API allows 20)
const $ = (id) => document.getElementById(id);

const saved = load();
const state = {
  models: [],
  model: null, // the card of the chosen model (from /v1/models)
  conv: [], // chat runs: messages, see newReply()
  doc: null, // base runs: {prompt, reply}
  focus: null, // {m, k}: the message and content token the panels look at
  running: null, // AbortController of the generation in flight
};

// --------------------------------------------------------------------------- storage

function load() {
  try {
    return JSON.parse(localStorage.getItem(STORE)) || {};
  } catch (_) {
    return {};
  }
}

function save() {
  saved.model = state.model && state.model.id;
  saved.level = $("level").value;
  saved.budget = $("budget").value;
  saved.sampling = sampling();
  saved.preset = $("preset").value;
  saved.chats = saved.chats || {};
  saved.docs = saved.docs || {};
  if (state.model) {
    if (state.model.chat) saved.chats[state.model.id] = state.conv;
    else saved.docs[state.model.id] = state.doc;
  }
  try {
    localStorage.setItem(STORE, JSON.stringify(saved));
  } catch (_) { // over the quota: keep the text, drop the distributions of older replies
    for (const conv of Object.values(saved.chats)) {
      for (const m of conv.slice(0, -2)) if (m.tokens) m.tokens = m.tokens.map((t) => ({ ...t, top: [], ftop: [] }));
    }
    try { localStorage.setItem(STORE, JSON.stringify(saved)); } catch (_) { /* give up quietly */ }
  }
}

// --------------------------------------------------------------------------- sampling controls

const SLIDERS = ["temperature", "top_k", "top_p", "min_p"];

function sampling() {
  const s = {};
  for (const name of SLIDERS) s[name] = Number($(name).value);
  s.max_tokens = Math.max(1, Number($("max_tokens").value) || 256);
  s.seed = $("seed").value === "" ? null : Number($("seed").value);
  return s;
}

function showSliders() {
  for (const name of SLIDERS) {
    const v = Number($(name).value);
    const off = (name === "top_k" && v === 0) || (name === "top_p" && v === 1) || (name === "min_p" && v === 0);
    document.querySelector(`output[for=${name}]`).textContent = off ? "off" : String(v);
  }
}

function matchPreset() {
  const s = sampling();
  const hit = (state.presets || []).find((p) => SLIDERS.every((n) => Math.abs(p[n] - s[n]) < 1e-9));
  $("preset").value = hit ? hit.name : "";
}

function requestSampling(s) {
  const body = { temperature: s.temperature, top_p: s.top_p, top_k: s.top_k, min_p: s.min_p };
  if (s.seed !== null) body.seed = s.seed;
  return body;
}

// --------------------------------------------------------------------------- messages

function newReply(level) {
  return {
    role: "assistant", content: "", thinking: "", thinkingTokens: 0, level, promptIds: [], replyIds: [],
    tokens: [], finish: null, settings: sampling(), branchedAt: null, error: null, ms: 0,
  };
}

function history(upTo) {
  return state.conv.slice(0, upTo).map((m) => ({ role: m.role, content: m.content }));
}

function lastReplyIndex() {
  for (let i = state.conv.length - 1; i >= 0; i--) if (state.conv[i].role === "assistant") return i;
  return -1;
}

// The DOM of one assistant message (rebuilt whole; while streaming, `live` appends to it).
function replyView(m, index) {
  const box = el("div", { class: "msg assistant", dataset: { index } });
  if (m.thinking || (m.running && m.thinkingLive)) {
    const details = el("details", { class: "thinking", open: m.running && !m.tokens.length });
    details.append(el("summary", {}, thinkingSummary(m)), el("div", { class: "thought" }, m.thinking));
    box.append(details);
  }
  const answer = el("div", { class: "answer" });
  const texts = tokenTexts(m.tokens.map((t) => t.b));
  m.tokens.forEach((t, k) => answer.append(tokenSpan(t, texts[k], index, k)));
  if (m.running) answer.classList.add("cursor");
  box.append(answer, el("div", { class: "meta" }, replyMeta(m)));
  return box;
}

function thinkingSummary(m) {
  if (m.running && !m.tokens.length) return `Thinking… ${m.thinkingLive || 0} tokens`;
  return `Thought for ${m.running ? m.thinkingLive : m.thinkingTokens} tokens`;
}

function tokenSpan(t, text, m, k) {
  const special = isSpecial(text);
  const p = prob(t.lp);
  return el("span", {
    class: `tok${special ? " special" : ""}${t.branched ? " branched" : ""}`,
    dataset: { m, k, id: t.id }, title: `id ${t.id} · ${percent(p)}`, role: "button", tabindex: "0",
  }, text);
}

function replyMeta(m) {
  const parts = [];
  if (m.running) parts.push("generating…");
  if (m.tokens.length) parts.push(`${m.tokens.length} answer tokens`);
  if (m.thinkingTokens) parts.push(`${m.thinkingTokens} thinking`);
  if (m.level) parts.push(`reasoning ${m.level}`);
  const s = m.settings;
  if (s) parts.push(`T ${s.temperature}` + (s.top_k ? ` · top-k ${s.top_k}` : "") + (s.top_p < 1 ? ` · top-p ${s.top_p}` : "")
    + (s.min_p ? ` · min-p ${s.min_p}` : "") + (s.seed !== null && s.seed !== undefined ? ` · seed ${s.seed}` : ""));
  if (m.branchedAt !== null) parts.push(`branched at token ${m.branchedAt + 1}`);
  if (m.finish) parts.push(m.finish === "stop" ? "ended" : m.finish === "length" ? "hit the token limit" : m.finish);
  const out = [parts.join(" · ")];
  if (m.error) out.push(" · ", el("span", { class: "bad" }, m.error));
  return out;
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  if (state.model && !state.model.chat) return renderPlayground(box);
  if (!state.conv.length) {
    box.append(el("div", { class: "empty" },
      el("p", {}, "Ask something. Every word of the answer can be clicked: you see the probabilities the model ",
        "gave each candidate at that step, and you can branch (“what if it had picked this?”)."),
      el("p", {}, "The panels on the right show the same conversation as the model sees it: tokens, attention, ",
        "the next-token distribution under your sampling settings, embeddings, and the model itself.")));
    return;
  }
  state.conv.forEach((m, i) => box.append(m.role === "user" ? el("div", { class: "msg user" }, m.content) : replyView(m, i)));
  box.scrollTop = box.scrollHeight;
}

function rerender(index) {
  const node = document.querySelector(`.msg.assistant[data-index="${index}"]`);
  const fresh = state.model.chat ? replyView(state.conv[index], index) : null;
  if (node && fresh) node.replaceWith(fresh);
  else renderMessages();
}

// --------------------------------------------------------------------------- chat

async function send(text) {
  state.conv.push({ role: "user", content: text });
  const reply = newReply($("level").value);
  state.conv.push(reply);
  renderMessages();
  save();
  await generate(state.conv.length - 1, null);
}

async function regenerate() {
  if (!state.model.chat) return generateDoc(null);
  const i = lastReplyIndex();
  if (i < 0) return;
  state.conv.splice(i + 1);
  state.conv[i] = newReply($("level").value);
  renderMessages();
  await generate(i, null);
}

// Run the reply at `index`: from scratch, or after `prefix` (token ids, a branch).
async function generate(index, prefix) {
  const m = state.conv[index];
  const s = sampling();
  m.settings = s;
  m.running = true;
  m.error = null;
  m.thinkingLive = 0;
  const body = {
    model: state.model.id, messages: history(index), stream: true,
    stream_options: { include_usage: true }, logprobs: true, top_logprobs: TOP, return_token_ids: true,
    reasoning_effort: m.level, max_completion_tokens: s.max_tokens, ...requestSampling(s),
  };
  if ($("budget").value !== "" && m.level !== "none") body.thinking_budget = Number($("budget").value);
  if (prefix) body.reply_prefix = prefix;
  const thoughtBefore = m.thinkingTokens;
  const decoder = new TextDecoder();
  let node = null;
  const started = performance.now();
  busy(true);
  try {
    await stream("/v1/chat/completions", body, (chunk) => {
      if (chunk.prompt_token_ids) m.promptIds = chunk.prompt_token_ids.slice(0, chunk.prompt_token_ids.length - (prefix ? prefix.length : 0));
      if (chunk.usage) {
        m.usage = chunk.usage;
        m.thinkingTokens = thoughtBefore + ((chunk.usage.completion_tokens_details || {}).reasoning_tokens || 0);
      }
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) return;
      node = node || document.querySelector(`.msg.assistant[data-index="${index}"]`);
      const delta = choice.delta || {};
      if (choice.token_ids) m.replyIds.push(...choice.token_ids);
      const entries = (choice.logprobs && choice.logprobs.content) || [];
      if (delta.reasoning_content) m.thinking += delta.reasoning_content;
      if (!entries.length && choice.token_ids && !m.tokens.length && choice.finish_reason === null) m.thinkingLive++;
      if (delta.content) m.content += delta.content;
      if (choice.finish_reason) m.finish = choice.finish_reason;
      const before = m.tokens.length;
      for (const e of entries) {
        m.tokens.push({
          id: e.id, b: e.bytes, lp: e.logprob, flp: e.filtered_logprob, pos: m.replyIds.length - 1,
          top: e.top_logprobs.map((a) => [a.id, a.logprob, a.bytes]),
          ftop: (e.filtered_top_logprobs || []).map((a) => [a.id, a.logprob]),
        });
      }
      live(node, m, index, before, decoder);
      setStatus(`generating… ${m.replyIds.length} tokens`);
    }, state.running.signal);
  } catch (err) {
    if (err.name === "AbortError") m.finish = "stopped";
    else m.error = err.message;
  } finally {
    m.running = false;
    m.ms = performance.now() - started;
    busy(false);
    rerender(index);
    save();
    const n = m.replyIds.length;
    setStatus(m.error ? "" : `${n} tokens in ${(m.ms / 1000).toFixed(1)} s`);
    if (!m.error) focus(index, state.focus && state.focus.m === index ? state.focus.k : 0, false);
  }
}

// Append what a chunk added to the message's DOM (no rebuild while streaming).
function live(node, m, index, before, decoder) {
  if (!node) return;
  let details = node.querySelector("details.thinking");
  if (!details && (m.thinking || m.thinkingLive)) {
    details = el("details", { class: "thinking", open: true }, el("summary", {}), el("div", { class: "thought" }));
    node.prepend(details);
  }
  if (details) {
    details.querySelector(".thought").textContent = m.thinking;
    details.querySelector("summary").textContent = thinkingSummary(m);
    if (m.tokens.length && details.open && !details.dataset.folded) {
      details.open = false; // the answer began: the thinking folds away
      details.dataset.folded = "1";
    }
  }
  const answer = node.querySelector(".answer");
  for (let k = before; k < m.tokens.length; k++) {
    const text = decoder.decode(new Uint8Array(m.tokens[k].b || []), { stream: true });
    answer.append(tokenSpan(m.tokens[k], text, index, k));
  }
  fill(node.querySelector(".meta"), replyMeta(m));
  const box = $("messages");
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

// Branch reply `index` at its content token `k`: keep what came before, take token `id`
// there instead, and let the model continue.
async function branch(index, k, id) {
  if (state.running) return;
  if (!state.model.chat) return branchDoc(k, id);
  const m = state.conv[index];
  const t = m.tokens[k];
  const cand = t.top.find((c) => c[0] === id);
  const f = t.ftop.find((c) => c[0] === id);
  const prefix = m.replyIds.slice(0, t.pos).concat([id]);
  state.conv.splice(index + 1);
  m.tokens = m.tokens.slice(0, k).concat([{ ...t, id, b: cand[2], lp: cand[1], flp: f ? f[1] : null, branched: true }]);
  m.replyIds = prefix.slice();
  m.content = tokenTexts(m.tokens.map((x) => x.b)).join("");
  m.branchedAt = k;
  m.finish = null;
  closePopover();
  rerender(index);
  await generate(index, prefix);
}

// --------------------------------------------------------------------------- base runs: the playground

function renderPlayground(box) {
  const doc = state.doc;
  if (!doc || !doc.reply) {
    box.append(el("div", { class: "empty" },
      el("p", {}, `${state.model.id} is a base model (stage ${state.model.stage}): it continues text. Write the start `,
        "of a text below and let it go on; click any generated token to see its distribution and branch from it.")));
    return;
  }
  const r = doc.reply;
  const out = el("div", { class: "playground-out msg assistant", dataset: { index: 0 } });
  out.append(el("span", { class: "prompt-text" }, doc.prompt));
  const texts = tokenTexts(r.tokens.map((t) => t.b));
  r.tokens.forEach((t, k) => out.append(tokenSpan(t, t.b ? texts[k] : t.text, 0, k)));
  if (r.running) out.classList.add("cursor");
  box.append(out, el("div", { class: "meta" }, replyMeta(r)));
}

async function generateDoc(prefix) {
  const doc = state.doc;
  if (!doc || !doc.prompt) return;
  const s = sampling();
  const r = prefix ? doc.reply : { ...newReply(null), tokens: [] };
  r.settings = s;
  r.running = true;
  r.error = null;
  doc.reply = r;
  const body = {
    model: state.model.id, prompt: prefix ? doc.promptIds.concat(prefix) : doc.prompt, stream: true,
    max_tokens: s.max_tokens, logprobs: 0, return_token_ids: true, ...requestSampling(s),
  };
  busy(true);
  renderMessages();
  try {
    await stream("/v1/completions", body, (chunk) => {
      const c = chunk.choices && chunk.choices[0];
      if (!c) return;
      if (c.prompt_token_ids && !prefix) doc.promptIds = c.prompt_token_ids;
      for (const [j, id] of (c.token_ids || []).entries()) {
        r.replyIds.push(id);
        const lp = c.logprobs ? c.logprobs.token_logprobs[j] : 0;
        r.tokens.push({ id, text: c.logprobs ? c.logprobs.tokens[j] : "", lp, pos: r.replyIds.length - 1 });
      }
      if (c.finish_reason) r.finish = c.finish_reason;
      renderMessages();
      setStatus(`generating… ${r.replyIds.length} tokens`);
    }, state.running.signal);
  } catch (err) {
    if (err.name === "AbortError") r.finish = "stopped";
    else r.error = err.message;
  } finally {
    r.running = false;
    busy(false);
    try { // the pieces' bytes, so that characters split across tokens show whole
      const pieces = (await post("/detokenize", { model: state.model.id, tokens: r.replyIds })).pieces;
      r.tokens.forEach((t) => { t.b = pieces[t.pos].bytes; });
    } catch (_) { /* keep the texts */ }
    renderMessages();
    save();
    setStatus(r.error ? "" : `${r.replyIds.length} tokens`);
    focus(0, 0, false);
  }
}

async function branchDoc(k, id) {
  const r = state.doc.reply;
  const t = r.tokens[k];
  const prefix = r.replyIds.slice(0, t.pos).concat([id]);
  const piece = (await post("/detokenize", { model: state.model.id, tokens: [id] })).pieces[0];
  r.tokens = r.tokens.slice(0, k).concat([{ id, b: piece.bytes, text: piece.text, lp: null, pos: t.pos, branched: true }]);
  r.replyIds = prefix.slice();
  r.branchedAt = k;
  r.finish = null;
  closePopover();
  await generateDoc(prefix);
}

// --------------------------------------------------------------------------- the token popover

function reply(index) {
  return state.model.chat ? state.conv[index] : state.doc && state.doc.reply;
}

// The ids the model had seen when it chose content token k of reply `index`.
function contextOf(index, k) {
  const m = reply(index);
  const ids = state.model.chat ? m.promptIds : state.doc.promptIds;
  return ids.concat(m.replyIds.slice(0, m.tokens[k].pos));
}

async function openPopover(span) {
  const index = Number(span.dataset.m), k = Number(span.dataset.k);
  const m = reply(index);
  const t = m.tokens[k];
  document.querySelectorAll(".tok.open").forEach((x) => x.classList.remove("open"));
  span.classList.add("open");
  const pop = $("popover");
  pop.dataset.m = index;
  pop.dataset.k = k;
  let rows;
  let source;
  if (state.model.chat) {
    rows = chatRows(t);
    source = "the API's top_logprobs (raw) and filtered_top_logprobs (sampled from)";
  } else {
    pop.replaceChildren(el("div", { class: "muted" }, "computing…"));
    place(pop, span);
    pop.hidden = false;
    const s = m.settings;
    const view = await post("/v1/inspect/next_token", {
      model: state.model.id, tokens: contextOf(index, k), k: TOP,
      settings: [{ name: "sampled", temperature: s.temperature, top_k: s.top_k, top_p: s.top_p, min_p: s.min_p }],
    });
    rows = view.candidates.map(([id, lab], i) => ({
      id, label: lab.replace(/^'|'$/g, ""), raw: view.raw.probs[i], filtered: view.settings[0].probs[i], known: true,
    }));
    if (!rows.some((r) => r.id === t.id)) rows.push({ id: t.id, label: t.text, raw: prob(t.lp), filtered: null, known: false });
    source = "/v1/inspect/next_token with the settings it was sampled with";
  }
  const table = el("table", { class: "dist" },
    el("tr", {}, el("th", {}, "token"), el("th", {}, "id"), el("th", { class: "num" }, "raw"), el("th", { class: "bar-cell" }, ""),
      el("th", { class: "num" }, "sampled")));
  const top = Math.max(...rows.map((r) => Math.max(r.raw, r.filtered || 0)), 1e-9); // bars scaled to it
  for (const r of rows) {
    const chosen = r.id === t.id;
    const tr = el("tr", {
      class: `${chosen ? "chosen" : "branch"}`, title: chosen ? "the token it chose" : "branch: continue from this token",
      dataset: { id: r.id, logprob: r.lp === undefined ? "" : r.lp, filteredLogprob: r.flp === undefined || r.flp === null ? "" : r.flp },
      onclick: chosen ? null : () => branch(index, k, r.id),
    },
    el("td", { class: "lab" }, r.label), el("td", { class: "id" }, r.id), el("td", { class: "num" }, percent(r.raw)),
    el("td", { class: "bar-cell" }, el("div", { class: "barline raw", style: { width: `${(100 * r.raw) / top}%` } }),
      el("div", { class: "barline", style: { width: `${(100 * (r.filtered || 0)) / top}%` } })),
    el("td", { class: "num" }, r.filtered === null ? el("span", { class: "removed" }, r.filteredNote || "?")
      : r.filtered === 0 ? el("span", { class: "removed" }, "removed") : percent(r.filtered)));
    table.append(tr);
  }
  fill(pop,
    el("div", { class: "head" }, el("span", {}, `token ${k + 1}: chose `, el("b", { class: "mono" }, label(span.textContent || "")),
      ` (id ${t.id})`), el("button", { class: "close", type: "button", title: "close (Esc)", onclick: closePopover }, "×")),
    table,
    el("div", { class: "foot" }, `grey: raw distribution; colour: what it was sampled from. Values: ${source}. `,
      "Click another candidate to branch from it."));
  place(pop, span);
  pop.hidden = false;
  focus(index, k, true);
}

function chatRows(t) {
  const filtered = new Map(t.ftop.map(([id, lp]) => [id, lp]));
  const complete = t.ftop.length < TOP; // every kept token is listed: the others were removed
  const rows = t.top.map(([id, lp, bytes]) => ({ id, lp, flp: filtered.has(id) ? filtered.get(id) : null, label: labelOfBytes(bytes) }));
  if (!rows.some((r) => r.id === t.id)) rows.push({ id: t.id, lp: t.lp, flp: t.flp, label: labelOfBytes(t.b) });
  return rows.map((r) => ({
    ...r, raw: prob(r.lp),
    filtered: r.flp !== null ? prob(r.flp) : complete ? 0 : null,
    filteredNote: `< ${percent(t.ftop.length ? prob(t.ftop[t.ftop.length - 1][1]) : 0)}`,
  }));
}

function place(pop, span) {
  const r = span.getBoundingClientRect();
  const w = Math.min(380, window.innerWidth - 16);
  pop.style.left = `${Math.max(8, Math.min(r.left, window.innerWidth - w - 8))}px`;
  const below = r.bottom + 6;
  pop.style.top = `${below}px`;
  requestAnimationFrame(() => {
    const h = pop.offsetHeight;
    if (below + h > window.innerHeight - 8 && r.top - h - 6 > 8) pop.style.top = `${r.top - h - 6}px`;
  });
}

function closePopover() {
  $("popover").hidden = true;
  document.querySelectorAll(".tok.open").forEach((x) => x.classList.remove("open"));
}

// --------------------------------------------------------------------------- panels

const panels = new Panels({
  context: () => panelContext(),
  sampling,
  model: () => state.model,
  onToken: (id) => panels.showEmbeddings([id]),
});

function focus(index, k, user) {
  state.focus = { m: index, k };
  panels.refresh(user);
}

// What the panels look at: the focused reply (prompt + whole reply) and its focused step.
function panelContext() {
  const f = state.focus;
  const m = f && reply(f.m);
  if (state.running) return { ids: null, running: true };
  if (!m || !m.replyIds.length || !(state.model.chat ? m.promptIds : state.doc.promptIds).length) {
    return { ids: null };
  }
  const prompt = state.model.chat ? m.promptIds : state.doc.promptIds;
  const k = Math.min(f.k, m.tokens.length - 1);
  const t = m.tokens[k];
  return {
    ids: prompt.concat(m.replyIds), step: t ? prompt.concat(m.replyIds.slice(0, t.pos)) : prompt.concat(m.replyIds),
    chosen: t ? t.id : null, k, key: `${f.m}:${m.replyIds.length}:${m.branchedAt}`,
  };
}

// --------------------------------------------------------------------------- wiring

function busy(on) {
  state.running = on ? new AbortController() : null;
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("regenerate").disabled = on;
  $("model").disabled = on;
  $("new-chat").disabled = on;
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

async function chooseModel(id) {
  state.model = state.models.find((m) => m.id === id) || state.models[0];
  $("model").value = state.model.id;
  $("chat-controls").hidden = !state.model.chat;
  const input = $("input");
  if (state.model.chat) {
    state.conv = (saved.chats || {})[state.model.id] || [];
    input.placeholder = "Message the model (Enter sends, Shift+Enter: new line)";
    $("send").textContent = "Send";
  } else {
    state.doc = (saved.docs || {})[state.model.id] || { prompt: "", reply: null, promptIds: [] };
    input.placeholder = "The start of a text for the model to continue (Enter generates, Shift+Enter: new line)";
    input.value = state.doc.prompt || "";
    $("send").textContent = "Generate";
  }
  for (const m of state.conv) m.running = false;
  closePopover();
  renderMessages();
  const last = state.model.chat ? lastReplyIndex() : state.doc.reply ? 0 : -1;
  state.focus = last >= 0 ? { m: last, k: 0 } : null;
  panels.reset();
  panels.refresh(false);
  save();
}

function theme(next) {
  const modes = ["auto", "light", "dark"];
  const mode = next ? modes[(modes.indexOf(saved.theme || "auto") + 1) % 3] : saved.theme || "auto";
  saved.theme = mode;
  if (mode === "auto") document.documentElement.removeAttribute("data-theme");
  else document.documentElement.dataset.theme = mode;
  $("theme").textContent = `Theme: ${mode}`;
  if (next) { save(); panels.redraw(); }
}

function wire() {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  $("stop").addEventListener("click", () => state.running && state.running.abort());
  $("regenerate").addEventListener("click", () => !state.running && regenerate());
  $("new-chat").addEventListener("click", () => {
    if (state.model.chat) state.conv = [];
    else state.doc = { prompt: $("input").value, reply: null, promptIds: [] };
    state.focus = null;
    closePopover();
    renderMessages();
    panels.refresh(false);
    save();
    $("input").focus();
  });
  $("model").addEventListener("change", (e) => chooseModel(e.target.value));
  $("theme").addEventListener("click", () => theme(true));
  for (const id of ["level", "budget", "max_tokens", "seed"]) $(id).addEventListener("change", save);
  for (const name of SLIDERS) {
    $(name).addEventListener("input", () => {
      showSliders();
      matchPreset();
      panels.samplingChanged();
    });
    $(name).addEventListener("change", save);
  }
  $("preset").addEventListener("change", (e) => {
    const p = (state.presets || []).find((x) => x.name === e.target.value);
    if (!p) return;
    for (const name of SLIDERS) $(name).value = p[name];
    showSliders();
    panels.samplingChanged();
    save();
  });
  $("messages").addEventListener("click", (e) => {
    const span = e.target.closest(".tok");
    if (span) openPopover(span).catch((err) => showError(err.message));
  });
  $("messages").addEventListener("keydown", (e) => {
    const span = e.target.closest(".tok");
    if (span && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      openPopover(span).catch((err) => showError(err.message));
    }
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closePopover(); });
  document.addEventListener("mousedown", (e) => {
    if (!$("popover").hidden && !e.target.closest("#popover") && !e.target.closest(".tok")) closePopover();
  });
  $("key-box").addEventListener("submit", (e) => {
    e.preventDefault();
    setKey($("key").value.trim());
    start();
  });
}

async function submit() {
  if (state.running || !state.model) return;
  const text = $("input").value;
  showError("");
  if (state.model.chat) {
    if (!text.trim()) return;
    $("input").value = "";
    await send(text);
  } else {
    state.doc.prompt = text;
    await generateDoc(null);
  }
}

async function start() {
  try {
    const [models, presets] = await Promise.all([get("/v1/models"), get("/v1/sampling/presets")]);
    $("key-box").hidden = true;
    showError("");
    state.models = models.data;
    state.presets = presets.data;
    $("preset").replaceChildren(el("option", { value: "" }, "custom"),
      ...presets.data.map((p) => el("option", { value: p.name }, p.name)));
    $("model").replaceChildren(...state.models.map((m) => el("option", { value: m.id }, `${m.id}${m.chat ? "" : " (base)"}`)));
    if (saved.preset) $("preset").value = saved.preset;
    matchPreset();
    await chooseModel(saved.model);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      $("key-box").hidden = false;
      showError("This server asks for an API key: enter it above.");
    } else {
      showError(`Cannot reach the server: ${err.message}`);
    }
  }
}

function restoreControls() {
  if (saved.level) $("level").value = saved.level;
  if (saved.budget !== undefined) $("budget").value = saved.budget;
  const s = saved.sampling;
  if (s) {
    for (const name of SLIDERS) if (s[name] !== undefined) $(name).value = s[name];
    if (s.max_tokens) $("max_tokens").value = s.max_tokens;
    if (s.seed !== null && s.seed !== undefined) $("seed").value = s.seed;
  }
  showSliders();
}

theme(false);
restoreControls();
wire();
start();
