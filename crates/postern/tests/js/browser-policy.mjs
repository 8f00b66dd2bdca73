// Conditional access as a user meets it in headless Chromium, signing in to Postern apps through
// the built-in provider: one app a location policy blocks, one that requires a passkey.
//
// Usage: node browser-policy.mjs '{"blocked": "https://reports.localhost:PORT/",
//          "passkeyApp": "https://payroll.localhost:PORT/", "idp": "https://login.localhost:PORT",
//          "email": "...", "password": "..."}'
// The user must have no authenticator yet: the first sign-in enrols one (the code computed
// here, as an authenticator app would).
// Prints one JSON line: {"blocked": {status, url, text}, "passwordAndCode": {status, url, text},
//   "passkey": {status, url, body}}.

import { createHmac } from 'node:crypto';
import { launch } from './chromium.mjs';

const args = JSON.parse(process.argv[2]);

/// RFC 6238 (SHA-1, 6 digits, 30 s) for a base32 secret, `steps` steps from now.
function totp(secret, steps) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '').toUpperCase()) {
    bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  }
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000) + steps));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1000000).padStart(6, '0');
}

const browser = await launch();
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const devtools = await context.newCDPSession(page);
  await devtools.send('WebAuthn.enable', { enableUI: false });
  await devtools.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  // The answer of the last navigation that reached `origin`.
  const landed = async (origin) => {
    await page.waitForURL((u) => u.origin === origin, { timeout: 15000 });
    await page.waitForLoadState();
    return page;
  };
  const statusOf = (origin) => page.waitForResponse(
    (r) => new URL(r.url()).origin === origin && r.request().isNavigationRequest()
      && r.status() !== 302 && r.status() !== 303,
    { timeout: 15000 },
  ).then((r) => r.status());
  const signIn = async () => {
    await page.getByLabel('Email').fill(args.email);
    await page.getByLabel('Password').fill(args.password);
    await Promise.all([
      page.waitForURL((u) => u.pathname.startsWith('/signin/mfa')),
      page.getByRole('button', { name: 'Sign in', exact: true }).click(),
    ]);
  };
  const result = {};

  // 1. The blocked app: password, then enrolling an authenticator, then the edge's refusal.
  const blocked = new URL(args.blocked).origin;
  await page.goto(args.blocked);
  await signIn();
  const secret = await page.locator('#secret').innerText();
  await page.locator('#code').fill(totp(secret, 0));
  await Promise.all([
    page.waitForLoadState(),
    page.getByRole('button', { name: 'Confirm' }).click(),
  ]);
  await page.locator('#recovery-codes').waitFor();
  let status = statusOf(blocked);
  await page.getByRole('link', { name: 'Continue' }).click();
  await landed(blocked);
  result.blocked = { status: await status, url: page.url(), text: await page.locator('body').innerText() };

  // 2. The passkey app: the provider's session (password and code) falls short, so the edge
  // sends the browser back for a fresh sign-in; password and code again still fall short.
  const passkeyApp = new URL(args.passkeyApp).origin;
  await page.goto(args.passkeyApp);
  await page.waitForURL((u) => u.pathname === '/signin', { timeout: 15000 });
  await signIn();
  await page.getByLabel(/6-digit code/).fill(totp(secret, 1));
  status = statusOf(passkeyApp);
  await page.getByRole('button', { name: 'Verify' }).click();
  await landed(passkeyApp);
  result.passwordAndCode = { status: await status, url: page.url(), text: await page.locator('body').innerText() };

  // 3. A passkey added at the account page (the sign-in above is recent), then a passkey
  // sign-in: admitted.
  await page.goto(`${args.idp}/account`);
  await page.getByLabel('Name for a new passkey').fill('Laptop');
  await Promise.all([
    page.waitForEvent('load'),
    page.getByRole('button', { name: 'Add a passkey' }).click(),
  ]);
  await page.locator('#passkeys').waitFor();
  await page.goto(args.passkeyApp);
  await page.waitForURL((u) => u.pathname === '/signin', { timeout: 15000 });
  status = statusOf(passkeyApp);
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
  await landed(passkeyApp);
  result.passkey = { status: await status, url: page.url(), body: await page.locator('body').innerText() };

  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await browser.close();
}
