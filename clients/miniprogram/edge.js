'use strict';
// edge mini-program helper: logs in through edge with wx.login, keeps the
// session in wx storage and signs every request with EDGE-HMAC-SHA256
// (docs/signature.md). CommonJS, no dependencies: mini-programs have no
// WebCrypto, so SHA-256 and HMAC are implemented here.

// ---- SHA-256 (FIPS 180-4) and HMAC (RFC 2104) over Uint8Array ----

var K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
]);

function sha256(bytes) {
  var h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  var len = bytes.length;
  // Message, 0x80, zero padding, 64-bit big-endian bit length.
  var total = Math.ceil((len + 9) / 64) * 64;
  var m = new Uint8Array(total);
  m.set(bytes);
  m[len] = 0x80;
  var bits = len * 8;
  var hi = Math.floor(bits / 0x100000000);
  var dv = new DataView(m.buffer);
  dv.setUint32(total - 8, hi);
  dv.setUint32(total - 4, bits >>> 0);
  var w = new Uint32Array(64);
  for (var off = 0; off < total; off += 64) {
    for (var i = 0; i < 16; i++) w[i] = dv.getUint32(off + i * 4);
    for (i = 16; i < 64; i++) {
      var x = w[i - 15], y = w[i - 2];
      var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (i = 0; i < 64; i++) {
      var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      var ch = (e & f) ^ (~e & g);
      var t1 = (k + S1 + ch + K[i] + w[i]) >>> 0;
      var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      var maj = (a & b) ^ (a & c) ^ (b & c);
      var t2 = (S0 + maj) >>> 0;
      k = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    h[0] = (h[0] + a) >>> 0; h[1] = (h[1] + b) >>> 0; h[2] = (h[2] + c) >>> 0; h[3] = (h[3] + d) >>> 0;
    h[4] = (h[4] + e) >>> 0; h[5] = (h[5] + f) >>> 0; h[6] = (h[6] + g) >>> 0; h[7] = (h[7] + k) >>> 0;
  }
  var out = new Uint8Array(32);
  var ov = new DataView(out.buffer);
  for (i = 0; i < 8; i++) ov.setUint32(i * 4, h[i]);
  return out;
}

function hmacSha256(key, msg) {
  if (key.length > 64) key = sha256(key);
  var ipad = new Uint8Array(64 + msg.length);
  var opad = new Uint8Array(64 + 32);
  for (var i = 0; i < 64; i++) {
    var kb = i < key.length ? key[i] : 0;
    ipad[i] = kb ^ 0x36;
    opad[i] = kb ^ 0x5c;
  }
  ipad.set(msg, 64);
  opad.set(sha256(ipad), 64);
  return sha256(opad);
}

function hex(bytes) {
  var s = '';
  for (var i = 0; i < bytes.length; i++) s += (bytes[i] < 16 ? '0' : '') + bytes[i].toString(16);
  return s;
}

// utf8 encodes a JavaScript string (TextEncoder is missing on some clients).
function utf8(str) {
  var out = [];
  for (var i = 0; i < str.length; i++) {
    var c = str.charCodeAt(i);
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < str.length) {
      var lo = str.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

// utf8Decoder returns {decode(ArrayBuffer), end()} turning a byte stream into
// text, holding back a character cut between two chunks. TextDecoder is
// missing on old base libraries; the fallback follows its rules (WHATWG
// UTF-8 decode: one U+FFFD per maximal invalid subpart).
function utf8Decoder() {
  if (typeof TextDecoder === 'function') {
    var td = new TextDecoder('utf-8');
    return {
      decode: function (buf) { return td.decode(new Uint8Array(buf), { stream: true }); },
      end: function () { return td.decode(); }
    };
  }
  var need = 0, cp = 0, lower = 0x80, upper = 0xbf;
  function step(b, out) {
    if (need === 0) {
      if (b < 0x80) { out.push(b); return; }
      if (b >= 0xc2 && b <= 0xdf) { need = 1; cp = b & 0x1f; }
      else if (b >= 0xe0 && b <= 0xef) {
        if (b === 0xe0) lower = 0xa0;
        if (b === 0xed) upper = 0x9f;
        need = 2; cp = b & 0xf;
      } else if (b >= 0xf0 && b <= 0xf4) {
        if (b === 0xf0) lower = 0x90;
        if (b === 0xf4) upper = 0x8f;
        need = 3; cp = b & 0x7;
      } else out.push(0xfffd);
      return;
    }
    if (b < lower || b > upper) {
      // The broken sequence ends before b, which starts afresh.
      need = 0; lower = 0x80; upper = 0xbf;
      out.push(0xfffd);
      step(b, out);
      return;
    }
    lower = 0x80; upper = 0xbf;
    cp = (cp << 6) | (b & 0x3f);
    if (--need === 0) out.push(cp);
  }
  function text(cps) {
    var s = '';
    for (var i = 0; i < cps.length; i += 4096) s += String.fromCodePoint.apply(null, cps.slice(i, i + 4096));
    return s;
  }
  return {
    decode: function (buf) {
      var bytes = new Uint8Array(buf), out = [];
      for (var i = 0; i < bytes.length; i++) step(bytes[i], out);
      return text(out);
    },
    end: function () {
      var cut = need !== 0;
      need = 0; lower = 0x80; upper = 0xbf;
      return cut ? '\ufffd' : '';
    }
  };
}

// ---- EDGE-HMAC-SHA256 ----

var UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
var HEX = '0123456789ABCDEF';

function isUnreserved(b) {
  return (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) ||
    b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;
}

function encodeBytes(bytes) {
  var s = '';
  for (var i = 0; i < bytes.length; i++) {
    var b = bytes[i];
    s += isUnreserved(b) ? String.fromCharCode(b) : '%' + HEX[b >> 4] + HEX[b & 15];
  }
  return s;
}

// reencode percent-decodes one name or value ('+' is a space) and encodes it
// again the canonical way. It works on bytes so that escapes which are not
// UTF-8 survive unchanged.
function reencode(s) {
  var raw = utf8(s);
  var bytes = [];
  for (var i = 0; i < raw.length; i++) {
    var b = raw[i];
    if (b === 0x2b) b = 0x20;
    else if (b === 0x25) {
      var pair = i + 2 < raw.length ? String.fromCharCode(raw[i + 1], raw[i + 2]) : '';
      if (!/^[0-9A-Fa-f]{2}$/.test(pair)) throw new Error('edge: malformed percent-escape in query');
      b = parseInt(pair, 16);
      i += 2;
    }
    bytes.push(b);
  }
  return encodeBytes(bytes);
}

// canonicalQuery is the QUERY line of the string to sign.
function canonicalQuery(rawQuery) {
  if (!rawQuery) return '';
  var pairs = [];
  rawQuery.split('&').forEach(function (piece) {
    if (piece === '') return;
    var eq = piece.indexOf('=');
    var name = eq < 0 ? piece : piece.slice(0, eq);
    var value = eq < 0 ? '' : piece.slice(eq + 1);
    pairs.push([reencode(name), reencode(value)]);
  });
  // Encoded names and values are ASCII: code-unit order is byte order.
  pairs.sort(function (a, b) {
    if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
    if (a[1] !== b[1]) return a[1] < b[1] ? -1 : 1;
    return 0;
  });
  return pairs.map(function (p) { return p[0] + '=' + p[1]; }).join('&');
}

// encodeQuery builds a query string from an object, canonical encoding.
function encodeQuery(params) {
  var parts = [];
  Object.keys(params || {}).forEach(function (k) {
    var v = params[k];
    if (v === undefined || v === null) return;
    (Array.isArray(v) ? v : [v]).forEach(function (x) {
      parts.push(encodeBytes(utf8(k)) + '=' + encodeBytes(utf8(String(x))));
    });
  });
  return parts.join('&');
}

function toBytes(body) {
  if (body === undefined || body === null || body === '') return new Uint8Array(0);
  if (typeof body === 'string') return utf8(body);
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new Error('edge: body must be a string or an ArrayBuffer');
}

// sign returns the signature headers of one request. path is the path as
// sent, percent-encoded; body is a string, an ArrayBuffer, or
// UNSIGNED_PAYLOAD.
function sign(opts) {
  var bodyHash = opts.body === UNSIGNED_PAYLOAD ? UNSIGNED_PAYLOAD : hex(sha256(toBytes(opts.body)));
  var sts = [opts.method.toUpperCase(), opts.path || '/', canonicalQuery(opts.query), String(opts.timestamp),
    opts.nonce, bodyHash].join('\n');
  var headers = {
    'X-Edge-Timestamp': String(opts.timestamp),
    'X-Edge-Nonce': opts.nonce,
    'X-Edge-Signature': hex(hmacSha256(utf8(opts.signKey), utf8(sts)))
  };
  if (bodyHash === UNSIGNED_PAYLOAD) headers['X-Edge-Body'] = UNSIGNED_PAYLOAD;
  return headers;
}

var NONCE_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
var nonceCounter = 0;

// newNonce needs uniqueness per token, not secrecy: random characters plus
// a counter.
function newNonce() {
  var s = '';
  for (var i = 0; i < 20; i++) s += NONCE_CHARS[Math.floor(Math.random() * 64)];
  nonceCounter = (nonceCounter + 1) % 0x1000000;
  return s + nonceCounter.toString(36);
}

// ---- client ----

var STORAGE_KEY = 'edge_session';

// Date has a one-second resolution and travels with some latency; smaller
// differences are noise, not a wrong clock, and are far inside edge's window.
var SKEW_NOISE_MS = 5000;

function headerValue(header, name) {
  if (!header) return undefined;
  var lower = name.toLowerCase();
  for (var k in header) if (k.toLowerCase() === lower) return header[k];
  return undefined;
}

function parseJSONText(text) {
  try { return JSON.parse(text); } catch (e) { return text; }
}

function isOK(status) { return status >= 200 && status < 300; }

// createClient({baseURL, loginPath = '/edge/login', wx = global wx,
// now = Date.now}) returns {login, request, requestStream, uploadFile,
// connectSocket}.
function createClient(options) {
  var wxApi = options.wx || (typeof wx !== 'undefined' ? wx : null); // eslint-disable-line no-undef
  if (!wxApi) throw new Error('edge: no wx object');
  var base = options.baseURL.replace(/\/+$/, '');
  var wsBase = base.replace(/^http/, 'ws');
  var loginPath = options.loginPath || '/edge/login';
  var now = options.now || Date.now;
  var pendingLogin = null;
  // serverOffset (ms) is edge's clock minus this phone's, learned from the
  // Date header of answers: a phone set minutes wrong would otherwise get
  // 40104 on every signed request. Session expiry stays on the local clock,
  // which set it.
  var serverOffset = 0;

  function learnClock(header) {
    var date = Date.parse(headerValue(header, 'Date'));
    if (isNaN(date)) return;
    // Date is truncated to the second: the server's time is half a second
    // later on average.
    var offset = date + 500 - now();
    if (Math.abs(offset - serverOffset) > SKEW_NOISE_MS) serverOffset = offset;
  }

  function stored() {
    var s = wxApi.getStorageSync(STORAGE_KEY);
    return s && s.token && s.expires_at > now() ? s : null;
  }

  function call(fn, args) {
    return new Promise(function (resolve, reject) {
      args.success = function (res) {
        if (res) learnClock(res.header);
        resolve(res);
      };
      args.fail = function (err) { reject(new Error('edge: ' + ((err && err.errMsg) || 'request failed'))); };
      wxApi[fn](args);
    });
  }

  function login() {
    if (pendingLogin) return pendingLogin;
    pendingLogin = call('login', {}).then(function (res) {
      return call('request', {
        url: base + loginPath, method: 'POST', header: { 'Content-Type': 'application/json' },
        data: JSON.stringify({ code: res.code }), dataType: 'json'
      });
    }).then(function (res) {
      var body = res.data || {};
      if (res.statusCode !== 200 || body.code !== 0) {
        var err = new Error('edge: login failed: ' + (body.msg || res.statusCode));
        err.code = body.code;
        throw err;
      }
      var s = { token: body.data.token, sign_key: body.data.sign_key, expires_at: now() + body.data.expires_in * 1000 };
      wxApi.setStorageSync(STORAGE_KEY, s);
      return body.data;
    });
    pendingLogin.then(clear, clear);
    return pendingLogin;
    function clear() { pendingLogin = null; }
  }

  function session() {
    var s = stored();
    return s ? Promise.resolve(s) : login().then(stored);
  }

  // signedHeaders splits url into path and query, signs, and merges the
  // caller's headers.
  function signedHeaders(s, method, url, body, extra) {
    var q = url.indexOf('?');
    var headers = sign({
      method: method, path: q < 0 ? url : url.slice(0, q), query: q < 0 ? '' : url.slice(q + 1),
      timestamp: Math.floor((now() + serverOffset) / 1000), nonce: newNonce(), body: body, signKey: s.sign_key
    });
    headers.Authorization = 'Bearer ' + s.token;
    Object.keys(extra || {}).forEach(function (k) { headers[k] = extra[k]; });
    return headers;
  }

  // withRetry runs send(session), which must resolve with the answer's data
  // parsed. On 40102 (token expired) it logs in again and sends once more; on
  // 40104 (timestamp outside the window) it sends once more if the answer
  // taught a new clock offset, since otherwise the resend would be refused
  // the same way.
  function withRetry(send) {
    var relogged = false, resynced = false;
    function attempt(s) {
      var signedWith = serverOffset;
      return send(s).then(function (res) {
        var code = res.statusCode === 401 && res.data ? res.data.code : 0;
        if (code === 40102 && !relogged) {
          relogged = true;
          wxApi.removeStorageSync(STORAGE_KEY);
          return login().then(stored).then(attempt);
        }
        if (code === 40104 && !resynced && serverOffset !== signedWith) {
          resynced = true;
          return attempt(s);
        }
        return res;
      });
    }
    return session().then(attempt);
  }

  function pathWithQuery(opts) {
    var qs = encodeQuery(opts.query);
    if (!qs) return opts.url;
    return opts.url + (opts.url.indexOf('?') < 0 ? '?' : '&') + qs;
  }

  // request({url: '/api/x', method, query: {..}, data, header}) resolves to
  // wx.request's {statusCode, data, header}. data other than a string or
  // ArrayBuffer is sent as JSON; the exact bytes sent are the bytes signed.
  function prepare(opts) {
    var body = opts.data;
    var header = Object.assign({}, opts.header);
    if (body !== undefined && body !== null && typeof body !== 'string' && !(body instanceof ArrayBuffer)) {
      body = JSON.stringify(body);
      if (!header['Content-Type'] && !header['content-type']) header['Content-Type'] = 'application/json';
    }
    return { method: (opts.method || 'GET').toUpperCase(), url: pathWithQuery(opts), body: body, header: header };
  }

  function request(opts) {
    var p = prepare(opts);
    var method = p.method, url = p.url, body = p.body, header = p.header;
    return withRetry(function (s) {
      return call('request', {
        url: base + url, method: method, data: body, dataType: opts.dataType || 'json',
        header: signedHeaders(s, method, url, body, header)
      });
    });
  }

  // uploadFile({url, filePath, name, formData, header}) signs with
  // UNSIGNED-PAYLOAD: the route must set allow_unsigned_payload = true.
  // formData travels in the body and is therefore not signed.
  // wx.uploadFile answers data as a string, and without headers: the clock
  // offset it signs with was learned from earlier answers.
  function uploadFile(opts) {
    var url = pathWithQuery(opts);
    return withRetry(function (s) {
      return call('uploadFile', {
        url: base + url, filePath: opts.filePath, name: opts.name, formData: opts.formData,
        header: signedHeaders(s, 'POST', url, UNSIGNED_PAYLOAD, opts.header)
      }).then(function (res) {
        if (typeof res.data === 'string') res.data = parseJSONText(res.data);
        return res;
      });
    });
  }

  // requestStream(options as for request, onChunk(text)) sends with
  // enableChunked and passes the answer's text to onChunk as it arrives. It
  // resolves to {statusCode, header} once the answer is complete; an answer
  // that is not 2xx never reaches onChunk and resolves with its body as
  // data, as request does, so that 40102 and 40104 can be retried. Without
  // onChunkReceived (base library < 2.20.1) the whole text comes at the end.
  function requestStream(opts, onChunk) {
    var p = prepare(opts);
    return withRetry(function (s) {
      return new Promise(function (resolve, reject) {
        var decoder = utf8Decoder();
        // Known at the headers on a phone; the developer tool tells it only
        // at the end, so text waits until then.
        var status = 0;
        var held = [];
        var streamed = false;
        function deliver(text) {
          if (!text) return;
          if (isOK(status)) { streamed = true; onChunk(text); } else held.push(text);
        }
        var task = wxApi.request({
          url: base + p.url, method: p.method, data: p.body, enableChunked: true, responseType: 'arraybuffer',
          header: signedHeaders(s, p.method, p.url, p.body, p.header),
          success: function (res) {
            learnClock(res.header);
            status = res.statusCode;
            if (!streamed && !held.length && res.data instanceof ArrayBuffer) deliver(decoder.decode(res.data));
            var tail = decoder.end();
            var out = { statusCode: res.statusCode, header: res.header };
            if (isOK(status)) {
              var pending = held.splice(0);
              for (var i = 0; i < pending.length; i++) onChunk(pending[i]);
              deliver(tail);
            } else {
              out.data = parseJSONText(held.join('') + tail);
            }
            resolve(out);
          },
          fail: function (err) { reject(new Error('edge: ' + ((err && err.errMsg) || 'request failed'))); }
        });
        if (task && task.onHeadersReceived) {
          task.onHeadersReceived(function (h) {
            learnClock(h.header);
            if (h.statusCode) status = h.statusCode;
          });
        }
        if (task && task.onChunkReceived) {
          task.onChunkReceived(function (c) { deliver(decoder.decode(c.data)); });
        }
      });
    });
  }

  // connectSocket({url: '/ws', query, header, protocols}) resolves to the
  // SocketTask of a signed upgrade request (a GET without a body).
  function connectSocket(opts) {
    var url = pathWithQuery(opts);
    return session().then(function (s) {
      return wxApi.connectSocket({
        url: wsBase + url, protocols: opts.protocols,
        header: signedHeaders(s, 'GET', url, '', opts.header)
      });
    });
  }

  return { login: login, request: request, requestStream: requestStream, uploadFile: uploadFile, connectSocket: connectSocket };
}

module.exports = {
  createClient: createClient,
  sign: sign,
  canonicalQuery: canonicalQuery,
  encodeQuery: encodeQuery,
  sha256: sha256,
  hmacSha256: hmacSha256,
  hex: hex,
  utf8: utf8,
  utf8Decoder: utf8Decoder,
  UNSIGNED_PAYLOAD: UNSIGNED_PAYLOAD
};
