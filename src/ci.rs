//! GitHub Actions conventions, which Gitea Actions shares: step outputs
//! (`GITHUB_OUTPUT`), the step summary (`GITHUB_STEP_SUMMARY`) and workflow
//! commands such as `::error file=…,line=…::message`. hoist prints workflow
//! commands on stderr, which runners read as well, so that stdout stays the
//! command's data (text or JSON).
//!
//! # Untrusted text never becomes a workflow command
//!
//! A runner reads every line a step prints, on stdout and stderr, for
//! commands. GitHub's runner (`ActionCommand.cs` in actions/runner) takes a
//! line as a command when it starts with `::` after leading white space, or
//! when it holds `##[` anywhere (the legacy form, tried when the first
//! fails); act, which Gitea's runner is built on, when a line starts with
//! `::` or `##[`. File and branch names, manifest entries, registry and
//! engine answers and build logs are written by others, and any of them may
//! hold such a line (`src/a<newline>::add-mask::…`, a `RUN echo
//! "::stop-commands::x"`). So, under a runner:
//!
//! - hoist's own commands are written only by [`Ci::group`], [`Ci::warn`],
//!   [`Ci::mask`], [`Ci::error`] and friends, their values escaped as the
//!   runner unescapes them;
//! - every other line hoist writes passes [`defuse`], which escapes a
//!   leading `::` and every `##[`, so no line can be read as a command
//!   whatever text ends up in it;
//! - passages hoist relays whole (build logs, a smoke container's log, an
//!   error's causes) are shown verbatim between `::stop-commands::<token>`
//!   and `::<token>::`, with a token drawn afresh for each passage that
//!   the text inside cannot know ([`Ci::relay`]).
//!
//! Where hoist formats a name it did not choose, [`quote`] and [`one_line`]
//! keep it on its line, and [`markdown`] keeps it from breaking a table or
//! adding HTML to the step summary.

use crate::error::{Error, Location, Result};
use std::borrow::Cow;
use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the CI runner listens; everything is off outside CI.
#[derive(Debug, Clone, Default)]
pub struct Ci {
    /// `GITHUB_ACTIONS=true`: workflow commands are understood. Gitea's
    /// runner sets it too.
    pub actions: bool,
    pub output: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    /// The values [`Ci::mask`] already masked, shared by every clone.
    masked: Arc<Mutex<Masked>>,
}

/// What was masked, as hashes under this process's random keys, so that
/// the set never holds a secret.
#[derive(Debug, Default)]
struct Masked {
    keys: RandomState,
    hashes: HashSet<u64>,
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
            masked: Arc::default(),
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

    /// Appends markdown to the step summary, when set. Text that hoist did
    /// not write goes through [`markdown`] first.
    pub fn add_summary(&self, markdown: &str) -> Result<()> {
        match &self.summary {
            Some(file) => append(file, "GITHUB_STEP_SUMMARY", markdown),
            None => Ok(()),
        }
    }

    /// Writes a command's data (text or JSON) to stdout, each line
    /// [`defuse`]d under a runner. A closed pipe (`hoist changes | head -1`)
    /// is not an error: the reader took what it wanted.
    pub fn out(&self, text: &str) -> Result<()> {
        let text = self.guard(text);
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(Error::failed("cannot write to stdout").caused_by(e))
            }
            _ => Ok(()),
        }
    }

    /// Writes hoist's own text to stderr, as one or more lines, each
    /// [`defuse`]d under a runner.
    pub fn say(&self, text: &str) {
        let mut text = self.guard(text).into_owned();
        text.push('\n');
        write_err(&text);
    }

    /// A warning: the `::warning::` command under a runner (which shows it
    /// on the run's page), else a `warning:` line.
    pub fn warn(&self, text: &str) {
        if self.actions {
            self.annotate("warning", None, text);
        } else {
            self.say(&format!("warning: {text}"));
        }
    }

    /// Prints the [`Ci::annotation`] command under a runner; nothing
    /// elsewhere.
    pub fn annotate(&self, level: &str, location: Option<&Location>, message: &str) {
        if let Some(command) = self.annotation(level, location, message) {
            write_err(&format!("{command}\n"));
        }
    }

    /// Opens a folded group of log lines under a runner; nothing elsewhere.
    pub fn group(&self, title: &str) {
        if self.actions {
            write_err(&format!("::group::{}\n", escape_data(title)));
        }
    }

    /// Closes the group [`Ci::group`] opened.
    pub fn end_group(&self) {
        if self.actions {
            write_err("::endgroup::\n");
        }
    }

    /// Asks the runner to mask a secret in everything printed after this,
    /// once per value however often it is asked. Each line of a multi-line
    /// value is masked on its own: the runner masks line by line.
    pub fn mask(&self, secret: &str) {
        write_err(&self.mask_commands(secret));
    }

    /// The `::add-mask::` lines [`Ci::mask`] prints for `secret`: none
    /// outside a runner or for a value masked before.
    fn mask_commands(&self, secret: &str) -> String {
        let mut commands = String::new();
        if !self.actions {
            return commands;
        }
        let mut masked = self.masked.lock().unwrap_or_else(|e| e.into_inner());
        for line in secret.lines().filter(|l| !l.trim().is_empty()) {
            let hash = masked.keys.hash_one(line);
            if masked.hashes.insert(hash) {
                commands.push_str(&format!("::add-mask::{}\n", escape_data(line)));
            }
        }
        commands
    }

    /// Relays lines hoist did not write (a build log, a container's log) to
    /// stderr as they are; under a runner between `::stop-commands::` and
    /// its resume line, so that none of them is read as a command.
    pub fn relay<'a>(&self, lines: impl IntoIterator<Item = &'a str>) {
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        write_err(&self.relayed(&text));
    }

    /// `text` (whole lines) wrapped for [`Ci::relay`]; unchanged outside a
    /// runner.
    pub fn relayed(&self, text: &str) -> String {
        if !self.actions || text.is_empty() {
            return text.to_string();
        }
        let token = stop_token();
        format!("::stop-commands::{token}\n{text}::{token}::\n")
    }

    /// Reports an error that ends the command: its text (whose causes often
    /// quote an engine, a registry or a build log) relayed as it is, then
    /// under a runner the `::error` annotation that points at its file.
    pub fn error(&self, error: &Error) {
        let mut text = self.relayed(&format!("{error}\n"));
        if let Some(annotation) = self.error_annotation(error) {
            text.push_str(&annotation);
            text.push('\n');
        }
        write_err(&text);
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
    /// in a file; `None` outside Actions. The message and the file name are
    /// escaped as the runner unescapes them, so the command is one line
    /// whatever they hold.
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

    /// Every line of `text` [`defuse`]d under a runner. A line ends at
    /// `\n` or at a bare `\r`: the runner reads a step's output with .NET's
    /// `ReadLine`, which ends a line at either.
    fn guard<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.actions {
            return Cow::Borrowed(text);
        }
        let ends = |c: char| c == '\n' || c == '\r';
        if !text
            .split(ends)
            .any(|line| matches!(defuse(line), Cow::Owned(_)))
        {
            return Cow::Borrowed(text);
        }
        let mut guarded = String::with_capacity(text.len() + 8);
        let mut rest = text;
        while let Some(end) = rest.find(ends) {
            guarded.push_str(&defuse(&rest[..end]));
            guarded.push_str(&rest[end..end + 1]);
            rest = &rest[end + 1..];
        }
        guarded.push_str(&defuse(rest));
        Cow::Owned(guarded)
    }
}

/// One line of text made safe to print under a runner: a `::` that starts
/// it (after white space, as GitHub's runner trims) becomes `\::`, and
/// every `##[` becomes `##\[`. Anything else is left as it is, so a line
/// that could not be a command comes back borrowed.
pub fn defuse(line: &str) -> Cow<'_, str> {
    let trimmed = line.trim_start();
    let leading = trimmed.starts_with("::");
    if !leading && !line.contains("##[") {
        return Cow::Borrowed(line);
    }
    let indent = &line[..line.len() - trimmed.len()];
    let rest = if leading {
        format!("\\{trimmed}")
    } else {
        trimmed.to_string()
    };
    Cow::Owned(format!("{indent}{}", rest.replace("##[", "##\\[")))
}

/// A name hoist did not choose (a file, a branch, a manifest entry), as
/// `git` prints paths: unchanged when it is plain, else in double quotes
/// with C escapes (`\n`, `\t`, `\"`, `\\`, and `\ooo` octal for other
/// control bytes), so it stays on its line. Non-ASCII characters are kept
/// (git's `core.quotePath=false`); `hoist changes --files-from` reads the
/// quoted form back.
pub fn quote(name: &str) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() || c == '"' || c == '\\';
    if !name.chars().any(needs) {
        return Cow::Borrowed(name);
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{b}' => quoted.push_str("\\v"),
            '\u{c}' => quoted.push_str("\\f"),
            c if c.is_control() => {
                let mut bytes = [0u8; 4];
                for byte in c.encode_utf8(&mut bytes).bytes() {
                    quoted.push_str(&format!("\\{byte:03o}"));
                }
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    Cow::Owned(quoted)
}

/// Text hoist did not write (an engine's or a registry's message) kept on
/// one line: control characters become escapes (`\n`, `\r`, `\t`,
/// `\u{1b}`); everything else is left as it is.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => line.push_str(&c.escape_unicode().to_string()),
            c => line.push(c),
        }
    }
    Cow::Owned(line)
}

/// Text hoist did not write, for a cell or a line of the step summary:
/// every ASCII character but letters, digits, space and `/ . - , = @`
/// becomes an HTML character reference, so it can neither end a table
/// cell (`|`), nor open a tag or a link, nor start emphasis or a code span;
/// control characters are shown as escapes ([`one_line`]). GitHub's and
/// Gitea's markdown both decode references in text and inside `<code>`.
pub fn markdown(text: &str) -> String {
    let mut cell = String::with_capacity(text.len());
    for c in one_line(text).chars() {
        match c {
            c if c.is_ascii_alphanumeric() || " /.-,=@".contains(c) => cell.push(c),
            c if c.is_ascii() => cell.push_str(&format!("&#{};", u32::from(c))),
            c => cell.push(c),
        }
    }
    cell
}

/// [`markdown`] text in a `<code>` span (a backtick span would show the
/// character references as they are written).
pub fn markdown_code(text: &str) -> String {
    format!("<code>{}</code>", markdown(text))
}

/// A JSON document made safe to print under a runner without changing its
/// data: `##[` can stand only inside a string there, and becomes `##\u005b`,
/// which decodes to the same text. (A JSON line never starts with `::`.)
pub fn json_safe(json: String) -> String {
    if json.contains("##[") {
        json.replace("##[", "##\\u005b")
    } else {
        json
    }
}

/// A `::stop-commands::` token: 128 bits from the standard library's
/// per-process random hash keys (seeded by the operating system), so that a
/// relayed text cannot name it in advance and resume commands.
fn stop_token() -> String {
    let state = RandomState::new();
    let high = state.hash_one(0u8);
    let low = state.hash_one(std::time::SystemTime::now());
    format!("hoist-{high:016x}{low:016x}")
}

/// Writes to stderr; a failed write (a closed stderr) has nowhere to be
/// reported.
fn write_err(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
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

/// Escapes a command's data as the runner unescapes it (`%25`, `%0D`,
/// `%0A`; actions/runner `ActionCommand.UnescapeData`).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a command's property value (also `:` and `,`).
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> Ci {
        Ci {
            actions: true,
            ..Ci::default()
        }
    }

    #[test]
    fn annotates_errors_with_their_place() {
        let error = Error::input("bad, very: bad\n100%")
            .at(Location::new("a,b:c.yml", 3, Some(7)))
            .hint("fix it");
        assert_eq!(
            runner().error_annotation(&error).unwrap(),
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

    #[test]
    fn masks_each_value_once_line_by_line() {
        let ci = runner();
        assert_eq!(ci.mask_commands("s3cret"), "::add-mask::s3cret\n");
        assert_eq!(
            ci.clone().mask_commands("s3cret"),
            "",
            "clones share what was masked"
        );
        assert_eq!(
            ci.mask_commands("line one\ns3cret\n100%"),
            "::add-mask::line one\n::add-mask::100%25\n"
        );
        assert_eq!(Ci::default().mask_commands("x"), "");
    }

    #[test]
    fn defuses_what_a_runner_would_read_as_a_command() {
        assert_eq!(
            defuse("::warning title=x::hello"),
            "\\::warning title=x::hello"
        );
        assert_eq!(defuse("  \t::add-mask::x"), "  \t\\::add-mask::x");
        assert_eq!(defuse("\u{a0}::error::x"), "\u{a0}\\::error::x");
        assert_eq!(
            defuse("ok ##[add-mask]x ##[error]y"),
            "ok ##\\[add-mask]x ##\\[error]y"
        );
        assert!(matches!(defuse("run: a::b, [::1]:5000"), Cow::Borrowed(_)));
        assert!(matches!(defuse(": :x"), Cow::Borrowed(_)));
        let text = "a\n ::x::y\nb";
        assert_eq!(runner().guard(text), "a\n \\::x::y\nb");
        assert_eq!(Ci::default().guard(text), text);
        // A bare `\r` ends a line for the runner too.
        assert_eq!(
            runner().guard("x\r::add-mask::y\r\n::z::w"),
            "x\r\\::add-mask::y\r\n\\::z::w"
        );
    }

    #[test]
    fn relays_between_stop_commands_with_a_fresh_token() {
        let ci = runner();
        let relayed = ci.relayed("::add-mask::x\n##[stop-commands]y\n");
        let lines: Vec<&str> = relayed.lines().collect();
        let token = lines[0].strip_prefix("::stop-commands::").unwrap();
        assert!(token.len() >= 32, "{token}");
        assert_eq!(lines[1..3], ["::add-mask::x", "##[stop-commands]y"]);
        assert_eq!(lines[3], format!("::{token}::"));
        assert_ne!(
            ci.relayed("a\n"),
            ci.relayed("a\n"),
            "one token per passage"
        );
        assert_eq!(Ci::default().relayed("::x::y\n"), "::x::y\n");
    }

    #[test]
    fn quotes_names_as_git_does() {
        assert_eq!(quote("src/main.go"), "src/main.go");
        assert_eq!(quote("i18n/résumé.json"), "i18n/résumé.json");
        assert_eq!(
            quote("src/a\n::warning title=x::hello"),
            "\"src/a\\n::warning title=x::hello\""
        );
        assert_eq!(quote("a\"b\\c\td\u{1b}"), "\"a\\\"b\\\\c\\td\\033\"");
    }

    #[test]
    fn keeps_messages_on_one_line() {
        assert_eq!(
            one_line("denied\n::add-mask::x\r"),
            "denied\\n::add-mask::x\\r"
        );
        assert_eq!(one_line("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert!(matches!(one_line("plain: text"), Cow::Borrowed(_)));
    }

    #[test]
    fn markdown_cells_cannot_break_a_table_or_add_html() {
        assert_eq!(
            markdown("workspace-server/main.go"),
            "workspace-server/main.go"
        );
        let cell = markdown("a|b<img src=x onerror=y>`c`*d*\n");
        for forbidden in ['|', '<', '>', '`', '*', '\n'] {
            assert!(!cell.contains(forbidden), "{cell}");
        }
        assert_eq!(markdown("a|b"), "a&#124;b");
        assert_eq!(markdown("x\ny"), "x&#92;ny");
    }

    #[test]
    fn json_keeps_its_data_and_loses_legacy_commands() {
        let json = serde_json::to_string(&["##[add-mask]x"]).unwrap();
        let safe = json_safe(json);
        assert!(!safe.contains("##["));
        let back: Vec<String> = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, ["##[add-mask]x"]);
    }
}
