// The dashboard's script: tiles that follow their sessions (server-sent events), a session in a
// terminal (xterm.js over a WebSocket), and the forms. Text from sessions goes in with textContent
// only; nothing here builds HTML from data.
"use strict";

(function () {
  const say = (text) => {
    const line = document.getElementById("message");
    if (line) line.textContent = text;
  };

  async function call(name, args) {
    const response = await fetch("/dashboard/actions/" + name, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(args),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  const tiles = () => Array.from(document.querySelectorAll("#grid .tile"));

  function countWaiting() {
    const waiting = tiles().filter((tile) => tile.dataset.state === "waiting").length;
    document.title = waiting ? "(" + waiting + " waiting) Mahavishnu" : "Mahavishnu";
  }

  // The server renders the tiles (escaped); the page swaps them in when sessions come and go.
  async function refresh() {
    const response = await fetch("/dashboard/tiles" + location.search, { credentials: "same-origin" });
    if (!response.ok) return;
    const grid = document.getElementById("grid");
    grid.innerHTML = await response.text();
    countWaiting();
  }

  function follow() {
    const source = new EventSource("/dashboard/updates");
    source.addEventListener("screen", (event) => {
      const update = JSON.parse(event.data);
      const tile = tiles().find((t) => t.dataset.id === update.id);
      if (!tile) return;
      tile.querySelector(".screen").textContent = update.screen;
      tile.querySelector(".state").textContent = update.state;
      tile.dataset.state = update["class"];
      tile.className = "tile state-" + update["class"];
      countWaiting();
    });
    source.addEventListener("sessions", () => refresh());
  }

  function actions() {
    document.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const id = button.dataset.id;
      const calls = {
        close: () => call("terminal_close", { ids: [id] }),
        pause: () => call("terminal_pause", { id: id }),
        resume: () => call("terminal_resume", { id: id }),
        merge: () => call("terminal_merge", { id: id }),
        release: () => call("traffic_set", {
          service: button.dataset.service,
          to: button.dataset.revision,
          regions: [button.dataset.region],
        }),
        rollback: () => call("deploy_rollback", {
          service: button.dataset.service,
          regions: [button.dataset.region],
        }),
        "run-workflow": () => call("workflow_run", { name: button.dataset.name }),
        "rerun-failed": () => call("sweep_rerun", { id: Number(button.dataset.sweep), failed: true }),
      };
      const run = calls[button.dataset.action];
      if (!run) return;
      button.disabled = true;
      try {
        say((await run()).summary);
        if (document.getElementById("deployments-page") || document.getElementById("workflows-page")) {
          location.reload();
        }
      } catch (error) {
        say("error: " + error.message);
      } finally {
        button.disabled = false;
      }
    });
    const sendAll = document.getElementById("send-all");
    if (sendAll) {
      sendAll.addEventListener("submit", async (event) => {
        event.preventDefault();
        const text = sendAll.elements.text.value;
        const ids = tiles()
          .filter((tile) => ["waiting", "running", "starting"].includes(tile.dataset.state))
          .map((tile) => tile.dataset.id);
        const results = await Promise.allSettled(
          ids.map((id) => call("terminal_send", { id: id, text: text, enter: true })),
        );
        const failed = results.filter((r) => r.status === "rejected").length;
        say("sent to " + (ids.length - failed) + " of " + ids.length + " sessions");
        sendAll.reset();
      });
    }
    const launch = document.getElementById("launch");
    if (launch) {
      launch.addEventListener("submit", async (event) => {
        event.preventDefault();
        const form = launch.elements;
        try {
          const reply = await call("terminal_launch", {
            profile: form.profile.value,
            count: Number(form.count.value || 1),
            target: form.target.value || null,
            worktree: form.worktree.checked,
          });
          say(reply.summary);
          refresh();
        } catch (error) {
          say("error: " + error.message);
        }
      });
    }
  }

  function terminal(page) {
    const id = page.dataset.id;
    const term = new window.Terminal({ scrollback: 10000, cursorBlink: true });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(document.getElementById("terminal"));
    fit.fit();
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(
      scheme + location.host + "/dashboard/sessions/" + encodeURIComponent(id) + "/socket",
    );
    const state = page.querySelector(".state");
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.error) say("error: " + message.error);
      if (typeof message.screen === "string") {
        // The history first; after that, each change redraws the screen in place.
        if (!message.scrollback) term.write("\x1b[H\x1b[2J");
        term.write(message.screen.replace(/\r?\n/g, "\r\n"));
      }
      if (message.state && state) state.textContent = message.state;
      if (message.live === false) say("the session has ended: " + message.state);
    });
    socket.addEventListener("close", () => say("disconnected"));
    term.onData((data) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "input", data: data }));
    });
    const resize = () => {
      fit.fit();
      if (socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
      }
    };
    window.addEventListener("resize", resize);
    // The session takes this terminal's size, so that its lines fit.
    socket.addEventListener("open", resize);
    term.focus();
    window.mahavishnuTerminal = term;
  }

  function live(page) {
    // Tables that follow: read again when something happens.
    const source = new EventSource("/dashboard/updates");
    let pending = false;
    const again = () => {
      if (pending) return;
      pending = true;
      setTimeout(async () => {
        pending = false;
        const response = await fetch(location.pathname, { credentials: "same-origin" });
        if (!response.ok) return;
        const html = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = html.getElementById(page.id);
        if (fresh) page.replaceChildren(...fresh.childNodes);
      }, 300);
    };
    source.addEventListener("sessions", again);
    source.addEventListener("event", again);
    source.addEventListener("screen", () => {});
  }

  function logs(page) {
    const out = document.getElementById("log");
    const source = new EventSource(
      "/dashboard/deployments/" + encodeURIComponent(page.dataset.service) + "/logs/stream",
    );
    source.addEventListener("line", (event) => {
      out.textContent += event.data + "\n";
      out.scrollTop = out.scrollHeight;
    });
    source.addEventListener("error", (event) => {
      if (event.data) say("error: " + event.data);
    });
  }

  // The event stream: each new event becomes the table's first row.
  function events(page) {
    const body = page.querySelector("tbody");
    const source = new EventSource("/dashboard/updates");
    source.addEventListener("event", (message) => {
      const event = JSON.parse(message.data);
      const row = document.createElement("tr");
      for (const value of [event.at, event.instance, event.what, event.detail]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      }
      body.prepend(row);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (document.getElementById("grid")) {
      follow();
      countWaiting();
    }
    actions();
    const page = document.getElementById("terminal-page");
    if (page) terminal(page);
    const eventsPage = document.getElementById("events-page");
    if (eventsPage) events(eventsPage);
    const lifecyclePage = document.getElementById("lifecycle-page");
    if (lifecyclePage) live(lifecyclePage);
    const workflowsPage = document.getElementById("workflows-page");
    if (workflowsPage) live(workflowsPage);
    const logPage = document.getElementById("logs-page");
    if (logPage) logs(logPage);
  });
})();
