// Tarn's web console. Everything it shows comes from the HTTP API and is written into the
// page as text (textContent, SVG text nodes), never as markup.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "tarn-token";
const PAGE_SIZE = 100;
const ENDED = ["SUCCEEDED", "FAILED", "CANCELLED"];

let token = sessionStorage.getItem(TOKEN_KEY);
// The execution on screen: its id, the page tokens seen (for Previous), the page shown.
let current = { id: null, tokens: [null], index: 0, page: null };

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    throw new ApiError(response.status, error.code, error.message || `HTTP ${response.status}`);
  }
  return data;
}

/** A statement's JSON result (small ones: history, views, crawls). */
async function sql(text) {
  const result = await api("/v1/query", { method: "POST", body: { sql: text, max_rows: 1000 } });
  // An error met after the first rows ends the body with an `error` member.
  if (result.error) throw new ApiError(200, result.error.code, result.error.message);
  return result;
}

function quote(text) {
  return "'" + String(text).replaceAll("'", "''") + "'";
}

// ---------------------------------------------------------------- the page

function el(tag, options = {}, ...children) {
  const node = document.createElement(tag);
  if (options.className) node.className = options.className;
  if (options.text !== undefined) node.textContent = String(options.text);
  if (options.title) node.title = options.title;
  if (options.type) node.type = options.type;
  for (const [key, value] of Object.entries(options.data || {})) node.dataset[key] = value;
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function formatBytes(n) {
  const value = Number(n);
  if (!Number.isFinite(value)) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = value;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

const NUMERIC = /^(U?Int|Float|Decimal)/;
const TEMPORAL = /^(Timestamp|Date|Time)/;

/** A table of `columns` ({name, type}) and `rows` (objects); `onRow` makes rows clickable. */
function table(columns, rows, onRow) {
  const head = el("tr");
  for (const c of columns) {
    const th = el("th", { text: c.name });
    if (c.type) th.append(el("span", { className: "type", text: c.type }));
    head.append(th);
  }
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr", onRow ? { className: "clickable" } : {});
    for (const c of columns) {
      const value = row[c.name];
      if (value === null || value === undefined) {
        tr.append(el("td", { className: "null", text: "NULL" }));
      } else {
        const text = typeof value === "object" ? JSON.stringify(value) : String(value);
        tr.append(el("td", { className: NUMERIC.test(c.type || "") ? "number" : "", text }));
      }
    }
    if (onRow) tr.addEventListener("click", () => onRow(row));
    body.append(tr);
  }
  return el("table", {}, el("thead", {}, head), body);
}

function show(node, ...children) {
  node.replaceChildren(...children);
}

function setStatus(text, failed = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("failed", failed);
}

// ---------------------------------------------------------------- logging in

async function start() {
  wire();
  try {
    const me = await api("/v1/session");
    enter(me);
  } catch (e) {
    if (e.status === 401) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      $("login").hidden = false;
      $("app").hidden = true;
    } else {
      document.body.append(el("p", { className: "error", text: e.message }));
    }
  }
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const session = await api("/v1/session", {
      method: "POST",
      body: { user: $("user").value, password: $("password").value },
    });
    token = session.token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("password").value = "";
    enter(session);
  } catch (e) {
    $("login-error").textContent = e.message;
  }
}

function enter(me) {
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").textContent = `${me.user} (${me.role})`;
  $("logout").hidden = !me.authentication;
  highlight();
  loadCatalog();
}

function logout() {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("app").hidden = true;
  $("login").hidden = false;
}

// ---------------------------------------------------------------- the editor

const KEYWORDS = new Set(("select from where group by order having limit offset join left right " +
  "full outer inner cross on as and or not in is null like ilike between case when then else end " +
  "with union all distinct create drop table view materialized database insert into values " +
  "explain analyze show describe refresh set reset use true false asc desc over partition " +
  "count sum avg min max cast interval date timestamp exists any").split(" "));

const TOKENS = /(--[^\n]*)|('(?:[^']|'')*'?)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|([\s\S])/g;

function highlight() {
  const text = $("sql").value;
  const out = [];
  for (const m of text.matchAll(TOKENS)) {
    const [all, comment, string, number, word] = m;
    if (comment) out.push(el("span", { className: "com", text: all }));
    else if (string) out.push(el("span", { className: "str", text: all }));
    else if (number) out.push(el("span", { className: "num", text: all }));
    else if (word && KEYWORDS.has(word.toLowerCase())) out.push(el("span", { className: "kw", text: all }));
    else out.push(document.createTextNode(all));
  }
  // A trailing newline needs a character after it to take up its line.
  out.push(document.createTextNode("\n"));
  show($("highlight"), ...out);
  $("highlight").scrollTop = $("sql").scrollTop;
}

// ---------------------------------------------------------------- running a statement

async function run() {
  const text = $("sql").value.trim();
  if (!text || $("run").disabled) return;
  $("run").disabled = true;
  $("cancel").disabled = false;
  setStatus("Starting…");
  const started = performance.now();
  try {
    const { query_id: id } = await api("/v1/queries", { method: "POST", body: { sql: text } });
    current = { id, tokens: [null], index: 0, page: null };
    let view = await api(`/v1/queries/${id}`);
    while (!ENDED.includes(view.state)) {
      setStatus(`${view.state}… ${((performance.now() - started) / 1000).toFixed(1)} s`);
      view = await api(`/v1/queries/${id}?wait=1s`);
    }
    if (current.id !== id) return;
    if (view.state === "SUCCEEDED") {
      const stats = view.statistics || {};
      const scanned = stats.bytes_scanned ? `, ${formatBytes(stats.bytes_scanned)} scanned` : "";
      const answeredBy = stats.materialized_view ? `, answered by ${stats.materialized_view}` : "";
      const ms = Math.round(performance.now() - started);
      // The status says SUCCEEDED once the first page is on screen, not before.
      await loadPage();
      if (current.id !== id) return;
      setStatus(`SUCCEEDED: ${view.result.row_count} rows in ${ms} ms${scanned}${answeredBy}`);
    } else {
      setStatus(`${view.state}: ${view.error ? view.error.message : ""}`, true);
      show($("grid"));
      show($("chart"));
    }
  } catch (e) {
    setStatus(`FAILED: ${e.message}`, true);
  } finally {
    $("run").disabled = false;
    $("cancel").disabled = true;
  }
}

async function cancel() {
  if (!current.id) return;
  $("cancel").disabled = true;
  try {
    const view = await api(`/v1/queries/${current.id}`, { method: "DELETE" });
    setStatus(`${view.state}${view.error ? ": " + view.error.message : ""}`, view.state !== "SUCCEEDED");
  } catch (e) {
    setStatus(`Cancelling failed: ${e.message}`, true);
  }
}

async function loadPage() {
  const pageToken = current.tokens[current.index];
  const query = `page_size=${PAGE_SIZE}` + (pageToken ? `&page_token=${encodeURIComponent(pageToken)}` : "");
  const page = await api(`/v1/queries/${current.id}/results?${query}`);
  current.page = page;
  if (page.next_page_token && current.tokens.length === current.index + 1) {
    current.tokens.push(page.next_page_token);
  }
  show($("grid"), table(page.columns, page.rows));
  const first = current.index * PAGE_SIZE;
  $("page-info").textContent = page.row_count === 0 ? "no rows"
    : `rows ${first + 1}–${first + page.row_count}`;
  $("prev").disabled = current.index === 0;
  $("next").disabled = !page.next_page_token;
  drawChart();
}

function turnPage(step) {
  current.index = Math.max(0, current.index + step);
  loadPage().catch((e) => setStatus(e.message, true));
}

// ---------------------------------------------------------------- the chart

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** The x column and the numeric series of a result, and the chart kind that suits them. */
function chartPlan(columns, wanted) {
  const x = columns.find((c) => TEMPORAL.test(c.type)) ||
    columns.find((c) => !NUMERIC.test(c.type)) || columns[0];
  const series = columns.filter((c) => c !== x && NUMERIC.test(c.type)).slice(0, 3);
  const kind = wanted !== "auto" ? wanted : TEMPORAL.test(x ? x.type : "") ? "line" : "bar";
  return { x, series, kind };
}

function drawChart() {
  const page = current.page;
  const holder = $("chart");
  if (!page) return show(holder);
  const { x, series, kind } = chartPlan(page.columns, $("chart-kind").value);
  if (!x || series.length === 0 || page.rows.length === 0) {
    return show(holder, el("p", { text: "Nothing to chart: the result needs a numeric column and rows." }));
  }
  const width = 760;
  const height = 320;
  const pad = { left: 70, right: 20, top: 20, bottom: 60 };
  const values = page.rows.flatMap((r) => series.map((s) => Number(r[s.name])).filter(Number.isFinite));
  const top = Math.max(0, ...values);
  const bottom = Math.min(0, ...values);
  const span = top - bottom || 1;
  const n = page.rows.length;
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const xAt = (i) => pad.left + (n === 1 ? plotW / 2 : (i * plotW) / (n - 1));
  const yAt = (v) => pad.top + plotH - ((v - bottom) / span) * plotH;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "data-kind": kind });
  chart.append(svg("line", { class: "axis", x1: pad.left, y1: yAt(bottom), x2: width - pad.right, y2: yAt(bottom) }));
  chart.append(svg("line", { class: "axis", x1: pad.left, y1: pad.top, x2: pad.left, y2: pad.top + plotH }));
  for (const v of [bottom, (top + bottom) / 2, top]) {
    chart.append(svg("text", { x: pad.left - 6, y: yAt(v) + 4, "text-anchor": "end" }, Number(v.toPrecision(4))));
  }
  const labelEvery = Math.ceil(n / 8);
  page.rows.forEach((row, i) => {
    if (i % labelEvery === 0) {
      const label = row[x.name] === null ? "NULL" : String(row[x.name]).slice(0, 19);
      const lx = kind === "bar" ? pad.left + ((i + 0.5) * plotW) / n : xAt(i);
      chart.append(svg("text", { x: lx, y: height - pad.bottom + 16, "text-anchor": "middle" }, label));
    }
  });
  series.forEach((s, k) => {
    if (kind === "line") {
      const points = page.rows.map((r, i) => [xAt(i), yAt(Number(r[s.name]))])
        .filter(([, y]) => Number.isFinite(y));
      const d = points.map(([px, py], i) => `${i === 0 ? "M" : "L"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
      chart.append(svg("path", { class: `series-${k}`, d, "data-series": s.name }));
    } else {
      const slot = plotW / n;
      const barW = Math.max(1, (slot * 0.8) / series.length);
      page.rows.forEach((r, i) => {
        const v = Number(r[s.name]);
        if (!Number.isFinite(v)) return;
        const bx = pad.left + i * slot + slot * 0.1 + k * barW;
        chart.append(svg("rect", { class: `series-${k} bar`, x: bx, width: barW,
          y: Math.min(yAt(v), yAt(0)), height: Math.abs(yAt(v) - yAt(0)), "data-series": s.name }));
      });
    }
    chart.append(svg("text", { x: pad.left + 10 + k * 150, y: height - 12, class: `series-${k}` }, s.name));
  });
  show(holder, chart);
}

function showView(which) {
  $("show-grid").classList.toggle("active", which === "grid");
  $("show-chart").classList.toggle("active", which === "chart");
  $("grid").hidden = which !== "grid";
  $("chart").hidden = which !== "chart";
  if (which === "chart") drawChart();
}

// ---------------------------------------------------------------- the catalog

async function loadCatalog() {
  const tree = $("tree");
  show(tree, el("li", { text: "Loading…" }));
  try {
    const { databases } = await api("/v1/databases");
    show(tree, ...databases.map((db) => {
      const children = el("ul");
      const node = el("button", { className: "node", type: "button", text: db.name, data: { database: db.name } });
      const item = el("li", {}, node, el("span", { className: "meta", text: `${db.tables} tables` }), children);
      node.addEventListener("click", () => toggleDatabase(db.name, children));
      return item;
    }));
  } catch (e) {
    show(tree, el("li", { className: "error", text: e.message }));
  }
}

async function toggleDatabase(database, children) {
  if (children.childElementCount > 0) return show(children);
  try {
    const { tables } = await api(`/v1/tables/${encodeURIComponent(database)}`);
    show(children, ...tables.map((t) => {
      const meta = t.type === "VIEW" ? "view" : `${Number(t.rows).toLocaleString()} rows, ${formatBytes(t.bytes)}`;
      const node = el("button", { className: "node", type: "button", text: t.name,
        data: { table: `${database}.${t.name}` } });
      node.addEventListener("click", () => describeTable(database, t.name));
      return el("li", {}, node, el("span", { className: "meta", text: meta }));
    }));
  } catch (e) {
    show(children, el("li", { className: "error", text: e.message }));
  }
}

async function describeTable(database, name) {
  const details = $("details");
  try {
    const t = await api(`/v1/tables/${encodeURIComponent(database)}/${encodeURIComponent(name)}`);
    const query = el("button", { type: "button", text: "Query it" });
    query.addEventListener("click", () => {
      $("sql").value = `SELECT * FROM "${database}"."${name}" LIMIT 100`;
      highlight();
      selectTab("query");
    });
    const parts = [el("h3", { text: `${database}.${name}` }), query];
    if (t.type !== "VIEW") {
      parts.push(el("p", { text: `${t.format}, ${t.files} files, ${Number(t.rows).toLocaleString()} rows, ` +
        `${formatBytes(t.bytes)}, ${t.partitions} partitions; ${t.location}` }));
    } else {
      parts.push(el("p", { text: t.query }));
    }
    parts.push(el("h4", { text: "Columns" }),
      table([{ name: "name" }, { name: "type" }, { name: "nullable" }], t.columns || []));
    if ((t.partition_columns || []).length > 0) {
      parts.push(el("h4", { text: "Partition columns" }),
        table([{ name: "name" }, { name: "type" }], t.partition_columns));
      const partitions = await sql(
        `SELECT partition, files, rows, bytes FROM system.partitions WHERE database_name = ${quote(database)} ` +
        `AND table_name = ${quote(name)} ORDER BY partition LIMIT 200`);
      parts.push(el("h4", { text: "Partitions" }), table(partitions.columns, partitions.rows));
    }
    if ((t.schema_history || []).length > 0) {
      const history = t.schema_history.map((h) => ({ version: h.version, created_at: h.created_at,
        columns: typeof h.columns === "string" ? h.columns : JSON.stringify(h.columns) }));
      parts.push(el("h4", { text: "Schema history" }),
        table([{ name: "version" }, { name: "created_at" }, { name: "columns" }], history));
    }
    show(details, ...parts);
  } catch (e) {
    show(details, el("p", { className: "error", text: e.message }));
  }
}

// ---------------------------------------------------------------- history, views, crawlers

async function loadGrid(target, text, onRow) {
  try {
    const result = await sql(text);
    show($(target), table(result.columns, result.rows, onRow));
  } catch (e) {
    show($(target), el("p", { className: "error", text: e.message }));
  }
}

function loadHistory() {
  return loadGrid("history",
    "SELECT submitted_at, state, execution_ms, rows_returned, bytes_scanned, user_name, front_door, " +
    "query, error FROM system.queries ORDER BY submitted_at DESC LIMIT 200",
    (row) => {
      $("sql").value = row.query;
      highlight();
      selectTab("query");
    });
}

function loadViews() {
  return loadGrid("views",
    "SELECT name, base_table, rows, bytes, partitions, stale_partitions, refreshed_at, last_error " +
    "FROM system.materialized_views ORDER BY name");
}

async function loadCrawlers() {
  try {
    const { crawlers } = await api("/v1/crawlers");
    show($("crawlers"), table([{ name: "name" }, { name: "location" }, { name: "database" },
      { name: "schedule" }, { name: "last_started_at" }], crawlers));
  } catch (e) {
    show($("crawlers"), el("p", { className: "error", text: e.message }));
  }
  return loadGrid("crawls",
    "SELECT started_at, location, database, status, files_added, files_removed, problems, finished_at " +
    "FROM system.crawls ORDER BY started_at DESC LIMIT 100");
}

function selectTab(name) {
  for (const button of document.querySelectorAll(".tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== `tab-${name}`;
  if (name === "history") loadHistory();
  if (name === "views") loadViews();
  if (name === "crawlers") loadCrawlers();
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("sql").addEventListener("input", highlight);
  $("sql").addEventListener("scroll", () => { $("highlight").scrollTop = $("sql").scrollTop; });
  $("sql").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    }
  });
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", cancel);
  $("prev").addEventListener("click", () => turnPage(-1));
  $("next").addEventListener("click", () => turnPage(1));
  $("show-grid").addEventListener("click", () => showView("grid"));
  $("show-chart").addEventListener("click", () => showView("chart"));
  $("chart-kind").addEventListener("change", drawChart);
  $("catalog-refresh").addEventListener("click", loadCatalog);
  $("history-refresh").addEventListener("click", loadHistory);
  $("views-refresh").addEventListener("click", loadViews);
  $("crawlers-refresh").addEventListener("click", loadCrawlers);
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => selectTab(button.dataset.tab));
  }
}

start();
