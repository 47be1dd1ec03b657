//! `hoist changes`: does this push select the pipeline?

use crate::changes::{self, ChangedFiles, Decision, Dialect, PushRef, Trigger};
use crate::ci::{self, Ci};
use crate::cli::{ChangesArgs, Format};
use crate::config::{self, Config, Overrides};
use crate::error::{EXIT_FAILED, Error, Location, Result};
use crate::git;
use crate::lint::{self, Finding};
use crate::workflow::Workflow;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How many matched files the text output lists before "and N more".
const LISTED_FILES: usize = 20;

pub fn run(dir: &Path, config_file: Option<&Path>, args: ChangesArgs, ci: &Ci) -> Result<u8> {
    git::local_only();
    let overrides = Overrides {
        workflow: args.workflow.clone(),
        dialect: args.dialect,
        ..Overrides::default()
    };
    let config = Config::load(dir, config_file, overrides, |name| std::env::var(name).ok())?;
    let workflow = Workflow::read(&config.workflow)?;
    if args.check {
        return check(&config, &workflow, args.format, ci);
    }
    let source = PushSource {
        files_from: args.files_from.as_deref(),
        files_from_nul: args.files_from_nul,
        base: args.base.as_deref(),
        head: args.head.as_deref(),
        git_ref: args.git_ref.as_deref(),
        commit: None,
    };
    let decision = decide(&config, &workflow, &source)?;
    match args.format {
        Format::Text => ci.out(&text(&decision))?,
        Format::Json => ci.out(&super::json(&decision))?,
    }
    ci.set_output("run", if decision.run { "true" } else { "false" })?;
    ci.add_summary(&summary(&workflow, &decision))?;
    Ok(0)
}

/// Decides whether the push `source` describes selects the workflow.
pub(super) fn decide(
    config: &Config,
    workflow: &Workflow,
    source: &PushSource,
) -> Result<Decision> {
    let trigger = Trigger::with_dialect(workflow, config.dialect)?;
    let push = Push::resolve(config, source)?;
    changes::decide(&trigger, push.git_ref.as_ref(), &push.changed)
}

/// Where the push comes from: flags, else the CI environment and the push
/// event, else the local repository (HEAD~1..HEAD).
#[derive(Debug, Default)]
pub(super) struct PushSource<'a> {
    pub files_from: Option<&'a Path>,
    /// The `files_from` list is NUL-separated.
    pub files_from_nul: bool,
    pub base: Option<&'a str>,
    pub head: Option<&'a str>,
    pub git_ref: Option<&'a str>,
    /// The commit being published (a full sha): the push event's range
    /// counts only when the event is for it, else the commit is decided
    /// against its parent.
    pub commit: Option<&'a str>,
}

/// The push being decided: its ref and the files it changed.
struct Push {
    git_ref: Option<PushRef>,
    changed: ChangedFiles,
}

/// The fields of a push event payload (`GITHUB_EVENT_PATH`) that matter here.
#[derive(Debug, Default, Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

impl Push {
    fn resolve(config: &Config, args: &PushSource) -> Result<Push> {
        let github_ref = std::env::var("GITHUB_REF").ok().filter(|r| !r.is_empty());
        // The push event is read only when flags leave something to it, so
        // a missing or odd GITHUB_EVENT_PATH cannot fail a run that names
        // its ref and files.
        let needs_event = (args.files_from.is_none() && args.base.is_none())
            || (args.git_ref.is_none() && github_ref.is_none());
        let event = if needs_event { read_event()? } else { None };
        // Git is needed for the changed files unless they are given, and
        // perhaps for the current branch.
        let (changed, repo) = match &args.files_from {
            Some(source) => (
                ChangedFiles::Known(read_file_list(&config.root, source, args.files_from_nul)?),
                None,
            ),
            None => {
                let for_commit =
                    |after: &str| args.commit.is_none_or(|c| c.eq_ignore_ascii_case(after));
                let (base, head) = match (args.base, args.head, &event) {
                    (Some(base), Some(head), _) => (Some(base), head),
                    (
                        _,
                        _,
                        Some(PushEvent {
                            before: Some(before),
                            after: Some(after),
                            ..
                        }),
                    ) if for_commit(after) => (Some(before.as_str()), after.as_str()),
                    _ => (None, args.commit.unwrap_or("HEAD")),
                };
                let repo = git::open(&config.root).map_err(|e| {
                    e.hint("run hoist inside a clone, pass -C <dir>, or give the changed files with --files-from")
                })?;
                if let Some(base) = args.base {
                    git::check_base(&repo, base)?;
                }
                let changed = match base {
                    // A new branch: Gitea decides on its head commit's files.
                    Some(base) if config.dialect == Dialect::Gitea && is_zero_sha(base) => {
                        git::commit_files(&repo, head)?
                    }
                    _ => git::changed_files(&repo, base, head)?,
                };
                (changed, Some(repo))
            }
        };
        let given = args
            .git_ref
            .map(str::to_string)
            .or(github_ref)
            .or_else(|| event.and_then(|e| e.git_ref));
        let git_ref = match given {
            Some(r) => Some(r),
            None => repo
                .or_else(|| git::open(&config.root).ok())
                .and_then(|r| git::current_branch(&r)),
        };
        let git_ref = git_ref.map(|r| PushRef::parse(&r)).transpose()?;
        Ok(Push { git_ref, changed })
    }
}

fn read_event() -> Result<Option<PushEvent>> {
    let Some(path) = std::env::var_os("GITHUB_EVENT_PATH").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = Path::new(&path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::unreadable("push event (GITHUB_EVENT_PATH)", path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::input(format!(
            "the push event {} is not valid JSON",
            path.display()
        ))
        .at(Location::new(path, e.line(), Some(e.column())))
        .caused_by(e)
    })
}

fn is_zero_sha(rev: &str) -> bool {
    !rev.is_empty() && rev.bytes().all(|b| b == b'0')
}

/// Reads changed paths from a file or stdin (`-`), in the forms git prints
/// them (see [`git::parse_name_list`]).
fn read_file_list(root: &Path, source: &Path, nul: bool) -> Result<Vec<String>> {
    let (bytes, name) = if source == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Error::input("cannot read the changed files from stdin").caused_by(e))?;
        (bytes, PathBuf::from("<stdin>"))
    } else {
        let path = config::resolve(root, source);
        let bytes = std::fs::read(&path).map_err(|e| Error::unreadable("file list", &path, e))?;
        (bytes, path)
    };
    git::parse_name_list(&bytes, nul).map_err(|e| {
        let entry = if nul || bytes.contains(&0) {
            "NUL-separated name"
        } else {
            "line"
        };
        Error::input(format!(
            "cannot read changed file {entry} {} of {}",
            e.line,
            name.display()
        ))
        .at(Location::new(&name, e.line, None))
        .caused_by(e.message)
        .hint("give paths as `git diff --name-only` prints them (C-quoted names are fine), or NUL-separated with `-z`")
    })
}

fn text(decision: &Decision) -> String {
    let verdict = if decision.run { "run" } else { "skip" };
    let mut out = format!("{verdict}: {}\n", ci::one_line(&decision.reason));
    for file in decision.matched.iter().take(LISTED_FILES) {
        out.push_str(&format!("  {}\n", ci::quote(file)));
    }
    if decision.matched.len() > LISTED_FILES {
        out.push_str(&format!(
            "  and {} more\n",
            decision.matched.len() - LISTED_FILES
        ));
    }
    out
}

fn summary(workflow: &Workflow, decision: &Decision) -> String {
    let verdict = if decision.run { "**run**" } else { "**skip**" };
    let mut out = format!(
        "### hoist changes\n\n{verdict}: {} ({})\n\n",
        ci::markdown(&decision.reason),
        ci::markdown_code(&workflow.path.display().to_string())
    );
    if !decision.matched.is_empty() {
        out.push_str("| matched files |\n|---|\n");
        for file in decision.matched.iter().take(LISTED_FILES) {
            out.push_str(&format!("| {} |\n", ci::markdown_code(file)));
        }
        if decision.matched.len() > LISTED_FILES {
            out.push_str(&format!(
                "| and {} more |\n",
                decision.matched.len() - LISTED_FILES
            ));
        }
        out.push('\n');
    }
    out
}

fn check(config: &Config, workflow: &Workflow, format: Format, ci: &Ci) -> Result<u8> {
    let repo = git::open(&config.root)?;
    let tracked = git::tracked_files(&repo)?;
    let findings = lint::lint(workflow, &tracked);
    let file = workflow.path.display().to_string();
    let mut out = String::new();
    match format {
        Format::Text => {
            for f in &findings {
                out.push_str(&format!("{}\n", ci::one_line(&finding_line(&file, f))));
            }
            out.push_str(&match findings.len() {
                0 => format!("{file}: no findings\n"),
                1 => format!("{file}: 1 finding\n"),
                count => format!("{file}: {count} findings\n"),
            });
        }
        Format::Json => out.push_str(&super::json(&findings)),
    }
    ci.out(&out)?;
    for f in &findings {
        let location = Location::new(&workflow.path, f.line, None);
        ci.annotate("error", Some(&location), &finding_line(&file, f));
    }
    Ok(if findings.is_empty() { 0 } else { EXIT_FAILED })
}

fn finding_line(file: &str, f: &Finding) -> String {
    match &f.pattern {
        Some(pattern) => format!("{file}:{}: {}: '{pattern}' {}", f.line, f.filter, f.message),
        None => format!("{file}:{}: {}: {}", f.line, f.filter, f.message),
    }
}
