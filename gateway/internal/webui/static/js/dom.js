// Small DOM helpers. Text always goes in as text (textContent), never as
// HTML, so nothing the gateway returns can become markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// table builds a table with a header row and one row per item.
export function table(headers, rows, empty) {
  if (rows.length === 0) return h("p", { class: "muted" }, empty || "Nothing to show.");
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows));
}

export function when(t) {
  if (!t) return "";
  const d = new Date(t);
  if (isNaN(d) || d.getFullYear() < 2000) return "";
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function bytes(n) {
  n = Number(n || 0);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

// durationText shows a Go duration in nanoseconds (the API's Duration) or a
// duration string as it is.
export function durationText(d) {
  if (typeof d === "string") return d;
  if (typeof d !== "number") return "";
  let s = Math.round(d / 1e9);
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const mm = Math.floor(s / 60); s -= mm * 60;
  return (hh ? hh + "h" : "") + (mm ? mm + "m" : "") + (s || (!hh && !mm) ? s + "s" : "");
}

// confirmButton is a button that asks for a second click before it acts:
// the first click turns it into "Really ...?" for five seconds.
export function confirmButton(label, attrs, action) {
  const b = h("button", Object.assign({ type: "button", class: "danger" }, attrs), label);
  let armed = null;
  b.addEventListener("click", async () => {
    if (!armed) {
      b.textContent = "Really " + label.toLowerCase() + "?";
      b.classList.add("confirm");
      armed = setTimeout(() => { armed = null; b.textContent = label; b.classList.remove("confirm"); }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.disabled = true;
    try { await action(); } finally { b.disabled = false; b.textContent = label; b.classList.remove("confirm"); }
  });
  return b;
}
