//! Does a push select the pipeline? The `on.push` filters of a workflow
//! against the ref and the files a push changed, with GitHub's semantics:
//!
//! - `branches`/`branches-ignore` apply to branch pushes, `tags`/`tags-ignore`
//!   to tag pushes; defining only one kind means pushes of the other kind
//!   do not trigger the workflow.
//! - `paths`: run when at least one changed file is included (the last
//!   matching pattern decides each file). `paths-ignore`: skip only when
//!   every changed file is ignored. With path filters, a push that changed
//!   no file does not run; path filters do not apply to tag pushes.
//! - Ref filters and path filters must all hold.
//! - A list and its `-ignore` form on one event is an error.
//!
//! That is the [`Dialect::Github`] reading; [`Dialect::Gitea`] decides as
//! Gitea's code does, see [`crate::gitea`]. In the GitHub dialect a key
//! under `on.push` that is not a filter is ignored (GitHub runs every push),
//! and a filter given as null is an empty list.
//!
//! Everything here is pure: the changed files come in as data, see
//! [`crate::git`] for where they come from.

pub use crate::dialect::Dialect;
use crate::error::{Error, Location, Result};
use crate::gitea::{self, PushConditions};
use crate::pattern::PatternList;
use crate::workflow::{Event, Filter, FilterKey, Workflow};
use serde::Serialize;

/// A compiled filter: the names it lets through, or the ones it ignores.
#[derive(Debug, Clone)]
pub enum RefFilter {
    Include(PatternList),
    Ignore(PatternList),
}

impl RefFilter {
    fn selects(&self, name: &str) -> bool {
        match self {
            RefFilter::Include(list) => list.includes(name),
            RefFilter::Ignore(list) => !list.includes(name),
        }
    }

    fn key(&self, kind: &str) -> String {
        match self {
            RefFilter::Include(_) => kind.to_string(),
            RefFilter::Ignore(_) => format!("{kind}-ignore"),
        }
    }
}

/// The compiled `on.push` filters of a workflow.
#[derive(Debug, Clone)]
pub struct PushTrigger {
    pub branches: Option<RefFilter>,
    pub tags: Option<RefFilter>,
    pub paths: Option<RefFilter>,
}

/// Whether and how the workflow is triggered by a push.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Push is not among the workflow's events (listed here); both
    /// dialects skip.
    NotOnPush {
        events: Vec<String>,
        dialect: Dialect,
    },
    /// The push filters, read as GitHub documents them.
    Push(PushTrigger),
    /// The push conditions, read as Gitea's code does.
    Gitea(PushConditions),
}

impl Trigger {
    /// [`Trigger::with_dialect`] in the GitHub dialect.
    pub fn of(workflow: &Workflow) -> Result<Trigger> {
        Trigger::with_dialect(workflow, Dialect::Github)
    }

    /// Compiles the push filters of a workflow. In the GitHub dialect an
    /// invalid pattern or a list given with its `-ignore` form is an input
    /// error at its line; Gitea accepts both (the decision then says what
    /// Gitea makes of them).
    pub fn with_dialect(workflow: &Workflow, dialect: Dialect) -> Result<Trigger> {
        let Some(push) = workflow.event("push") else {
            return Ok(Trigger::NotOnPush {
                events: workflow.events.iter().map(|e| e.name.clone()).collect(),
                dialect,
            });
        };
        if dialect == Dialect::Gitea {
            return Ok(Trigger::Gitea(PushConditions::of(push)));
        }
        let pair = |include, ignore| compile_pair(workflow, push, include, ignore);
        Ok(Trigger::Push(PushTrigger {
            branches: pair(FilterKey::Branches, FilterKey::BranchesIgnore)?,
            tags: pair(FilterKey::Tags, FilterKey::TagsIgnore)?,
            paths: pair(FilterKey::Paths, FilterKey::PathsIgnore)?,
        }))
    }
}

fn compile_pair(
    workflow: &Workflow,
    event: &Event,
    include: FilterKey,
    ignore: FilterKey,
) -> Result<Option<RefFilter>> {
    match (event.filter(include), event.filter(ignore)) {
        (Some(_), Some(second)) => Err(Error::input(format!(
            "{}: `on.{}` has both `{}` and `{}`",
            workflow.path.display(),
            event.name,
            include.as_str(),
            ignore.as_str()
        ))
        .at(Location::new(&workflow.path, second.line, None))
        .hint(format!(
            "GitHub rejects this; keep one of them (a `{}` list can exclude with `!pattern`)",
            include.as_str()
        ))),
        (Some(filter), None) => Ok(Some(RefFilter::Include(compile(workflow, filter)?))),
        (None, Some(filter)) => Ok(Some(RefFilter::Ignore(compile(workflow, filter)?))),
        (None, None) => Ok(None),
    }
}

/// Compiles one filter list; the error points at the bad pattern's line.
pub fn compile(workflow: &Workflow, filter: &Filter) -> Result<PatternList> {
    let sources: Vec<&str> = filter.patterns.iter().map(|p| p.text.as_str()).collect();
    PatternList::new(&sources).map_err(|(index, e)| {
        let line = filter.patterns.get(index).map_or(filter.line, |p| p.line);
        Error::input(format!(
            "{}: invalid pattern in `{}`",
            workflow.path.display(),
            filter.key.as_str()
        ))
        .at(Location::new(&workflow.path, line, None))
        .caused_by(e)
        .hint("see GitHub's filter pattern cheat sheet; quote patterns that start with '*', '[' or '!', and escape special characters with '\\'")
    })
}

/// The ref a push updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushRef {
    Branch(String),
    Tag(String),
}

impl PushRef {
    /// Reads `refs/heads/<name>` or `refs/tags/<name>`; a bare name is a branch.
    pub fn parse(reference: &str) -> Result<PushRef> {
        if let Some(name) = reference.strip_prefix("refs/heads/") {
            Ok(PushRef::Branch(name.to_string()))
        } else if let Some(name) = reference.strip_prefix("refs/tags/") {
            Ok(PushRef::Tag(name.to_string()))
        } else if reference.starts_with("refs/") || reference.is_empty() {
            Err(
                Error::input(format!("'{reference}' is not a branch or tag ref"))
                    .hint("pass --ref refs/heads/<branch> or --ref refs/tags/<tag>"),
            )
        } else {
            Ok(PushRef::Branch(reference.to_string()))
        }
    }

    pub fn name(&self) -> &str {
        match self {
            PushRef::Branch(name) | PushRef::Tag(name) => name,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            PushRef::Branch(_) => "branch",
            PushRef::Tag(_) => "tag",
        }
    }

    /// The filter list that applies to this kind of ref, and the other one.
    fn list(&self) -> &'static str {
        match self {
            PushRef::Branch(_) => "branches",
            PushRef::Tag(_) => "tags",
        }
    }

    fn other_list(&self) -> &'static str {
        match self {
            PushRef::Branch(_) => "tags",
            PushRef::Tag(_) => "branches",
        }
    }
}

/// What changed in a push, or why it cannot be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangedFiles {
    Known(Vec<String>),
    /// The files cannot be known (a new branch, a base missing from a
    /// shallow clone): deciding would be a guess, so the push runs.
    Unknown(String),
    /// The push deleted the ref (its new commit is all zeros).
    RefDeleted,
}

/// The answer of `hoist changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub run: bool,
    pub reason: String,
    /// The changed files that select the push (for `paths-ignore`, the ones
    /// not ignored).
    pub matched: Vec<String>,
    /// How many files the push changed (0 when unknown).
    pub changed: usize,
    /// Whose rules decided.
    pub dialect: Dialect,
}

impl Decision {
    fn new(run: bool, reason: impl Into<String>) -> Self {
        Decision {
            run,
            reason: reason.into(),
            matched: Vec::new(),
            changed: 0,
            dialect: Dialect::Github,
        }
    }
}

/// Decides whether a push of `push_ref` that changed `changed` triggers the
/// workflow. `push_ref` may be unknown only when no ref filter exists.
pub fn decide(
    trigger: &Trigger,
    push_ref: Option<&PushRef>,
    changed: &ChangedFiles,
) -> Result<Decision> {
    let push = match trigger {
        Trigger::NotOnPush { events, dialect } => {
            return Ok(Decision {
                dialect: *dialect,
                ..Decision::new(
                    false,
                    format!(
                        "the workflow is not triggered by push (it runs on: {})",
                        events.join(", ")
                    ),
                )
            });
        }
        Trigger::Push(push) => push,
        Trigger::Gitea(conditions) => return gitea::decide(conditions, push_ref, changed),
    };
    let files = match changed {
        ChangedFiles::RefDeleted => {
            return Ok(Decision::new(
                false,
                "the push deleted the ref: there is nothing to build",
            ));
        }
        ChangedFiles::Unknown(why) => Err(why),
        ChangedFiles::Known(files) => Ok(files),
    };
    let push_ref = match push_ref {
        Some(r) => r,
        None if push.branches.is_none() && push.tags.is_none() => &PushRef::Branch(String::new()),
        None => {
            return Err(Error::input("cannot tell which ref was pushed")
                .hint("pass --ref refs/heads/<branch>, or set GITHUB_REF"));
        }
    };
    let (own, other) = match push_ref {
        PushRef::Branch(_) => (&push.branches, &push.tags),
        PushRef::Tag(_) => (&push.tags, &push.branches),
    };
    let (kind, name) = (push_ref.kind(), push_ref.name());
    match (own, other) {
        (Some(filter), _) if !filter.selects(name) => {
            return Ok(Decision::new(
                false,
                format!(
                    "{kind} '{name}' is not selected by `{}`",
                    filter.key(push_ref.list())
                ),
            ));
        }
        (None, Some(filter)) => {
            let other_list = push_ref.other_list();
            return Ok(Decision::new(
                false,
                format!(
                    "the workflow filters only {other_list} (`{}`), so {kind} pushes do not trigger it",
                    filter.key(other_list)
                ),
            ));
        }
        _ => {}
    }
    let pushed = if name.is_empty() {
        "the push".to_string()
    } else {
        format!("{kind} '{name}'")
    };
    let Some(paths) = &push.paths else {
        return Ok(Decision::new(
            true,
            format!("{pushed} is selected and the workflow has no path filters"),
        ));
    };
    if let PushRef::Tag(_) = push_ref {
        return Ok(Decision::new(
            true,
            format!("{pushed} is selected; path filters do not apply to tag pushes"),
        ));
    }
    let files = match files {
        Err(why) => {
            return Ok(Decision::new(
                true,
                format!("{why}: the changed files cannot be known, so the push runs (fail open)"),
            ));
        }
        Ok(files) => files,
    };
    let matched: Vec<String> = files.iter().filter(|f| paths.selects(f)).cloned().collect();
    let key = paths.key("paths");
    let reason = match (files.len(), matched.len(), paths) {
        (0, _, _) => "the push changed no files".to_string(),
        (total, 0, RefFilter::Include(_)) => {
            format!("none of the {total} changed files matches `{key}`")
        }
        (total, 0, RefFilter::Ignore(_)) => {
            format!("all {total} changed files are ignored by `{key}`")
        }
        (total, n, RefFilter::Include(_)) => format!("{n} of {total} changed files match `{key}`"),
        (total, n, RefFilter::Ignore(_)) => {
            format!("{n} of {total} changed files are not ignored by `{key}`")
        }
    };
    Ok(Decision {
        run: !matched.is_empty(),
        reason,
        matched,
        changed: files.len(),
        dialect: Dialect::Github,
    })
}
