/*! relaybot web widget: dependency-free, no build step (ES2019).
 *
 * Embed:  <script src="https://HOST/widget.js" data-bot="support" defer></script>
 * Options (attributes on that script tag):
 *   data-bot    bot name (default "support")
 *   data-title  name shown in the header (default: the bot name, capitalised)
 *   data-open   "true" to start with the panel open, until the user opens or closes it (then their choice
 *               is remembered, so a closed panel stays closed on every later page load)
 *
 * Wire protocol (JSON text frames on ws(s)://HOST/ws?bot=NAME[&token=T&after=SEQ]):
 *   server → {type:"session", session_id, token}        first frame; the token resumes the session later
 *   client → {type:"message", id, text}                 id: client-generated, re-sent unchanged until acked
 *   client → {type:"action", id, action}                a click on a button of the newest reply (same acks/replies)
 *   server → {type:"ack", id, duplicate?}
 *   server → {type:"delta", reply_to, text}             streamed text, appended to a live bubble
 *   server → {type:"reply", reply_to, seq, text, sources?, actions?, card?}  final Markdown; replaces the
 *                                                       live bubble; sources (what the answer cites, also the
 *                                                       text's last paragraph) are shown once, as a small line
 *                                                       under it; actions: buttons [{id,label,style?}] shown as
 *                                                       real <button>s under it, disabled once one is used or a
 *                                                       newer reply arrives (the server takes only the newest offer)
 *   server → {type:"error", code, message, id?}
 *
 * Safety: message text only ever reaches the DOM through textContent / text nodes built by the small
 * Markdown renderer below; never through innerHTML. Everything lives in an open shadow root.
 */
(function () {
  "use strict";

  // Captured synchronously: document.currentScript is null once this first run is over.
  const script = document.currentScript ||
    Array.prototype.slice.call(document.getElementsByTagName("script"))
      .filter(function (s) { return /\/widget\.js(?:[?#]|$)/.test(s.src); }).pop();
  if (!script || window.RelaybotWidget) return; // unknown origin, or already embedded once

  const SERVER = new URL(script.src, location.href);
  const ORIGIN = SERVER.origin;
  const WS_BASE = (SERVER.protocol === "https:" ? "wss://" : "ws://") + SERVER.host;
  const BOT = (script.getAttribute("data-bot") || "support").trim() || "support";
  const TITLE = (script.getAttribute("data-title") || "").trim() ||
    BOT.charAt(0).toUpperCase() + BOT.slice(1);
  const START_OPEN = script.getAttribute("data-open") === "true";

  const STORE_KEY = "relaybot:v1:" + ORIGIN + ":" + BOT;
  const MAX_TRANSCRIPT = 200;
  const MAX_PENDING = 50;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;

  /* ------------------------------------------------------------------ persistence */

  // One JSON document per (server origin, bot). Any script on the host page can write localStorage,
  // so everything read back is type-checked (and rendering is safe whatever the text says).
  function loadState() {
    // panel: "open" | "closed" once the user opened or closed the panel themselves; null before.
    const s = { sessionId: null, token: null, lastSeq: 0, transcript: [], pending: [], panel: null };
    try {
      const raw = JSON.parse(window.localStorage.getItem(STORE_KEY) || "null");
      if (!raw || typeof raw !== "object") return s;
      if (typeof raw.sessionId === "string") s.sessionId = raw.sessionId;
      if (typeof raw.token === "string") s.token = raw.token;
      if (typeof raw.lastSeq === "number" && raw.lastSeq >= 0) s.lastSeq = raw.lastSeq;
      if (raw.panel === "open" || raw.panel === "closed") s.panel = raw.panel;
      if (Array.isArray(raw.transcript)) {
        s.transcript = raw.transcript.filter(function (e) {
          return e && (e.r === "user" || e.r === "bot") && typeof e.t === "string";
        }).slice(-MAX_TRANSCRIPT);
      }
      if (Array.isArray(raw.pending)) {
        s.pending = raw.pending.filter(function (p) {
          return p && typeof p.id === "string" && typeof p.text === "string";
        }).slice(-MAX_PENDING);
      }
    } catch (e) { /* storage disabled or corrupt: start fresh */ }
    return s;
  }

  function saveState() {
    if (state.transcript.length > MAX_TRANSCRIPT) state.transcript = state.transcript.slice(-MAX_TRANSCRIPT);
    for (let tries = 0; tries < 3; tries++) {
      try {
        window.localStorage.setItem(STORE_KEY, JSON.stringify(state));
        return;
      } catch (e) {
        if (!e || e.name !== "QuotaExceededError") return; // storage disabled: keep going in memory only
        // Quota exceeded: keep the newest half of the transcript and try again.
        state.transcript = state.transcript.slice(Math.floor(state.transcript.length / 2));
      }
    }
  }

  const state = loadState();

  function newId() {
    const c = window.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID(); // secure contexts only
    if (c && typeof c.getRandomValues === "function") {
      return Array.prototype.map.call(c.getRandomValues(new Uint8Array(16)), function (b) {
        return (b + 256).toString(16).slice(1);
      }).join("");
    }
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
  }

  /* ------------------------------------------------------------------ DOM helpers */

  function el(tag, attrs) {
    const n = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        const v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "text") n.textContent = v;
        else if (k === "class") n.className = v;
        else n.setAttribute(k, v === true ? "" : String(v));
      });
    }
    for (let i = 2; i < arguments.length; i++) n.append(arguments[i]);
    return n;
  }

  function icon(pathData) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS(NS, "path");
    path.setAttribute("d", pathData);
    svg.append(path);
    return svg;
  }

  const ICON_CHAT = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z";
  const ICON_CLOSE = "M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6l5.6-5.6L5 6.4z";
  const ICON_DOWN = "M6.4 8.6 12 14.2l5.6-5.6L19 10l-7 7-7-7z";

  /* ------------------------------------------------------------------ safe Markdown */

  // Block level: fenced code, bullet / numbered lists (an indented item nested under the one above), headings
  // (rendered as bold lines), paragraphs with hard line breaks. Inline: `code`, [links](http/https/mailto
  // only), bare http(s) URLs, **bold**, __bold__, *italic*, _italic_, backslash escapes. Anything that does
  // not match is literal text.
  const FENCE_RE = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
  const LIST_RE = /^\s{0,3}(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/;
  const HEADING_RE = /^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$/;

  function renderMarkdown(src, into) {
    const lines = String(src).replace(/\r\n?/g, "\n").split("\n");
    let para = null;
    const flushPara = function () {
      if (!para) return;
      const p = el("p");
      para.forEach(function (line, k) {
        if (k) p.append(el("br"));
        renderInline(line, p, false, 0);
      });
      into.append(p);
      para = null;
    };
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = FENCE_RE.exec(line);
      if (fence) {
        flushPara();
        const body = [];
        i++;
        while (i < lines.length && lines[i].trim().indexOf(fence[1]) !== 0) body.push(lines[i++]);
        i++; // the closing fence (an unclosed block runs to the end of the message)
        const code = el("code", { text: body.join("\n"), "data-lang": fence[2] || null });
        into.append(el("pre", null, code));
        continue;
      }
      const item = LIST_RE.exec(line);
      if (item) {
        flushPara();
        const ordered = !item[1];
        const list = el(ordered ? "ol" : "ul");
        if (ordered && Number(item[2]) !== 1) list.setAttribute("start", String(Number(item[2])));
        let li = null;
        while (i < lines.length) {
          const m = LIST_RE.exec(lines[i]);
          if (li && m && /^\s{2}/.test(lines[i])) {
            // An indented item belongs to the item above ("2. Choose the format:" and its formats).
            const nested = el(m[1] ? "ul" : "ol");
            while (i < lines.length && /^\s{2}/.test(lines[i]) && LIST_RE.test(lines[i])) {
              const sub = el("li");
              renderInline(LIST_RE.exec(lines[i])[3], sub, false, 0);
              nested.append(sub);
              i++;
            }
            li.append(nested);
            continue;
          }
          if (m && !m[1] === ordered) {
            li = el("li");
            renderInline(m[3], li, false, 0);
            list.append(li);
          } else if (li && !m && /^\s+\S/.test(lines[i])) {
            li.append(el("br")); // indented continuation line of the previous item
            renderInline(lines[i].trim(), li, false, 0);
          } else {
            break;
          }
          i++;
        }
        into.append(list);
        continue;
      }
      const heading = HEADING_RE.exec(line);
      if (heading) {
        flushPara();
        const strong = el("strong");
        renderInline(heading[1], strong, false, 0);
        into.append(el("p", { class: "heading" }, strong));
      } else if (!line.trim()) {
        flushPara();
      } else {
        (para = para || []).push(line);
      }
      i++;
    }
    flushPara();
  }

  function safeUrl(raw) {
    try {
      const u = new URL(raw); // relative URLs throw: they are not allowed either
      if (u.protocol === "http:" || u.protocol === "https:" || u.protocol === "mailto:") return u.href;
    } catch (e) { /* not a URL */ }
    return null;
  }

  function link(href, parent) {
    const a = el("a", { href: href, target: "_blank", rel: "noopener noreferrer" });
    parent.append(a);
    return a;
  }

  const ESCAPABLE = "\\`*_{}[]()#+-.!<>~|";
  const CODE_RE = /^(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/;
  const LINK_RE = /^\[([^\]\n]+)\]\(\s*<?([^\s<>()]+(?:\([^\s<>()]*\)[^\s<>()]*)*)>?\s*\)/;
  const AUTOLINK_RE = /^https?:\/\/[^\s<>"'`]+/;
  const STRONG_RE = { "*": /^\*\*(?=\S)([\s\S]*?\S)\*\*/, "_": /^__(?=\S)([\s\S]*?\S)__/ };
  const EM_RE = { "*": /^\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)/, "_": /^_(?=[^\s_])([\s\S]*?[^\s_])_(?!_)/ };
  const WORD = /[A-Za-z0-9]/;

  function renderInline(text, parent, inLink, depth) {
    let buf = "";
    const flush = function () { if (buf) { parent.append(document.createTextNode(buf)); buf = ""; } };
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      const prev = i ? text[i - 1] : "";
      const rest = ch === "\\" || ch === "`" || ch === "[" || ch === "*" || ch === "_" || ch === "h" ? text.slice(i) : "";
      let m = null;
      if (ch === "\\" && i + 1 < text.length && ESCAPABLE.indexOf(text[i + 1]) >= 0) {
        buf += text[i + 1];
        i += 2;
        continue;
      }
      if (ch === "`" && (m = CODE_RE.exec(rest))) {
        flush();
        parent.append(el("code", { text: m[2] }));
        i += m[0].length;
        continue;
      }
      if (ch === "[" && !inLink && (m = LINK_RE.exec(rest))) {
        const href = safeUrl(m[2]);
        if (href) {
          flush();
          renderInline(m[1], link(href, parent), true, depth + 1);
          i += m[0].length;
          continue;
        }
      }
      if (ch === "h" && !inLink && !WORD.test(prev) && (m = AUTOLINK_RE.exec(rest))) {
        let url = m[0].replace(/[.,;:!?]+$/, "");
        // Drop a trailing ")" the URL did not open ("(see https://x.y/a)").
        while (url.slice(-1) === ")" && url.split("(").length < url.split(")").length) url = url.slice(0, -1);
        const href = safeUrl(url);
        if (href) {
          flush();
          link(href, parent).textContent = url;
          i += url.length;
          continue;
        }
      }
      if ((ch === "*" || ch === "_") && depth < 12) {
        const intraword = ch === "_" && WORD.test(prev); // snake_case_names stay literal
        const strong = !intraword && STRONG_RE[ch].exec(rest);
        const em = !intraword && !strong && EM_RE[ch].exec(rest);
        m = strong || em;
        if (m && !(ch === "_" && WORD.test(text.charAt(i + m[0].length)))) {
          flush();
          const node = el(strong ? "strong" : "em");
          renderInline(m[1], node, inLink, depth + 1);
          parent.append(node);
          i += m[0].length;
          continue;
        }
      }
      buf += ch;
      i++;
    }
    flush();
  }

  /* ------------------------------------------------------------------ styles */

  const CSS = [
    // The host resets inherited page styles; !important on :host beats page rules aimed at the host element.
    ":host{all:initial !important;display:block !important;position:static !important}[hidden]{display:none !important}",
    ".root{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:#0f172a}",
    ".root *,.root *::before,.root *::after{box-sizing:border-box}button,textarea{font:inherit;color:inherit;margin:0}",
    ".sr{position:absolute!important;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}",
    ".launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:60px;height:60px;border:0;border-radius:50%;",
    " background:#4338ca;color:#fff;cursor:pointer;display:grid;place-items:center;box-shadow:0 8px 24px rgba(30,27,75,.35);",
    " transition:transform .15s ease,background .15s ease}",
    ".launcher:hover{background:#3730a3;transform:translateY(-2px)}.launcher svg{width:28px;height:28px;fill:currentColor}",
    ".launcher.unread::after{content:'';position:absolute;top:6px;right:6px;width:14px;height:14px;border-radius:50%;background:#dc2626;border:2px solid #fff}",
    ".panel{position:fixed;right:20px;bottom:92px;z-index:2147483000;width:380px;height:min(620px,calc(100vh - 120px));",
    " display:flex;flex-direction:column;background:#fff;border-radius:16px;overflow:hidden;animation:rb-in .18s ease-out;",
    " box-shadow:0 18px 50px rgba(15,23,42,.28),0 0 0 1px rgba(15,23,42,.06)}",
    "@keyframes rb-in{from{opacity:0;transform:translateY(12px) scale(.98)}}",
    ".header{display:flex;align-items:center;gap:12px;padding:14px 14px 14px 18px;color:#fff;background:linear-gradient(135deg,#4338ca,#3730a3)}",
    ".avatar{flex:none;width:36px;height:36px;border-radius:50%;background:rgba(255,255,255,.18);display:grid;place-items:center;font-weight:700}",
    ".titles{flex:1;min-width:0}.title{margin:0;font-size:16px;font-weight:650;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}",
    ".subtitle{font-size:12.5px;opacity:.92;display:flex;align-items:center;gap:6px}",
    ".dot{width:8px;height:8px;border-radius:50%;background:#cbd5e1}.root[data-connection=online] .dot{background:#4ade80}",
    ".close{flex:none;width:36px;height:36px;border:0;border-radius:10px;background:transparent;color:#fff;cursor:pointer;display:grid;place-items:center}",
    ".close:hover{background:rgba(255,255,255,.16)}.close svg{width:22px;height:22px;fill:currentColor}",
    ".log{flex:1;overflow-y:auto;overscroll-behavior:contain;padding:16px 14px 8px;background:#f8fafc;display:flex;flex-direction:column;gap:10px}",
    ".empty{margin:auto 12px;text-align:center;color:#475569;font-size:14px}",
    ".msg{display:flex;flex-direction:column;max-width:85%}.msg.system{align-self:center;max-width:92%}",
    ".msg.user{align-self:flex-end;align-items:flex-end}.msg.bot{align-self:flex-start;align-items:flex-start}",
    ".bubble{position:relative;padding:9px 13px;border-radius:16px;overflow-wrap:anywhere;min-width:0;max-width:100%}",
    ".user .bubble{background:#4338ca;color:#fff;border-bottom-right-radius:5px}",
    ".bot .bubble{background:#fff;color:#0f172a;border:1px solid #e2e8f0;border-bottom-left-radius:5px}",
    ".system .bubble{background:#fef3c7;color:#78350f;font-size:13px;border-radius:10px;padding:6px 10px;text-align:center}",
    // Speaker names for screen readers, as generated content so they stay out of the message's own text.
    ".user .bubble::before{content:'You: '}.bot .bubble::before{content:'Assistant: '}.system .bubble::before{content:'Note: '}",
    ".bubble::before{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}",
    ".msg[data-state=pending] .bubble{opacity:.75}.msg[data-state=streaming] .bubble{white-space:pre-wrap}",
    ".msg[data-state=pending]::after{content:'Sending\\2026';font-size:12px;color:#475569;margin-top:3px}",
    ".msg[data-state=failed]::after{content:'Not delivered';font-size:12px;color:#b91c1c;margin-top:3px}",
    ".bubble .sources{font-size:12px;color:#475569}.bubble .sources a{color:inherit;text-decoration:underline}.sources-label{font-weight:600}",
    ".choices{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px}",
    ".choice{min-height:36px;padding:6px 12px;border:1px solid #4338ca;border-radius:18px;background:#fff;color:#3730a3;font:inherit;font-size:14px;cursor:pointer}",
    ".choice:hover:not(:disabled){background:#eef2ff}.choice.primary{background:#4338ca;color:#fff}.choice.danger{border-color:#b91c1c;color:#b91c1c}",
    ".choice:disabled{cursor:default;opacity:.55}.choice[aria-pressed=true]{opacity:1;background:#e0e7ff;color:#1e1b4b;border-color:#1e1b4b}",
    ".choice:focus-visible{outline:3px solid #4338ca;outline-offset:2px}",
    ".card{margin-top:6px;padding:10px 12px;border:1px solid #e2e8f0;border-radius:12px;background:#fff;max-width:100%}",
    ".card .card-title{margin:0;font-weight:650}.card img{max-width:100%;border-radius:8px}.card dl{margin:6px 0 0;display:grid;grid-template-columns:auto 1fr;gap:2px 10px;font-size:14px}",
    ".card dt{color:#475569}.card dd{margin:0}",
    ".bubble>*{margin:0}.bubble>*+*{margin-top:8px}.bubble ul,.bubble ol{padding-left:22px}.bubble li+li{margin-top:2px}",
    ".bubble code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:rgba(15,23,42,.07);padding:1px 5px;border-radius:5px}",
    ".bubble pre{padding:10px 12px;background:#0f172a;color:#e2e8f0;border-radius:10px;overflow-x:auto}",
    ".bubble pre code{background:none;padding:0;color:inherit;white-space:pre}.user .bubble code{background:rgba(255,255,255,.18)}",
    ".bubble a{color:#3730a3;text-decoration:underline;text-underline-offset:2px}.user .bubble a{color:#fff}",
    ".typing{align-self:flex-start;display:flex;gap:4px;padding:12px 14px;background:#fff;border:1px solid #e2e8f0;border-radius:16px 16px 16px 5px}",
    ".typing i{width:7px;height:7px;border-radius:50%;background:#64748b;animation:rb-dot 1.2s infinite ease-in-out}",
    ".typing i:nth-child(2){animation-delay:.15s}.typing i:nth-child(3){animation-delay:.3s}",
    "@keyframes rb-dot{0%,60%,100%{transform:translateY(0);opacity:.5}30%{transform:translateY(-4px);opacity:1}}",
    ".status{font-size:12.5px;color:#78350f;background:#fef3c7;text-align:center}.status:not(:empty){padding:5px 12px;border-top:1px solid #fde68a}",
    ".composer{display:flex;align-items:flex-end;gap:8px;padding:10px 12px;border-top:1px solid #e2e8f0;background:#fff}",
    ".input{flex:1;resize:none;min-height:42px;max-height:140px;padding:10px 12px;border:1px solid #94a3b8;border-radius:12px;",
    " background:#fff;color:#0f172a;line-height:1.4;outline:none}.input::placeholder{color:#64748b}",
    ".input:focus{border-color:#4338ca;box-shadow:0 0 0 3px rgba(67,56,202,.35)}",
    ".send{flex:none;height:42px;padding:0 16px;border:0;border-radius:12px;background:#4338ca;color:#fff;font-weight:600;cursor:pointer}",
    ".send:hover{background:#3730a3}.footer{padding:0 12px 8px;background:#fff;text-align:center;font-size:11.5px;color:#64748b}",
    // Visible focus: a white ring inside indigo controls, an indigo ring on white surfaces.
    ".launcher:focus-visible,.send:focus-visible,.close:focus-visible{outline:3px solid #fff;outline-offset:-6px}",
    ".launcher:focus-visible{box-shadow:0 0 0 3px #1e1b4b,0 8px 24px rgba(30,27,75,.35)}",
    ".bubble a:focus-visible,.log:focus-visible{outline:3px solid #4338ca;outline-offset:2px}.user .bubble a:focus-visible{outline-color:#fff}",
    // Phones: the open panel takes the whole viewport; 16px text stops iOS from zooming into the field.
    "@media (max-width:480px){.panel{top:0;left:0;right:0;bottom:0;width:100%;height:100%;border-radius:0}",
    " .root.open .launcher{display:none}.input{font-size:16px}}",
    "@media (prefers-reduced-motion:reduce){.panel,.typing i{animation:none}.launcher{transition:none}}",
  ].join("\n");

  /* ------------------------------------------------------------------ UI */

  // A page may provide its own <div id="relaybot-widget"> (e.g. to control stacking); otherwise we add one.
  let host = document.getElementById("relaybot-widget");
  if (!host || host.shadowRoot) host = el("div", { id: "relaybot-widget" });
  if (!host.isConnected) {
    const mount = function () { document.body.append(host); };
    if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
  }
  const shadow = host.attachShadow({ mode: "open" });
  const root = el("div", { class: "root", "data-connection": "connecting" });
  // A constructed stylesheet is CSSOM, so a host page's CSP without 'unsafe-inline' styles cannot block it.
  let sheet = null;
  try {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } catch (e) {
    sheet = null;
  }
  if (!sheet) shadow.append(el("style", { text: CSS }));
  shadow.append(root);

  const panelId = "rb-panel";
  const launcher = el("button", {
    type: "button", class: "launcher", "data-testid": "rb-launcher",
    "aria-label": "Chat with " + TITLE, "aria-expanded": "false", "aria-controls": panelId,
  }, icon(ICON_CHAT));

  const log = el("div", {
    class: "log", role: "log", "aria-live": "polite", "aria-label": "Conversation", tabindex: "0", "data-testid": "rb-log",
  });
  const empty = el("p", { class: "empty", text: "Hi! Ask a question and the assistant will answer here." });
  const typing = el("div", { class: "typing", "data-testid": "rb-typing", hidden: true },
    el("i"), el("i"), el("i"), el("span", { class: "sr", text: "Assistant is typing" }));
  log.append(empty, typing);

  const status = el("div", { class: "status", role: "status", "data-testid": "rb-status", "data-connection": "connecting" });
  const subtitleText = el("span", { text: "Connecting\u2026" });
  const closeBtn = el("button", { type: "button", class: "close", "aria-label": "Close chat" }, icon(ICON_CLOSE));
  const inputId = "rb-input";
  const input = el("textarea", {
    id: inputId, class: "input", rows: "1", placeholder: "Type your message\u2026", "data-testid": "rb-input",
    autocomplete: "off", enterkeyhint: "send",
  });
  const sendBtn = el("button", { type: "button", class: "send", "data-testid": "rb-send", text: "Send" });

  const panel = el("section", {
    id: panelId, class: "panel", role: "dialog", "aria-label": "Chat with " + TITLE, "data-testid": "rb-panel", hidden: true,
  },
  el("div", { class: "header" },
    el("div", { class: "avatar", "aria-hidden": "true", text: TITLE.charAt(0).toUpperCase() }),
    el("div", { class: "titles" },
      el("h2", { class: "title", text: TITLE }),
      el("div", { class: "subtitle" }, el("span", { class: "dot", "aria-hidden": "true" }), subtitleText)),
    closeBtn),
  log,
  status,
  el("div", { class: "composer" },
    el("label", { class: "sr", for: inputId, text: "Message to " + TITLE + " (Enter sends, Shift+Enter adds a line)" }),
    input, sendBtn),
  el("div", { class: "footer", text: "Powered by relaybot" }));

  root.append(panel, launcher);

  /* ------------------------------------------------------------------ messages in the log */

  const userBubbles = new Map(); // client id → user message element (for ack / failure state)
  const live = new Map();        // reply_to → {node, text} of a streaming bot bubble
  const waiting = new Map();     // client id → timer, for messages whose answer has not started yet
  const TYPING_TIMEOUT_MS = 90000; // an answer that never comes must not leave the dots up forever

  function nearBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 80; }

  function appendToLog(node, force) {
    const stick = force || nearBottom();
    empty.hidden = true;
    log.insertBefore(node, typing); // the typing indicator stays last
    if (stick) log.scrollTop = log.scrollHeight;
  }

  const SOURCES_PARAGRAPH = "\n\nSources: ";

  function messageNode(role, text, stateAttr, sources) {
    const bubble = el("div", { class: "bubble" });
    const listed = Array.isArray(sources) && sources.length > 0;
    // The reply's text ends with the same list as `sources` (for channels that show only text): here it is
    // shown once, as the small line below, with titles that have a URL as links.
    const at = listed ? text.lastIndexOf(SOURCES_PARAGRAPH) : -1;
    renderMarkdown(at >= 0 ? text.slice(0, at) : text, bubble);
    if (listed) {
      const line = el("p", { class: "sources", "data-testid": "rb-sources" }, el("span", { class: "sources-label", text: "Sources: " }));
      sources.forEach(function (source, k) {
        if (k) line.append(document.createTextNode(" \u00b7 "));
        renderInline(source, line, false, 0);
      });
      bubble.append(line);
    }
    return el("div", { class: "msg " + role, "data-testid": "rb-msg", "data-role": role, "data-state": stateAttr || null }, bubble);
  }

  /* Buttons the bot offered. Only the newest reply's are live (the server checks a click against its
     session's newest offer): older ones are disabled, and so are all once one is used. */
  function validButtons(list) {
    return Array.isArray(list) ? list.filter(function (b) {
      return b && typeof b.id === "string" && typeof b.label === "string";
    }).slice(0, 10) : [];
  }

  function choicesNode(buttons, entry) {
    const group = el("div", { class: "choices", role: "group", "aria-label": "Suggested answers" });
    buttons.forEach(function (b) {
      const chosen = entry.chose === b.id;
      const button = el("button", {
        type: "button",
        class: "choice" + (b.style === "primary" || b.style === "danger" ? " " + b.style : ""),
        "data-testid": "rb-choice",
        "data-action": b.id,
        "aria-pressed": chosen ? "true" : null,
        disabled: entry.used ? true : null,
        text: b.label,
      });
      button.addEventListener("click", function () { choose(entry, b); });
      group.append(button);
    });
    return group;
  }

  function cardNode(card, entry) {
    if (!card || typeof card !== "object" || typeof card.title !== "string") return null;
    const box = el("section", { class: "card", "data-testid": "rb-card", "aria-label": card.title },
      el("p", { class: "card-title", text: card.title }));
    if (typeof card.image_url === "string" && /^https?:\/\//.test(card.image_url)) {
      box.append(el("img", { src: card.image_url, alt: card.title, loading: "lazy" }));
    }
    if (typeof card.text === "string" && card.text) {
      const text = el("div");
      renderMarkdown(card.text, text);
      box.append(text);
    }
    const fields = Array.isArray(card.fields) ? card.fields.filter(function (f) {
      return f && typeof f.label === "string" && typeof f.value === "string";
    }) : [];
    if (fields.length) {
      const list = el("dl");
      fields.forEach(function (f) { list.append(el("dt", { text: f.label }), el("dd", { text: f.value })); });
      box.append(list);
    }
    const buttons = validButtons(card.actions);
    if (buttons.length) box.append(choicesNode(buttons, entry));
    return box;
  }

  function decorate(node, entry) {
    if (entry.r !== "bot") return node;
    const card = cardNode(entry.card, entry);
    if (card) node.append(card);
    const buttons = validButtons(entry.a);
    if (buttons.length) node.append(choicesNode(buttons, entry));
    return node;
  }

  function retireChoices() {
    state.transcript.forEach(function (e) { if (e.a || e.card) e.used = true; });
    Array.prototype.slice.call(log.querySelectorAll(".choice")).forEach(function (b) { b.disabled = true; });
  }

  function choose(entry, button) {
    if (entry.used) return;
    retireChoices();
    entry.chose = button.id;
    const pressed = log.querySelectorAll(".choice");
    Array.prototype.forEach.call(pressed, function (b) {
      if (b.getAttribute("data-action") === button.id && b.closest(".msg") === entry.node) b.setAttribute("aria-pressed", "true");
    });
    send(button.label, button.id);
    input.focus(); // the pressed button is disabled now: keep keyboard focus somewhere useful
  }

  function addEntry(entry, stateAttr, force) {
    const node = decorate(messageNode(entry.r, entry.t, stateAttr, entry.src), entry);
    if (entry.r === "bot") Object.defineProperty(entry, "node", { value: node, enumerable: false, configurable: true });
    if (entry.r === "user" && entry.id) userBubbles.set(entry.id, node);
    appendToLog(node, force);
    return node;
  }

  function systemNote(text) { appendToLog(messageNode("system", text), false); }

  function remember(entry) {
    state.transcript.push(entry);
    saveState();
  }

  function startWaiting(id) {
    waiting.set(id, setTimeout(function () { stopWaiting(id); }, TYPING_TIMEOUT_MS));
    updateTyping();
  }

  function stopWaiting(id) {
    clearTimeout(waiting.get(id));
    waiting.delete(id);
    updateTyping();
  }

  function updateTyping() {
    const show = waiting.size > 0;
    if (typing.hidden === !show) return;
    const stick = nearBottom();
    typing.hidden = !show;
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function markUnread() {
    if (!isOpen()) {
      launcher.classList.add("unread");
      launcher.setAttribute("aria-label", "Chat with " + TITLE + " (new message)");
    }
  }

  /* ------------------------------------------------------------------ connection */

  let ws = null;
  let ready = false;      // a session frame arrived on the current socket
  let attempt = 0;
  let retryTimer = null;
  let everOnline = false;
  let onlineSince = 0;
  const inflight = new Set(); // ids sent on the current socket and not yet acked

  function setConnection(kind) {
    root.setAttribute("data-connection", kind);
    status.setAttribute("data-connection", kind);
    status.textContent = kind === "reconnecting" ? "Reconnecting\u2026" : "";
    // "Connected", not "Online": the bot itself may be in offline mode (no language model), and the header
    // must not contradict what the bot says about itself.
    subtitleText.textContent =
      kind === "online" ? "Connected" : kind === "reconnecting" ? "Disconnected" : "Connecting\u2026";
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (ws) return;
    const q = new URLSearchParams({ bot: BOT });
    if (state.token) {
      q.set("token", state.token);
      q.set("after", String(state.lastSeq));
    }
    let sock;
    try {
      sock = new WebSocket(WS_BASE + "/ws?" + q.toString());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    ready = false;
    sock.onmessage = function (ev) {
      if (ws !== sock || typeof ev.data !== "string") return;
      let frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame && typeof frame === "object") handleFrame(frame);
    };
    sock.onclose = function (ev) {
      if (ws !== sock) return;
      ws = null;
      ready = false;
      // 1009: a frame was over the server's size limit. Re-sending it would close every new socket too,
      // so give up on the largest message in flight (one at a time, in case several were queued).
      if (ev.code === 1009 && inflight.size) {
        const biggest = state.pending.filter(function (p) { return inflight.has(p.id); })
          .sort(function (a, b) { return b.text.length - a.text.length; })[0];
        if (biggest) {
          stopWaiting(biggest.id);
          settle(biggest.id, "failed");
          systemNote("That message is too long to send. Please shorten it.");
        }
      }
      inflight.clear();
      // A connection that drops right after opening must not reset the backoff (no fast reconnect loop).
      if (onlineSince && Date.now() - onlineSince > 10000) attempt = 0;
      onlineSince = 0;
      scheduleReconnect();
    };
    sock.onerror = function () { /* a close event always follows */ };
  }

  function scheduleReconnect() {
    if (retryTimer) return;
    // Exponential backoff with jitter: 0.5 s, 1 s, 2 s … capped at 15 s, each scaled by 50–100 %.
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    attempt++;
    setConnection(everOnline || attempt > 1 ? "reconnecting" : "connecting");
    retryTimer = setTimeout(connect, base / 2 + Math.random() * base / 2);
  }

  function reconnectNow() {
    if (!ws && retryTimer) connect();
  }

  function transmit(id, text, action) {
    if (!ws || !ready) return; // stays pending; sent again after the next session frame
    try {
      const frame = typeof action === "string" ? { type: "action", id: id, action: action } : { type: "message", id: id, text: text };
      ws.send(JSON.stringify(frame));
      inflight.add(id);
    } catch (e) { /* socket closing */ }
  }

  function handleFrame(f) {
    switch (f.type) {
      case "session": return onSession(f);
      case "ack": return onAck(f);
      case "delta": return onDelta(f);
      case "reply": return onReply(f);
      case "error": return onError(f);
      default: return undefined; // newer server, older widget: ignore unknown frames
    }
  }

  function onSession(f) {
    const sid = typeof f.session_id === "string" ? f.session_id : String(f.session_id || "");
    if (state.sessionId && sid && sid !== state.sessionId) {
      // The server started a new session (token expired or unknown): its sequence numbers start over.
      state.lastSeq = 0;
      if (state.transcript.length) systemNote("A new conversation has started.");
    }
    state.sessionId = sid || state.sessionId;
    if (typeof f.token === "string" && f.token) state.token = f.token;
    saveState();
    ready = true;
    everOnline = true;
    onlineSince = Date.now();
    setConnection("online");
    state.pending.forEach(function (p) { transmit(p.id, p.text, p.action); }); // same ids: the server dedupes
  }

  function settle(id, stateAttr) {
    inflight.delete(id);
    const idx = state.pending.findIndex(function (p) { return p.id === id; });
    if (idx >= 0) {
      state.pending.splice(idx, 1);
      saveState();
    }
    if (stateAttr === "failed") {
      state.transcript.forEach(function (e) { if (e.id === id) e.failed = true; });
      saveState();
    }
    const node = userBubbles.get(id);
    if (node) {
      if (stateAttr) node.setAttribute("data-state", stateAttr);
      else node.removeAttribute("data-state");
    }
  }

  function onAck(f) {
    if (typeof f.id === "string") settle(f.id, null);
  }

  function onDelta(f) {
    const id = f.reply_to;
    if (typeof id !== "string" || typeof f.text !== "string") return;
    let bubble = live.get(id);
    if (!bubble) {
      const done = state.transcript.some(function (e) { return e.r === "bot" && e.re === id; });
      if (done) return; // a late delta for an answer that is already final
      const node = messageNode("bot", "", "streaming");
      const text = document.createTextNode("");
      node.firstChild.append(text);
      node.setAttribute("aria-busy", "true"); // announce once, when complete
      appendToLog(node, false);
      bubble = { node: node, text: text };
      live.set(id, bubble);
    }
    stopWaiting(id);
    const stick = nearBottom();
    bubble.text.data += f.text;
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function onReply(f) {
    if (typeof f.text !== "string") return;
    if (typeof f.seq === "number") {
      if (f.seq <= state.lastSeq) {
        // Already shown (replayed after a resume, or adopted from another tab's storage).
        const stale = live.get(f.reply_to);
        if (stale) { stale.node.remove(); live.delete(f.reply_to); }
        stopWaiting(f.reply_to);
        return;
      }
      state.lastSeq = f.seq;
    }
    const id = typeof f.reply_to === "string" ? f.reply_to : null;
    const entry = { r: "bot", t: f.text, re: id, s: typeof f.seq === "number" ? f.seq : null };
    const sources = Array.isArray(f.sources) ? f.sources.filter(function (x) { return typeof x === "string"; }) : [];
    if (sources.length) entry.src = sources;
    const buttons = validButtons(f.actions);
    if (buttons.length) entry.a = buttons;
    if (f.card && typeof f.card === "object") entry.card = f.card;
    retireChoices(); // a newer reply: the server no longer takes the older offers
    if (id) {
      stopWaiting(id);
      settle(id, null); // a reply implies the message arrived, even if its ack was lost
    }
    const bubble = id && live.get(id);
    if (bubble) {
      live.delete(id);
      const fresh = decorate(messageNode("bot", f.text, null, entry.src), entry);
      Object.defineProperty(entry, "node", { value: fresh, enumerable: false, configurable: true });
      const stick = nearBottom();
      bubble.node.replaceWith(fresh);
      if (stick) log.scrollTop = log.scrollHeight;
    } else {
      addEntry(entry, null, false);
    }
    remember(entry);
    markUnread();
  }

  function onError(f) {
    const message = typeof f.message === "string" && f.message ? f.message : "Something went wrong (" + (f.code || "error") + ").";
    if (typeof f.id === "string") {
      // The server refused this message (e.g. text_too_long): re-sending it would fail the same way.
      stopWaiting(f.id);
      settle(f.id, "failed");
    }
    systemNote(message);
  }

  /* ------------------------------------------------------------------ user actions */

  function send(raw, action) {
    const text = String(raw).replace(/\s+$/, "");
    if (!text.trim()) return false;
    const id = newId();
    const entry = { r: "user", t: text, id: id };
    const pending = { id: id, text: text };
    if (typeof action === "string") pending.action = action;
    state.pending.push(pending);
    if (state.pending.length > MAX_PENDING) state.pending.shift();
    remember(entry);
    addEntry(entry, "pending", true);
    startWaiting(id);
    if (ws && ready) transmit(id, text, pending.action);
    else reconnectNow(); // queued; sent when the socket is back
    return true;
  }

  function submit() {
    if (send(input.value)) {
      input.value = "";
      autosize();
    }
    input.focus();
  }

  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 140) + "px";
  }

  function isOpen() { return !panel.hidden; }

  function open(focusInput) {
    panel.hidden = false;
    root.classList.add("open");
    launcher.setAttribute("aria-expanded", "true");
    launcher.replaceChild(icon(ICON_DOWN), launcher.firstChild);
    launcher.classList.remove("unread");
    launcher.setAttribute("aria-label", "Chat with " + TITLE);
    log.scrollTop = log.scrollHeight;
    if (focusInput) input.focus();
  }

  function close(focusLauncher) {
    panel.hidden = true;
    root.classList.remove("open");
    launcher.setAttribute("aria-expanded", "false");
    launcher.replaceChild(icon(ICON_CHAT), launcher.firstChild);
    if (focusLauncher) launcher.focus();
  }

  // Only the user's own gestures are remembered: data-open and the host page's RelaybotWidget calls are
  // the site's wish, and must not override a user who closed the panel (on a phone it covers the page).
  function rememberPanel(panelState) {
    state.panel = panelState;
    saveState();
  }

  launcher.addEventListener("click", function () {
    if (isOpen()) { close(false); rememberPanel("closed"); } else { open(true); rememberPanel("open"); }
  });
  closeBtn.addEventListener("click", function () { close(true); rememberPanel("closed"); });
  sendBtn.addEventListener("click", submit);
  input.addEventListener("input", autosize);
  input.addEventListener("keydown", function (ev) {
    // Enter sends; Shift+Enter inserts a newline; never while an IME composition is in progress.
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
      ev.preventDefault();
      submit();
    }
  });
  root.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && !ev.isComposing && isOpen()) {
      ev.preventDefault();
      ev.stopPropagation();
      close(true);
      rememberPanel("closed");
    }
  });
  window.addEventListener("online", reconnectNow);

  /* ------------------------------------------------------------------ start */

  function renderTranscript() {
    state.transcript.forEach(function (e) { addEntry(e, e.failed ? "failed" : null, true); });
    state.pending.forEach(function (p) {
      const node = userBubbles.get(p.id);
      if (node) node.setAttribute("data-state", "pending");
    });
  }

  // Another tab of this site wrote the same conversation: adopt its state so neither tab's save drops the
  // other's messages. Replies reach every open tab of a session, so the transcripts agree.
  window.addEventListener("storage", function (ev) {
    if (ev.key !== STORE_KEY || ev.storageArea !== window.localStorage) return;
    const fresh = loadState();
    // Another tab moved to a new session: keep ours rather than mix two conversations' sequence numbers.
    if (fresh.sessionId && state.sessionId && fresh.sessionId !== state.sessionId) return;
    Object.assign(state, fresh);
    Array.prototype.slice.call(log.querySelectorAll(".msg:not([data-state=streaming])")).forEach(function (n) { n.remove(); });
    userBubbles.clear();
    renderTranscript();
    live.forEach(function (bubble, id) {
      const done = state.transcript.some(function (e) { return e.r === "bot" && e.re === id; });
      if (done) { bubble.node.remove(); live.delete(id); } else { appendToLog(bubble.node, false); }
    });
    empty.hidden = !log.querySelector(".msg");
  });

  renderTranscript();
  if (state.panel === "open" || (state.panel === null && START_OPEN)) open(false);
  connect();

  // Optional handle for host pages and tests; the only global this script defines.
  window.RelaybotWidget = Object.freeze({
    open: function () { open(true); },
    close: function () { close(false); },
    toggle: function () { if (isOpen()) close(false); else open(true); },
    send: function (text) { return send(text); },
    /** Forget this conversation (token, transcript, queue) and start a new session. */
    reset: function () {
      try { window.localStorage.removeItem(STORE_KEY); } catch (e) { /* ignore */ }
      state.sessionId = null; state.token = null; state.lastSeq = 0; state.transcript = []; state.pending = [];
      Array.prototype.slice.call(log.querySelectorAll(".msg")).forEach(function (n) { n.remove(); });
      userBubbles.clear(); live.clear(); inflight.clear();
      waiting.forEach(function (timer) { clearTimeout(timer); });
      waiting.clear(); updateTyping();
      empty.hidden = false;
      if (ws) { const s = ws; ws = null; ready = false; s.close(); }
      attempt = 0;
      connect();
    },
    storageKey: STORE_KEY,
  });
})();
