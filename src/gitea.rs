//! How Gitea decides whether a push runs a workflow, quirks included.
//!
//! Ported from the sources, not from the documentation:
//!
//! - act's `pkg/workflowpattern`: [`skip`] (for `branches`, `tags`, `paths`)
//!   lets an input through when the last pattern matching it is positive,
//!   like GitHub; [`filter`] (for the `-ignore` forms) ignores an input when
//!   ANY item has `matches == !negated`, so a `!X` item ignores every name
//!   that does NOT match `X`. Both let everything through when the list is
//!   empty, and both skip when there is no input (a push that changed no
//!   file).
//! - Gitea's `matchPushEvent` (`modules/actions/workflows.go`): an event
//!   with no keys matches every push; otherwise every key (an "act") must
//!   match. Branch filters count only for branch pushes, tag filters only
//!   for tag pushes, and when both kinds exist one unmet condition is
//!   excused. A pattern that does not compile leaves its condition unmet; a
//!   key that is not a filter (`branch:`) never matches. A list and its
//!   `-ignore` form may both be given: both must match.
//! - Path filters do not apply to tag pushes since Gitea 1.24.1 (go-gitea
//!   PR 34602); a new branch (`before` all zeros) is decided on the files of
//!   its head commit since 1.20.3 (PR 26290): see [`crate::git`].
//! - The act fork's `jobparser.ParseRawOn`: a scalar under an event key is a
//!   one-item list, so `branches:` with nothing after it is `[""]`; a
//!   mapping or an alias (a `<<:` merge key) under an event key makes the
//!   whole workflow invalid, and Gitea never runs it.

use crate::changes::{ChangedFiles, Decision, PushRef};
use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::pattern::PatternList;
use crate::workflow::{Event, FilterKey};

/// One key of `on.push`, as `matchPushEvent` sees it.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The key as written (`branches`, `paths_ignored`, ...).
    pub key: String,
    pub line: usize,
    pub kind: ConditionKind,
}

#[derive(Debug, Clone)]
pub enum ConditionKind {
    /// A filter list; `Err` holds why a pattern does not compile (Gitea then
    /// leaves the condition unmet).
    Filter(FilterKey, std::result::Result<PatternList, String>),
    /// A key Gitea does not know: never met.
    Unknown,
}

/// The conditions of a workflow's `on.push`, as Gitea reads them.
#[derive(Debug, Clone)]
pub struct PushConditions {
    pub conditions: Vec<Condition>,
    /// Why Gitea's parser rejects the workflow, and the line: it never runs.
    pub rejected: Option<(usize, String)>,
}

impl PushConditions {
    /// Reads the `push` event's keys in the order written.
    pub fn of(push: &Event) -> PushConditions {
        let mut conditions: Vec<Condition> = push
            .filters
            .iter()
            .map(|filter| {
                // `key:` with nothing after it is one empty pattern to Gitea.
                let sources: Vec<&str> = if filter.null {
                    vec![""]
                } else {
                    filter.patterns.iter().map(|p| p.text.as_str()).collect()
                };
                let list = PatternList::with_dialect(&sources, Dialect::Gitea)
                    .map_err(|(_, e)| e.to_string());
                Condition {
                    key: filter.key.as_str().to_string(),
                    line: filter.line,
                    kind: ConditionKind::Filter(filter.key, list),
                }
            })
            .chain(push.other_keys.iter().map(|other| Condition {
                key: other.name.clone(),
                line: other.line,
                kind: ConditionKind::Unknown,
            }))
            .collect();
        conditions.sort_by_key(|c| c.line);
        let rejected = push
            .other_keys
            .iter()
            .filter(|k| k.rejected_by_gitea)
            .map(|k| {
                let what = if k.name == "<<" {
                    "a YAML merge key `<<:` under `on.push`".to_string()
                } else {
                    format!("`on.push.{}` holds a mapping or an alias", k.name)
                };
                (k.line, what)
            })
            .chain(push.filters.iter().filter(|f| f.alias).map(|f| {
                let what = format!("`on.push.{}` is a YAML alias", f.key.as_str());
                (f.line, what)
            }))
            .min_by_key(|(line, _)| *line);
        PushConditions {
            conditions,
            rejected,
        }
    }
}

/// act's `Skip`: true when no input is let through, an input being let
/// through when the last pattern that matches it is positive.
pub fn skip(list: &PatternList, inputs: &[String]) -> bool {
    if list.patterns().is_empty() {
        return false;
    }
    !inputs.iter().any(|input| list.includes(input))
}

/// act's `Filter`: true when every input is ignored (see [`ignored_by`]).
pub fn filter(list: &PatternList, inputs: &[String]) -> bool {
    if list.patterns().is_empty() {
        return false;
    }
    inputs.iter().all(|input| ignored_by(list, input).is_some())
}

/// The first item of an `-ignore` list that ignores `input` under act's
/// `Filter`: a positive item that matches it, or a `!` item that does not.
pub fn ignored_by(list: &PatternList, input: &str) -> Option<usize> {
    let matching: Vec<usize> = list.matching(input).collect();
    list.patterns()
        .iter()
        .enumerate()
        .position(|(index, pattern)| matching.contains(&index) != pattern.is_negated())
}

/// The outcome of one condition.
struct Outcome {
    met: bool,
    /// The condition is a branch filter on a tag push or the reverse.
    not_applicable: bool,
    why: String,
    /// For path conditions: the changed files it lets through.
    files: Option<Vec<String>>,
}

impl Outcome {
    fn new(met: bool, why: String) -> Outcome {
        Outcome {
            met,
            not_applicable: false,
            why,
            files: None,
        }
    }
}

/// Decides a push as Gitea's `matchPushEvent` does.
pub fn decide(
    push: &PushConditions,
    push_ref: Option<&PushRef>,
    changed: &ChangedFiles,
) -> Result<Decision> {
    let decision = |run: bool, why: String| Decision {
        run,
        reason: format!("Gitea: {why}"),
        matched: Vec::new(),
        changed: 0,
        dialect: Dialect::Gitea,
    };
    if let Some((line, why)) = &push.rejected {
        return Ok(decision(
            false,
            format!(
                "{why} (line {line}) makes the workflow invalid to Gitea's parser, so it never runs"
            ),
        ));
    }
    if *changed == ChangedFiles::RefDeleted {
        return Ok(decision(
            false,
            "the push deleted the ref: there is nothing to build".into(),
        ));
    }
    if push.conditions.is_empty() {
        return Ok(decision(true, "the workflow has no filters on push".into()));
    }
    let is_ref_filter = |c: &Condition| {
        matches!(
            c.kind,
            ConditionKind::Filter(
                FilterKey::Branches
                    | FilterKey::BranchesIgnore
                    | FilterKey::Tags
                    | FilterKey::TagsIgnore,
                _
            )
        )
    };
    let push_ref = match push_ref {
        Some(r) => r,
        None if !push.conditions.iter().any(is_ref_filter) => &PushRef::Branch(String::new()),
        None => {
            return Err(Error::input("cannot tell which ref was pushed")
                .hint("pass --ref refs/heads/<branch>, or set GITHUB_REF"));
        }
    };
    let outcomes: Vec<Outcome> = push
        .conditions
        .iter()
        .map(|c| outcome(c, push_ref, changed))
        .collect();
    let kind_of = |key: FilterKey| match key {
        FilterKey::Branches | FilterKey::BranchesIgnore => Some(true),
        FilterKey::Tags | FilterKey::TagsIgnore => Some(false),
        _ => None,
    };
    let kinds: Vec<Option<bool>> = push
        .conditions
        .iter()
        .map(|c| match &c.kind {
            ConditionKind::Filter(key, _) => kind_of(*key),
            ConditionKind::Unknown => None,
        })
        .collect();
    let both_kinds = kinds.contains(&Some(true)) && kinds.contains(&Some(false));
    // Gitea counts met conditions and adds one when both kinds exist; the
    // condition that one excuses is the first that does not apply.
    let excused = if both_kinds {
        outcomes.iter().position(|o| o.not_applicable)
    } else {
        None
    };
    let met = outcomes.iter().filter(|o| o.met).count() + usize::from(both_kinds);
    let run = met == push.conditions.len();
    let mut files: Option<Vec<String>> = None;
    for outcome in &outcomes {
        if let Some(through) = &outcome.files {
            files = Some(match files {
                None => through.clone(),
                Some(so_far) => so_far.into_iter().filter(|f| through.contains(f)).collect(),
            });
        }
    }
    let reasons: Vec<&str> = outcomes
        .iter()
        .enumerate()
        .filter(|&(index, o)| o.met == run && Some(index) != excused)
        .map(|(_, o)| o.why.as_str())
        .collect();
    let why = if reasons.is_empty() {
        // Unmet only through the excused condition's twin: both of a kind
        // that does not apply.
        outcomes
            .iter()
            .filter(|o| !o.met)
            .map(|o| o.why.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        reasons.join("; ")
    };
    let total = match changed {
        ChangedFiles::Known(files) => files.len(),
        _ => 0,
    };
    Ok(Decision {
        matched: if run {
            files.unwrap_or_default()
        } else {
            Vec::new()
        },
        changed: total,
        ..decision(run, why)
    })
}

fn outcome(condition: &Condition, push_ref: &PushRef, changed: &ChangedFiles) -> Outcome {
    let key = &condition.key;
    let ConditionKind::Filter(filter_key, list) = &condition.kind else {
        return Outcome::new(
            false,
            format!(
                "`on.push.{key}` is not a filter Gitea knows, so it never matches and the workflow never runs on push"
            ),
        );
    };
    let (kind, name) = match push_ref {
        PushRef::Branch(name) => ("branch", name.as_str()),
        PushRef::Tag(name) => ("tag", name.as_str()),
    };
    let applies = match filter_key {
        FilterKey::Branches | FilterKey::BranchesIgnore => Some(kind == "branch"),
        FilterKey::Tags | FilterKey::TagsIgnore => Some(kind == "tag"),
        FilterKey::Paths | FilterKey::PathsIgnore => None,
    };
    if applies == Some(false) {
        return Outcome {
            not_applicable: true,
            ..Outcome::new(
                false,
                format!("`{key}` does not apply to {kind} pushes, so it is not met"),
            )
        };
    }
    let list = match list {
        Ok(list) => list,
        Err(e) => {
            return Outcome::new(
                false,
                format!("`{key}` has a pattern that does not compile ({e}), so it is not met"),
            );
        }
    };
    let ignore = filter_key.is_ignore();
    if applies == Some(true) {
        let inputs = [name.to_string()];
        return if !ignore {
            let met = !skip(list, &inputs);
            let verdict = if met { "is" } else { "is not" };
            Outcome::new(
                met,
                format!("{kind} '{name}' {verdict} selected by `{key}`"),
            )
        } else {
            match ignored_by(list, name) {
                None => Outcome::new(true, format!("{kind} '{name}' is not ignored by `{key}`")),
                Some(index) => Outcome::new(
                    false,
                    format!(
                        "{kind} '{name}' is ignored by `{key}`{}",
                        by_pattern(list, index)
                    ),
                ),
            }
        };
    }
    // Path filters.
    if let PushRef::Tag(_) = push_ref {
        return Outcome::new(
            true,
            format!("`{key}` does not apply to tag pushes (Gitea 1.24.1 and later)"),
        );
    }
    let files = match changed {
        ChangedFiles::Known(files) => files,
        ChangedFiles::Unknown(why) => {
            return Outcome::new(
                true,
                format!(
                    "{why}: the changed files cannot be known, so `{key}` counts as met (fail open)"
                ),
            );
        }
        ChangedFiles::RefDeleted => return Outcome::new(false, "the push deleted the ref".into()),
    };
    let total = files.len();
    // act's `Skip` and `Filter` never skip on an empty list, whatever the
    // push changed.
    if list.patterns().is_empty() {
        return Outcome::new(
            true,
            format!("`{key}` is an empty list, which never skips on Gitea"),
        );
    }
    if !ignore {
        let through: Vec<String> = files.iter().filter(|f| list.includes(f)).cloned().collect();
        let met = !skip(list, files);
        let why = match (total, through.len()) {
            (0, _) => "the push changed no files".to_string(),
            (_, 0) => format!("none of the {total} changed files matches `{key}`"),
            (_, n) => format!("{n} of {total} changed files match `{key}`"),
        };
        return Outcome {
            files: Some(through),
            ..Outcome::new(met, why)
        };
    }
    let through: Vec<String> = files
        .iter()
        .filter(|f| ignored_by(list, f).is_none())
        .cloned()
        .collect();
    let met = !filter(list, files);
    let why = match (total, through.len()) {
        (0, _) => "the push changed no files".to_string(),
        (_, 0) => {
            // Name a `!` item that ignored a file, the quirk users trip on.
            let negated = files
                .iter()
                .filter_map(|f| ignored_by(list, f))
                .find(|&i| list.patterns()[i].is_negated());
            format!(
                "all {total} changed files are ignored by `{key}`{}",
                negated.map(|i| by_pattern(list, i)).unwrap_or_default()
            )
        }
        (_, n) => format!("{n} of {total} changed files are not ignored by `{key}`"),
    };
    Outcome {
        files: Some(through),
        ..Outcome::new(met, why)
    }
}

/// ` ('pattern')`, and for a `!` item what Gitea makes of it.
fn by_pattern(list: &PatternList, index: usize) -> String {
    let pattern = &list.patterns()[index];
    if pattern.is_negated() {
        format!(
            " ('{}': Gitea ignores every name a `!` pattern does not match)",
            pattern.source()
        )
    } else {
        format!(" ('{}')", pattern.source())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> PatternList {
        PatternList::with_dialect(patterns, Dialect::Gitea).unwrap()
    }

    fn inputs(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// act's `TestMatchPattern` table (pkg/workflowpattern/workflow_pattern_test.go):
    /// (patterns, inputs, Skip, Filter).
    const ACT_CASES: &[(&[&str], &[&str], bool, bool)] = &[
        (&["*"], &["path/with/slash"], true, false),
        (
            &["path/a", "path/b", "path/c"],
            &["meta", "path/b", "otherfile"],
            false,
            false,
        ),
        (&["path/a", "path/b", "path/c"], &["path/b"], false, true),
        (
            &["path/a", "path/b", "path/c"],
            &["path/c", "path/b"],
            false,
            true,
        ),
        (
            &["path/a", "path/b", "path/c"],
            &["path/c", "path/b", "path/a"],
            false,
            true,
        ),
        (
            &["path/a", "path/b", "path/c"],
            &["path/c", "path/b", "path/d", "path/a"],
            false,
            false,
        ),
        (&[], &[], false, false),
        (&["\\!file"], &["!file"], false, true),
        (
            &["escape\\\\backslash"],
            &["escape\\backslash"],
            false,
            true,
        ),
        (&[".yml"], &["fyml"], true, false),
        (&["feature/*"], &["feature/my-branch"], false, true),
        (&["feature/*"], &["feature/your-branch"], false, true),
        (&["feature/**"], &["feature/beta-a/my-branch"], false, true),
        (&["feature/**"], &["feature/mona/the/octocat"], false, true),
        (
            &["main", "releases/mona-the-octocat"],
            &["main"],
            false,
            true,
        ),
        (
            &["main", "releases/mona-the-octocat"],
            &["releases/mona-the-octocat"],
            false,
            true,
        ),
        (&["*"], &["main"], false, true),
        (&["*"], &["releases"], false, true),
        (&["**"], &["all/the/branches"], false, true),
        (&["**"], &["every/tag"], false, true),
        (&["*feature"], &["mona-feature"], false, true),
        (&["*feature"], &["feature"], false, true),
        (&["*feature"], &["ver-10-feature"], false, true),
        (&["v2*"], &["v2"], false, true),
        (&["v2*"], &["v2.0"], false, true),
        (&["v2*"], &["v2.9"], false, true),
        (&["v[12].[0-9]+.[0-9]+"], &["v1.10.1"], false, true),
        (&["v[12].[0-9]+.[0-9]+"], &["v2.0.0"], false, true),
        (&["*"], &["README.md"], false, true),
        (&["*"], &["server.rb"], false, true),
        (&["*.jsx?"], &["page.js"], false, true),
        (&["*.jsx?"], &["page.jsx"], false, true),
        (&["**"], &["all/the/files.md"], false, true),
        (&["*.js"], &["app.js"], false, true),
        (&["*.js"], &["index.js"], false, true),
        (&["**.js"], &["index.js"], false, true),
        (&["**.js"], &["js/index.js"], false, true),
        (&["**.js"], &["src/js/app.js"], false, true),
        (&["docs/*"], &["docs/README.md"], false, true),
        (&["docs/*"], &["docs/file.txt"], false, true),
        (&["docs/**"], &["docs/README.md"], false, true),
        (&["docs/**"], &["docs/mona/octocat.txt"], false, true),
        (&["docs/**/*.md"], &["docs/README.md"], false, true),
        (
            &["docs/**/*.md"],
            &["docs/mona/hello-world.md"],
            false,
            true,
        ),
        (&["docs/**/*.md"], &["docs/a/markdown/file.md"], false, true),
        (&["**/docs/**"], &["docs/hello.md"], false, true),
        (&["**/docs/**"], &["dir/docs/my-file.txt"], false, true),
        (&["**/docs/**"], &["space/docs/plan/space.doc"], false, true),
        (&["**/README.md"], &["README.md"], false, true),
        (&["**/README.md"], &["js/README.md"], false, true),
        (&["**/*src/**"], &["a/src/app.js"], false, true),
        (&["**/*src/**"], &["my-src/code/js/app.js"], false, true),
        (&["**/*-post.md"], &["my-post.md"], false, true),
        (&["**/*-post.md"], &["path/their-post.md"], false, true),
        (&["**/migrate-*.sql"], &["migrate-10909.sql"], false, true),
        (&["**/migrate-*.sql"], &["db/migrate-v1.0.sql"], false, true),
        (
            &["**/migrate-*.sql"],
            &["db/sept/migrate-v1.sql"],
            false,
            true,
        ),
        (&["*.md", "!README.md"], &["hello.md"], false, true),
        (&["*.md", "!README.md"], &["README.md"], true, true),
        (&["*.md", "!README.md"], &["docs/hello.md"], true, true),
        (
            &["*.md", "!README.md", "README*"],
            &["hello.md"],
            false,
            true,
        ),
        (
            &["*.md", "!README.md", "README*"],
            &["README.md"],
            false,
            true,
        ),
        (
            &["*.md", "!README.md", "README*"],
            &["README.doc"],
            false,
            true,
        ),
    ];

    #[test]
    fn agrees_with_acts_own_table() {
        let mut failures = Vec::new();
        for &(patterns, names, want_skip, want_filter) in ACT_CASES {
            let list = list(patterns);
            let names = inputs(names);
            let got = (skip(&list, &names), filter(&list, &names));
            if got != (want_skip, want_filter) {
                failures.push(format!(
                    "{patterns:?} on {names:?}: (Skip, Filter) = {got:?}, act says ({want_skip}, {want_filter})"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_negated_ignore_item_ignores_what_it_does_not_match() {
        let ignore = list(&[".github/**", "!.github/workflows/build.yml"]);
        assert_eq!(ignored_by(&ignore, ".github/workflows/build.yml"), Some(0));
        let ignore = list(&["release/**", "!release/keep"]);
        assert_eq!(ignored_by(&ignore, "main"), Some(1));
        assert_eq!(ignored_by(&ignore, "release/keep"), Some(0));
        assert!(filter(&ignore, &inputs(&["main"])));
    }

    #[test]
    fn no_input_skips_unless_the_list_is_empty() {
        assert!(skip(&list(&["**"]), &[]));
        assert!(filter(&list(&["**"]), &[]));
        assert!(!skip(&list(&[]), &[]));
        assert!(!filter(&list(&[]), &[]));
    }
}
