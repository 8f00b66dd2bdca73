//! Pre-authentication at the edge against an independent, certified OpenID provider (the npm
//! `oidc-provider`), driven by an HTTP client with a cookie jar as a browser would be.

mod common;

use std::sync::Arc;

use common::browser::chromium;
use common::issuer::Issuer;
use common::{backends, Edge};
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

/// An edge with a connector, the backend, an issuer with clients `wiki` and `crm`, and users
/// ann (group staff) and bob (no group), whose emails the issuer says are verified, cat (it says
/// her email is not) and dee (it says nothing about his).
struct World {
    edge: Edge,
    issuer: Issuer,
    _connector: common::Connector,
    _app: backends::App,
}

impl World {
    async fn new(wiki_flags: &[&str]) -> World {
        World::with_edge(&[], wiki_flags).await
    }

    async fn with_edge(edge_flags: &[&str], wiki_flags: &[&str]) -> World {
        let edge = Edge::start(edge_flags).await;
        let port = edge.public.port();
        let client = |name: &str| {
            json!({
                "client_id": name,
                "client_secret": format!("{name}-secret"),
                "redirect_uris": [format!("https://{name}.localhost:{port}/.postern/callback")],
                "post_logout_redirect_uris": [format!("https://{name}.localhost:{port}/.postern/signed-out")],
            })
        };
        let issuer = Issuer::start(json!({
            "clients": [client("wiki"), client("crm")],
            "accounts": {
                "ann-0001": { "email": "ann@example.com", "password": PASSWORD, "name": "Ann", "groups": ["staff"] },
                "bob-0002": { "email": "bob@example.com", "password": PASSWORD, "name": "Bob", "groups": [] },
                "cat-0003": { "email": "cat@example.com", "password": PASSWORD, "name": "Cat", "email_verified": false },
                "dee-0004": { "email": "dee@example.com", "password": PASSWORD, "name": "Dee", "email_verified": null },
            },
        }))
        .await;
        let app = backends::app().await;
        edge.group("g").await;
        for name in ["wiki", "crm"] {
            let secret = edge.dir.path().join(format!("{name}-secret"));
            std::fs::write(&secret, format!("{name}-secret\n")).unwrap();
            let mut flags = vec![
                "--issuer",
                issuer.url.as_str(),
                "--client-id",
                name,
                "--client-secret-file",
                secret.to_str().unwrap(),
            ];
            if name == "wiki" {
                flags.extend_from_slice(wiki_flags);
            }
            let external = format!("https://{name}.localhost:{port}");
            let internal = app.url();
            let mut args = vec![
                "app",
                "publish",
                name,
                "--external-url",
                &external,
                "--internal-url",
                &internal,
                "--group",
                "g",
                "--preauth",
                "oidc",
            ];
            args.extend(flags);
            edge.admin_ok(&args).await;
        }
        let connector = edge.connector("g").await;
        World {
            edge,
            issuer,
            _connector: connector,
            _app: app,
        }
    }

    /// A browser: a cookie jar, following redirects, `*.localhost` resolved to the edge.
    fn browser(&self) -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let tls =
            postern_pki::client_config(&self.edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .cookie_provider(jar.clone())
            .resolve("wiki.localhost", self.edge.public)
            .resolve("crm.localhost", self.edge.public)
            .build()
            .unwrap();
        (client, jar)
    }

    /// A client with no jar that does not follow redirects.
    fn raw(&self) -> reqwest::Client {
        let tls =
            postern_pki::client_config(&self.edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .resolve("wiki.localhost", self.edge.public)
            .resolve("crm.localhost", self.edge.public)
            .build()
            .unwrap()
    }

    fn url(&self, app: &str, path: &str) -> String {
        self.edge.url(&format!("{app}.localhost"), path)
    }

    /// Opens `path` on `app` in `browser` and signs in at the issuer's page; returns the final
    /// answer (the app's, or the edge's refusal).
    async fn sign_in(
        &self,
        browser: &reqwest::Client,
        app: &str,
        path: &str,
        email: &str,
        mfa: bool,
    ) -> reqwest::Response {
        let page = browser.get(self.url(app, path)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            page.url().as_str().starts_with(&self.issuer.url),
            "not sent to the issuer: {}",
            page.url()
        );
        let html = page.text().await.unwrap();
        self.submit_login(browser, &html, email, mfa).await
    }

    async fn submit_login(
        &self,
        browser: &reqwest::Client,
        html: &str,
        email: &str,
        mfa: bool,
    ) -> reqwest::Response {
        assert!(html.contains("Sign in to"), "not a sign-in page: {html}");
        let action = html
            .split("action=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let mut form = vec![("email", email), ("password", PASSWORD)];
        if mfa {
            form.push(("mfa", "1"));
        }
        browser
            .post(format!("{}{action}", self.issuer.url))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    fn session_cookie(&self, jar: &reqwest::cookie::Jar, app: &str) -> String {
        use reqwest::cookie::CookieStore;
        let url = self.url(app, "/").parse().unwrap();
        let header = jar.cookies(&url).expect("cookies for the app");
        header
            .to_str()
            .unwrap()
            .split("; ")
            .find_map(|c| c.strip_prefix("__Host-postern-session="))
            .expect("a session cookie")
            .to_owned()
    }
}

fn seen(json: &Value, name: &str) -> Vec<String> {
    backends::seen(json, name)
}

#[tokio::test]
async fn sign_in_through_an_independent_issuer_and_what_the_app_receives() {
    let w = World::new(&[]).await;
    let (browser, jar) = w.browser();
    let resp = w
        .sign_in(
            &browser,
            "wiki",
            "/docs/page?x=1&y=%2F",
            "ann@example.com",
            false,
        )
        .await;
    assert_eq!(resp.status(), 200);
    // Back where the user was going, on the app's own origin.
    assert_eq!(resp.url().as_str(), w.url("wiki", "/docs/page?x=1&y=%2F"));
    let seen_by_app: Value = resp.json().await.unwrap();
    assert_eq!(seen(&seen_by_app, "x-postern-user"), ["ann-0001"]);
    assert_eq!(seen(&seen_by_app, "x-postern-email"), ["ann@example.com"]);
    assert_eq!(seen(&seen_by_app, "x-postern-groups"), ["staff"]);
    let cookies = seen(&seen_by_app, "cookie").join("; ");
    assert!(
        !cookies.contains("postern"),
        "the edge's cookies reached the app: {cookies}"
    );

    // The assertion verifies against the edge's JWKS, for this app only.
    let assertion = seen(&seen_by_app, "x-postern-jwt-assertion").pop().unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = w
        .raw()
        .get(w.url("wiki", "/.well-known/postern/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(&assertion)
        .unwrap()
        .kid
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let origin = w.url("wiki", "");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[origin.trim_end_matches('/')]);
    validation.set_issuer(&[origin.trim_end_matches('/')]);
    let claims = jsonwebtoken::decode::<Value>(&assertion, &key, &validation)
        .unwrap_or_else(|e| panic!("assertion {assertion} does not verify: {e}"))
        .claims;
    assert_eq!(claims["sub"], "ann-0001");
    assert_eq!(claims["email"], "ann@example.com");
    validation.set_audience(&[w.url("crm", "").trim_end_matches('/')]);
    assert!(jsonwebtoken::decode::<Value>(&assertion, &key, &validation).is_err());

    // Identity headers a client sends, in any spelling, never reach the app; other cookies do.
    let cookie = w.session_cookie(&jar, "wiki");
    let raw = w.raw();
    let resp = raw
        .get(w.url("wiki", "/"))
        .header(
            "cookie",
            format!("theme=dark; __Host-postern-session={cookie}; lang=en"),
        )
        .header("x-postern-user", "mallory")
        .header("X_Postern_Email", "mallory@example.com")
        .header("x-postern-groups", "admins")
        .header("x-postern-jwt-assertion", "forged")
        .header("authorization", "Basic YXBwOnVzZXI=")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen_by_app: Value = resp.json().await.unwrap();
    assert_eq!(seen(&seen_by_app, "x-postern-user"), ["ann-0001"]);
    assert_eq!(seen(&seen_by_app, "x-postern-email"), ["ann@example.com"]);
    assert_eq!(seen(&seen_by_app, "x-postern-groups"), ["staff"]);
    assert!(seen(&seen_by_app, "x_postern_email").is_empty());
    assert_ne!(seen(&seen_by_app, "x-postern-jwt-assertion"), ["forged"]);
    assert_eq!(seen(&seen_by_app, "cookie"), ["theme=dark; lang=en"]);
    // With a cookie session, the app's own Authorization header is the app's business.
    assert_eq!(seen(&seen_by_app, "authorization"), ["Basic YXBwOnVzZXI="]);

    // The callback path belongs to the edge.
    let resp = raw
        .get(w.url("wiki", "/.postern/callback?code=x&state=y"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sign_in_state_invalid");
    assert!(body["error"]["request_id"].as_str().unwrap().len() == 32);

    // API clients without a session get 401 JSON, browsers a redirect to the issuer.
    let resp = raw
        .get(w.url("wiki", "/api"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sign_in_required");
    let resp = raw.get(w.url("wiki", "/")).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/auth?", w.issuer.url)),
        "{location}"
    );
    for param in [
        "code_challenge_method=S256",
        "code_challenge=",
        "nonce=",
        "state=",
        "client_id=wiki",
    ] {
        assert!(location.contains(param), "{location} lacks {param}");
    }
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.starts_with("__Host-postern-state-"),
        "{set_cookie}"
    );
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
    }
    assert!(!set_cookie.contains("Domain"), "host-only: {set_cookie}");
}

#[tokio::test]
async fn cookies_are_useless_when_tampered_replayed_elsewhere_signed_out_or_revoked() {
    let w = World::new(&[]).await;
    let (browser, jar) = w.browser();
    let resp = w
        .sign_in(&browser, "wiki", "/", "ann@example.com", false)
        .await;
    assert_eq!(resp.status(), 200);
    let cookie = w.session_cookie(&jar, "wiki");
    let raw = w.raw();
    let get = |app: &'static str, value: String| {
        let raw = raw.clone();
        let url = w.url(app, "/");
        async move {
            raw.get(url)
                .header("cookie", format!("__Host-postern-session={value}"))
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(get("wiki", cookie.clone()).await.status(), 200);

    // Every single-character change is refused.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for i in 0..cookie.len() {
        let mut bytes = cookie.clone().into_bytes();
        let at = ALPHABET.iter().position(|b| *b == bytes[i]).unwrap();
        bytes[i] = ALPHABET[(at + 1) % ALPHABET.len()];
        let resp = get("wiki", String::from_utf8(bytes).unwrap()).await;
        assert_ne!(resp.status(), 200, "a cookie changed at {i} was accepted");
    }
    let resp = get("wiki", format!("{cookie}x")).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_cookie_invalid");

    // The same cookie on another app is worthless.
    let resp = get("crm", cookie.clone()).await;
    assert_eq!(resp.status(), 400);

    // Revoking the user's sessions ends it at once.
    let out = w
        .edge
        .admin_ok(&["user", "revoke-sessions", "ann@example.com"])
        .await;
    assert!(out.contains("ann@example.com"));
    assert_eq!(get("wiki", cookie.clone()).await.status(), 401);
    // A new sign-in works again.
    let resp = browser.get(w.url("wiki", "/")).send().await.unwrap();
    let resp = if resp.url().as_str().starts_with(&w.issuer.url) {
        let html = resp.text().await.unwrap();
        w.submit_login(&browser, &html, "ann@example.com", false)
            .await
    } else {
        resp
    };
    assert_eq!(resp.status(), 200, "{}", resp.url());
    let fresh = w.session_cookie(&jar, "wiki");
    assert_eq!(get("wiki", fresh.clone()).await.status(), 200);

    // Opening the sign-out address (a link, a prefetch, another site's <img>) only asks.
    let session = format!("__Host-postern-session={fresh}");
    let page = raw
        .get(w.url("wiki", "/.postern/signout"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(!page.headers().contains_key("set-cookie"));
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign out?"), "{html}");
    assert_eq!(
        get("wiki", fresh.clone()).await.status(),
        200,
        "a GET signed out"
    );
    let action = common::browser::form_action(&html);
    assert!(action.starts_with("/.postern/signout?confirm="), "{action}");
    let post = |path: &str, headers: &[(&'static str, &str)]| {
        let mut req = raw
            .post(w.url("wiki", path))
            .header("cookie", &session)
            .form(&[("x", "1")]);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    // A form posted from another site, or without this session's token, is refused and
    // changes nothing.
    let origin = w.url("wiki", "");
    let origin = origin.trim_end_matches('/');
    // The same length, one character changed.
    let forged = {
        let (path, token) = action.split_once("confirm=").unwrap();
        let flipped = if token.starts_with('A') { 'B' } else { 'A' };
        format!("{path}confirm={flipped}{}", &token[1..])
    };
    for (path, headers, reason) in [
        (
            action.as_str(),
            vec![
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            "another",
        ),
        (
            action.as_str(),
            vec![("sec-fetch-site", "same-site")],
            "another site",
        ),
        (action.as_str(), vec![("origin", "null")], "another origin"),
        (
            "/.postern/signout",
            vec![("origin", origin)],
            "no confirmation token",
        ),
        (forged.as_str(), vec![("origin", origin)], "does not belong"),
    ] {
        let resp = post(path, &headers).await.unwrap();
        assert_eq!(resp.status(), 403, "{path} {headers:?}");
        let page = resp.text().await.unwrap();
        assert!(page.contains("sign_out_refused"), "{page}");
        assert!(page.contains(reason), "{reason:?}: {page}");
        assert_eq!(get("wiki", fresh.clone()).await.status(), 200);
    }

    // The page's own form ends the session, and sends the browser to the issuer's logout.
    let resp = post(
        &action,
        &[("origin", origin), ("sec-fetch-site", "same-origin")],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/session/end", w.issuer.url)),
        "{location}"
    );
    assert!(resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        get("wiki", fresh).await.status(),
        401,
        "a signed-out session was replayed"
    );
}

#[tokio::test]
async fn assignment_and_mfa_are_enforced() {
    let w = World::new(&["--assignment-required", "--require-mfa"]).await;
    // Not assigned: refused at once, whatever the factors (deny wins, so the user is not sent
    // back for a second factor first).
    let (ann, _) = w.browser();
    let resp = w.sign_in(&ann, "wiki", "/", "ann@example.com", false).await;
    assert_eq!(resp.status(), 403, "{}", resp.url());
    assert!(resp.text().await.unwrap().contains("not assigned"));
    let (ann, _) = w.browser();
    let resp = w.sign_in(&ann, "wiki", "/", "ann@example.com", true).await;
    assert_eq!(resp.status(), 403, "{}", resp.url());
    assert!(resp.text().await.unwrap().contains("not assigned"));
    // Assigned through a group.
    w.edge
        .admin_ok(&["app", "assign", "wiki", "--group", "staff"])
        .await;
    // Without a second factor the edge goes back to the issuer asking for one...
    let (ann, _) = w.browser();
    let resp = w.sign_in(&ann, "wiki", "/", "ann@example.com", false).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.url().as_str().starts_with(&w.issuer.url),
        "no step-up: {}",
        resp.url()
    );
    let html = resp.text().await.unwrap();
    // ... and refuses if it is still missing.
    let resp = w.submit_login(&ann, &html, "ann@example.com", false).await;
    assert_eq!(resp.status(), 403);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("mfa_required") && page.contains("Request ID"),
        "{page}"
    );
    // With it, in.
    let (ann, _) = w.browser();
    let resp = w.sign_in(&ann, "wiki", "/", "ann@example.com", true).await;
    assert_eq!(resp.status(), 200, "{}", resp.url());
    // Both settings are policies: what-if and the sign-in log name them.
    let what_if: Value = serde_json::from_str(
        &w.edge
            .admin_ok(&[
                "policy",
                "what-if",
                "--user",
                "carl@example.com",
                "--app",
                "wiki",
                "--ip",
                "192.0.2.1",
                "--json",
            ])
            .await,
    )
    .unwrap();
    assert_eq!(
        (&what_if["result"], &what_if["policy"]),
        (&json!("block"), &json!("wiki: assignment required")),
        "{what_if}"
    );
    let refused = signins(&w, &["--user", "ann@example.com", "--failed"]).await;
    assert!(
        refused.iter().any(|r| r["appliedConditionalAccessPolicies"]
            == json!([
                {"displayName": "wiki: assignment required", "result": "failure"},
                {"displayName": "wiki: require MFA", "result": "success"},
            ])),
        "{refused:?}"
    );
    // An administrator's policy cannot take such a name.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "state: on\nusers: { include: [all] }\napps: { include: [all] }\ngrant: { block: true }\n",
    )
    .unwrap();
    let out = w
        .edge
        .admin(&[
            "policy",
            "create",
            "x: require MFA",
            "-f",
            file.to_str().unwrap(),
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("kept for apps"),
        "{err}"
    );

    // Bob: not in the group; assigned by email.
    let (bob, _) = w.browser();
    let resp = w.sign_in(&bob, "wiki", "/", "bob@example.com", true).await;
    assert_eq!(resp.status(), 403);
    w.edge
        .admin_ok(&["app", "assign", "wiki", "--user", "BOB@example.com"])
        .await;
    let list = w.edge.admin_ok(&["app", "assignments", "wiki"]).await;
    assert!(
        list.contains("staff") && list.contains("BOB@example.com"),
        "{list}"
    );
    let resp = bob.get(w.url("wiki", "/")).send().await.unwrap();
    let resp = if resp.url().as_str().starts_with(&w.issuer.url) {
        let html = resp.text().await.unwrap();
        w.submit_login(&bob, &html, "bob@example.com", true).await
    } else {
        resp
    };
    assert_eq!(resp.status(), 200, "{}", resp.url());
    // The audit log has the assignments.
    let (_, page, _) = w
        .edge
        .api(Method::GET, "/v1/audit?action=app.assign", None)
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
}

/// Runs a code flow directly against the issuer as client `client` and returns the ID token.
async fn id_token_for(w: &World, client: &str, email: &str) -> String {
    let (browser, _) = w.browser();
    let tls = postern_pki::client_config(&w.edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    let no_follow = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .cookie_provider(Arc::new(reqwest::cookie::Jar::default()))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().as_str().contains("/.postern/callback") {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap();
    drop(browser);
    let verifier = postern_auth::CodeVerifier::generate();
    let redirect = w.url(client, "/.postern/callback");
    let mut auth = url::Url::parse(&format!("{}/auth", w.issuer.url)).unwrap();
    auth.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", "openid email profile")
        .append_pair("nonce", "n-0S6_WzA2Mj")
        .append_pair("state", "s")
        .append_pair("code_challenge", verifier.challenge().as_str())
        .append_pair("code_challenge_method", "S256");
    let page = no_follow
        .get(auth.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resp = w.submit_login(&no_follow, &page, email, false).await;
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap();
    let code = url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let tokens: Value = no_follow
        .post(format!("{}/token", w.issuer.url))
        .basic_auth(client, Some(format!("{client}-secret")))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["id_token"].as_str().unwrap().to_owned()
}

/// `GET url` with `Authorization: Bearer token`, asking for JSON when `json`.
async fn bearer_get(
    raw: &reqwest::Client,
    url: String,
    token: &str,
    json: bool,
) -> reqwest::Response {
    let mut req = raw.get(url).bearer_auth(token);
    if json {
        req = req.header("accept", "application/json");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn bearer_tokens_for_this_app_are_accepted_in_place_of_the_cookie() {
    let w = World::new(&[]).await;
    let raw = w.raw();
    let token = id_token_for(&w, "wiki", "ann@example.com").await;
    let resp = bearer_get(&raw, w.url("wiki", "/api"), &token, false).await;
    assert_eq!(resp.status(), 200);
    let seen_by_app: Value = resp.json().await.unwrap();
    assert_eq!(seen(&seen_by_app, "x-postern-user"), ["ann-0001"]);
    assert!(
        seen(&seen_by_app, "authorization").is_empty(),
        "the bearer token reached the app"
    );

    // A token issued to another app, a mangled one, and garbage are refused with 401 JSON.
    let other = id_token_for(&w, "crm", "ann@example.com").await;
    let mut mangled = token.clone();
    mangled.pop();
    for bad in [other.as_str(), mangled.as_str(), "not-a-jwt"] {
        let resp = bearer_get(&raw, w.url("wiki", "/api"), bad, true).await;
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bearer_token_refused", "{body}");
    }
    // The crm token is good on crm, and still not on wiki once crm has accepted it.
    let resp = bearer_get(&raw, w.url("crm", "/"), &other, false).await;
    assert_eq!(resp.status(), 200);
    let resp = bearer_get(&raw, w.url("wiki", "/api"), &other, true).await;
    assert_eq!(resp.status(), 401);

    // Accepted again (from the edge's cache of verified tokens)...
    let resp = bearer_get(&raw, w.url("wiki", "/api"), &token, false).await;
    assert_eq!(resp.status(), 200);
    // ...until the user's sessions are revoked: then refused, cached or not.
    w.edge
        .admin_ok(&["user", "revoke-sessions", "ann@example.com"])
        .await;
    let resp = bearer_get(&raw, w.url("wiki", "/api"), &token, true).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
}

/// The sign-in log as `logs signins --json` prints it, with `args` as filters.
async fn signins(w: &World, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["logs", "signins", "--json"];
    all.extend(args);
    let page: Value = serde_json::from_str(&w.edge.admin_ok(&all).await).unwrap();
    page["signins"].as_array().unwrap().clone()
}

#[tokio::test]
async fn sign_ins_are_logged_with_the_fields_of_entras_sign_in_resource() {
    let w = World::new(&[]).await;
    let (browser, _jar) = w.browser();
    let resp = w
        .sign_in(&browser, "wiki", "/", "ann@example.com", false)
        .await;
    assert_eq!(resp.status(), 200);
    let token = id_token_for(&w, "crm", "bob@example.com").await;
    let raw = w.raw();
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
    for _ in 0..2 {
        let resp = raw
            .get(w.url("crm", "/api"))
            .bearer_auth(&token)
            .header("user-agent", firefox)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = bearer_get(&raw, w.url("crm", "/api"), "not-a-jwt", true).await;
    assert_eq!(resp.status(), 401);
    let refused_request = resp.headers()["x-request-id"].to_str().unwrap().to_owned();

    // Interactive, through the callback, in the browser.
    let ann = signins(&w, &["--user", "ANN@example.com"]).await;
    assert_eq!(ann.len(), 1, "{ann:?}");
    let s = &ann[0];
    assert_eq!(s["userPrincipalName"], "ann@example.com");
    assert_eq!(s["userId"], "ann-0001");
    assert_eq!(s["appDisplayName"], "wiki");
    assert!(s["appId"].as_str().is_some_and(|id| !id.is_empty()), "{s}");
    assert_eq!(s["ipAddress"], "127.0.0.1");
    assert_eq!(s["clientAppUsed"], "Browser");
    assert_eq!(s["isInteractive"], true);
    assert_eq!(s["status"]["errorCode"], "0");
    assert_eq!(s["correlationId"].as_str().unwrap().len(), 32);
    assert_eq!(s["authenticationRequirement"], "singleFactorAuthentication");
    assert_eq!(s["conditionalAccessStatus"], "notApplied");
    assert_eq!(s["location"], Value::Null);
    assert_eq!(s["issuer"], w.issuer.url.as_str());
    assert_eq!(s["id"].as_str().unwrap().len(), 36);
    // By bearer token: once when verified, not on each request; the device from its agent.
    let crm = signins(&w, &["--app", "crm"]).await;
    let bob: Vec<_> = crm
        .iter()
        .filter(|s| s["userPrincipalName"] == "bob@example.com")
        .collect();
    assert_eq!(bob.len(), 1, "{crm:?}");
    assert_eq!(bob[0]["isInteractive"], false);
    assert_eq!(bob[0]["clientAppUsed"], "Mobile Apps and Desktop clients");
    assert_eq!(bob[0]["deviceDetail"]["operatingSystem"], "Linux");
    assert_eq!(bob[0]["deviceDetail"]["browser"], "Firefox 120");
    // A refused token is a failed sign-in, with the request's ID and why.
    let failed = signins(&w, &["--app", "crm", "--failed"]).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["correlationId"], refused_request.as_str());
    assert_eq!(failed[0]["status"]["errorCode"], "bearer_token_refused");
    assert!(!failed[0]["status"]["failureReason"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(signins(&w, &["--since", "2999-01-01T00:00:00Z"])
        .await
        .is_empty());
    let verified = w.edge.admin_ok(&["logs", "verify"]).await;
    assert!(
        verified.contains("signins log: intact (3 records)"),
        "{verified}"
    );
}

#[tokio::test]
async fn a_flood_of_bad_tokens_records_a_bounded_number_of_failed_sign_ins() {
    let w = World::new(&[]).await;
    let raw = w.raw();
    // Three times the per-address burst (postern_idp::REFUSAL_EVENTS_PER_ADDRESS, 10).
    let flood = 30;
    for i in 0..flood {
        let resp = bearer_get(&raw, w.url("wiki", "/api"), &format!("bad-{i}"), true).await;
        assert_eq!(resp.status(), 401);
    }
    let failed = signins(&w, &["--failed", "--limit", "1000"]).await;
    assert!(
        !failed.is_empty() && failed.len() < flood,
        "{} of {flood} recorded",
        failed.len()
    );
}

#[tokio::test]
async fn the_return_target_never_leaves_the_apps_origin() {
    let w = World::new(&[]).await;
    let (browser, _) = w.browser();
    let resp = w
        .sign_in(&browser, "wiki", "/", "ann@example.com", false)
        .await;
    assert_eq!(resp.status(), 200);
    // The issuer remembers ann now: each sign-in below goes straight through.
    let origin = url::Url::parse(&w.url("wiki", "/")).unwrap().origin();
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/openredirects.txt"
    ))
    .unwrap();
    let mut tried = 0;
    for payload in corpus.lines().filter(|l| !l.trim().is_empty()).take(120) {
        // Sent as the path of a request to the app (what a link to the app could carry).
        let Ok(url) = url::Url::parse(&format!("{}/{payload}", w.url("wiki", ""))) else {
            continue;
        };
        if url.origin() != origin {
            continue;
        }
        let (fresh, _) = w.browser();
        // A new jar holds no session: a sign-in starts, and the issuer's session is in
        // `browser`'s jar only, so sign in through the page.
        let resp = fresh.get(url.as_str()).send().await.unwrap();
        if resp.url().as_str().starts_with(&w.issuer.url) {
            let html = resp.text().await.unwrap();
            let done = w
                .submit_login(&fresh, &html, "ann@example.com", false)
                .await;
            assert_eq!(
                done.url().origin(),
                origin,
                "payload {payload:?} led to {}",
                done.url()
            );
        } else {
            assert_eq!(
                resp.url().origin(),
                origin,
                "payload {payload:?} led to {}",
                resp.url()
            );
        }
        tried += 1;
    }
    assert!(tried > 50, "only {tried} payloads could be sent as a path");
}

/// Opening `/.postern/signout` in the browser showed the edge's question and kept the session;
/// the browser's click on its button (a same-origin POST) is what signed out.
fn assert_signed_out_only_after_confirming(result: &Value) {
    let asked = &result["edgeAsked"];
    assert!(
        asked["url"]
            .as_str()
            .unwrap()
            .ends_with("/.postern/signout"),
        "{asked}"
    );
    assert!(
        asked["text"].as_str().unwrap().contains("Sign out?"),
        "{asked}"
    );
    assert!(
        result["cookiesAtConfirm"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "__Host-postern-session"),
        "opening the sign-out address signed out"
    );
}

#[tokio::test]
async fn a_user_signs_in_and_out_in_headless_chromium() {
    let w = World::new(&[]).await;
    let url = w.url("wiki", "/docs?x=1");
    let result = chromium(
        "browser-signin.mjs",
        json!({ "url": url, "email": "ann@example.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(result["afterSignIn"]["url"], url.as_str());
    let body: Value =
        serde_json::from_str(result["afterSignIn"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen(&body, "x-postern-user"), ["ann-0001"]);
    assert_eq!(seen(&body, "x-postern-email"), ["ann@example.com"]);
    let session = result["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "__Host-postern-session")
        .expect("the browser holds the session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    assert_eq!(session["sameSite"], "Lax");
    assert_eq!(session["domain"], "wiki.localhost");
    assert_eq!(
        session["expires"], -1,
        "a browser-session cookie unless made persistent"
    );
    assert_signed_out_only_after_confirming(&result);
    assert!(result["afterSignOut"]["text"]
        .as_str()
        .unwrap()
        .contains("You are signed out"));
    assert!(!result["cookiesAfterSignOut"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "__Host-postern-session"));
}

#[tokio::test]
async fn a_user_signs_in_with_the_built_in_provider_in_headless_chromium() {
    // Loopback placed in Reykjavík, ahead of the real GeoLite2 database (which places nothing
    // private): every sign-in below records where it came from.
    let geo = tempfile::tempdir().unwrap();
    let loopback = common::geoip::loopback_in_reykjavik(geo.path());
    let [v4, v6] = common::geoip::geolite2();
    let edge = Edge::start(&[
        "--geoip-db",
        loopback.to_str().unwrap(),
        "--geoip-db",
        v4.to_str().unwrap(),
        "--geoip-db",
        v6.to_str().unwrap(),
    ])
    .await;
    let app = backends::app().await;
    edge.group("g").await;
    let pw = edge.dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    edge.admin_ok(&[
        "user",
        "create",
        "cy@example.com",
        "--password-file",
        pw.to_str().unwrap(),
        "--group",
        "staff",
        "--email-verified",
    ])
    .await;
    edge.admin_ok(&[
        "user",
        "create",
        "dan@example.com",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .await;
    let external = format!("https://intranet.localhost:{}", edge.public.port());
    edge.admin_ok(&[
        "app",
        "publish",
        "intranet",
        "--external-url",
        &external,
        "--internal-url",
        &app.url(),
        "--group",
        "g",
        "--preauth",
        "oidc",
        "--assignment-required",
    ])
    .await;
    edge.admin_ok(&["app", "assign", "intranet", "--group", "staff"])
        .await;
    let shown: Value =
        serde_json::from_str(&edge.admin_ok(&["app", "show", "intranet", "--json"]).await).unwrap();
    assert_eq!(shown["sign_in"]["issuer"], "built-in");
    assert_eq!(shown["sign_in"]["client_secret_set"], true);
    let _connector = edge.connector("g").await;

    let url = format!("{external}/reports?q=1");
    let result = chromium(
        "browser-signin.mjs",
        json!({
            "url": url, "email": "cy@example.com", "password": PASSWORD, "signedOutAtApp": false,
        }),
    )
    .await;
    assert_eq!(result["afterSignIn"]["url"], url.as_str());
    let body: Value =
        serde_json::from_str(result["afterSignIn"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen(&body, "x-postern-email"), ["cy@example.com"]);
    assert_eq!(seen(&body, "x-postern-groups"), ["staff"]);
    assert!(
        seen(&body, "x-postern-user")[0].starts_with("u_"),
        "a stable subject, not the email"
    );
    assert_signed_out_only_after_confirming(&result);
    assert!(!result["cookiesAfterSignOut"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "__Host-postern-session"));

    // Dan signs in fine at the provider but is not assigned to the app.
    let (provider, resp) = provider_sign_in(&edge, &url, "dan@example.com").await;
    assert_eq!(provider, Some("login.localhost".to_owned()));
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("not assigned"));

    // The sign-in log has both sides of Cy's sign-in, each named by the app (the provider's
    // client belongs to it): the provider's password check and the edge's callback.
    let log: Value = serde_json::from_str(
        &edge
            .admin_ok(&["logs", "signins", "--json", "--app", "intranet"])
            .await,
    )
    .unwrap();
    let rows = log["signins"].as_array().unwrap();
    let signed_in = |at_provider: bool| {
        rows.iter().any(|s| {
            (s["issuer"] == "postern-idp") == at_provider
                && s["userPrincipalName"] == "cy@example.com"
                && s["status"]["errorCode"] == "0"
                && s["isInteractive"] == true
        })
    };
    assert!(signed_in(true) && signed_in(false), "{log}");
    assert!(
        rows.iter()
            .filter(|s| s["issuer"] == "postern-idp")
            .all(|s| s["authenticationMethodsUsed"] == json!(["pwd"])),
        "{log}"
    );
    // Each record names its request and where it came from, at either side; Cy's, made in
    // Chromium, name the browser too.
    for s in rows {
        assert_eq!(s["correlationId"].as_str().unwrap().len(), 32, "{s}");
        if s["userPrincipalName"] == "cy@example.com" {
            assert_eq!(s["deviceDetail"]["operatingSystem"], "Linux", "{s}");
            assert!(
                s["deviceDetail"]["browser"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("Chrome ")),
                "{s}"
            );
        }
        assert_eq!(
            s["location"],
            json!({
                "city": "Reykjavik",
                "state": "Capital Region",
                "countryOrRegion": "IS",
                "geoCoordinates": {"latitude": 64.1466, "longitude": -21.9426},
            }),
            "{s}"
        );
    }
    edge.admin_ok(&["logs", "verify"]).await;
}

#[tokio::test]
async fn sessions_survive_a_key_rotation_and_an_edge_restart() {
    let w = World::new(&[]).await;
    let (browser, jar) = w.browser();
    let resp = w
        .sign_in(&browser, "wiki", "/", "ann@example.com", false)
        .await;
    assert_eq!(resp.status(), 200);
    let cookie = w.session_cookie(&jar, "wiki");
    let get = |edge: &Edge, value: &str| {
        let tls = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .resolve("wiki.localhost", edge.public)
            .build()
            .unwrap();
        let url = edge.url("wiki.localhost", "/");
        let value = value.to_owned();
        async move {
            client
                .get(url)
                .header("cookie", format!("__Host-postern-session={value}"))
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let out = w.edge.admin_ok(&["rotate-session-key"]).await;
    assert!(out.contains("existing sessions keep working"), "{out}");
    assert_eq!(
        get(&w.edge, &cookie).await,
        200,
        "a key rotation signed the user out"
    );

    // The key ring is in the store: the session outlives the edge process.
    let World {
        edge,
        issuer,
        _connector: connector,
        _app: app,
    } = w;
    let connector_port = edge.connector.port();
    let (dir, mut child) = (edge.dir, edge.child);
    child.kill().await.unwrap();
    let listen = format!("127.0.0.1:{connector_port}");
    let edge = Edge::start_in(dir, &["--connector-listen", &listen]).await;
    edge.wait_tunnels(&connector.id, 2).await;
    assert_eq!(
        get(&edge, &cookie).await,
        200,
        "an edge restart signed the user out"
    );
    drop((issuer, app));
}

/// An issuer that accepts TCP connections and never answers: each accepted connection is held
/// open until [`Hanging::release`], and counted.
struct Hanging {
    url: String,
    accepted: tokio::sync::watch::Receiver<usize>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Hanging {
    async fn start() -> Hanging {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (count, accepted) = tokio::sync::watch::channel(0);
        let (release, mut released) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    conn = listener.accept() => {
                        let Ok((conn, _)) = conn else { return };
                        held.push(conn);
                        count.send_modify(|n| *n += 1);
                    }
                    // Closing the held connections makes the waiting discovery fail now.
                    _ = &mut released => held.clear(),
                }
            }
        });
        Hanging {
            url,
            accepted,
            release: Some(release),
        }
    }

    fn accepted(&self) -> usize {
        *self.accepted.borrow()
    }

    async fn wait_accepted(&mut self, n: usize) {
        tokio::time::timeout(
            common::READY_TIMEOUT,
            self.accepted.wait_for(|count| *count >= n),
        )
        .await
        .expect("the edge never connected to the hanging issuer")
        .unwrap();
    }

    fn release(&mut self) {
        if let Some(r) = self.release.take() {
            let _ = r.send(());
        }
    }
}

#[tokio::test]
async fn a_dead_issuer_neither_stalls_other_apps_nor_is_waited_for_twice() {
    let w = World::new(&[]).await;
    let mut dead = Hanging::start().await;
    let port = w.edge.public.port();
    let external = format!("https://dead.localhost:{port}");
    let internal = w._app.url();
    w.edge
        .admin_ok(&[
            "app",
            "publish",
            "dead",
            "--external-url",
            &external,
            "--internal-url",
            &internal,
            "--group",
            "g",
            "--preauth",
            "oidc",
            "--issuer",
            &dead.url,
            "--client-id",
            "dead",
        ])
        .await;
    let tls = postern_pki::client_config(&w.edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    let raw = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("dead.localhost", w.edge.public)
        .build()
        .unwrap();
    let open_dead = || {
        let raw = raw.clone();
        let url = w.edge.url("dead.localhost", "/");
        tokio::spawn(async move { raw.get(url).send().await.unwrap() })
    };

    // Sign-ins to the dead issuer's app hang on its discovery...
    let first = open_dead();
    dead.wait_accepted(1).await;
    let concurrent: Vec<_> = (0..4).map(|_| open_dead()).collect();
    // ...while another app's user signs in through a live issuer from start to finish.
    let (browser, _) = w.browser();
    let resp = tokio::time::timeout(
        common::READY_TIMEOUT,
        w.sign_in(&browser, "wiki", "/", "ann@example.com", false),
    )
    .await
    .expect("a sign-in to another app waited for the dead issuer");
    assert_eq!(resp.status(), 200);
    assert!(
        !first.is_finished() && concurrent.iter().all(|t| !t.is_finished()),
        "the dead issuer's sign-ins should still be waiting"
    );
    // Concurrent sign-ins for one issuer share one discovery.
    assert_eq!(
        dead.accepted(),
        1,
        "each waiting sign-in dialled the issuer"
    );

    // The discovery fails: every waiting sign-in gets the page naming the unreachable issuer.
    dead.release();
    for attempt in std::iter::once(first).chain(concurrent) {
        let resp = attempt.await.unwrap();
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let page = resp.text().await.unwrap();
        assert!(page.contains("issuer_unreachable"), "{page}");
        assert!(
            page.contains(&dead.url),
            "the page does not name the issuer: {page}"
        );
    }
    // Within the failure hold, the next sign-in is refused at once, without dialling again
    // (the issuer holds every connection open, so a new discovery would never answer).
    let again = tokio::time::timeout(
        common::READY_TIMEOUT,
        raw.get(w.edge.url("dead.localhost", "/"))
            .header("accept", "text/html")
            .send(),
    )
    .await
    .expect("a sign-in within the failure hold waited for the issuer again")
    .unwrap();
    assert_eq!(again.status(), 503);
    let retry_after: u64 = again.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert!(again.text().await.unwrap().contains("issuer_unreachable"));
    assert_eq!(dead.accepted(), 1, "the held failure was not used");
    // The live issuer's app is unaffected.
    let resp = browser.get(w.url("wiki", "/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn only_a_verified_email_matches_assignments_and_reaches_the_app() {
    let w = World::new(&["--assignment-required"]).await;
    for email in ["ann@example.com", "cat@example.com", "dee@example.com"] {
        w.edge
            .admin_ok(&["app", "assign", "wiki", "--user", email])
            .await;
    }
    let w = &w;
    let sign_in = |email: &'static str| async move {
        let (browser, _) = w.browser();
        let resp = w.sign_in(&browser, "wiki", "/", email, false).await;
        let status = resp.status();
        (status, resp.text().await.unwrap())
    };
    // email_verified: true.
    let (status, body) = sign_in("ann@example.com").await;
    assert_eq!(status, 200, "{body}");
    let seen_by_app: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen(&seen_by_app, "x-postern-email"), ["ann@example.com"]);
    // email_verified: false, and no email_verified at all: the email is not the user's to
    // claim, so the assignment by email does not match.
    for (email, subject) in [
        ("cat@example.com", "cat-0003"),
        ("dee@example.com", "dee-0004"),
    ] {
        let (status, page) = sign_in(email).await;
        assert_eq!(status, 403, "{email}: {page}");
        assert!(page.contains("not_assigned"), "{page}");
        assert!(
            page.contains(subject),
            "{email} is named by subject: {page}"
        );
    }
    // A bearer token claiming an unverified email is not matched either.
    let token = id_token_for(w, "wiki", "cat@example.com").await;
    let resp = bearer_get(&w.raw(), w.url("wiki", "/api"), &token, true).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_assigned");

    // The admin vouches for the issuer: a token that says nothing now counts as verified; one
    // that says false still does not.
    let shown = w
        .edge
        .admin_ok(&["app", "update", "wiki", "--issuer-verifies-email", "true"])
        .await;
    assert!(shown.contains("verified by the issuer"), "{shown}");
    let (status, body) = sign_in("dee@example.com").await;
    assert_eq!(status, 200, "{body}");
    let seen_by_app: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen(&seen_by_app, "x-postern-email"), ["dee@example.com"]);
    let (status, _) = sign_in("cat@example.com").await;
    assert_eq!(status, 403);

    // Assigned by subject, the unverified user gets in, and the app never sees the email: not
    // as a header, not in the signed assertion.
    w.edge
        .admin_ok(&["app", "assign", "wiki", "--user", "cat-0003"])
        .await;
    let (status, body) = sign_in("cat@example.com").await;
    assert_eq!(status, 200, "{body}");
    let seen_by_app: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen(&seen_by_app, "x-postern-user"), ["cat-0003"]);
    assert!(seen(&seen_by_app, "x-postern-email").is_empty(), "{body}");
    let assertion = seen(&seen_by_app, "x-postern-jwt-assertion").pop().unwrap();
    let claims = common::browser::claims(&assertion);
    assert_eq!(claims["sub"], "cat-0003");
    assert!(claims.get("email").is_none_or(|e| e.is_null()), "{claims}");

    // The setting is shown, audited, and a passthrough app cannot have it.
    let (_, app, _) = w.edge.api(Method::GET, "/v1/apps/wiki", None).await;
    assert_eq!(app["sign_in"]["issuer_verifies_email"], true);
    let (_, page, _) = w
        .edge
        .api(Method::GET, "/v1/audit?action=app.update", None)
        .await;
    assert!(
        page["events"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("issuer_verifies_email: false -> true"),
        "{page}"
    );
    let (status, body, _) = w
        .edge
        .api(
            Method::POST,
            "/v1/apps",
            Some(json!({
                "name": "open", "external_url": w.url("open", ""), "internal_url": "http://127.0.0.1:9/",
                "group": "g", "preauth": "passthrough", "issuer_verifies_email": true,
            })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("issuer-verifies-email"),
        "{body}"
    );
}

/// `GET url` with a bearer token, from `client_ip` as a trusted proxy (loopback) forwards it.
async fn bearer_from(w: &World, token: &str, client_ip: &str) -> reqwest::Response {
    w.raw()
        .get(w.url("wiki", "/api"))
        .bearer_auth(token)
        .header("accept", "application/json")
        .header("x-forwarded-for", client_ip)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn conditional_access_blocks_by_location_report_only_changes_nothing_and_what_if_agrees() {
    let w = World::with_edge(&["--trusted-proxy", "127.0.0.1"], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    w.edge
        .admin_ok(&["location", "create", "branch", "--cidr", "203.0.113.0/24"])
        .await;
    // The issuer's group is known once an assignment names it (assignment is not required).
    w.edge
        .admin_ok(&["app", "assign", "wiki", "--group", "staff"])
        .await;
    let block = file(
        "block.yaml",
        "state: on\nusers: { include: [all], exclude: ['group:staff'] }\napps: { include: ['app:wiki'] }\nconditions: { locations: { include: ['location:branch'] } }\ngrant: { block: true }\n",
    );
    w.edge
        .admin_ok(&["policy", "create", "no-branch", "-f", &block])
        .await;
    let report = file(
        "report.yaml",
        "state: report-only\nusers: { include: [all] }\napps: { include: [all] }\ngrant: { require: [mfa] }\n",
    );
    w.edge
        .admin_ok(&["policy", "create", "mfa-everywhere", "-f", &report])
        .await;

    // Bad policies change nothing and name the field.
    for (text, field) in [
        ("state: on\nusers: { include: [all] }\napps: { include: [all] }\nconditions: { locations: { include: ['location:nowhere'] } }\ngrant: { block: true }\n", "conditions.locations.include[0]"),
        ("state: on\nusers: { include: ['group:nobody'] }\napps: { include: [all] }\ngrant: { block: true }\n", "users.include[0]"),
        ("state: on\nusers: { include: [all] }\napps: { include: ['app:ghost'] }\ngrant: { block: true }\n", "apps.include[0]"),
        ("state: on\nusers: { include: [] }\napps: { include: [all] }\ngrant: { block: true }\n", "users.include"),
    ] {
        let bad = file("bad.yaml", text);
        let out = w.edge.admin(&["policy", "create", "bad", "-f", &bad]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(field), "{field}: {err}");
    }
    let out = w
        .edge
        .admin(&["location", "create", "x", "--country", "XX"])
        .await;
    assert!(!out.status.success());
    let out = w.edge.admin(&["location", "delete", "branch"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no-branch"), "{err}");
    let listed: Value =
        serde_json::from_str(&w.edge.admin_ok(&["policy", "list", "--json"]).await).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["no-branch", "mfa-everywhere"]);

    // Bob from the branch is refused, naming the policy and the request; from elsewhere he is
    // let through, though the report-only policy's MFA is not met.
    let bob = id_token_for(&w, "wiki", "bob@example.com").await;
    let resp = bearer_from(&w, &bob, "203.0.113.5").await;
    assert_eq!(resp.status(), 403);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "blocked_by_policy", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-branch"));
    assert_eq!(body["error"]["request_id"], request_id.as_str());
    assert_eq!(bearer_from(&w, &bob, "198.51.100.7").await.status(), 200);
    // Ann is in staff, which the policy excludes.
    let ann = id_token_for(&w, "wiki", "ann@example.com").await;
    assert_eq!(bearer_from(&w, &ann, "203.0.113.5").await.status(), 200);

    // What-if says the same without a sign-in.
    let what_if = |ip: &'static str, groups: &'static [&'static str]| {
        let w = &w;
        async move {
            let flags: Vec<&str> = groups.iter().flat_map(|g| ["--group", g]).collect();
            bob_what_if(w, ip, &flags).await
        }
    };
    let blocked = what_if("203.0.113.5", &[]).await;
    assert_eq!(blocked["result"], "block", "{blocked}");
    assert_eq!(blocked["policy"], "no-branch");
    let allowed = what_if("198.51.100.7", &[]).await;
    assert_eq!(allowed["result"], "allow", "{allowed}");
    assert_eq!(
        allowed["policies"],
        json!([{"name": "mfa-everywhere", "state": "report-only", "outcome": "needs_mfa"}])
    );
    assert_eq!(what_if("203.0.113.5", &["staff"]).await["result"], "allow");

    // Turning the policy off lets Bob in from the branch at once.
    let off = file(
        "off.yaml",
        &std::fs::read_to_string(&block)
            .unwrap()
            .replace("state: on", "state: off"),
    );
    w.edge
        .admin_ok(&["policy", "create", "no-branch", "-f", &off])
        .await;
    assert_eq!(bearer_from(&w, &bob, "203.0.113.5").await.status(), 200);
    let audit = w.edge.admin_ok(&["logs", "audit", "--json"]).await;
    assert!(
        audit.contains("policy.put") && audit.contains("location.put"),
        "{audit}"
    );
}

/// `policy what-if` for Bob on the wiki from `ip`, with `extra` flags.
async fn bob_what_if(w: &World, ip: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "policy",
        "what-if",
        "--user",
        "bob@example.com",
        "--app",
        "wiki",
        "--ip",
        ip,
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&w.edge.admin_ok(&args).await).unwrap()
}

/// Polls `what-if` for Bob on the wiki from `ip` until `done` holds (the edge reloads on its own).
async fn what_if_until(w: &World, ip: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + common::READY_TIMEOUT;
    loop {
        let v = bob_what_if(w, ip, &[]).await;
        if done(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn identity_protection_finds_anonymizers_and_unlikely_travel_and_policies_act_on_the_risk() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("anonymizers.txt");
    // Tor exit ranges as a list publishes them, with a comment and a blank line.
    std::fs::write(&list, "# exits\n185.220.101.0/24\n\n2a0b:f4c2::/40\n").unwrap();
    let [v4, v6] = common::geoip::geolite2();
    let w = World::with_edge(
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--anonymizer-list",
            list.to_str().unwrap(),
            "--geoip-db",
            v4.to_str().unwrap(),
            "--geoip-db",
            v6.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let block_when = |condition: &str| {
        format!("state: on\nusers: {{ include: [all] }}\napps: {{ include: [all] }}\nconditions: {{ {condition} }}\ngrant: {{ block: true }}\n")
    };
    w.edge
        .policy("risky-sign-in", &block_when("sign_in_risk: [medium, high]"))
        .await;
    w.edge
        .policy("risky-user", &block_when("user_risk: [high]"))
        .await;

    // Bob's first use of a token comes from a Tor exit: anonymizedIPAddress (medium), refused by
    // the sign-in risk policy, naming it and the request.
    let bob = id_token_for(&w, "wiki", "bob@example.com").await;
    let resp = bearer_from(&w, &bob, "185.220.101.7").await;
    assert_eq!(resp.status(), 403);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "blocked_by_policy", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("risky-sign-in"),
        "{body}"
    );
    // The sign-in log says which policy failed it, and the risk it was judged at.
    let logged = signins(&w, &["--user", "bob@example.com"]).await;
    let refused = logged
        .iter()
        .find(|s| s["correlationId"] == request_id.as_str())
        .unwrap_or_else(|| panic!("{logged:?}"));
    assert_eq!(refused["conditionalAccessStatus"], "failure", "{refused}");
    assert_eq!(
        refused["appliedConditionalAccessPolicies"],
        json!([{"displayName": "risky-sign-in", "result": "failure"}]),
        "{refused}"
    );
    assert_eq!(refused["riskLevelDuringSignIn"], "medium");
    assert_eq!(refused["riskEventTypes_v2"], json!(["anonymizedIPAddress"]));
    // From an ordinary address the request's sign-in risk is none; medium user risk is not
    // blocked.
    assert_eq!(bearer_from(&w, &bob, "81.2.69.142").await.status(), 200);
    let found: Value = serde_json::from_str(
        &w.edge
            .admin_ok(&["risk", "detections", "--user", "BOB@example.com", "--json"])
            .await,
    )
    .unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let d = &found[0];
    assert_eq!(d["riskEventType"], "anonymizedIPAddress");
    assert_eq!(d["riskLevel"], "medium");
    assert_eq!(d["riskState"], "atRisk");
    assert_eq!(d["ipAddress"], "185.220.101.7");
    assert_eq!(d["correlationId"], request_id.as_str());
    assert_eq!(d["source"], "edge");
    assert_eq!(d["userId"], "bob-0002");
    // What-if sees the address's risk and the user's.
    let v = what_if_until(&w, "185.220.101.9", |v| v["user_risk"] == "medium").await;
    assert_eq!(v["sign_in_risk"], "medium");
    assert_eq!(v["result"], "block");
    assert_eq!(v["policy"], "risky-sign-in");

    // Ann signs in from Bracknell, then within minutes from Japan: unlikelyTravel, high.
    let ann_home = id_token_for(&w, "wiki", "ann@example.com").await;
    assert_eq!(
        bearer_from(&w, &ann_home, "81.2.69.142").await.status(),
        200
    );
    let ann_away = id_token_for(&w, "wiki", "ann@example.com").await;
    let resp = bearer_from(&w, &ann_away, "2001:200::1").await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("risky-sign-in"),
        "{body}"
    );
    let found: Value = serde_json::from_str(
        &w.edge
            .admin_ok(&["risk", "detections", "--user", "ann@example.com", "--json"])
            .await,
    )
    .unwrap();
    let travel = &found[0];
    assert_eq!(travel["riskEventType"], "unlikelyTravel", "{found}");
    assert_eq!(travel["riskLevel"], "high");
    assert!(
        travel["additionalInfo"].as_str().unwrap().contains("GB"),
        "{travel}"
    );
    // Her user risk is now high: even her earlier token from home is refused, once the edges
    // have the new risk.
    let deadline = tokio::time::Instant::now() + common::READY_TIMEOUT;
    loop {
        let resp = bearer_from(&w, &ann_home, "81.2.69.142").await;
        if resp.status() == 403 {
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("risky-user"));
            break;
        }
        assert_eq!(resp.status(), 200);
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let users: Value =
        serde_json::from_str(&w.edge.admin_ok(&["risk", "users", "--json"]).await).unwrap();
    let level = |email: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["userPrincipalName"] == email)
            .map(|u| (u["riskLevel"].clone(), u["riskState"].clone()))
            .unwrap()
    };
    assert_eq!(level("ann@example.com"), (json!("high"), json!("atRisk")));
    assert_eq!(level("bob@example.com"), (json!("medium"), json!("atRisk")));

    // An administrator confirms Bob compromised: user risk high, his sessions end.
    w.edge
        .admin_ok(&["risk", "confirm-compromised", "bob@example.com"])
        .await;
    let v = what_if_until(&w, "81.2.69.142", |v| v["user_risk"] == "high").await;
    assert_eq!(
        (&v["result"], &v["policy"]),
        (&json!("block"), &json!("risky-user"))
    );
    let resp = bearer_from(&w, &bob, "81.2.69.142").await;
    assert_eq!(
        resp.status(),
        401,
        "his token was issued before the confirmation"
    );
    // Dismissed: nothing stands against him any more.
    w.edge
        .admin_ok(&["risk", "dismiss", "bob@example.com"])
        .await;
    let v = what_if_until(&w, "81.2.69.142", |v| v["user_risk"] == "none").await;
    assert_eq!(v["result"], "allow");
    // A user nobody knows is refused, naming them, and changes nothing.
    let out = w
        .edge
        .admin(&["risk", "confirm-compromised", "nobody@example.com"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nobody@example.com"),
        "{err}"
    );
    let audit = w.edge.admin_ok(&["logs", "audit", "--json"]).await;
    assert!(
        audit.contains("risk.confirm_compromised") && audit.contains("risk.dismiss"),
        "{audit}"
    );

    // The list is reloaded when its file changes; one that cannot be used keeps the last.
    std::fs::write(&list, "185.220.101.0/24\n198.51.100.0/24\n").unwrap();
    what_if_until(&w, "198.51.100.7", |v| v["sign_in_risk"] == "medium").await;
    std::fs::write(&list, "not an address\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let v = what_if_until(&w, "198.51.100.7", |_| true).await;
    assert_eq!(
        v["sign_in_risk"], "medium",
        "a broken list keeps the last one"
    );
}

/// Opens `url` of the app `intranet` (behind the built-in provider) in a new cookie-keeping
/// client and signs in at the provider's form as `email`: where the form was, and the answer.
async fn provider_sign_in(
    edge: &Edge,
    url: &str,
    email: &str,
) -> (Option<String>, reqwest::Response) {
    let tls = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    let browser = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .cookie_provider(Arc::new(reqwest::cookie::Jar::default()))
        .resolve("intranet.localhost", edge.public)
        .resolve("login.localhost", edge.public)
        .build()
        .unwrap();
    let form = browser.get(url).send().await.unwrap();
    let at = form.url().host_str().map(str::to_owned);
    let page = form.text().await.unwrap();
    let field = |name: &str| common::browser::form_field(&page, name);
    let resp = browser
        .post(format!(
            "https://login.localhost:{}/signin",
            edge.public.port()
        ))
        .form(&[
            ("csrf", field("csrf").as_str()),
            ("req", field("req").as_str()),
            ("email", email),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    (at, resp)
}

/// Conditional access as a user meets it in Chromium, through the built-in provider: a sign-in
/// from a blocked country ends on a page naming the policy and the request; an app that requires
/// a passkey sends a password-and-code session back for a fresh sign-in, refuses the same again
/// naming what is missing, and admits a passkey sign-in.
#[tokio::test]
async fn location_and_passkey_policies_in_headless_chromium() {
    // Loopback placed in Reykjavík: every browser sign-in comes from Iceland.
    let geo = tempfile::tempdir().unwrap();
    let loopback = common::geoip::loopback_in_reykjavik(geo.path());
    let edge = Edge::start(&["--geoip-db", loopback.to_str().unwrap()]).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.user(
        "eve@example.com",
        PASSWORD,
        &["--email-verified", "--require-mfa"],
    )
    .await;
    let port = edge.public.port();
    for name in ["reports", "payroll"] {
        let host = format!("{name}.localhost");
        edge.publish(name, &host, &app.url(), "g", &["--preauth", "oidc"])
            .await;
    }
    edge.admin_ok(&["location", "create", "iceland", "--country", "IS"])
        .await;
    edge.policy(
        "reports outside Iceland",
        "state: on\nusers: { include: [all] }\napps: { include: [app:reports] }\nconditions: { locations: { include: [location:iceland] } }\ngrant: { block: true }\n",
    )
    .await;
    edge.policy(
        "payroll needs a passkey",
        "state: on\nusers: { include: [all] }\napps: { include: [app:payroll] }\ngrant: { require: [passkey] }\n",
    )
    .await;
    // An update keeps the client the edge registered with its provider (sign-ins below work).
    edge.admin_ok(&["app", "update", "reports", "--backend-timeout", "60s"])
        .await;
    edge.admin_ok(&["app", "update", "payroll", "--maintenance", "off"])
        .await;
    let _connector = edge.connector("g").await;

    let run = chromium(
        "browser-policy.mjs",
        json!({
            "blocked": format!("https://reports.localhost:{port}/q4"),
            "passkeyApp": format!("https://payroll.localhost:{port}/slips"),
            "idp": format!("https://login.localhost:{port}"),
            "email": "eve@example.com",
            "password": PASSWORD,
        }),
    )
    .await;
    let request_id = |text: &str| {
        let at = text
            .find("Request ID: ")
            .unwrap_or_else(|| panic!("{text}"))
            + 12;
        text[at..].split_whitespace().next().unwrap().to_owned()
    };
    let blocked = &run["blocked"];
    assert_eq!(blocked["status"], 403, "{run}");
    let text = blocked["text"].as_str().unwrap();
    assert!(text.contains("reports outside Iceland"), "{text}");
    let blocked_id = request_id(text);
    let unmet = &run["passwordAndCode"];
    assert_eq!(unmet["status"], 403, "{run}");
    let text = unmet["text"].as_str().unwrap();
    assert!(
        text.contains("payroll needs a passkey") && text.contains("a passkey"),
        "{text}"
    );
    let admitted = &run["passkey"];
    assert_eq!(admitted["status"], 200, "{run}");
    assert_eq!(
        admitted["url"],
        format!("https://payroll.localhost:{port}/slips")
    );
    let body: Value = serde_json::from_str(admitted["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen(&body, "x-postern-email"), ["eve@example.com"]);

    // The sign-in log keeps each decision: the blocked one under its request ID.
    let rows: Value =
        serde_json::from_str(&edge.admin_ok(&["logs", "signins", "--json"]).await).unwrap();
    let rows = rows["signins"].as_array().unwrap();
    let blocked_row = rows
        .iter()
        .find(|r| r["correlationId"] == blocked_id.as_str())
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(blocked_row["conditionalAccessStatus"], "failure");
    assert_eq!(blocked_row["location"]["countryOrRegion"], "IS");
    assert_eq!(
        blocked_row["appliedConditionalAccessPolicies"],
        json!([{"displayName": "reports outside Iceland", "result": "failure"}])
    );
    let passkey_row = rows
        .iter()
        .find(|r| r["appDisplayName"] == "payroll" && r["conditionalAccessStatus"] == "success")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(
        passkey_row["authenticationMethodsUsed"]
            .as_array()
            .unwrap()
            .contains(&json!("hwk")),
        "{passkey_row}"
    );
}

/// Once a user's habits are learnt (10 sign-ins), a sign-in from a network (autonomous system)
/// they never used is unfamiliar, even from a familiar country and browser.
#[tokio::test]
async fn a_sign_in_from_a_new_network_is_unfamiliar() {
    let dir = tempfile::tempdir().unwrap();
    let asn = common::geoip::asn_db(
        dir.path(),
        &[("198.51.100.0/24", 64500), ("203.0.113.0/24", 64501)],
    );
    let w = World::with_edge(
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--asn-db",
            asn.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    for i in 0..10 {
        let token = id_token_for(&w, "wiki", "bob@example.com").await;
        let resp = bearer_from(&w, &token, &format!("198.51.100.{}", i + 1)).await;
        assert_eq!(resp.status(), 200);
    }
    async fn detections(w: &World) -> Value {
        let out = w
            .edge
            .admin_ok(&["risk", "detections", "--user", "bob@example.com", "--json"])
            .await;
        serde_json::from_str(&out).unwrap()
    }
    assert_eq!(
        detections(&w).await,
        json!([]),
        "the same network: familiar"
    );
    let token = id_token_for(&w, "wiki", "bob@example.com").await;
    assert_eq!(bearer_from(&w, &token, "203.0.113.9").await.status(), 200);
    let found = detections(&w).await;
    assert_eq!(found[0]["riskEventType"], "unfamiliarFeatures", "{found}");
    assert_eq!(found[0]["riskLevel"], "low");
    assert!(
        found[0]["additionalInfo"]
            .as_str()
            .unwrap()
            .contains("network AS64501"),
        "{found}"
    );
    // A database that names no network is refused at start, naming the flag.
    let city = common::geoip::loopback_in_reykjavik(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["edge", "--data", dir.path().to_str().unwrap()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--connector-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--asn-db",
            city.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("--asn-db")
            && err.contains("autonomous_system_number"),
        "{err}"
    );
}

/// A policy's session controls shape the session cookie: "no persistent session" makes an app's
/// persistent cookie end with the browser session. What-if takes the time for time windows.
#[tokio::test]
async fn session_controls_and_time_windows() {
    let w = World::new(&["--persistent-cookie"]).await;
    // The callback's answer itself: where the cookie is set.
    let session_cookie = || async {
        let tls = postern_pki::client_config(&w.edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
        let browser = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .cookie_provider(Arc::new(reqwest::cookie::Jar::default()))
            .resolve("wiki.localhost", w.edge.public)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let from_callback = attempt
                    .previous()
                    .last()
                    .is_some_and(|u| u.path() == "/.postern/callback");
                if from_callback {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .unwrap();
        let resp = w
            .sign_in(&browser, "wiki", "/", "bob@example.com", true)
            .await;
        resp.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with("__Host-postern-session="))
            .unwrap_or_else(|| panic!("no session cookie: {:?}", resp.headers()))
    };
    assert!(session_cookie().await.contains("Max-Age="), "persistent");

    w.edge
        .policy(
            "shared computers",
            "state: on\nusers: { include: [all] }\napps: { include: ['app:wiki'] }\ngrant: { require: [mfa] }\nsession: { no_persistent_session: true }\n",
        )
        .await;
    let cookie = session_cookie().await;
    assert!(!cookie.contains("Max-Age="), "{cookie}");
    w.edge
        .policy(
            "weekend",
            "state: report-only\nusers: { include: [all] }\napps: { include: [all] }\nconditions: { times: [{ days: [sat, sun], from: \"00:00\", to: \"24:00\" }] }\ngrant: { block: true }\n",
        )
        .await;
    let at = |time: &'static str| {
        let w = &w;
        async move {
            let v = bob_what_if(w, "192.0.2.1", &["--mfa", "--at", time]).await;
            v["policies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        at("2026-12-05T12:00:00Z").await,
        ["shared computers", "weekend"],
        "a Saturday"
    );
    assert_eq!(at("1796644800").await, ["shared computers"], "a Monday");
    let out = w
        .edge
        .admin(&[
            "policy",
            "what-if",
            "--user",
            "bob@example.com",
            "--app",
            "wiki",
            "--ip",
            "192.0.2.1",
            "--at",
            "someday",
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--at"), "{err}");
}

/// What the built-in provider finds at an edge app's sign-in (here a leaked password) is that
/// sign-in's risk at the edge's callback at once: a sign-in-risk policy blocks it.
#[tokio::test]
async fn the_providers_findings_are_the_sign_ins_risk_at_the_edge() {
    let leaked = tempfile::tempdir().unwrap();
    use sha1::Digest;
    let hex: String = sha1::Sha1::digest(PASSWORD.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    std::fs::write(leaked.path().join(&hex[..5]), format!("{}:3\n", &hex[5..])).unwrap();
    let edge = Edge::start(&["--leaked-passwords", leaked.path().to_str().unwrap()]).await;
    let app = backends::app().await;
    edge.group("g").await;
    edge.user("lee@example.com", PASSWORD, &[]).await;
    let external = format!("https://intranet.localhost:{}", edge.public.port());
    edge.publish(
        "intranet",
        "intranet.localhost",
        &app.url(),
        "g",
        &["--preauth", "oidc"],
    )
    .await;
    edge.policy(
        "risky sign-ins",
        "state: on\nusers: { include: [all] }\napps: { include: [all] }\nconditions: { sign_in_risk: [high] }\ngrant: { block: true }\n",
    )
    .await;
    let _connector = edge.connector("g").await;
    let (_, resp) = provider_sign_in(&edge, &format!("{external}/"), "lee@example.com").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.url().host_str(),
        Some("intranet.localhost"),
        "refused at the edge"
    );
    let body = resp.text().await.unwrap();
    assert!(body.contains("risky sign-ins"), "{body}");
}
