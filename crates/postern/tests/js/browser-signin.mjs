// Signs in to a Postern app in headless Chromium, as a user would, then signs out.
//
// Usage: node browser-signin.mjs '{"url": "https://wiki.localhost:PORT/docs?x=1",
//                                  "email": "...", "password": "...",
//                                  "signedOutAtApp": true}'
// (`signedOutAtApp: false` when the issuer shows its own signed-out page, as the built-in one
// does.)
// Prints one JSON line: {"afterSignIn": {"url", "body"}, "cookies": [...],
//                        "edgeAsked": {"url", "text"}, "cookiesAtConfirm": [...],
//                        "afterSignOut": {"url", "text"}, "cookiesAfterSignOut": [...]}.

import { launch } from './chromium.mjs';

const args = JSON.parse(process.argv[2]);
const browser = await launch();
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(args.url);
  // The issuer's sign-in page, reached through the edge's redirect.
  await page.getByLabel('Email').fill(args.email);
  await page.getByLabel('Password').fill(args.password);
  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(new URL(args.url).origin)),
    page.getByRole('button', { name: 'Sign in', exact: true }).click(),
  ]);
  const afterSignIn = { url: page.url(), body: await page.locator('body').innerText() };
  const cookies = await context.cookies(args.url);

  // Opening the sign-out address only asks; the edge's own form (a same-origin POST) signs out.
  await page.goto(new URL('/.postern/signout', args.url).href);
  const edgeAsked = { url: page.url(), text: await page.locator('body').innerText() };
  const cookiesAtConfirm = await context.cookies(args.url);
  await Promise.all([
    page.waitForURL((u) => u.pathname !== '/.postern/signout'),
    page.getByRole('button', { name: 'Sign out', exact: true }).click(),
  ]);
  // The issuer asks to confirm the sign-out at its end.
  const confirm = page.getByRole('button', { name: /yes|sign me out|sign out|logout/i });
  if (await confirm.count()) {
    await Promise.all([page.waitForLoadState(), confirm.first().click()]);
  }
  if (args.signedOutAtApp !== false) {
    await page.waitForURL((u) => u.pathname === '/.postern/signed-out', { timeout: 10000 });
  } else {
    await page.waitForLoadState();
  }
  const afterSignOut = { url: page.url(), text: await page.locator('body').innerText() };
  const cookiesAfterSignOut = await context.cookies(args.url);
  process.stdout.write(`${JSON.stringify({
    afterSignIn, cookies, edgeAsked, cookiesAtConfirm, afterSignOut, cookiesAfterSignOut,
  })}\n`);
} finally {
  await browser.close();
}
