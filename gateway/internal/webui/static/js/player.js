// Playback of a session's recording (asciicast v2, as the agent records
// it). The terminal emulation is xterm.js's headless build (@xterm/headless
// from the npm registry, copied into vendor/ by `make ui`); this module
// draws its screen as text in a <pre>, with classes for colours and
// attributes, so that no inline style is needed and the console's strict
// Content-Security-Policy holds. The recording is fetched from the admin
// API and replayed in the page; nothing is sent anywhere else.

import { get, seg } from "./api.js";
import { h, durationText } from "./dom.js";

let loading = null;

// loadEmulator adds vendor/xterm-headless.js (it defines
// window.XtermHeadless) once.
function loadEmulator() {
  if (window.XtermHeadless) return Promise.resolve();
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const s = h("script", { src: "vendor/xterm-headless.js" });
      s.addEventListener("load", () => resolve());
      s.addEventListener("error", () => reject(new Error("the console could not load its terminal emulator (vendor/xterm-headless.js)")));
      document.head.appendChild(s);
    });
  }
  return loading;
}

// parse reads an asciicast v2 recording: its header and output events.
export function parse(text) {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  if (lines.length === 0) throw new Error("the recording is empty");
  const header = JSON.parse(lines[0]);
  if (header.version !== 2) throw new Error("the recording is not asciicast version 2");
  const events = [];
  for (const l of lines.slice(1)) {
    const e = JSON.parse(l);
    if (Array.isArray(e) && (e[1] === "o" || e[1] === "r")) events.push([Number(e[0]), e[1], String(e[2])]);
  }
  return { header, events };
}

// draw renders the terminal's visible screen into pre, as wide as the
// terminal (CSSOM, which the CSP allows, unlike a style attribute).
function draw(term, pre) {
  pre.style.width = "calc(" + term.cols + "ch + 1.6rem)";
  const buf = term.buffer.active;
  const cell = buf.getNullCell();
  const lines = [];
  for (let y = 0; y < term.rows; y++) {
    const line = buf.getLine(buf.viewportY + y);
    const row = [];
    let run = null, key = "";
    for (let x = 0; line && x < term.cols; x++) {
      line.getCell(x, cell);
      if (cell.getWidth() === 0) continue;
      const cls = [];
      let fg = cell.isFgPalette() ? cell.getFgColor() : -1;
      let bg = cell.isBgPalette() ? cell.getBgColor() : -1;
      if (cell.isInverse()) { const t = fg; fg = bg < 0 ? 0 : bg; bg = t < 0 ? 7 : t; }
      if (fg >= 0 && fg < 16) cls.push("fg-" + fg);
      if (bg >= 0 && bg < 16) cls.push("bg-" + bg);
      if (cell.isBold()) cls.push("b");
      if (cell.isUnderline()) cls.push("u");
      const k = cls.join(" ");
      const ch = cell.getChars() || " ";
      if (run && k === key) { run.text += ch; continue; }
      run = { cls: k, text: ch };
      key = k;
      row.push(run);
    }
    // Trailing blanks without a background are left out.
    while (row.length && !row[row.length - 1].cls.includes("bg-") && row[row.length - 1].text.trim() === "") row.pop();
    if (row.length) row[row.length - 1].text = row[row.length - 1].cls.includes("bg-") ? row[row.length - 1].text : row[row.length - 1].text.replace(/\s+$/, "");
    lines.push(row);
  }
  const nodes = [];
  lines.forEach((row, i) => {
    for (const r of row) nodes.push(r.cls ? h("span", { class: r.cls }, r.text) : document.createTextNode(r.text));
    if (i < lines.length - 1) nodes.push(document.createTextNode("\n"));
  });
  pre.replaceChildren(...nodes);
}

export async function play(page, id) {
  const text = await get("/v1/admin/sessions/" + seg(id) + "/recording");
  const rec = parse(typeof text === "string" ? text : JSON.stringify(text));
  await loadEmulator();
  const term = new window.XtermHeadless.Terminal({
    cols: rec.header.width || 80, rows: rec.header.height || 24, scrollback: 0, allowProposedApi: true,
  });
  const pre = h("pre", { id: "player-screen", "aria-label": "the session's terminal" });
  const status = h("span", { id: "player-status", class: "muted" });
  const speed = h("select", { "aria-label": "playback speed" },
    ["1", "2", "4", "16"].map((x) => h("option", { value: x }, x + "×")));
  const total = rec.events.length ? rec.events[rec.events.length - 1][0] : 0;
  let i = 0, timer = null, clock = 0, done = false;
  const show = () => {
    status.textContent = durationText(Math.round(clock * 1e9)) + " of " + durationText(Math.round(total * 1e9)) +
      (done ? " (end)" : timer ? "" : " (paused)");
    page.dataset.playerDone = done ? "1" : "";
  };
  // apply feeds one event to the terminal; then runs after it is parsed.
  const apply = ([t, kind, data], then) => {
    clock = t;
    if (kind === "r") {
      const m = /^(\d+)x(\d+)$/.exec(data);
      if (m) term.resize(Number(m[1]), Number(m[2]));
      then();
      return;
    }
    term.write(data, then);
  };
  const step = () => {
    timer = null;
    if (i >= rec.events.length) { done = true; draw(term, pre); show(); return; }
    const ev = rec.events[i++];
    apply(ev, () => {
      draw(term, pre);
      if (i >= rec.events.length) { done = true; show(); return; }
      const wait = Math.min(2, Math.max(0, rec.events[i][0] - ev[0])) / Number(speed.value);
      timer = setTimeout(step, wait * 1000);
      show();
    });
  };
  const pause = () => { if (timer) { clearTimeout(timer); timer = null; } show(); };
  const toEnd = () => {
    pause();
    const next = () => {
      if (i >= rec.events.length) { done = true; draw(term, pre); show(); return; }
      apply(rec.events[i++], next);
    };
    next();
  };
  const playBtn = h("button", { type: "button", id: "player-play", onclick: () => { if (!timer && !done) step(); } }, "Play");
  const pauseBtn = h("button", { type: "button", onclick: pause }, "Pause");
  const endBtn = h("button", { type: "button", id: "player-end", onclick: toEnd }, "Skip to the end");
  const restart = h("button", { type: "button", onclick: () => { pause(); term.reset(); i = 0; clock = 0; done = false; step(); } }, "Restart");
  page.replaceChildren(h("h1", {}, "Recording of session ", h("span", { class: "mono" }, id)),
    h("div", { class: "toolbar" }, playBtn, pauseBtn, restart, endBtn, speed, status,
      h("a", { href: "#/sessions" }, "back to the sessions")),
    pre);
  show();
  step();
  return () => { pause(); term.dispose(); };
}
