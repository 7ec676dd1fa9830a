// The operator console: one page, no build step, nothing loaded from elsewhere.
// State changes go to /console/api with the session's CSRF token in X-CSRF-Token; what other
// operators, users and the bot do arrives over Server-Sent Events (/console/api/events).
"use strict";

(() => {
  const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
  const state = { me: null, open: null, openView: null, queue: { waiting: [], live: [] }, events: null };

  // --- talking to the server ------------------------------------------------------------------

  async function api(method, path, body) {
    const init = { method, headers: {}, credentials: "same-origin" };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = state.me ? state.me.csrf : "";
      init.body = JSON.stringify(body || {});
    }
    const response = await fetch(path, init);
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      data = { message: `${response.status} ${response.statusText}` };
    }
    if (response.status === 401 && path !== "/console/login") {
      // Said only to someone who was signed in: a first visit just shows the form.
      signedOut(state.me ? data.message : "");
    }
    if (!response.ok) {
      const error = new Error(data.message || `${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function notice(text) {
    const box = $("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }

  async function act(work) {
    notice("");
    try {
      await work();
    } catch (error) {
      if (error.status !== 401) notice(error.message);
    }
  }

  // --- sign-in --------------------------------------------------------------------------------

  function signedOut(message) {
    state.me = null;
    if (state.events) state.events.close();
    state.events = null;
    $("whoami").textContent = "";
    $("signout").hidden = true;
    $("connection").hidden = true;
    document.getElementById("desk").hidden = true;
    document.getElementById("signin").hidden = false;
    const error = $("login-error");
    error.textContent = message || "";
    error.hidden = !message;
  }

  function signedIn(me) {
    state.me = me;
    $("whoami").textContent = me.email + (me.bots ? ` (${me.bots.join(", ")})` : "");
    $("signout").hidden = false;
    document.getElementById("signin").hidden = true;
    document.getElementById("desk").hidden = false;
    listen();
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    $("login-error").hidden = true;
    api("POST", "/console/login", { email: form.get("email"), password: form.get("password") })
      .then((me) => {
        $("login-password").value = "";
        signedIn(me);
      })
      .catch((error) => {
        const box = $("login-error");
        box.textContent = error.message;
        box.hidden = false;
      });
  });

  $("signout").addEventListener("click", () =>
    act(async () => {
      await api("POST", "/console/logout");
      signedOut("");
    }),
  );

  // --- live updates ---------------------------------------------------------------------------

  function listen() {
    if (state.events) state.events.close();
    const events = new EventSource("/console/api/events");
    state.events = events;
    const connection = $("connection");
    // The queue is (re)loaded once the stream is up, so nothing in between is missed.
    events.addEventListener("ready", () => {
      connection.hidden = false;
      connection.textContent = "live";
      connection.dataset.state = "live";
      refresh();
    });
    for (const kind of ["requested", "taken", "handed_back", "timed_out", "closed"]) {
      events.addEventListener(kind, (event) => {
        const data = JSON.parse(event.data);
        loadQueue();
        if (data.session_id === state.open) openConversation(data.session_id);
      });
    }
    events.addEventListener("message", (event) => {
      const data = JSON.parse(event.data);
      if (data.session_id === state.open && data.message) addMessage(data.message);
    });
    events.addEventListener("signed_out", () => signedOut("Your sign-in ended: sign in again."));
    events.onerror = () => {
      connection.textContent = "reconnecting...";
      connection.dataset.state = "reconnecting";
      if (events.readyState === EventSource.CLOSED) {
        // The browser gave up (a 401, say): ask who we are, which signs out if need be.
        api("GET", "/console/api/me").then(() => listen(), () => {});
      }
    };
  }

  function refresh() {
    loadQueue();
    if (state.open) openConversation(state.open);
  }

  // --- the queue ------------------------------------------------------------------------------

  function waited(view) {
    if (!view.requested_at) return "";
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(view.requested_at)) / 1000));
    if (seconds < 60) return `${seconds} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  function item(view, extra) {
    const li = document.createElement("li");
    li.dataset.testid = "queue-item";
    li.dataset.session = view.session_id;
    li.tabIndex = 0;
    li.setAttribute("role", "button");
    if (view.session_id === state.open) li.classList.add("open");
    const title = document.createElement("strong");
    title.textContent = `${view.channel} · ${view.user_id}`;
    const detail = document.createElement("span");
    detail.className = "detail";
    detail.textContent = extra(view);
    li.append(title, detail);
    // What the bot knows, so an operator can pick up without reading the whole transcript.
    if (view.summary) {
      const gist = document.createElement("span");
      gist.className = "gist";
      gist.dataset.testid = "queue-summary";
      gist.textContent = view.summary;
      li.append(gist);
    }
    const facts = Object.entries(view.facts || {});
    if (facts.length) {
      const known = document.createElement("span");
      known.className = "gist";
      known.dataset.testid = "queue-facts";
      known.textContent = facts.map(([key, value]) => `${key}: ${value}`).join(" · ");
      li.append(known);
    }
    const choose = () => openConversation(view.session_id, view);
    li.addEventListener("click", choose);
    li.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        choose();
      }
    });
    return li;
  }

  function renderQueue() {
    const { waiting, live } = state.queue;
    $("queue-waiting").replaceChildren(
      ...waiting.map((v) => {
        const li = item(v, (view) => `waiting ${waited(view)}${view.reason ? " · " + view.reason : ""}`);
        li.dataset.requestedAt = v.requested_at || "";
        return li;
      }),
    );
    $("queue-live").replaceChildren(...live.map((v) => item(v, (view) => `with ${view.operator}`)));
    $("waiting-count").textContent = String(waiting.length);
    $("live-count").textContent = String(live.length);
    $("waiting-empty").hidden = waiting.length > 0;
  }

  async function loadQueue() {
    await act(async () => {
      state.queue = await api("GET", "/console/api/queue");
      renderQueue();
    });
  }

  // Wait times tick without asking the server.
  setInterval(() => {
    for (const li of $("queue-waiting").children) {
      const view = state.queue.waiting.find((v) => v.session_id === li.dataset.session);
      if (view) li.querySelector(".detail").textContent = `waiting ${waited(view)}${view.reason ? " · " + view.reason : ""}`;
    }
  }, 1000);

  // --- one conversation -----------------------------------------------------------------------

  function findView(sessionId) {
    return [...state.queue.waiting, ...state.queue.live].find((v) => v.session_id === sessionId) || null;
  }

  function addMessage(message) {
    const list = $("transcript");
    if (message.seq != null && list.querySelector(`[data-seq="${message.seq}"]`)) return;
    const li = document.createElement("li");
    li.dataset.testid = "msg";
    li.dataset.author = message.author;
    if (message.seq != null) li.dataset.seq = String(message.seq);
    li.className = ["user", "bot", "system"].includes(message.author) ? message.author : "person";
    const who = document.createElement("span");
    who.className = "author";
    who.textContent = message.author;
    const text = document.createElement("p");
    text.textContent = message.text;
    li.append(who, text);
    list.append(li);
    list.scrollTop = list.scrollHeight;
  }

  function renderConversation(sessionId, transcript, view) {
    const [bot, channel, ...rest] = sessionId.split(":");
    $("conversation").hidden = false;
    $("no-conversation").hidden = true;
    $("conversation-title").textContent = `${channel} · ${view ? view.user_id : rest.join(":")} (${bot})`;
    const mine = view && view.operator === state.me.email;
    const holder = view && view.operator ? ` by ${view.operator}` : "";
    $("conversation-state").textContent = `${transcript.state.replace("_", " ")}${holder}`;
    $("conversation-state").dataset.state = transcript.state;
    $("conversation-summary").textContent = view && view.summary ? view.summary : "";
    const facts = $("conversation-facts");
    facts.replaceChildren();
    for (const [key, value] of Object.entries((view && view.facts) || {})) {
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = value;
      facts.append(dt, dd);
    }
    $("take").hidden = transcript.state === "human";
    $("hand-back").hidden = !(transcript.state === "human" && mine);
    $("close").hidden = !(transcript.state === "human" && mine);
    // Holding it: a reply as a person. Not holding it: a proactive message (if nobody else holds it).
    $("reply-form").hidden = transcript.state === "human" && !mine;
    $("reply-send").textContent = mine ? "Send" : "Send as a new message";
    $("transcript").replaceChildren();
    for (const message of transcript.messages) addMessage(message);
  }

  async function openConversation(sessionId, view) {
    state.open = sessionId;
    await act(async () => {
      const transcript = await api("GET", `/console/api/transcript?session_id=${encodeURIComponent(sessionId)}`);
      if (state.open !== sessionId) return;
      state.openView = findView(sessionId) || view || null;
      renderConversation(sessionId, transcript, state.openView);
      renderQueue();
    });
  }

  const post = (path, body) => api("POST", `/console/api/${path}`, body);

  $("take").addEventListener("click", () =>
    act(async () => {
      await post("take", { session_id: state.open });
      await loadQueue();
      await openConversation(state.open);
    }),
  );
  for (const [id, path] of [["hand-back", "hand-back"], ["close", "close"]]) {
    $(id).addEventListener("click", () =>
      act(async () => {
        await post(path, { session_id: state.open });
        await loadQueue();
        await openConversation(state.open);
      }),
    );
  }

  $("reply-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const box = $("reply-text");
    const text = box.value;
    if (!text.trim()) return;
    const mine = state.openView && state.openView.operator === state.me.email;
    act(async () => {
      const sent = mine
        ? await post("reply", { session_id: state.open, text })
        : await post("outbound", { session_id: state.open, text });
      box.value = "";
      if (sent.message) addMessage(sent.message);
    });
  });
  $("reply-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("reply-form").requestSubmit();
  });

  // --- search ---------------------------------------------------------------------------------

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [key, value] of new FormData(event.target)) if (String(value).trim()) query.set(key, value);
    act(async () => {
      const found = await api("GET", `/console/api/search?${query}`);
      const results = found.results.map((hit) =>
        item(hit, (h) => `${new Date(h.last_at).toLocaleString()} · ${h.snippet}`),
      );
      $("search-results").replaceChildren(...results);
      if (!results.length) notice("No conversation matches.");
    });
  });

  // --- start ----------------------------------------------------------------------------------

  api("GET", "/console/api/me").then(signedIn, () => {});
})();
