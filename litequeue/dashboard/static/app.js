// The litequeue dashboard page. It polls the server's JSON endpoints every second and redraws
// from them. Every value from the database reaches the page through textContent or a text
// node, never as HTML, so task args, output and log cannot inject markup or scripts.
"use strict";

(function () {
  const POLL_INTERVAL_MS = 1000;
  const THROUGHPUT_MINUTES = 15;
  const RECENT_TASKS_SHOWN = 15;
  const TOKEN_HEADER = "X-Litequeue-Token";
  const TOKEN_KEY = "litequeue-dashboard-token";
  const STATUSES = ["queued", "progress", "completed", "failed", "cancelled"];

  const state = {
    overview: null,       // the last /api/overview document
    detailId: null,       // the id of the task shown in the detail view, or null for the overview
  };

  // --- helpers ---------------------------------------------------------------------------

  function byId(id) {
    return document.getElementById(id);
  }

  // Create an element with a class and children; strings become text nodes.
  function element(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function taskLink(id) {
    const link = element("a", "", id);
    link.href = "#/tasks/" + encodeURIComponent(String(id));
    return link;
  }

  // Replace the rows of a table body; `empty` is the text of the one row shown when there is no row.
  function fillTable(table, rows, empty) {
    const body = table.tBodies[0];
    const columns = table.tHead.rows[0].cells.length;
    if (rows.length === 0) {
      const cell = element("td", "empty", empty);
      cell.colSpan = columns;
      body.replaceChildren(element("tr", "", cell));
      return;
    }
    body.replaceChildren(...rows.map((cells) => {
      const row = element("tr", "");
      cells.forEach((value, index) => {
        const headerClass = table.tHead.rows[0].cells[index].className;
        row.append(element("td", headerClass, value === null || value === undefined ? "-" : value));
      });
      return row;
    }));
  }

  // A duration in seconds, as `litequeue` prints it: 0.4s, 42s, 12m05s, 3h07m, 5d02h.
  function formatAge(seconds) {
    if (seconds === null || seconds === undefined) {
      return "-";
    }
    if (seconds < 10) {
      return seconds.toFixed(1) + "s";
    }
    const whole = Math.floor(seconds);
    const pad = (value) => String(value).padStart(2, "0");
    if (whole < 60) {
      return whole + "s";
    }
    if (whole < 3600) {
      return Math.floor(whole / 60) + "m" + pad(whole % 60) + "s";
    }
    if (whole < 86400) {
      return Math.floor(whole / 3600) + "h" + pad(Math.floor((whole % 3600) / 60)) + "m";
    }
    return Math.floor(whole / 86400) + "d" + pad(Math.floor((whole % 86400) / 3600)) + "h";
  }

  // A Unix time in seconds as local date and time with milliseconds.
  function formatTime(unixSeconds) {
    if (unixSeconds === null || unixSeconds === undefined) {
      return "-";
    }
    const date = new Date(unixSeconds * 1000);
    const pad = (value, width) => String(value).padStart(width || 2, "0");
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) + "." +
      pad(date.getMilliseconds(), 3);
  }

  function firstLine(text) {
    return (text || "").trim().split("\n")[0];
  }

  // Fetch a JSON document; a response with an error status throws the server's message.
  async function fetchJson(path, options) {
    const response = await fetch(path, Object.assign({ cache: "no-store" }, options));
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      throw new Error(response.status + " " + response.statusText + " (the response is not JSON)");
    }
    if (!response.ok) {
      throw new Error(body && body.error ? body.error : response.status + " " + response.statusText);
    }
    return body;
  }

  function setConnection(ok, text) {
    const node = byId("connection");
    node.textContent = text;
    node.classList.toggle("error", !ok);
  }

  // --- overview --------------------------------------------------------------------------

  function renderOverview(overview) {
    byId("database").textContent = overview.database;
    for (const status of STATUSES) {
      byId("count-" + status).textContent = String(overview.counts[status]);
    }
    renderSummary(overview);
    renderPaused(overview.paused_queues);
    drawChart(byId("chart"), overview.throughput);
    renderQueues(overview);
    renderRunning(overview);
    renderFailures(overview);
    renderWorkers(overview.workers);
  }

  function renderSummary(overview) {
    const minute = overview.finished_last_minute;
    const hour = overview.finished_last_hour;
    const supervisors = overview.live_supervisors;
    const workers = overview.live_worker_processes;
    byId("summary").textContent =
      "oldest queued " + formatAge(overview.oldest_queued_age_s) +
      " · last minute: " + minute.completed + " completed, " + minute.failed + " failed" +
      " · last hour: " + hour.completed + " completed, " + hour.failed + " failed" +
      " · live: " + supervisors + (supervisors === 1 ? " supervisor, " : " supervisors, ") +
      workers + (workers === 1 ? " worker process" : " worker processes") +
      " (heartbeat within " + overview.lease_s + " s)";
  }

  function renderPaused(queues) {
    const node = byId("paused");
    node.hidden = queues.length === 0;
    node.textContent = queues.length === 0 ? "" : "paused queues: " + queues.join(", ") +
      " (their queued tasks wait until resumed)";
  }

  function renderQueues(overview) {
    const paused = new Set(overview.paused_queues);
    const rows = Object.entries(overview.queues).map(([name, entry]) => [
      paused.has(name) ? name + " (paused)" : name,
      ...STATUSES.map((status) => entry.counts[status]),
      formatAge(entry.oldest_queued_age_s),
    ]);
    fillTable(byId("queues"), rows, "no tasks");
  }

  function renderRunning(overview) {
    const total = overview.counts.progress;
    const listed = overview.running.length;
    byId("running-count").textContent =
      total > listed ? "(" + total + ", the " + listed + " longest-running listed)" : "(" + total + ")";
    const rows = overview.running.map((task) => [
      taskLink(task.id), task.queue, task.task, formatAge(task.elapsed_s), task.attempts,
      task.worker_pid === null ? "-" : "PID " + task.worker_pid + " on " + task.worker_host,
    ]);
    fillTable(byId("running"), rows, "no task is running");
  }

  function renderFailures(overview) {
    const rows = overview.failures.map((task) => [
      taskLink(task.id), task.queue, task.task,
      task.finished === null ? "-" : formatAge(Math.max(0, overview.time - task.finished)) + " ago",
      element("span", "error-text", firstLine(task.error)),
    ]);
    fillTable(byId("failures"), rows, "no failed task");
  }

  function renderWorkers(workers) {
    const rows = workers.map((worker) => [
      worker.host, worker.pid,
      worker.role === "worker" && worker.supervisor_pid !== null ? "worker of " + worker.supervisor_pid : worker.role,
      worker.queues.join(", ") || "-", formatAge(worker.heartbeat_age_s),
      worker.tasks.length === 0 ? "-" : element("span", "", ...worker.tasks.flatMap((task, index) => [
        index > 0 ? ", " : "", taskLink(task.id), " " + task.task + " (" + formatAge(task.elapsed_s) + ")",
      ])),
    ]);
    fillTable(byId("workers"), rows, "no live supervisor or worker process");
  }

  function renderRecentTasks(tasks, now) {
    const rows = tasks.map((task) => [
      taskLink(task.id), task.queue, task.task, element("span", "status status-" + task.status, task.status),
      formatAge(Math.max(0, now - task.created)), element("span", "error-text", firstLine(task.error)),
    ]);
    fillTable(byId("tasks"), rows, "no task matches");
  }

  // --- the throughput chart --------------------------------------------------------------

  // Draw stacked bars per minute (completed below, failed on top) on a canvas sized to its
  // element and the screen's pixel density.
  function drawChart(canvas, throughput) {
    const buckets = throughput.buckets;
    const completed = buckets.reduce((sum, bucket) => sum + bucket.completed, 0);
    const failed = buckets.reduce((sum, bucket) => sum + bucket.failed, 0);
    byId("throughput-summary").textContent =
      "· last " + throughput.minutes + " minutes: " + completed + " completed, " + failed + " failed";

    // A hidden canvas (the detail view is open) has no size; route() draws it when it shows.
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (width === 0 || height === 0) {
      return;
    }
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);

    const style = getComputedStyle(document.documentElement);
    const color = (name) => style.getPropertyValue(name).trim();
    const totals = buckets.map((bucket) => bucket.completed + bucket.failed);
    const maximum = niceCeiling(Math.max(1, ...totals));
    const left = 40, right = 8, top = 10, bottom = 22;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;

    context.font = "11px system-ui, sans-serif";
    context.fillStyle = color("--muted");
    context.strokeStyle = color("--grid");
    context.lineWidth = 1;
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (const fraction of [0, 0.5, 1]) {
      const y = Math.round(top + plotHeight * (1 - fraction)) + 0.5;
      context.beginPath();
      context.moveTo(left, y);
      context.lineTo(width - right, y);
      context.stroke();
      context.fillText(String(Math.round(maximum * fraction)), left - 6, y);
    }

    const slot = plotWidth / buckets.length;
    const barWidth = Math.max(1, slot * 0.7);
    buckets.forEach((bucket, index) => {
      const x = left + index * slot + (slot - barWidth) / 2;
      const completedHeight = plotHeight * bucket.completed / maximum;
      const failedHeight = plotHeight * bucket.failed / maximum;
      context.fillStyle = color("--completed");
      context.fillRect(x, top + plotHeight - completedHeight, barWidth, completedHeight);
      context.fillStyle = color("--failed");
      context.fillRect(x, top + plotHeight - completedHeight - failedHeight, barWidth, failedHeight);
    });

    context.fillStyle = color("--muted");
    context.textBaseline = "top";
    const minutes = throughput.minutes;
    const labelEvery = minutes > 30 ? 15 : 5;
    for (let ago = minutes; ago >= 0; ago -= labelEvery) {
      const x = left + plotWidth * (1 - ago / minutes);
      // The outermost labels align inwards, so they stay inside the canvas.
      if (ago === minutes) {
        context.textAlign = "left";
      } else if (ago === 0) {
        context.textAlign = "right";
      } else {
        context.textAlign = "center";
      }
      context.fillText(ago === 0 ? "now" : "-" + ago + " min", x, top + plotHeight + 6);
    }
  }

  // The smallest of 1, 2 or 5 times a power of ten that is at least `value`.
  function niceCeiling(value) {
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * power) {
        return step * power;
      }
    }
    return 10 * power;
  }

  // --- task detail -----------------------------------------------------------------------

  const DETAIL_FIELDS = [
    "id", "task", "queue", "status", "args", "priority", "attempts", "max_retries", "timeout_s",
    "created", "run_at", "started", "finished", "modified", "worker_pid", "worker_host", "result",
    "unique_key", "waiting_on",
  ];
  const TIME_FIELDS = new Set(["created", "run_at", "started", "finished", "modified"]);

  function renderDetail(task) {
    byId("detail-title").textContent = "Task " + task.id + " · " + task.task;
    const fields = byId("fields");
    const known = new Set(DETAIL_FIELDS.concat(["output", "log", "error"]));
    // Fields that a newer server adds are shown too, after the known ones.
    const names = DETAIL_FIELDS.filter((name) => name in task)
      .concat(Object.keys(task).filter((name) => !known.has(name)));
    fields.replaceChildren(...names.flatMap((name) => {
      const value = task[name];
      let text;
      if (TIME_FIELDS.has(name)) {
        text = formatTime(value);
      } else if (name === "args" || name === "result" || (value !== null && typeof value === "object")) {
        text = JSON.stringify(value);
      } else {
        text = value === null ? "-" : String(value);
      }
      const description = element("dd", name === "status" ? "status status-" + value : "", text);
      return [element("dt", "", name), description];
    }));
    setText(byId("detail-error"), task.error || "-");
    setText(byId("detail-output"), task.output || "-");
    setText(byId("detail-log"), task.log || "-");
    renderActions(task);
  }

  // Assigning the same text again would clear the reader's selection on every refresh.
  function setText(node, text) {
    if (node.textContent !== text) {
      node.textContent = text;
    }
  }

  function renderActions(task) {
    const allowed = state.overview !== null && state.overview.actions_allowed;
    byId("actions").hidden = !allowed;
    if (!allowed) {
      return;
    }
    byId("cancel-button").disabled = !(task.status === "queued" || task.status === "progress");
    byId("requeue-button").disabled = !(task.status === "failed" || task.status === "cancelled");
    byId("token-field").hidden = Boolean(sessionStorage.getItem(TOKEN_KEY));
  }

  async function runAction(action) {
    const input = byId("token-input");
    if (input.value) {
      sessionStorage.setItem(TOKEN_KEY, input.value);
      input.value = "";
    }
    const result = byId("action-result");
    const headers = {};
    headers[TOKEN_HEADER] = sessionStorage.getItem(TOKEN_KEY) || "";
    try {
      const outcome = await fetchJson("/api/tasks/" + encodeURIComponent(state.detailId) + "/" + action,
                                      { method: "POST", headers: headers });
      result.textContent = "task " + outcome.id + " is now " + outcome.status;
      result.classList.remove("error");
    } catch (error) {
      if (/token/i.test(error.message)) {
        sessionStorage.removeItem(TOKEN_KEY);  // ask for it again
      }
      result.textContent = error.message;
      result.classList.add("error");
    }
    await refreshDetail();
  }

  // --- routing and polling ---------------------------------------------------------------

  // "#token=..." (from the start-up message) stores the token for this tab and leaves the
  // URL, so it does not stay in the history or in a copied link.
  function takeTokenFromUrl() {
    const match = /^#token=(.+)$/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search + "#/");
    }
  }

  function route() {
    const match = /^#\/tasks\/([^/]+)$/.exec(location.hash);
    state.detailId = match ? decodeURIComponent(match[1]) : null;
    byId("overview").hidden = state.detailId !== null;
    byId("detail").hidden = state.detailId === null;
    byId("action-result").textContent = "";
    if (state.detailId === null && state.overview !== null) {
      drawChart(byId("chart"), state.overview.throughput);
    }
    if (state.detailId !== null) {
      byId("detail-title").textContent = "Task " + state.detailId;
      byId("fields").replaceChildren();
      refreshDetail();
    }
  }

  async function refreshDetail() {
    const id = state.detailId;
    if (id === null) {
      return;
    }
    const message = byId("detail-message");
    try {
      const task = await fetchJson("/api/tasks/" + encodeURIComponent(id));
      if (state.detailId === id) {
        message.hidden = true;
        renderDetail(task);
      }
    } catch (error) {
      if (state.detailId === id) {
        message.textContent = error.message;
        message.hidden = false;
      }
    }
  }

  async function refresh() {
    try {
      const filter = byId("task-filter").value;
      const query = "?limit=" + RECENT_TASKS_SHOWN + (filter ? "&status=" + encodeURIComponent(filter) : "");
      const [overview, tasks] = await Promise.all([
        fetchJson("/api/overview?minutes=" + THROUGHPUT_MINUTES),
        fetchJson("/api/tasks" + query),
      ]);
      state.overview = overview;
      renderOverview(overview);
      renderRecentTasks(tasks, overview.time);
      setConnection(true, "live · " + formatTime(overview.time).slice(11, 19));
      await refreshDetail();
    } catch (error) {
      setConnection(false, "cannot refresh: " + error.message);
    }
  }

  async function poll() {
    await refresh();
    setTimeout(poll, POLL_INTERVAL_MS);
  }

  function start() {
    takeTokenFromUrl();
    window.addEventListener("hashchange", route);
    byId("task-filter").addEventListener("change", refresh);
    byId("cancel-button").addEventListener("click", () => runAction("cancel"));
    byId("requeue-button").addEventListener("click", () => runAction("requeue"));
    window.addEventListener("resize", () => {
      if (state.overview !== null) {
        drawChart(byId("chart"), state.overview.throughput);
      }
    });
    route();
    poll();
  }

  start();
})();
