// The console's pages. Each takes the page element and the logged-in
// user, fills the element, and returns when it is drawn.

import { get, post, seg } from "./api.js";
import { h, table, when, bytes, confirmButton } from "./dom.js";
import { notify } from "./notice.js";

async function act(what, fn, redraw) {
  try {
    await fn();
    notify(what, true);
  } catch (e) {
    notify(e.message, false);
  }
  if (redraw) await redraw();
}

// sessions: the live bastion sessions, with a revoke button, the live
// streams per agent and path, and the recent sessions with their
// recordings.
export async function sessions(page) {
  const draw = async () => {
    const [live, recent, agents] = await Promise.all([
      get("/v1/admin/sessions?active=1"),
      get("/v1/admin/sessions?limit=50"),
      get("/v1/admin/agents"),
    ]);
    const rows = live.map((s) => h("tr", { dataset: { session: s.id } },
      h("td", {}, s.user),
      h("td", { class: "mono nowrap" }, s.login + "@" + s.node),
      h("td", {}, s.source_ip || ""),
      h("td", {}, when(s.created_at)),
      h("td", {}, when(s.deadline)),
      h("td", { class: "num" }, bytes(s.bytes_in) + " / " + bytes(s.bytes_out)),
      h("td", {}, "bastion (SSH through the gateway)"),
      h("td", { class: "mono" }, s.id),
      h("td", {}, confirmButton("Revoke", { dataset: { revoke: s.id } },
        () => act("Session " + s.id + " revoked: its user was told \"access revoked by an administrator\".",
          () => post("/v1/admin/sessions/" + seg(s.id) + "/revoke"), draw))),
    ));
    const streams = agents.filter((a) => a.online).map((a) => h("tr", {},
      h("td", {}, a.name),
      h("td", { class: "num" }, String(a.relayed_streams || 0)),
      h("td", { class: "num" }, String(a.direct_streams || 0)),
      h("td", {}, a.direct === "on" ? "direct allowed" : "relayed only"),
      h("td", {}, when(a.connected_since)),
    ));
    const past = recent.filter((s) => s.state !== "active").map((s) => h("tr", {},
      h("td", {}, s.user),
      h("td", { class: "mono nowrap" }, s.login + "@" + s.node),
      h("td", {}, when(s.created_at)),
      h("td", {}, when(s.ended_at)),
      h("td", { class: "state-" + s.state }, s.state),
      h("td", {}, s.end_reason || ""),
      h("td", { class: "num" }, bytes(s.bytes_in) + " / " + bytes(s.bytes_out)),
      h("td", {}, s.recording ? h("a", { href: "#/play/" + seg(s.id), dataset: { play: s.id } }, "play") : h("span", { class: "muted" }, "none")),
    ));
    page.replaceChildren(
      h("h1", {}, "Live sessions"),
      h("div", { class: "toolbar" }, h("button", { type: "button", onclick: draw }, "Refresh"),
        h("span", { class: "muted" }, "Revoking ends the session at once and puts its certificate on the deny list.")),
      table(["User", "Where", "From", "Since", "Until", "Bytes in / out", "Path", "Session", ""], rows, "No live session."),
      h("h2", {}, "Live streams by agent"),
      table(["Agent", "Relayed streams", "Direct streams", "Path", "Connected since"], streams, "No agent online."),
      h("h2", {}, "Recent sessions"),
      table(["User", "Where", "Started", "Ended", "State", "Reason", "Bytes in / out", "Recording"], past, "No ended session."),
    );
  };
  await draw();
}

// users: lock, unlock, grant and revoke roles.
export async function users(page) {
  const draw = async () => {
    const [list, roles] = await Promise.all([get("/v1/admin/users"), get("/v1/admin/roles")]);
    const roleNames = roles.map((r) => r.name);
    const rows = list.map((u) => {
      const pick = h("select", { "aria-label": "role to grant to " + u.name, dataset: { grantSelect: u.name } },
        roleNames.filter((r) => !(u.roles || []).includes(r)).map((r) => h("option", { value: r }, r)));
      return h("tr", { dataset: { user: u.name } },
        h("td", {}, u.name),
        h("td", {}, (u.roles || []).map((r) => h("span", { class: "tag" }, r,
          h("button", { type: "button", title: "revoke role " + r, "aria-label": "revoke role " + r + " from " + u.name,
            onclick: () => act("Role " + r + " revoked from " + u.name + ".",
              () => post("/v1/admin/users/" + seg(u.name) + "/roles", { revoke: [r] }), draw) }, "×")))),
        h("td", { class: u.locked ? "state-locked" : "" }, u.locked ? "locked" :
          (u.locked_out_until ? "locked out until " + when(u.locked_out_until) : "active")),
        h("td", {}, when(u.created_at)),
        h("td", {}, h("div", { class: "actions" },
          u.locked
            ? h("button", { type: "button", dataset: { unlock: u.name },
              onclick: () => act("User " + u.name + " unlocked.", () => post("/v1/admin/users/" + seg(u.name) + "/unlock"), draw) }, "Unlock")
            : confirmButton("Lock", { dataset: { lock: u.name } },
              () => act("User " + u.name + " locked: their sessions and streams were closed.", () => post("/v1/admin/users/" + seg(u.name) + "/lock"), draw)),
          pick,
          h("button", { type: "button", dataset: { grant: u.name }, disabled: pick.options.length === 0,
            onclick: () => act("Role " + pick.value + " granted to " + u.name + ".",
              () => post("/v1/admin/users/" + seg(u.name) + "/roles", { grant: [pick.value] }), draw) }, "Grant"))));
    });
    page.replaceChildren(h("h1", {}, "Users"),
      h("div", { class: "toolbar" }, h("button", { type: "button", onclick: draw }, "Refresh"),
        h("span", { class: "muted" }, "Locking a user closes their sessions, streams and console sessions at once.")),
      table(["User", "Roles", "State", "Created", ""], rows, "No user."));
  };
  await draw();
}

// agents: online, path, lock.
export async function agents(page) {
  const draw = async () => {
    const list = await get("/v1/admin/agents");
    const rows = list.map((a) => h("tr", { dataset: { agent: a.name } },
      h("td", {}, a.name),
      h("td", { class: a.online ? "state-online" : "muted" }, a.online ? "online since " + when(a.connected_since) : "offline" + (a.last_seen ? ", last seen " + when(a.last_seen) : "")),
      h("td", {}, a.online ? (a.direct === "on" ? "direct or relayed" : "relayed") : ""),
      h("td", { class: "num" }, a.online ? (a.relayed_streams || 0) + " relayed, " + (a.direct_streams || 0) + " direct" : ""),
      h("td", { class: "mono" }, (a.services || []).join(", ")),
      h("td", { class: a.locked ? "state-locked" : "" }, a.locked ? "locked" : "active"),
      h("td", {}, a.locked
        ? h("button", { type: "button", dataset: { unlockAgent: a.name },
          onclick: () => act("Agent " + a.name + " unlocked.", () => post("/v1/admin/agents/" + seg(a.name) + "/unlock"), draw) }, "Unlock")
        : confirmButton("Lock", { dataset: { lockAgent: a.name } },
          () => act("Agent " + a.name + " locked: its connection and sessions were closed.", () => post("/v1/admin/agents/" + seg(a.name) + "/lock"), draw))),
    ));
    page.replaceChildren(h("h1", {}, "Agents"),
      h("div", { class: "toolbar" }, h("button", { type: "button", onclick: draw }, "Refresh")),
      table(["Agent", "Online", "Path", "Live streams", "Services", "State", ""], rows, "No agent enrolled."));
  };
  await draw();
}

// requests: access requests the user may see; approve or deny with a
// comment, revoke an approved one.
export async function requests(page) {
  const draw = async () => {
    const list = await get("/v1/requests?all=1");
    const rows = list.map((r) => {
      const comment = h("input", { placeholder: "comment", "aria-label": "comment on request " + r.id, dataset: { comment: r.id } });
      const decide = (verb, past) => () => act("Request " + r.id + " " + past + ".",
        () => post("/v1/requests/" + seg(r.id) + "/" + verb, { comment: comment.value.trim() }), draw);
      const buttons = [];
      if (r.state === "pending" && r.can_decide) {
        buttons.push(comment,
          h("button", { type: "button", class: "primary", dataset: { approve: r.id }, onclick: decide("approve", "approved") }, "Approve"),
          h("button", { type: "button", class: "danger", dataset: { deny: r.id }, onclick: decide("deny", "denied") }, "Deny"));
      } else if (r.state === "approved" && r.can_revoke) {
        buttons.push(comment, confirmButton("Revoke", { dataset: { revokeRequest: r.id } }, decide("revoke", "revoked")));
      }
      return h("tr", { dataset: { request: r.id } },
        h("td", { class: "mono" }, r.id),
        h("td", {}, r.user),
        h("td", {}, h("span", { class: "tag" }, r.role)),
        h("td", {}, r.duration),
        h("td", {}, r.reason),
        h("td", { class: "state-" + r.state }, r.state),
        h("td", {}, when(r.created_at)),
        h("td", {}, r.decided_by ? r.decided_by + (r.comment ? ": " + r.comment : "") : ""),
        h("td", {}, r.end ? when(r.start) + " to " + when(r.end) : ""),
        h("td", {}, h("div", { class: "actions" }, buttons)));
    });
    page.replaceChildren(h("h1", {}, "Access requests"),
      h("div", { class: "toolbar" }, h("button", { type: "button", onclick: draw }, "Refresh"),
        h("span", { class: "muted" }, "Requests are made with tunnel request create; you see yours and those your roles may decide.")),
      table(["Request", "User", "Role", "For", "Reason", "State", "Asked", "Decided", "Window", ""], rows, "No access request."));
  };
  await draw();
}

// audit: the audit log, filtered by type and user, paged, and verified.
export async function audit(page) {
  const type = h("input", { id: "audit-type", placeholder: "type (login.*, session.revoked)" });
  const user = h("input", { id: "audit-user", placeholder: "user" });
  const verdict = h("span", { id: "audit-verify" });
  const list = h("div", { id: "audit-list" });
  let after = 0;
  const draw = async () => {
    const q = new URLSearchParams({ after: String(after), limit: "100" });
    if (type.value.trim()) q.set("type", type.value.trim());
    if (user.value.trim()) q.set("user", user.value.trim());
    const answer = await get("/v1/admin/audit?" + q.toString());
    const events = Array.isArray(answer) ? answer : answer.events || [];
    const next = Array.isArray(answer) ? (events.length ? events[events.length - 1].seq : after) : answer.next;
    const rows = events.map((e) => h("tr", {},
      h("td", { class: "num" }, String(e.seq)),
      h("td", {}, when(e.time)),
      h("td", { class: "mono" }, e.type),
      h("td", {}, e.actor),
      h("td", { class: "mono" }, e.subject || ""),
      h("td", { class: "state-" + e.outcome }, e.outcome),
      h("td", {}, e.reason || ""),
      h("td", {}, e.source_ip || ""),
      h("td", { class: "mono" }, Object.entries(e.details || {}).map(([k, v]) => k + "=" + v).join(" "))));
    list.dataset.filter = q.get("type") || "";
    list.replaceChildren(
      table(["#", "Time", "Type", "Actor", "Subject", "Outcome", "Reason", "Source", "Details"], rows, "No event matches."),
      h("div", { class: "toolbar" },
        h("button", { type: "button", disabled: after === 0, onclick: () => { after = 0; draw(); } }, "First page"),
        h("button", { type: "button", disabled: events.length < 100, onclick: () => { after = next; draw(); } }, "Next page")));
  };
  const verify = async () => {
    verdict.textContent = "verifying…";
    verdict.className = "";
    try {
      const v = await get("/v1/admin/audit/verify");
      verdict.textContent = v.ok ? "chain intact: " + v.events + " events, head " + v.head.slice(0, 16) + "…"
        : "chain broken at event " + v.broken_at + ": " + v.problem;
      verdict.className = v.ok ? "verify-ok" : "verify-bad";
    } catch (e) {
      verdict.textContent = e.message;
      verdict.className = "verify-bad";
    }
  };
  page.replaceChildren(h("h1", {}, "Audit log"),
    h("form", { class: "toolbar", onsubmit: (ev) => { ev.preventDefault(); after = 0; draw().catch((e) => notify(e.message, false)); } },
      type, user, h("button", { type: "submit", id: "audit-filter" }, "Filter"),
      h("button", { type: "button", id: "audit-verify-button", onclick: verify }, "Verify the chain"), verdict),
    list);
  await draw();
}
