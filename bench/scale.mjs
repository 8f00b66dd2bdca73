// The Node side of bench/scale.sh (see bench/README.md):
//
//   node scale.mjs backend PORT     the app behind Postern: a WebSocket echo server, and
//                                   GET /small answering 64 bytes, on 127.0.0.1:PORT
//   node scale.mjs websockets       opens SCALE_WEBSOCKETS WebSockets through the edge, has each
//                                   echo a message every few seconds, prints one JSON result
//   node scale.mjs idle             opens SCALE_IDLE_CONNECTIONS HTTPS connections, one GET each,
//                                   keeps them open idle, prints one JSON result
//   node scale.mjs report WS IDLE   prints the table from the two results; exits 1 on a failure
//
// The client modes take their settings from the environment (scale.sh sets them all) and sample
// the VmRSS of the edge and connector themselves, so that each sample is taken exactly at the
// moment it describes (before, all open, end, after close). Progress goes to stderr.

import fs from 'node:fs';
import http from 'node:http';
import tls from 'node:tls';
import { WebSocket, WebSocketServer } from 'ws';

const SMALL_BODY = 'x'.repeat(64);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (msg) => process.stderr.write(`[scale] ${msg}\n`);

function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (fallback === undefined) throw new Error(`${name} is not set`);
    return fallback;
  }
  return v;
}
const envInt = (name, fallback) => Number.parseInt(env(name, fallback), 10);

// VmRSS in KiB of the processes named in SCALE_PIDS ("edge=123 connector=456 backend=789");
// null for one that is gone (a crash shows up as a missing figure, not a zero).
function rss() {
  const out = {};
  for (const pair of env('SCALE_PIDS').split(/\s+/).filter(Boolean)) {
    const [name, pid] = pair.split('=');
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      out[name] = m ? Number(m[1]) : null;
    } catch {
      out[name] = null;
    }
  }
  return out;
}

// Failure reasons counted by kind; the message is cut at the first digit run that varies per
// socket (ports, addresses) so the same failure does not spread over a thousand keys.
function reasonOf(err) {
  const msg = err && (err.code || err.message) ? (err.code || err.message) : String(err);
  return msg.replace(/127\.0\.0\.1:\d+/g, '127.0.0.1:PORT');
}
function count(map, key) {
  map[key] = (map[key] || 0) + 1;
}

// Runs `task(i)` for i in [0, n) with at most `concurrency` running at once: sockets are opened
// at a bounded rate, so the figure is what holding them costs, not how the edge copes with a
// handshake storm (bench/run.sh and the soak test cover that).
async function bounded(n, concurrency, task) {
  let next = 0;
  const worker = async () => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function clientSettings() {
  const host = env('SCALE_HOST');
  const port = envInt('SCALE_EDGE_PORT');
  return {
    host,
    port,
    // The edge's own CA: the certificate it shows for the app's host is checked.
    ca: fs.readFileSync(env('SCALE_CA')),
    concurrency: envInt('SCALE_OPEN_CONCURRENCY', '200'),
    settleMs: envInt('SCALE_SETTLE_SECONDS', '3') * 1000,
    releaseMs: envInt('SCALE_RELEASE_SECONDS', '15') * 1000,
    // Generous for one open on loopback (the edge's own handshake timeout is 10 s), short enough
    // that sockets the edge never answers do not stall the run for long.
    openTimeoutMs: 15_000,
  };
}

// ---------------------------------------------------------------------------------------------
// backend
// ---------------------------------------------------------------------------------------------
function backend(port) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': SMALL_BODY.length });
    res.end(SMALL_BODY);
  });
  // The connector keeps backend connections in its pool for 90 s; Node's default of 5 s would
  // have the backend close them under it, a race this benchmark is not about.
  server.keepAliveTimeout = 120_000;
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => {});
  });
  server.listen(port, '127.0.0.1', () => log(`backend listening on 127.0.0.1:${port}`));
}

// ---------------------------------------------------------------------------------------------
// websockets
// ---------------------------------------------------------------------------------------------
async function websockets() {
  const s = clientSettings();
  const n = envInt('SCALE_WEBSOCKETS');
  const seconds = envInt('SCALE_SECONDS', '20');
  const intervalMs = envInt('SCALE_MESSAGE_INTERVAL', '5') * 1000;
  const r = {
    kind: 'websockets', n, seconds, interval_s: intervalMs / 1000, concurrency: s.concurrency,
    opened: 0, open_failures: {}, open_seconds: 0,
    sent: 0, echoed: 0, mismatched: 0, lost: 0, dropped: 0, drop_reasons: {},
    rtt_ms: {}, rss: {},
  };
  r.rss.before = rss();

  const sockets = [];
  const t0 = Date.now();
  let lastReport = t0;
  await bounded(n, s.concurrency, (i) => new Promise((resolve) => {
    const ws = new WebSocket(`wss://${s.host}:${s.port}/`, {
      // Dial the edge on loopback; the URL's host still goes out as SNI and Host.
      createConnection: (opts) => tls.connect({ ...opts, host: '127.0.0.1', servername: s.host }),
      ca: s.ca,
      perMessageDeflate: false,
      handshakeTimeout: s.openTimeoutMs,
    });
    ws.expected = [];   // messages sent and not echoed yet, oldest first: [text, sent at]
    // The first outcome counts: a refused upgrade or a handshake error is followed by more
    // events for the same socket (ws reports the abort, then the close).
    let settled = false;
    const failed = (why) => {
      if (settled) return;
      settled = true;
      count(r.open_failures, why);
      resolve();
    };
    ws.once('open', () => {
      settled = true;
      sockets.push(ws);
      r.opened++;
      ws.on('close', (code) => {
        // Closed before we closed it: the edge, connector or backend dropped it.
        if (!ws.closing) {
          r.dropped++;
          count(r.drop_reasons, `close ${code}`);
        }
      });
      resolve();
    });
    ws.on('unexpected-response', (_req, res) => {
      failed(`HTTP ${res.statusCode}`);
      res.resume();
      ws.terminate();
    });
    ws.on('error', (err) => failed(reasonOf(err)));
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now();
      log(`websockets: ${i} of ${n} attempted, ${r.opened} open`);
    }
  }));
  r.open_seconds = (Date.now() - t0) / 1000;
  log(`websockets: ${r.opened} of ${n} open in ${r.open_seconds.toFixed(1)} s; idle ${s.settleMs / 1000} s`);

  // "Open and idle": nothing sent yet, the edge and connector holding only the sockets.
  await sleep(s.settleMs);
  r.rss.open = rss();

  // Each socket sends on its own schedule, first at a random point of the first interval, so
  // the load is spread evenly (about opened / interval messages a second).
  const rtts = [];
  let seq = 0;
  const timers = [];
  const stopAt = Date.now() + seconds * 1000;
  for (const ws of sockets) {
    ws.on('message', (data) => {
      const text = data.toString();
      const head = ws.expected.shift();
      if (head && head[0] === text) {
        r.echoed++;
        rtts.push(performance.now() - head[1]);
      } else {
        r.mismatched++;
        if (head) ws.expected.unshift(head);   // an echo we did not expect: keep waiting for ours
      }
    });
    const send = () => {
      if (Date.now() >= stopAt || ws.readyState !== WebSocket.OPEN) return;
      const text = `echo ${seq++} ${'.'.repeat(16)}`;
      ws.expected.push([text, performance.now()]);
      ws.send(text);
      r.sent++;
      timers.push(setTimeout(send, intervalMs));
    };
    timers.push(setTimeout(send, Math.random() * intervalMs));
  }
  while (Date.now() < stopAt) await sleep(250);

  // Echoes still on their way get a grace period; what is missing after it is lost.
  const graceEnd = Date.now() + 10_000;
  const pending = () => sockets.reduce((sum, ws) => sum + ws.expected.length, 0);
  while (pending() > 0 && Date.now() < graceEnd) await sleep(100);
  timers.forEach(clearTimeout);
  r.lost = pending();
  rtts.sort((a, b) => a - b);
  r.rtt_ms = { p50: percentile(rtts, 50), p99: percentile(rtts, 99), max: rtts.at(-1) ?? null };
  r.rss.end = rss();
  log(`websockets: sent ${r.sent}, echoed ${r.echoed}, mismatched ${r.mismatched}, lost ${r.lost}, dropped ${r.dropped}`);

  // Closed by us (a clean close handshake), then time for the edge's allocator to hand idle pages
  // back (jemalloc's background thread, about 10 s): does memory come back?
  await Promise.all(sockets.map((ws) => new Promise((resolve) => {
    ws.closing = true;
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    ws.once('close', resolve);
    ws.close(1000);
    setTimeout(() => { ws.terminate(); resolve(); }, 10_000).unref();
  })));
  await sleep(s.releaseMs);
  r.rss.after = rss();
  return r;
}

// ---------------------------------------------------------------------------------------------
// idle
// ---------------------------------------------------------------------------------------------
async function idle() {
  const s = clientSettings();
  const n = envInt('SCALE_IDLE_CONNECTIONS');
  const request = `GET /small HTTP/1.1\r\nHost: ${s.host}:${s.port}\r\n\r\n`;
  const r = {
    kind: 'idle', n, concurrency: s.concurrency,
    answered: 0, failures: {}, closed_idle: 0, closed_after_s: {}, open_at_sample: 0,
    open_seconds: 0, rss: {},
  };
  r.rss.before = rss();

  const conns = [];
  const idleFor = [];   // seconds each connection the edge closed had been idle
  const t0 = Date.now();
  let lastReport = t0;
  await bounded(n, s.concurrency, (i) => new Promise((resolve) => {
    let done = false;
    let answeredAt = 0;
    let buf = '';
    const sock = tls.connect({
      host: '127.0.0.1', port: s.port, servername: s.host, ca: s.ca, ALPNProtocols: ['http/1.1'],
    });
    const fail = (why) => {
      if (done) return;
      done = true;
      count(r.failures, why);
      sock.destroy();
      resolve();
    };
    sock.setTimeout(s.openTimeoutMs, () => fail('timeout'));
    sock.once('secureConnect', () => sock.write(request));
    sock.on('data', (chunk) => {
      if (done) return;
      buf += chunk.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const status = /^HTTP\/1\.1 (\d{3})/.exec(buf);
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(buf.slice(0, end + 2));
      if (!status || status[1] !== '200') return fail(`HTTP ${status ? status[1] : '?'}`);
      if (!length || buf.length - end - 4 < Number(length[1])) return;
      done = true;
      answeredAt = Date.now();
      r.answered++;
      sock.setTimeout(0);
      conns.push(sock);
      resolve();
    });
    sock.on('error', (err) => fail(reasonOf(err)));
    sock.on('close', () => {
      if (!done) {
        fail('closed before the answer');
      } else if (answeredAt && !sock.closing) {
        // The edge closed a connection we kept.
        r.closed_idle++;
        idleFor.push((Date.now() - answeredAt) / 1000);
      }
    });
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now();
      log(`idle: ${i} of ${n} attempted, ${r.answered} answered`);
    }
  }));
  r.open_seconds = (Date.now() - t0) / 1000;
  log(`idle: ${r.answered} of ${n} answered in ${r.open_seconds.toFixed(1)} s; idle ${s.settleMs / 1000} s`);

  await sleep(s.settleMs);
  r.rss.open = rss();
  r.open_at_sample = conns.filter((c) => !c.destroyed).length;
  idleFor.sort((a, b) => a - b);
  r.closed_after_s = { min: idleFor[0] ?? null, p50: percentile(idleFor, 50), max: idleFor.at(-1) ?? null };

  for (const c of conns) {
    c.closing = true;
    c.destroy();
  }
  await sleep(s.releaseMs);
  r.rss.after = rss();
  return r;
}

// ---------------------------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------------------------
function report(wsFile, idleFile) {
  const read = (f) => (f && fs.existsSync(f) && fs.statSync(f).size > 0
    ? JSON.parse(fs.readFileSync(f, 'utf8')) : null);
  const ws = read(wsFile);
  const id = read(idleFile);
  const problems = [];
  const mib = (k) => (k == null ? 'gone' : `${(k / 1024).toFixed(1)} MiB`);
  const kib = (k) => (k == null ? '-' : `${k.toFixed(1)} KiB`);
  const reasons = (m) => Object.entries(m).map(([k, v]) => `${v} × ${k}`).join(', ') || '-';
  const row = (label, value) => console.log(`  ${label.padEnd(42)} ${value}`);
  const delta = (a, b, names) => {
    if (!a || !b || names.some((n) => a[n] == null || b[n] == null)) return null;
    return names.reduce((sum, n) => sum + b[n] - a[n], 0);
  };
  const rssTable = (samples, columns) => {
    console.log(`  ${'VmRSS'.padEnd(22)}${columns.map(([, label]) => label.padStart(14)).join('')}`);
    for (const name of ['edge', 'connector', 'backend']) {
      const label = name === 'backend' ? 'backend (not counted)' : name;
      console.log(`  ${label.padEnd(22)}${columns.map(([k]) => mib(samples[k]?.[name]).padStart(14)).join('')}`);
    }
  };

  if (ws) {
    console.log(`\nWebSockets: ${ws.n} through one edge and one connector, opened ${ws.concurrency} at a time;` +
      ` one message every ${ws.interval_s} s per socket for ${ws.seconds} s`);
    row('opened', `${ws.opened} of ${ws.n} (in ${ws.open_seconds.toFixed(1)} s)`);
    row('failed opens', `${ws.n - ws.opened}: ${reasons(ws.open_failures)}`);
    row('messages sent', ws.sent);
    row('echoed', ws.echoed);
    row('mismatched', ws.mismatched);
    row('lost (no echo within 10 s after the end)', ws.lost);
    row('dropped (closed by the far side)', `${ws.dropped}: ${reasons(ws.drop_reasons)}`);
    row('echo round trip p50 / p99 / max', ['p50', 'p99', 'max']
      .map((k) => (ws.rtt_ms[k] == null ? '-' : `${ws.rtt_ms[k].toFixed(1)} ms`)).join(' / '));
    rssTable(ws.rss, [['before', 'before'], ['open', 'all open'], ['end', 'end'], ['after', 'after close']]);
    const d = delta(ws.rss.before, ws.rss.open, ['edge', 'connector']);
    const dEnd = delta(ws.rss.before, ws.rss.end, ['edge', 'connector']);
    const de = delta(ws.rss.before, ws.rss.open, ['edge']);
    const dc = delta(ws.rss.before, ws.rss.open, ['connector']);
    const per = (x) => (x == null || ws.opened === 0 ? null : x / ws.opened);
    row('per WebSocket, open and idle (edge+conn.)', `${kib(per(d))}  (edge ${kib(per(de))}, connector ${kib(per(dc))})`);
    row('per WebSocket, at the end (edge+conn.)', kib(per(dEnd)));
    if (ws.opened < ws.n) problems.push(`${ws.n - ws.opened} WebSockets failed to open`);
    if (ws.lost || ws.mismatched) problems.push(`${ws.lost} echoes lost, ${ws.mismatched} mismatched`);
    if (ws.dropped) problems.push(`${ws.dropped} WebSockets closed by the far side`);
    if (ws.opened > 0 && ws.sent === 0) problems.push('no WebSocket message was sent');
  }
  if (id) {
    console.log(`\nIdle HTTPS connections: ${id.n} at the edge, one GET /small each, then kept open idle;` +
      ` opened ${id.concurrency} at a time`);
    row('answered 200', `${id.answered} of ${id.n} (in ${id.open_seconds.toFixed(1)} s)`);
    row('refused or failed', `${id.n - id.answered}: ${reasons(id.failures)}`);
    row('still open when sampled', id.open_at_sample);
    row('closed by the edge while idle', id.closed_idle + (id.closed_idle
      ? ` (after ${['min', 'p50', 'max'].map((k) => id.closed_after_s[k].toFixed(1)).join(' / ')} s idle, min / p50 / max)`
      : ''));
    rssTable(id.rss, [['before', 'before'], ['open', 'all open'], ['after', 'after close']]);
    const de = delta(id.rss.before, id.rss.open, ['edge']);
    const dc = delta(id.rss.before, id.rss.open, ['connector']);
    const held = id.open_at_sample;
    row('edge per idle connection', held ? kib(de / held) : '-');
    row('connector, change over the phase (total)', dc == null ? '-' : `${(dc / 1024).toFixed(1)} MiB`);
    if (id.answered < id.n) problems.push(`${id.n - id.answered} idle connections refused or failed`);
    if (id.closed_idle) problems.push(`${id.closed_idle} idle connections closed by the edge`);
  }
  console.log(problems.length ? `\nFAILED: ${problems.join('; ')}` : '\nOK: every WebSocket opened and echoed, every connection answered');
  return problems.length ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
const [mode, ...args] = process.argv.slice(2);
switch (mode) {
  case 'backend':
    backend(Number(args[0]));
    break;
  case 'websockets':
  case 'idle': {
    const result = await (mode === 'websockets' ? websockets() : idle());
    process.stdout.write(`${JSON.stringify(result)}\n`);
    // Sockets the far side never closed must not keep the process alive.
    process.exit(0);
    break;
  }
  case 'report':
    process.exitCode = report(args[0], args[1]);
    break;
  default:
    log('usage: node scale.mjs backend PORT | websockets | idle | report WS.json IDLE.json');
    process.exit(2);
}
