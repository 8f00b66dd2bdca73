//! The npm `oidc-provider` (an OpenID Certified provider) as a test peer, run by Node from
//! `tests/js/issuer.mjs` on an ephemeral loopback port.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Issuer {
    _child: Child,
    /// e.g. `http://127.0.0.1:41234`
    pub url: String,
}

impl Issuer {
    /// Starts the provider with these clients and accounts (see `issuer.mjs`).
    pub async fn start(config: serde_json::Value) -> Issuer {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
        assert!(
            std::path::Path::new(dir)
                .join("node_modules/oidc-provider")
                .exists(),
            "the test peers are not installed; run scripts/test.sh (it runs `npm ci` in {dir})"
        );
        let mut child = Command::new("node")
            .arg(format!("{dir}/issuer.mjs"))
            .arg(config.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (it is installed by scripts/test.sh)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(super::READY_TIMEOUT, lines.next_line())
            .await
            .expect("the OpenID provider did not start")
            .unwrap()
            .expect("the OpenID provider exited");
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
        // Keep reading: the provider logs notices to stdout, and a closed pipe would kill it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Issuer {
            _child: child,
            url: ready["issuer"].as_str().unwrap().to_owned(),
        }
    }
}
