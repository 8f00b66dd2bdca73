// Headless Chromium for the browser tests: Debian's build, with the flags this machine needs
// (no sandbox as root; no background networking, which the closed network would refuse).
// `*.localhost` reaches 127.0.0.1 in Chromium; the edge's certificate comes from its own test CA,
// which these throwaway profiles do not trust, so contexts ignore certificate errors.

import { chromium } from 'playwright-core';

export async function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}
