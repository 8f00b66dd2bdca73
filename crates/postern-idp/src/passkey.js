// Passkeys on Postern's sign-in pages: sign in with one (the sign-in and second-step pages), and
// add one (the account page). The pages work without this script for passwords and codes; the
// passkey controls stay hidden unless the browser has WebAuthn.
'use strict';
(() => {
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  const fromB64 = (s) => {
    const b = atob(s.replace(/-/g, '+').replace(/_/g, '/'));
    return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
  };
  const toB64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

  const post = async (url, body) => {
    const resp = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(json.message || `The sign-in service answered ${resp.status}.`);
    return json;
  };

  const explain = (e) => (e && e.name === 'NotAllowedError'
    ? 'The passkey request was cancelled or timed out. Try again.'
    : (e && e.name === 'InvalidStateError'
      ? 'This device already holds a passkey for your account.'
      : (e && e.message) || String(e)));

  const wire = (box, button, run) => {
    const error = box.querySelector('.error');
    box.hidden = false;
    button.addEventListener('click', async () => {
      error.hidden = true;
      button.disabled = true;
      try {
        await run();
      } catch (e) {
        error.textContent = explain(e);
        error.hidden = false;
      } finally {
        button.disabled = false;
      }
    });
  };

  const signin = document.getElementById('passkey-signin');
  if (signin) {
    wire(signin, document.getElementById('passkey-button'), async () => {
      const { req, csrf } = signin.dataset;
      const start = await post('/signin/passkey/start', { req, csrf });
      const options = start.publicKey;
      options.challenge = fromB64(options.challenge);
      (options.allowCredentials || []).forEach((c) => { c.id = fromB64(c.id); });
      const cred = await navigator.credentials.get({ publicKey: options });
      const done = await post('/signin/passkey/finish', {
        req,
        csrf,
        ceremony: start.ceremony,
        credential: {
          id: cred.id,
          rawId: toB64(cred.rawId),
          type: cred.type,
          response: {
            authenticatorData: toB64(cred.response.authenticatorData),
            clientDataJSON: toB64(cred.response.clientDataJSON),
            signature: toB64(cred.response.signature),
            userHandle: cred.response.userHandle ? toB64(cred.response.userHandle) : null,
          },
          clientExtensionResults: cred.getClientExtensionResults(),
        },
      });
      window.location.assign(done.redirect);
    });
  }

  const enrol = document.getElementById('passkey-enrol');
  if (enrol) {
    wire(enrol, document.getElementById('passkey-add'), async () => {
      const { csrf } = enrol.dataset;
      const start = await post('/account/passkeys/start', { csrf });
      const options = start.publicKey;
      options.challenge = fromB64(options.challenge);
      options.user.id = fromB64(options.user.id);
      (options.excludeCredentials || []).forEach((c) => { c.id = fromB64(c.id); });
      const cred = await navigator.credentials.create({ publicKey: options });
      await post('/account/passkeys/finish', {
        csrf,
        ceremony: start.ceremony,
        name: document.getElementById('passkey-name').value,
        credential: {
          id: cred.id,
          rawId: toB64(cred.rawId),
          type: cred.type,
          response: {
            attestationObject: toB64(cred.response.attestationObject),
            clientDataJSON: toB64(cred.response.clientDataJSON),
            transports: cred.response.getTransports ? cred.response.getTransports() : [],
          },
          clientExtensionResults: cred.getClientExtensionResults(),
        },
      });
      window.location.reload();
    });
  }
})();
