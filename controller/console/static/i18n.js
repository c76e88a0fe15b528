"use strict";
// English and Chinese texts of the console. Elements carry data-i18n="key"; the choice
// is kept in localStorage ("pedf.lang"), defaulting to the browser's language.
window.PEDF = window.PEDF || {};
PEDF.i18n = (() => {
  const texts = {
    "login.title": ["PEDF gateway console", "PEDF 网关控制台"],
    "login.failed": ["Wrong user name or password.", "用户名或密码错误。"],
    "login.user": ["User name", "用户名"],
    "login.password": ["Password", "密码"],
    "login.submit": ["Log in", "登录"],
    "nav.live": ["Live", "实时"],
    "nav.devices": ["Devices", "设备"],
    "nav.dr": ["Demand response", "需求响应"],
    "nav.energy": ["Energy", "能耗"],
    "nav.plan": ["Plan", "计划"],
    "nav.events": ["Events", "事件"],
    "nav.logout": ["Log out", "退出"],
    "role.viewer": ["viewer", "查看者"],
    "role.operator": ["operator", "操作员"],
    "role.admin": ["admin", "管理员"],
    "live.title": ["Power flows", "功率流"],
    "live.updated": ["Updated", "更新于"],
    "live.active": ["Active and upcoming events", "进行中和即将开始的事件"],
    "live.devices": ["Devices", "设备"],
    "flow.grid": ["Grid", "电网"],
    "flow.pv": ["PV", "光伏"],
    "flow.battery": ["Battery", "储能"],
    "flow.heat_pump": ["Heat pump", "热泵"],
    "flow.dc_bus": ["DC bus", "直流母线"],
    "flow.loads": ["Loads", "负荷"],
    "flow.importing": ["importing", "购电"],
    "flow.exporting": ["exporting", "上网"],
    "flow.on": ["on", "投入"],
    "act.title": ["Operator actions", "操作"],
    "act.shed_kw": ["Shed (kW)", "削减 (kW)"],
    "act.duration_min": ["for (min)", "持续 (分钟)"],
    "act.shed_start": ["Start shed", "开始削减"],
    "act.stop": ["Stop", "停止"],
    "act.heat_pump": ["Heat pump", "热泵"],
    "act.sg_state": ["SG-Ready state", "SG-Ready 状态"],
    "act.sg_set": ["Set", "设置"],
    "act.accepted": ["Accepted", "已接受"],
    "act.rejected": ["Refused", "已拒绝"],
    "sg.1": ["1 blocked", "1 禁止运行"],
    "sg.2": ["2 normal", "2 正常"],
    "sg.3": ["3 boost recommended", "3 建议增强"],
    "sg.4": ["4 forced on", "4 强制开启"],
    "dev.device": ["Device", "设备"],
    "dev.model": ["Model", "型号"],
    "dev.state": ["State", "状态"],
    "dev.last_ok": ["Last OK", "上次成功"],
    "dev.polls": ["Polls ok/failed", "轮询 成功/失败"],
    "dev.latency": ["Latency", "延迟"],
    "dev.note": ["Note", "备注"],
    "dev.point": ["Point", "点位"],
    "dev.value": ["Value", "数值"],
    "dev.unit": ["Unit", "单位"],
    "dev.quality": ["Quality", "质量"],
    "dev.read": ["Read now", "立即读取"],
    "scan.title": ["Scan a Modbus TCP line", "扫描 Modbus TCP 线路"],
    "scan.units": ["Unit ids", "站号"],
    "scan.go": ["Scan", "扫描"],
    "dr.id": ["Event", "事件"],
    "dr.kind": ["Kind", "类型"],
    "dr.status": ["Status", "状态"],
    "dr.value": ["Value", "数值"],
    "dr.until": ["Until", "结束"],
    "dr.active": ["Active", "进行中"],
    "dr.upcoming": ["Upcoming", "即将开始"],
    "dr.past": ["Past", "已结束"],
    "dr.none": ["None.", "无。"],
    "dr.baseline": ["Baseline", "基线"],
    "dr.target": ["Target", "目标"],
    "dr.actual": ["Actual", "实际"],
    "dr.settlement": ["Settlement estimate", "结算估算"],
    "energy.today": ["Today", "今日"],
    "energy.month": ["This month", "本月"],
    "energy.series": ["Series", "回路"],
    "energy.total": ["Total", "合计"],
    "energy.cost": ["Cost (CNY)", "电费 (元)"],
    "energy.peak": ["Peak demand (kW)", "最大需量 (kW)"],
    "energy.categories": ["Energy by category (分类分项)", "分类分项能耗"],
    "energy.kpis": ["Carbon-peaking plan figures", "碳达峰方案指标"],
    "energy.code": ["Code", "编码"],
    "energy.name": ["Item", "分类分项"],
    "energy.unit": ["Unit", "单位"],
    "energy.kpi": ["Figure", "指标"],
    "energy.level.day": ["Today", "今日"],
    "energy.level.month": ["This month", "本月"],
    "energy.level.year": ["This year", "本年"],
    "kpi.total_kgce": ["Total energy (kgce)", "总能耗 (kgce)"],
    "kpi.electricity_share": ["Electricity's share", "建筑用电占比"],
    "kpi.renewable_rate": ["Renewable substitution rate", "可再生能源替代率"],
    "kpi.pv_self_consumption": ["PV self-consumption", "光伏自消纳率"],
    "kpi.pv_export_kwh": ["Exported to the grid (kWh)", "上网电量 (kWh)"],
    "kpi.eui_kwh_per_m2": ["Energy use intensity (kWh/m²)", "单位面积能耗 (kWh/m²)"],
    "kpi.carbon_kg": ["Carbon (kg CO₂)", "碳排放 (kg CO₂)"],
    "kpi.carbon_kg_per_m2": ["Carbon per m² (kg CO₂/m²)", "单位面积碳排放 (kg CO₂/m²)"],
    "energy.pending": ["Shown here once energy monitoring by category is enabled on this gateway.",
                       "本网关启用分类分项能耗监测后在此显示。"],
    "plan.title": ["Tariff calendar and plan", "电价时段与计划"],
    "plan.schedule": ["Plan", "计划"],
    "plan.none": ["No optimiser plan on this gateway.", "本网关没有优化计划。"],
    "plan.summary": ["Plan from {start}, {steps} steps: objective {cny} CNY, demand target {peak} kW, solved in {ms} ms ({status}).",
                     "计划自 {start} 起，共 {steps} 步：目标 {cny} 元，需量目标 {peak} kW，求解 {ms} ms（{status}）。"],
    "plan.grid": ["Grid (+ import)", "电网（+ 购电）"],
    "plan.battery": ["Battery (+ discharge)", "储能（+ 放电）"],
    "plan.pv": ["PV", "光伏"],
    "plan.load": ["Load", "负荷"],
    "plan.heat_pump": ["Heat pump", "热泵"],
    "plan.soc": ["Battery energy (kWh)", "储能电量 (kWh)"],
    "plan.price": ["Price (CNY/kWh)", "电价 (元/kWh)"],
    "dc.title": ["直柔 DC bus", "直柔直流母线"],
    "dc.class": ["Load class", "负荷类别"],
    "dc.fraction": ["Power fraction", "功率比例"],
    "dc.power": ["Power", "功率"],
    "dc.demand": ["Demand", "需求"],
    "dc.voltage": ["Bus {v} V, band {lo}–{hi} V ({state}), converter in {mode}",
                   "母线 {v} V，电压带 {lo}–{hi} V（{state}），变换器 {mode} 模式"],
    "ev.time": ["Time", "时间"],
    "ev.kind": ["Kind", "类型"],
    "ev.text": ["Text", "内容"],
    "ev.ack": ["Acknowledged", "确认"],
    "ev.ack_button": ["Acknowledge", "确认"],
    "ev.alarm": ["alarm", "告警"],
    "ev.cleared": ["cleared", "恢复"],
    "ev.action": ["action", "操作"],
    "ev.dr": ["demand response", "需求响应"],
  };
  const key = "pedf.lang";
  let lang = localStorage.getItem(key) ||
    ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");

  function t(name) {
    const pair = texts[name];
    return pair ? pair[lang === "zh" ? 1 : 0] : name;
  }

  function apply(root) {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    (root || document).querySelectorAll("[data-i18n]").forEach((el) => {
      el.textContent = t(el.dataset.i18n);
    });
    (root || document).querySelectorAll("[data-i18n-role]").forEach((el) => {
      el.textContent = t("role." + el.dataset.i18nRole);
    });
  }

  function bindSwitch(onChange) {
    document.querySelectorAll("[data-lang]").forEach((link) => {
      link.addEventListener("click", (event) => {
        event.preventDefault();
        lang = link.dataset.lang;
        localStorage.setItem(key, lang);
        apply();
        if (onChange) onChange();
      });
    });
  }

  return { t, apply, bindSwitch, get lang() { return lang; } };
})();
