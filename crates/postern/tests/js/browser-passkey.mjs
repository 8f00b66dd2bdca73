// Enrols a passkey and signs in with it in headless Chromium, through its virtual authenticator
// (the DevTools WebAuthn domain: a CTAP2 platform authenticator with resident keys and user
// verification, as a phone or laptop with a screen lock would be).
//
// Usage: node browser-passkey.mjs '{"idp": "https://login.localhost:PORT",
//          "enrol": {"email": "...", "password": "...", "name": "Laptop"},   (optional)
//          "credentials": [...],                     (optional: keys from an earlier run)
//          "authorize": {"url": "...", "returnsTo": "https://app.example.com/callback"}}'
// Prints one JSON line: {"account": text of the account page after enrolment,
//   "returnedTo": the URL the provider redirected to (or null), "error": the passkey error shown
//   on the sign-in page (or null), "signinPage": {"passkeyButton", "csp"}, "credentials": [...]}.

import { launch } from './chromium.mjs';

const args = JSON.parse(process.argv[2]);
const browser = await launch();
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const devtools = await context.newCDPSession(page);
  await devtools.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await devtools.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  for (const credential of args.credentials || []) {
    await devtools.send('WebAuthn.addCredential', { authenticatorId, credential });
  }
  const result = { account: null, returnedTo: null, error: null, signinPage: null };

  if (args.enrol) {
    // The account page asks for a sign-in first, then offers to add a passkey.
    await page.goto(`${args.idp}/account`);
    await page.getByLabel('Email').fill(args.enrol.email);
    await page.getByLabel('Password').fill(args.enrol.password);
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/account'),
      page.getByRole('button', { name: 'Sign in', exact: true }).click(),
    ]);
    await page.getByLabel('Name for a new passkey').fill(args.enrol.name);
    await Promise.all([
      page.waitForEvent('load'),
      page.getByRole('button', { name: 'Add a passkey' }).click(),
    ]);
    await page.locator('#passkeys').waitFor();
    result.account = await page.locator('main').innerText();
    // Signed out everywhere: the next sign-in must come from the passkey alone.
    await context.clearCookies();
  }

  if (args.authorize) {
    // The client's redirect URI is not served anywhere: read where the provider sends the
    // browser from its last answer.
    const signin = await page.goto(args.authorize.url);
    const button = page.getByRole('button', { name: 'Sign in with a passkey' });
    result.signinPage = {
      passkeyButton: await button.isVisible(),
      csp: signin.headers()['content-security-policy'],
    };
    const returned = page.waitForResponse((r) => new URL(r.url()).pathname === '/continue', { timeout: 15000 })
      .then((r) => r.headers().location);
    const refused = page.locator('#passkey-error').waitFor({ state: 'visible', timeout: 15000 })
      .then(() => page.locator('#passkey-error').innerText());
    await button.click();
    const first = await Promise.race([returned.then((u) => ({ u })), refused.then((e) => ({ e }))]);
    result.returnedTo = first.u ?? null;
    result.error = first.e ?? null;
  }

  result.credentials = (await devtools.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await browser.close();
}
