// SmartGrid Sentinel dashboard. Plain JavaScript, no build step; uPlot (vendored) draws the charts.
// Everything comes from this hub as the logged-in user (the session cookie):
//   WS /ws/grid-status          grid status, active incidents, forecasts, maintenance, as they change
//   GET /readings, /readings/latest   chart history, then live values every LIVE_MS
//   GET /incidents[/{id}], POST /incidents/{id}/status (operators; the hub refuses anyone else)
//   GET /fleet, /models         edges: last contact, what each reports (backlog, model, software,
//                               devices down), the models offered
"use strict";
(() => {
  const LIVE_MS = 5000, FLEET_MS = 10000, MODELS_MS = 60000, MAX_BACKOFF_MS = 30000;
  const ACTIVE = ["OPEN", "ACKNOWLEDGED", "IN_PROGRESS"];
  const OPERATORS = new Set(["operator", "admin"]);
  const COLORS = ["#2f7ed8", "#e4572e", "#17a589", "#8e44ad", "#c99700", "#5d6d7e"];
  const S = {
    me: null, grid: {}, alerts: [], forecasts: [], maintenance: [], fleet: null, models: [], selected: null,
    windowS: 3600, charts: [], chartGen: 0, incidentId: null, incidents: [], backoff: 1000, live: false,
    drafts: {}, sending: new Set(),  // notes being typed, status changes on their way (by incident)
  };

  // -- small helpers ---------------------------------------------------------------------------
  const $ = (sel) => document.querySelector(sel);
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat(Infinity)) if (kid != null && kid !== false) e.append(kid);
    return e;
  }
  const debounce = (fn, ms) => { let t; return () => { clearTimeout(t); t = setTimeout(fn, ms); }; };
  const secs = (iso) => Date.parse(iso) / 1000;
  const label = (status, text) => el("span", { class: `status s-${String(status).toLowerCase()}`, text: text || status });
  function fmt(v) {
    if (v == null || !Number.isFinite(v)) return "—";
    const a = Math.abs(v);
    return v.toLocaleString(undefined, { maximumFractionDigits: a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 3 : 4 });
  }
  function time(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
    return Date.now() - d > 86400e3 ? d.toLocaleString([], { ...opts, month: "short", day: "numeric" })
      : d.toLocaleTimeString([], opts);
  }
  function span(s) {
    if (s == null || !Number.isFinite(s)) return "—";
    s = Math.max(0, s);
    return s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min`
      : s < 172800 ? `${(s / 3600).toFixed(1)} h` : `${(s / 86400).toFixed(1)} d`;
  }
  const ago = (iso) => (iso ? `${span(Date.now() / 1000 - secs(iso))} ago` : "never");

  async function api(path, opts) {
    const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...opts };
    if (init.body) init.headers["Content-Type"] = "application/json";
    const r = await fetch(path, init);
    if (r.status === 401) {  // the session ended: log in again, then come back here
      location.assign(`/login?next=${encodeURIComponent(location.pathname + location.hash)}`);
      throw new Error("not logged in");
    }
    const body = (r.headers.get("content-type") || "").includes("json") ? await r.json() : await r.text();
    if (!r.ok) {
      const e = new Error((body && body.detail) || `${r.status} ${r.statusText}`);
      e.status = r.status;
      throw e;
    }
    return body;
  }

  // -- the stream ------------------------------------------------------------------------------
  function setLink(state, text) { const l = $("#link"); l.dataset.state = state; l.textContent = text; }

  function connect() {
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/grid-status`);
    ws.onopen = () => { S.backoff = 1000; S.live = true; setLink("live", "live"); };
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.type !== "heartbeat") applyState(m);
      refreshLiveSoon();
    };
    ws.onclose = () => {
      S.live = false;
      setLink("reconnecting", "reconnecting…");
      pollState().catch(() => {});  // meanwhile the same state by plain requests
      setTimeout(connect, S.backoff);
      S.backoff = Math.min(S.backoff * 2, MAX_BACKOFF_MS);
    };
  }

  async function pollState() {
    const [g, f, m, ...inc] = await Promise.all([
      api("/grid-status"), api("/forecast/next-24h"), api("/maintenance"),
      ...ACTIVE.map((s) => api(`/incidents?status=${s}&limit=500`)),
    ]);
    const alerts = inc.flatMap((x) => x.incidents).sort((a, b) => secs(b.timestamp) - secs(a.timestamp));
    applyState({ grid_status: g.substations, alerts, forecasts: f.forecasts, maintenance_predictions: m.predictions });
  }

  function applyState(m) {
    S.grid = m.grid_status || {};
    S.alerts = m.alerts || [];
    S.forecasts = m.forecasts || [];
    S.maintenance = m.maintenance_predictions || [];
    renderSubstations();
    renderIncidents();
    renderCyber();
    renderForecasts();
    renderHealth();
    if (S.incidentId) reopenSoon();
  }

  // -- substations -----------------------------------------------------------------------------
  function substationNames() {
    const names = new Set(Object.keys(S.grid));
    for (const name of Object.keys((S.fleet && S.fleet.substations) || {})) if (name) names.add(name);
    return [...names].sort();
  }

  function renderSubstations() {
    const names = substationNames();
    const box = $("#substations");
    if (!names.length) return;
    if (!S.selected || !names.includes(S.selected)) {
      const asked = decodeURIComponent(location.hash.slice(1));
      select(names.includes(asked) ? asked : names[0]);
    }
    box.replaceChildren(...names.map((name) => {
      const g = S.grid[name] || { status: "UNKNOWN", stale: true, reason: "no grid status yet" };
      const mine = S.alerts.filter((i) => i.substation === name);
      const worst = mine.reduce((w, i) => (SEV[i.severity] > SEV[w] ? i.severity : w), "INFO");
      return el("button", {
        type: "button", class: `card s-${g.status.toLowerCase()}`, "data-substation": name,
        "data-status": g.status, "data-stale": g.stale ? "true" : "false", "aria-pressed": name === S.selected,
        onclick: () => select(name),
      },
      el("span", { class: "name", text: name }),
      label(g.status, g.stale ? `${g.status} · STALE` : g.status),
      el("span", { class: "meta", text: `last contact ${ago(g.last_seen)}` }),
      el("span", { class: "meta", text: mine.length ? `${mine.length} active incident${mine.length > 1 ? "s" : ""} (worst ${worst})` : "no active incident" }),
      g.reason ? el("span", { class: "meta reason", text: g.reason }) : null);
    }));
    const subs = $("#filters").substation;
    const current = subs.value;
    // rebuilt only when the substations change: a list someone has open is not closed under them
    if ([...subs.options].slice(1).map((o) => o.text).join("\n") !== names.join("\n")) {
      subs.replaceChildren(el("option", { value: "", text: "all" }), ...names.map((n) => el("option", { text: n })));
      subs.value = names.includes(current) ? current : "";
    }
    renderDetailHead();
  }
  const SEV = { INFO: 0, WARNING: 1, CRITICAL: 2, EMERGENCY: 3 };

  function select(name) {
    if (name === S.selected) return;
    S.selected = name;
    history.replaceState(null, "", `#${encodeURIComponent(name)}`);
    for (const c of document.querySelectorAll(".card")) c.setAttribute("aria-pressed", c.dataset.substation === name);
    renderDetailHead();
    loadCharts();
  }

  function renderDetailHead() {
    $("#detail-name").textContent = S.selected || "—";
    const g = S.grid[S.selected];
    const devices = Object.entries((g && g.devices) || {}).sort();
    $("#detail-reason").replaceChildren(
      g ? label(g.status, g.stale ? `${g.status} · STALE` : g.status) : "",
      g && g.reason ? ` ${g.reason}` : "",
      ...devices.map(([d, s]) => el("span", {}, "  ", el("span", { text: `${d} ` }), label(s))));
  }

  // -- charts and live values ------------------------------------------------------------------
  function category(metric) {
    if (/^voltage/.test(metric)) return "Voltage";
    if (/^frequency/.test(metric)) return "Frequency";
    if (/temperature/.test(metric)) return "Temperature";
    if (/power$|current|load/.test(metric) && !/factor/.test(metric)) return "Load";
    return null;
  }

  function timeTicks(u, splits) {  // 24-hour clock; the date under the first tick of each day
    let day = null;
    return splits.map((t) => {
      const d = new Date(t * 1000);
      const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
      if (d.toDateString() === day) return hm;
      day = d.toDateString();
      return `${hm}\n${d.toLocaleDateString([], { month: "short", day: "numeric" })}`;
    });
  }

  function chartOpts(width, names, extra) {
    const ink = getComputedStyle(document.body).color;
    const grid = { stroke: "rgba(127,127,127,.2)", width: 1 };
    return {
      width, height: 190, scales: { x: { time: true } }, legend: { live: true },
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true, points: { show: false } }))],
      axes: [{ stroke: ink, grid, ticks: grid, values: timeTicks }, { stroke: ink, grid, ticks: grid, size: 56 }],
      ...extra,
    };
  }

  async function loadCharts() {
    const gen = ++S.chartGen;
    const sub = S.selected;
    for (const c of S.charts) c.u.destroy();
    S.charts = [];
    const box = $("#charts");
    box.replaceChildren(el("p", { class: "empty", text: "Loading…" }));
    let latest;
    try {
      latest = (await api(`/readings/latest?substation=${encodeURIComponent(sub)}`)).readings;
    } catch (e) { box.replaceChildren(el("p", { class: "error", text: `Readings: ${e.message}` })); return; }
    if (gen !== S.chartGen) return;
    renderLatest(latest);
    const groups = new Map();  // one chart per kind, device and unit: "Voltage · FEEDER-F12 (kV)"
    for (const r of latest) {
      const kind = category(r.metric);
      if (!kind) continue;
      const key = `${kind} · ${r.device_id}${r.unit ? ` (${r.unit})` : ""}`;
      if (!groups.has(key)) groups.set(key, { key, device: r.device_id, metrics: [] });
      groups.get(key).metrics.push(r.metric);
    }
    const start = new Date(Date.now() - S.windowS * 1000).toISOString();
    const specs = [...groups.values()].sort((a, b) => a.key.localeCompare(b.key));
    const histories = await Promise.all(specs.map((g) => Promise.all(g.metrics.map((m) => api(
      `/readings?${new URLSearchParams({ device_id: g.device, metric: m, substation: sub, start, bucket: "auto" })}`,
    ).catch(() => null)))));
    if (gen !== S.chartGen) return;
    box.replaceChildren();
    if (!specs.length) box.append(el("p", { class: "empty", text: "No voltage, frequency, load or temperature readings from this substation yet." }));
    specs.forEach((g, k) => {
      const byTs = new Map();
      histories[k].forEach((h, i) => {
        for (const p of (h && h.points) || []) {
          const t = secs(p.ts), v = p.avg ?? p.value;
          if (!byTs.has(t)) byTs.set(t, new Array(g.metrics.length).fill(null));
          byTs.get(t)[i] = v ?? null;
        }
      });
      const xs = [...byTs.keys()].sort((a, b) => a - b);
      const data = [xs, ...g.metrics.map((_, i) => xs.map((t) => byTs.get(t)[i]))];
      const holder = el("div", { class: "plot" });
      const fig = el("figure", { class: "chart", "data-chart": g.key }, el("h3", { text: g.key }), holder);
      box.append(fig);
      const u = new uPlot(chartOpts(Math.max(260, holder.clientWidth), g.metrics), data, holder);
      fig.dataset.points = xs.length;
      S.charts.push({ ...g, u, fig });
    });
    fitCharts();
  }

  function renderLatest(readings) {
    $("#latest tbody").replaceChildren(...readings.map((r) => el("tr", { "data-point": `${r.device_id}/${r.metric}` },
      el("td", { text: r.device_id }), el("td", { text: r.metric }),
      el("td", { class: "num value", text: fmt(r.value) }), el("td", { text: r.unit }),
      el("td", { class: "ts", text: time(r.ts), title: r.ts }),
      el("td", { class: r.flags.length ? "flagged" : "", text: r.flags.length ? r.flags.join(", ") : `${Math.round(r.quality * 100)} %` }))));
  }

  async function refreshLive() {
    if (!S.selected) return;
    const gen = S.chartGen;
    const latest = (await api(`/readings/latest?substation=${encodeURIComponent(S.selected)}`)).readings;
    if (gen !== S.chartGen) return;
    renderLatest(latest);
    const now = Date.now() / 1000;
    for (const c of S.charts) {  // each chart gets the readings newer than its last point
      const xs = c.u.data[0];
      const last = xs.length ? xs[xs.length - 1] : -Infinity;
      const rows = new Map();
      for (const r of latest) {
        const i = c.metrics.indexOf(r.metric);
        const t = secs(r.ts);
        if (r.device_id !== c.device || i < 0 || r.value == null || t <= last) continue;
        if (!rows.has(t)) rows.set(t, new Array(c.metrics.length).fill(null));
        rows.get(t)[i] = r.value;
      }
      if (!rows.size) continue;
      const data = c.u.data.map((a) => Array.from(a));
      for (const t of [...rows.keys()].sort((a, b) => a - b)) {
        data[0].push(t);
        rows.get(t).forEach((v, i) => data[i + 1].push(v));
      }
      let cut = 0;
      while (cut < data[0].length && data[0][cut] < now - S.windowS) cut++;
      c.u.setData(cut ? data.map((a) => a.slice(cut)) : data);
      c.fig.dataset.points = c.u.data[0].length;
    }
  }
  const refreshLiveSoon = debounce(() => refreshLive().catch(() => {}), 300);

  function fitCharts() {
    for (const c of [...S.charts, ...S.forecastCharts || []]) {
      const w = Math.max(260, c.fig.clientWidth);
      if (Math.abs(w - c.u.width) > 4) c.u.setSize({ width: w, height: 190 });
    }
  }

  // -- incidents -------------------------------------------------------------------------------
  async function renderIncidents() {
    const f = $("#filters");
    let list;
    if (f.status.value === "active") {
      list = S.alerts.filter((i) => !f.severity.value || i.severity === f.severity.value);
    } else {
      const q = new URLSearchParams({ limit: "500" });
      if (f.status.value) q.set("status", f.status.value);
      if (f.severity.value) q.set("severity", f.severity.value);
      try { list = (await api(`/incidents?${q}`)).incidents; } catch (e) { return; }
    }
    list = list.filter((i) => (!f.substation.value || i.substation === f.substation.value) && (!f.agent.value || i.agent === f.agent.value));
    S.incidents = list;
    const body = $("#incidents tbody");
    if (!list.length) return body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty", text: "No incident matches." })));
    body.replaceChildren(...list.map((i) => el("tr", {
      "data-id": i.id, "data-status": i.status, "aria-selected": i.id === S.incidentId, tabindex: 0,
      onclick: () => openIncident(i.id), onkeydown: (e) => { if (e.key === "Enter") openIncident(i.id); },
    },
    el("td", { text: time(i.last_seen || i.timestamp) }), el("td", {}, label(i.severity)),
    el("td", { class: "incident-status", text: i.status }), el("td", { text: i.type }),
    el("td", { text: i.substation }), el("td", { text: i.device_id }), el("td", { text: i.description }))));
  }
  const renderIncidentsSoon = debounce(renderIncidents, 200);

  async function openIncident(id) {
    S.incidentId = id;
    for (const tr of document.querySelectorAll("#incidents tbody tr")) tr.setAttribute("aria-selected", tr.dataset.id === id);
    let inc;
    try { inc = await api(`/incidents/${encodeURIComponent(id)}`); } catch (e) {
      $("#incident").replaceChildren(el("p", { class: "error", text: `${id}: ${e.message}` }));
      $("#incident").hidden = false;
      return;
    }
    if (S.incidentId !== id) return;
    const facts = Object.entries(inc.facts || {});
    const rows = [["Status", inc.status], ["Incident", inc.id], ["Agent", inc.agent],
      ["First seen", time(inc.first_seen || inc.timestamp)], ["Last seen", time(inc.last_seen)],
      ["Occurrences", inc.occurrences], ["Metric", inc.metric ? `${inc.metric} = ${fmt(inc.value)}` : null],
      ["Confidence", inc.confidence != null ? `${Math.round(inc.confidence * 100)} %` : null]];
    const box = $("#incident");
    // the note being typed in, read and given back in the same step as the panel is replaced: two
    // redraws in a row cannot lose it between them
    const typing = document.activeElement && document.activeElement.name === "note" && box.contains(document.activeElement)
      ? [document.activeElement.selectionStart, document.activeElement.selectionEnd] : null;
    box.dataset.id = inc.id;
    box.dataset.status = inc.status;
    box.replaceChildren(...[
      el("h3", {}, label(inc.severity), ` ${inc.type} · ${inc.device_id}`, inc.substation ? ` (${inc.substation})` : ""),
      el("p", { text: inc.description }),
      el("dl", {}, rows.filter(([, v]) => v != null && v !== "").map(([k, v]) => [el("dt", { text: k }), el("dd", { class: k === "Status" ? "incident-status" : null, text: String(v) })])),
      inc.recommendation ? el("p", {}, el("strong", { text: "Recommendation: " }), inc.recommendation) : null,
      facts.length ? el("details", { open: true }, el("summary", { text: "Facts" }),
        el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: typeof v === "object" ? JSON.stringify(v) : String(v) })]))) : null,
      inc.narrative ? el("div", {}, el("strong", { text: "Narrative" }), el("p", { class: "narrative", text: inc.narrative })) : null,
      actions(inc),
      inc.history && inc.history.length ? el("details", { open: true }, el("summary", { text: "History" }),
        el("ol", { class: "history" }, inc.history.map((h) => el("li", { text: `${time(h.timestamp)} ${h.status} by ${h.actor}${h.note ? `: ${h.note}` : ""}` })))) : null,
    ].filter(Boolean));
    const note = typing && box.querySelector('input[name="note"]');
    if (note) { note.focus(); note.setSelectionRange(...typing); }
    box.hidden = false;
  }
  const reopenSoon = debounce(() => { if (S.incidentId) openIncident(S.incidentId); }, 400);

  function actions(inc) {
    if (inc.status === "RESOLVED") return null;
    if (!S.me || !OPERATORS.has(S.me.role)) {  // the hub refuses a viewer anyway; no button to press
      return el("p", { class: "note", text: `Your role (${S.me ? S.me.role : "unknown"}) reads incidents; operators acknowledge and resolve them.` });
    }
    // the stream re-renders this panel as incidents change: what the operator is typing, where the
    // caret is, and a request on its way survive that
    // (the caret: openIncident moves it to the new input as it replaces the panel)
    const note = el("input", { type: "text", name: "note", placeholder: "Note (optional)", maxlength: 4096, "aria-label": "Note",
      oninput: () => { S.drafts[inc.id] = note.value; } });
    note.value = S.drafts[inc.id] || "";
    const error = el("p", { class: "error", role: "alert", hidden: true });
    const steps = [["ACKNOWLEDGED", "Acknowledge", ["OPEN"]], ["IN_PROGRESS", "Start work", ["OPEN", "ACKNOWLEDGED"]],
      ["RESOLVED", "Resolve", ACTIVE]];
    const busy = S.sending.has(inc.id);
    const buttons = steps.filter(([, , from]) => from.includes(inc.status)).map(([status, text]) => el("button", {
      type: "button", "data-action": status, text, disabled: busy,
      onclick: async (ev) => {
        for (const b of ev.target.parentNode.querySelectorAll("button")) b.disabled = true;
        S.sending.add(inc.id);
        try {
          const after = await api(`/incidents/${encodeURIComponent(inc.id)}/status`, { method: "POST", body: JSON.stringify({ status, note: note.value }) });
          S.sending.delete(inc.id);
          delete S.drafts[inc.id];
          S.alerts = after.status === "RESOLVED" ? S.alerts.filter((i) => i.id !== after.id) : S.alerts.map((i) => (i.id === after.id ? after : i));
          renderIncidents();
          renderCyber();
          await openIncident(inc.id);
        } catch (e) {
          S.sending.delete(inc.id);
          // the panel may have been drawn again meanwhile: the message goes to the one on the page
          const shown = $("#incident").dataset.id === inc.id ? $("#incident").querySelector('p.error[role="alert"]') : null;
          for (const target of new Set([error, shown].filter(Boolean))) {
            target.textContent = e.status === 403 ? `Refused: ${e.message}` : e.message;
            target.hidden = false;
          }
          for (const b of $("#incident").querySelectorAll("button[data-action]")) b.disabled = false;
        }
      },
    }));
    return el("div", {}, el("div", { class: "actions" }, note, buttons), error);
  }

  function renderCyber() {
    const mine = S.alerts.filter((i) => i.agent === "cyber_sentinel");
    $("#cyber").replaceChildren(...(mine.length ? mine.map((i) => el("li", { class: `s-${i.severity.toLowerCase()}`, "data-id": i.id },
      label(i.severity), ` ${i.type} · ${i.substation} ${i.device_id} · ${time(i.last_seen || i.timestamp)}`,
      el("div", { text: i.description }),
      el("button", { type: "button", class: "quiet", text: "Open", onclick: () => openIncident(i.id) })))
      : [el("li", { class: "empty", text: "None active." })]));
  }

  // -- forecasts, transformer health -----------------------------------------------------------
  function renderForecasts() {
    for (const c of S.forecastCharts || []) c.u.destroy();
    S.forecastCharts = [];
    const box = $("#forecasts");
    if (!S.forecasts.length) return box.replaceChildren(el("p", { class: "empty", text: "No forecast yet: the demand forecaster needs a few days of load history." }));
    box.replaceChildren();
    for (const f of S.forecasts) {
      const pts = f.points || [];  // [time, forecast, lower, upper]
      const data = [pts.map((p) => secs(p[0])), pts.map((p) => p[1]), pts.map((p) => p[2]), pts.map((p) => p[3]), pts.map(() => f.capacity)];
      const holder = el("div", { class: "plot" });
      const title = `${f.substation} · ${f.device_id}: peak ${fmt(f.peak_value)} ${f.unit} (${fmt(f.peak_lower)}–${fmt(f.peak_upper)}) at ${time(f.peak_time)}; capacity ${fmt(f.capacity)} ${f.unit}, margin ${fmt(f.margin_pct)} %, P(exceed) ${Math.round((f.exceed_probability || 0) * 100)} %`;
      const fig = el("figure", { class: "chart", "data-forecast": `${f.substation}/${f.device_id}` }, el("h3", {}, label(f.severity || "INFO", f.status), ` ${title}`), holder);
      box.append(fig);
      const opts = chartOpts(Math.max(260, holder.clientWidth), ["forecast", "10 %", "90 %", "capacity"], {
        bands: [{ series: [3, 2], fill: "rgba(47,126,216,.18)" }],
      });
      opts.series[2].stroke = opts.series[3].stroke = "rgba(47,126,216,.5)";
      opts.series[1].stroke = "#2f7ed8";
      Object.assign(opts.series[4], { stroke: "#c62828", dash: [6, 4], width: 2 });
      S.forecastCharts.push({ u: new uPlot(opts, data, holder), fig });
    }
  }

  function renderHealth() {
    const rows = [...S.maintenance].sort((a, b) => a.health - b.health);
    const body = $("#health tbody");
    if (!rows.length) return body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty", text: "No prediction yet." })));
    const status = (h) => (h < 40 ? "CRITICAL" : h < 70 ? "WARNING" : "OK");
    body.replaceChildren(...rows.map((p) => {
      const w = p.maintenance_window;
      return el("tr", { "data-device": p.device_id },
        el("td", { text: p.device_id }), el("td", { text: p.substation }),
        el("td", { class: "num" }, label(status(p.health), fmt(p.health))),
        el("td", { class: "num", text: `${Math.round((p.failure_probability["24h"] || 0) * 100)} %` }),
        el("td", { class: "num", text: `${Math.round((p.failure_probability["48h"] || 0) * 100)} %` }),
        el("td", { text: (p.recommended_action || "").replaceAll("_", " ") }),
        el("td", { text: w ? `${time(w.start)} – ${time(w.end)}` : "—" }));
    }));
  }

  // -- edges -----------------------------------------------------------------------------------
  async function refreshFleet() {
    S.fleet = await api("/fleet");
    renderEdges();
    renderSubstations();
  }

  async function refreshModels() {
    S.models = (await api("/models")).models.filter((m) => m.latest != null);
    renderEdges();
  }

  function renderEdges() {
    const fleet = S.fleet;
    if (!fleet) return;
    const newest = {};  // the newest reading the hub holds per substation (as of the last liveness check)
    for (const d of fleet.devices) newest[d.substation] = Math.max(newest[d.substation] || 0, secs(d.last_reading));
    const models = S.models.length ? S.models.map((m) => `${m.name} v${m.latest}`).join(", ") : "none published";
    const body = $("#edges tbody");
    if (!fleet.edges.length) return body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty", text: "No edge registered." })));
    const reports = fleet.reports || {}, catchUp = fleet.catch_up || {};
    body.replaceChildren(...fleet.edges.map((e) => {
      const r = reports[e.edge_id];  // what the edge itself reported with a sync (newer edges only)
      const seen = e.last_sync ? Math.min(secs(e.last_sync), fleet.checked_at ? secs(fleet.checked_at) : Infinity) : null;
      const behind = seen && newest[e.substation] ? seen - newest[e.substation] : null;
      const interval = e.sync_interval_s || (fleet.offline_floor_s / 3);
      let backlog = behind == null || !e.online ? "—"  // an offline box's buffer is out of the hub's sight
        : behind <= Math.max(2 * interval, 5) ? "up to date" : `${span(behind)} behind`;
      if (r) backlog = !r.readings_pending ? "up to date"
        : `${fmt(r.readings_pending)} readings${r.sync_lag_s != null ? `, ${span(r.sync_lag_s)} behind` : ""}`
          + (r.dropped ? `; ${fmt(r.dropped)} dropped` : "");
      const down = r ? r.devices.filter((d) => !d.up) : [];
      const state = !e.registered ? ["UNKNOWN", "retired"] : !e.online ? ["CRITICAL", "offline"]
        : down.length ? ["WARNING", `online, ${down.length} device${down.length > 1 ? "s" : ""} down`] : ["OK", "online"];
      const model = r ? `${r.model || "detectors only"} · ${r.software}` + (r.config_version ? ` · config v${r.config_version}` : "")
        : `offered: ${models}`;
      return el("tr", { "data-edge": e.edge_id },
        el("td", { text: e.edge_id }), el("td", { text: e.substation || "—" }),
        el("td", { title: down.map((d) => `${d.device_id}: ${d.error}`).join("\n") }, label(state[0], state[1])),
        el("td", { text: e.last_sync ? `${time(e.last_sync)} (${ago(e.last_sync)})` : "never", title: e.last_sync || "" }),
        el("td", { class: "num", text: e.sync_interval_s ? `${fmt(e.sync_interval_s)} s` : "—" }),
        el("td", { class: "num", text: backlog, title: r ? `reported ${ago(r.received_at)}` : "" }),
        catchUpCell(catchUp[e.edge_id]),
        el("td", { class: "model", text: model }));
    }));
  }

  // After an outage the edge sends its newest readings first: the hub holds them as a live range past
  // its mark, and the backlog between the two is still to come (hub/fleet/catchup.py).
  function catchUpCell(c) {
    if (!c) return el("td", { class: "catchup", text: "—" });  // never synced
    if (c.state !== "catching_up") return el("td", { class: "catchup", text: "in step" });
    const oldest = c.oldest_missing ? `; oldest missing from ${time(c.oldest_missing)} or later` : "";
    return el("td", { class: "catchup", title: c.reported_at ? `as the edge reported ${ago(c.reported_at)}` : "" },
      label("WARNING", "catching up"),
      ` live #${fmt(c.live_lo)}–#${fmt(c.live_hi)} held; ${fmt(c.backlog)} readings of backlog to come${oldest}`);
  }

  // -- start -----------------------------------------------------------------------------------
  async function start() {
    S.me = await api("/auth/whoami");
    $("#who").textContent = `${S.me.name} (${S.me.role})`;
    document.body.dataset.role = S.me.role;
    $("#logout").addEventListener("click", async () => {
      await api("/auth/logout", { method: "POST" }).catch(() => {});
      location.assign("/login");
    });
    $("#filters").addEventListener("change", () => renderIncidentsSoon());
    $("#filters").addEventListener("submit", (e) => e.preventDefault());
    $("#window").addEventListener("change", (e) => { S.windowS = Number(e.target.value); loadCharts(); });
    new ResizeObserver(debounce(fitCharts, 150)).observe($("main"));
    connect();
    refreshFleet().catch(() => {});
    refreshModels().catch(() => {});
    setInterval(() => refreshLive().catch(() => {}), LIVE_MS);
    setInterval(() => refreshFleet().catch(() => {}), FLEET_MS);
    setInterval(() => refreshModels().catch(() => {}), MODELS_MS);
    setInterval(() => { if ($("#filters").status.value !== "active") renderIncidents(); }, 15000);
  }
  start().catch((e) => setLink("reconnecting", `error: ${e.message}`));
})();
