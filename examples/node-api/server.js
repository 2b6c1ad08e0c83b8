// A mini-program API as edge runs it (docs/processes.md): no dependencies,
// the port from $PORT, a health path, and the caller's identity from the
// headers edge sets after it verified the session (X-WX-OPENID, X-WX-APPID).
'use strict';
const http = require('node:http');

const port = Number(process.env.PORT);
if (!port) {
  console.error('PORT is not set: run this app under edge ([upstreams.run])');
  process.exit(1);
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('ok');
    return;
  }
  const body = JSON.stringify({
    code: 0,
    data: {
      path: req.url,
      openid: req.headers['x-wx-openid'] || null,
      instance: process.env.EDGE_INSTANCE,
      pid: process.pid,
    },
  });
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});

server.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));

// edge stops an instance with SIGTERM and waits stop_grace: finish what is
// in flight, then exit.
process.on('SIGTERM', () => server.close(() => process.exit(0)));
