//! `postern quickstart` gives a working demo with no config: run it as a user would.

mod common;

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn quickstart_serves_the_demo_app_through_the_tunnel() {
    let data = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(common::BIN)
        .args(["quickstart", "--port", "0", "--data"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut admin_url) = (String::new(), String::new());
    tokio::time::timeout(common::READY_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("Demo app (through the tunnel, behind sign-in): ")
            {
                url = rest.trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("Admin API: ") {
                admin_url = rest.split_whitespace().next().unwrap().to_owned();
            } else if line.starts_with("Press Ctrl-C") {
                return;
            }
        }
        panic!("quickstart ended before it was ready");
    })
    .await
    .expect("quickstart did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let parsed = url::Url::parse(&url).unwrap();
    assert_eq!(parsed.host_str(), Some("whoami.localhost"));
    let port = parsed.port().unwrap();
    let ca = std::fs::read_to_string(data.path().join("edge/ca.pem")).unwrap();
    let tls = postern_pki::client_config(&ca, vec![b"h2".to_vec(), b"http/1.1".to_vec()]).unwrap();
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .cookie_provider(jar)
        .resolve("whoami.localhost", ([127, 0, 0, 1], port).into())
        .resolve("login.localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    // The demo app requires sign-in: API clients get 401 JSON, browsers the sign-in page of the
    // built-in identity provider. The connector comes up right after the URL is printed; the
    // edge queues until it does.
    let resp = client
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let form = client.get(&url).send().await.unwrap();
    assert_eq!(form.url().host_str(), Some("login.localhost"));
    let form = form.text().await.unwrap();
    let field = |name: &str| common::browser::form_field(&form, name);
    let users: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.path().join("quickstart.json")).unwrap(),
    )
    .unwrap();
    let demo = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["admin"] == false)
        .unwrap();
    let resp = client
        .post(format!("https://login.localhost:{port}/signin"))
        .form(&[
            ("csrf", field("csrf").as_str()),
            ("req", field("req").as_str()),
            ("email", demo["email"].as_str().unwrap()),
            ("password", demo["password"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.url().as_str(), url);
    let text = resp.text().await.unwrap();
    assert!(text.contains("Hello from the Postern demo app"), "{text}");
    assert!(
        text.contains("x-forwarded-host: whoami.localhost"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "x-postern-email: {}",
            demo["email"].as_str().unwrap()
        )),
        "{text}"
    );
    let robots = client.get(format!("{url}robots.txt")).send().await.unwrap();
    assert_eq!(robots.text().await.unwrap(), "User-agent: *\nDisallow: /\n");

    // The admin API the banner names works with the CLI and the token file it names.
    let out = common::admin_cli(
        &admin_url,
        &data.path().join("edge/admin-token"),
        &data.path().join("edge/ca.pem"),
        &["app", "list", "--json"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let apps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(apps[0]["name"], "whoami");

    // The built-in identity provider answers on login.localhost through the public listener,
    // and the quickstart's users are in a private file.
    let users_file = data.path().join("quickstart.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&users_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let users: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&users_file).unwrap()).unwrap();
    let users = users["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert!(users.iter().any(|u| u["admin"] == true));
    assert!(users
        .iter()
        .all(|u| u["password"].as_str().unwrap().len() >= 12));
    let idp = reqwest::Client::builder()
        .use_preconfigured_tls(postern_pki::client_config(&ca, vec![b"http/1.1".to_vec()]).unwrap())
        .resolve("login.localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let discovery: serde_json::Value = idp
        .get(format!(
            "https://login.localhost:{port}/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["issuer"],
        format!("https://login.localhost:{port}")
    );

    common::signal(child.id().unwrap(), "TERM");
    let status = tokio::time::timeout(common::READY_TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
