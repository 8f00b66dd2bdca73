//! Stamps the binary with the commit it was built from (`postern version`, `/v1/version`):
//! `POSTERN_COMMIT` if set (package builds from a source archive), else `git rev-parse`, else
//! `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=POSTERN_COMMIT");
    let git_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git");
    if git_dir.exists() {
        // A new commit moves HEAD or the branch it names.
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
        if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
            if let Some(branch) = head.trim().strip_prefix("ref: ") {
                println!("cargo:rerun-if-changed={}", git_dir.join(branch).display());
            }
        }
    }
    let commit = std::env::var("POSTERN_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=POSTERN_COMMIT={commit}");
}
