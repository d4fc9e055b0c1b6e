// edgemon hub console: live updates (server-sent events), commands with the device's reply, local times.
// Plain JavaScript, no build step. Data from the server is only ever set as textContent (never as HTML).
"use strict";

(function () {
  const PRIORITY_LABEL = { high: "HIGH", medium: "MED", low: "LOW" };
  const PRIORITY_RANK = { high: 0, medium: 1, low: 2 };
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const page = document.body.dataset.page || "";

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function isoOf(ts) {
    if (typeof ts === "number") return new Date(ts * 1000).toISOString();
    return ts || "";
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  function localTime(iso) {
    // Browser's time zone, 24 h, year first: unambiguous on every ward whatever the locale.
    const d = new Date(iso);
    if (isNaN(d.getTime())) return iso;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function timeEl(ts) {
    const iso = isoOf(ts);
    if (!iso) return el("span", { class: "none" }, "-");
    return el("time", { datetime: iso, title: iso }, localTime(iso));
  }

  function localizeTimes(root) {
    for (const t of (root || document).querySelectorAll("time[datetime]")) {
      t.title = t.getAttribute("datetime");
      t.textContent = localTime(t.getAttribute("datetime"));
    }
  }

  function num(v, digits) {
    return typeof v === "number" ? v.toFixed(digits) : "-";
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await r.json(); } catch (e) { /* empty body */ }
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  }

  // ------------------------------------------------------------------ inbox
  function stateText(a) {
    if (a.status === "resolved") return "resolved";
    if (a.status === "closed") return "closed at the hub";
    return a.acked_at ? (a.status + ", acknowledged") : (a.status || "?");
  }

  function rankOf(tr) {
    const resolved = tr.dataset.status === "resolved" || tr.dataset.status === "closed" ? 1 : 0;
    const pr = PRIORITY_RANK[tr.dataset.priority];
    return [resolved, pr === undefined ? 3 : pr, -parseFloat(tr.dataset.last || "0")];
  }

  function before(a, b) {
    for (let i = 0; i < a.length; i++) {
      if (a[i] !== b[i]) return a[i] < b[i];
    }
    return false;
  }

  function inboxRow(a) {
    const s = a.summary || {};
    const ev = s.evidence || {};
    const pr = a.priority || "";
    const tr = el("tr", {
      class: "prio-" + pr + (a.status === "resolved" || a.status === "closed" ? " resolved" : "") + (a.acked_at ? " acked" : "") + " fresh",
      "data-alert-id": a.alert_id, "data-priority": pr, "data-status": a.status || "",
      "data-last": String(a.last_stored_at || 0),
    });
    const td0 = el("td");
    td0.appendChild(el("span", { class: "prio prio-" + pr }, PRIORITY_LABEL[pr] || pr.toUpperCase() || "?"));
    tr.appendChild(td0);
    const td1 = el("td", { class: "l" });
    td1.appendChild(el("a", { href: "/alerts/" + encodeURIComponent(a.alert_id) },
      a.display || s.display || a.condition || "alert"));
    if (a.has_strip) { td1.appendChild(document.createTextNode(" ")); td1.appendChild(el("span", { class: "strip-tag" }, "strip")); }
    tr.appendChild(td1);
    tr.appendChild(el("td", { class: "l" }, a.site + "/" + a.device));
    tr.appendChild(el("td", { class: "l state" }, stateText(a)));
    const td4 = el("td"); td4.appendChild(timeEl(s.fired_at || a.first_stored_at)); tr.appendChild(td4);
    const td5 = el("td"); td5.appendChild(timeEl(a.last_stored_at)); tr.appendChild(td5);
    tr.appendChild(el("td", {}, a.n_messages));
    tr.appendChild(el("td", {}, num(ev.hr_bpm, 0)));
    tr.appendChild(el("td", {}, num(ev.probability, 2)));
    return tr;
  }

  function upsertInbox(a) {
    const tbody = document.querySelector("#inbox tbody");
    if (!tbody) return;
    const empty = document.getElementById("inbox-empty");
    if (empty) empty.remove();
    const old = tbody.querySelector('tr[data-alert-id="' + CSS.escape(a.alert_id) + '"]');
    if (old) old.remove();
    const row = inboxRow(a);
    const key = rankOf(row);
    let placed = false;
    for (const tr of tbody.rows) {
      if (before(key, rankOf(tr))) { tbody.insertBefore(row, tr); placed = true; break; }
    }
    if (!placed) tbody.appendChild(row);
    setTimeout(function () { row.classList.remove("fresh"); }, 4000);
    while (tbody.rows.length > 500) tbody.deleteRow(tbody.rows.length - 1);
  }

  // ------------------------------------------------------------------ one alert
  const alertData = document.getElementById("alert-data");
  const alertId = alertData ? alertData.dataset.alertId : null;

  function commandRow(c) {
    const tr = el("tr", { "data-command-id": c.command_id, class: "cmd-pending" });
    const td0 = el("td"); td0.appendChild(timeEl(c.issued_at)); tr.appendChild(td0);
    tr.appendChild(el("td", { class: "l" }, c.label || c.type));
    tr.appendChild(el("td", { class: "l" }, c.issued_by || ""));
    tr.appendChild(el("td", { class: "l reply" }, "waiting for the device"));
    return tr;
  }

  function showReply(commandId, ok, reason) {
    const tr = document.querySelector('#commands tr[data-command-id="' + CSS.escape(commandId) + '"]');
    if (!tr) return false;
    tr.className = ok ? "cmd-ok" : "cmd-refused";
    tr.querySelector(".reply").textContent = ok ? "device: ok" : ("device refused: " + (reason || "?"));
    if (ok && tr.dataset.type === "ack") {
      const st = document.getElementById("alert-state");
      if (st && st.textContent.indexOf("resolved") < 0) st.textContent = "firing, acknowledged";
    }
    return true;
  }

  function pollCommand(commandId, tries) {
    // Fallback when the live stream is down: ask the hub what the device replied.
    setTimeout(async function () {
      const tr = document.querySelector('#commands tr[data-command-id="' + CSS.escape(commandId) + '"]');
      if (!tr || !tr.classList.contains("cmd-pending")) return;
      try {
        const r = await fetch("/api/commands/" + encodeURIComponent(commandId), { credentials: "same-origin" });
        if (r.ok) {
          const c = await r.json();
          if (c.replied_at !== null && c.replied_at !== undefined) { showReply(commandId, c.reply_ok, c.reply_reason); return; }
        }
      } catch (e) { /* retry */ }
      if (tries > 1) pollCommand(commandId, tries - 1);
      else tr.querySelector(".reply").textContent = "no reply yet (device offline?); it gets the command when it reconnects";
    }, 1500);
  }

  function addCommand(res, label) {
    const tbody = document.querySelector("#commands tbody");
    const row = commandRow({ command_id: res.command_id, issued_at: res.issued_at, type: res.type, label: label,
      issued_by: res.issued_by });
    row.dataset.type = res.type;
    tbody.insertBefore(row, tbody.firstChild);
    pollCommand(res.command_id, 10);
  }

  function setupAlertPage() {
    const ack = document.getElementById("ack-btn");
    if (ack) {
      ack.addEventListener("click", async function () {
        ack.disabled = true;
        try {
          addCommand(await post("/api/alerts/" + encodeURIComponent(alertId) + "/ack", {}), "ack");
        } catch (e) {
          alert("Acknowledge failed: " + e.message);
        } finally {
          ack.disabled = false;
        }
      });
    }
    const close = document.getElementById("close-form");
    if (close) {
      close.addEventListener("submit", async function (ev) {
        ev.preventDefault();
        const reason = document.getElementById("close-reason").value.trim();
        if (!reason) { alert("Closing an alert needs a reason."); return; }
        if (!confirm("Close this alert at the hub? The device is not asked; if it still holds the alert, " +
                     "its next message opens it again.")) return;
        try {
          await post("/api/alerts/" + encodeURIComponent(alertId) + "/close", { reason: reason });
          location.reload();
        } catch (e) {
          alert("Close failed: " + e.message);
        }
      });
    }
    const form = document.getElementById("silence-form");
    if (form) {
      form.addEventListener("submit", async function (ev) {
        ev.preventDefault();
        const sel = document.getElementById("silence-duration");
        const dur = parseFloat(sel.value);
        try {
          const res = await post("/api/alerts/" + encodeURIComponent(alertId) + "/silence",
            { duration_s: dur, reason: document.getElementById("silence-reason").value });
          addCommand(res, "silence " + Math.round(dur / 60) + " min");
        } catch (e) {
          alert("Silence failed: " + e.message);
        }
      });
    }
  }

  // ------------------------------------------------------------------ devices
  function updatePresence(d) {
    const tr = document.querySelector('#devices tr[data-device="' + CSS.escape(d.site + "/" + d.device) + '"]');
    if (!tr) return;
    const span = tr.querySelector(".presence");
    span.className = "presence " + d.state;
    span.textContent = d.state;
    tr.className = "presence-" + d.state;
    const since = tr.cells[2];
    since.textContent = "";
    since.appendChild(timeEl(d.ts));
  }

  function setupExport() {
    const form = document.getElementById("export-form");
    if (!form) return;
    const to = new Date();
    const from = new Date(to.getTime() - 24 * 3600 * 1000);
    const local = function (d) { return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16); };
    document.getElementById("export-from").value = local(from);
    document.getElementById("export-to").value = local(to);
    form.addEventListener("submit", function () {
      document.getElementById("export-since").value = String(new Date(document.getElementById("export-from").value).getTime() / 1000);
      document.getElementById("export-until").value = String(new Date(document.getElementById("export-to").value).getTime() / 1000);
    });
  }

  // ------------------------------------------------------------------ live stream
  function connect() {
    const state = document.getElementById("live-state");
    const es = new EventSource("/api/events");
    es.addEventListener("hello", function () { if (state) { state.textContent = "live"; state.className = "live on"; } });
    es.addEventListener("alert", function (m) {
      const a = JSON.parse(m.data);
      if (page === "inbox") upsertInbox(a);
      if (alertId && a.alert_id === alertId) {
        const st = document.getElementById("alert-state");
        if (st) st.textContent = stateText(a);
      }
    });
    es.addEventListener("reply", function (m) {
      const r = JSON.parse(m.data);
      if (r.command_id) showReply(r.command_id, r.ok, r.reason);
    });
    es.addEventListener("presence", function (m) { if (page === "devices") updatePresence(JSON.parse(m.data)); });
    es.addEventListener("resync", function () { es.close(); location.reload(); });
    es.onerror = function () { if (state) { state.textContent = "reconnecting"; state.className = "live off"; } };
  }

  localizeTimes(document);
  if (page === "alert") setupAlertPage();
  if (page === "export") setupExport();
  if (page && page !== "login") connect();
})();
