//! Signing an administrator in for registration, with the OAuth 2.0 device authorization grant
//! (RFC 8628) against the edge's built-in identity provider: the connector shows a URL and a
//! code, the administrator approves in a browser, and the connector polls for the token.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use postern_proto::api::IdpInfo;
use serde::Deserialize;
use url::Url;

/// What the administrator must do, to show them.
#[derive(Clone, Debug, Deserialize)]
pub struct DeviceStart {
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub user_code: String,
    pub expires_in: u64,
    #[serde(default = "default_interval")]
    pub interval: u64,
    device_code: String,
}

/// RFC 8628 section 3.2: 5 seconds when the server names none.
fn default_interval() -> u64 {
    5
}

#[derive(Deserialize)]
struct Discovery {
    device_authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Runs the device grant and returns the administrator's access token. `connect_to` overrides
/// where the identity provider's host is dialled (for `*.localhost` names that do not resolve).
pub async fn sign_in(
    edge_url: &str,
    ca_pem: &str,
    connect_to: Option<SocketAddr>,
    show: impl FnOnce(&DeviceStart),
) -> anyhow::Result<String> {
    let edge = crate::control::edge_base(edge_url)?;
    let tls = postern_pki::client_config(ca_pem, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
        .context("the --ca-file does not hold a usable CA certificate")?;
    let plain = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .timeout(Duration::from_secs(30))
        .build()?;
    let info: IdpInfo = plain
        .get(format!("{edge}/v1/connector/idp"))
        .send()
        .await
        .with_context(|| format!("cannot reach the edge at {edge}; check --edge and --ca-file"))?
        .error_for_status()
        .context("the edge does not offer sign-in for registration")?
        .json()
        .await?;
    let issuer = Url::parse(&info.issuer).context("the edge named an invalid issuer")?;
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30));
    if let (Some(addr), Some(host)) = (connect_to, issuer.host_str()) {
        builder = builder.resolve(host, addr);
    }
    let idp = builder.build()?;
    let discovery: Discovery = idp
        .get(format!(
            "{}/.well-known/openid-configuration",
            info.issuer.trim_end_matches('/')
        ))
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the identity provider at {}; if its host does not resolve here, pass --idp-connect-to ADDRESS",
                info.issuer
            )
        })?
        .error_for_status()?
        .json()
        .await?;
    let start: DeviceStart = idp
        .post(&discovery.device_authorization_endpoint)
        .form(&[("client_id", info.client_id.as_str()), ("scope", "openid")])
        .send()
        .await?
        .error_for_status()
        .context("the identity provider refused to start the sign-in")?
        .json()
        .await?;
    show(&start);
    let mut interval = Duration::from_secs(start.interval.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(start.expires_in);
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() > deadline {
            bail!("nobody approved the sign-in in time; run the registration again");
        }
        let answer: TokenAnswer = idp
            .post(&discovery.token_endpoint)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", start.device_code.as_str()),
                ("client_id", info.client_id.as_str()),
            ])
            .send()
            .await?
            .json()
            .await
            .context("the identity provider's token answer is not valid")?;
        if let Some(token) = answer.access_token {
            return Ok(token);
        }
        match answer.error.as_deref() {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            Some("access_denied") => bail!("the sign-in was denied in the browser"),
            Some("expired_token") => {
                bail!("the code expired before it was approved; run the registration again")
            }
            other => bail!(
                "the identity provider refused the sign-in: {} {}",
                other.unwrap_or("unknown error"),
                answer.error_description.unwrap_or_default()
            ),
        }
    }
}
