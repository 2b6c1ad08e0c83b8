'use strict';
// Run with: node --test clients/miniprogram/
const test = require('node:test');
const assert = require('node:assert');
const childProcess = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');
const edge = require('./edge.js');

const vectors = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'testdata', 'vectors', 'edge-signature.json'), 'utf8'));

test('sha256 and hmac match node:crypto', () => {
  const rnd = crypto.randomBytes(300);
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 200, 300]) {
    const msg = rnd.subarray(0, n);
    assert.strictEqual(edge.hex(edge.sha256(new Uint8Array(msg))), crypto.createHash('sha256').update(msg).digest('hex'), `sha256 of ${n} bytes`);
    for (const k of [0, 32, 64, 65, 100]) {
      const key = rnd.subarray(0, k);
      assert.strictEqual(edge.hex(edge.hmacSha256(new Uint8Array(key), new Uint8Array(msg))),
        crypto.createHmac('sha256', key).update(msg).digest('hex'), `hmac ${k}-byte key, ${n}-byte message`);
    }
  }
});

test('utf8 matches Buffer', () => {
  for (const s of ['', 'abc', 'é', '小程序', '😀 x', 'a\ud800b']) {
    assert.deepStrictEqual(Buffer.from(edge.utf8(s)), Buffer.from(s, 'utf8'), s);
  }
});

test('every valid vector signs to its signature', () => {
  for (const v of vectors.valid) {
    const lines = v.string_to_sign.split('\n');
    assert.strictEqual(edge.canonicalQuery(v.query), lines[2], `canonical query of ${v.query}`);
    const body = v.unsigned_payload ? edge.UNSIGNED_PAYLOAD : Buffer.from(v.body_b64, 'base64');
    const h = edge.sign({ method: v.method, path: v.path, query: v.query, timestamp: v.timestamp, nonce: v.nonce, body: body, signKey: vectors.sign_key });
    assert.strictEqual(h['X-Edge-Signature'], v.signature, `${v.method} ${v.path}`);
    assert.strictEqual(h['X-Edge-Body'], v.unsigned_payload ? 'UNSIGNED-PAYLOAD' : undefined);
  }
});

test('a request changed after signing no longer matches its signature', () => {
  // The other invalid vectors (timestamp window, nonce syntax, signature
  // syntax, unsigned payload on a strict route) are the gateway's to refuse.
  const tampered = vectors.invalid.filter((v) => /changed|added/.test(v.reason));
  assert.strictEqual(tampered.length, 3);
  for (const v of tampered) {
    const h = edge.sign({ method: v.method, path: v.path, query: v.query, timestamp: v.timestamp, nonce: v.nonce, body: Buffer.from(v.body_b64, 'base64'), signKey: vectors.sign_key });
    assert.notStrictEqual(h['X-Edge-Signature'], v.signature, v.reason);
  }
});

test('canonical query', () => {
  const cases = [
    ['', ''], ['b=2&a=1', 'a=1&b=2'], ['flag', 'flag='], ['x=a+b', 'x=a%20b'], ['x=%7e%2d', 'x=~-'],
    ['x=%2b', 'x=%2B'], ['x=é', 'x=%C3%A9'], ['a=1&&b=2&', 'a=1&b=2'], ['a~=1&a%FF=2', 'a%FF=2&a~=1'],
    ['a=0&a=%E4%B8%AD', 'a=%E4%B8%AD&a=0'],
    ["x=*'()!", 'x=%2A%27%28%29%21']
  ];
  for (const [input, want] of cases) assert.strictEqual(edge.canonicalQuery(input), want, input);
  for (const bad of ['x=%', 'x=%4', 'x=%zz']) assert.throws(() => edge.canonicalQuery(bad), /percent-escape/, bad);
  assert.strictEqual(edge.encodeQuery({ q: '小 程', n: 2, list: ['a', 'b'], skip: undefined }), 'q=%E5%B0%8F%20%E7%A8%8B&n=2&list=a&list=b');
});

// A fake gateway: login, and signature checks using node:crypto, with a
// token that can be expired from the test. Its clock is the real one and its
// skew window 300 s, as edge's default; node:http sends the Date header.
// /stream/* answers in chunks whose bytes cut through multi-byte characters.
const STREAM_PARTS = ['data: 小程', '序 ', '😀\n', 'data: done\n'];
function fakeGateway() {
  const state = { logins: 0, expireNext: false, seen: [], nonces: new Set(), skewRejects: 0 };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const send = (status, obj) => { res.writeHead(status, { 'Content-Type': 'application/json' }); res.end(JSON.stringify(obj)); };
      if (req.url === '/edge/login') {
        assert.strictEqual(JSON.parse(body).code, 'wx-code-' + (state.logins + 1));
        state.logins++;
        return send(200, { code: 0, msg: 'ok', data: { token: 'tok' + state.logins, sign_key: 'key' + state.logins + 'x'.repeat(40), expires_in: 7200 } });
      }
      const token = (req.headers.authorization || '').replace(/^Bearer /, '');
      if (token !== 'tok' + state.logins) return send(401, { code: 40101 });
      if (state.expireNext) { state.expireNext = false; return send(401, { code: 40102 }); }
      if (Math.abs(Number(req.headers['x-edge-timestamp']) - Date.now() / 1000) > 300) {
        state.skewRejects++;
        return send(401, { code: 40104 });
      }
      const [p, q = ''] = req.url.split(/\?(.*)/s);
      const unsigned = req.headers['x-edge-body'] === 'UNSIGNED-PAYLOAD';
      const sts = [req.method, p, edge.canonicalQuery(q), req.headers['x-edge-timestamp'], req.headers['x-edge-nonce'],
        unsigned ? 'UNSIGNED-PAYLOAD' : crypto.createHash('sha256').update(body).digest('hex')].join('\n');
      const want = crypto.createHmac('sha256', 'key' + state.logins + 'x'.repeat(40)).update(sts).digest('hex');
      if (req.headers['x-edge-signature'] !== want || state.nonces.has(req.headers['x-edge-nonce'])) return send(401, { code: 40103 });
      state.nonces.add(req.headers['x-edge-nonce']);
      state.seen.push({ method: req.method, url: req.url, body: body.toString(), unsigned });
      if (p.startsWith('/stream/')) {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        const all = Buffer.from(STREAM_PARTS.join(''));
        for (let i = 0; i < all.length; i += 5) res.write(all.subarray(i, i + 5));
        return res.end();
      }
      send(200, { code: 0, echo: body.toString() });
    });
  });
  return { server, state };
}

// fakeWx implements the few wx APIs the helper uses over node:http, the way
// the mini-program runtime answers: wx.uploadFile's data is the body as a
// string and comes without headers; with enableChunked, wx.request hands
// over the body as ArrayBuffer chunks (cut here into 3-byte pieces), and
// without onChunkReceived (base library < 2.20.1) as one ArrayBuffer.
function fakeWx(base, opts = {}) {
  const storage = opts.storage || {};
  let code = 0;
  const toArrayBuffer = (b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  const doRequest = (opts, body, task) => {
    const req = http.request(opts.url, { method: opts.method || 'POST', headers: opts.header }, (res) => {
      if (task.headers) task.headers({ header: res.headers, statusCode: res.statusCode });
      const chunks = [];
      res.on('data', (c) => {
        if (task.chunk) for (let i = 0; i < c.length; i += 3) task.chunk({ data: toArrayBuffer(c.subarray(i, i + 3)) });
        else chunks.push(c);
      });
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        let data = raw.toString();
        if (opts.enableChunked) data = toArrayBuffer(raw);
        else if (opts.dataType === 'json') data = JSON.parse(data);
        opts.success(opts.upload ? { statusCode: res.statusCode, data } : { statusCode: res.statusCode, data, header: res.headers });
      });
    });
    req.on('error', (e) => opts.fail({ errMsg: e.message }));
    req.end(body);
  };
  const requestTask = (o) => {
    const task = {};
    const api = { abort() {} };
    if (o.enableChunked) {
      api.onHeadersReceived = (f) => { task.headers = f; };
      if (!opts.noChunkEvents) api.onChunkReceived = (f) => { task.chunk = f; };
    }
    // The runtime starts the request after the caller had the task.
    setImmediate(() => doRequest(o, o.data === undefined ? undefined : (o.data instanceof ArrayBuffer ? Buffer.from(o.data) : o.data), task));
    return api;
  };
  return {
    sockets: [],
    storage,
    login: (o) => setImmediate(() => o.success({ code: 'wx-code-' + (++code) })),
    getStorageSync: (k) => storage[k] || '',
    setStorageSync: (k, v) => { storage[k] = v; },
    removeStorageSync: (k) => { delete storage[k]; },
    request: requestTask,
    uploadFile: (o) => doRequest(Object.assign({}, o, { method: 'POST', upload: true }), '--multipart ' + o.filePath + '--', {}),
    connectSocket(o) { this.sockets.push(o); return { task: true }; }
  };
}

test('client against a fake gateway: login, signed GET and POST, upload, retry on 40102', async () => {
  const { server, state } = fakeGateway();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  try {
    const base = 'http://127.0.0.1:' + server.address().port;
    const wx = fakeWx(base);
    const client = edge.createClient({ baseURL: base, wx });

    const got = await client.request({ url: '/api/search', query: { q: '小程序', page: 2 } });
    assert.strictEqual(got.statusCode, 200);
    assert.strictEqual(state.logins, 1);

    const posted = await client.request({ url: '/api/orders', method: 'POST', data: { sku: 'A', note: '加急' } });
    assert.strictEqual(posted.statusCode, 200);
    assert.deepStrictEqual(JSON.parse(posted.data.echo), { sku: 'A', note: '加急' });

    const up = await client.uploadFile({ url: '/api/upload', filePath: '/tmp/a.png', name: 'file' });
    assert.strictEqual(up.statusCode, 200);
    assert.strictEqual(state.seen[2].unsigned, true);

    state.expireNext = true;
    const retried = await client.request({ url: '/api/ping' });
    assert.strictEqual(retried.statusCode, 200);
    assert.strictEqual(state.logins, 2, 'logged in again once after 40102');
    assert.strictEqual(wx.storage.edge_session.token, 'tok2');

    // Parallel requests without a session share one login.
    wx.removeStorageSync('edge_session');
    await Promise.all([client.request({ url: '/a' }), client.request({ url: '/b' })]);
    assert.strictEqual(state.logins, 3);

    await client.connectSocket({ url: '/ws', query: { room: '1' } });
    const sock = wx.sockets[0];
    assert.match(sock.url, /^ws:\/\/127\.0\.0\.1:\d+\/ws\?room=1$/);
    assert.strictEqual(sock.header.Authorization, 'Bearer tok3');
    assert.match(sock.header['X-Edge-Signature'], /^[0-9a-f]{64}$/);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

async function withGateway(fn) {
  const { server, state } = fakeGateway();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  try {
    await fn('http://127.0.0.1:' + server.address().port, state);
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

test('uploadFile logs in again once on 40102, its JSON answer read from the string wx.uploadFile gives', () => withGateway(async (base, state) => {
  const wx = fakeWx(base);
  const client = edge.createClient({ baseURL: base, wx });
  await client.login();
  state.expireNext = true;
  const up = await client.uploadFile({ url: '/api/upload', filePath: '/tmp/a.png', name: 'file' });
  assert.strictEqual(up.statusCode, 200, JSON.stringify(up.data));
  assert.strictEqual(up.data.code, 0);
  assert.strictEqual(state.logins, 2, 'logged in again once after 40102');
  assert.strictEqual(state.seen.length, 1);
  assert.strictEqual(state.seen[0].unsigned, true);
}));

const TEN_MINUTES_SLOW = () => Date.now() - 600e3;

test('a phone clock 10 minutes off: the login answer teaches the offset, no request is refused', () => withGateway(async (base, state) => {
  const client = edge.createClient({ baseURL: base, wx: fakeWx(base), now: TEN_MINUTES_SLOW });
  for (const url of ['/a', '/b']) {
    const res = await client.request({ url });
    assert.strictEqual(res.statusCode, 200, JSON.stringify(res.data));
  }
  assert.strictEqual(state.skewRejects, 0);
  assert.strictEqual(state.logins, 1);
}));

test('a phone clock 10 minutes off with a stored session: 40104, then one resend with the server time', () => withGateway(async (base, state) => {
  const wx = fakeWx(base);
  await edge.createClient({ baseURL: base, wx }).login();
  // The app starts again: the session is in storage, the offset is not known.
  const client = edge.createClient({ baseURL: base, wx, now: TEN_MINUTES_SLOW });
  const res = await client.request({ url: '/api/ping', method: 'POST', data: { n: 1 } });
  assert.strictEqual(res.statusCode, 200, JSON.stringify(res.data));
  assert.strictEqual(state.skewRejects, 1, 'exactly one 40104');
  assert.strictEqual(state.logins, 1, 'no new login for a clock problem');
  const up = await client.uploadFile({ url: '/api/upload', filePath: '/tmp/a.png', name: 'file' });
  assert.strictEqual(up.statusCode, 200, 'an upload signs with the offset learned before');
  const sock = await client.connectSocket({ url: '/ws' });
  assert.ok(Math.abs(Number(wx.sockets[0].header['X-Edge-Timestamp']) - Date.now() / 1000) < 10, 'socket upgrade signed with server time');
  assert.ok(sock);
  assert.strictEqual(state.skewRejects, 1);
}));

test('a 40104 that teaches nothing new is not resent', () => withGateway(async (base, state) => {
  const wx = fakeWx(base);
  await edge.createClient({ baseURL: base, wx }).login();
  const client = edge.createClient({ baseURL: base, wx, now: TEN_MINUTES_SLOW });
  // wx.uploadFile answers without headers: the offset stays unknown.
  const up = await client.uploadFile({ url: '/api/upload', filePath: '/tmp/a.png', name: 'file' });
  assert.strictEqual(up.statusCode, 401);
  assert.strictEqual(up.data.code, 40104);
  assert.strictEqual(state.skewRejects, 1);
}));

const STREAM_TEXT = STREAM_PARTS.join('');

async function streamOnce(base, wx) {
  const client = edge.createClient({ baseURL: base, wx });
  const got = [];
  const res = await client.requestStream({ url: '/stream/chat', method: 'POST', data: { q: 'hi' } }, (text) => got.push(text));
  return { res, got };
}

test('requestStream decodes chunks cut inside characters and resolves with the status', () => withGateway(async (base, state) => {
  const { res, got } = await streamOnce(base, fakeWx(base));
  assert.strictEqual(res.statusCode, 200);
  assert.match(res.header['content-type'], /event-stream/);
  assert.ok(got.length > 3, 'text arrives chunk by chunk: ' + got.length);
  assert.ok(got.every((t) => typeof t === 'string' && !t.includes('\ufffd')));
  assert.strictEqual(got.join(''), STREAM_TEXT);
  assert.strictEqual(state.seen[0].body, '{"q":"hi"}');
}));

test('requestStream without TextDecoder, and without onChunkReceived', () => withGateway(async (base) => {
  const wx = fakeWx(base);
  const saved = globalThis.TextDecoder;
  globalThis.TextDecoder = undefined;
  try {
    const { res, got } = await streamOnce(base, wx);
    assert.strictEqual(res.statusCode, 200);
    assert.ok(got.length > 3);
    assert.strictEqual(got.join(''), STREAM_TEXT);
  } finally {
    globalThis.TextDecoder = saved;
  }
  const old = await streamOnce(base, fakeWx(base, { noChunkEvents: true, storage: wx.storage }));
  assert.strictEqual(old.res.statusCode, 200);
  assert.strictEqual(old.got.join(''), STREAM_TEXT, 'the whole body as one piece');
}));

test('requestStream logs in again on 40102; the refusal does not reach onChunk', () => withGateway(async (base, state) => {
  const wx = fakeWx(base);
  const client = edge.createClient({ baseURL: base, wx });
  await client.login();
  state.expireNext = true;
  const got = [];
  const res = await client.requestStream({ url: '/stream/x' }, (t) => got.push(t));
  assert.strictEqual(res.statusCode, 200);
  assert.strictEqual(got.join(''), STREAM_TEXT);
  assert.strictEqual(state.logins, 2);
  // A refusal that is not retried resolves with its parsed body.
  const stale = fakeWx(base);
  stale.setStorageSync('edge_session', { token: 'unknown', sign_key: 'k', expires_at: Date.now() + 3600e3 });
  const refused = await edge.createClient({ baseURL: base, wx: stale }).requestStream({ url: '/stream/x' }, (t) => got.push('unexpected ' + t));
  assert.strictEqual(refused.statusCode, 401);
  assert.strictEqual(refused.data.code, 40101);
  assert.strictEqual(got.join(''), STREAM_TEXT);
}));

test('the fallback UTF-8 decoder agrees with TextDecoder, whatever the cuts', () => {
  const saved = globalThis.TextDecoder;
  const inputs = [Buffer.from('a小程序😀é\u0000z'), Buffer.from([0xe5, 0xb0]), Buffer.from([0xff, 0x61, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0xf0, 0x9f, 0x98]),
    Buffer.from([0xf4, 0x90, 0x80, 0x80, 0xc0, 0xaf, 0xe0, 0x80, 0xaf]), crypto.randomBytes(200)];
  try {
    for (const input of inputs) {
      const want = new saved().decode(input);
      for (const step of [1, 2, 3, 5, 7, input.length || 1]) {
        globalThis.TextDecoder = undefined;
        const dec = edge.utf8Decoder();
        let got = '';
        for (let i = 0; i < input.length; i += step) got += dec.decode(new Uint8Array(input.subarray(i, i + step)).buffer);
        got += dec.end();
        globalThis.TextDecoder = saved;
        assert.strictEqual(got, want, `${input.toString('hex')} in pieces of ${step}`);
      }
    }
  } finally {
    globalThis.TextDecoder = saved;
  }
});

// untar reads the regular files of a ustar archive, so that the test needs no
// tar binary.
function untar(buf) {
  const files = {};
  for (let off = 0; off + 512 <= buf.length;) {
    const name = buf.toString('utf8', off, off + 100).replace(/\0.*$/s, '');
    if (!name) break;
    const size = parseInt(buf.toString('ascii', off + 124, off + 136).replace(/\0.*$/s, '').trim() || '0', 8);
    files[name] = buf.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

test('npm pack: the package holds the helper, its types and README, and its entry loads', (t) => {
  const dest = fs.mkdtempSync(path.join(os.tmpdir(), 'edge-pack-'));
  try {
    const env = Object.assign({}, process.env, {
      npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false',
      npm_config_ignore_scripts: 'true', npm_config_offline: 'true', npm_config_loglevel: 'error'
    });
    const out = childProcess.spawnSync('npm', ['pack', '--json', '--pack-destination', dest], { cwd: __dirname, env, encoding: 'utf8', timeout: 60e3 });
    if (out.error && out.error.code === 'ENOENT') return t.skip('npm is not installed');
    assert.strictEqual(out.status, 0, out.stderr);
    const [info] = JSON.parse(out.stdout);
    const pkg = require('./package.json');
    assert.strictEqual(info.name, pkg.name);
    assert.deepStrictEqual(info.files.map((f) => f.path).sort(), ['README.md', 'edge.d.ts', 'edge.js', 'package.json']);
    const files = untar(zlib.gunzipSync(fs.readFileSync(path.join(dest, info.filename))));
    const root = path.join(dest, 'x');
    for (const [name, data] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
      fs.writeFileSync(path.join(root, name), data);
    }
    const packed = JSON.parse(fs.readFileSync(path.join(root, 'package', 'package.json'), 'utf8'));
    assert.strictEqual(packed.main, 'edge.js');
    assert.strictEqual(packed.types, 'edge.d.ts');
    const entry = require(path.join(root, 'package', packed.main));
    assert.notStrictEqual(entry, edge, 'the packed copy, not this directory');
    assert.deepStrictEqual(Object.keys(entry).sort(), Object.keys(edge).sort());
    assert.strictEqual(typeof entry.createClient, 'function');
  } finally {
    fs.rmSync(dest, { recursive: true, force: true });
  }
});

test('edge.d.ts declares every export and every client method', () => {
  const dts = fs.readFileSync(path.join(__dirname, 'edge.d.ts'), 'utf8');
  for (const name of Object.keys(edge)) {
    assert.match(dts, new RegExp('export (declare )?(function|const) ' + name + '\\b'), name);
  }
  const client = edge.createClient({ baseURL: 'https://x', wx: fakeWx('https://x') });
  for (const name of Object.keys(client)) assert.match(dts, new RegExp('\\n\\s+' + name + '\\('), 'Client.' + name);
});
