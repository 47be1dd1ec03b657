//! Records the commit hoist is built from, for `hoist --version`
//! ("hoist 0.1.0 (3921529)"): `HOIST_COMMIT` when the build sets it (a
//! release workflow, a source tarball), else `git rev-parse --short=7 HEAD`
//! of the checkout, with `-dirty` when tracked files differ from it; else
//! "commit unknown" (no git, or not a checkout).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|text| !text.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=HOIST_COMMIT");
    let commit = std::env::var("HOIST_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let sha = git(&["rev-parse", "--short=7", "HEAD"])?;
            // Run again when HEAD moves: HEAD itself, the branch it names,
            // and the packed refs (paths in the git dir, a worktree's too).
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                let dir = Path::new(&dir);
                println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or_default();
                    println!(
                        "cargo:rerun-if-changed={}",
                        Path::new(&common).join(&branch).display()
                    );
                    println!(
                        "cargo:rerun-if-changed={}",
                        Path::new(&common).join("packed-refs").display()
                    );
                }
            }
            // And when the sources change, for `-dirty`.
            for path in ["src", "Cargo.toml", "Cargo.lock"] {
                println!("cargo:rerun-if-changed={path}");
            }
            let dirty = Command::new("git")
                .args([
                    "diff",
                    "--quiet",
                    "HEAD",
                    "--",
                    "src",
                    "Cargo.toml",
                    "Cargo.lock",
                ])
                .status()
                .is_ok_and(|s| s.code() == Some(1));
            Some(if dirty { format!("{sha}-dirty") } else { sha })
        })
        .unwrap_or_else(|| "commit unknown".to_string());
    println!("cargo:rustc-env=HOIST_COMMIT={commit}");
}
