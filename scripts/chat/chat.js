// The chat demo's client: joins a room of scripts/chat.lua over a WebSocket on
// the same host and port as this page, shows the messages and who is here,
// and reconnects with backoff (250 ms doubling to 5 s, with jitter) when the
// connection drops, for example while the server restarts.
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);
  let name = params.get("name") || "";
  let room = params.get("room") || "lobby";
  let ws = null;
  let attempt = 0;
  let retryTimer = null;

  const $ = (id) => document.getElementById(id);
  const list = $("messages");
  const input = $("input");
  const status = $("status");

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    $("send").disabled = state !== "open";
  }

  function show(kind, text, from) {
    const li = document.createElement("li");
    li.className = "msg " + kind;
    if (from !== undefined) {
      const who = document.createElement("span");
      who.className = "from";
      who.textContent = from;
      li.appendChild(who);
      if (from === name) li.classList.add("mine");
    }
    li.appendChild(document.createTextNode(text));
    list.appendChild(li);
    // Keep the newest message in view, and a bounded history.
    while (list.children.length > 500) list.removeChild(list.firstChild);
    list.scrollTop = list.scrollHeight;
  }

  function setMembers(names) {
    const ul = $("members");
    ul.replaceChildren(...names.map((n) => {
      const li = document.createElement("li");
      li.textContent = n;
      return li;
    }));
    $("count").textContent = names.length + (names.length === 1 ? " person here" : " people here");
  }

  function setRoom(r) {
    room = r;
    $("room-name").textContent = r;
    document.title = r + " · moonroom chat";
    const q = new URLSearchParams({ room, name });
    history.replaceState(null, "", "?" + q.toString());
  }

  function onLine(line) {
    if (line.startsWith("* here: ")) {
      const names = line.slice(8).split(", ").filter((n) => n !== "");
      return setMembers(names);
    }
    if (line.startsWith("* you are in ")) {
      setRoom(line.slice(13));
      ws.send("/who");
      return show("system", "you are in " + room);
    }
    if (line.startsWith("* ")) {
      show("system", line.slice(2));
      // Someone joined, left or was renamed: ask who is here now.
      return ws.send("/who");
    }
    if (line.startsWith("! ")) return show("error", line.slice(2));
    // Published by a backend through the HTTP API (POST /rooms/NAME/messages).
    if (line.startsWith("[api] ")) return show("chat api", line.slice(6), "api");
    const colon = line.indexOf(": ");
    if (colon > 0) return show("chat", line.slice(colon + 2), line.slice(0, colon));
    show("system", line);
  }

  function connect() {
    clearTimeout(retryTimer);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams({ room, name });
    setStatus("connecting", attempt ? "reconnecting…" : "connecting…");
    ws = new WebSocket(proto + "//" + location.host + "/?" + q.toString());
    ws.onopen = () => {
      attempt = 0;
      setStatus("open", "connected as " + name);
      ws.send("/who");
    };
    ws.onmessage = (e) => { if (typeof e.data === "string") onLine(e.data); };
    ws.onclose = (e) => {
      const delay = Math.min(5000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
      attempt++;
      setStatus("closed", "disconnected (" + e.code + "), retrying in " +
        (delay / 1000).toFixed(1) + " s");
      retryTimer = setTimeout(connect, delay);
    };
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
    const nick = text.match(/^\/nick\s+(\S+)$/);
    if (nick) {
      name = nick[1];
      setRoom(room);
      setStatus("open", "connected as " + name);
    }
    ws.send(text);
    input.value = "";
  });

  function start() {
    setRoom(room);
    connect();
    input.focus();
  }

  if (name) {
    start();
  } else {
    const dialog = $("join");
    $("join-room").value = room;
    $("join-form").addEventListener("submit", () => {
      name = $("join-name").value.trim();
      room = $("join-room").value.trim() || "lobby";
      start();
    });
    dialog.showModal();
  }
})();
