// The notice line above every page.

export function notify(text, ok) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.className = ok ? "ok" : "";
  n.hidden = !text;
}
