//! GitHub Actions conventions, which Gitea Actions shares: step outputs
//! (`GITHUB_OUTPUT`), the step summary (`GITHUB_STEP_SUMMARY`) and workflow
//! commands such as `::error file=…,line=…::message`. hoist prints workflow
//! commands on stderr, which runners read as well, so that stdout stays the
//! command's data (text or JSON).

use crate::error::{Error, Location, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the CI runner listens; everything is off outside CI.
#[derive(Debug, Clone, Default)]
pub struct Ci {
    /// `GITHUB_ACTIONS=true`: workflow commands are understood.
    pub actions: bool,
    pub output: Option<PathBuf>,
    pub summary: Option<PathBuf>,
}

impl Ci {
    pub fn from_env() -> Ci {
        let path = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Ci {
            actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            output: path("GITHUB_OUTPUT"),
            summary: path("GITHUB_STEP_SUMMARY"),
        }
    }

    /// Appends `name=value` to `GITHUB_OUTPUT`, when set.
    pub fn set_output(&self, name: &str, value: &str) -> Result<()> {
        let Some(file) = &self.output else {
            return Ok(());
        };
        let line = if value.contains('\n') {
            // Multi-line values need a delimiter that the value does not contain.
            let mut delimiter = String::from("HOIST_EOF");
            while value.contains(&delimiter) {
                delimiter.push('_');
            }
            format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
        } else {
            format!("{name}={value}\n")
        };
        append(file, "GITHUB_OUTPUT", &line)
    }

    /// Appends markdown to the step summary, when set.
    pub fn add_summary(&self, markdown: &str) -> Result<()> {
        match &self.summary {
            Some(file) => append(file, "GITHUB_STEP_SUMMARY", markdown),
            None => Ok(()),
        }
    }

    /// The `::error` workflow command for an error, so the runner annotates
    /// the file and line; `None` outside Actions.
    pub fn error_annotation(&self, error: &Error) -> Option<String> {
        let mut message = error.message.clone();
        for cause in &error.causes {
            message.push_str(&format!("\ncaused by: {cause}"));
        }
        if let Some(hint) = &error.hint {
            message.push_str(&format!("\nhint: {hint}"));
        }
        self.annotation("error", error.location.as_ref(), &message)
    }

    /// A workflow command (`::error`, `::warning`) that annotates a place
    /// in a file; `None` outside Actions.
    pub fn annotation(
        &self,
        level: &str,
        location: Option<&Location>,
        message: &str,
    ) -> Option<String> {
        if !self.actions {
            return None;
        }
        let mut properties = String::new();
        if let Some(location) = location {
            properties = format!(
                " file={},line={}",
                escape_property(&location.file.to_string_lossy()),
                location.line
            );
            if let Some(column) = location.column {
                properties.push_str(&format!(",col={column}"));
            }
        }
        Some(format!("::{level}{properties}::{}", escape_data(message)))
    }
}

fn append(file: &Path, variable: &str, text: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| {
            Error::failed(format!("cannot write {variable} ({})", file.display()))
                .caused_by(e)
                .hint(format!("unset {variable} or make the file writable"))
        })
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotates_errors_with_their_place() {
        let ci = Ci {
            actions: true,
            ..Ci::default()
        };
        let error = Error::input("bad, very: bad\n100%")
            .at(Location::new("a,b:c.yml", 3, Some(7)))
            .hint("fix it");
        assert_eq!(
            ci.error_annotation(&error).unwrap(),
            "::error file=a%2Cb%3Ac.yml,line=3,col=7::bad, very: bad%0A100%25%0Ahint: fix it"
        );
        assert_eq!(Ci::default().error_annotation(&error), None);
    }

    #[test]
    fn writes_outputs_and_multiline_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out");
        let ci = Ci {
            output: Some(file.clone()),
            ..Ci::default()
        };
        ci.set_output("run", "true").unwrap();
        ci.set_output("list", "a\nHOIST_EOF\nb").unwrap();
        assert_eq!(
            std::fs::read_to_string(file).unwrap(),
            "run=true\nlist<<HOIST_EOF_\na\nHOIST_EOF\nb\nHOIST_EOF_\n"
        );
    }
}
