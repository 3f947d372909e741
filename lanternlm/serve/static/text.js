// Small pure helpers: token text from bytes, labels, numbers, DOM building.

// Each token's text when their bytes are decoded in order: a character split across
// tokens belongs to the token that completes it (the earlier ones show nothing).
export function tokenTexts(byteLists) {
  const decoder = new TextDecoder();
  return byteLists.map((bytes, i) =>
    decoder.decode(new Uint8Array(bytes || []), { stream: i < byteLists.length - 1 }));
}

// One token alone, as a short label: visible spaces and newlines.
export function label(text) {
  if (text === "") return "·";
  return text.replace(/\n/g, "⏎").replace(/\t/g, "⇥").replace(/^ /, "␣")
    .replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

export function labelOfBytes(bytes) {
  return label(new TextDecoder().decode(new Uint8Array(bytes || [])));
}

export const isSpecial = (text) => /^<\|[^|]*\|>$/.test(text);

export function percent(p) {
  if (p >= 0.995) return `${(100 * p).toFixed(1)}%`;
  if (p >= 0.001) return `${(100 * p).toFixed(1)}%`;
  if (p > 0) return "<0.1%";
  return "0%";
}

export const prob = (logprob) => (logprob <= -9999 ? 0 : Math.exp(logprob));

export function bytesOf(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

export function count(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

// el("div", {class: "x", onclick: f}, child, "text", ...): a DOM element.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replace node's children; null, undefined and false children are left out (as in el()).
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}
