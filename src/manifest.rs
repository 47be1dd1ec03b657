//! `manifest.json` -> the git dependencies to pre-clone.
//!
//! The manifest as really used: `{"version": 1, "plugins": [...],
//! "workspace_templates": [...], "org_templates": [...]}`, where `_`-prefixed
//! keys are prose, a missing array counts as no entries, and whole-line `//`
//! comments have appeared and must not break parsing. An entry has `name`
//! (the directory, unique within its category), `repo` (`org/repo`: no
//! host, no token), `ref` (default `main`: a branch, a tag or a 40-hex
//! commit sha), `private` (default false), an optional `provider` and an
//! optional `lfs` (fetch Git LFS files; unset defers to hoist.yaml); other
//! keys are ignored.

use crate::error::{Error, Location, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A manifest array, and the directory of the bundle it is cloned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Plugins,
    WorkspaceTemplates,
    OrgTemplates,
}

impl Category {
    pub const ALL: [Category; 3] = [
        Category::WorkspaceTemplates,
        Category::OrgTemplates,
        Category::Plugins,
    ];

    /// The key in `manifest.json`.
    pub fn key(self) -> &'static str {
        match self {
            Category::Plugins => "plugins",
            Category::WorkspaceTemplates => "workspace_templates",
            Category::OrgTemplates => "org_templates",
        }
    }

    /// The directory under the bundle dir.
    pub fn dir(self) -> &'static str {
        match self {
            Category::Plugins => "plugins",
            Category::WorkspaceTemplates => "workspace-configs-templates",
            Category::OrgTemplates => "org-templates",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// What an entry's `ref` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// A branch or a tag; which one is known only from the remote.
    Named(String),
    /// A full commit sha, lowercase.
    Commit(String),
}

impl GitRef {
    pub fn as_str(&self) -> &str {
        match self {
            GitRef::Named(name) | GitRef::Commit(name) => name,
        }
    }

    /// Reads a `ref` value; short or uppercase shas are errors, since they
    /// would fail later as a confusing clone error.
    pub fn parse(text: &str) -> std::result::Result<GitRef, String> {
        let hex = !text.is_empty() && text.chars().all(|c| c.is_ascii_hexdigit());
        let digits_only = text.chars().all(|c| c.is_ascii_digit());
        if text.trim().is_empty() {
            return Err("the ref is empty".into());
        }
        if hex && text.len() == 40 {
            return match text.chars().any(|c| c.is_ascii_uppercase()) {
                true => Err(format!(
                    "'{text}' is an uppercase commit sha; write it in lowercase"
                )),
                false => Ok(GitRef::Commit(text.to_string())),
            };
        }
        if hex && (7..40).contains(&text.len()) && !digits_only {
            return Err(format!(
                "'{text}' looks like a short commit sha; pin the full 40-character sha, or name a branch or tag"
            ));
        }
        if !is_ref_name(text) {
            return Err(format!(
                "'{}' is not a valid git ref (see `git check-ref-format`: no spaces, control \
                 characters, '~', '^', ':', '?', '*', '[', '\\', '..' or '@{{')",
                crate::ci::one_line(text)
            ));
        }
        Ok(GitRef::Named(text.to_string()))
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dependency, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub category: Category,
    pub name: String,
    /// `org/repo`, without host or `.git`.
    pub repo: String,
    pub git_ref: GitRef,
    pub private: bool,
    /// The provider named in the entry; `None` means the default one.
    pub provider: Option<String>,
    /// `lfs` of the entry: fetch Git LFS files; `None` defers to the
    /// provider and `git.lfs` of hoist.yaml.
    pub lfs: Option<bool>,
    /// The line of the entry's `name` in the manifest, for messages.
    pub line: usize,
}

impl Dependency {
    /// Where it is cloned, under the bundle dir.
    pub fn target(&self, out: &Path) -> PathBuf {
        out.join(self.category.dir()).join(&self.name)
    }
}

#[derive(Debug, Deserialize)]
struct RawManifest {
    version: Option<serde_json::Value>,
    plugins: Option<Vec<RawEntry>>,
    workspace_templates: Option<Vec<RawEntry>>,
    org_templates: Option<Vec<RawEntry>>,
}

#[derive(Debug, Deserialize)]
struct RawEntry {
    name: String,
    repo: String,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    private: bool,
    provider: Option<String>,
    lfs: Option<bool>,
}

/// Reads and validates a manifest file.
pub fn read(path: &Path) -> Result<Vec<Dependency>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::unreadable("manifest", path, e))?;
    parse(path, &text)
}

/// Parses manifest text; `path` only names it in messages.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Dependency>> {
    // Blank out whole-line `//` comments, keeping line numbers for errors.
    let json: String = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("//") {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let raw: RawManifest = serde_json::from_str(&json).map_err(|e| {
        Error::input(format!("invalid manifest {}", path.display()))
            .at(Location::new(path, e.line(), Some(e.column())))
            .caused_by(e)
            .hint("the manifest is JSON (whole-line // comments are allowed); see the README for its keys")
    })?;
    let at = |line: usize| Location::new(path, line, None);
    match &raw.version {
        None => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            return Err(Error::input(format!(
                "{}: unsupported manifest version {v}",
                path.display()
            ))
            .at(at(find_line(text, "\"version\"", 0).unwrap_or(1)))
            .hint("hoist reads version 1 manifests"));
        }
    }
    let mut deps = Vec::new();
    for category in Category::ALL {
        let entries = match category {
            Category::Plugins => &raw.plugins,
            Category::WorkspaceTemplates => &raw.workspace_templates,
            Category::OrgTemplates => &raw.org_templates,
        };
        let mut seen: Vec<&str> = Vec::new();
        for entry in entries.iter().flatten() {
            let occurrence = seen.iter().filter(|n| **n == entry.name).count();
            let line = name_line(text, &entry.name, occurrence).unwrap_or(1);
            let bad = |what: String| {
                Error::input(format!(
                    "{}: {category} entry '{}': {what}",
                    path.display(),
                    entry.name
                ))
                .at(at(line))
            };
            if let Err(why) = check_name(&entry.name) {
                return Err(bad(why));
            }
            if occurrence > 0 {
                return Err(bad(format!("the name is used twice in `{category}`"))
                    .hint("names are directories: unique within a category (the same name in two categories is fine)"));
            }
            seen.push(&entry.name);
            if let Err(why) = check_repo(&entry.repo) {
                return Err(bad(why).hint("`repo` is `org/repo`: the host comes from the provider, the token from the environment"));
            }
            let git_ref = GitRef::parse(entry.git_ref.as_deref().unwrap_or("main")).map_err(bad)?;
            deps.push(Dependency {
                category,
                name: entry.name.clone(),
                repo: entry.repo.trim_end_matches(".git").to_string(),
                git_ref,
                private: entry.private,
                provider: entry.provider.clone(),
                lfs: entry.lfs,
                line,
            });
        }
    }
    Ok(deps)
}

/// Whether `name` is a branch or tag name git accepts, by the rules of
/// `git check-ref-format` (which is what a fetch of it would check).
fn is_ref_name(name: &str) -> bool {
    let forbidden = |c: char| {
        c.is_whitespace() || c.is_control() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    };
    !name.chars().any(forbidden)
        && !name.contains("..")
        && !name.contains("@{")
        && name != "@"
        && !name.ends_with('.')
        && !name.ends_with(".lock")
        && name
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with('.') && !part.ends_with(".lock"))
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        Err("the name is empty".into())
    } else if name.chars().any(char::is_control) {
        Err(format!(
            "the name '{}' holds control characters; it becomes a directory the image copies",
            crate::ci::one_line(name)
        ))
    } else if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        Err(format!(
            "the name '{name}' is not a plain directory name (no '/', '\\', '.' or '..')"
        ))
    } else if name.contains(".hoist-") {
        Err(format!(
            "the name '{name}' is reserved for hoist's temporary directories"
        ))
    } else {
        Ok(())
    }
}

fn check_repo(repo: &str) -> std::result::Result<(), String> {
    let plain = repo
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    let parts: Vec<&str> = repo.split('/').collect();
    if !plain
        || parts.len() < 2
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        Err(format!(
            "repo '{}' is not of the form org/repo",
            redact_url(repo)
        ))
    } else {
        Ok(())
    }
}

/// A repo value shown in an error without any credentials it might carry
/// (`https://user:token@host/...`).
fn redact_url(repo: &str) -> String {
    match repo.split_once('@') {
        Some((_, rest)) => format!("…@{rest}"),
        None => repo.to_string(),
    }
}

/// The line (1-based) of the `occurrence`-th entry named `name`.
fn name_line(text: &str, name: &str, occurrence: usize) -> Option<usize> {
    let quoted = serde_json::to_string(name).ok()?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            line.split("\"name\"").skip(1).any(|rest| {
                rest.trim_start()
                    .strip_prefix(':')
                    .is_some_and(|v| v.trim_start().starts_with(&quoted))
            })
        })
        .nth(occurrence)
        .map(|(index, _)| index + 1)
}

fn find_line(text: &str, needle: &str, occurrence: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .nth(occurrence)
        .map(|(index, _)| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<Dependency>> {
        parse(Path::new("manifest.json"), text)
    }

    #[test]
    fn reads_entries_with_defaults() {
        let deps = parse_str(
            r#"{
  "_comment": "prose",
  "version": 1,
  // a comment line
  "plugins": [
    {"name": "a", "repo": "org/a"},
    {"name": "b", "repo": "org/b.git", "ref": "v1.2.0", "private": true, "provider": "github", "lfs": true, "runtime": "x"}
  ],
  "org_templates": [{"name": "a", "repo": "org/a-tpl", "ref": "0123456789abcdef0123456789abcdef01234567"}]
}"#,
        )
        .unwrap();
        assert_eq!(deps.len(), 3);
        let org = &deps[0];
        assert_eq!(org.category, Category::OrgTemplates);
        assert_eq!(
            org.git_ref,
            GitRef::Commit("0123456789abcdef0123456789abcdef01234567".into())
        );
        let a = &deps[1];
        assert_eq!(
            (a.name.as_str(), a.git_ref.as_str(), a.private, a.line),
            ("a", "main", false, 6)
        );
        let b = &deps[2];
        assert_eq!(
            (b.repo.as_str(), b.private, b.provider.as_deref(), b.lfs),
            ("org/b", true, Some("github"), Some(true))
        );
        assert_eq!(a.lfs, None);
        assert_eq!(b.target(Path::new("out")), Path::new("out/plugins/b"));
    }

    #[test]
    fn refs_follow_git_check_ref_format() {
        for good in ["main", "feature/x", "v1.2.3", "release-2024.01", "a_b"] {
            assert!(is_ref_name(good), "{good}");
        }
        for bad in [
            "::x", "a~1", "a^", "a?", "a*", "a[b", "a\\b", "@", "x/", "/x", "x//y", ".x", "x/.y",
            "x.", "a@{1}",
        ] {
            assert!(!is_ref_name(bad), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_entries_at_their_line() {
        let err = parse_str("{\"plugins\": [\n{\"name\": \"a\", \"repo\": \"o/a\"},\n{\"name\": \"a\", \"repo\": \"o/b\"}]}")
            .unwrap_err();
        assert!(err.message.contains("used twice"), "{err}");
        assert_eq!(err.location.as_ref().unwrap().line, 3);
        for (name, repo, git_ref, expect) in [
            ("../x", "o/a", "main", "not a plain directory name"),
            ("", "o/a", "main", "empty"),
            (
                "x",
                "https://tok@host/o/a",
                "main",
                "not of the form org/repo",
            ),
            ("x", "a", "main", "not of the form org/repo"),
            ("x", "o/a", "abc1234", "short commit sha"),
            (
                "x",
                "o/a",
                "0123456789ABCDEF0123456789abcdef01234567",
                "uppercase",
            ),
            ("n\\n::warning::x", "o/a", "main", "control characters"),
            ("x", "o/a", "::error::x", "not a valid git ref"),
            ("x", "o/a", "release/", "not a valid git ref"),
            ("x", "o/a", "v1..2", "not a valid git ref"),
            ("x", "o/a", "topic.lock", "not a valid git ref"),
            ("x", "o/a", "a b", "not a valid git ref"),
        ] {
            let text = format!(
                r#"{{"plugins": [{{"name": "{name}", "repo": "{repo}", "ref": "{git_ref}"}}]}}"#
            );
            let err = parse_str(&text).unwrap_err();
            assert!(err.message.contains(expect), "{err}");
            assert!(!err.to_string().contains("tok@"), "{err}");
        }
        let err = parse_str("{\n  \"version\": 2\n}").unwrap_err();
        assert!(err.message.contains("version 2"), "{err}");
        let err = parse_str("{\n  \"plugins\": [\n    {\"name\": \"a\"}\n  ]\n}").unwrap_err();
        assert_eq!(err.location.as_ref().unwrap().line, 3, "{err}");
    }

    #[test]
    fn the_same_name_in_two_categories_is_fine() {
        let deps = parse_str(
            r#"{"plugins": [{"name": "dev", "repo": "o/p"}], "org_templates": [{"name": "dev", "repo": "o/t"}]}"#,
        )
        .unwrap();
        assert_eq!(deps.len(), 2);
    }
}
