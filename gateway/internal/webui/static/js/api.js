// The console's calls to the gateway's JSON API. The session cookie goes
// with every call (same origin); calls that change something carry the
// session's CSRF token in X-Tunnel-CSRF, which the gateway checks along
// with the Origin header.

let csrf = "";

export function setCSRF(token) { csrf = token || ""; }

export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// call sends one request and returns the decoded JSON answer (or the text
// when the answer is not JSON). A refusal throws an APIError whose message
// is the gateway's sentence.
export async function call(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {}, cache: "no-store", redirect: "error" };
  if (method !== "GET" && method !== "HEAD") {
    opts.headers["X-Tunnel-CSRF"] = csrf;
  }
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new APIError(0, "network", "the gateway could not be reached: " + e.message);
  }
  const type = resp.headers.get("Content-Type") || "";
  const data = type.startsWith("application/json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const msg = data && data.error ? data.error : "the gateway answered " + resp.status;
    throw new APIError(resp.status, data && data.code, msg);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);

// seg escapes one path segment.
export const seg = (s) => encodeURIComponent(s);
