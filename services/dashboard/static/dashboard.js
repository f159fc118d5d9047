// The Switchboard reports dashboard. Every figure shown comes from the ReportService through
// this server's /api endpoints; this script only formats and draws them. Nothing here
// computes a figure, so the page cannot disagree with the API.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const BLENDED = "(blended)";
const NONE_LABEL = "(none)";

// The scorecard's columns, in order: the figure (a field of Figures), how to show it, the
// count that must be non-zero for the figure to mean anything, and its Metric for gaps.
const COLUMNS = [
  { field: "conversations", label: "Conversations", kind: "count" },
  { field: "customers", label: "Customers", kind: "count" },
  { field: "first_response_p50_seconds", label: "First response p50", kind: "duration",
    basis: "first_responses", metric: "METRIC_FIRST_RESPONSE_P50" },
  { field: "first_response_p90_seconds", label: "First response p90", kind: "duration",
    basis: "first_responses", metric: "METRIC_FIRST_RESPONSE_P90" },
  { field: "resolution_p50_seconds", label: "Resolution p50", kind: "duration",
    basis: "resolutions", metric: "METRIC_RESOLUTION_P50" },
  { field: "resolution_p90_seconds", label: "Resolution p90", kind: "duration",
    basis: "resolutions", metric: "METRIC_RESOLUTION_P90" },
  { field: "first_response_sla_attainment", label: "First-response SLA", kind: "rate",
    basis: "first_response_sla_decided", metric: "METRIC_FIRST_RESPONSE_SLA_ATTAINMENT" },
  { field: "resolution_sla_attainment", label: "Resolution SLA", kind: "rate",
    basis: "resolution_sla_decided", metric: "METRIC_RESOLUTION_SLA_ATTAINMENT" },
  { field: "csat_average", label: "CSAT", kind: "score", basis: "csat_count",
    metric: "METRIC_CSAT_AVERAGE" },
  { field: "bot_containment_rate", label: "Bot containment", kind: "rate",
    basis: "bot_conversations", metric: "METRIC_BOT_CONTAINMENT_RATE" },
  { field: "escalation_rate", label: "Escalation", kind: "rate", basis: "bot_conversations",
    metric: "METRIC_ESCALATION_RATE" },
  { field: "reopen_rate", label: "Reopened", kind: "rate", basis: "conversations",
    metric: "METRIC_REOPEN_RATE" },
  { field: "handling_seconds_per_conversation", label: "Handling / conversation",
    kind: "duration", basis: "conversations", metric: "METRIC_HANDLING_TIME" },
  { field: "support_cost_per_customer", label: "Cost / customer", kind: "money",
    basis: "customers", metric: "METRIC_SUPPORT_COST_PER_CUSTOMER" },
  { field: "retention_rate", label: "Retention", kind: "rate", basis: "retention_base",
    metric: "METRIC_RETENTION_RATE" },
];
const COLUMN_BY_METRIC = new Map(COLUMNS.filter((c) => c.metric).map((c) => [c.metric, c]));

// ---- formatting -------------------------------------------------------------------------
// The JSON is proto3 JSON: zero values are left out and int64 arrives as a string.

function numberOf(figures, field) {
  return Number((figures || {})[field] || 0);
}

function formatDuration(seconds) {
  if (seconds < 59.5) return `${Math.round(seconds)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function formatValue(kind, value) {
  switch (kind) {
    case "count": return String(value);
    case "duration": return formatDuration(value);
    case "rate": return `${(value * 100).toFixed(1)}%`;
    case "score": return value.toFixed(2);
    case "money": return value.toFixed(2);
    default: throw new Error(`unknown kind ${kind}`);
  }
}

// The text of a figure, or null when nothing was measured (a count basis of zero).
function formatFigure(column, figures) {
  if (column.basis && numberOf(figures, column.basis) === 0) return null;
  return formatValue(column.kind, numberOf(figures, column.field));
}

function formatGap(column, gap) {
  const relative = (Number(gap.relative_gap || 0) * 100).toFixed(1);
  const value = formatValue(column.kind, Number(gap.value || 0));
  const blended = formatValue(column.kind, Number(gap.blended || 0));
  return `${relative}% worse than blended (${value} vs ${blended})`;
}

function formatInstant(text, timeZone) {
  return new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium", timeStyle: "short", timeZone,
  }).format(new Date(text));
}

function formatDay(text, timeZone) {
  // A day end is the next midnight: the day shown is the one just before it.
  const lastMoment = new Date(new Date(text).getTime() - 1);
  return new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone })
    .format(lastMoment);
}

// ---- DOM helpers ------------------------------------------------------------------------

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  setAttributes(node, attributes);
  node.append(...children);
  return node;
}

function svgElement(tag, attributes = {}, children = []) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attributes);
  node.append(...children);
  return node;
}

function setAttributes(node, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
}

function svgTitle(text) {
  return svgElement("title", {}, [text]);
}

function showError(id, message) {
  const box = document.getElementById(id);
  box.textContent = message;
  box.hidden = !message;
}

// ---- the API ----------------------------------------------------------------------------

// The visitor must sign in (again): nobody is, or the report service refused their key.
class SignInNeeded extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// An API error as one line: its code, then the fields it names or else its message.
function describeError(status, body) {
  const error = body.error || {};
  const fields = (error.field_violations || [])
    .map((v) => `${v.field}: ${v.description}`).join("; ");
  return `${error.code || status}: ${fields || error.message}`;
}

async function fetchReport(path, parameters) {
  const response = await fetch(`api/${path}?${new URLSearchParams(parameters)}`);
  const body = await response.json();
  if (response.status === 401 || response.status === 403) {
    throw new SignInNeeded((body.error || {}).code, describeError(response.status, body));
  }
  if (!response.ok) {
    throw new Error(describeError(response.status, body));
  }
  return body;
}

// ---- the scorecard ----------------------------------------------------------------------

function scorecardRows(scorecard) {
  const rows = (scorecard.segments || []).map((segment) => ({
    segment: segment.segment_id,
    name: segment.display_name || segment.segment_id,
    figures: segment.figures || {},
    gaps: new Map((segment.gaps || []).map((gap) => [gap.metric, gap])),
  }));
  rows.push({ segment: BLENDED, name: "Blended", figures: scorecard.blended || {},
    gaps: new Map() });
  return rows;
}

function renderScorecard(scorecard) {
  const table = document.getElementById("scorecard");
  const caption = element("caption", {}, [
    `Gap margin ${formatValue("rate", Number(scorecard.gap_margin || 0))}, ` +
    `hourly cost ${formatValue("money", Number(scorecard.hourly_cost || 0))}, ` +
    `churn segment ${scorecard.churn_segment_id || NONE_LABEL}`,
  ]);
  const head = element("thead", {}, [element("tr", {}, [
    element("th", { scope: "col" }, ["Segment"]),
    ...COLUMNS.map((c) => element("th", { scope: "col", "data-metric": c.field }, [c.label])),
  ])]);
  const body = element("tbody", {}, scorecardRows(scorecard).map((row) => element(
    "tr",
    { "data-segment": row.segment, class: row.segment === BLENDED ? "blended" : undefined },
    [
      element("th", { scope: "row" }, [row.name]),
      ...COLUMNS.map((column) => scorecardCell(row, column)),
    ],
  )));
  table.replaceChildren(caption, head, body);
}

function scorecardCell(row, column) {
  const text = formatFigure(column, row.figures);
  const attributes = { "data-segment": row.segment, "data-metric": column.field };
  const gap = column.metric && row.gaps.get(column.metric);
  if (gap) {
    return element("td", { ...attributes, class: "gap", title: formatGap(column, gap) }, [text]);
  }
  if (text === null) {
    return element("td", { ...attributes, class: "no-data", title: "no data" }, ["—"]);
  }
  return element("td", attributes, [text]);
}

// ---- bar charts -------------------------------------------------------------------------

function renderBarChart(figureId, caption, rows, series, axis) {
  // Wide enough groups that a segment's name fits under its bars.
  const groupWidth = Math.max(series.length * 18 + 24, 104);
  const width = 60 + rows.length * groupWidth;
  const height = 220;
  const plot = { left: 44, right: width - 8, top: 10, bottom: height - 40 };
  const y = (value) => plot.bottom - (value / axis.max) * (plot.bottom - plot.top);
  const chart = svgElement("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-labelledby": `${figureId}-title`,
  }, [svgElement("title", { id: `${figureId}-title` }, [caption])]);

  const grid = svgElement("g", { class: "grid" });
  for (const tick of axis.ticks) {
    grid.append(
      svgElement("line", { x1: plot.left, x2: plot.right, y1: y(tick), y2: y(tick) }),
      svgElement("text", { x: plot.left - 6, y: y(tick) + 4, "text-anchor": "end" },
        [axis.format(tick)]),
    );
  }
  chart.append(grid);

  rows.forEach((row, rowIndex) => {
    const groupLeft = plot.left + rowIndex * groupWidth + (groupWidth - series.length * 18) / 2;
    const group = svgElement("g", { "data-segment": row.segment });
    series.forEach((item, seriesIndex) => {
      const text = formatFigure(item.column, row.figures);
      if (text === null) return;
      const value = numberOf(row.figures, item.column.field);
      group.append(svgElement("rect", {
        class: `bar series-${seriesIndex}`,
        x: groupLeft + seriesIndex * 18, width: 14,
        y: y(value), height: Math.max(0, plot.bottom - y(value)),
        "data-segment": row.segment, "data-metric": item.column.field,
      }, [svgTitle(`${row.name} — ${item.label}: ${text}`)]));
    });
    group.append(svgElement("text", {
      x: groupLeft + (series.length * 18) / 2, y: plot.bottom + 14, "text-anchor": "middle",
    }, [row.name]));
    chart.append(group);
  });

  const legend = element("ul", { class: "legend" }, series.map((item, index) => element(
    "li", {}, [element("span", { class: `swatch series-${index}` }), item.label],
  )));
  document.getElementById(figureId).replaceChildren(
    element("figcaption", {}, [caption]), chart, legend,
  );
}

function renderServiceCharts(scorecard) {
  const rows = scorecardRows(scorecard);
  const column = (field) => COLUMNS.find((c) => c.field === field);
  const percent = { max: 1, ticks: [0, 0.25, 0.5, 0.75, 1], format: (v) => `${v * 100}%` };
  renderBarChart("attainment-chart", "SLA attainment", rows, [
    { column: column("first_response_sla_attainment"), label: "First response" },
    { column: column("resolution_sla_attainment"), label: "Resolution" },
  ], percent);
  const stars = { max: 5, ticks: [0, 1, 2, 3, 4, 5], format: String };
  renderBarChart("csat-chart", "CSAT (1-5)", rows, [
    { column: column("csat_average"), label: "CSAT" },
  ], stars);
}

// ---- the migration matrix ---------------------------------------------------------------

function renderMigration(matrix, names) {
  const ids = matrix.segment_ids || [];
  const label = (id) => (id ? names.get(id) || id : NONE_LABEL);
  const counts = new Map();
  for (const cell of matrix.cells || []) {
    counts.set(`${cell.from_segment_id || ""}\u0000${cell.to_segment_id || ""}`,
      Number(cell.customer_count || 0));
  }
  const head = element("thead", {}, [element("tr", {}, [
    element("th", { scope: "col" }, ["From \\ to"]),
    ...ids.map((id) => element("th", { scope: "col", "data-to": id }, [label(id)])),
  ])]);
  const body = element("tbody", {}, ids.map((from) => element("tr", { "data-from": from }, [
    element("th", { scope: "row" }, [label(from)]),
    ...ids.map((to) => {
      const count = counts.get(`${from}\u0000${to}`) || 0;
      const classes = [from === to ? "stayed" : "", count === 0 ? "zero" : ""].join(" ").trim();
      return element("td", {
        "data-from": from, "data-to": to, class: classes || undefined,
        title: `${label(from)} → ${label(to)}: ${count}`,
      }, [String(count)]);
    }),
  ])));
  document.getElementById("migration").replaceChildren(
    element("caption", {}, [
      "Customers by segment at the start of the range (rows) and at its end (columns); " +
      "the diagonal stayed put.",
    ]),
    head, body,
  );
}

// ---- segment sizes over time ------------------------------------------------------------

function renderSizes(health, timeZone) {
  const dayEnds = health.day_ends || [];
  const sizes = health.sizes || [];
  const width = Math.max(360, 60 + dayEnds.length * 14);
  const height = 240;
  const plot = { left: 44, right: width - 10, top: 10, bottom: height - 30 };
  const largest = Math.max(1, ...sizes.flatMap((s) => (s.members || []).map(Number)));
  const x = (index) => plot.left + (dayEnds.length < 2 ? 0
    : (index / (dayEnds.length - 1)) * (plot.right - plot.left));
  const y = (value) => plot.bottom - (value / largest) * (plot.bottom - plot.top);

  const chart = svgElement("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-labelledby": "sizes-chart-title",
  }, [svgElement("title", { id: "sizes-chart-title" }, ["Segment sizes at the end of each day"])]);
  const grid = svgElement("g", { class: "grid" });
  for (const tick of [0, Math.round(largest / 2), largest]) {
    grid.append(
      svgElement("line", { x1: plot.left, x2: plot.right, y1: y(tick), y2: y(tick) }),
      svgElement("text", { x: plot.left - 6, y: y(tick) + 4, "text-anchor": "end" },
        [String(tick)]),
    );
  }
  const labelEvery = Math.max(1, Math.ceil(dayEnds.length / 8));
  dayEnds.forEach((dayEnd, index) => {
    // Counted back from the last day, so that the newest day is always labelled.
    if ((dayEnds.length - 1 - index) % labelEvery !== 0) return;
    grid.append(svgElement("text", { x: x(index), y: plot.bottom + 16, "text-anchor": "middle" },
      [formatDay(dayEnd, timeZone)]));
  });
  chart.append(grid);

  sizes.forEach((segment, seriesIndex) => {
    const name = segment.display_name || segment.segment_id;
    const members = (segment.members || []).map(Number);
    const seriesClass = `series-${seriesIndex % 6}`;
    const line = svgElement("g", { "data-segment": segment.segment_id, class: seriesClass }, [
      svgTitle(name),
      svgElement("polyline", {
        points: members.map((count, index) => `${x(index)},${y(count)}`).join(" "),
      }),
    ]);
    members.forEach((count, index) => {
      line.append(svgElement("circle", {
        cx: x(index), cy: y(count), r: 3, "data-segment": segment.segment_id,
      }, [
        svgTitle(`${name}, ${formatDay(dayEnds[index], timeZone)}: ${count} members`),
      ]));
    });
    chart.append(line);
  });

  const legend = element("ul", { class: "legend" }, sizes.map((segment, index) => element(
    "li", {}, [element("span", { class: `swatch series-${index % 6}` }),
      segment.display_name || segment.segment_id],
  )));
  document.getElementById("sizes-chart").replaceChildren(
    element("figcaption", {}, ["Members at the end of each day"]), chart, legend,
  );
  renderHealthNotes(health, timeZone);
}

function renderHealthNotes(health, timeZone) {
  const notes = [];
  const warnings = health.lint_warnings || [];
  if (warnings.length) {
    notes.push(element("h3", {}, ["Segment warnings"]),
      element("ul", { id: "lint-warnings" }, warnings.map((w) => element("li", {}, [w.message]))));
  }
  const stale = health.stale_fields || [];
  if (stale.length) {
    notes.push(element("h3", {}, ["Stale synced fields"]), element("table", { id: "stale" }, [
      element("thead", {}, [element("tr", {}, ["Source", "Field", "Stale customers",
        "Customers", "Oldest refresh"].map((h) => element("th", { scope: "col" }, [h])))]),
      element("tbody", {}, stale.map((s) => element("tr", {}, [
        element("th", { scope: "row" }, [s.source]),
        element("td", {}, [s.field]),
        element("td", {}, [String(Number(s.stale_customers || 0))]),
        element("td", {}, [String(Number(s.customers || 0))]),
        element("td", {}, [s.oldest_refresh_time
          ? formatInstant(s.oldest_refresh_time, timeZone) : "—"]),
      ]))),
    ]));
  }
  document.getElementById("health-notes").replaceChildren(...notes);
}

// ---- signing in --------------------------------------------------------------------------

function showSignedIn(signedIn) {
  document.getElementById("sign-in").hidden = signedIn;
  document.getElementById("controls").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  document.querySelector("main").hidden = !signedIn;
}

// Shows the sign-in form. Only a refusal of a key is explained; a visitor who simply has not
// signed in yet gets the form without an error.
function askToSignIn(refusals) {
  const refusal = refusals.find((error) => error.code !== "SIGN_IN_REQUIRED");
  showSignedIn(false);
  showError("sign-in-error", refusal ? refusal.message : "");
  document.body.dataset.state = "signed-out";
  document.getElementById("api-key").focus();
}

async function signIn(apiKey) {
  const response = await fetch("api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ api_key: apiKey }),
  });
  if (!response.ok) {
    throw new Error(describeError(response.status, await response.json()));
  }
}

// ---- the page ---------------------------------------------------------------------------

function chosenOptions() {
  const query = new URLSearchParams(window.location.search);
  return {
    family: query.get("family") || "tier",
    since: query.get("since") || "30d",
  };
}

async function load() {
  const { family, since } = chosenOptions();
  document.getElementById("family").value = family;
  document.getElementById("since").value = since;
  document.body.dataset.state = "loading";
  const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const names = new Map();
  let failed = false;

  const scorecard = fetchReport("scorecard", { family, since }).then((report) => {
    for (const segment of report.segments || []) {
      names.set(segment.segment_id, segment.display_name || segment.segment_id);
    }
    const range = document.getElementById("range");
    range.dataset.start = report.start_time || "";
    range.dataset.end = report.end_time || "";
    range.textContent = `Conversations routed from ${formatInstant(report.start_time, timeZone)}` +
      ` to ${formatInstant(report.end_time, timeZone)}`;
    renderScorecard(report);
    renderServiceCharts(report);
    showError("scorecard-error", "");
  });
  const migration = fetchReport("migration", { family, since });
  const health = fetchReport("health", { family, since, time_zone: timeZone });

  const outcomes = await Promise.allSettled([scorecard, migration, health]);
  const refusals = outcomes
    .filter((outcome) => outcome.status === "rejected" && outcome.reason instanceof SignInNeeded)
    .map((outcome) => outcome.reason);
  if (refusals.length) {
    askToSignIn(refusals);
    return;
  }
  showSignedIn(true);
  const [scored, migrated, checked] = outcomes;
  if (scored.status === "rejected") {
    showError("scorecard-error", scored.reason.message);
    failed = true;
  }
  if (checked.status === "fulfilled") {
    for (const segment of checked.value.sizes || []) {
      if (!names.has(segment.segment_id)) {
        names.set(segment.segment_id, segment.display_name || segment.segment_id);
      }
    }
    renderSizes(checked.value, timeZone);
    showError("health-error", "");
  } else {
    showError("health-error", checked.reason.message);
    failed = true;
  }
  // Drawn last so that its labels can use the display names the other reports gave.
  if (migrated.status === "fulfilled") {
    renderMigration(migrated.value, names);
    showError("migration-error", "");
  } else {
    showError("migration-error", migrated.reason.message);
    failed = true;
  }
  document.body.dataset.state = failed ? "error" : "ready";
}

document.getElementById("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams({
    family: document.getElementById("family").value.trim(),
    since: document.getElementById("since").value,
  });
  window.history.pushState(null, "", `?${query}`);
  load();
});
document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("api-key");
  document.body.dataset.state = "loading";
  try {
    await signIn(input.value.trim());
  } catch (error) {
    showError("sign-in-error", error.message);
    document.body.dataset.state = "signed-out";
    return;
  }
  input.value = "";
  load();
});
document.getElementById("sign-out").addEventListener("click", async () => {
  await fetch("api/session", { method: "DELETE" });
  askToSignIn([]);
});
window.addEventListener("popstate", load);

// Asked first, so that a visitor who has not signed in yet sees the form, not three refusals.
fetch("api/session")
  .then((response) => response.json())
  .then((session) => (session.signed_in ? load() : askToSignIn([])));
