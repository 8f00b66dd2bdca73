//! The token endpoint (RFC 6749 section 3.2: code, refresh token, device code) and userinfo.
//!
//! Every refusal carries the RFC's error code: `invalid_client` (401) for a bad client
//! authentication, `invalid_grant` for a bad, used or expired code, verifier or refresh token,
//! and RFC 8628's codes for device polls. A code redeemed twice, or a rotated refresh token
//! presented again, revokes everything issued from it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use postern_store::{Client, DeviceStatus, Grant, RedeemProblem};

use crate::authorize::TokenRefusal;
use crate::tokens::{self, AccessClaims, IdClaims, TOKEN_LIFETIME};
use crate::{now, pkce, Idp};

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// An OAuth error answer.
pub struct OAuthError {
    pub(crate) status: StatusCode,
    error: &'static str,
    description: String,
    /// Set when the client tried HTTP Basic authentication (RFC 6749 section 5.2).
    basic_challenge: bool,
}

/// The error for a body the form extractor refused: 413 when too large, otherwise 400 (as RFC
/// 6749 answers every malformed request), naming the cause.
pub(crate) fn form_refusal(e: &axum::extract::rejection::FormRejection) -> OAuthError {
    let mut refused = oauth_error("invalid_request", crate::body_refusal(e.status()));
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        refused.status = StatusCode::PAYLOAD_TOO_LARGE;
    }
    refused
}

/// 503 `temporarily_unavailable`: the request may be made again as it is.
fn unavailable(description: impl Into<String>) -> OAuthError {
    let mut e = oauth_error("temporarily_unavailable", description);
    e.status = StatusCode::SERVICE_UNAVAILABLE;
    e
}

pub fn oauth_error(error: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError {
        status: if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        },
        error,
        description: description.into(),
        basic_challenge: false,
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(serde_json::json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            let v = if self.basic_challenge {
                "Basic realm=\"postern\""
            } else {
                "Basic realm=\"postern\", error=\"invalid_client\""
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        resp
    }
}

fn internal(e: impl std::fmt::Display) -> OAuthError {
    tracing::error!(error = %e, "identity provider error at the token endpoint");
    OAuthError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        error: "server_error",
        description: "the provider failed; see the edge's log".to_owned(),
        basic_challenge: false,
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Authenticates the client by `client_secret_basic`, `client_secret_post`, or (public clients
/// only) `none`.
pub(crate) async fn authenticate_client(
    idp: &Idp,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Client, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|s| {
                    s.split_once(':')
                        .map(|(i, p)| (percent_decode(i), percent_decode(p)))
                })
        });
    let refuse = |basic: bool, why: &str| OAuthError {
        basic_challenge: basic,
        ..oauth_error("invalid_client", why)
    };
    let (client_id, secret, used_basic) = match basic {
        Some(Some((id, secret))) => (id, Some(secret), true),
        Some(None) => return Err(refuse(true, "the Authorization header is malformed")),
        None => match form.get("client_id") {
            Some(id) => (id.clone(), form.get("client_secret").cloned(), false),
            None => return Err(refuse(false, "client authentication is required")),
        },
    };
    let client = match idp.store.client(&client_id).await {
        Ok(c) => c,
        Err(postern_store::StoreError::NotFound { .. }) => {
            return Err(refuse(used_basic, "unknown client"))
        }
        Err(e) => return Err(internal(e)),
    };
    match (client.public, secret) {
        (true, None) => Ok(client),
        (true, Some(_)) => Err(refuse(used_basic, "a public client has no secret")),
        (false, None) => Err(refuse(used_basic, "the client secret is required")),
        (false, Some(secret)) => match idp.store.check_client_secret(&client_id, &secret).await {
            Ok(true) => Ok(client),
            Ok(false) => Err(refuse(used_basic, "the client secret is wrong")),
            Err(e) => Err(internal(e)),
        },
    }
}

/// `POST /token`.
pub async fn token(
    State(idp): State<Arc<Idp>>,
    axum::Extension(caller): axum::Extension<crate::Caller>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => return form_refusal(&e).into_response(),
    };
    match token_inner(&idp, &headers, &caller, &form).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn token_inner(
    idp: &Idp,
    headers: &HeaderMap,
    caller: &crate::Caller,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let client = authenticate_client(idp, headers, form).await?;
    let param = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    match param("grant_type") {
        "authorization_code" => {
            let redeemed = idp
                .store
                .redeem_code(param("code"), &client.client_id, now())
                .await
                .map_err(internal)?;
            let (code, grant) = match redeemed {
                Ok(r) => r,
                Err(RedeemProblem::Reused) => {
                    tracing::warn!(client = %client.client_id, "an authorization code was presented twice; its tokens are revoked");
                    return Err(oauth_error(
                        "invalid_grant",
                        "the code was used before; the tokens issued from it are revoked",
                    ));
                }
                Err(RedeemProblem::Expired) => {
                    return Err(oauth_error("invalid_grant", "the code has expired"))
                }
                Err(_) => return Err(oauth_error("invalid_grant", "unknown code")),
            };
            let grant_id = grant.id.clone();
            let refuse = |why: &'static str| async move {
                let _ = idp.store.revoke_grant(&grant_id).await;
                Err(oauth_error("invalid_grant", why))
            };
            if param("redirect_uri") != code.redirect_uri {
                return refuse("redirect_uri does not match the authorization request").await;
            }
            let verifier = form.get("code_verifier");
            match (&code.code_challenge, verifier) {
                (Some(c), Some(v)) if pkce::verify_s256(v, c) => {}
                (Some(_), Some(_)) => {
                    return refuse("the code_verifier does not match the code_challenge").await
                }
                (Some(_), None) => return refuse("code_verifier is required").await,
                (None, Some(_)) => {
                    return refuse("no code_challenge was sent with the authorization request")
                        .await
                }
                (None, None) => {}
            }
            issue(idp, &client, &grant, code.nonce.as_deref(), true).await
        }
        "refresh_token" => {
            // Decided before the token is used up: a refusal for good ends the grant; one that
            // is only for now leaves the token to be presented again.
            let peeked = idp
                .store
                .refresh_token_grant(param("refresh_token"), &client.client_id)
                .await
                .map_err(internal)?;
            if let Some(grant) = &peeked {
                match idp.tokens_allowed(&client, &grant.auth, caller).await {
                    Ok(()) => {}
                    Err(TokenRefusal::Refused(why)) => {
                        let _ = idp.store.revoke_grant(&grant.id).await;
                        return Err(oauth_error("invalid_grant", why));
                    }
                    Err(TokenRefusal::Unavailable(why)) => {
                        tracing::error!(reason = %why, "a refresh could not be decided");
                        return Err(unavailable(why));
                    }
                }
            }
            let used = idp
                .store
                .use_refresh_token(param("refresh_token"), &client.client_id)
                .await
                .map_err(internal)?;
            let grant = match used {
                Ok(g) => g,
                Err(RedeemProblem::Reused) => {
                    tracing::warn!(client = %client.client_id, "a rotated refresh token was presented again; its family is revoked");
                    return Err(oauth_error(
                        "invalid_grant",
                        "the refresh token was used before; every token of its family is revoked",
                    ));
                }
                Err(RedeemProblem::Revoked) => {
                    return Err(oauth_error("invalid_grant", "the refresh token is revoked"))
                }
                Err(_) => return Err(oauth_error("invalid_grant", "unknown refresh token")),
            };
            issue(idp, &client, &grant, None, true).await
        }
        DEVICE_GRANT => device_poll(idp, &client, param("device_code"), caller).await,
        "" => Err(oauth_error("invalid_request", "grant_type is required")),
        other => Err(oauth_error(
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported"),
        )),
    }
}

/// RFC 8628 section 3.5.
async fn device_poll(
    idp: &Idp,
    client: &Client,
    device_code: &str,
    caller: &crate::Caller,
) -> Result<Response, OAuthError> {
    let device = idp
        .store
        .device_by_code(device_code)
        .await
        .map_err(internal)?
        .filter(|d| d.client_id == client.client_id)
        .ok_or_else(|| oauth_error("invalid_grant", "unknown device_code"))?;
    let now = now();
    if device.expires_at <= now {
        return Err(oauth_error(
            "expired_token",
            "the device code has expired; start again",
        ));
    }
    match device.status {
        DeviceStatus::Denied => Err(oauth_error("access_denied", "the user denied the request")),
        DeviceStatus::Consumed => Err(oauth_error("invalid_grant", "the device code was used")),
        DeviceStatus::Pending => {
            let too_fast = device
                .last_poll_at
                .is_some_and(|t| now - t < device.interval_secs);
            // RFC 8628 section 3.5: on slow_down the interval grows by 5 seconds for good.
            let interval = device.interval_secs + if too_fast { 5 } else { 0 };
            idp.store
                .device_polled(&device.hash, now, interval)
                .await
                .map_err(internal)?;
            if too_fast {
                Err(oauth_error(
                    "slow_down",
                    format!("poll at most every {interval} seconds"),
                ))
            } else {
                Err(oauth_error(
                    "authorization_pending",
                    "the user has not approved the request yet",
                ))
            }
        }
        DeviceStatus::Approved(approval) => {
            // A policy that came after the approval holds at the poll, as at a refresh.
            match idp.tokens_allowed(client, &approval, caller).await {
                Ok(()) => {}
                Err(TokenRefusal::Refused(why)) => return Err(oauth_error("access_denied", why)),
                Err(TokenRefusal::Unavailable(why)) => {
                    tracing::error!(reason = %why, "a device poll could not be decided");
                    return Err(unavailable(why));
                }
            }
            let grant = idp
                .store
                .consume_device(&device.hash)
                .await
                .map_err(internal)?
                .ok_or_else(|| oauth_error("invalid_grant", "the device code was used"))?;
            issue(idp, client, &grant, None, true).await
        }
    }
}

/// Issues an ID token, an access token and a new refresh token for a grant.
async fn issue(
    idp: &Idp,
    client: &Client,
    grant: &Grant,
    nonce: Option<&str>,
    with_refresh: bool,
) -> Result<Response, OAuthError> {
    let user = idp
        .store
        .user_by_id(&grant.auth.user_id)
        .await
        .map_err(internal)?;
    if !user.enabled || grant.revoked {
        return Err(oauth_error("invalid_grant", "the grant is revoked"));
    }
    // True only when an administrator vouched for the address: the provider never checks a
    // mailbox itself.
    let email_verified = idp.store.email_verified(&user.id).await.map_err(internal)?;
    let now = now();
    let exp = now + TOKEN_LIFETIME.as_secs() as i64;
    let id_claims = IdClaims {
        iss: idp.issuer.clone(),
        sub: user.id.clone(),
        aud: client.client_id.clone(),
        exp,
        iat: now,
        auth_time: grant.auth.auth_time,
        nonce: nonce.map(str::to_owned),
        email: user.email.clone(),
        email_verified,
        name: user.display_name.clone(),
        groups: user.groups.clone(),
        roles: if user.admin {
            vec!["admin".to_owned()]
        } else {
            vec![]
        },
        amr: grant.auth.amr.clone(),
        acr: grant.auth.acr.clone(),
        sid: grant.id.clone(),
    };
    let access_claims = AccessClaims {
        iss: idp.issuer.clone(),
        sub: user.id.clone(),
        aud: client.client_id.clone(),
        client_id: client.client_id.clone(),
        exp,
        iat: now,
        jti: crate::authorize_id(),
        scope: grant.scope.clone(),
        grant: grant.id.clone(),
    };
    let id_token =
        tokens::sign_id_token(&idp.keys, now, client.id_token_alg, &id_claims).map_err(internal)?;
    let access_token =
        tokens::sign_access_token(&idp.keys, now, &access_claims).map_err(internal)?;
    let mut body = serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME.as_secs(),
        "id_token": id_token,
        "scope": grant.scope,
    });
    if with_refresh {
        let refresh = idp
            .store
            .issue_refresh_token(&grant.id)
            .await
            .map_err(internal)?;
        body["refresh_token"] = serde_json::Value::String(refresh);
    }
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn invalid_token(why: &str) -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": "invalid_token", "error_description": why})),
    )
        .into_response();
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{why}\"");
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// `GET/POST /userinfo` (OpenID Connect Core section 5.3), with a bearer access token.
pub async fn userinfo(State(idp): State<Arc<Idp>>, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        let mut resp = StatusCode::UNAUTHORIZED.into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"postern\""),
        );
        return resp;
    };
    let claims = match idp.check_access_token(token.trim()).await {
        Ok(c) => c,
        Err(e) => return invalid_token(&e.to_string()),
    };
    let user = match idp.store.user_by_id(&claims.sub).await {
        Ok(u) if u.enabled => u,
        _ => return invalid_token("the user is disabled or gone"),
    };
    let email_verified = match idp.store.email_verified(&user.id).await {
        Ok(v) => v,
        Err(_) => return invalid_token("the user is disabled or gone"),
    };
    Json(serde_json::json!({
        "sub": user.id,
        "email": user.email,
        "email_verified": email_verified,
        "name": user.display_name,
        "groups": user.groups,
        "roles": if user.admin { vec!["admin"] } else { vec![] },
    }))
    .into_response()
}
