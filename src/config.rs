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
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "hoist.yaml";
pub const DEFAULT_WORKFLOW: &str = ".gitea/workflows/publish-workspace-server-image.yml";

/// `hoist.yaml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// The workflow whose `on.push` filters `hoist changes` reads.
    workflow: Option<PathBuf>,
}

/// Values given on the command line, which win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub workflow: Option<PathBuf>,
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
        let env_path = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let workflow = overrides
            .workflow
            .or_else(|| env_path("HOIST_WORKFLOW"))
            .or(parsed.workflow)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WORKFLOW));
        Ok(Config {
            root: root.to_path_buf(),
            file,
            workflow: resolve(root, &workflow),
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
