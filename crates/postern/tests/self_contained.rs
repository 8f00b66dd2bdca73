//! The repository builds and tests from its own clone: no tracked file refers to a folder beside
//! the checkout (a sibling `shared/` folder, say), which a user of the project does not have.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root, two levels above this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The files git tracks, or, outside a git checkout (a source tarball), every file but build output
/// and installed packages.
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty());
    if let Some(out) = listed {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root.join(String::from_utf8_lossy(p).as_ref()))
            .collect();
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if matches!(name.to_str(), Some("target" | "node_modules" | ".git")) {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn no_tracked_file_refers_to_a_folder_beside_the_checkout() {
    let root = root();
    // Spelled in two pieces so that this file does not match itself.
    let needles = [concat!("..", "/shared"), concat!("..", "\\shared")];
    let mut offenders = Vec::new();
    let files = tracked_files(&root);
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    for file in files {
        let Ok(text) = std::fs::read(&file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "these lines refer to a path outside the repository; copy what they need into it \
         (test data goes in testdata/ with its licence):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_open_redirect_corpus_is_in_the_repository_with_its_licence() {
    let root = root();
    let corpus = std::fs::read_to_string(root.join("testdata/openredirects.txt")).unwrap();
    assert_eq!(corpus.lines().count(), 559);
    let licence = std::fs::read_to_string(root.join("testdata/openredirects.LICENSE")).unwrap();
    assert!(
        licence.contains("Permission is hereby granted"),
        "MIT licence text"
    );
}
