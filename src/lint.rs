//! `hoist changes --check`: filters that cannot do what their author meant.
//!
//! - a path pattern that matches no file tracked at HEAD (the reference
//!   pipeline once filtered on a renamed file, so it never fired);
//! - a `paths` list with only `!` patterns (it matches nothing);
//! - a `!` pattern in `paths-ignore` (it reads as "do not ignore" but is
//!   easy to get backwards; list what to ignore instead);
//! - a list next to its `-ignore` form on one event (GitHub rejects it);
//! - a pattern that does not compile.
//!
//! Every event's filters are checked, not only push's: `pull_request`
//! filters rot the same way.

use crate::changes;
use crate::pattern::PatternList;
use crate::workflow::{Filter, FilterKey, Workflow};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub line: usize,
    /// `on.<event>.<key>` of the filter.
    pub filter: String,
    pub pattern: Option<String>,
    pub message: String,
}

pub fn lint(workflow: &Workflow, tracked: &[String]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for event in &workflow.events {
        let mut finding = |filter: &Filter, pattern: Option<&str>, line: usize, message: String| {
            findings.push(Finding {
                line,
                filter: format!("on.{}.{}", event.name, filter.key.as_str()),
                pattern: pattern.map(str::to_string),
                message,
            });
        };
        for (include, ignore) in [
            (FilterKey::Branches, FilterKey::BranchesIgnore),
            (FilterKey::Tags, FilterKey::TagsIgnore),
            (FilterKey::Paths, FilterKey::PathsIgnore),
        ] {
            if let (Some(_), Some(second)) = (event.filter(include), event.filter(ignore)) {
                finding(
                    second,
                    None,
                    second.line,
                    format!(
                        "`{}` and `{}` on one event: GitHub rejects the workflow",
                        include.as_str(),
                        ignore.as_str()
                    ),
                );
            }
        }
        for filter in &event.filters {
            let list = match changes::compile(workflow, filter) {
                Ok(list) => list,
                Err(e) => {
                    let line = e.location.as_ref().map_or(filter.line, |l| l.line);
                    finding(filter, None, line, e.causes.join("; "));
                    continue;
                }
            };
            let is_path = matches!(filter.key, FilterKey::Paths | FilterKey::PathsIgnore);
            if filter.key == FilterKey::Paths
                && !filter.patterns.is_empty()
                && filter.patterns.iter().all(|p| p.text.starts_with('!'))
            {
                finding(
                    filter,
                    None,
                    filter.line,
                    "`paths` has only `!` patterns, so it matches no file and the workflow never runs on push; add a positive pattern first".into(),
                );
            }
            if filter.key == FilterKey::PathsIgnore {
                for p in filter.patterns.iter().filter(|p| p.text.starts_with('!')) {
                    finding(
                        filter,
                        Some(&p.text),
                        p.line,
                        "`!` in `paths-ignore` re-includes files, which is easy to get backwards; use `paths` with `!` patterns instead".into(),
                    );
                }
            }
            if is_path {
                for (p, hits) in filter.patterns.iter().zip(hit_counts(&list, tracked)) {
                    if hits == 0 {
                        finding(
                            filter,
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
