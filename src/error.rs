//! The one error type of hoist: what failed, where, why, and what to do.
//!
//! Rendered cargo-style:
//!
//! ```text
//! error: invalid YAML in .gitea/workflows/publish.yml
//!   --> .gitea/workflows/publish.yml:27:1
//! caused by: could not find expected ':'
//! hint: the file has merge conflict markers; resolve them and commit again
//! ```
//!
//! Every error knows its exit code: 1 when a command ran and failed, 2 when
//! its input (usage, config, a file it was given) is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit code of a command that ran and failed, or found problems (`--check`).
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a usage, config or input error.
pub const EXIT_INPUT: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The command ran and failed (exit 1).
    Failed,
    /// Usage, config or input error (exit 2).
    Input,
}

/// A place in an input file, for messages and CI annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: Option<usize>,
}

impl Location {
    pub fn new(file: impl Into<PathBuf>, line: usize, column: Option<usize>) -> Self {
        Location {
            file: file.into(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if let Some(column) = self.column {
            write!(f, ":{column}")?;
        }
        Ok(())
    }
}

/// An error, boxed so that `Result`s stay small on the happy path; its
/// parts are read through `Deref` (`error.message`, `error.location`, …).
#[derive(Debug, Clone)]
pub struct Error(Box<Details>);

#[derive(Debug, Clone)]
pub struct Details {
    pub kind: Kind,
    pub message: String,
    pub location: Option<Location>,
    pub causes: Vec<String>,
    pub hint: Option<String>,
}

impl std::ops::Deref for Error {
    type Target = Details;

    fn deref(&self) -> &Details {
        &self.0
    }
}

impl Error {
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(Kind::Input, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Kind::Failed, message)
    }

    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error(Box::new(Details {
            kind,
            message: message.into(),
            location: None,
            causes: Vec::new(),
            hint: None,
        }))
    }

    pub fn at(mut self, location: Location) -> Self {
        self.0.location = Some(location);
        self
    }

    pub fn caused_by(mut self, cause: impl fmt::Display) -> Self {
        self.0.causes.push(cause.to_string());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Failed => EXIT_FAILED,
            Kind::Input => EXIT_INPUT,
        }
    }

    /// An input error for a file that could not be read.
    pub fn unreadable(what: &str, path: &Path, cause: std::io::Error) -> Self {
        let hint = if cause.kind() == std::io::ErrorKind::NotFound {
            Some(format!("check the path, or pass another {what} file"))
        } else {
            None
        };
        let error = Error::input(format!("cannot read {what} {}", path.display())).caused_by(cause);
        match hint {
            Some(hint) => error.hint(hint),
            None => error,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(location) = &self.location {
            write!(f, "\n  --> {location}")?;
        }
        for cause in &self.causes {
            write!(f, "\ncaused by: {cause}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
