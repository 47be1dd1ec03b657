//! Property tests: the pattern compiler and the workflow reader never panic,
//! whatever they are given, and a few properties of the pattern language
//! hold for every generated input.
//!
//! Failures are not persisted to `proptest-regressions/` (the shrunk input is
//! printed instead), so a failing run leaves the tree untouched.

use hoist::changes::{ChangedFiles, Decision, Dialect, PushRef, Trigger, decide};
use hoist::pattern::{Pattern, PatternList};
use hoist::workflow::Workflow;
use proptest::prelude::*;
use proptest::sample::select;
use std::path::Path;
use std::sync::LazyLock;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- inputs

/// Characters the pattern compiler gives a meaning to, plus a few literals.
const PATTERN_CHARS: &str = r"[*?+!\[\]\\a-z0-9/.-]{0,24}";

/// Tokens of the pattern language, so that wildcards, classes, ranges,
/// quantifiers and escapes meet each other often.
const PATTERN_TOKENS: &[&str] = &[
    "*",
    "**",
    "**/",
    "?",
    "+",
    "!",
    "[",
    "]",
    "[a-z]",
    "[0-9]",
    "[abc]",
    "[a-c-e]",
    "[z-a]",
    "[a-9]",
    "[-a]",
    "[a-]",
    "[]",
    "[.]",
    "\\",
    "\\*",
    "\\[",
    "\\\\",
    "/",
    ".",
    "-",
    "a",
    "Z",
    "0",
    "é",
    "docs",
    "src/",
    ".md",
    "v1",
    "\u{1F600}",
    " ",
    "\n",
];

/// Any pattern-ish string: arbitrary unicode, the pattern alphabet, or a
/// sequence of pattern tokens.
fn pattern_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        2 => PATTERN_CHARS,
        3 => prop::collection::vec(select(PATTERN_TOKENS), 0..12).prop_map(|t| t.concat()),
    ]
}

const SEGMENTS: &[&str] = &[
    "src",
    "docs",
    "a",
    "b",
    "canvas",
    "workspace-server",
    ".github",
    "README.md",
    "main.rs",
    "x.json",
    "migrate-001.sql",
    "deploy.sh",
    "v1.2",
    "*",
    "?",
    "[a]",
    "\\",
    "é",
    "",
];

/// Changed-file paths: path-shaped, from the pattern alphabet, or arbitrary.
fn path_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(select(SEGMENTS), 1..6).prop_map(|s| s.join("/")),
        2 => PATTERN_CHARS,
        1 => any::<String>(),
    ]
}

/// The paths for which `**` must hold: any unicode but `\n` (see
/// `double_star_matches_every_path`).
fn path_without_newline() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(select(SEGMENTS), 1..6).prop_map(|s| s.join("/")),
        2 => PATTERN_CHARS,
        1 => "[^\n]{0,40}",
    ]
}

/// Checks the invariants of a compiled list on one name: `verdict`,
/// `includes` and `matching` agree, and the last match decides.
fn check_list(list: &PatternList, name: &str) {
    let verdict = list.verdict(name);
    let matching: Vec<usize> = list.matching(name).collect();
    assert_eq!(
        verdict.map(|v| v.index),
        matching.last().copied(),
        "{name:?}"
    );
    if let Some(v) = verdict {
        assert!(v.index < list.patterns().len());
        assert_eq!(v.included, !list.patterns()[v.index].is_negated());
    }
    assert_eq!(list.includes(name), verdict.is_some_and(|v| v.included));
}

// ---------------------------------------------------------------- patterns

proptest! {
    #![proptest_config(config(2000))]

    /// `Pattern::new` answers Ok or Err for any string; an error points
    /// inside the pattern and renders.
    #[test]
    fn pattern_new_never_panics(source in pattern_text()) {
        for dialect in [Dialect::Github, Dialect::Gitea] {
            match Pattern::with_dialect(&source, dialect) {
                Ok(pattern) => {
                    prop_assert_eq!(pattern.source(), source.as_str());
                    prop_assert_eq!(pattern.is_negated(), source.starts_with('!'));
                }
                Err(e) => {
                    prop_assert!(e.position <= source.chars().count(), "{:?}", e);
                    prop_assert_eq!(&e.pattern, &source);
                    let _ = e.to_string();
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// A list of arbitrary patterns compiles or names its first bad
    /// pattern, and matching arbitrary paths through it does not panic.
    #[test]
    fn lists_compile_and_match_without_panicking(
        sources in prop::collection::vec(pattern_text(), 0..8),
        paths in prop::collection::vec(path_text(), 0..8),
    ) {
        match PatternList::new(&sources) {
            Ok(list) => {
                prop_assert_eq!(list.patterns().len(), sources.len());
                for path in &paths {
                    check_list(&list, path);
                }
            }
            Err((index, e)) => {
                let _ = e.to_string();
                match sources.iter().position(|s| Pattern::new(s).is_err()) {
                    // The first pattern that does not compile alone.
                    Some(first) => prop_assert_eq!(index, first),
                    // Every one compiles alone: the set is too large.
                    None => prop_assert_eq!(index, 0),
                }
            }
        }
    }

    /// Only the patterns that compile, so that matching is reached every time.
    #[test]
    fn valid_patterns_match_any_path_without_panicking(
        sources in prop::collection::vec(pattern_text(), 1..10),
        paths in prop::collection::vec(path_text(), 1..10),
    ) {
        let valid: Vec<&String> = sources.iter().filter(|s| Pattern::new(s).is_ok()).collect();
        if let Ok(list) = PatternList::new(&valid) {
            for path in &paths {
                check_list(&list, path);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Letters, digits, `/`, `-`, `_` and `.` are literal: such a pattern
    /// matches exactly itself, not a longer, shorter or different name.
    #[test]
    fn literal_patterns_match_exactly_themselves(
        literal in prop_oneof![
            3 => "[A-Za-z0-9/_.-]{1,40}",
            1 => r"[\p{L}\p{Nd}/_.-]{1,20}",
        ],
        other in "[A-Za-z0-9/_.-]{0,8}",
    ) {
        let longer = format!("{literal}x");
        let prefixed = format!("x{literal}");
        let list = PatternList::new(&[&literal]).unwrap();
        prop_assert!(list.includes(&literal));
        prop_assert!(!list.includes(&longer));
        prop_assert!(!list.includes(&prefixed));
        let shorter: String = {
            let mut chars = literal.chars();
            chars.next_back();
            chars.collect()
        };
        prop_assert!(!list.includes(&shorter));
        prop_assert_eq!(list.includes(&other), other == literal);
        // Negated after `**`, it excludes exactly the same names.
        let negated = PatternList::new(&["**".to_string(), format!("!{literal}")]).unwrap();
        prop_assert!(!negated.includes(&literal));
        prop_assert!(negated.includes(&longer));
    }
}

/// Compiled once: compiling a regex per case dominates a debug build.
static DOUBLE_STAR: LazyLock<PatternList> = LazyLock::new(|| PatternList::new(&["**"]).unwrap());
static BOTH_STARS: LazyLock<PatternList> =
    LazyLock::new(|| PatternList::new(&["**/*", "**"]).unwrap());

proptest! {
    #![proptest_config(config(2000))]

    /// `**` matches every path, and after `**/*` it is the last match.
    ///
    /// Paths with a `\n` are left out: `**` compiles to `.*`, which does not
    /// match `\n` (while `*`, `[^/]*`, does), so `**` misses a file whose
    /// name holds a newline, which git allows.
    #[test]
    fn double_star_matches_every_path(path in path_without_newline()) {
        prop_assert!(DOUBLE_STAR.includes(&path));
        prop_assert_eq!(BOTH_STARS.verdict(&path).map(|v| v.index), Some(1));
    }
}

// ---------------------------------------------------------------- workflows

/// Runs the whole reader on `text`: parse, compile the push trigger, and
/// decide a few pushes. Only panics are failures; every error must render.
fn read_and_decide(text: &str, paths: &[String]) {
    let workflow = match Workflow::parse(Path::new("w.yml"), text) {
        Ok(workflow) => workflow,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(!workflow.events.is_empty());
    let lines = text.lines().count().max(1);
    for event in &workflow.events {
        assert!((1..=lines).contains(&event.line), "{event:?}");
        for filter in &event.filters {
            assert!((1..=lines).contains(&filter.line), "{filter:?}");
            for pattern in &filter.patterns {
                assert!((1..=lines).contains(&pattern.line), "{pattern:?}");
            }
        }
    }
    // `--check` reads the same workflows.
    for finding in hoist::lint::lint(&workflow, paths) {
        assert!((1..=lines).contains(&finding.line), "{finding:?}");
    }
    for dialect in [Dialect::Github, Dialect::Gitea] {
        decide_in(&workflow, dialect, paths);
    }
}

/// Compiles the push trigger in `dialect` and decides a few pushes.
fn decide_in(workflow: &Workflow, dialect: Dialect, paths: &[String]) {
    let trigger = match Trigger::with_dialect(workflow, dialect) {
        Ok(trigger) => trigger,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let refs = [
        None,
        Some(PushRef::Branch("main".into())),
        Some(PushRef::Branch(String::new())),
        Some(PushRef::Tag("v1.2.3".into())),
    ];
    let changes = [
        ChangedFiles::Known(paths.to_vec()),
        ChangedFiles::Known(Vec::new()),
        ChangedFiles::Unknown("a new branch".into()),
        ChangedFiles::RefDeleted,
    ];
    for push_ref in &refs {
        for changed in &changes {
            match decide(&trigger, push_ref.as_ref(), changed) {
                Ok(Decision {
                    run,
                    matched,
                    changed: count,
                    ..
                }) => {
                    assert!(matched.len() <= count);
                    if let ChangedFiles::Known(files) = changed {
                        assert!(count == files.len() || count == 0);
                        assert!(matched.iter().all(|m| files.contains(m)));
                    }
                    if !matched.is_empty() {
                        assert!(run);
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
}

/// Pieces of YAML lines: keys, values and troublemakers.
const KEYS: &[&str] = &[
    "on",
    "\"on\"",
    "'on'",
    "true",
    "push",
    "pull_request",
    "workflow_dispatch",
    "paths",
    "paths-ignore",
    "branches",
    "branches-ignore",
    "tags",
    "tags-ignore",
    "jobs",
    "name",
    "- on",
    "? on",
    "<<",
    "on ",
    "\u{feff}on",
    "é",
];
const VALUES: &[&str] = &[
    "",
    " push",
    " [push, pull_request]",
    " [a, b]",
    " {}",
    " []",
    " null",
    " ~",
    " 1.0",
    " 'docs/**'",
    " \"!docs/**\"",
    " '*.md'",
    " 'ドキュメント/**'",
    " été",
    " *.md",
    " [main, 'rel/*']",
    " {push: null}",
    " {push: {paths: ['a/**', '!a/b']}}",
    " &a [x]",
    " *a",
    " |",
    " >",
    " 'unterminated",
    " [[[[[[[[",
    " {{{{",
    " # comment",
    ": :",
    "\t",
];
const LINES: &[&str] = &[
    "- '...'",
    "- 'src/**'",
    "- \"!docs/**\"",
    "- '**/*.md'",
    "- 'ünïcödé/**'",
    "- 日本",
    "- *.md",
    "- [a, b]",
    "- {}",
    "- null",
    "-",
    "- ",
    "- - x",
    "<<<<<<< HEAD",
    "<<<<<<<",
    "=======",
    ">>>>>>> branch",
    "<<<<<<<x",
    "#",
    "# comment",
    "---",
    "...",
    ":",
    "\t",
    "[a, b]",
    "{}",
    "null",
    "%YAML 1.2",
    "!!str x",
    "'on': push",
];
const INDENTS: &[&str] = &["", "", " ", "  ", "    ", "      ", "\t", "  \t"];

/// One line: an indentation, then `key:value`, or a whole line piece.
fn yaml_line() -> impl Strategy<Value = String> {
    let key_value = (select(KEYS), select(VALUES)).prop_map(|(k, v)| format!("{k}:{v}"));
    (
        select(INDENTS),
        prop_oneof![3 => key_value, 2 => select(LINES).prop_map(String::from), 1 => ".{0,12}"],
    )
        .prop_map(|(indent, line)| format!("{indent}{line}"))
}

/// Valid workflows in the shapes met in practice, to be mutated line by line.
const SKELETONS: &[&str] = &[
    "name: ci\non:\n  push:\n    branches: [main]\n    paths:\n      - 'src/**'\n      - '!docs/**'\n  workflow_dispatch:\njobs:\n  a:\n    runs-on: x\n",
    "\"on\":\n  push:\n    branches:\n    - main\n    paths-ignore:\n    - '**/*.md'\n",
    "'on': {push: {tags: ['v*'], paths: ['a/**', b]}, pull_request: null}\n",
    "on: [push, pull_request]\njobs: {}\n",
    "on:\n  push:\n  pull_request:\n    paths: ['x/**']\n",
];

/// A YAML-ish document, lines joined by `\n`, `\r\n` or `\r`: either
/// random lines, or a valid workflow with a few lines replaced, inserted,
/// removed or re-indented, so that both the YAML parser's errors and the
/// reader's own checks are reached.
fn yaml_text() -> impl Strategy<Value = String> {
    let random = prop::collection::vec(yaml_line(), 0..14);
    let edit = (any::<prop::sample::Index>(), 0..4u8, yaml_line());
    let mutated =
        (select(SKELETONS), prop::collection::vec(edit, 0..4)).prop_map(|(skeleton, edits)| {
            let mut lines: Vec<String> = skeleton.lines().map(String::from).collect();
            for (at, kind, line) in edits {
                let i = at.index(lines.len() + 1);
                match kind {
                    0 => lines.insert(i, line),
                    _ if i == lines.len() => lines.push(line),
                    1 => lines[i] = line,
                    2 => {
                        lines.remove(i);
                    }
                    _ => lines[i] = format!("  {}", lines[i].trim_start_matches(' ')),
                }
            }
            lines
        });
    (
        prop_oneof![random, mutated],
        select(&["\n", "\n", "\n", "\r\n", "\r"][..]),
        any::<bool>(),
    )
        .prop_map(|(lines, eol, trailing)| {
            let mut text = lines.join(eol);
            if trailing {
                text.push_str(eol);
            }
            text
        })
}

/// Quotes a pattern as a YAML single-quoted scalar.
fn quoted(pattern: &str) -> String {
    format!("'{}'", pattern.replace('\'', "''"))
}

/// A well-formed workflow whose `on.push` carries one generated filter, in
/// block or flow style, so that compiling and deciding are reached often.
/// Returns the text, the filter's key and its patterns.
fn workflow_text() -> impl Strategy<Value = (String, &'static str, Vec<String>)> {
    let patterns = prop::collection::vec(
        prop_oneof![4 => PATTERN_CHARS, 2 => "[a-z*/.!-]{1,12}", 1 => r"[^\p{C}\p{Zl}\p{Zp}]{1,12}"],
        0..8,
    );
    (
        patterns,
        select(&["paths", "paths-ignore", "branches", "tags"][..]),
        any::<bool>(),
        select(&["on", "\"on\"", "'on'"][..]),
        any::<bool>(),
    )
        .prop_map(|(patterns, key, flow, on, with_branches)| {
            let mut text = format!("name: generated\n{on}:\n  push:\n");
            if with_branches && key != "branches" {
                text.push_str("    branches: [main]\n");
            }
            if flow {
                let list: Vec<String> = patterns.iter().map(|p| quoted(p)).collect();
                text.push_str(&format!("    {key}: [{}]\n", list.join(", ")));
            } else {
                text.push_str(&format!("    {key}:\n"));
                for p in &patterns {
                    text.push_str(&format!("      - {}\n", quoted(p)));
                }
            }
            text.push_str("  workflow_dispatch:\njobs:\n  build:\n    runs-on: ubuntu-latest\n");
            (text, key, patterns)
        })
}

proptest! {
    #![proptest_config(config(1000))]

    /// Arbitrary text into the workflow reader.
    #[test]
    fn workflow_parse_never_panics_on_any_string(
        text in any::<String>(),
        paths in prop::collection::vec(path_text(), 0..4),
    ) {
        read_and_decide(&text, &paths);
    }
}

proptest! {
    #![proptest_config(config(2000))]

    /// YAML-shaped text built from `on:`/`push:`/`paths:` fragments, list
    /// items, flow collections, anchors, conflict markers and tabs.
    #[test]
    fn workflow_parse_never_panics_on_yaml_fragments(
        text in yaml_text(),
        paths in prop::collection::vec(path_text(), 0..4),
    ) {
        read_and_decide(&text, &paths);
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Well-formed workflows with generated filters: they parse, keep their
    /// patterns as written, and compiling and deciding do not panic.
    #[test]
    fn generated_workflows_parse_and_decide(
        (text, key, patterns) in workflow_text(),
        paths in prop::collection::vec(path_text(), 0..6),
    ) {
        let workflow = Workflow::parse(Path::new("w.yml"), &text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let push = workflow.event("push").expect("push event");
        let filter = push.filters.iter().find(|f| f.key.as_str() == key).expect("the filter");
        let kept: Vec<&str> = filter.patterns.iter().map(|p| p.text.as_str()).collect();
        prop_assert_eq!(kept, patterns.iter().map(String::as_str).collect::<Vec<_>>());
        read_and_decide(&text, &paths);
    }
}
