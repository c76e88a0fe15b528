"use strict";
// The console's pages, filled from the JSON API. One page shows at a time (by path);
// the live page follows /api/stream (server-sent events). Actions send the session's
// CSRF token in X-CSRF-Token.
(() => {
  const $ = (id) => document.getElementById(id);
  const t = (key) => PEDF.i18n.t(key);
  const fill = (key, values) => t(key).replace(/\{(\w+)\}/g, (_, k) => String(values[k]));
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const csrf = meta("csrf-token");
  const ranks = { viewer: 1, operator: 2, admin: 3 };
  const rank = ranks[meta("pedf-role")] || 0;
  const page = (location.pathname.replace(/^\//, "") || "live");
  const fmt = (v, digits = 1) => (v === null || v === undefined) ? "—" : Number(v).toFixed(digits);
  const kw = (v, signed) => v === null || v === undefined ? "—" :
    (signed && v > 0 ? "+" : "") + Number(v).toFixed(1) + " kW";
  const zone = meta("pedf-zone");  // times are shown in the site's time zone
  const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1000), zone);
  const time = (s) => s === null || s === undefined ? "—" :
    new Date(s * 1000).toLocaleString(PEDF.i18n.lang === "zh" ? "zh-CN" : "en-GB", { timeZone: zone });
  const text = (value) => document.createTextNode(value === null || value === undefined ? "—" : String(value));

  function cell(row, value, cls) {
    const td = row.insertCell();
    if (value instanceof Node) td.appendChild(value); else td.appendChild(text(value));
    if (cls) td.className = cls;
    return td;
  }

  function button(label, onClick, id) {
    const b = document.createElement("button");
    b.textContent = label;
    if (id) b.id = id;
    b.addEventListener("click", onClick);
    return b;
  }

  function notice(message, ok) {
    const el = $("notice");
    el.textContent = message;
    el.className = "notice" + (ok ? "" : " error");
  }

  async function getJSON(path) {
    const response = await fetch(path, { credentials: "same-origin" });
    if (response.status === 401) { location.href = "/login"; throw new Error("logged out"); }
    return response.json();
  }

  async function act(path, body) {
    const response = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    let answer = {};
    try { answer = await response.json(); } catch (e) { answer = { reason: await response.text() }; }
    const ok = response.ok && answer.status === "accepted";
    notice(`${t(ok ? "act.accepted" : "act.rejected")}: ${answer.reason || response.status}`, ok);
    return answer;
  }

  // -- live -------------------------------------------------------------------------------

  let chart = null;
  const series = [[], [], [], []];  // time, grid, pv, battery

  function drawChart(live) {
    series[0].push(live.ts);
    series[1].push(live.flows.grid_kw);
    series[2].push(live.flows.pv_kw);
    series[3].push(live.flows.battery_kw);
    if (series[0].length > 300) series.forEach((s) => s.shift());
    if (!window.uPlot) return;
    if (!chart) {
      chart = new uPlot({
        width: Math.min(1100, $("live-chart").clientWidth || 800), height: 220, tzDate,
        series: [{}, { label: t("flow.grid"), stroke: "#b3261e" },
          { label: t("flow.pv"), stroke: "#e0a800" }, { label: t("flow.battery"), stroke: "#1565c0" }],
        axes: [{}, { label: "kW" }],
      }, series, $("live-chart"));
    } else {
      chart.setData(series);
    }
  }

  function showLive(live) {
    const f = live.flows;
    $("flow-grid").textContent = kw(f.grid_kw, true);
    $("flow-grid-note").textContent = f.grid_kw === null ? "" : t(f.grid_kw >= 0 ? "flow.importing" : "flow.exporting");
    $("flow-pv").textContent = kw(f.pv_kw);
    $("flow-battery").textContent = kw(f.battery_kw, true);
    $("flow-soc").textContent = f.soc_pct === null ? "" : `SoC ${fmt(f.soc_pct)} %`;
    $("flow-heat-pump").textContent = kw(f.heat_pump_kw);
    $("flow-sg").textContent = f.sg_ready_state === null ? "" : "SG-Ready " + t("sg." + f.sg_ready_state);
    $("flow-dc-bus").textContent = kw(f.dc_bus_kw);
    $("flow-dc-v").textContent = f.dc_bus_v === null ? "" : `${fmt(f.dc_bus_v)} V`;
    $("flow-loads").textContent = kw(f.switched_kw);
    $("flow-loads-on").textContent = `${f.loads_on}/${f.loads_total} ${t("flow.on")}`;
    $("live-time").textContent = time(live.ts);
    const body = $("health").tBodies[0];
    body.replaceChildren();
    for (const d of live.devices) {
      const row = body.insertRow();
      row.dataset.device = d.device;
      cell(row, d.device); cell(row, d.model); cell(row, d.state, "state-" + d.state);
      cell(row, d.last_ok_age_s === null ? "—" : `${fmt(d.last_ok_age_s, 0)} s`);
      cell(row, `${d.polls_ok}/${d.polls_failed}`); cell(row, `${fmt(d.latency_ms, 0)} ms`);
      cell(row, d.error);
    }
    drawChart(live);
    showDcBus(live.dcbus);
  }

  // The 直柔 bus: voltage against its band, each class's fraction (in give-way order).
  function showDcBus(dc) {
    $("live-dcbus").classList.toggle("hidden", !dc);
    if (!dc) return;
    const band = dc.band_v || [null, null];
    $("dc-voltage").textContent = fill("dc.voltage", { v: fmt(dc.bus_voltage_v), lo: fmt(band[0]),
      hi: fmt(band[1]), state: dc.state, mode: dc.mode || "—" });
    $("dc-voltage").className = "state-" + (dc.state === "ok" ? "ok" : "error");
    const body = $("dc-classes").tBodies[0];
    body.replaceChildren();
    for (const [name, c] of Object.entries(dc.classes || {})) {
      const row = body.insertRow();
      row.dataset.dcClass = name;
      cell(row, name); cell(row, c.fraction_pct === null ? "—" : `${fmt(c.fraction_pct, 0)} %`);
      cell(row, kw(c.power_w === null ? null : c.power_w / 1000));
      cell(row, kw(c.demand_w === null ? null : c.demand_w / 1000));
    }
  }

  async function showLiveEvents() {
    const dr = await getJSON("/api/dr");
    const body = $("live-events").tBodies[0];
    body.replaceChildren();
    for (const e of [...dr.active, ...dr.upcoming]) {
      const row = body.insertRow();
      row.dataset.event = e.id;
      cell(row, e.id); cell(row, e.kind); cell(row, e.status); cell(row, e.value);
      cell(row, time(e.end_s));
      const stop = rank >= 2 ? button(t("act.stop"), async () => {
        await act("/api/cancel", { command_id: e.id });
        showLiveEvents();
      }, "stop-" + e.id) : "";
      cell(row, stop);
    }
  }

  async function live() {
    showLive(await getJSON("/api/live"));
    showLiveEvents();
    setInterval(showLiveEvents, 5000);
    const stream = new EventSource("/api/stream");
    stream.onmessage = (message) => showLive(JSON.parse(message.data));
    if (rank >= 2) await operatorForms();
  }

  async function operatorForms() {
    const devices = await getJSON("/api/devices");
    const select = $("sg-device");
    for (const d of devices.filter((d) => d.kind === "heat_pump")) {
      select.add(new Option(d.device, d.device));
    }
    $("shed-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      await act("/api/shed", { kw: Number($("shed-kw").value), duration_s: Number($("shed-min").value) * 60 });
      showLiveEvents();
    });
    $("sg-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      await act("/api/sg-ready", { device: select.value, state: Number($("sg-state").value),
        duration_s: Number($("sg-min").value) * 60 });
    });
  }

  // -- devices ----------------------------------------------------------------------------

  async function devices() {
    const list = $("device-list");
    const all = await getJSON("/api/devices");
    list.replaceChildren();
    for (const d of all) {
      const box = document.createElement("details");
      box.dataset.device = d.device;
      const summary = document.createElement("summary");
      summary.textContent = `${d.device} — ${d.model} (${d.kind})`;
      box.appendChild(summary);
      if (rank >= 2) {  // in the summary line: usable while the table is folded
        summary.appendChild(document.createTextNode(" "));
        summary.appendChild(button(t("dev.read"), async (event) => {
          event.preventDefault();
          const response = await fetch("/api/read", { method: "POST", credentials: "same-origin",
            headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
            body: JSON.stringify({ device: d.device }) });
          const answer = await response.json();
          const read = Object.fromEntries((answer.points || []).map((p) => [p.point, p]));
          for (const row of table.tBodies[0].rows) {
            const p = read[row.dataset.point];
            if (p) row.cells[1].textContent = p.error ? p.error : fmt(p.value, 3);
          }
          notice(answer.error || `${d.device}: ${(answer.points || []).length}`, !answer.error);
        }, "read-" + d.device));
      }
      const table = document.createElement("table");
      const head = table.createTHead().insertRow();
      for (const k of ["dev.point", "dev.value", "dev.unit", "dev.quality"]) {
        const th = document.createElement("th"); th.textContent = t(k); head.appendChild(th);
      }
      const body = table.createTBody();
      for (const p of d.points) {
        const row = body.insertRow();
        row.dataset.point = p.point;
        row.title = p.description;
        cell(row, p.point);
        cell(row, p.label ? `${p.value} (${p.label})` : (typeof p.value === "number" ? fmt(p.value, 3) : p.value));
        cell(row, p.unit); cell(row, p.quality, "state-" + (p.quality === "ok" ? "ok" : "stale"));
      }
      box.appendChild(table);
      list.appendChild(box);
    }
    if (rank >= 3) {
      $("scan-form").addEventListener("submit", async (event) => {
        event.preventDefault();
        const response = await fetch("/api/scan", { method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify({ host: $("scan-host").value, port: Number($("scan-port").value),
            units: $("scan-units").value }) });
        $("scan-result").textContent = JSON.stringify(await response.json(), null, 1);
      });
    }
  }

  // -- demand response --------------------------------------------------------------------

  function eventChart(target, e) {
    if (!window.uPlot || !e.intervals.length) return;
    const xs = e.intervals.map((i) => i.start_s);
    const pick = (k) => e.intervals.map((i) => i[k] === undefined ? null : i[k]);
    const data = [xs, pick("baseline_kw"), pick("limit_kw"), pick("actual_kw")];
    new uPlot({ width: 700, height: 180, tzDate,
      scales: { x: { time: true, range: () => [e.start_s, Math.max(e.end_s, xs[xs.length - 1])] } },
      series: [{}, { label: t("dr.baseline"), stroke: "#888", points: { size: 6 } },
        { label: t("dr.target"), stroke: "#e07b00", points: { size: 6 } },
        { label: t("dr.actual"), stroke: "#1565c0", points: { size: 6 } }],
      axes: [{}, { label: "kW" }] }, data, target);
  }

  async function dr() {
    const groups = await getJSON("/api/dr");
    const root = $("dr-groups");
    root.replaceChildren();
    for (const name of ["active", "upcoming", "past"]) {
      const h = document.createElement("h3"); h.textContent = t("dr." + name); root.appendChild(h);
      if (!groups[name].length) { const p = document.createElement("p"); p.className = "muted"; p.textContent = t("dr.none"); root.appendChild(p); }
      for (const e of groups[name]) {
        const box = document.createElement("details");
        box.open = name !== "past";
        box.dataset.event = e.id;
        const summary = document.createElement("summary");
        summary.textContent = `${e.id} — ${e.kind} ${e.value} (${e.status}) ${time(e.start_s)} → ${time(e.end_s)}`;
        box.appendChild(summary);
        const facts = document.createElement("p");
        facts.textContent = `${t("dr.baseline")}: ${kw(e.baseline_kw)} ${e.baseline_method || ""} ${e.baseline_quality || ""}`;
        box.appendChild(facts);
        const plot = document.createElement("div"); plot.className = "chart"; box.appendChild(plot);
        if (e.settlement) {
          const s = e.settlement;
          const p = document.createElement("p");
          p.className = "settlement";
          p.textContent = `${t("dr.settlement")}: ${fmt(s.delivered_kw)} / ${fmt(s.declared_kw)} kW ` +
            `(${fmt(100 * s.response_ratio, 0)} %), ${fmt(s.net_cny, 2)} CNY`;
          box.appendChild(p);
        }
        root.appendChild(box);
        eventChart(plot, e);
      }
    }
  }

  // -- energy and plan --------------------------------------------------------------------

  async function energy() {
    const data = await getJSON("/api/energy");
    const root = $("energy-body");
    root.replaceChildren();
    const zh = PEDF.i18n.lang === "zh";
    for (const span of ["today", "month"]) {
      const h = document.createElement("h3");
      h.textContent = `${t("energy." + span)} (${span === "today" ? data.date : data.month})`;
      root.appendChild(h);
      const table = document.createElement("table");
      table.id = "energy-" + span;
      const head = table.createTHead().insertRow();
      const names = [t("energy.series"), ...data.periods.map((p) => zh ? p.zh : p.name),
        t("energy.total") + " kWh", t("energy.cost"), t("energy.peak")];
      for (const n of names) { const th = document.createElement("th"); th.textContent = n; head.appendChild(th); }
      const body = table.createTBody();
      for (const s of data.series) {
        const v = s[span];
        const row = body.insertRow();
        cell(row, s.name);
        for (const p of data.periods) cell(row, fmt(v.energy_kwh[p.name] || 0, 2));
        cell(row, fmt(v.total_kwh, 2)); cell(row, fmt(v.total_cny, 2)); cell(row, fmt(v.peak_demand_kw, 1));
      }
      root.appendChild(table);
    }
    codesAndKpis(data, zh);
  }

  // The 分类分项 tree and the plan's figures for the day, month and year (completed windows).
  function codesAndKpis(data, zh) {
    const levels = ["day", "month", "year"];
    const table = (id, heads) => {
      const el = document.createElement("table");
      el.id = id;
      const head = el.createTHead().insertRow();
      for (const n of heads) { const th = document.createElement("th"); th.textContent = n; head.appendChild(th); }
      return el;
    };
    const codesRoot = $("energy-categories");
    const kpiRoot = $("energy-kpis");
    codesRoot.replaceChildren();
    kpiRoot.replaceChildren();
    if (!data.categories || !data.kpis) {
      const p = document.createElement("p");
      p.className = "muted"; p.textContent = t("energy.pending");
      codesRoot.appendChild(p);
      return;
    }
    const codes = new Map();
    for (const level of levels) {
      for (const c of data.categories[level]) {
        if (!codes.has(c.code)) codes.set(c.code, { c, values: {} });
        codes.get(c.code).values[level] = c.value;
      }
    }
    const ct = table("energy-codes", [t("energy.code"), t("energy.name"), t("energy.unit"),
      ...levels.map((l) => t("energy.level." + l))]);
    const cb = ct.createTBody();
    for (const [code, { c, values }] of [...codes.entries()].sort()) {
      const row = cb.insertRow();
      row.dataset.code = code;
      cell(row, code); cell(row, zh ? c.zh : c.en); cell(row, c.unit);
      for (const l of levels) cell(row, values[l] === undefined ? "—" : fmt(values[l], 2));
    }
    codesRoot.appendChild(ct);
    const kt = table("energy-kpi-table", [t("energy.kpi"), ...levels.map((l) => t("energy.level." + l))]);
    const kb = kt.createTBody();
    for (const name of Object.keys(data.kpis.day)) {
      const row = kb.insertRow();
      row.dataset.kpi = name;
      cell(row, t("kpi." + name));
      for (const l of levels) {
        const v = data.kpis[l][name];
        const ratio = ["electricity_share", "renewable_rate", "pv_self_consumption"].includes(name);
        cell(row, v === null ? "—" : ratio ? fmt(100 * v, 1) + " %" : fmt(v, 2));
      }
    }
    kpiRoot.appendChild(kt);
  }

  async function plan() {
    const data = await getJSON("/api/plan");
    const root = $("plan-days");
    root.replaceChildren();
    const zh = PEDF.i18n.lang === "zh";
    for (const day of data.days) {
      const h = document.createElement("h3");
      h.textContent = `${day.date} — ${day.day_type}, ${day.season}`;
      root.appendChild(h);
      const strip = document.createElement("div");
      strip.className = "strip";
      for (const s of day.segments) {
        const part = document.createElement("div");
        part.className = "tier-" + s.tier;
        part.style.flex = String(s.end_min - s.start_min);
        part.title = `${String(Math.floor(s.start_min / 60)).padStart(2, "0")}:${String(s.start_min % 60).padStart(2, "0")} ${zh ? s.zh : s.period} ${s.price_cny_per_kwh} CNY/kWh`;
        part.textContent = zh ? s.zh : s.period;
        strip.appendChild(part);
      }
      root.appendChild(strip);
    }
    showSchedule(data.schedule);
  }

  // The optimiser's plan: power flows and price, and the battery's energy, per step.
  function showSchedule(plan) {
    $("plan-chart").replaceChildren();
    $("plan-soc-chart").replaceChildren();
    if (!plan) { $("plan-summary").textContent = t("plan.none"); return; }
    const steps = plan.steps;
    $("plan-summary").textContent = fill("plan.summary", { start: time(steps[0].start_s),
      steps: steps.length, cny: fmt(plan.objective_cny, 0), peak: fmt(plan.peak_kw, 0),
      ms: fmt(plan.solve_ms, 0), status: plan.status });
    if (!window.uPlot) return;
    const xs = steps.map((s) => s.start_s);
    const pick = (k) => steps.map((s) => s[k]);
    const width = Math.min(1100, $("plan-chart").clientWidth || 800);
    new uPlot({ width, height: 240, tzDate,
      series: [{}, { label: t("plan.grid"), stroke: "#b3261e" },
        { label: t("plan.battery"), stroke: "#1565c0" }, { label: t("plan.pv"), stroke: "#e0a800" },
        { label: t("plan.load"), stroke: "#555" }, { label: t("plan.heat_pump"), stroke: "#2e7d32" },
        { label: t("plan.price"), stroke: "#8e24aa", scale: "cny" }],
      axes: [{}, { label: "kW" }, { side: 1, scale: "cny", label: "CNY/kWh" }] },
    [xs, pick("grid_kw"), pick("battery_kw"), pick("pv_kw"), pick("load_kw"),
      pick("heat_pump_kw"), pick("price_cny_per_kwh")], $("plan-chart"));
    new uPlot({ width, height: 160, tzDate,
      series: [{}, { label: t("plan.soc"), stroke: "#1565c0", fill: "rgba(21,101,192,0.1)" }],
      axes: [{}, { label: "kWh" }] }, [xs, pick("soc_kwh")], $("plan-soc-chart"));
  }

  // -- events -----------------------------------------------------------------------------

  async function events() {
    const data = await getJSON("/api/events");
    const body = $("event-log").tBodies[0];
    body.replaceChildren();
    for (const e of data.entries) {
      const row = body.insertRow();
      row.dataset.entry = e.id;
      cell(row, time(e.ts)); cell(row, t("ev." + e.kind)); cell(row, e.device); cell(row, e.text);
      if (e.open && rank >= 2) {
        cell(row, button(t("ev.ack_button"), async () => { await act(`/api/alarms/${e.id}/ack`); events(); }, "ack-" + e.id));
      } else {
        cell(row, e.acknowledged_by ? `${e.acknowledged_by} ${time(e.acknowledged_at)}` : "");
      }
    }
  }

  const pages = { live, devices, dr, energy, plan, events };

  document.addEventListener("DOMContentLoaded", () => {
    const name = pages[page] ? page : "live";
    $("page-" + name).classList.remove("hidden");
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("current", a.dataset.page === name));
    if (rank < 2) document.querySelectorAll(".operator-only").forEach((el) => el.remove());
    if (rank < 3) document.querySelectorAll(".admin-only").forEach((el) => el.remove());
    PEDF.i18n.bindSwitch(() => { if (name !== "live") pages[name](); });
    PEDF.i18n.apply();
    pages[name]().catch((error) => notice(String(error), false));
  });
})();
