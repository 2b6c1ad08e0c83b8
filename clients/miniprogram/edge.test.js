'use strict';
// Run with: node --test clients/miniprogram/
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
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
// token that can be expired from the test.
function fakeGateway() {
  const state = { logins: 0, expireNext: false, seen: [], nonces: new Set() };
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
      const [p, q = ''] = req.url.split(/\?(.*)/s);
      const unsigned = req.headers['x-edge-body'] === 'UNSIGNED-PAYLOAD';
      const sts = [req.method, p, edge.canonicalQuery(q), req.headers['x-edge-timestamp'], req.headers['x-edge-nonce'],
        unsigned ? 'UNSIGNED-PAYLOAD' : crypto.createHash('sha256').update(body).digest('hex')].join('\n');
      const want = crypto.createHmac('sha256', 'key' + state.logins + 'x'.repeat(40)).update(sts).digest('hex');
      if (req.headers['x-edge-signature'] !== want || state.nonces.has(req.headers['x-edge-nonce'])) return send(401, { code: 40103 });
      state.nonces.add(req.headers['x-edge-nonce']);
      state.seen.push({ method: req.method, url: req.url, body: body.toString(), unsigned });
      send(200, { code: 0, echo: body.toString() });
    });
  });
  return { server, state };
}

// fakeWx implements the few wx APIs the helper uses over node:http.
function fakeWx(base) {
  const storage = {};
  let code = 0;
  const doRequest = (opts, body) => {
    const req = http.request(opts.url, { method: opts.method || 'POST', headers: opts.header }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        let data = Buffer.concat(chunks).toString();
        if (opts.dataType === 'json') data = JSON.parse(data);
        opts.success({ statusCode: res.statusCode, data, header: res.headers });
      });
    });
    req.on('error', (e) => opts.fail({ errMsg: e.message }));
    req.end(body);
  };
  return {
    sockets: [],
    storage,
    login: (o) => setImmediate(() => o.success({ code: 'wx-code-' + (++code) })),
    getStorageSync: (k) => storage[k] || '',
    setStorageSync: (k, v) => { storage[k] = v; },
    removeStorageSync: (k) => { delete storage[k]; },
    request: (o) => doRequest(o, o.data === undefined ? undefined : (o.data instanceof ArrayBuffer ? Buffer.from(o.data) : o.data)),
    uploadFile: (o) => doRequest(Object.assign({}, o, { method: 'POST' }), '--multipart ' + o.filePath + '--'),
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
