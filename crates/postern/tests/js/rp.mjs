// An independent relying party for Postern's built-in identity provider, using openid-client.
// It discovers the issuer, prints an authorization URL (PKCE S256, state, nonce) as a JSON line,
// reads the callback URL the test's browser reached from stdin, and lets the library validate
// everything it validates for any OpenID provider: the ID token's ES256 signature against the
// JWKS, iss, aud, exp, iat, nonce, the iss response parameter; then userinfo and a refresh.
// Prints the results as one JSON line. Connects to CONNECT_HOST for every host (*.localhost
// names do not resolve here) and trusts CA_FILE.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Issuer, custom, generators } from 'openid-client';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

const connectHost = env('CONNECT_HOST');
custom.setHttpOptionsDefaults({
  ca: readFileSync(env('CA_FILE')),
  timeout: 10000,
  lookup: (_hostname, options, callback) =>
    options && options.all
      ? callback(null, [{ address: connectHost, family: 4 }])
      : callback(null, connectHost, 4),
});

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const issuer = await Issuer.discover(env('ISSUER'));
const client = new issuer.Client({
  client_id: env('CLIENT_ID'),
  client_secret: env('CLIENT_SECRET'),
  redirect_uris: [env('REDIRECT_URI')],
  response_types: ['code'],
  id_token_signed_response_alg: 'ES256',
  token_endpoint_auth_method: 'client_secret_basic',
});
const code_verifier = generators.codeVerifier();
const state = generators.state();
const nonce = generators.nonce();
const authorization_url = client.authorizationUrl({
  scope: 'openid email profile',
  code_challenge: generators.codeChallenge(code_verifier),
  code_challenge_method: 'S256',
  state,
  nonce,
});
console.log(JSON.stringify({ authorization_url }));

const { value: callback } = await lines.next();
const params = client.callbackParams(callback.trim());
const tokens = await client.callback(env('REDIRECT_URI'), params, { code_verifier, state, nonce });
const userinfo = await client.userinfo(tokens.access_token);
const refreshed = await client.refresh(tokens.refresh_token);
console.log(JSON.stringify({
  claims: tokens.claims(),
  userinfo,
  refreshed_claims: refreshed.claims(),
  rotated: refreshed.refresh_token !== tokens.refresh_token,
}));
process.exit(0);
