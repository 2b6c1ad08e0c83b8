// The edge dashboard: reads the admin listener's /api/... and draws it.
// Values go into the page as text only, never as markup.
"use strict";
(function () {
  const tokenKey = "edge-admin-token";
  const $ = (id) => document.getElementById(id);
  let redraws = 0;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function shortID(s) {
    return [...s].length > 10 ? [...s].slice(0, 4).join("") + "…" + [...s].slice(-4).join("") : s;
  }
  function num(v, digits) {
    return Number(v || 0).toFixed(digits === undefined ? 1 : digits);
  }
  function when(s) {
    if (!s || s.startsWith("0001-")) return "–";
    const d = new Date(s);
    return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }
  function duration(secs) {
    const d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60);
    return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m " + Math.floor(secs % 60) + "s";
  }
  function table(id, head, rows) {
    const t = $(id);
    t.replaceChildren();
    const tr = el("tr");
    head.forEach((h) => tr.append(el("th", h)));
    t.append(tr);
    if (!rows.length) {
      const r = el("tr"), td = el("td", "none", "mute");
      td.colSpan = head.length;
      r.append(td);
      t.append(r);
    }
    rows.forEach((cells) => {
      const r = el("tr");
      cells.forEach((c) => r.append(c instanceof Node ? wrap(c) : el("td", c)));
      t.append(r);
    });
  }
  function wrap(node) {
    if (node.tagName === "TD") return node;
    const td = el("td");
    td.append(node);
    return td;
  }

  async function api(method, path) {
    const headers = {};
    const tok = sessionStorage.getItem(tokenKey);
    if (tok) headers.Authorization = "Bearer " + tok;
    const resp = await fetch(path, { method, headers, cache: "no-store" });
    if (resp.status === 401) {
      $("login").hidden = false;
      throw new Error("the admin listener wants its admin_token");
    }
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.msg || body.error || resp.statusText);
    return body;
  }

  function overview(o) {
    const f = $("facts");
    f.replaceChildren();
    const add = (k, v, cls) => {
      const d = el("div", null, k === "config" ? "wide" : "");
      d.append(el("dt", k), el("dd", v, cls));
      f.append(d);
    };
    add("version", o.version);
    add("uptime", duration(o.uptime_seconds));
    add("req/s (1 min)", num(o.traffic.rps));
    add("5xx (1 min)", num(o.traffic.error_rate * 100) + " %", o.traffic.error_rate > 0.01 ? "bad" : "");
    add("p50 / p99", num(o.traffic.p50_ms) + " / " + num(o.traffic.p99_ms) + " ms");
    add("targets up", o.targets_up + " / " + o.targets, o.targets_up < o.targets ? "bad" : "ok");
    add("routes", o.routes);
    add("bans", o.bans);
    add("config", o.config);
    const r = $("reload"), lr = o.last_reload;
    r.replaceChildren(el("p", "Last config load: " + lr.result + " (" + lr.trigger + ") at " + when(lr.at), lr.result === "failed" ? "bad" : ""));
    if (lr.problems && lr.problems.length) {
      const ul = el("ul", null, "bad");
      lr.problems.forEach((p) => ul.append(el("li", p)));
      r.append(ul);
    }
  }

  function chart(tr) {
    const c = $("chart"), ctx = c.getContext("2d");
    const w = c.width = c.clientWidth * (window.devicePixelRatio || 1) || 600;
    const h = c.height = 160 * (window.devicePixelRatio || 1);
    const pts = tr.points;
    ctx.clearRect(0, 0, w, h);
    c.dataset.points = String(pts.length);
    c.dataset.redraws = String(++redraws);
    $("chartnote").textContent = "· last " + pts.length + " s";
    if (pts.length < 2) return;
    const maxR = Math.max(1, ...pts.map((p) => p.requests));
    const maxL = Math.max(1, ...pts.map((p) => p.p99_ms));
    const x = (i) => i * (w - 1) / (pts.length - 1);
    // The top line holds the scale's label, clear of the lines.
    const span = h - 4 - 14 * (window.devicePixelRatio || 1);
    const line = (color, y) => {
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(x(i), y(p)) : ctx.moveTo(x(i), y(p))));
      ctx.stroke();
    };
    line("#b8860b", (p) => h - 2 - p.p99_ms / maxL * span);
    line("#c0362c", (p) => h - 2 - p.requests * p.error_rate / maxR * span);
    line("#0b62c4", (p) => h - 2 - p.requests / maxR * span);
    ctx.fillStyle = "#667";
    ctx.font = 11 * (window.devicePixelRatio || 1) + "px sans-serif";
    ctx.fillText(maxR + " req/s, p99 " + num(maxL) + " ms max", 4, 12 * (window.devicePixelRatio || 1));
  }

  function routes(list) {
    table("routes-table", ["route", "hosts", "match", "methods", "auth", "limits", "answer", "req/s", "2xx", "3xx", "4xx", "5xx"],
      list.map((r) => [el("td", r.name, "name"), r.hosts.join(" ") || "any", r.match, r.methods.join(" ") || "any",
        r.auth || "–", r.limits.join(" ") || "–", r.answer, num(r.live.rps),
        r.live.classes["2xx"] || 0, r.live.classes["3xx"] || 0, r.live.classes["4xx"] || 0,
        el("td", r.live.classes["5xx"] || 0, r.live.classes["5xx"] ? "bad" : "")]));
  }

  // subTable appends a table of its own to box: an upstream has two.
  function subTable(box, head, rows) {
    const t = el("table"), d = el("div", null, "scroll");
    t.id = "t-" + box.children.length;
    d.append(t);
    box.append(d);
    table(t.id, head, rows);
  }

  function upstreams(list) {
    const box = $("upstreams-list");
    box.replaceChildren();
    if (!list.length) box.append(el("p", "no upstreams", "mute"));
    list.forEach((u) => {
      box.append(el("h3", u.name + (u.deploying ? " (deploying)" : "")));
      subTable(box, ["target", "health", "in flight", "latency", "passive failures"],
        u.targets.map((x) => [el("td", x.addr, "addr"), el("td", x.healthy ? "up" : "down", x.healthy ? "ok" : "bad"),
          x.in_flight, num(x.latency_ms) + " ms", x.passive_failures]));
      if (u.instances && u.instances.length) {
        subTable(box, ["instance", "version", "state", "pid", "restarts"],
          u.instances.map((i) => [i.instance, "v" + i.version, i.state, i.pid || "–", i.restarts]));
      }
    });
  }

  function liftButton(b) {
    const btn = el("button", "lift", "lift");
    btn.addEventListener("click", async () => {
      if (btn.dataset.confirm !== "1") {
        btn.dataset.confirm = "1";
        btn.textContent = "confirm lift";
        btn.className = "danger";
        setTimeout(() => { btn.dataset.confirm = ""; btn.textContent = "lift"; btn.className = "lift"; }, 5000);
        return;
      }
      btn.disabled = true;
      try {
        await api("DELETE", "/bans/" + encodeURIComponent(b.kind) + "/" + encodeURIComponent(b.key));
        await refresh();
      } catch (e) {
        showError(e);
      }
    });
    return btn;
  }

  function security(s) {
    table("bans-table", ["who", "why", "until", ""],
      s.bans.map((b) => [el("td", b.kind + " " + (b.kind === "openid" ? shortID(b.key) : b.key), "who"), b.reason || "–", when(b.expires), liftButton(b)]));
    table("limited-table", ["who", "refused"], s.top_limited.map((k) => [k.kind + " " + k.key, k.count]));
    table("rejections-table", ["code", "requests"], Object.keys(s.auth_rejections).sort().map((c) => [c, s.auth_rejections[c]]));
  }

  function certificates(c) {
    const e = $("acme-error");
    e.hidden = !c.last_acme_error;
    e.textContent = c.last_acme_error ? "Last ACME error (" + when(c.last_acme_error_at) + "): " + c.last_acme_error : "";
    table("certs-table", ["names", "source", "issuer", "expires", "renews"],
      c.certificates.map((x) => [x.names.join(" "), x.source + (x.pending ? " (pending)" : ""), x.issuer || "–",
        el("td", when(x.expiry), "expiry"), x.renewal ? when(x.renewal) : "–"]));
  }

  function showError(e) {
    $("error").hidden = false;
    $("error").textContent = String(e.message || e);
  }

  async function refresh() {
    try {
      const [o, r, u, s, c] = await Promise.all(["/api/overview", "/api/routes", "/api/upstreams", "/api/security", "/api/certificates"].map((p) => api("GET", p)));
      overview(o);
      routes(r.routes);
      upstreams(u.upstreams);
      security(s);
      certificates(c);
      $("error").hidden = true;
      document.body.dataset.loaded = "1";
    } catch (e) {
      showError(e);
    }
  }
  async function live() {
    try {
      chart(await api("GET", "/api/traffic"));
    } catch (e) {
      showError(e);
    }
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(tokenKey, $("token").value);
    $("token").value = "";
    $("login").hidden = true;
    refresh();
    live();
  });
  refresh();
  live();
  setInterval(live, 2000);
  setInterval(refresh, 5000);
})();
