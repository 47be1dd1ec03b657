//! Which platform's rules decide a push: GitHub's documented filter
//! semantics, or Gitea's implementation of them.
//!
//! Gitea does not evaluate `on.push` the way GitHub documents it: it runs
//! nektos/act's `pkg/workflowpattern` (`Skip` for `branches`, `tags` and
//! `paths`, `Filter` for their `-ignore` forms) inside its own
//! `matchPushEvent`, on the `on:` that its act fork's `jobparser` read. The
//! two agree on most workflows and differ on a few (a `!` in an `-ignore`
//! list, a key that is not a filter, a filter given as null, a YAML merge
//! key); see [`crate::gitea`] and the README's table.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The platform whose rules decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// GitHub Actions, as its documentation describes the filters.
    #[default]
    Github,
    /// Gitea Actions, as its code evaluates them (quirks included).
    Gitea,
}

impl Dialect {
    /// The dialect of the runner hoist runs on when nothing names one:
    /// Gitea's runner sets `GITEA_ACTIONS=true` (GitHub's sets only
    /// `GITHUB_ACTIONS`, which Gitea's runner sets too).
    pub fn detect(env: impl Fn(&str) -> Option<String>) -> Dialect {
        match env("GITEA_ACTIONS").as_deref() {
            Some("true") => Dialect::Gitea,
            _ => Dialect::Github,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Github => "github",
            Dialect::Gitea => "gitea",
        }
    }

    /// The platform's name, for sentences.
    pub fn platform(self) -> &'static str {
        match self {
            Dialect::Github => "GitHub",
            Dialect::Gitea => "Gitea",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
