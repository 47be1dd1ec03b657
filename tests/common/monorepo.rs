//! The example monorepo (examples/) committed into a fresh git repository,
//! its dependencies served by the loopback git server, and `hoist publish`
//! run on it: what the publish and promote tests start from.

use super::docker::TempImage;
use super::git_server::{GitServer, ServerOptions, bare_repo};
use super::{git, hoist};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

pub const IMAGES: [&str; 2] = ["platform", "platform-tenant"];
pub const PREFIX: &str = "molecule-ai";

/// The example monorepo, committed, with a forge serving its dependencies.
pub struct Monorepo {
    pub dir: tempfile::TempDir,
    _forge_root: tempfile::TempDir,
    pub forge: GitServer,
    /// Local tags made by the engine, removed on drop.
    pub images: Vec<TempImage>,
}

impl Monorepo {
    /// `None` when python3 (the git server) is missing outside CI.
    pub fn new(token: Option<&str>) -> Option<Monorepo> {
        let forge_root = tempfile::tempdir().unwrap();
        bare_repo(
            forge_root.path(),
            "example-org/plugin-github-app-auth.git",
            1,
            2,
        );
        let starter = bare_repo(forge_root.path(), "example-org/template-starter.git", 1, 2);
        starter.tag("v1.2.0", starter.head());
        let forge = GitServer::start(
            forge_root.path(),
            ServerOptions {
                token: token.map(str::to_string),
                ..ServerOptions::default()
            },
        )?;
        let dir = tempfile::tempdir().unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/.");
        let copied = std::process::Command::new("cp")
            .arg("-R")
            .arg(examples)
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(copied.success());
        git(dir.path(), &["init", "-q", "-b", "main"]);
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "-q", "-m", "example monorepo"]);
        Some(Monorepo {
            dir,
            _forge_root: forge_root,
            forge,
            images: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn head(&self) -> String {
        git(self.path(), &["rev-parse", "HEAD"])
    }

    /// A commit touching the server (selected by the workflow's filters).
    pub fn server_commit(&self, text: &str) -> String {
        let file = self.path().join("workspace-server/main.go");
        let mut content = std::fs::read_to_string(&file).unwrap();
        content.push_str(&format!("// {text}\n"));
        std::fs::write(&file, content).unwrap();
        git(self.path(), &["commit", "-q", "-am", text]);
        self.head()
    }

    /// Runs `hoist publish` against `registry` (host:port) with `args`,
    /// CI outputs in the project dir; removes the local tags afterwards.
    pub fn publish(&mut self, registry: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let target = format!("{registry}/{PREFIX}");
        let mut full: Vec<&str> = vec!["publish", "--registry", &target];
        full.extend_from_slice(args);
        let run = self.run(&full, env);
        let sha7 = self.head()[..7].to_string();
        for image in IMAGES {
            for tag in [format!("staging-{sha7}"), "staging-latest".to_string()] {
                self.images
                    .push(TempImage::new(format!("{target}/{image}:{tag}")));
            }
        }
        run
    }

    /// Runs hoist with `args` and `--format json` in the project dir, the
    /// forge as its git host and CI outputs in files.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let output_file = self.path().join("github-output");
        let summary_file = self.path().join("github-summary");
        let _ = std::fs::remove_file(&output_file);
        let _ = std::fs::remove_file(&summary_file);
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        let output = output_file.to_string_lossy().to_string();
        let summary = summary_file.to_string_lossy().to_string();
        let mut all_env: Vec<(&str, &str)> = vec![
            ("HOIST_GIT_BASE_URL", self.forge.url()),
            ("GITHUB_OUTPUT", &output),
            ("GITHUB_STEP_SUMMARY", &summary),
        ];
        all_env.extend_from_slice(env);
        let out = hoist(self.path(), &full, &all_env);
        Run {
            json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            outputs: std::fs::read_to_string(&output_file).unwrap_or_default(),
            summary: std::fs::read_to_string(&summary_file).unwrap_or_default(),
            out,
        }
    }
}

pub struct Run {
    pub out: Output,
    pub json: Value,
    pub outputs: String,
    pub summary: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).to_string()
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code(),
            String::from_utf8_lossy(&self.out.stdout),
            self.stderr()
        )
    }

    pub fn image(&self, name: &str) -> &Value {
        self.json["images"]
            .as_array()
            .and_then(|images| images.iter().find(|i| i["name"] == name))
            .unwrap_or_else(|| panic!("no image {name} in the report\n{}", self.describe()))
    }
}

/// `molecule-ai/<image>`: the repository the tests publish to.
pub fn repository(image: &str) -> String {
    format!("{PREFIX}/{image}")
}
