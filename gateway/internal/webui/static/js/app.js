// The console's entry point: the login form, the navigation (hash
// routes: #/sessions, #/users, #/agents, #/requests, #/audit,
// #/play/SESSION), and logout.

import { call, get, post, setCSRF, APIError } from "./api.js";
import { notify } from "./notice.js";
import * as pages from "./pages.js";
import { play } from "./player.js";

const $ = (id) => document.getElementById(id);
let me = null;
let cleanup = null;

function showLogin(message) {
  me = null;
  setCSRF("");
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("page").hidden = true;
  $("page").replaceChildren();
  $("login").hidden = false;
  notify(message || "", false);
  $("login-user").focus();
}

function loggedIn(s) {
  me = s;
  setCSRF(s.csrf);
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = s.user + (s.admin ? " (admin)" : "");
  for (const a of document.querySelectorAll("#nav a[data-admin]")) a.hidden = !s.admin;
  route();
}

async function route() {
  if (!me) return;
  if (cleanup) { cleanup(); cleanup = null; }
  let hash = location.hash.replace(/^#\/?/, "");
  if (!hash) hash = me.admin ? "sessions" : "requests";
  const [name, arg] = hash.split("/");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === "#/" + name);
  const page = $("page");
  page.hidden = false;
  page.dataset.page = name;
  page.dataset.ready = "";
  notify("", false);
  try {
    if (name === "play" && arg) {
      cleanup = await play(page, decodeURIComponent(arg));
    } else if (pages[name]) {
      await pages[name](page);
    } else {
      page.replaceChildren();
      notify("No such page: " + name, false);
    }
  } catch (e) {
    if (e instanceof APIError && e.status === 401) { showLogin(e.message); return; }
    notify(e.message, false);
  }
  page.dataset.ready = name;
}

async function login(ev) {
  ev.preventDefault();
  const button = $("login-submit");
  button.disabled = true;
  try {
    const s = await call("POST", "/ui/api/login", {
      user: $("login-user").value.trim(),
      password: $("login-password").value,
      otp: $("login-otp").value.replace(/\s/g, ""),
    });
    $("login-password").value = "";
    $("login-otp").value = "";
    notify("", false);
    loggedIn(s);
  } catch (e) {
    $("login-otp").value = "";
    notify(e.message, false);
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  try { await post("/ui/api/logout"); } catch (e) { /* the session is gone either way */ }
  location.hash = "";
  showLogin("You are logged out.");
  $("notice").className = "ok";
}

async function start() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  try {
    loggedIn(await get("/ui/api/session"));
  } catch (e) {
    showLogin(e instanceof APIError && e.message.includes("console session") ? e.message : "");
  }
}

start();
