//! Discovery and the JWKS cache against a real HTTP server on 127.0.0.1:0 that counts fetches.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use common::*;
use postern_auth::discovery::DiscoveryError;
use postern_auth::{
    Expectations, FetchError, IssuerUrl, Provider, ProviderSettings, Refresh, TokenError, UnixTime,
    VerifyError,
};

/// What the fake issuer serves, changeable while it runs.
struct Issuer {
    /// The `issuer` its discovery document names.
    advertised: Mutex<String>,
    /// The JWKS, or `None` to answer 500.
    jwks: Mutex<Option<String>>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

async fn discovery(State(s): State<Arc<Issuer>>) -> String {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let iss = s.advertised.lock().unwrap().clone();
    serde_json::json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "end_session_endpoint": format!("{iss}/logout"),
        "response_types_supported": ["code"],
    })
    .to_string()
}

async fn jwks(State(s): State<Arc<Issuer>>) -> Result<String, StatusCode> {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    s.jwks
        .lock()
        .unwrap()
        .clone()
        .ok_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Starts the fake issuer; returns its state and its issuer URL. The listener is bound before
/// this returns, so connections queue until the server task accepts them: no readiness wait.
async fn serve(jwks_json: String) -> (Arc<Issuer>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Issuer {
        advertised: Mutex::new(url.clone()),
        jwks: Mutex::new(Some(jwks_json)),
        discovery_hits: AtomicUsize::new(0),
        jwks_hits: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, url)
}

/// reqwest is built without a default TLS provider; the edge passes its own client, and so do
/// the tests (plain HTTP to loopback needs no roots).
fn http_client() -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap()
}

fn token_for(key: &TestKey, issuer: &str) -> String {
    mint(key, &claims_with(serde_json::json!({"iss": issuer})))
}

async fn verify(provider: &Provider, token: &str) -> Result<(), VerifyError> {
    let issuer = provider.issuer().as_str();
    let expect = Expectations::id_token(issuer, CLIENT, NONCE);
    provider
        .verify(token, &expect, UnixTime::from_secs(NOW))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn discovers_the_endpoints_and_verifies_with_the_fetched_keys() {
    let key = es256("k1");
    let (server, url) = serve(jwks_json(&[&key])).await;
    let provider = Provider::discover(http_client(), IssuerUrl::parse(&url).unwrap())
        .await
        .unwrap();
    let meta = provider.metadata();
    assert_eq!(
        meta.authorization_endpoint.as_str(),
        format!("{url}/authorize")
    );
    assert_eq!(meta.token_endpoint.as_str(), format!("{url}/token"));
    assert_eq!(meta.jwks_uri.as_str(), format!("{url}/jwks"));
    assert_eq!(meta.userinfo_endpoint, None);
    assert_eq!(
        meta.end_session_endpoint.as_ref().map(|u| u.as_str()),
        Some(format!("{url}/logout").as_str())
    );
    verify(&provider, &token_for(&key, &url)).await.unwrap();
    assert_eq!(server.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(server.jwks_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_is_refused() {
    let (server, url) = serve(jwks_json(&[&es256("k1")])).await;
    for advertised in [
        format!("{url}/"),
        format!("{url}/other"),
        "https://evil.example".into(),
    ] {
        *server.advertised.lock().unwrap() = advertised.clone();
        let err = Provider::discover(http_client(), IssuerUrl::parse(&url).unwrap())
            .await
            .unwrap_err();
        match &err {
            FetchError::Discovery {
                source: DiscoveryError::IssuerMismatch { configured, found },
                ..
            } => {
                assert_eq!(configured, &url);
                assert_eq!(found, &advertised);
            }
            other => panic!("{advertised}: expected an issuer mismatch, got {other:?}"),
        }
        assert!(!err.is_retryable());
    }
    assert_eq!(server.jwks_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unknown_kids_refresh_the_jwks_at_most_once_per_interval() {
    let (k1, k2) = (es256("k1"), es256("k2"));
    let (server, url) = serve(jwks_json(&[&k1])).await;
    let provider = Provider::discover(http_client(), IssuerUrl::parse(&url).unwrap())
        .await
        .unwrap();
    assert_eq!(server.jwks_hits.load(Ordering::SeqCst), 1);

    // The issuer rotates: a token under the new key triggers one refresh and verifies.
    *server.jwks.lock().unwrap() = Some(jwks_json(&[&k1, &k2]));
    verify(&provider, &token_for(&k2, &url)).await.unwrap();
    assert_eq!(server.jwks_hits.load(Ordering::SeqCst), 2);

    // An attacker sends random kids: each is refused, and none causes another fetch within the
    // 30-second interval.
    for i in 0..50 {
        let kid = format!("random-{i}");
        let token = mint_as(
            &k1,
            k1.alg,
            Some(&kid),
            &claims_with(serde_json::json!({"iss": url})),
        );
        match verify(&provider, &token).await {
            Err(VerifyError::Token(TokenError::UnknownKey { kid: got })) => assert_eq!(got, kid),
            other => panic!("{kid}: {other:?}"),
        }
    }
    assert_eq!(server.jwks_hits.load(Ordering::SeqCst), 2);
    assert!(matches!(
        provider.refresh_jwks().await.unwrap(),
        Refresh::TooSoon { .. }
    ));
    assert_eq!(server.jwks_hits.load(Ordering::SeqCst), 2);
    // Known keys keep verifying throughout.
    verify(&provider, &token_for(&k1, &url)).await.unwrap();
    assert_eq!(server.discovery_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_refresh_is_the_issuers_problem_not_the_tokens() {
    let (k1, k2) = (es256("k1"), es256("k2"));
    let (server, url) = serve(jwks_json(&[&k1])).await;
    let provider = Provider::discover(http_client(), IssuerUrl::parse(&url).unwrap())
        .await
        .unwrap();
    *server.jwks.lock().unwrap() = None;
    match verify(&provider, &token_for(&k2, &url)).await {
        Err(VerifyError::JwksRefresh { kid, source }) => {
            assert_eq!(kid, "k2");
            assert!(matches!(source, FetchError::Status { status: 500, .. }));
            assert!(source.is_retryable());
        }
        other => panic!("expected a refresh failure, got {other:?}"),
    }
    // The old keys stay in use after a failed refresh.
    verify(&provider, &token_for(&k1, &url)).await.unwrap();
}

#[tokio::test]
async fn oversized_documents_are_refused() {
    let (_server, url) = serve(jwks_json(&[&es256("k1")])).await;
    let settings = ProviderSettings {
        max_document_bytes: 64,
        ..ProviderSettings::default()
    };
    let err = Provider::discover_with(http_client(), IssuerUrl::parse(&url).unwrap(), settings)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::TooLarge {
                limit_bytes: 64,
                ..
            }
        ),
        "{err:?}"
    );
}
