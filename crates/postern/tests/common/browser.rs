//! A minimal browser for the identity provider's pages: keeps cookies, never follows redirects
//! by itself (the tests look at each one), and reads form fields out of the HTML.

use std::collections::HashMap;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use std::sync::Arc;

use super::Edge;

pub const IDP_HOST: &str = "login.localhost";

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
    pub set_cookies: Vec<String>,
}

impl Page {
    /// The value of the form field `name` (hidden or not) in the page.
    pub fn field(&self, name: &str) -> String {
        form_field(&self.body, name)
    }
}

pub struct Browser {
    client: reqwest::Client,
    pub origin: String,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    pub fn new(edge: &Edge) -> Browser {
        Browser::new_from(edge, None)
    }

    /// A browser whose connections leave from `source` (any 127/8 address works on loopback),
    /// so a test can be several users at several addresses.
    pub fn new_from(edge: &Edge, source: Option<std::net::IpAddr>) -> Browser {
        let tls = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve(IDP_HOST, edge.public)
            .redirect(reqwest::redirect::Policy::none())
            .local_address(source)
            .build()
            .unwrap();
        Browser {
            client,
            origin: edge.url(IDP_HOST, ""),
            cookies: HashMap::new(),
        }
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') {
            format!("{}{url}", self.origin)
        } else {
            url.to_owned()
        }
    }

    async fn finish(&mut self, resp: reqwest::Response) -> Page {
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookies {
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        Page {
            status,
            location,
            body: resp.text().await.unwrap(),
            set_cookies,
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let resp = self
            .client
            .get(self.absolute(url))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let resp = self
            .client
            .post(self.absolute(url))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    #[allow(dead_code)]
    pub async fn post_json(&mut self, url: &str, body: &serde_json::Value) -> Page {
        let resp = self
            .client
            .post(self.absolute(url))
            .header(COOKIE, self.cookie_header())
            .json(body)
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    /// Follows redirects within the provider; returns the first page that is not one, or the
    /// first redirect that leaves the provider.
    pub async fn follow(&mut self, mut page: Page) -> Page {
        while page.status == StatusCode::SEE_OTHER {
            let loc = page.location.clone().unwrap();
            if !(loc.starts_with('/') || loc.starts_with(&self.origin)) {
                return page;
            }
            page = self.get(&loc).await;
        }
        page
    }

    /// Opens `url` and follows the provider's redirects.
    pub async fn open(&mut self, url: &str) -> Page {
        let page = self.get(url).await;
        self.follow(page).await
    }

    /// Opens `url` and follows it to the sign-in form, fills it in and submits it; returns what
    /// the provider answered after following its own redirects.
    pub async fn sign_in(&mut self, url: &str, email: &str, password: &str) -> Page {
        let form = self.get(url).await;
        let form = self.follow(form).await;
        assert!(
            form.body.contains("<label for=\"password\">"),
            "not a sign-in form: {} {}",
            form.status,
            form.body
        );
        self.submit_password(&form, email, password).await
    }

    pub async fn submit_password(&mut self, form: &Page, email: &str, password: &str) -> Page {
        let (csrf, req) = (form.field("csrf"), form.field("req"));
        let page = self
            .post(
                "/signin",
                &[
                    ("csrf", &csrf),
                    ("req", &req),
                    ("email", email),
                    ("password", password),
                ],
            )
            .await;
        self.follow(page).await
    }
}

/// The value of the form field `name` (hidden or not) in an HTML page.
pub fn form_field(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no field {name} in page: {html}"))
        + needle.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].replace("&amp;", "&")
}

/// The `action` of the first form in a page.
pub fn form_action(html: &str) -> String {
    let needle = "action=\"";
    let start = html
        .find(needle)
        .unwrap_or_else(|| panic!("no form in page: {html}"))
        + needle.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].replace("&amp;", "&")
}

/// The query parameters of a URL.
pub fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The claims of a JWT, unverified (the tests verify signatures separately).
pub fn claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Runs one of the Node scripts under `tests/js` in headless Chromium, with its JSON argument,
/// and returns the JSON line it printed.
#[allow(dead_code)]
pub async fn chromium(script: &str, args: serde_json::Value) -> serde_json::Value {
    let script = format!("{}/tests/js/{script}", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is not installed; run scripts/test.sh (it installs the Debian package chromium)"
    );
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::process::Command::new("node")
            .arg(&script)
            .arg(args.to_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run hung")
    .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A browser with a cookie jar that follows redirects, resolving the app and the provider.
pub fn app_browser(edge: &Edge, app_host: &str) -> reqwest::Client {
    let tls = postern_pki::client_config(&edge.ca_pem(), vec![b"http/1.1".to_vec()]).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .cookie_provider(Arc::new(reqwest::cookie::Jar::default()))
        .resolve(app_host, edge.public)
        .resolve(IDP_HOST, edge.public)
        .build()
        .unwrap()
}

/// Opens the app, signs in at the built-in provider and returns to the app.
pub async fn sign_in_to_app(
    edge: &Edge,
    password: &str,
    browser: &reqwest::Client,
    url: &str,
    email: &str,
) {
    let form = browser.get(url).send().await.unwrap();
    assert_eq!(form.url().host_str(), Some(IDP_HOST));
    let html = form.text().await.unwrap();
    let field = |name: &str| form_field(&html, name);
    let resp = browser
        .post(edge.url(IDP_HOST, "/signin"))
        .form(&[
            ("csrf", field("csrf").as_str()),
            ("req", field("req").as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.url().as_str(), url, "back at the app");
}

/// What the app answers an API client of this browser (401 JSON once the session is over).
pub async fn app_status(browser: &reqwest::Client, url: &str) -> StatusCode {
    browser
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .status()
}
