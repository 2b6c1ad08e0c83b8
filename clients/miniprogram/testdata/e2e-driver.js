'use strict';
// End-to-end driver: the helper (edge.js) against a real edge process. It is
// not a standalone test: TestE2EMiniProgramHelperUnderNode in
// internal/identity/e2e_test.go starts edge, a fake code2Session and a
// recording upstream, then runs `node --test` on this file with the EDGE_E2E_*
// variables below and NODE_EXTRA_CA_CERTS set to edge's internal CA. Its name
// keeps it out of `node --test clients/miniprogram/`.
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const fs = require('node:fs');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const edge = require('../edge.js');

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(name + ' is not set: run this driver through go test ./internal/identity/');
  return v;
}

const BASE = env('EDGE_E2E_URL'); // https://127.0.0.1:PORT
const USER = env('EDGE_E2E_USER'); // the fake code2Session maps code "USER.n" to OPENID
const OPENID = env('EDGE_E2E_OPENID');
const APPID = env('EDGE_E2E_APPID');
const SESSION_KEY = env('EDGE_E2E_SESSION_KEY'); // what code2Session returned; must never reach the client
const EXPIRED_TOKEN = env('EDGE_E2E_EXPIRED_TOKEN');
const EXPIRED_SIGN_KEY = env('EDGE_E2E_EXPIRED_SIGN_KEY');
const STORAGE_KEY = 'edge_session';

// No keep-alive: each request on its own connection, so the run leaves no
// socket behind.
const agent = new https.Agent({ keepAlive: false });

function toBuffer(data) {
  if (data === undefined || data === null) return Buffer.alloc(0);
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  return Buffer.from(JSON.stringify(data), 'utf8');
}

function send(url, method, header, body) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, headers: header, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ statusCode: res.statusCode, header: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function parseJSON(text) {
  try { return JSON.parse(text); } catch (e) { return text; }
}

// fakeWx implements what the helper uses of the wx API, the way a
// mini-program runtime does: wx.request parses JSON when dataType is
// 'json', wx.uploadFile builds the multipart body itself and answers data as
// a string, wx.connectSocket returns a SocketTask at once.
function fakeWx(user) {
  const storage = new Map();
  const w = {
    logins: 0,
    calls: [], // every wx.request / wx.uploadFile: { fn, args, res }
    login(o) {
      w.logins++;
      setImmediate(() => o.success({ code: user + '.' + w.logins, errMsg: 'login:ok' }));
    },
    getStorageSync: (k) => (storage.has(k) ? structuredClone(storage.get(k)) : ''),
    setStorageSync: (k, v) => { storage.set(k, structuredClone(v)); },
    removeStorageSync: (k) => { storage.delete(k); },
    request(o) {
      const header = Object.assign({}, o.header);
      send(o.url, o.method || 'GET', header, toBuffer(o.data)).then((r) => {
        const text = r.body.toString('utf8');
        const res = { statusCode: r.statusCode, header: r.header, data: o.dataType === 'json' ? parseJSON(text) : text, raw: text };
        w.calls.push({ fn: 'request', args: o, res });
        o.success(res);
      }, (err) => o.fail({ errMsg: 'request:fail ' + err.message }));
    },
    uploadFile(o) {
      const boundary = '----edgeE2E' + crypto.randomBytes(12).toString('hex');
      const parts = [];
      for (const [k, v] of Object.entries(o.formData || {})) {
        parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
      }
      parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${o.name}"; filename="${path.basename(o.filePath)}"\r\n` +
        'Content-Type: application/octet-stream\r\n\r\n'));
      parts.push(fs.readFileSync(o.filePath), Buffer.from(`\r\n--${boundary}--\r\n`));
      const header = Object.assign({}, o.header, { 'Content-Type': 'multipart/form-data; boundary=' + boundary });
      send(o.url, 'POST', header, Buffer.concat(parts)).then((r) => {
        const res = { statusCode: r.statusCode, data: r.body.toString('utf8') };
        w.calls.push({ fn: 'uploadFile', args: o, res });
        o.success(res);
      }, (err) => o.fail({ errMsg: 'uploadFile:fail ' + err.message }));
    },
    connectSocket: (o) => socketTask(o)
  };
  return w;
}

// socketTask is a minimal WebSocket client (RFC 6455, text frames) behind
// the SocketTask interface: wx.connectSocket sends the caller's headers on
// the upgrade request, which the WHATWG WebSocket cannot do.
function socketTask(o) {
  const handlers = { open: [], message: [], error: [], close: [] };
  const queued = { open: [], message: [], error: [], close: [] };
  const emit = (ev, arg) => {
    if (handlers[ev].length === 0) queued[ev].push(arg);
    handlers[ev].forEach((h) => h(arg));
  };
  const on = (ev) => (h) => {
    handlers[ev].push(h);
    queued[ev].splice(0).forEach((a) => h(a));
  };
  let sock = null;
  const key = crypto.randomBytes(16).toString('base64');
  const header = Object.assign({}, o.header, {
    Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key
  });
  const req = https.request(o.url.replace(/^wss:/, 'https:'), { method: 'GET', headers: header, agent });
  req.on('response', (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => emit('error', { errMsg: 'connectSocket:fail HTTP ' + res.statusCode, statusCode: res.statusCode, data: Buffer.concat(chunks).toString() }));
  });
  req.on('error', (err) => emit('error', { errMsg: 'connectSocket:fail ' + err.message }));
  req.on('upgrade', (res, socket, head) => {
    const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    if (res.headers['sec-websocket-accept'] !== accept) {
      socket.destroy();
      emit('error', { errMsg: 'connectSocket:fail bad Sec-WebSocket-Accept' });
      return;
    }
    sock = socket;
    let buf = head;
    const drain = () => {
      for (;;) {
        if (buf.length < 2) return;
        const opcode = buf[0] & 0x0f;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          off = 4;
        } else if (len === 127) {
          emit('error', { errMsg: 'frame too large for this fake' });
          socket.destroy();
          return;
        }
        if (buf.length < off + len) return;
        const payload = buf.subarray(off, off + len);
        buf = buf.subarray(off + len);
        if (opcode === 1) emit('message', { data: payload.toString('utf8') });
        if (opcode === 8) { socket.end(); emit('close', { code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005 }); return; }
      }
    };
    socket.on('data', (d) => { buf = Buffer.concat([buf, d]); drain(); });
    socket.on('error', (err) => emit('error', { errMsg: err.message }));
    emit('open', {});
    drain();
  });
  req.end();
  function frame(opcode, payload) {
    if (payload.length > 125) throw new Error('this fake sends short frames only');
    const mask = crypto.randomBytes(4);
    const out = Buffer.alloc(6 + payload.length);
    out[0] = 0x80 | opcode;
    out[1] = 0x80 | payload.length;
    mask.copy(out, 2);
    for (let i = 0; i < payload.length; i++) out[6 + i] = payload[i] ^ mask[i % 4];
    return out;
  }
  return {
    onOpen: on('open'), onMessage: on('message'), onError: on('error'), onClose: on('close'),
    send(a) { sock.write(frame(1, Buffer.from(a.data, 'utf8'))); if (a.success) a.success({}); },
    close() { if (sock) { sock.write(frame(8, Buffer.from([0x03, 0xe8]))); sock.end(); } }
  };
}

function next(task, ev) {
  return new Promise((resolve, reject) => {
    let done = false;
    task['on' + ev]((a) => { if (!done) { done = true; resolve(a); } });
    if (ev !== 'Error') task.onError((e) => { if (!done) { done = true; reject(new Error(e.errMsg)); } });
  });
}

// The upstream answers every request with what it received (see
// recordingUpstream in e2e_test.go).
function assertIdentity(echo, what) {
  assert.strictEqual(echo.openid, OPENID, what + ': X-WX-OPENID at the upstream');
  assert.strictEqual(echo.appid, APPID, what + ': X-WX-APPID at the upstream');
  assert.deepStrictEqual(echo.forged, [], what + ': client identity headers reached the upstream');
  assert.strictEqual(echo.authorization, false, what + ': Authorization reached the upstream');
}

const wx = fakeWx(USER);
const client = edge.createClient({ baseURL: BASE, wx });

test('login through the fake code2Session', async () => {
  const data = await client.login();
  assert.strictEqual(wx.logins, 1);
  assert.match(data.token, /^[A-Za-z0-9_-]{40,}$/);
  assert.match(data.sign_key, /^[A-Za-z0-9_-]{43}$/);
  assert.ok(data.expires_in > 3500 && data.expires_in <= 3600, 'expires_in is the [sessions] ttl: ' + data.expires_in);
  assert.strictEqual(data.openid, undefined, 'the openid is not exposed by default');
  const raw = wx.calls[0].res.raw;
  assert.ok(!raw.includes(SESSION_KEY) && !raw.includes('session_key'), 'the session_key reached the client');
  assert.strictEqual(wx.getStorageSync(STORAGE_KEY).token, data.token);
});

test('signed GET with a query', async () => {
  const res = await client.request({ url: '/api/orders', query: { page: 2, q: '小程序 x', tag: ['b', 'a'] } });
  assert.strictEqual(res.statusCode, 200, JSON.stringify(res.data));
  assertIdentity(res.data, 'GET');
  assert.strictEqual(res.data.method, 'GET');
  assert.strictEqual(res.data.path, '/api/orders');
  assert.strictEqual(res.data.query, 'page=2&q=%E5%B0%8F%E7%A8%8B%E5%BA%8F%20x&tag=b&tag=a');
});

test('signed POST with a JSON body', async () => {
  const order = { sku: 'A1', qty: 2, note: '加急 🚀' };
  const res = await client.request({ url: '/api/orders', method: 'POST', data: order });
  assert.strictEqual(res.statusCode, 200, JSON.stringify(res.data));
  assertIdentity(res.data, 'POST');
  assert.strictEqual(res.data.method, 'POST');
  assert.deepStrictEqual(JSON.parse(res.data.body), order);
});

test('the same signed request sent again is a replay (40105)', async () => {
  const last = wx.calls[wx.calls.length - 1];
  assert.strictEqual(last.args.method, 'POST');
  const again = await send(last.args.url, last.args.method, last.args.header, toBuffer(last.args.data));
  assert.strictEqual(again.statusCode, 401);
  assert.strictEqual(JSON.parse(again.body).code, 40105);
});

test('upload with UNSIGNED-PAYLOAD on a route that allows it', async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'edge-e2e-')), 'avatar.png');
  const content = crypto.randomBytes(3000);
  fs.writeFileSync(file, content);
  const res = await client.uploadFile({ url: '/upload/avatar', filePath: file, name: 'file', formData: { kind: 'avatar' } });
  assert.strictEqual(res.statusCode, 200, JSON.stringify(res.data));
  assertIdentity(res.data, 'upload');
  assert.strictEqual(res.data.file_sha256, crypto.createHash('sha256').update(content).digest('hex'));
  assert.strictEqual(res.data.form_kind, 'avatar');
  assert.strictEqual(wx.calls[wx.calls.length - 1].args.header['X-Edge-Body'], 'UNSIGNED-PAYLOAD');
});

test('UNSIGNED-PAYLOAD on a route that does not allow it (40103)', async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'edge-e2e-')), 'x.bin');
  fs.writeFileSync(file, 'x');
  const res = await client.uploadFile({ url: '/api/upload', filePath: file, name: 'file' });
  assert.strictEqual(res.statusCode, 401);
  assert.strictEqual(res.data.code, 40103);
});

test('signed WebSocket upgrade', async () => {
  const task = await client.connectSocket({ url: '/ws/chat', query: { room: '7' } });
  await next(task, 'Open');
  const hello = JSON.parse((await next(task, 'Message')).data);
  assertIdentity(hello, 'websocket');
  assert.strictEqual(hello.query, 'room=7');
  const echoed = next(task, 'Message');
  task.send({ data: 'ping' });
  assert.strictEqual((await echoed).data, 'echo:ping');
  task.close();
});

test('an expired token gets 40102, then one fresh login and the request succeeds', async () => {
  // A session stored long ago: the client still believes it valid.
  wx.setStorageSync(STORAGE_KEY, { token: EXPIRED_TOKEN, sign_key: EXPIRED_SIGN_KEY, expires_at: Date.now() + 3600e3 });
  const before = wx.logins;
  const from = wx.calls.length;
  const res = await client.request({ url: '/api/after-expiry' });
  assert.strictEqual(res.statusCode, 200, JSON.stringify(res.data));
  assertIdentity(res.data, 'after a fresh login');
  assert.strictEqual(wx.logins, before + 1, 'exactly one new wx.login');
  const seen = wx.calls.slice(from).map((c) => [c.args.url.replace(BASE, ''), c.res.statusCode, c.res.data.code]);
  assert.deepStrictEqual(seen, [['/api/after-expiry', 401, 40102], ['/edge/login', 200, 0], ['/api/after-expiry', 200, undefined]]);
  assert.notStrictEqual(wx.getStorageSync(STORAGE_KEY).token, EXPIRED_TOKEN);
});
