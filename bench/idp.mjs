// Load generator of bench/idp.sh: password sign-ins and token requests against the built-in
// identity provider of a running Postern edge. Node 20, built-in modules only.
//
//   node idp.mjs MODE CONFIG.json
//
//   check    one sign-in, its code redeemed, the ID token's signature checked against /jwks,
//            one refresh: proves the flow before anything is timed
//   signin   IDP_CONCURRENCY clients sign in for `seconds`; the codes go to WORK/codes.json
//   redeem   every code of codes.json redeemed once (with its PKCE verifier); the refresh
//            tokens go to WORK/refresh.json
//   refresh  refresh-token grants for `seconds`, each client rotating its own tokens
//
// CONFIG (written by idp.sh): host, port, ca, clientId, clientSecret, redirectUri, password,
// users, concurrency, seconds, sourceAddresses, work.
//
// Progress and errors go to stderr; the figures to stdout as one line:
//   IDP_RESULT mode=… done=N seconds=S rate=R p50_ms=… p99_ms=… errors=E [more=…]

import { createHash, createPublicKey, randomBytes, verify as verifySignature } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const [mode, configFile] = process.argv.slice(2);
if (!['check', 'signin', 'redeem', 'refresh'].includes(mode) || !configFile) {
  console.error('usage: node idp.mjs check|signin|redeem|refresh CONFIG.json');
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(configFile, 'utf8'));
const ca = readFileSync(cfg.ca);
const origin = `https://${cfg.host}:${cfg.port}`;
const REQUEST_TIMEOUT_MS = 30_000;
// The provider keeps a code for 60 s (postern_idp::CODE_LIFETIME); older ones are skipped
// rather than counted as errors, with a margin for the redemption run itself.
const CODE_MAX_AGE_MS = 50_000;

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const sha256 = (s) => createHash('sha256').update(s).digest();
const log = (msg) => console.error(`[idp.mjs] ${msg}`);

/** A failed step: `kind` names the step and what it got, so errors can be counted by kind. */
class StepError extends Error {
  constructor(kind, detail = '', retryAfter = 0) {
    super(detail ? `${kind}: ${detail}` : kind);
    this.kind = kind;
    this.retryAfter = retryAfter;
  }
}

/**
 * One HTTP/1.1 request to the provider's host over `agent`. The edge is dialled at 127.0.0.1
 * with the provider's name as SNI and Host (`*.localhost` does not resolve through glibc here),
 * and its certificate is checked against the edge's CA for that name.
 */
function request(agent, method, path, { headers = {}, form, localAddress } = {}) {
  const body = form ? new URLSearchParams(form).toString() : undefined;
  const h = { host: `${cfg.host}:${cfg.port}`, ...headers };
  if (body !== undefined) {
    h['content-type'] = 'application/x-www-form-urlencoded';
    h['content-length'] = Buffer.byteLength(body);
  }
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: cfg.port, servername: cfg.host, ca, agent, method, path, headers: h, localAddress },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer in ${REQUEST_TIMEOUT_MS / 1000} s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** `request`, with a transport failure turned into a StepError of `step`. */
async function call(step, agent, method, path, opts) {
  try {
    return await request(agent, method, path, opts);
  } catch (e) {
    throw new StepError(`${step} failed`, e.code || e.message);
  }
}

/** Throws unless `res` has `status`; the kind names the step and what came instead. */
function expectStatus(step, res, status) {
  if (res.status === status) return;
  const retry = Number(res.headers['retry-after']) || 0;
  let detail = '';
  try { detail = JSON.parse(res.body).error || ''; } catch { /* an HTML page */ }
  throw new StepError(`${step} -> ${res.status}${detail ? ` ${detail}` : ''}`, '', retry);
}

/** name=value of the cookie `name` among a response's Set-Cookie headers. */
function cookie(res, name) {
  for (const c of res.headers['set-cookie'] || []) {
    const pair = c.split(';', 1)[0];
    if (pair.startsWith(`${name}=`)) return pair;
  }
  return undefined;
}

/** The value of hidden field `name` in the sign-in page. */
function field(html, name) {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  return m ? m[1].replaceAll('&amp;', '&') : undefined;
}

/** The path and query of a redirect that must stay on the provider's origin. */
function providerPath(step, res) {
  const loc = new URL(res.headers.location || '', origin);
  if (loc.origin !== origin) throw new StepError(`${step} redirected off the provider`, loc.origin);
  return loc.pathname + loc.search;
}

function basicAuth() {
  const enc = (s) => encodeURIComponent(s);  // RFC 6749 section 2.3.1: form-encoded first
  return 'Basic ' + Buffer.from(`${enc(cfg.clientId)}:${enc(cfg.clientSecret)}`).toString('base64');
}

/**
 * A browser's full password sign-in, as a fresh browser (no cookies) on one new connection:
 * GET /authorize (303 to the form), GET /signin (the form and its CSRF cookie), POST /signin
 * (the password; 303 with the session cookie), GET /continue (303 back to the client with a
 * code). Returns the code, its PKCE verifier and nonce, and the timings.
 */
async function signIn(email, localAddress) {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const verifier = b64url(randomBytes(32));
    const state = b64url(randomBytes(12));
    const nonce = b64url(randomBytes(12));
    const query = new URLSearchParams({
      response_type: 'code', client_id: cfg.clientId, redirect_uri: cfg.redirectUri,
      scope: 'openid email profile', state, nonce,
      code_challenge: b64url(sha256(verifier)), code_challenge_method: 'S256',
    });
    const opts = { localAddress };
    const t0 = performance.now();

    let res = await call('GET /authorize', agent, 'GET', `/authorize?${query}`, opts);
    expectStatus('GET /authorize', res, 303);
    const formPath = providerPath('GET /authorize', res);

    res = await call('GET /signin', agent, 'GET', formPath, opts);
    expectStatus('GET /signin', res, 200);
    const csrfCookie = cookie(res, '__Host-postern-csrf');
    const csrf = field(res.body, 'csrf');
    const req = field(res.body, 'req');
    if (!csrfCookie || !csrf || !req) throw new StepError('GET /signin: no form fields or CSRF cookie');

    const tPost = performance.now();
    res = await call('POST /signin', agent, 'POST', '/signin', {
      ...opts, headers: { cookie: csrfCookie }, form: { csrf, req, email, password: cfg.password },
    });
    expectStatus('POST /signin', res, 303);
    const postMs = performance.now() - tPost;
    const session = cookie(res, '__Host-postern-idp');
    if (!session) throw new StepError('POST /signin: no session cookie');
    const continuePath = providerPath('POST /signin', res);

    res = await call('GET /continue', agent, 'GET', continuePath, {
      ...opts, headers: { cookie: `${csrfCookie}; ${session}` },
    });
    expectStatus('GET /continue', res, 303);
    const back = new URL(res.headers.location || '', origin);
    if (`${back.origin}${back.pathname}` !== cfg.redirectUri) {
      throw new StepError('GET /continue: not redirected to the client', back.href.slice(0, 80));
    }
    const p = back.searchParams;
    if (p.get('error')) throw new StepError(`GET /continue: error ${p.get('error')}`);
    if (!p.get('code') || p.get('state') !== state || p.get('iss') !== origin) {
      throw new StepError('GET /continue: bad redirect (code, state or iss)');
    }
    return { code: p.get('code'), verifier, nonce, email, at: Date.now(), ms: performance.now() - t0, postMs };
  } finally {
    agent.destroy();
  }
}

/** A token-endpoint request with client_secret_basic; returns the parsed 200 answer. */
async function tokenRequest(agent, step, form) {
  const res = await call(step, agent, 'POST', '/token', { headers: { authorization: basicAuth() }, form });
  expectStatus(step, res, 200);
  let body;
  try { body = JSON.parse(res.body); } catch { throw new StepError(`${step}: answer is not JSON`); }
  if (body.token_type !== 'Bearer' || !body.access_token || !body.id_token || !body.refresh_token) {
    throw new StepError(`${step}: answer lacks a token`);
  }
  return body;
}

const redeem = (agent, c) => tokenRequest(agent, 'POST /token code', {
  grant_type: 'authorization_code', code: c.code, redirect_uri: cfg.redirectUri, code_verifier: c.verifier,
});
const refresh = (agent, token) => tokenRequest(agent, 'POST /token refresh', {
  grant_type: 'refresh_token', refresh_token: token,
});

/** The source address of sign-in client `i`: its own loopback address, or 127.0.0.1. */
function sourceAddress(i) {
  if (!cfg.sourceAddresses) return undefined;
  return `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;
}

// ---------------------------------------------------------------------------------------------
// Closed-loop runs and their figures
// ---------------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Nearest-rank percentile of sorted numbers. */
function percentile(sorted, p) {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/**
 * Runs `workers` loops of `one(worker)` until `more(worker)` says stop; each call's latency is
 * kept, each failure counted by kind. A throttled or busy answer is waited out (up to a second)
 * before the worker goes on, so a refusing provider is not hammered in a tight loop.
 */
async function closedLoop(workers, more, one) {
  const latencies = [];
  const errors = new Map();
  const start = performance.now();
  let end = start;
  await Promise.all(Array.from({ length: workers }, async (_, w) => {
    while (more(w)) {
      const t = performance.now();
      try {
        await one(w);
        latencies.push(performance.now() - t);
      } catch (e) {
        const kind = e instanceof StepError ? e.kind : `unexpected: ${e.message}`;
        errors.set(kind, (errors.get(kind) || 0) + 1);
        if (e.retryAfter) await sleep(Math.min(e.retryAfter, 1) * 1000);
      }
      end = performance.now();
    }
  }));
  return { latencies, errors, seconds: (end - start) / 1000 };
}

function report(run, extra = {}) {
  const sorted = run.latencies.slice().sort((a, b) => a - b);
  const errors = [...run.errors.values()].reduce((a, b) => a + b, 0);
  for (const [kind, n] of run.errors) log(`${mode}: ${n} x ${kind}`);
  const fields = {
    mode, done: sorted.length, seconds: run.seconds.toFixed(3),
    rate: (run.seconds > 0 ? sorted.length / run.seconds : 0).toFixed(1),
    p50_ms: percentile(sorted, 50).toFixed(1), p99_ms: percentile(sorted, 99).toFixed(1),
    errors, ...extra,
  };
  console.log('IDP_RESULT ' + Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(' '));
}

/** Workers run until the deadline; ones still in flight then finish and count. */
const until = (deadline) => () => performance.now() < deadline;

// ---------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------

async function modeSignin() {
  const C = cfg.concurrency;
  // Client w signs in as users w, w+C, w+2C…: no account ever has two sign-ins in flight, so
  // the per-account throttle (which counts an attempt as a failure until its password checks
  // out) never sees more than one, as with people signing in at once.
  const turn = new Array(C).fill(0);
  const codes = [];
  const post = [];
  const deadline = performance.now() + cfg.seconds * 1000;
  const run = await closedLoop(C, until(deadline), async (w) => {
    const mine = Math.ceil((cfg.users.length - w) / C);
    const email = cfg.users[w + C * (turn[w]++ % mine)];
    const s = await signIn(email, sourceAddress(w));
    codes.push({ code: s.code, verifier: s.verifier, at: s.at });
    post.push(s.postMs);
  });
  writeFileSync(join(cfg.work, 'codes.json'), JSON.stringify(codes));
  post.sort((a, b) => a - b);
  report(run, { post_p50_ms: percentile(post, 50).toFixed(1), post_p99_ms: percentile(post, 99).toFixed(1) });
}

async function modeRedeem() {
  const all = JSON.parse(readFileSync(join(cfg.work, 'codes.json'), 'utf8'));
  const now = Date.now();
  const codes = all.filter((c) => now - c.at < CODE_MAX_AGE_MS);
  if (codes.length < all.length) log(`${all.length - codes.length} codes older than ${CODE_MAX_AGE_MS / 1000} s skipped (about to expire)`);
  // The relying party's server: every request from 127.0.0.1, each client on one keep-alive
  // connection.
  const agents = Array.from({ length: cfg.concurrency }, () => new https.Agent({ keepAlive: true, maxSockets: 1 }));
  const refreshTokens = [];
  let next = 0;
  const run = await closedLoop(cfg.concurrency, () => next < codes.length, async (w) => {
    const body = await redeem(agents[w], codes[next++]);
    refreshTokens.push(body.refresh_token);
  });
  agents.forEach((a) => a.destroy());
  writeFileSync(join(cfg.work, 'refresh.json'), JSON.stringify(refreshTokens));
  report(run, { skipped: all.length - codes.length });
}

async function modeRefresh() {
  const tokens = JSON.parse(readFileSync(join(cfg.work, 'refresh.json'), 'utf8'));
  // A refresh token is used once and replaced (rotation), so each client owns its own tokens
  // and rotates them in turn; a token presented twice would revoke its family.
  const workers = Math.min(cfg.concurrency, tokens.length);
  if (workers === 0) throw new Error('no refresh tokens to use (did the redemptions fail?)');
  const owned = Array.from({ length: workers }, (_, w) => tokens.filter((_, i) => i % workers === w));
  const turn = new Array(workers).fill(0);
  const agents = Array.from({ length: workers }, () => new https.Agent({ keepAlive: true, maxSockets: 1 }));
  const deadline = performance.now() + cfg.seconds * 1000;
  const run = await closedLoop(workers, (w) => owned[w].length > 0 && performance.now() < deadline, async (w) => {
    const i = turn[w]++ % owned[w].length;
    try {
      owned[w][i] = (await refresh(agents[w], owned[w][i])).refresh_token;
    } catch (e) {
      owned[w].splice(i, 1);  // its family may be revoked now: not used again
      throw e;
    }
  });
  agents.forEach((a) => a.destroy());
  report(run, { clients: workers });
}

/** Verifies an ES256 JWT against the provider's JWKS; returns its claims. */
async function verifyJwt(jwt) {
  const [h, p, s] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const agent = new https.Agent();
  const res = await call('GET /jwks', agent, 'GET', '/jwks');
  agent.destroy();
  expectStatus('GET /jwks', res, 200);
  const jwk = JSON.parse(res.body).keys.find((k) => k.kid === header.kid);
  if (header.alg !== 'ES256' || !jwk) throw new Error(`ID token: alg ${header.alg}, kid ${header.kid} not in /jwks`);
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  const ok = verifySignature('sha256', Buffer.from(`${h}.${p}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'));
  if (!ok) throw new Error('ID token: the signature does not verify against /jwks');
  return JSON.parse(Buffer.from(p, 'base64url'));
}

async function modeCheck() {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  const disc = await call('GET discovery', agent, 'GET', '/.well-known/openid-configuration');
  expectStatus('GET discovery', disc, 200);
  if (JSON.parse(disc.body).issuer !== origin) throw new Error(`discovery: issuer is not ${origin}`);

  const email = cfg.users[0];
  const s = await signIn(email, sourceAddress(0));
  const tokens = await redeem(agent, s);
  const claims = await verifyJwt(tokens.id_token);
  const bad = Object.entries({ iss: origin, aud: cfg.clientId, nonce: s.nonce, email })
    .filter(([k, v]) => claims[k] !== v).map(([k]) => k);
  if (bad.length) throw new Error(`ID token: wrong ${bad.join(', ')}`);
  const again = await refresh(agent, tokens.refresh_token);
  if (again.refresh_token === tokens.refresh_token) throw new Error('refresh: the refresh token was not rotated');
  agent.destroy();
  log(`check: signed in as ${email} in ${s.ms.toFixed(0)} ms; code redeemed; ES256 ID token verified against /jwks (amr ${JSON.stringify(claims.amr)}); refresh rotated`);
  console.log(`IDP_RESULT mode=check done=1 errors=0`);
}

try {
  await { check: modeCheck, signin: modeSignin, redeem: modeRedeem, refresh: modeRefresh }[mode]();
} catch (e) {
  log(`${mode} failed: ${e.message}`);
  process.exit(1);
}
