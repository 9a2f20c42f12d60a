import Crypto
import Foundation

/// The dashboard page: one self-contained HTML file (no external scripts, fonts or styles).
///
/// It reads the same JSON API as everyone else, refreshes every 5 s, and deep-links a
/// gateway's drill-down as `/#gw=ID` (also `#fleet=NAME` to narrow to one fleet).
enum Dashboard {
    static let page: [UInt8] = Array(html.utf8)

    /// The page's Content-Security-Policy: nothing but its own inline script and style (by
    /// their SHA-256) and requests to this server; it cannot be framed.
    static let contentSecurityPolicy: String = {
        "default-src 'none'; script-src '\(hash(of: "script"))'; style-src '\(hash(of: "style"))'; connect-src 'self'; "
            + "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    }()

    /// `sha256-BASE64` of the text inside the first `<tag>` element of `page`, as a
    /// Content-Security-Policy source names an inline script or style; `none` without one.
    static func hash(of tag: String, in page: String = html) -> String {
        guard let start = page.range(of: "<\(tag)>"), let end = page.range(of: "</\(tag)>", range: start.upperBound..<page.endIndex) else {
            return "none"
        }
        let content = Data(page[start.upperBound..<end.lowerBound].utf8)
        return "sha256-" + Data(SHA256.hash(data: content)).base64EncodedString()
    }

    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spectra Fleet</title>
<style>
  :root { --bg:#0f1419; --panel:#182028; --line:#2a3540; --text:#e6edf3; --dim:#8b98a5; --accent:#4fb3ff; --ok:#3fb950; --warn:#d29922; --bad:#f85149; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; align-items:baseline; gap:16px; padding:14px 20px; border-bottom:1px solid var(--line); }
  header h1 { font-size:18px; margin:0; }
  header .meta { color:var(--dim); font-size:12px; }
  #status.stale { color:var(--bad); }
  main { padding:16px 20px; display:grid; gap:16px; }
  .kpis { display:grid; grid-template-columns:repeat(auto-fit, minmax(150px, 1fr)); gap:12px; }
  .kpi, .panel { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
  .kpi .label { color:var(--dim); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
  .kpi .value { font-size:26px; font-weight:600; margin-top:4px; }
  .kpi .sub { color:var(--dim); font-size:12px; }
  .grid2 { display:grid; grid-template-columns:2fr 1fr; gap:16px; }
  .grid3 { display:grid; grid-template-columns:repeat(3, 1fr); gap:16px; }
  @media (max-width: 900px) { .grid2, .grid3 { grid-template-columns:1fr; } }
  h2 { font-size:13px; margin:0 0 10px; color:var(--dim); text-transform:uppercase; letter-spacing:.04em; }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--dim); font-weight:500; font-size:12px; }
  td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
  tbody tr.gw { cursor:pointer; }
  tbody tr.gw:hover { background:#1f2a35; }
  .dot { display:inline-block; width:8px; height:8px; border-radius:50%; margin-right:6px; background:var(--dim); }
  .dot.on { background:var(--ok); }
  .bars div { display:flex; align-items:center; gap:8px; margin:4px 0; }
  .bars span.name { width:120px; color:var(--dim); overflow:hidden; text-overflow:ellipsis; }
  .bars span.bar { height:10px; background:var(--accent); border-radius:3px; }
  h2.spaced { margin-top:14px; }
  h2.split { display:flex; justify-content:space-between; align-items:center; }
  .bars span.count { font-variant-numeric:tabular-nums; }
  input[type=search] { background:var(--bg); color:var(--text); border:1px solid var(--line); border-radius:6px; padding:6px 10px; width:260px; }
  svg text { fill:var(--dim); font-size:10px; }
  #drill { display:none; }
  #drill.open { display:block; }
  .close { float:right; cursor:pointer; color:var(--accent); }
  .empty { color:var(--dim); font-style:italic; }
  header .who { margin-left:auto; display:flex; gap:10px; align-items:baseline; }
  header button { font:inherit; font-size:12px; background:none; border:1px solid var(--line); border-radius:6px; color:var(--accent); padding:3px 9px; cursor:pointer; }
  .refused { display:inline-block; margin-left:6px; padding:0 5px; border-radius:3px; font-size:11px; background:var(--bad); color:var(--bg); }
</style>
</head>
<body>
<header>
  <h1>Spectra Fleet</h1>
  <span class="meta" id="fleet-name"></span>
  <span class="meta" id="status">loading…</span>
  <div class="who"><span class="meta" id="user"></span>
    <form method="post" action="/logout" id="logout-form"><button type="submit" id="logout">Sign out</button></form></div>
</header>
<main>
  <section class="kpis">
    <div class="kpi"><div class="label">Online</div><div class="value" id="kpi-online">–</div><div class="sub">of <span id="kpi-gateways">–</span> gateways<span id="kpi-silent-note" hidden>; <span id="kpi-silent">–</span> of them silent</span></div></div>
    <div class="kpi"><div class="label">Active today</div><div class="value" id="kpi-active">–</div><div class="sub">gateways with a session</div></div>
    <div class="kpi"><div class="label">Sessions</div><div class="value" id="kpi-sessions">–</div><div class="sub"><span id="kpi-completed">–</span> completed, <span id="kpi-aborted">–</span> aborted</div></div>
    <div class="kpi"><div class="label">Completion rate</div><div class="value" id="kpi-completion">–</div><div class="sub">completed / ended</div></div>
    <div class="kpi"><div class="label">Adherence</div><div class="value" id="kpi-adherence">–</div><div class="sub">daily for 8 weeks, then 1–3 a week</div></div>
    <div class="kpi"><div class="label">Backlog</div><div class="value" id="kpi-backlog">–</div><div class="sub">messages on <span id="kpi-backlog-gateways">–</span> gateways</div></div>
    <div class="kpi"><div class="label">Completeness</div><div class="value" id="kpi-completeness">–</div><div class="sub">of sequence numbers received</div></div>
    <div class="kpi"><div class="label">Safety trips</div><div class="value" id="kpi-trips">–</div><div class="sub">all time</div></div>
  </section>
  <section class="grid2">
    <div class="panel"><h2>Sessions per day (30 days)</h2><div id="chart-daily"></div></div>
    <div class="panel"><h2>Level mix (minutes)</h2><div class="bars" id="level-mix"></div></div>
  </section>
  <section class="grid3">
    <div class="panel"><h2>Abort reasons</h2><div class="bars" id="abort-reasons"></div></div>
    <div class="panel"><h2>Firmware versions</h2><div class="bars" id="firmware"></div></div>
    <div class="panel"><h2>Regimen</h2><div class="bars" id="adherence-detail"></div></div>
  </section>
  <section class="panel" id="drill">
    <span class="close" id="drill-close">close ✕</span>
    <h2>Gateway <span id="drill-id"></span></h2>
    <div class="kpis" id="drill-kpis"></div>
    <h2 class="spaced">Recent sessions</h2>
    <table id="drill-sessions"><thead><tr><th>Session</th><th>Day</th><th>Outcome</th><th>Reason</th><th class="num">Level</th><th class="num">Stimulating</th><th class="num">Pauses</th><th class="num">Trips</th><th>Regimen</th></tr></thead><tbody></tbody></table>
  </section>
  <section class="panel" id="gateways-panel">
    <h2 class="split">Gateways <input type="search" id="search" placeholder="Search gateway id…" autocomplete="off"></h2>
    <table id="gateway-table"><thead><tr><th>Gateway</th><th>Fleet</th><th>Last seen</th><th>Firmware</th><th class="num">Sessions</th><th class="num">Completed</th><th>Phase</th><th class="num">Adherence</th><th class="num">Backlog</th><th class="num">Complete</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
"use strict";
const state = { fleet: null, gateway: null, search: "", role: null };
const $ = (id) => document.getElementById(id);
const pct = (x) => x == null ? "–" : (x * 100).toFixed(1) + "%";
const num = (x) => x == null ? "–" : Number(x).toLocaleString("en-US");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
const ago = (iso) => { if (!iso) return "never"; const s = (Date.now() - Date.parse(iso)) / 1000; if (s < 90) return Math.max(0, Math.round(s)) + " s ago"; if (s < 5400) return Math.round(s / 60) + " min ago"; if (s < 172800) return Math.round(s / 3600) + " h ago"; return Math.round(s / 86400) + " d ago"; };
function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  state.fleet = params.get("fleet"); state.gateway = params.get("gw");
}
function query(extra) {
  const params = new URLSearchParams(extra || {});
  if (state.fleet) params.set("fleet", state.fleet);
  const text = params.toString(); return text ? "?" + text : "";
}
async function get(path) {
  const response = await fetch(path, { cache: "no-store" });
  // The sign-in ended (signed out elsewhere, expired, password changed): back to the form.
  if (response.status === 401) { location.assign("/login"); throw new Error("signed out"); }
  if (!response.ok) throw new Error(path + " answered " + response.status);
  return response.json();
}
function bars(element, entries, format) {
  const max = Math.max(1, ...entries.map((e) => e[1]));
  element.innerHTML = entries.length === 0 ? '<span class="empty">none yet</span>' : entries.map(([name, value]) =>
    `<div data-key="${esc(name)}"><span class="name">${esc(name)}</span><span class="bar" data-width="${Math.max(2, 140 * value / max)}"></span><span class="count">${format ? format(value) : num(value)}</span></div>`).join("");
  // Widths through the style object: the page's Content-Security-Policy allows no style attributes.
  element.querySelectorAll(".bar").forEach((bar) => { bar.style.width = bar.dataset.width + "px"; });
}
function chart(days) {
  const w = 640, h = 150, pad = 22, bw = (w - pad) / Math.max(1, days.length);
  const max = Math.max(1, ...days.map((d) => d.sessions.started));
  let svg = `<svg viewBox="0 0 ${w} ${h + 18}" width="100%" role="img" aria-label="sessions per day">`;
  days.forEach((d, i) => {
    const completed = d.sessions.completed, aborted = d.sessions.aborted;
    const hc = (h - 10) * completed / max, ha = (h - 10) * aborted / max, x = pad + i * bw;
    svg += `<rect x="${x + 1}" y="${h - hc}" width="${bw - 2}" height="${hc}" fill="#3fb950"><title>${d.day}: ${completed} completed</title></rect>`;
    svg += `<rect x="${x + 1}" y="${h - hc - ha}" width="${bw - 2}" height="${ha}" fill="#f85149"><title>${d.day}: ${aborted} aborted</title></rect>`;
    if (i % 5 === 0) svg += `<text x="${x}" y="${h + 14}">${d.day.slice(5)}</text>`;
  });
  svg += `<text x="0" y="10">${max}</text></svg>`;
  $("chart-daily").innerHTML = svg;
}
function renderSummary(s) {
  $("fleet-name").textContent = s.fleet ? "fleet " + s.fleet : "all fleets";
  $("kpi-online").textContent = num(s.online);
  $("kpi-silent").textContent = num(s.silent);
  $("kpi-silent-note").hidden = !(s.silent > 0);
  $("kpi-gateways").textContent = num(s.gateways);
  $("kpi-active").textContent = num(s.activeToday);
  $("kpi-sessions").textContent = num(s.sessions.started);
  $("kpi-completed").textContent = num(s.sessions.completed);
  $("kpi-aborted").textContent = num(s.sessions.aborted);
  $("kpi-completion").textContent = pct(s.sessions.completionRate);
  $("kpi-adherence").textContent = pct(s.adherenceRatio);
  $("kpi-backlog").textContent = num(s.backlog.messages);
  $("kpi-backlog-gateways").textContent = num(s.backlog.gatewaysWithBacklog);
  $("kpi-completeness").textContent = pct(s.completeness.ratio);
  $("kpi-trips").textContent = num(s.sessions.safetyTrips);
  bars($("level-mix"), ["1", "2", "3"].map((l) => ["level " + l, s.sessions.levelMinutes[l] || 0]), (m) => num(Math.round(m)));
  bars($("abort-reasons"), Object.entries(s.abortReasons).sort((a, b) => b[1] - a[1]));
  bars($("firmware"), Object.entries(s.firmware).sort((a, b) => b[1] - a[1]));
  const a = s.adherence;
  bars($("adherence-detail"), [["loading days", a.loadingAdherentDays], ["of", a.loadingDays], ["maint. weeks", a.maintenanceAdherentWeeks], ["of", a.maintenanceWeeks]]);
}
// A gateway whose input was refused in the last 10 minutes (bad input, a per-gateway limit).
function refusedMark(g) {
  const r = g.refusals;
  if (!r || !r.refusing) return "";
  return `<span class="refused" title="${esc(num(r.total) + " refused; last: " + r.lastReason + ": " + r.lastDetail)}">input refused</span>`;
}
function renderGateways(list) {
  const rows = list.map((g) => `<tr class="gw" data-gw="${esc(g.gateway)}" data-fleet="${esc(g.fleet)}">
    <td><span class="dot ${g.online ? "on" : ""}"></span>${esc(g.gateway)}${refusedMark(g)}</td><td>${esc(g.fleet)}</td><td>${ago(g.lastSeen)}</td>
    <td>${esc(g.firmware || "–")}</td><td class="num">${num(g.sessions.started)}</td><td class="num">${num(g.sessions.completed)}</td>
    <td>${esc(g.phase || "–")}</td><td class="num">${pct(g.adherenceRatio)}</td><td class="num">${num(g.backlog.messages)}</td>
    <td class="num">${pct(g.completeness.ratio)}</td></tr>`).join("");
  $("gateway-table").tBodies[0].innerHTML = rows || '<tr><td colspan="10" class="empty">no gateway matches</td></tr>';
}
async function renderDrill() {
  if (!state.gateway || state.role !== "operator") { $("drill").classList.remove("open"); return; }
  const d = await get("/api/v1/gateways/" + encodeURIComponent(state.gateway) + query());
  const g = d.gateway;
  $("drill").classList.add("open");
  $("drill-id").textContent = g.gateway;
  const kpi = (label, value, id) => `<div class="kpi"><div class="label">${label}</div><div class="value" id="${id}">${value}</div></div>`;
  $("drill-kpis").innerHTML = kpi("Status", g.online ? "online" : "offline", "drill-online") + kpi("Sessions", num(g.sessions.started), "drill-started")
    + kpi("Completed", num(g.sessions.completed), "drill-completed") + kpi("Adherence", pct(g.adherenceRatio), "drill-adherence")
    + kpi("Firmware", esc(g.firmware || "–"), "drill-firmware") + kpi("Max level", num(g.maxLevel), "drill-max-level")
    + kpi("Backlog", num(g.backlog.messages), "drill-backlog") + kpi("Battery", g.batteryPct == null ? "–" : Math.round(g.batteryPct) + "%", "drill-battery")
    + (g.refusals ? kpi("Refused" + (g.refusals.refusing ? " (now)" : ""), num(g.refusals.total) + `<div class="sub">${esc(g.refusals.lastReason)}</div>`, "drill-refused") : "");
  $("drill-sessions").tBodies[0].innerHTML = d.recentSessions.map((s) => `<tr data-session="${esc(s.sessionId)}"><td>${esc(s.sessionId)}</td><td>${s.day}</td>
    <td>${esc(s.outcome)}</td><td>${esc(s.reason || "")}</td><td class="num">${num(s.level)}</td><td class="num">${s.stimulatingS == null ? "–" : Math.round(s.stimulatingS) + " s"}</td>
    <td class="num">${num(s.pauses)}</td><td class="num">${num(s.safetyTrips)}</td><td>${esc(s.regimenPhase || "")} ${s.regimenDay ? "day " + s.regimenDay : ""}</td></tr>`).join("")
    || '<tr><td colspan="9" class="empty">no sessions yet</td></tr>';
}
// Who is signed in; per-gateway detail (personal data) is for the operator role only.
async function whoAmI() {
  const me = await get("/api/v1/me");
  state.role = me.role;
  $("user").textContent = "signed in as " + me.name + " (" + me.role + ")";
  $("gateways-panel").hidden = me.role !== "operator";
}
async function refresh() {
  try {
    if (!state.role) await whoAmI();
    const operator = state.role === "operator";
    const [summary, daily, gateways] = await Promise.all([
      get("/api/v1/fleet/summary" + query()), get("/api/v1/fleet/daily" + query()),
      operator ? get("/api/v1/gateways" + query(state.search ? { q: state.search } : {})) : Promise.resolve(null),
    ]);
    renderSummary(summary); chart(daily); if (gateways) renderGateways(gateways);
    await renderDrill();
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
    $("status").classList.remove("stale");
    document.body.dataset.loaded = "true";
  } catch (error) {
    $("status").textContent = "cannot reach the aggregator (" + error.message + "); retrying";
    $("status").classList.add("stale");
  }
}
$("search").addEventListener("input", (e) => { state.search = e.target.value.trim(); refresh(); });
$("gateway-table").addEventListener("click", (e) => {
  const row = e.target.closest("tr.gw"); if (!row) return;
  const params = new URLSearchParams(location.hash.slice(1)); params.set("gw", row.dataset.gw); location.hash = params.toString();
});
$("drill-close").addEventListener("click", () => { const params = new URLSearchParams(location.hash.slice(1)); params.delete("gw"); location.hash = params.toString(); });
window.addEventListener("hashchange", () => { readHash(); refresh(); });
readHash(); refresh(); setInterval(refresh, 5000);
</script>
</body>
</html>
"""#
}
