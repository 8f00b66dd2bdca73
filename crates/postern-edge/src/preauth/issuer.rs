//! Talking to identity providers: discovery (cached per issuer), the authorization request, and
//! redeeming the code at the token endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use postern_auth::{IssuerUrl, Provider, StateCookie};
use serde::Deserialize;
use url::Url;

use super::SignIn;
use crate::rescue::Refusal;

/// How long the edge waits for an issuer's answer.
const ISSUER_TIMEOUT: Duration = Duration::from_secs(10);
/// The scopes asked for: the ID token's identity claims.
const SCOPES: &str = "openid email profile";
/// The `acr_values` of a step-up: a second factor. The built-in provider understands it; other
/// issuers read `max_age=0` and `prompt=login` as "authenticate again".
pub const MFA_ACR: &str = "mfa";

/// Issuers in use, discovered once and kept (their JWKS refresh on an unknown key).
pub struct Issuers {
    http: reqwest::Client,
    discovered: tokio::sync::Mutex<HashMap<String, Arc<Provider>>>,
}

impl Issuers {
    pub fn new(http: reqwest::Client) -> Issuers {
        Issuers {
            http,
            discovered: Default::default(),
        }
    }

    /// The provider for `issuer`, discovering it on first use. A failed discovery is not kept,
    /// so the next request tries again.
    pub async fn provider(&self, issuer: &IssuerUrl, app: &str) -> Result<Arc<Provider>, Refusal> {
        let mut discovered = self.discovered.lock().await;
        if let Some(p) = discovered.get(issuer.as_str()) {
            return Ok(p.clone());
        }
        let provider = Provider::discover(self.http.clone(), issuer.clone())
            .await
            .map_err(|e| Refusal::IssuerUnavailable {
                app: app.to_owned(),
                issuer: issuer.as_str().to_owned(),
                reason: e.to_string(),
            })?;
        let provider = Arc::new(provider);
        discovered.insert(issuer.as_str().to_owned(), provider.clone());
        tracing::info!(issuer = %issuer.as_str(), "identity provider discovered");
        Ok(provider)
    }

    /// Redeems an authorization code; returns the ID token.
    pub async fn redeem(
        &self,
        provider: &Provider,
        sign_in: &SignIn,
        code: &str,
        pending: &StateCookie,
    ) -> Result<String, Refusal> {
        let app = sign_in.app_name.clone();
        let unavailable = |reason: String| Refusal::IssuerUnavailable {
            app: app.clone(),
            issuer: provider.issuer().as_str().to_owned(),
            reason,
        };
        let redirect_uri = sign_in.callback_url();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", pending.code_verifier.as_str()),
        ];
        let mut req = self
            .http
            .post(provider.metadata().token_endpoint.clone())
            .timeout(ISSUER_TIMEOUT);
        match &sign_in.client_secret {
            // RFC 6749, section 2.3.1: both parts form-encoded before Basic.
            Some(secret) => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                req = req.basic_auth(enc(&sign_in.client_id), Some(enc(secret.expose())));
            }
            None => form.push(("client_id", sign_in.client_id.as_str())),
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(format!("the token endpoint did not answer ({e})")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| unavailable(format!("the token endpoint's answer broke off ({e})")))?;
        if !status.is_success() {
            let reason = match serde_json::from_slice::<TokenError>(&body) {
                Ok(e) => match e.error_description {
                    Some(d) => format!("{} ({d})", e.error),
                    None => e.error,
                },
                Err(_) => format!("the token endpoint answered {status}"),
            };
            return Err(if status.is_client_error() {
                Refusal::IssuerRefused { app, reason }
            } else {
                unavailable(reason)
            });
        }
        let tokens: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            unavailable(format!(
                "the token endpoint's answer is not a token response ({e})"
            ))
        })?;
        tokens.id_token.ok_or_else(|| {
            unavailable(
                "the token endpoint sent no ID token (is `openid` allowed for this client?)".into(),
            )
        })
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    error_description: Option<String>,
}

/// Where to send the browser to sign in.
pub fn authorize_url(provider: &Provider, sign_in: &SignIn, pending: &StateCookie) -> Url {
    let mut url = provider.metadata().authorization_endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &sign_in.client_id)
            .append_pair("redirect_uri", sign_in.callback_url().as_str())
            .append_pair("scope", SCOPES)
            .append_pair("state", pending.state.as_str())
            .append_pair("nonce", pending.nonce.as_str())
            .append_pair("code_challenge", pending.code_verifier.challenge().as_str())
            .append_pair("code_challenge_method", postern_auth::CodeChallenge::METHOD);
        if pending.step_up {
            q.append_pair("acr_values", MFA_ACR)
                .append_pair("prompt", "login")
                .append_pair("max_age", "0");
        }
    }
    url
}
