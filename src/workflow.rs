//! Workflow YAML -> the events that trigger it and their filters.
//!
//! Reads the `on:` of a GitHub or Gitea Actions workflow in all its forms
//! (`on: push`, `on: [push, ...]`, a map whose events may be null, a quoted
//! `"on":` key) and keeps the filter lists (`branches`, `tags`, `paths` and
//! their `-ignore` forms) as written, with the line of every pattern, so
//! that errors and lint findings can point at them. Compiling the filters
//! and deciding happen in [`crate::changes`].
//!
//! What the platforms read differently is kept as written rather than
//! normalised away: a filter given as null, a key under an event that is not
//! a filter (a typo such as `branch:`, or a YAML merge key `<<:`), a value
//! that is a YAML alias. [`crate::changes`] and [`crate::lint`] judge them.
//!
//! The YAML parser keeps no positions, so lines are found by scanning the
//! text ([`LineFinder`]); a value it cannot place gets the line of its key.

use crate::error::{Error, Location, Result};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// The filter keys of a `push` or `pull_request` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FilterKey {
    Branches,
    BranchesIgnore,
    Tags,
    TagsIgnore,
    Paths,
    PathsIgnore,
}

impl FilterKey {
    pub const ALL: [FilterKey; 6] = [
        FilterKey::Branches,
        FilterKey::BranchesIgnore,
        FilterKey::Tags,
        FilterKey::TagsIgnore,
        FilterKey::Paths,
        FilterKey::PathsIgnore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FilterKey::Branches => "branches",
            FilterKey::BranchesIgnore => "branches-ignore",
            FilterKey::Tags => "tags",
            FilterKey::TagsIgnore => "tags-ignore",
            FilterKey::Paths => "paths",
            FilterKey::PathsIgnore => "paths-ignore",
        }
    }

    /// True for the `-ignore` forms.
    pub fn is_ignore(self) -> bool {
        matches!(
            self,
            FilterKey::BranchesIgnore | FilterKey::TagsIgnore | FilterKey::PathsIgnore
        )
    }
}

/// A pattern as written in the workflow, with its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternSource {
    pub text: String,
    pub line: usize,
}

/// One filter list of an event, e.g. `paths: [...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub key: FilterKey,
    pub line: usize,
    pub patterns: Vec<PatternSource>,
    /// The key has nothing after it (YAML null): `patterns` is empty, but
    /// Gitea reads it as one empty pattern.
    pub null: bool,
    /// The value is a YAML alias (`paths: *anchor`), which Gitea's parser
    /// rejects.
    pub alias: bool,
}

/// A key under an event that is not one of its filters, e.g. `branch:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherKey {
    pub name: String,
    pub line: usize,
    /// Gitea's parser rejects the whole workflow for this key: a merge key
    /// (`<<:`), a mapping value, or an alias.
    pub rejected_by_gitea: bool,
}

/// An event that triggers the workflow, with the filters it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub line: usize,
    pub filters: Vec<Filter>,
    /// The other keys of its mapping, in the order written.
    pub other_keys: Vec<OtherKey>,
}

impl Event {
    pub fn filter(&self, key: FilterKey) -> Option<&Filter> {
        self.filters.iter().find(|f| f.key == key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    /// The file it was read from, as given (for messages).
    pub path: PathBuf,
    pub events: Vec<Event>,
}

impl Workflow {
    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.name == name)
    }

    /// Reads and parses a workflow file.
    pub fn read(path: &Path) -> Result<Workflow> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let missing = e.kind() == std::io::ErrorKind::NotFound;
            let error = Error::unreadable("workflow", path, e);
            if missing {
                // Most often the default (the reference repository's
                // workflow) in a repository that names its own otherwise.
                error.hint(
                    "name the workflow with --workflow FILE, or with `workflow:` in hoist.yaml \
                     (or HOIST_WORKFLOW); `hoist init` writes a hoist.yaml naming this \
                     repository's workflows",
                )
            } else {
                error
            }
        })?;
        Workflow::parse(path, &text)
    }

    /// Parses workflow text; `path` only names it in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Workflow> {
        let at = |line: usize, column: Option<usize>| Location::new(path, line, column);
        if let Some(line) = conflict_marker(text) {
            return Err(
                Error::input(format!("{} has merge conflict markers", path.display()))
                    .at(at(line, Some(1)))
                    .hint("resolve the merge conflict in the workflow file and commit it again"),
            );
        }
        let root: Value = serde_yaml::from_str(text).map_err(|e| yaml_error(path, text, &e))?;
        let finder = LineFinder::new(text);
        let not_triggered = |why: &str| {
            Error::input(format!("{} has no trigger: {why}", path.display()))
                .hint("a workflow needs an `on:` with at least one event, e.g. `on: push`")
        };
        let on = match &root {
            Value::Mapping(map) => map.get("on"),
            Value::Null => return Err(not_triggered("the file is empty")),
            _ => {
                return Err(Error::input(format!(
                    "{} is not a workflow: its top level is not a mapping",
                    path.display()
                ))
                .at(at(1, None)));
            }
        };
        let on_line = finder.on_line().unwrap_or(1);
        let events = match on {
            None => return Err(not_triggered("it has no `on:` key")),
            Some(Value::Null) => {
                return Err(not_triggered("`on:` is empty").at(at(on_line, None)));
            }
            Some(Value::String(name)) => vec![Event {
                name: name.clone(),
                line: on_line,
                filters: Vec::new(),
                other_keys: Vec::new(),
            }],
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(name) => Ok(Event {
                        name: name.clone(),
                        line: on_line,
                        filters: Vec::new(),
                        other_keys: Vec::new(),
                    }),
                    _ => Err(Error::input(format!(
                        "{}: every event in the `on:` list must be a name",
                        path.display()
                    ))
                    .at(at(on_line, None))),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(name, body)| read_event(path, &finder, on_line, name, body))
                .collect::<Result<Vec<_>>>()?,
            Some(_) => {
                return Err(Error::input(format!(
                    "{}: `on:` must be an event name, a list or a mapping",
                    path.display()
                ))
                .at(at(on_line, None)));
            }
        };
        if events.is_empty() {
            return Err(not_triggered("`on:` lists no event").at(at(on_line, None)));
        }
        Ok(Workflow {
            path: path.to_path_buf(),
            events,
        })
    }
}

fn read_event(
    path: &Path,
    finder: &LineFinder,
    on_line: usize,
    name: &Value,
    body: &Value,
) -> Result<Event> {
    let Value::String(name) = name else {
        return Err(Error::input(format!(
            "{}: an event name under `on:` is not a string",
            path.display()
        ))
        .at(Location::new(path, on_line, None)));
    };
    let line = finder.event_line(name).unwrap_or(on_line);
    let Value::Mapping(body) = body else {
        // `push:` (null) and odd values carry no filters.
        return Ok(Event {
            name: name.clone(),
            line,
            filters: Vec::new(),
            other_keys: Vec::new(),
        });
    };
    let other_keys = body
        .iter()
        .filter_map(|(key, value)| {
            let text = match key {
                Value::String(text) => text.clone(),
                other => serde_yaml::to_string(other).ok()?.trim().to_string(),
            };
            if FilterKey::ALL.iter().any(|k| k.as_str() == text) {
                return None;
            }
            let key_line = finder.key_line(name, &text).unwrap_or(line);
            // Gitea's parser takes a mapping only as `workflow_dispatch.inputs`.
            let mapping = matches!(value, Value::Mapping(_))
                && !matches!(name.as_str(), "workflow_dispatch" | "workflow_call");
            let rejected_by_gitea = text == "<<" || mapping || finder.is_alias(key_line);
            Some(OtherKey {
                name: text,
                line: key_line,
                rejected_by_gitea,
            })
        })
        .collect();
    let mut filters = Vec::new();
    for key in FilterKey::ALL {
        let Some(value) = body.get(key.as_str()) else {
            continue;
        };
        let key_line = finder.key_line(name, key.as_str()).unwrap_or(line);
        let bad = |what: &str| {
            Error::input(format!(
                "{}: `on.{name}.{}` {what}",
                path.display(),
                key.as_str()
            ))
            .at(Location::new(path, key_line, None))
        };
        let items: Vec<&Value> = match value {
            Value::Sequence(items) => items.iter().collect(),
            Value::String(_) => vec![value],
            Value::Null => Vec::new(),
            _ => return Err(bad("must be a list of patterns")),
        };
        let patterns = items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(PatternSource {
                    line: finder
                        .pattern_line(name, key.as_str(), text)
                        .unwrap_or(key_line),
                    text: text.clone(),
                }),
                _ => Err(bad("has a pattern that is not a string")
                    .hint("quote the pattern, e.g. '1.0' or '*.md'")),
            })
            .collect::<Result<Vec<_>>>()?;
        filters.push(Filter {
            key,
            line: key_line,
            patterns,
            null: value.is_null(),
            alias: finder.is_alias(key_line),
        });
    }
    // In the order written, so that findings and Gitea's conditions read
    // like the file.
    filters.sort_by_key(|f| f.line);
    Ok(Event {
        name: name.clone(),
        line,
        filters,
        other_keys,
    })
}

/// An invalid-YAML error pointing where the bad construct starts: libyaml
/// reports where it gave up, "while scanning" what began earlier.
fn yaml_error(path: &Path, text: &str, e: &serde_yaml::Error) -> Error {
    let message = e.to_string();
    let error = Error::input(format!("{} is not valid YAML", path.display())).caused_by(&message);
    let context = message
        .split_once(", while ")
        .and_then(|(_, context)| line_and_column(context));
    let problem = e.location().map(|l| (l.line(), l.column()));
    let Some((line, column)) = context.or(problem) else {
        return error;
    };
    let error = error.at(Location::new(path, line, Some(column)));
    let starts_at_column_1 =
        column == 1 && text.lines().nth(line - 1).is_some_and(|l| !l.is_empty());
    if context.is_some() && starts_at_column_1 {
        error.hint(format!(
            "line {line} starts at column 1 inside an indented block; the body of a `run: |` \
             heredoc or multi-line string must be indented at least as deep as its block"
        ))
    } else {
        error
    }
}

/// Reads "... at line N column M" from a libyaml message.
fn line_and_column(text: &str) -> Option<(usize, usize)> {
    let (_, rest) = text.split_once(" at line ")?;
    let (line, rest) = rest.split_once(" column ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

/// The line (1-based) of the first git merge conflict marker, if any.
fn conflict_marker(text: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.starts_with("<<<<<<< ")
                || line == "<<<<<<<"
                || line.starts_with(">>>>>>> ")
                || line == ">>>>>>>"
                || line == "======="
        })
        .map(|index| index + 1)
}

/// Finds the lines of `on:`, its events, their filter keys and patterns by
/// indentation, for block-style YAML and one-line flow lists.
struct LineFinder<'a> {
    lines: Vec<&'a str>,
}

impl<'a> LineFinder<'a> {
    fn new(text: &'a str) -> Self {
        LineFinder {
            lines: text.lines().collect(),
        }
    }

    fn on_line(&self) -> Option<usize> {
        self.find_key(0, self.lines.len(), "on", Some(0))
            .map(|index| index + 1)
    }

    fn event_line(&self, event: &str) -> Option<usize> {
        self.event_block(event).map(|(index, _)| index + 1)
    }

    fn key_line(&self, event: &str, key: &str) -> Option<usize> {
        self.key_block(event, key).map(|(index, _)| index + 1)
    }

    /// Whether the value on the key line `line` (1-based) is an alias, `key: *name`.
    fn is_alias(&self, line: usize) -> bool {
        self.lines
            .get(line.wrapping_sub(1))
            .and_then(|l| strip_comment(l).split_once(':'))
            .is_some_and(|(_, value)| value.trim_start().starts_with('*'))
    }

    fn pattern_line(&self, event: &str, key: &str, pattern: &str) -> Option<usize> {
        let (start, end) = self.key_block(event, key)?;
        (start..end)
            .find(|&index| {
                let content = strip_comment(self.lines[index]);
                let item = if index == start {
                    content.split_once(':').map_or("", |(_, rest)| rest)
                } else {
                    content
                };
                item.trim()
                    .trim_start_matches('-')
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .any(|part| unquote(part.trim()) == pattern)
            })
            .map(|index| index + 1)
    }

    /// The line index of `key:` and the end of its block.
    fn key_block(&self, event: &str, key: &str) -> Option<(usize, usize)> {
        let (start, end) = self.event_block(event)?;
        let index = self.find_key(start + 1, end, key, self.child_indent(start, end))?;
        Some((index, self.block_end(index, end)))
    }

    fn event_block(&self, event: &str) -> Option<(usize, usize)> {
        let on = self.find_key(0, self.lines.len(), "on", Some(0))?;
        let on_end = self.block_end(on, self.lines.len());
        let index = self.find_key(on + 1, on_end, event, self.child_indent(on, on_end))?;
        Some((index, self.block_end(index, on_end)))
    }

    /// The indentation of the first content line after `parent`, where its
    /// child keys stand (`None` when the block has no content lines).
    fn child_indent(&self, parent: usize, end: usize) -> Option<usize> {
        (parent + 1..end)
            .map(|i| self.lines[i])
            .find(|line| {
                let content = line.trim_start();
                !content.is_empty() && !content.starts_with('#')
            })
            .map(indentation)
    }

    /// The first line in `start..end` that is `key:` (plain or quoted), at
    /// the given indentation if any.
    fn find_key(
        &self,
        start: usize,
        end: usize,
        key: &str,
        indent: Option<usize>,
    ) -> Option<usize> {
        (start..end).find(|&index| {
            let line = self.lines[index];
            let content = line.trim_start();
            if indent.is_some_and(|want| line.len() - content.len() != want) {
                return false;
            }
            [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
                .iter()
                .any(|k| {
                    content
                        .strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.trim_start().starts_with(':'))
                })
        })
    }

    /// Where the block of the key at `index` ends: the next line indented no
    /// deeper (a `- ` item at the same depth still belongs to it).
    fn block_end(&self, index: usize, limit: usize) -> usize {
        let depth = indentation(self.lines[index]);
        (index + 1..limit)
            .find(|&i| {
                let line = self.lines[i];
                let content = line.trim_start();
                if content.is_empty() || content.starts_with('#') {
                    return false;
                }
                let d = indentation(line);
                d < depth || (d == depth && !content.starts_with('-'))
            })
            .unwrap_or(limit)
    }
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Drops a trailing ` # comment` outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return &line[..index],
            _ => {}
        }
        previous = c;
    }
    line
}

fn unquote(s: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Workflow> {
        Workflow::parse(Path::new("w.yml"), text)
    }

    #[test]
    fn reads_every_form_of_on() {
        let names = |text: &str| -> Vec<String> {
            parse(text)
                .unwrap()
                .events
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        assert_eq!(names("on: push\n"), ["push"]);
        assert_eq!(
            names("on: [push, pull_request]\n"),
            ["push", "pull_request"]
        );
        assert_eq!(
            names("on:\n  push:\n  workflow_dispatch:\n"),
            ["push", "workflow_dispatch"]
        );
        assert_eq!(names("\"on\":\n  push: {}\n"), ["push"]);
        assert_eq!(names("'on': {push: null}\n"), ["push"]);
    }

    #[test]
    fn keeps_patterns_with_their_lines() {
        let text = "name: x\non:\n  pull_request:\n    paths: ['a/**']\n  push:\n    branches: [main, 'rel/*']   # comment\n    paths:\n      # why\n      - 'a/**'\n      - \"!a/b\"\n    # trailing\n  workflow_dispatch:\n";
        let workflow = parse(text).unwrap();
        let push = workflow.event("push").unwrap();
        assert_eq!(push.line, 5);
        let branches = push.filter(FilterKey::Branches).unwrap();
        assert_eq!(branches.line, 6);
        assert_eq!(
            branches.patterns[1],
            PatternSource {
                text: "rel/*".into(),
                line: 6
            }
        );
        let paths = push.filter(FilterKey::Paths).unwrap();
        assert_eq!(paths.line, 7);
        let lines: Vec<usize> = paths.patterns.iter().map(|p| p.line).collect();
        assert_eq!(lines, [9, 10]);
        let pr = workflow.event("pull_request").unwrap();
        assert_eq!(pr.filter(FilterKey::Paths).unwrap().patterns[0].line, 4);
    }

    #[test]
    fn compact_lists_belong_to_their_key() {
        let text = "on:\n  push:\n    paths:\n    - 'x/**'\n    - y\n    branches:\n    - main\n";
        let push = parse(text).unwrap().events.remove(0);
        let lines: Vec<usize> = push
            .filter(FilterKey::Paths)
            .unwrap()
            .patterns
            .iter()
            .map(|p| p.line)
            .collect();
        assert_eq!(lines, [4, 5]);
        assert_eq!(
            push.filter(FilterKey::Branches).unwrap().patterns[0].line,
            7
        );
    }

    #[test]
    fn keeps_what_the_platforms_read_differently() {
        let text = "x: &f\n  paths: [a]\nl: &l [b]\non:\n  push:\n    branch: main\n    tags:\n    paths: *l\n    <<: *f\n  workflow_dispatch:\n    inputs: {a: {}}\n";
        let workflow = parse(text).unwrap();
        let push = workflow.event("push").unwrap();
        let tags = push.filter(FilterKey::Tags).unwrap();
        assert!(tags.null && tags.patterns.is_empty() && !tags.alias);
        let paths = push.filter(FilterKey::Paths).unwrap();
        assert!(paths.alias && !paths.null && paths.patterns[0].text == "b");
        let others: Vec<(&str, usize, bool)> = push
            .other_keys
            .iter()
            .map(|k| (k.name.as_str(), k.line, k.rejected_by_gitea))
            .collect();
        assert_eq!(others, [("branch", 6, false), ("<<", 9, true)]);
        let dispatch = workflow.event("workflow_dispatch").unwrap();
        assert!(!dispatch.other_keys[0].rejected_by_gitea);
    }

    #[test]
    fn explains_what_is_wrong() {
        let err = parse("on:\npermissions: {}\n").unwrap_err();
        assert!(err.message.contains("`on:` is empty"), "{err}");
        assert_eq!(err.location.as_ref().unwrap().line, 1);
        let err = parse("jobs: {}\n").unwrap_err();
        assert!(err.message.contains("no `on:` key"), "{err}");
        let err = parse("on: push\njobs:\n<<<<<<< HEAD\n  a: 1\n=======\n  a: 2\n>>>>>>> x\n")
            .unwrap_err();
        assert_eq!(err.location.as_ref().unwrap().line, 3);
        let err = parse("on: push\njobs:\n  a: [\n").unwrap_err();
        assert!(err.message.contains("not valid YAML"), "{err}");
        assert!(err.location.is_some());
        let err = parse("on:\n  push:\n    tags: [1.0]\n").unwrap_err();
        assert_eq!(err.location.as_ref().unwrap().line, 3);
    }
}
