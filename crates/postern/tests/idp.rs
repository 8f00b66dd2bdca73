//! The built-in identity provider end to end, through the edge's public listener: the code flow
//! with PKCE, tokens verified against the JWKS, refresh rotation, logout, TOTP enrolment and
//! sign-in, throttling, and every bad input refused with its RFC error code.

mod common;

use std::collections::HashMap;

use base64::Engine;
use common::browser::{chromium, claims, query, Browser, Page, IDP_HOST};
use common::Edge;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

const PASSWORD: &str = "a long enough passphrase";
const REDIRECT: &str = "https://app.example.com/callback";
const BYE: &str = "https://app.example.com/bye";

struct Rp {
    client_id: String,
    secret: String,
}

async fn setup() -> (Edge, Rp) {
    setup_with(&[]).await
}

async fn setup_with(flags: &[&str]) -> (Edge, Rp) {
    let edge = Edge::start(flags).await;
    let pw = edge.dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let pw = pw.to_str().unwrap();
    edge.admin_ok(&[
        "user",
        "create",
        "ada@example.com",
        "--password-file",
        pw,
        "--admin",
        "--group",
        "eng",
        "--name",
        "Ada Lovelace",
    ])
    .await;
    edge.admin_ok(&[
        "user",
        "create",
        "bob@example.com",
        "--password-file",
        pw,
        "--require-mfa",
    ])
    .await;
    let out = edge
        .admin_ok(&[
            "--json",
            "client",
            "create",
            "Wiki",
            "--redirect-uri",
            REDIRECT,
            "--post-logout-redirect-uri",
            BYE,
        ])
        .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rp = Rp {
        client_id: v["client_id"].as_str().unwrap().to_owned(),
        secret: v["client_secret"].as_str().unwrap().to_owned(),
    };
    (edge, rp)
}

/// A user of the built-in directory with the test password, and `extra` flags.
async fn create_user(edge: &Edge, email: &str, extra: &[&str]) {
    edge.user(email, PASSWORD, extra).await;
}

/// A new browser's password sign-in to `rp` as `email`: the browser and the provider's answer.
async fn fresh_sign_in(edge: &Edge, rp: &Rp, email: &str) -> (Browser, Page) {
    let mut b = Browser::new(edge);
    let (_, challenge) = pkce();
    let page = b
        .sign_in(&authorize_url(rp, &challenge, ""), email, PASSWORD)
        .await;
    (b, page)
}

/// Starts the device grant for `rp` (RFC 8628 section 3.1).
async fn start_device(edge: &Edge, rp: &Rp) -> serde_json::Value {
    edge.client(IDP_HOST)
        .post(edge.url(IDP_HOST, "/device_authorization"))
        .basic_auth(&rp.client_id, Some(&rp.secret))
        .form(&[("scope", "openid")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One poll of the token endpoint for `device_code`.
async fn poll_device(edge: &Edge, rp: &Rp, device_code: &str) -> (StatusCode, serde_json::Value) {
    token(
        edge,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ],
        Some((&rp.client_id, &rp.secret)),
    )
    .await
}

fn pkce() -> (String, String) {
    let verifier =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn authorize_url(rp: &Rp, challenge: &str, extra: &str) -> String {
    format!(
        "/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid%20email%20profile&state=st-1&nonce=n-1&code_challenge={challenge}&code_challenge_method=S256{extra}",
        rp.client_id,
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    )
}

/// Where the provider sent the user back: the redirect's query parameters.
fn returned(page: &Page) -> HashMap<String, String> {
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let loc = page.location.as_deref().unwrap();
    assert!(loc.starts_with(REDIRECT), "redirected to {loc}");
    query(loc)
}

async fn token(
    edge: &Edge,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (StatusCode, serde_json::Value) {
    let mut req = edge
        .client(IDP_HOST)
        .post(edge.url(IDP_HOST, "/token"))
        .form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

async fn redeem(
    edge: &Edge,
    rp: &Rp,
    code: &str,
    verifier: &str,
) -> (StatusCode, serde_json::Value) {
    token(
        edge,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
        Some((&rp.client_id, &rp.secret)),
    )
    .await
}

async fn userinfo(edge: &Edge, access_token: &str) -> (StatusCode, String, String) {
    let resp = edge
        .client(IDP_HOST)
        .get(edge.url(IDP_HOST, "/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status(), www, resp.text().await.unwrap())
}

/// Verifies a JWT's ES256 signature against the provider's JWKS, with issuer and audience.
async fn verify(edge: &Edge, jwt: &str, aud: &str) -> serde_json::Value {
    verify_alg(edge, jwt, aud, jsonwebtoken::Algorithm::ES256).await
}

async fn verify_alg(
    edge: &Edge,
    jwt: &str,
    aud: &str,
    alg: jsonwebtoken::Algorithm,
) -> serde_json::Value {
    let jwks: jsonwebtoken::jwk::JwkSet = edge
        .client(IDP_HOST)
        .get(edge.url(IDP_HOST, "/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, alg);
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_issuer(&[edge.url(IDP_HOST, "")]);
    v.set_audience(&[aud]);
    jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn code_flow_with_pkce_issues_tokens_an_independent_library_verifies() {
    let (edge, rp) = setup().await;
    let discovery: serde_json::Value = edge
        .client(IDP_HOST)
        .get(edge.url(IDP_HOST, "/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], edge.url(IDP_HOST, ""));
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );

    let mut b = Browser::new(&edge);
    let (verifier, challenge) = pkce();
    let form = b.get(&authorize_url(&rp, &challenge, "")).await;
    let form = b.follow(form).await;
    assert!(
        form.body.contains("<strong>Wiki</strong>"),
        "the page names the app"
    );
    assert!(form.body.contains("<label for=\"email\">Email</label>"));
    let csrf_cookie = form
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-postern-csrf="))
        .unwrap();
    assert!(
        csrf_cookie.contains("Secure")
            && csrf_cookie.contains("HttpOnly")
            && csrf_cookie.contains("SameSite=Lax")
    );
    assert!(!csrf_cookie.to_ascii_lowercase().contains("domain="));

    // A wrong password and an unknown user get the same answer.
    let wrong = b
        .submit_password(&form, "ada@example.com", "not the passphrase")
        .await;
    let unknown = b
        .submit_password(&form, "nobody@example.com", PASSWORD)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let msg = "The email or password is not right.";
    assert!(wrong.body.contains(msg) && unknown.body.contains(msg));
    // A form without its CSRF token is refused.
    let req = form.field("req");
    let forged = b
        .post(
            "/signin",
            &[
                ("csrf", "forged"),
                ("req", &req),
                ("email", "ada@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let back = b.submit_password(&form, "ada@example.com", PASSWORD).await;
    let session_cookie = b.cookies.get("__Host-postern-idp").cloned();
    assert!(session_cookie.is_some());
    let q = returned(&back);
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], edge.url(IDP_HOST, ""));

    let (status, tokens) = redeem(&edge, &rp, &q["code"], &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let id = verify(&edge, tokens["id_token"].as_str().unwrap(), &rp.client_id).await;
    assert_eq!(id["email"], "ada@example.com");
    assert_eq!(
        id["email_verified"], false,
        "no administrator vouched for the address"
    );
    assert_eq!(id["name"], "Ada Lovelace");
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["groups"], serde_json::json!(["eng"]));
    assert_eq!(id["roles"], serde_json::json!(["admin"]));
    assert_eq!(id["amr"], serde_json::json!(["pwd"]));
    assert_eq!(id["acr"], "pwd");
    assert!(
        id["sub"].as_str().unwrap().starts_with("u_"),
        "sub is a random ID, not the email"
    );
    assert!(id["auth_time"].as_i64().is_some() && id["iat"].as_i64().is_some());
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let (status, _, body) = userinfo(&edge, &access).await;
    assert_eq!(status, StatusCode::OK);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["email"], "ada@example.com");
    assert_eq!(info["email_verified"], false);

    // A tampered token is refused at userinfo.
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let mut c = claims(&access);
    c["sub"] = serde_json::json!("u_someone_else");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string());
    let (status, www, _) = userinfo(&edge, &parts.join(".")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(www.contains("invalid_token"), "{www}");

    // prompt=login asks for the password again even with a session.
    let (_, challenge_login) = pkce();
    let fresh = b
        .get(&authorize_url(&rp, &challenge_login, "&prompt=login"))
        .await;
    assert!(
        fresh.location.unwrap().starts_with("/signin?"),
        "prompt=login signs in afresh"
    );

    // Once an administrator vouches for the address, the tokens issued from then on say so.
    let out = edge
        .admin_ok(&["user", "email-verified", "ada@example.com", "on"])
        .await;
    assert!(out.contains("verified"), "{out}");

    // The session signs the user in again without a form (single sign-on)...
    let (verifier2, challenge2) = pkce();
    let again = b.get(&authorize_url(&rp, &challenge2, "")).await;
    let q2 = returned(&again);
    // ... and with client_secret_post too.
    let (status, t2) = token(
        &edge,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q2["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier2),
            ("client_id", &rp.client_id),
            ("client_secret", &rp.secret),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    let id2 = verify(&edge, t2["id_token"].as_str().unwrap(), &rp.client_id).await;
    assert_eq!(id2["email_verified"], true);

    // Reusing a code is refused and revokes what it issued.
    let (status, err) = redeem(&edge, &rp, &q["code"], &verifier).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _, _) = userinfo(&edge, &access).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "tokens from a reused code are revoked"
    );
    let (status, err) = token(
        &edge,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
        Some((&rp.client_id, &rp.secret)),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Refresh tokens rotate; presenting a rotated one revokes the family.
    let r1 = t2["refresh_token"].as_str().unwrap().to_owned();
    let (status, t3) = token(
        &edge,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
        Some((&rp.client_id, &rp.secret)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t3}");
    let r2 = t3["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let (status, err) = token(
        &edge,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
        Some((&rp.client_id, &rp.secret)),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, err) = token(
        &edge,
        &[("grant_type", "refresh_token"), ("refresh_token", &r2)],
        Some((&rp.client_id, &rp.secret)),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "the family is revoked"
    );

    // Key rotation: the successor is published at once but does not sign yet.
    let kid = jsonwebtoken::decode_header(tokens["id_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    edge.admin_ok(&["idp", "rotate-keys"]).await;
    let jwks: serde_json::Value = edge
        .client(IDP_HOST)
        .get(edge.url(IDP_HOST, "/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let (verifier4, challenge4) = pkce();
    let q4 = returned(&b.get(&authorize_url(&rp, &challenge4, "")).await);
    let (_, t4) = redeem(&edge, &rp, &q4["code"], &verifier4).await;
    let kid4 = jsonwebtoken::decode_header(t4["id_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(
        kid, kid4,
        "the new key signs only after its publish-ahead time"
    );

    // RP-initiated logout: to a registered URI only; then the session is gone.
    let hint = t4["id_token"].as_str().unwrap();
    let bad = b
        .get(&format!(
            "/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"
        ))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.location.is_none());
    let out = b
        .get(&format!(
            "/logout?id_token_hint={hint}&post_logout_redirect_uri={}&state=s9",
            url::form_urlencoded::byte_serialize(BYE.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location.as_deref(), Some(&*format!("{BYE}?state=s9")));
    let (_, challenge5) = pkce();
    let after = b.get(&authorize_url(&rp, &challenge5, "")).await;
    assert!(
        after.location.unwrap().starts_with("/signin?"),
        "signed out"
    );
    let (status, _, _) = userinfo(&edge, t4["access_token"].as_str().unwrap()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "logout revokes the grant of the hint"
    );
}

#[tokio::test]
async fn bad_requests_get_their_rfc_error_codes() {
    let (edge, rp) = setup().await;
    let mut b = Browser::new(&edge);
    let (verifier, challenge) = pkce();

    // A redirect URI that is not registered: an error page, never a redirect.
    let page = b
        .get(
            &authorize_url(&rp, &challenge, "")
                .replace("app.example.com%2Fcallback", "evil.example%2Fcallback"),
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.location.is_none());
    assert!(page
        .body
        .contains("not one of its registered redirect URIs"));
    let page = b
        .get(&authorize_url(&rp, &challenge, "").replace(&rp.client_id, "c_unknown"))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.location.is_none());

    // Errors after the redirect URI is known go back to it.
    let check = |page: Page, error: &str| {
        let q = returned(&page);
        assert_eq!(q["error"], error, "{q:?}");
        assert_eq!(q["state"], "st-1");
    };
    check(
        b.get(
            &authorize_url(&rp, &challenge, "")
                .replace("response_type=code", "response_type=token"),
        )
        .await,
        "unsupported_response_type",
    );
    check(
        b.get(
            &authorize_url(&rp, &challenge, "")
                .replace("code_challenge_method=S256", "code_challenge_method=plain"),
        )
        .await,
        "invalid_request",
    );
    check(
        b.get(&authorize_url(&rp, &challenge, "").replace("scope=openid%20", "scope="))
            .await,
        "invalid_scope",
    );
    check(
        b.get(&authorize_url(&rp, &challenge, "&prompt=none")).await,
        "login_required",
    );

    let form = b.open(&authorize_url(&rp, &challenge, "")).await;
    let q = returned(&b.submit_password(&form, "ada@example.com", PASSWORD).await);
    let code = q["code"].clone();
    // Wrong client secret: 401 invalid_client, and the code stays usable.
    let (status, err) = token(
        &edge,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some((&rp.client_id, "cs_wrong")),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    // Unsupported grant type.
    let (status, err) = token(
        &edge,
        &[("grant_type", "password")],
        Some((&rp.client_id, &rp.secret)),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    // Wrong PKCE verifier: invalid_grant, and the code is spent.
    let (wrong_verifier, _) = pkce();
    let (status, err) = redeem(&edge, &rp, &code, &wrong_verifier).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, err) = redeem(&edge, &rp, &code, &verifier).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // A garbage token at userinfo.
    let (status, www, _) = userinfo(&edge, "not.a.jwt").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(www.contains("invalid_token"));
    // A public client must use PKCE.
    let out = edge
        .admin_ok(&[
            "--json",
            "client",
            "create",
            "Cli",
            "--redirect-uri",
            "http://127.0.0.1/cb",
            "--public",
        ])
        .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["client_secret"].is_null());
    let public = v["client_id"].as_str().unwrap();
    let page = b.get(&format!("/authorize?response_type=code&client_id={public}&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&scope=openid&state=st-1")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        query(page.location.as_deref().unwrap())["error"],
        "invalid_request"
    );
    // Bad admin input changes nothing.
    let weak = edge.dir.path().join("weak");
    std::fs::write(&weak, "carol-password\n").unwrap();
    let out = edge
        .admin(&[
            "user",
            "create",
            "carol@example.com",
            "--password-file",
            weak.to_str().unwrap(),
        ])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not contain the email"));
    let list = edge.admin_ok(&["--json", "user", "list"]).await;
    assert!(!list.contains("carol"));
}

#[tokio::test]
async fn disabling_a_user_ends_their_session_and_tokens_at_once() {
    let (edge, rp) = setup().await;
    let mut b = Browser::new(&edge);
    let (verifier, challenge) = pkce();
    let q = returned(
        &b.sign_in(
            &authorize_url(&rp, &challenge, ""),
            "ada@example.com",
            PASSWORD,
        )
        .await,
    );
    let (_, tokens) = redeem(&edge, &rp, &q["code"], &verifier).await;
    edge.admin_ok(&["user", "disable", "ada@example.com"]).await;
    let (status, _, _) = userinfo(&edge, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, err) = token(
        &edge,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
        Some((&rp.client_id, &rp.secret)),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (_, challenge) = pkce();
    let page = b.get(&authorize_url(&rp, &challenge, "")).await;
    assert!(
        page.location.unwrap().starts_with("/signin?"),
        "the session ended"
    );
    // And a disabled user cannot sign in, with the same answer as a wrong password.
    let page = b
        .sign_in(
            &authorize_url(&rp, &challenge, ""),
            "ada@example.com",
            PASSWORD,
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("The email or password is not right."));
}

#[tokio::test]
async fn a_passkey_enrolled_in_chromium_signs_in_with_both_factors_until_mfa_reset() {
    let (edge, rp) = setup().await;
    let idp = edge.url(IDP_HOST, "");
    let (verifier, challenge) = pkce();
    // The client asks for MFA: the passkey alone must satisfy it, with no code to type.
    let authorize = format!("{idp}{}", authorize_url(&rp, &challenge, "&acr_values=mfa"));
    let run = chromium(
        "browser-passkey.mjs",
        serde_json::json!({
            "idp": idp,
            "enrol": { "email": "ada@example.com", "password": PASSWORD, "name": "Ada's laptop" },
            "authorize": { "url": authorize, "returnsTo": REDIRECT },
        }),
    )
    .await;
    let account = run["account"].as_str().unwrap();
    assert!(account.contains("Ada's laptop"), "{account}");
    assert_eq!(run["signinPage"]["passkeyButton"], true);
    let csp = run["signinPage"]["csp"].as_str().unwrap();
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"));
    assert_eq!(script_src, Some("script-src 'self'"), "{csp}");
    let returned_to = run["returnedTo"]
        .as_str()
        .unwrap_or_else(|| panic!("{run}"));
    let q = query(returned_to);
    assert_eq!(q["state"], "st-1");
    let (status, tokens) = redeem(&edge, &rp, &q["code"], &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let id = verify(&edge, tokens["id_token"].as_str().unwrap(), &rp.client_id).await;
    assert_eq!(id["email"], "ada@example.com");
    assert_eq!(id["amr"], serde_json::json!(["hwk", "mfa"]));
    assert_eq!(id["acr"], "mfa");

    let users: Vec<serde_json::Value> =
        serde_json::from_str(&edge.admin_ok(&["--json", "user", "list"]).await).unwrap();
    let ada = users.iter().find(|u| u["email"] == "ada@example.com");
    assert_eq!(ada.unwrap()["passkeys"], 1);

    // An administrator's MFA reset removes the passkey: the same key is then refused, with a
    // message, and the user stays signed out.
    edge.admin_ok(&["user", "mfa-reset", "ada@example.com"])
        .await;
    let (_, challenge) = pkce();
    let authorize = format!("{idp}{}", authorize_url(&rp, &challenge, ""));
    let again = chromium(
        "browser-passkey.mjs",
        serde_json::json!({
            "idp": idp,
            "credentials": run["credentials"],
            "authorize": { "url": authorize, "returnsTo": REDIRECT },
        }),
    )
    .await;
    assert_eq!(again["returnedTo"], serde_json::Value::Null);
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("This passkey was not accepted"),
        "{again}"
    );

    let events = signin_events(&edge).await;
    assert_eq!(
        reasons(&events),
        [
            "unknown_passkey",
            "ok_passkey",
            "ok_passkey_enrolled",
            "ok_password"
        ]
    );
}

#[tokio::test]
async fn passkey_endpoints_refuse_bad_input_with_a_reason() {
    let (edge, rp) = setup().await;
    let mut b = Browser::new(&edge);
    let (_, challenge) = pkce();
    let form = b.open(&authorize_url(&rp, &challenge, "")).await;
    assert!(form.body.contains("Sign in with a passkey"));
    let (csrf, req) = (form.field("csrf"), form.field("req"));
    let start = |csrf: &str| serde_json::json!({ "csrf": csrf, "req": req });

    // No CSRF token, or a wrong one: refused before anything starts.
    let page = b.post_json("/signin/passkey/start", &start("")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("\"csrf\""));
    // An unknown sign-in.
    let page = b
        .post_json(
            "/signin/passkey/start",
            &serde_json::json!({ "csrf": csrf, "req": "nope" }),
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("\"expired\""));
    // A challenge for a discoverable credential: no credential IDs, user verification required.
    let page = b.post_json("/signin/passkey/start", &start(&csrf)).await;
    assert_eq!(page.status, StatusCode::OK);
    let started: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(started["publicKey"]["rpId"], IDP_HOST);
    assert_eq!(started["publicKey"]["userVerification"], "required");
    let ceremony = started["ceremony"].as_str().unwrap();
    // A malformed answer uses up the challenge; answering it again finds nothing to answer.
    let finish = serde_json::json!({
        "csrf": csrf, "req": req, "ceremony": ceremony,
        "credential": { "id": "x", "rawId": "eA", "type": "public-key",
                        "response": { "authenticatorData": "", "clientDataJSON": "", "signature": "" } },
    });
    let page = b.post_json("/signin/passkey/finish", &finish).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(page.body.contains("This passkey was not accepted"));
    let page = b.post_json("/signin/passkey/finish", &finish).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("ceremony_expired"));
    // Not JSON at all.
    let resp = edge
        .client(IDP_HOST)
        .post(edge.url(IDP_HOST, "/signin/passkey/finish"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Enrolment needs a recent sign-in: without one, the account page sends the user to sign in
    // and the enrolment endpoint refuses.
    let page = b.get("/account").await;
    assert!(page.location.unwrap().starts_with("/signin?req="));
    let page = b
        .post_json(
            "/account/passkeys/start",
            &serde_json::json!({ "csrf": csrf }),
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("reauthenticate"));
    // Every failure is a recorded sign-in event.
    let events = signin_events(&edge).await;
    assert!(reasons(&events).contains(&"malformed_passkey"));
}

/// The provider's sign-in events, newest first.
async fn signin_events(edge: &Edge) -> Vec<serde_json::Value> {
    serde_json::from_str(&edge.admin_ok(&["--json", "idp", "signins"]).await).unwrap()
}

/// The reason code of each event.
fn reasons(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn totp_enrolment_then_sign_in_with_a_code_and_with_a_recovery_code() {
    let (edge, rp) = setup().await;
    let mut b = Browser::new(&edge);
    let (verifier, challenge) = pkce();
    let enrol = b
        .sign_in(
            &authorize_url(&rp, &challenge, ""),
            "bob@example.com",
            PASSWORD,
        )
        .await;
    assert_eq!(enrol.status, StatusCode::OK);
    assert!(enrol.body.contains("Set up two-step verification"));
    assert!(enrol.body.contains("<svg"), "a QR code, inline");
    let start = enrol.body.find("id=\"secret\">").unwrap() + "id=\"secret\">".len();
    let secret = enrol.body[start..start + enrol.body[start..].find('<').unwrap()].to_owned();
    let secret = postern_store_secret(&secret);
    let (csrf, req) = (enrol.field("csrf"), enrol.field("req"));
    let bad = b
        .post(
            "/signin/mfa",
            &[("csrf", &csrf), ("req", &req), ("code", "000000")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let code = postern_idp::mfa::code_at(&secret, unix_now()).unwrap();
    let codes_page = b
        .post(
            "/signin/mfa",
            &[("csrf", &csrf), ("req", &req), ("code", &code)],
        )
        .await;
    assert_eq!(codes_page.status, StatusCode::OK);
    let list = &codes_page.body[codes_page.body.find("id=\"recovery-codes\"").unwrap()..];
    let recovery: Vec<String> = list
        .split("<code>")
        .skip(1)
        .map(|s| s[..s.find('<').unwrap()].to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    let back = b.open(&format!("/continue?req={req}")).await;
    let q = returned(&back);
    let (_, tokens) = redeem(&edge, &rp, &q["code"], &verifier).await;
    let id = verify(&edge, tokens["id_token"].as_str().unwrap(), &rp.client_id).await;
    assert_eq!(id["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(id["acr"], "mfa");

    // A new browser: password, then the authenticator's code (the next step's, so that it is
    // not the one enrolment used, whatever the clock did meanwhile).
    let next = postern_idp::mfa::code_at(&secret, unix_now() + 30).unwrap();
    let (_, challenge) = pkce();
    let mut b1 = Browser::new(&edge);
    let form = b1
        .sign_in(
            &authorize_url(&rp, &challenge, ""),
            "bob@example.com",
            PASSWORD,
        )
        .await;
    let (csrf, req) = (form.field("csrf"), form.field("req"));
    let page = b1
        .post(
            "/signin/mfa",
            &[("csrf", &csrf), ("req", &req), ("code", &next)],
        )
        .await;
    returned(&b1.follow(page).await);
    // The same code again is a replay, refused.
    let mut b1 = Browser::new(&edge);
    let form = b1
        .sign_in(
            &authorize_url(&rp, &challenge, ""),
            "bob@example.com",
            PASSWORD,
        )
        .await;
    let (csrf, req) = (form.field("csrf"), form.field("req"));
    let page = b1
        .post(
            "/signin/mfa",
            &[("csrf", &csrf), ("req", &req), ("code", &next)],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNAUTHORIZED,
        "a TOTP code is accepted once"
    );

    // A new browser: password, then a recovery code.
    let (mut b2, form) = fresh_sign_in(&edge, &rp, "bob@example.com").await;
    assert!(form.body.contains("Verification code"));
    let (csrf, req) = (form.field("csrf"), form.field("req"));
    let page = b2
        .post(
            "/signin/mfa",
            &[("csrf", &csrf), ("req", &req), ("code", &recovery[0])],
        )
        .await;
    returned(&b2.follow(page).await);

    // A recovery code works once.
    let mut b3 = Browser::new(&edge);
    let form = b3
        .sign_in(
            &authorize_url(&rp, &challenge, ""),
            "bob@example.com",
            PASSWORD,
        )
        .await;
    let (csrf, req) = (form.field("csrf"), form.field("req"));
    let page = b3
        .post(
            "/signin/mfa",
            &[("csrf", &csrf), ("req", &req), ("code", &recovery[0])],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);

    // Step-up: ada (no MFA required) is asked for a second factor when the app asks for it.
    let mut b4 = Browser::new(&edge);
    let page = b4
        .sign_in(
            &authorize_url(&rp, &challenge, "&acr_values=mfa"),
            "ada@example.com",
            PASSWORD,
        )
        .await;
    assert!(page.body.contains("Set up two-step verification"));

    // An admin reset removes the authenticator: bob enrols again.
    let out = edge
        .admin_ok(&["--json", "user", "mfa-reset", "bob@example.com"])
        .await;
    assert!(out.contains("\"mfa_enrolled\": false"));
    let mut b5 = Browser::new(&edge);
    let page = b5
        .sign_in(
            &authorize_url(&rp, &challenge, ""),
            "bob@example.com",
            PASSWORD,
        )
        .await;
    assert!(page.body.contains("Set up two-step verification"));
}

fn postern_store_secret(s: &str) -> postern_store::TotpSecret {
    postern_store::TotpSecret(s.to_owned())
}

#[tokio::test]
async fn repeated_failures_are_throttled_and_every_attempt_is_recorded() {
    let (edge, rp) = setup().await;
    let mut b = Browser::new(&edge);
    let (_, challenge) = pkce();
    let form = b.open(&authorize_url(&rp, &challenge, "")).await;
    for _ in 0..3 {
        let page = b
            .submit_password(&form, "ada@example.com", "wrong wrong wrong")
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    // The next attempt comes before the first delay has passed: refused unseen, even with the
    // right password.
    let page = b.submit_password(&form, "ada@example.com", PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.body.contains("Too many failed attempts"));
    let page = b
        .submit_password(&form, "nobody@example.com", PASSWORD)
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNAUTHORIZED,
        "other accounts are not affected"
    );

    let events = signin_events(&edge).await;
    assert_eq!(
        reasons(&events),
        [
            "unknown_user",
            "throttled",
            "bad_password",
            "bad_password",
            "bad_password"
        ]
    );
    assert!(events
        .iter()
        .all(|e| e["outcome"] == "failure" && e["ip"] == "127.0.0.1"));
}

/// Starts `postern connector register` by sign-in; returns the child and the URL it shows.
async fn register_by_sign_in(
    edge: &Edge,
    state: &std::path::Path,
    group: &str,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(common::BIN)
        .args([
            "connector",
            "register",
            "--edge",
            &format!("https://{}", edge.connector),
            "--group",
            group,
        ])
        .arg("--state")
        .arg(state)
        .arg("--ca-file")
        .arg(edge.ca_path())
        .args(["--idp-connect-to", &edge.public.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(common::READY_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(u) = line.trim().strip_prefix("https://") {
                return format!("https://{u}");
            }
        }
        panic!("the connector exited without showing a URL")
    })
    .await
    .expect("the connector showed no URL");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// Opens the device URL, confirms the code, signs in and answers the approval question.
async fn approve(edge: &Edge, url: &str, client_name: &str, email: &str, decision: &str) -> Page {
    let mut b = Browser::new(edge);
    let entry = b.open(url).await;
    assert!(entry.body.contains("<label for=\"user_code\">"));
    let user_code = query(url)["user_code"].clone();
    assert!(
        entry.body.contains(&format!("value=\"{user_code}\"")),
        "the code is filled in"
    );
    let csrf = entry.field("csrf");
    let page = b
        .post("/device", &[("csrf", &csrf), ("user_code", &user_code)])
        .await;
    let form = b.follow(page).await;
    assert!(
        form.body
            .contains(&format!("<strong>{client_name}</strong>")),
        "the page names the client"
    );
    let question = b.submit_password(&form, email, PASSWORD).await;
    assert!(
        question.body.contains("Approve device"),
        "{}",
        question.body
    );
    assert!(question.body.contains(&user_code));
    let (csrf, req) = (question.field("csrf"), question.field("req"));
    b.post(
        "/device/decide",
        &[("csrf", &csrf), ("req", &req), ("decision", decision)],
    )
    .await
}

#[tokio::test]
async fn a_connector_registers_when_an_administrator_approves_its_device_sign_in() {
    let (edge, _) = setup().await;
    edge.group("office").await;
    let state = edge.dir.path().join("connector");
    let (child, url) = register_by_sign_in(&edge, &state, "office").await;
    let done = approve(
        &edge,
        &url,
        "postern-connector",
        "ada@example.com",
        "approve",
    )
    .await;
    assert!(done.body.contains("Device approved"));
    let out = tokio::time::timeout(common::READY_TIMEOUT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(postern_connector::state::is_registered(&state));
    let audit = edge
        .admin_ok(&["--json", "audit", "--action", "connector.register"])
        .await;
    assert!(audit.contains("\"result\": \"success\""), "{audit}");

    // A user without the admin role can approve the sign-in, but the edge refuses to register.
    create_user(&edge, "carl@example.com", &[]).await;
    let state2 = edge.dir.path().join("connector2");
    let (child, url) = register_by_sign_in(&edge, &state2, "office").await;
    approve(
        &edge,
        &url,
        "postern-connector",
        "carl@example.com",
        "approve",
    )
    .await;
    let out = tokio::time::timeout(common::READY_TIMEOUT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not hold the admin role"), "{err}");
    assert!(!state2.exists(), "nothing was written");

    // Denied in the browser: the connector says so.
    let state3 = edge.dir.path().join("connector3");
    let (child, url) = register_by_sign_in(&edge, &state3, "office").await;
    approve(&edge, &url, "postern-connector", "ada@example.com", "deny").await;
    let out = tokio::time::timeout(common::READY_TIMEOUT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("denied"));
}

#[tokio::test]
async fn the_device_grant_answers_pending_slow_down_and_denied_with_rfc_8628_codes() {
    let (edge, rp) = setup().await;
    let http = edge.client(IDP_HOST);
    let start: serde_json::Value = http
        .post(edge.url(IDP_HOST, "/device_authorization"))
        .basic_auth(&rp.client_id, Some(&rp.secret))
        .form(&[("scope", "openid")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_code = start["device_code"].as_str().unwrap();
    assert_eq!(start["verification_uri"], edge.url(IDP_HOST, "/device"));
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
    ];
    let poll = || token(&edge, &form, Some((&rp.client_id, &rp.secret)));
    let (_, first) = poll().await;
    assert_eq!(first["error"], "authorization_pending");
    let (_, second) = poll().await;
    assert_eq!(second["error"], "slow_down", "polled again at once");
    // Another client cannot redeem it; a bad secret is invalid_client.
    let (status, err) = token(
        &edge,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ],
        Some((&rp.client_id, "cs_wrong")),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    // Approve in the browser: the next poll gets tokens for the user, once.
    approve(
        &edge,
        start["verification_uri_complete"].as_str().unwrap(),
        "Wiki",
        "ada@example.com",
        "approve",
    )
    .await;
    let (status, tokens) = poll().await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let id = verify(&edge, tokens["id_token"].as_str().unwrap(), &rp.client_id).await;
    assert_eq!(id["email"], "ada@example.com");
    let (_, again) = poll().await;
    assert_eq!(again["error"], "invalid_grant");
    // A denied request answers access_denied.
    let start: serde_json::Value = http
        .post(edge.url(IDP_HOST, "/device_authorization"))
        .form(&[
            ("client_id", rp.client_id.as_str()),
            ("client_secret", rp.secret.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    approve(
        &edge,
        start["verification_uri_complete"].as_str().unwrap(),
        "Wiki",
        "ada@example.com",
        "deny",
    )
    .await;
    let (_, denied) = poll_device(&edge, &rp, start["device_code"].as_str().unwrap()).await;
    assert_eq!(denied["error"], "access_denied");
}

/// An independent OpenID Connect library (`openid-client` for Node, installed by
/// `scripts/test.sh`) signs in through the provider and validates its tokens as it would any
/// provider's.
#[tokio::test]
async fn openid_client_for_node_validates_the_code_flow_and_refresh() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (edge, rp) = setup().await;
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/openid-client").exists(),
        "run `npm ci --prefix crates/postern/tests/js` (scripts/test.sh does)"
    );
    let mut node = tokio::process::Command::new("node")
        .arg(js.join("rp.mjs"))
        .env("ISSUER", edge.url(IDP_HOST, ""))
        .env("CA_FILE", edge.ca_path())
        .env("CONNECT_HOST", "127.0.0.1")
        .env("CLIENT_ID", &rp.client_id)
        .env("CLIENT_SECRET", &rp.secret)
        .env("REDIRECT_URI", REDIRECT)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(common::READY_TIMEOUT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("rp.mjs printed the authorization URL");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let url = first["authorization_url"].as_str().unwrap();
    let mut b = Browser::new(&edge);
    let back = b.sign_in(url, "ada@example.com", PASSWORD).await;
    let callback = back.location.clone().unwrap();
    returned(&back);
    stdin
        .write_all(format!("{callback}\n").as_bytes())
        .await
        .unwrap();
    let result = tokio::time::timeout(common::READY_TIMEOUT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("rp.mjs validated the tokens");
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["claims"]["email"], "ada@example.com");
    assert_eq!(result["claims"]["aud"], rp.client_id.as_str());
    assert_eq!(result["userinfo"]["email"], "ada@example.com");
    assert_eq!(result["refreshed_claims"]["sub"], result["claims"]["sub"]);
    assert_eq!(result["rotated"], true);
    let status = tokio::time::timeout(common::READY_TIMEOUT, node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_client_may_ask_for_rs256_id_tokens() {
    let (edge, _) = setup().await;
    let out = edge
        .admin_ok(&[
            "--json",
            "client",
            "create",
            "Legacy",
            "--redirect-uri",
            REDIRECT,
            "--id-token-alg",
            "RS256",
        ])
        .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rp = Rp {
        client_id: v["client_id"].as_str().unwrap().to_owned(),
        secret: v["client_secret"].as_str().unwrap().to_owned(),
    };
    let mut b = Browser::new(&edge);
    let (verifier, challenge) = pkce();
    let q = returned(
        &b.sign_in(
            &authorize_url(&rp, &challenge, ""),
            "ada@example.com",
            PASSWORD,
        )
        .await,
    );
    let (status, tokens) = redeem(&edge, &rp, &q["code"], &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let id = verify_alg(
        &edge,
        tokens["id_token"].as_str().unwrap(),
        &rp.client_id,
        jsonwebtoken::Algorithm::RS256,
    )
    .await;
    assert_eq!(id["email"], "ada@example.com");
    // Access tokens stay ES256, and userinfo takes them.
    let (status, _, _) = userinfo(&edge, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let bad = edge
        .admin(&[
            "client",
            "create",
            "X",
            "--redirect-uri",
            REDIRECT,
            "--id-token-alg",
            "HS256",
        ])
        .await;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use ES256 or RS256"));
}

#[tokio::test]
async fn a_password_spray_and_a_leaked_password_raise_the_users_risk() {
    // The leaked-password ranges, as Have I Been Pwned serves them: the SHA-1's first five hex
    // digits name the file, each line the rest and a count.
    let leaked = tempfile::tempdir().unwrap();
    let hex: String = sha1::Sha1::digest(PASSWORD.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    std::fs::write(
        leaked.path().join(&hex[..5]),
        format!(
            "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n{}:42\r\n",
            &hex[5..]
        ),
    )
    .unwrap();
    let (edge, rp) = setup_with(&["--leaked-passwords", leaked.path().to_str().unwrap()]).await;
    edge.policy(
        "risky-users",
        "state: on\nusers: { include: [all] }\napps: { include: [all] }\nconditions: { user_risk: [high] }\ngrant: { block: true }\n",
    )
    .await;
    edge.group("g").await;
    edge.admin_ok(&[
        "app",
        "publish",
        "wiki",
        "--external-url",
        "https://wiki.localhost",
        "--internal-url",
        "http://127.0.0.1:9",
        "--group",
        "g",
    ])
    .await;

    // One address tries a password on 20 accounts: the account that exists is sprayed.
    let mut b = Browser::new(&edge);
    let (_, challenge) = pkce();
    let form = b.open(&authorize_url(&rp, &challenge, "")).await;
    // Bob's right password is a leaked one (he signs in first: past 20 failures the address is
    // throttled).
    let page = b.submit_password(&form, "bob@example.com", PASSWORD).await;
    assert!(
        page.status.is_success() || page.status.is_redirection(),
        "{}",
        page.status
    );
    // Carol's is too, and her sign-in is decided with what was just found: a user at high risk
    // is blocked at once, not only from her next sign-in.
    create_user(&edge, "carol@example.com", &[]).await;
    let (mut carol, refused) = fresh_sign_in(&edge, &rp, "carol@example.com").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body.contains("risky-users"), "{}", refused.body);
    // The blocked sign-in's session ended with it: the same browser must sign in again.
    let (_, challenge) = pkce();
    let again = carol.open(&authorize_url(&rp, &challenge, "")).await;
    assert!(
        again.body.contains("<label for=\"password\">"),
        "{} {}",
        again.status,
        again.body
    );
    for i in 0..19 {
        let page = b
            .submit_password(&form, &format!("user{i}@example.com"), "Summer2026!")
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let page = b
        .submit_password(&form, "ada@example.com", "Summer2026!")
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);

    let found: serde_json::Value =
        serde_json::from_str(&edge.admin_ok(&["risk", "detections", "--json"]).await).unwrap();
    let kinds: Vec<(&str, &str, &str)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["userPrincipalName"].as_str().unwrap(),
                d["riskEventType"].as_str().unwrap(),
                d["riskLevel"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("bob@example.com", "leakedCredentials", "high")),
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .any(|k| k.0 == "ada@example.com" && k.1 == "passwordSpray"),
        "{kinds:?}"
    );
    assert!(found
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["source"] == "idp" && d["ipAddress"] == "127.0.0.1"));
    // Unknown accounts have no record to put at risk.
    assert!(!kinds.iter().any(|k| k.0.starts_with("user")), "{kinds:?}");

    // Bob's user risk is high: the policy would block him, as what-if says.
    let deadline = tokio::time::Instant::now() + common::READY_TIMEOUT;
    let v = loop {
        let out = edge
            .admin_ok(&[
                "policy",
                "what-if",
                "--user",
                "bob@example.com",
                "--app",
                "wiki",
                "--ip",
                "198.51.100.7",
                "--json",
            ])
            .await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if v["user_risk"] == "high" || tokio::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(v["user_risk"], "high", "{v}");
    assert_eq!(
        (&v["result"], &v["policy"]),
        (
            &serde_json::json!("block"),
            &serde_json::json!("risky-users")
        )
    );
    let users = edge.admin_ok(&["risk", "users"]).await;
    assert!(
        users.contains("bob@example.com") && users.contains("high"),
        "{users}"
    );
}

/// The provider's own OpenID clients are decided by the same policies as the edge's apps: a
/// block ends on the provider's page naming the policy and the request, with no code issued; a
/// policy's MFA requirement is met at the provider's own second step.
#[tokio::test]
async fn policies_decide_sign_ins_to_the_providers_own_clients() {
    let (edge, rp) = setup().await;
    edge.admin_ok(&["location", "create", "loopback", "--cidr", "127.0.0.0/8"])
        .await;
    edge.policy(
        "eng off loopback",
        "state: on\nusers: { include: ['group:eng'] }\napps: { include: [all] }\nconditions: { locations: { include: ['location:loopback'] } }\ngrant: { block: true }\n",
    )
    .await;
    edge.policy(
        "mfa for the rest",
        "state: on\nusers: { include: [all], exclude: ['group:eng'] }\napps: { include: [all] }\ngrant: { require: [mfa] }\n",
    )
    .await;
    create_user(&edge, "cy@example.com", &[]).await;

    // Ada (group eng) from loopback: refused at the provider, naming the policy.
    let (_, page) = fresh_sign_in(&edge, &rp, "ada@example.com").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(
        page.body.contains("eng off loopback") && page.body.contains("Request ID"),
        "{}",
        page.body
    );
    assert!(page.location.is_none(), "no code went back to the client");
    let events = signin_events(&edge).await;
    assert_eq!(reasons(&events)[0], "blocked_by_policy");

    // Cy has no second factor of her own, but the policy asks for one: she enrols at the
    // provider's second step, then goes back to the client with both factors.
    let mut b = Browser::new(&edge);
    let (verifier, challenge) = pkce();
    let enrol = b
        .sign_in(
            &authorize_url(&rp, &challenge, ""),
            "cy@example.com",
            PASSWORD,
        )
        .await;
    assert!(
        enrol.body.contains("Set up two-step verification"),
        "{}",
        enrol.body
    );
    let start = enrol.body.find("id=\"secret\">").unwrap() + "id=\"secret\">".len();
    let secret = enrol.body[start..start + enrol.body[start..].find('<').unwrap()].to_owned();
    let secret = postern_store_secret(&secret);
    let code = postern_idp::mfa::code_at(&secret, unix_now()).unwrap();
    let (csrf, req) = (enrol.field("csrf"), enrol.field("req"));
    b.post(
        "/signin/mfa",
        &[("csrf", &csrf), ("req", &req), ("code", &code)],
    )
    .await;
    let back = b.open(&format!("/continue?req={req}")).await;
    let q = returned(&back);
    let (_, tokens) = redeem(&edge, &rp, &q["code"], &verifier).await;
    let id = verify(&edge, tokens["id_token"].as_str().unwrap(), &rp.client_id).await;
    assert_eq!(id["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    // A policy that blocks her from now on holds at her next refresh too.
    let sub = id["sub"].as_str().unwrap();
    edge.policy(
        "cy is out",
        &format!("state: on\nusers: {{ include: ['user:{sub}'] }}\napps: {{ include: [all] }}\ngrant: {{ block: true }}\n"),
    )
    .await;
    let (status, err) = token(
        &edge,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
        Some((&rp.client_id, &rp.secret)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"], "invalid_grant");
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .contains("cy is out"),
        "{err}"
    );

    // Cy's browser still has her session: an approval posted straight to the decision (never
    // asked through /continue) is decided all the same, and the device is denied.
    let start: serde_json::Value = start_device(&edge, &rp).await;
    let entry = b
        .open(start["verification_uri_complete"].as_str().unwrap())
        .await;
    let csrf = entry.field("csrf");
    let asked = b
        .post(
            "/device",
            &[
                ("csrf", &csrf),
                ("user_code", start["user_code"].as_str().unwrap()),
            ],
        )
        .await;
    let req = query(&format!("https://x{}", asked.location.as_deref().unwrap()))["req"].clone();
    let refused = b
        .post(
            "/device/decide",
            &[("csrf", &csrf), ("req", &req), ("decision", "approve")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body.contains("cy is out"), "{}", refused.body);
    let (_, denied) = poll_device(&edge, &rp, start["device_code"].as_str().unwrap()).await;
    assert_eq!(denied["error"], "access_denied", "{denied}");

    // The device grant is decided too: Ada cannot approve a device from loopback, and the
    // device is told so.
    let start: serde_json::Value = start_device(&edge, &rp).await;
    let mut b = Browser::new(&edge);
    let entry = b
        .open(start["verification_uri_complete"].as_str().unwrap())
        .await;
    let user_code = start["user_code"].as_str().unwrap();
    let page = b
        .post(
            "/device",
            &[("csrf", &entry.field("csrf")), ("user_code", user_code)],
        )
        .await;
    let form = b.follow(page).await;
    let refused = b.submit_password(&form, "ada@example.com", PASSWORD).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused.body.contains("eng off loopback") && !refused.body.contains("Approve device"),
        "{}",
        refused.body
    );
    let (_, pending) = poll_device(&edge, &rp, start["device_code"].as_str().unwrap()).await;
    assert_eq!(pending["error"], "access_denied", "{pending}");

    // Dan must use a passkey: a password is answered with a page that says so, and offers it.
    edge.policy(
        "dan uses a passkey",
        "state: on\nusers: { include: ['user:dan@example.com'] }\napps: { include: [all] }\ngrant: { require: [passkey] }\n",
    )
    .await;
    create_user(&edge, "dan@example.com", &["--email-verified"]).await;
    let (mut b, page) = fresh_sign_in(&edge, &rp, "dan@example.com").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(
        page.body.contains("dan uses a passkey") && page.body.contains("Sign in with a passkey"),
        "{}",
        page.body
    );
    assert_eq!(
        reasons(&signin_events(&edge).await)[0],
        "passkey_required_by_policy"
    );
    // A silent request (prompt=none) is answered at the client, not with a page; the session
    // stays (only a block ends it).
    let (_, challenge) = pkce();
    let silent = b
        .open(&authorize_url(&rp, &challenge, "&prompt=none"))
        .await;
    let q = returned(&silent);
    assert_eq!(q["error"], "interaction_required", "{q:?}");
    assert!(
        q["error_description"].contains("dan uses a passkey"),
        "{q:?}"
    );
    assert_eq!(q["state"], "st-1");
}
