//! `hoist changes --check`: filters that cannot do what their author meant.
//!
//! - a path pattern that matches no file tracked at HEAD (the reference
//!   pipeline once filtered on a renamed file, so it never fired);
//! - a `branches`, `tags` or `paths` list with only `!` patterns (it
//!   matches nothing);
//! - a `!` pattern in an `-ignore` list: GitHub reads it as "do not ignore",
//!   Gitea as "ignore every name this does not match" (the finding names a
//!   push on which the two decide differently);
//! - any other filter on which GitHub and Gitea decide differently, with a
//!   push that shows it;
//! - a key under `on.push` that is not a filter (`branch:`,
//!   `paths_ignored:`): GitHub ignores it and runs every push, Gitea never
//!   matches it;
//! - a YAML merge key (`<<:`) or alias under an event: GitHub does not
//!   support merge keys, and Gitea rejects the whole workflow;
//! - a filter given as null (`branches:` with nothing after it), and an
//!   empty pattern `''`;
//! - a list next to its `-ignore` form on one event (GitHub rejects it);
//! - a pattern that does not compile.
//!
//! Every event's filters are checked, not only push's: `pull_request`
//! filters rot the same way.

use crate::changes;
use crate::dialect::Dialect;
use crate::gitea;
use crate::pattern::PatternList;
use crate::workflow::{Event, Filter, FilterKey, Workflow};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub line: usize,
    /// `on.<event>.<key>` of the filter.
    pub filter: String,
    pub pattern: Option<String>,
    pub message: String,
}

/// The filter keys of `on.push`, for the suggestion of a misspelt one.
const PUSH_KEYS: [&str; 6] = [
    "branches",
    "branches-ignore",
    "tags",
    "tags-ignore",
    "paths",
    "paths-ignore",
];

pub fn lint(workflow: &Workflow, tracked: &[String]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for event in &workflow.events {
        let mut finding = |key: &str, pattern: Option<&str>, line: usize, message: String| {
            findings.push(Finding {
                line,
                filter: format!("on.{}.{key}", event.name),
                pattern: pattern.map(str::to_string),
                message,
            });
        };
        for other in &event.other_keys {
            if other.name == "<<" {
                finding(
                    "<<",
                    None,
                    other.line,
                    format!(
                        "a YAML merge key (`<<:`) in `on.{}`: GitHub does not support merge keys, and Gitea rejects the whole workflow, so it never runs; write the filters out",
                        event.name
                    ),
                );
            } else if event.name == "push" {
                let advice = suggestion(&other.name)
                    .map(|key| format!("; did you mean `{key}`?"))
                    .unwrap_or_else(|| format!("; the filters are {}", PUSH_KEYS.join(", ")));
                let gitea = if other.rejected_by_gitea {
                    "Gitea rejects the whole workflow for its value"
                } else {
                    "Gitea never matches it, so the workflow never runs on push"
                };
                finding(
                    &other.name,
                    None,
                    other.line,
                    format!(
                        "`{}` is not a filter of `on.push`: GitHub ignores it and runs every push, {gitea}{advice}",
                        other.name
                    ),
                );
            }
        }
        for (include, ignore) in [
            (FilterKey::Branches, FilterKey::BranchesIgnore),
            (FilterKey::Tags, FilterKey::TagsIgnore),
            (FilterKey::Paths, FilterKey::PathsIgnore),
        ] {
            if let (Some(_), Some(second)) = (event.filter(include), event.filter(ignore)) {
                finding(
                    ignore.as_str(),
                    None,
                    second.line,
                    format!(
                        "`{}` and `{}` on one event: GitHub rejects the workflow (Gitea requires both to match)",
                        include.as_str(),
                        ignore.as_str()
                    ),
                );
            }
        }
        for filter in &event.filters {
            let key = filter.key.as_str();
            let noun = noun(filter.key);
            if filter.null {
                finding(
                    key,
                    None,
                    filter.line,
                    format!(
                        "`{key}:` has nothing after it (null): Gitea reads one empty pattern, which matches no {noun}, and GitHub no pattern; list the patterns, or remove the key"
                    ),
                );
            }
            if filter.alias {
                finding(
                    key,
                    None,
                    filter.line,
                    "the value is a YAML alias: Gitea rejects the whole workflow, so it never runs; write the patterns out".into(),
                );
            }
            for p in filter.patterns.iter().filter(|p| p.text.is_empty()) {
                finding(
                    key,
                    Some(""),
                    p.line,
                    format!(
                        "an empty pattern matches no {noun}: GitHub rejects it and Gitea matches only an empty name; remove it"
                    ),
                );
            }
            // The empty patterns are reported above; the rest is checked
            // without them.
            let written = Filter {
                patterns: filter
                    .patterns
                    .iter()
                    .filter(|p| !p.text.is_empty())
                    .cloned()
                    .collect(),
                ..filter.clone()
            };
            let list = match changes::compile(workflow, &written) {
                Ok(list) => list,
                Err(e) => {
                    let line = e.location.as_ref().map_or(filter.line, |l| l.line);
                    finding(key, None, line, e.causes.join("; "));
                    continue;
                }
            };
            if !filter.key.is_ignore()
                && !written.patterns.is_empty()
                && written.patterns.iter().all(|p| p.text.starts_with('!'))
            {
                finding(
                    key,
                    None,
                    filter.line,
                    format!(
                        "`{key}` has only `!` patterns, so it matches no {noun}: no {noun} triggers the workflow on `{}`; add a positive pattern first",
                        event.name
                    ),
                );
            }
            let has_empty = written.patterns.len() < filter.patterns.len();
            let witness = (!has_empty)
                .then(|| differs(event, &written, tracked))
                .flatten();
            let negated: Vec<_> = written
                .patterns
                .iter()
                .filter(|p| filter.key.is_ignore() && p.text.starts_with('!'))
                .collect();
            for p in &negated {
                finding(
                    key,
                    Some(&p.text),
                    p.line,
                    format!(
                        "`!` in `{key}` re-includes on GitHub, but on Gitea ignores every {noun} it does not match{}; list what to ignore instead, or use `{}` with `!` patterns",
                        witness
                            .as_deref()
                            .map(|w| format!(" ({w})"))
                            .unwrap_or_default(),
                        key.trim_end_matches("-ignore")
                    ),
                );
            }
            if negated.is_empty()
                && let Some(witness) = witness
            {
                finding(
                    key,
                    None,
                    filter.line,
                    format!("GitHub and Gitea decide this filter differently: {witness}"),
                );
            }
            if matches!(filter.key, FilterKey::Paths | FilterKey::PathsIgnore) {
                for (p, hits) in written.patterns.iter().zip(hit_counts(&list, tracked)) {
                    if hits == 0 {
                        finding(
                            key,
                            Some(&p.text),
                            p.line,
                            "matches no file tracked at HEAD (renamed or deleted?)".into(),
                        );
                    }
                }
            }
        }
    }
    findings.sort_by_key(|f| f.line);
    findings
}

/// The filter key a misspelt one most likely meant: `paths_ignored` →
/// `paths-ignore`, `branch` → `branches`.
fn suggestion(written: &str) -> Option<&'static str> {
    let normal = written.to_ascii_lowercase().replace('_', "-");
    if normal.len() < 3 {
        return None;
    }
    // The longest key the name extends, else the shortest that extends it.
    let extended = PUSH_KEYS
        .into_iter()
        .filter(|key| normal.starts_with(key))
        .max_by_key(|key| key.len());
    extended.or_else(|| {
        PUSH_KEYS
            .into_iter()
            .filter(|key| key.starts_with(normal.as_str()))
            .min_by_key(|key| key.len())
    })
}

fn noun(key: FilterKey) -> &'static str {
    match key {
        FilterKey::Branches | FilterKey::BranchesIgnore => "branch",
        FilterKey::Tags | FilterKey::TagsIgnore => "tag",
        FilterKey::Paths | FilterKey::PathsIgnore => "file",
    }
}

/// A push on which GitHub and Gitea decide `filter` differently, in words
/// ("for a push to branch `main`: GitHub runs, Gitea skips"), or `None`.
///
/// The candidates are names the patterns themselves spell out (made
/// concrete), `main` for branches, and the tracked files for paths; each is
/// decided by this one filter under both dialects.
fn differs(event: &Event, filter: &Filter, tracked: &[String]) -> Option<String> {
    let sources: Vec<&str> = filter.patterns.iter().map(|p| p.text.as_str()).collect();
    let github = PatternList::new(&sources).ok()?;
    let gitea_sources = if filter.null { vec![""] } else { sources };
    let gitea = PatternList::with_dialect(&gitea_sources, Dialect::Gitea).ok()?;
    let ignore = filter.key.is_ignore();
    let github_passes = |name: &str| github.includes(name) != ignore;
    let gitea_passes = |name: &str| {
        if ignore {
            gitea::ignored_by(&gitea, name).is_none()
        } else {
            !gitea::skip(&gitea, &[name.to_string()])
        }
    };
    let is_path = matches!(filter.key, FilterKey::Paths | FilterKey::PathsIgnore);
    let mut candidates: Vec<String> = Vec::new();
    if matches!(filter.key, FilterKey::Branches | FilterKey::BranchesIgnore) {
        candidates.push("main".into());
    }
    // `!` patterns first: they are where the dialects part.
    let mut own: Vec<&str> = filter.patterns.iter().map(|p| p.text.as_str()).collect();
    own.sort_by_key(|p| !p.starts_with('!'));
    candidates.extend(own.into_iter().map(concrete));
    if is_path {
        candidates.extend(tracked.iter().cloned());
    } else {
        let siblings = event
            .filters
            .iter()
            .filter(|f| !matches!(f.key, FilterKey::Paths | FilterKey::PathsIgnore));
        candidates.extend(siblings.flat_map(|f| f.patterns.iter().map(|p| concrete(&p.text))));
        candidates.push("v1.0.0".into());
    }
    let name = candidates
        .iter()
        .find(|name| github_passes(name) != gitea_passes(name))?;
    // A pull request's branch filters read its base branch.
    let push = match (event.name.as_str(), filter.key) {
        ("push", FilterKey::Branches | FilterKey::BranchesIgnore) => {
            format!("a push to branch `{name}`")
        }
        ("push", FilterKey::Tags | FilterKey::TagsIgnore) => format!("a push of tag `{name}`"),
        ("push", _) => format!("a push changing only `{name}`"),
        (
            "pull_request" | "pull_request_target",
            FilterKey::Branches | FilterKey::BranchesIgnore,
        ) => format!("a pull request into branch `{name}`"),
        ("pull_request" | "pull_request_target", _) => {
            format!("a pull request changing only `{name}`")
        }
        (other, FilterKey::Paths | FilterKey::PathsIgnore) => {
            format!("a `{other}` event changing only `{name}`")
        }
        (other, _) => format!("a `{other}` event for `{name}`"),
    };
    let verdict = |passes: bool| if passes { "runs" } else { "skips" };
    Some(format!(
        "for {push}, GitHub {} and Gitea {}",
        verdict(github_passes(name)),
        verdict(gitea_passes(name))
    ))
}

/// A name the pattern matches, spelt out: wildcards become `x` (`**/`
/// nothing), a class its first character, `?` and `+` keep the character
/// once, `\` escapes; a leading `!` is dropped.
fn concrete(pattern: &str) -> String {
    let body = pattern.strip_prefix('!').unwrap_or(pattern);
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                } else {
                    out.push('x');
                }
            }
            '*' => out.push('x'),
            '?' | '+' if !out.is_empty() => {}
            '[' => {
                let class: String = chars.by_ref().take_while(|&c| c != ']').collect();
                out.extend(class.chars().next());
            }
            _ => out.push(c),
        }
    }
    out
}

/// For each pattern of a list, `!` or not, how many tracked files it matches.
fn hit_counts(list: &PatternList, tracked: &[String]) -> Vec<usize> {
    let mut hits = vec![0; list.patterns().len()];
    for file in tracked {
        for index in list.matching(file) {
            hits[index] += 1;
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spells_patterns_out() {
        assert_eq!(
            concrete("!.github/workflows/build.yml"),
            ".github/workflows/build.yml"
        );
        assert_eq!(concrete("**/docs/*.md"), "docs/x.md");
        assert_eq!(concrete("v[12].[0-9]+"), "v1.0");
        assert_eq!(concrete("a\\*b?"), "a*b");
        assert_eq!(concrete("release/**"), "release/x");
    }

    #[test]
    fn a_pull_requests_difference_is_worded_for_a_pull_request() {
        let workflow = Workflow::parse(
            std::path::Path::new("w.yml"),
            "on:\n  pull_request:\n    branches-ignore: ['release/**', '!release/keep']\n",
        )
        .unwrap();
        let event = &workflow.events[0];
        let found = differs(event, &event.filters[0], &[]).unwrap();
        assert!(
            found.starts_with("for a pull request into branch `"),
            "{found}"
        );
    }

    #[test]
    fn suggests_the_filter_a_typo_meant() {
        assert_eq!(suggestion("paths_ignored"), Some("paths-ignore"));
        assert_eq!(suggestion("branch"), Some("branches"));
        assert_eq!(suggestion("Tags"), Some("tags"));
        assert_eq!(suggestion("types"), None);
    }
}
