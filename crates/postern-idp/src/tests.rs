//! The provider's HTTP shell without sockets (axum `oneshot`), for what the end-to-end tests
//! cannot reach without waiting: expired device codes.

use std::net::{IpAddr, Ipv4Addr};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use postern_store::{IdTokenAlg, NewClient, Store};
use tower::ServiceExt;

use crate::{now, router, Caller, Idp};

async fn call(idp: &std::sync::Arc<Idp>, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let (status, body, _) = call_from(idp, IpAddr::V4(Ipv4Addr::LOCALHOST), req).await;
    (status, body)
}

/// Calls the router as a client at `ip`: status, JSON body, headers.
async fn call_from(
    idp: &std::sync::Arc<Idp>,
    ip: IpAddr,
    mut req: Request<Body>,
) -> (StatusCode, serde_json::Value, http::HeaderMap) {
    req.extensions_mut().insert(Caller::at(ip));
    let resp = router(idp.clone()).oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or_default(),
        headers,
    )
}

#[tokio::test]
async fn device_authorizations_are_limited_per_address_and_by_scope_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
    let (client, _) = store
        .create_client(&NewClient {
            name: "tv".into(),
            public: true,
            redirect_uris: vec!["http://127.0.0.1/cb".into()],
            post_logout_redirect_uris: vec![],
            id_token_alg: IdTokenAlg::Es256,
        })
        .await
        .unwrap();
    let idp = Idp::new(store.clone(), "https://login.test".into(), None)
        .await
        .unwrap();
    let start = |scope: &str| {
        Request::post("/device_authorization")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "client_id={}&scope={scope}",
                client.client_id
            )))
            .unwrap()
    };
    let attacker = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let (status, answer, _) = call_from(&idp, attacker, start(&"x".repeat(4096))).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let mut answers = Vec::new();
    for _ in 0..100 {
        answers.push(call_from(&idp, attacker, start("openid")).await);
    }
    let started = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    assert_eq!(started, crate::DEVICE_STARTS_PER_ADDRESS.burst as usize);
    let (status, answer, headers) = answers.last().unwrap();
    assert_eq!(
        (*status, answer["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("slow_down"))
    );
    assert!(headers.contains_key(http::header::RETRY_AFTER));
    // Another address is not held up by it. An IPv6 client counts by its /64, where it can
    // pick any address.
    let v6 = |a: &str| a.parse::<IpAddr>().unwrap();
    for _ in 0..crate::DEVICE_STARTS_PER_ADDRESS.burst {
        let (status, _, _) = call_from(&idp, v6("2001:db8::1"), start("openid")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, _) = call_from(&idp, v6("2001:db8::2"), start("openid")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "same /64");
    let (status, _, _) = call_from(&idp, v6("2001:db8:0:1::1"), start("openid")).await;
    assert_eq!(status, StatusCode::OK, "another /64");
}

#[tokio::test]
async fn an_expired_device_code_answers_expired_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
    let (client, _) = store
        .create_client(&NewClient {
            name: "tv".into(),
            public: true,
            redirect_uris: vec!["http://127.0.0.1/cb".into()],
            post_logout_redirect_uris: vec![],
            id_token_alg: IdTokenAlg::Es256,
        })
        .await
        .unwrap();
    let idp = Idp::new(store.clone(), "https://login.test".into(), None)
        .await
        .unwrap();
    let device_code = store
        .create_device(
            &postern_store::NewDevice {
                client_id: client.client_id.clone(),
                scope: "openid".into(),
                user_code: "BCDF-GHJK".into(),
                requester: "127.0.0.1".into(),
                expires_at: now() - 1,
                interval_secs: 5,
            },
            now(),
        )
        .await
        .unwrap();
    let body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code={device_code}&client_id={}",
        client.client_id
    );
    let req = Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let (status, answer) = call(&idp, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "expired_token");

    // A public client may not present a secret; an unknown one is invalid_client with 401.
    let req = Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "grant_type=refresh_token&refresh_token=x&client_id={}&client_secret=s",
            client.client_id
        )))
        .unwrap();
    let (status, answer) = call(&idp, req).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    // Discovery names the issuer exactly.
    let (status, doc) = call(
        &idp,
        Request::get("/.well-known/openid-configuration")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["issuer"], "https://login.test");
    assert_eq!(doc["token_endpoint"], "https://login.test/token");
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
    let user = store
        .create_user(&postern_store::NewUser {
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            password_hash: "x".into(),
            admin: false,
            require_mfa: false,
            groups: vec![],
            email_verified: false,
        })
        .await
        .unwrap();
    let (client, secret) = store
        .create_client(&NewClient {
            name: "wiki".into(),
            public: false,
            redirect_uris: vec!["https://w/cb".into()],
            post_logout_redirect_uris: vec![],
            id_token_alg: IdTokenAlg::Es256,
        })
        .await
        .unwrap();
    let idp = Idp::new(store.clone(), "https://login.test".into(), None)
        .await
        .unwrap();
    let code = store
        .create_code(&postern_store::NewCode {
            client_id: client.client_id.clone(),
            redirect_uri: "https://w/cb".into(),
            code_challenge: None,
            nonce: None,
            scope: "openid".into(),
            auth: postern_store::AuthContext {
                user_id: user.id,
                auth_time: now(),
                amr: vec!["pwd".into()],
                acr: "pwd".into(),
            },
            expires_at: now() - 1,
        })
        .await
        .unwrap();
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fw%2Fcb&client_id={}&client_secret={}",
        client.client_id,
        secret.unwrap().0
    );
    let req = Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let (status, answer) = call(&idp, req).await;
    assert_eq!(
        (
            status,
            answer["error"].as_str(),
            answer["error_description"].as_str()
        ),
        (
            StatusCode::BAD_REQUEST,
            Some("invalid_grant"),
            Some("the code has expired")
        )
    );
}

#[tokio::test]
async fn oversized_logout_parameters_are_refused_before_anything_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
    let idp = Idp::new(store, "https://login.test".into(), None)
        .await
        .unwrap();
    let get = |query: String| Request::get(format!("/logout?{query}")).body(Body::empty());
    let cases = [
        (
            format!("state={}", "s".repeat(crate::limits::MAX_STATE_BYTES + 1)),
            "state",
        ),
        (
            format!(
                "id_token_hint={}",
                "t".repeat(crate::limits::MAX_ID_TOKEN_HINT_BYTES + 1)
            ),
            "id_token_hint",
        ),
        (
            format!(
                "post_logout_redirect_uri=https%3A%2F%2Fa%2F{}",
                "u".repeat(3000)
            ),
            "post_logout_redirect_uri",
        ),
    ];
    for (query, field) in cases {
        let req = get(query).unwrap();
        let mut req = req;
        req.extensions_mut()
            .insert(Caller::at(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let resp = router(idp.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{field}");
        assert!(resp.headers().get(http::header::LOCATION).is_none());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains(&format!("request&#39;s {field} is")) && body.contains("invalid_request"),
            "{field}: {body}"
        );
    }
    // Within the limits, the confirmation page.
    let mut req = get("state=ok".into()).unwrap();
    req.extensions_mut()
        .insert(Caller::at(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let resp = router(idp.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn bodies_refused_before_their_handler_name_the_cause_and_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
    let idp = Idp::new(store, "https://login.test".into(), None)
        .await
        .unwrap();
    let send = |method: &str, path: &str, content_type: &str, body: String| {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        let mut caller = Caller::at(IpAddr::V4(Ipv4Addr::LOCALHOST));
        caller.request_id = "0123456789abcdef0123456789abcdef".into();
        req.extensions_mut().insert(caller);
        let idp = idp.clone();
        async move {
            let resp = router(idp).oneshot(req).await.unwrap();
            let (status, headers) = (resp.status(), resp.headers().clone());
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let form = "application/x-www-form-urlencoded";
    let big = format!("email={}", "a".repeat(40_000));
    for path in [
        "/signin",
        "/signin/mfa",
        "/device",
        "/device/decide",
        "/logout",
    ] {
        let (status, headers, body) = send("POST", path, form, big.clone()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(headers["x-request-id"], "0123456789abcdef0123456789abcdef");
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(body.contains("larger than 16 KiB"), "{path}: {body}");
        assert!(
            body.contains("0123456789abcdef0123456789abcdef"),
            "{path}: {body}"
        );
    }
    // The endpoints programs call answer JSON, with the cause.
    for path in ["/token", "/device_authorization"] {
        let (status, headers, body) = send("POST", path, form, big.clone()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(headers["x-request-id"], "0123456789abcdef0123456789abcdef");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"], "invalid_request");
        assert!(
            error["error_description"]
                .as_str()
                .unwrap()
                .contains("larger than 16 KiB"),
            "{body}"
        );
        // Not a form: 400, as RFC 6749 answers a malformed request, saying so.
        let (status, _, body) = send("POST", path, "text/plain", "x".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(body.contains("not of the type"), "{body}");
    }
    let (status, _, body) = send("POST", "/signin", "text/plain", "x".into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body.contains("not of the type"), "{body}");
    // The passkey endpoints read JSON, and answer JSON.
    let (status, _, body) = send("POST", "/signin/passkey/start", "text/plain", "x".into()).await;
    assert!(status.is_client_error(), "{status}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).is_ok(),
        "{body}"
    );
    // The provider's own answers are left alone: userinfo's 401 keeps its Bearer challenge.
    let (status, headers, _) = send("GET", "/userinfo", form, String::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
        "{headers:?}"
    );
    let (status, headers, body) = send("PUT", "/signin", form, String::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers.contains_key("allow"));
    assert!(body.contains("does not answer that method"), "{body}");
}

/// A risky sign-in's risk stays with its session (and the session its second factor makes), so
/// a new request on it is decided with it; the sessions remembered are bounded.
#[tokio::test]
async fn a_sign_ins_risk_follows_its_session() {
    use crate::authorize::{Purpose, MAX_RISKY_SESSIONS};
    use postern_policy::RiskLevel;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
    let idp = Idp::new(store, "https://login.test".into(), None)
        .await
        .unwrap();
    let caller = Caller::at(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let pending = || crate::Pending {
        client_id: "c".into(),
        client_name: "C".into(),
        purpose: Purpose::Account,
        require_mfa: false,
        fresh_login: false,
        signed_in: None,
        risk: RiskLevel::None,
        silent: false,
        created_at: now(),
    };
    let req = idp.add_pending(pending(), &caller);
    idp.mark_signed_in(&req, "password-session");
    idp.mark_risk(&req, RiskLevel::High);
    assert_eq!(idp.session_risk("password-session"), RiskLevel::High);
    // The second factor's new session keeps it.
    idp.mark_signed_in(&req, "mfa-session");
    assert_eq!(idp.session_risk("mfa-session"), RiskLevel::High);
    assert_eq!(idp.session_risk("another"), RiskLevel::None);
    // A sign-in with nothing found adds nothing.
    let quiet = idp.add_pending(pending(), &caller);
    idp.mark_signed_in(&quiet, "quiet-session");
    idp.mark_risk(&quiet, RiskLevel::None);
    assert_eq!(idp.session_risk("quiet-session"), RiskLevel::None);
    // Bounded: past the cap the oldest goes.
    for i in 0..MAX_RISKY_SESSIONS {
        idp.remember_session_risk(format!("s{i}"), RiskLevel::Medium);
    }
    assert!(crate::lock(&idp.session_risk).len() <= MAX_RISKY_SESSIONS);
}
