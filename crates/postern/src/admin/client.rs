//! A client of the edge's admin API: HTTPS with the edge's CA, the admin token as a bearer token,
//! and error answers turned into one-line reasons.

use std::time::Duration;

use anyhow::{bail, Context};
use postern_proto::api::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A client of the admin API.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(admin_url: &str, token: &str, ca_pem: &str) -> anyhow::Result<AdminClient> {
        let url = url::Url::parse(admin_url).with_context(|| {
            format!("--admin-url {admin_url:?} is not a URL; use e.g. https://127.0.0.1:8445")
        })?;
        if url.scheme() != "https" {
            bail!("--admin-url {admin_url:?} must use https");
        }
        let tls = postern_pki::client_config(ca_pem, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
            .context("the --ca-file does not hold a usable CA certificate")?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(AdminClient {
            base: admin_url.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            http,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(self.http.get(self.url(path))).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(self.http.patch(self.url(path)).json(body)).await
    }

    /// DELETE, for routes that answer with the deleted object.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(self.http.delete(self.url(path))).await
    }

    /// DELETE with a JSON body naming what to remove.
    pub async fn delete_with_body<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<()> {
        self.call::<serde_json::Value>(self.http.delete(self.url(path)).json(body))
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call::<serde_json::Value>(self.http.delete(self.url(path)))
            .await
            .map(|_| ())
    }

    /// GET a file-sized answer into `out`, which must not exist: written owner-only to a
    /// temporary name beside it and renamed into place once whole. Returns its length.
    pub async fn download(&self, path: &str, out: &std::path::Path) -> anyhow::Result<u64> {
        use std::io::Write;
        if out.exists() {
            bail!("{} exists; give --out a new file name", out.display());
        }
        let mut resp = self
            .http
            .get(self.url(path))
            .timeout(DOWNLOAD_TIMEOUT)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| self.unreachable())?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(refusal(status, &bytes));
        }
        let tmp = out.with_extension(format!("part{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let written = async {
            let mut len = 0u64;
            while let Some(chunk) = resp
                .chunk()
                .await
                .context("reading the admin API's answer")?
            {
                file.write_all(&chunk)?;
                len += chunk.len() as u64;
            }
            file.sync_all()?;
            std::fs::rename(&tmp, out)?;
            Ok::<_, anyhow::Error>(len)
        }
        .await;
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.with_context(|| format!("cannot write {}", out.display()))
    }

    fn unreachable(&self) -> String {
        format!(
            "cannot reach the admin API at {}; check --admin-url and --ca-file",
            self.base
        )
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| self.unreachable())?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .context("reading the admin API's answer")?;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(body).context("the admin API's answer is not the expected JSON")
    }
}

/// How long a download (a backup) may take in all.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// The admin API's refusal as one line: its message and code.
fn refusal(status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    let msg = serde_json::from_slice::<ApiError>(body)
        .map(|e| format!("{} ({})", e.error.message, e.error.code))
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    anyhow::anyhow!("{status}: {msg}")
}

/// Path segments from user input are percent-encoded so a name can never change the route.
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
