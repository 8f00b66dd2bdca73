// A real OpenID provider for the end-to-end tests: the npm package `oidc-provider` (OpenID
// Certified), on 127.0.0.1 and an ephemeral port. Its only additions are a plain login page
// (email, password, and a "second factor" box that sets amr/acr as an MFA sign-in would) and a
// grant that allows the scopes the edge asks for.
//
// Usage: node issuer.mjs CONFIG_JSON
//   CONFIG_JSON = {"clients": [oidc-provider client metadata...],
//                  "accounts": {"<sub>": {"email", "password", "name", "groups": [...],
//                                         "email_verified": true | false | null}}}
//   (`email_verified` defaults to true; null leaves the claim out.)
// Prints one line of JSON, {"issuer": "http://127.0.0.1:PORT"}, once it is listening.

import http from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? '{}');
const accounts = config.accounts ?? {};

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; if (body.length > 65536) req.destroy(); });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: config.clients ?? [],
    acrValues: ['pwd', 'mfa'],
    claims: {
      // The authentication methods and class are released with every ID token, as the edge's
      // MFA rule reads them there.
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: ['name', 'groups'],
    },
    // Identity claims go in the ID token itself, as the edge reads them there.
    conformIdTokenClaims: false,
    cookies: { keys: ['postern-tests-only'] },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
    async findAccount(ctx, id) {
      const account = accounts[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          const claims = {
            sub: id,
            email: account.email,
            name: account.name,
            groups: account.groups ?? [],
          };
          const verified = 'email_verified' in account ? account.email_verified : true;
          if (verified !== null) claims.email_verified = verified;
          return claims;
        },
      };
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email profile');
      grant.addOIDCClaims(['email', 'email_verified', 'name', 'groups']);
      await grant.save();
      return grant;
    },
  });
  const callback = provider.callback();

  server.on('request', async (req, res) => {
    const match = /^\/interaction\/([^/?]+)(\/login)?/.exec(req.url);
    if (!match) return callback(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      if (req.method === 'GET') {
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(`<!doctype html><html lang="en"><head><title>Sign in</title></head><body>
<h1>Sign in to ${escape(details.params.client_id)}</h1>
<form method="post" action="/interaction/${escape(details.uid)}/login">
<label>Email <input name="email" type="email" autofocus></label>
<label>Password <input name="password" type="password"></label>
<label><input name="mfa" type="checkbox" value="1"> I used my second factor</label>
<button type="submit">Sign in</button>
</form></body></html>`);
      }
      const form = await readForm(req);
      const id = Object.keys(accounts).find((k) => accounts[k].email === form.get('email'));
      if (!id || accounts[id].password !== form.get('password')) {
        res.statusCode = 401;
        return res.end('wrong email or password');
      }
      const mfa = form.get('mfa') === '1';
      await provider.interactionFinished(req, res, {
        login: { accountId: id, amr: mfa ? ['pwd', 'otp'] : ['pwd'], acr: mfa ? 'mfa' : 'pwd' },
      }, { mergeWithLastSubmission: false });
    } catch (err) {
      res.statusCode = 400;
      res.end(`interaction failed: ${err.message}`);
    }
  });

  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
