//! `hoist.yaml` + environment + flags -> [`Config`].
//!
//! Every key is optional and the defaults reproduce the reference pipeline
//! (see the README). Precedence, highest first: a command-line flag, a
//! `HOIST_*` environment variable, `hoist.yaml`, the default. An unknown key
//! in `hoist.yaml` is an error that names it, so a typo never passes as a
//! default.
//!
//! Each pipeline stage adds its keys here as it arrives: one field in
//! [`FileConfig`], one in [`Config`], one line in [`Config::load`].

use crate::error::{Error, Location, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "hoist.yaml";
pub const DEFAULT_WORKFLOW: &str = ".gitea/workflows/publish-workspace-server-image.yml";
pub const DEFAULT_MANIFEST: &str = "manifest.json";
pub const DEFAULT_BUNDLE_DIR: &str = ".tenant-bundle-deps";
/// The provider of manifest entries that name none, and the known ones.
pub const DEFAULT_PROVIDER: &str = "moleculesai";
const DEFAULT_PROVIDERS: [(&str, &str, &str); 2] = [
    (
        "moleculesai",
        "https://git.moleculesai.app",
        "MOLECULE_GITEA_TOKEN",
    ),
    ("github", "https://github.com", "MOLECULE_GITHUB_TOKEN"),
];

/// `hoist.yaml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// The workflow whose `on.push` filters `hoist changes` reads.
    workflow: Option<PathBuf>,
    /// The dependency manifest that `hoist deps` reads.
    manifest: Option<PathBuf>,
    /// Where `hoist deps` clones the dependencies.
    bundle_dir: Option<PathBuf>,
    git: Option<FileGit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGit {
    /// The provider of entries that name none.
    provider: Option<String>,
    providers: Option<BTreeMap<String, Provider>>,
}

/// Where a provider's repositories are cloned from, and the environment
/// variable that holds its token (the token itself is never configured).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub base_url: String,
    pub token_env: Option<String>,
}

/// Values given on the command line, which win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub workflow: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    pub bundle_dir: Option<PathBuf>,
    /// Base URL of the default provider.
    pub base_url: Option<String>,
    /// Token variable of the default provider.
    pub token_env: Option<String>,
}

/// The git providers the manifest's entries are cloned from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitConfig {
    /// The provider of entries that name none.
    pub default_provider: String,
    pub providers: BTreeMap<String, Provider>,
}

/// The resolved configuration. Paths are relative to the current directory
/// (they were joined to the project root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The project root (`-C DIR`).
    pub root: PathBuf,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    pub workflow: PathBuf,
    pub manifest: PathBuf,
    pub bundle_dir: PathBuf,
    pub git: GitConfig,
}

impl Config {
    /// Loads the configuration of the project at `root`: `config_file` when
    /// given (it must exist), else `root/hoist.yaml` when present.
    pub fn load(
        root: &Path,
        config_file: Option<&Path>,
        overrides: Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let (file, parsed) = match config_file {
            Some(path) => {
                let path = resolve(root, path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::unreadable("config", &path, e))?;
                let parsed = parse(&path, &text)?;
                (Some(path), parsed)
            }
            None => {
                let path = resolve(root, Path::new(CONFIG_FILE));
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let parsed = parse(&path, &text)?;
                        (Some(path), parsed)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        (None, FileConfig::default())
                    }
                    Err(e) => return Err(Error::unreadable("config", &path, e)),
                }
            }
        };
        let env_value = |name: &str| env(name).filter(|v| !v.is_empty());
        let env_path = |name: &str| env_value(name).map(PathBuf::from);
        let path = |flag: Option<PathBuf>, name: &str, file: Option<PathBuf>, default: &str| {
            let chosen = flag
                .or_else(|| env_path(name))
                .or(file)
                .unwrap_or_else(|| PathBuf::from(default));
            resolve(root, &chosen)
        };
        let file_git = parsed.git.unwrap_or_default();
        let default_provider = file_git
            .provider
            .unwrap_or_else(|| DEFAULT_PROVIDER.to_string());
        let mut providers: BTreeMap<String, Provider> = DEFAULT_PROVIDERS
            .iter()
            .map(|(name, base_url, token_env)| {
                let provider = Provider {
                    base_url: base_url.to_string(),
                    token_env: Some(token_env.to_string()),
                };
                (name.to_string(), provider)
            })
            .collect();
        providers.extend(file_git.providers.unwrap_or_default());
        let Some(default) = providers.get_mut(&default_provider) else {
            let known: Vec<&str> = providers.keys().map(String::as_str).collect();
            return Err(Error::input(format!(
                "git.provider '{default_provider}' is not a known provider ({})",
                known.join(", ")
            ))
            .hint("add it under git.providers in hoist.yaml, with its base_url and token_env"));
        };
        if let Some(base_url) = overrides
            .base_url
            .or_else(|| env_value("HOIST_GIT_BASE_URL"))
        {
            default.base_url = base_url;
        }
        if let Some(token_env) = overrides.token_env.or_else(|| env_value("HOIST_TOKEN_ENV")) {
            default.token_env = Some(token_env);
        }
        Ok(Config {
            root: root.to_path_buf(),
            file,
            workflow: path(
                overrides.workflow,
                "HOIST_WORKFLOW",
                parsed.workflow,
                DEFAULT_WORKFLOW,
            ),
            manifest: path(
                overrides.manifest,
                "HOIST_MANIFEST",
                parsed.manifest,
                DEFAULT_MANIFEST,
            ),
            bundle_dir: path(
                overrides.bundle_dir,
                "HOIST_BUNDLE_DIR",
                parsed.bundle_dir,
                DEFAULT_BUNDLE_DIR,
            ),
            git: GitConfig {
                default_provider,
                providers,
            },
        })
    }
}

/// `path` as seen from the current directory when given relative to `root`
/// (`-C DIR`), without a noisy `./` for the default root.
pub fn resolve(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new(".") {
        path.to_path_buf()
    } else {
        root.join(path)
    }
}

fn parse(path: &Path, text: &str) -> Result<FileConfig> {
    // An empty file, or one with only comments, is all defaults.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(text).map_err(|e| {
        let error = Error::input(format!("invalid config {}", path.display())).caused_by(&e);
        let error = match e.location() {
            Some(l) => error.at(Location::new(path, l.line(), Some(l.column()))),
            None => error,
        };
        if e.to_string().contains("unknown field") {
            error.hint("remove or correct the key; the README lists the keys of hoist.yaml")
        } else {
            error
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap();
        assert_eq!(config.workflow, dir.path().join(DEFAULT_WORKFLOW));
        assert_eq!(config.file, None);
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "workflow: from-file.yml\n").unwrap();
        let env = |name: &str| (name == "HOIST_WORKFLOW").then(|| "from-env.yml".to_string());
        let load = |overrides, env: &dyn Fn(&str) -> Option<String>| {
            Config::load(dir.path(), None, overrides, env)
                .unwrap()
                .workflow
        };
        assert_eq!(
            load(Overrides::default(), &no_env),
            dir.path().join("from-file.yml")
        );
        assert_eq!(
            load(Overrides::default(), &env),
            dir.path().join("from-env.yml")
        );
        let flag = Overrides {
            workflow: Some("from-flag.yml".into()),
            ..Overrides::default()
        };
        assert_eq!(load(flag, &env), dir.path().join("from-flag.yml"));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "# hoist\nworkflow: a.yml\nworkfow: b.yml\n",
        )
        .unwrap();
        let err = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap_err();
        assert!(err.causes[0].contains("unknown field `workfow`"), "{err}");
        assert_eq!(err.exit_code(), 2);
        assert_eq!(err.location.as_ref().unwrap().line, 3);
    }

    #[test]
    fn providers_merge_with_the_defaults_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "bundle_dir: deps\ngit:\n  providers:\n    local: {base_url: 'http://127.0.0.1:1', token_env: T}\n",
        )
        .unwrap();
        let overrides = Overrides {
            token_env: Some("FROM_FLAG".into()),
            ..Overrides::default()
        };
        let env = |name: &str| (name == "HOIST_GIT_BASE_URL").then(|| "http://env".to_string());
        let config = Config::load(dir.path(), None, overrides, env).unwrap();
        assert_eq!(config.bundle_dir, dir.path().join("deps"));
        assert_eq!(config.manifest, dir.path().join(DEFAULT_MANIFEST));
        let git = &config.git;
        assert_eq!(git.default_provider, "moleculesai");
        let default = &git.providers["moleculesai"];
        assert_eq!(
            (default.base_url.as_str(), default.token_env.as_deref()),
            ("http://env", Some("FROM_FLAG"))
        );
        assert_eq!(
            git.providers["github"].token_env.as_deref(),
            Some("MOLECULE_GITHUB_TOKEN")
        );
        assert_eq!(git.providers["local"].base_url, "http://127.0.0.1:1");

        std::fs::write(dir.path().join(CONFIG_FILE), "git:\n  provider: nowhere\n").unwrap();
        let err = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap_err();
        assert!(
            err.message.contains("'nowhere' is not a known provider"),
            "{err}"
        );
    }

    #[test]
    fn an_explicit_config_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(
            dir.path(),
            Some(Path::new("nope.yaml")),
            Overrides::default(),
            no_env,
        )
        .unwrap_err();
        assert!(err.message.contains("nope.yaml"), "{err}");
    }
}
