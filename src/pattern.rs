//! GitHub Actions filter patterns: the syntax of `branches`, `tags`, `paths`
//! and their `-ignore` forms, with GitHub's semantics.
//!
//! - `*` matches any characters but `/`; `**` matches any characters; `**/`
//!   also matches nothing, so `**/README.md` matches `README.md`.
//! - `?` and `+` repeat the preceding character (zero or one, one or more).
//!   At the start of a pattern they are literal; after a wildcard, `?`
//!   changes nothing and `+` is an error (as in Gitea, whose regex engine
//!   rejects a repeated repetition).
//! - `[...]` is one character of a set or range; ranges only within `a-z`,
//!   `A-Z` or `0-9`.
//! - `\` escapes the next character; `!` first negates the pattern.
//! - Everything else is literal, and a pattern matches the whole name.
//!
//! Gitea compiles the same syntax with act's `PatternToRegex` and Go's
//! `regexp`, which differ in three details; [`Dialect::Gitea`] follows them:
//! an empty pattern is valid and matches only the empty name; in `[a-c-e]`
//! the second `-` and the `e` are single characters (Go reads a `-` after a
//! range as a literal), so `d` does not match; and `**` does not match
//! across a newline (Go's `.` stops at `\n`).
//!
//! A [`PatternList`] compiles its patterns once into a single [`RegexSet`],
//! so deciding one path is one pass whatever the number of patterns. The
//! LAST pattern that matches a name decides it: a later `!pattern` excludes,
//! a later positive pattern re-includes.

pub use crate::dialect::Dialect;
use regex::bytes::{RegexSet, RegexSetBuilder};
use std::fmt;

/// One compiled filter pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    negated: bool,
    regex: String,
}

/// Why a pattern does not compile. `position` counts characters of the
/// pattern as written (after a leading `!`), from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub pattern: String,
    pub position: usize,
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid pattern '{}' at character {}: {}",
            self.pattern,
            self.position + 1,
            self.message
        )
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Compiles a pattern as GitHub documents the syntax.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        Pattern::with_dialect(source, Dialect::Github)
    }

    /// Compiles a pattern as `dialect` reads the syntax (see the module doc).
    pub fn with_dialect(source: &str, dialect: Dialect) -> Result<Self, PatternError> {
        let (negated, body) = match source.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, source),
        };
        let regex = to_regex(body, dialect).map_err(|(position, message)| PatternError {
            pattern: source.to_string(),
            position: position + usize::from(negated),
            message: message.to_string(),
        })?;
        Ok(Pattern {
            source: source.to_string(),
            negated,
            regex,
        })
    }

    /// The pattern as written, with its `!` if any.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn is_negated(&self) -> bool {
        self.negated
    }
}

/// What the last token written to the regex can take: a quantifier applies
/// to a single character or class, and a quantifier after a repetition
/// follows the rules of Gitea's regex engine.
#[derive(Clone, Copy, PartialEq)]
enum Last {
    Start,
    Atom,
    Repetition,
}

/// Translates a pattern (without its `!`) into an anchored regex.
fn to_regex(pattern: &str, dialect: Dialect) -> Result<String, (usize, &'static str)> {
    if pattern.is_empty() && dialect == Dialect::Github {
        return Err((0, "the pattern is empty"));
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut regex = String::with_capacity(pattern.len() * 2 + 2);
    regex.push('^');
    let mut last = Last::Start;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    regex.push_str("(?:.+/)?");
                    i += 3;
                } else {
                    regex.push_str(".*");
                    i += 2;
                }
                last = Last::Repetition;
                continue;
            }
            '*' => {
                regex.push_str("[^/]*");
                last = Last::Repetition;
            }
            '?' | '+' => match last {
                Last::Start => {
                    push_literal(&mut regex, c);
                    last = Last::Atom;
                }
                Last::Atom => {
                    regex.push(c);
                    last = Last::Repetition;
                }
                // `x*?` is a lazy `x*`: the same names match.
                Last::Repetition if c == '?' => {}
                Last::Repetition => {
                    return Err((i, "'+' cannot follow '*', '?' or another '+'"));
                }
            },
            '[' => {
                i = push_class(&chars, i, &mut regex, dialect)?;
                last = Last::Atom;
            }
            '\\' => {
                let Some(&escaped) = chars.get(i + 1) else {
                    return Err((i, "'\\' at the end escapes nothing"));
                };
                push_literal(&mut regex, escaped);
                last = Last::Atom;
                i += 1;
            }
            _ => {
                push_literal(&mut regex, c);
                last = Last::Atom;
            }
        }
        i += 1;
    }
    regex.push('$');
    Ok(regex)
}

/// The regexes match bytes with Unicode off (see [`PatternList`]), so a
/// non-ASCII character is its UTF-8 bytes, grouped so that a following `?`
/// or `+` repeats the whole character.
fn push_literal(regex: &mut String, c: char) {
    let mut buf = [0u8; 4];
    let escaped = regex::escape(c.encode_utf8(&mut buf));
    if c.is_ascii() {
        regex.push_str(&escaped);
    } else {
        regex.push_str(&format!("(?:{escaped})"));
    }
}

/// Which characters a `[...]` may hold: GitHub allows alphanumerics; Gitea
/// also the few ASCII characters between `Z` and `a`.
fn class_char(c: char) -> bool {
    ('A'..='z').contains(&c) || c.is_ascii_digit()
}

/// Compiles the class starting at `chars[open] == '['`; returns the index
/// of its closing `]`.
fn push_class(
    chars: &[char],
    open: usize,
    regex: &mut String,
    dialect: Dialect,
) -> Result<usize, (usize, &'static str)> {
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut i = open + 1;
    if chars.get(i) == Some(&']') {
        return Err((open, "'[]' is empty"));
    }
    loop {
        match chars.get(i) {
            None => return Err((open, "'[' has no closing ']'")),
            Some(']') => break,
            Some('-') => {
                let from = ranges.last().map(|&(_, to)| to);
                let to = chars.get(i + 1).copied().filter(|&c| c != ']');
                let (Some(from), Some(to)) = (from, to) else {
                    return Err((i, "a range needs a character on both sides of '-'"));
                };
                let same_kind = (from.is_ascii_digit() && to.is_ascii_digit())
                    || (('A'..='z').contains(&from) && ('A'..='z').contains(&to));
                if !same_kind || from > to {
                    return Err((i, "ranges can only be within a-z, A-Z or 0-9"));
                }
                let after_range = ranges.last().is_some_and(|&(lo, hi)| lo != hi);
                if after_range && dialect == Dialect::Gitea {
                    // Go reads `a-c-e` as the range `a-c`, then `-` and `e`.
                    ranges.push(('-', '-'));
                    ranges.push((to, to));
                } else {
                    // `a-c` replaces the single `a`; in `a-c-e`, `c-e` adds to `a-c`.
                    if !after_range {
                        ranges.pop();
                    }
                    ranges.push((from, to));
                }
                i += 2;
            }
            Some(&c) if class_char(c) => {
                ranges.push((c, c));
                i += 1;
            }
            Some(_) => return Err((i, "'[...]' can only hold a-z, A-Z and 0-9")),
        }
    }
    regex.push('[');
    for (from, to) in ranges {
        push_literal(regex, from);
        if to != from {
            regex.push('-');
            push_literal(regex, to);
        }
    }
    regex.push(']');
    Ok(i)
}

/// How much memory the lazy DFA of one list may use. Fifty patterns with
/// `*` and `**` need more states than the regex crate's default cache holds;
/// with the default it keeps flushing and falls back to a slower engine
/// (measured on the benchmark's 100,000 paths: 1.3 s, against 46 ms).
const DFA_CACHE_BYTES: usize = 16 << 20;

/// An ordered list of patterns, compiled once; the last match decides.
///
/// The set matches bytes with Unicode off: `*` is then one byte class and
/// the DFA stays small, and a path is its UTF-8 bytes either way.
#[derive(Debug, Clone)]
pub struct PatternList {
    patterns: Vec<Pattern>,
    set: RegexSet,
}

/// The pattern that decided a name, and which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Index of the last pattern that matched.
    pub index: usize,
    /// True when that pattern is positive, false when it is a `!` pattern.
    pub included: bool,
}

impl PatternList {
    /// Compiles every pattern; the error names the first bad one and its
    /// index in the list.
    pub fn new<S: AsRef<str>>(sources: &[S]) -> Result<Self, (usize, PatternError)> {
        Self::with_dialect(sources, Dialect::Github)
    }

    /// [`PatternList::new`] with the syntax `dialect` reads.
    pub fn with_dialect<S: AsRef<str>>(
        sources: &[S],
        dialect: Dialect,
    ) -> Result<Self, (usize, PatternError)> {
        let patterns = sources
            .iter()
            .enumerate()
            .map(|(index, source)| {
                Pattern::with_dialect(source.as_ref(), dialect).map_err(|e| (index, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::build(patterns, dialect).map_err(|e| (0, e))
    }

    pub fn from_patterns(patterns: Vec<Pattern>) -> Result<Self, PatternError> {
        Self::build(patterns, Dialect::Github)
    }

    fn build(patterns: Vec<Pattern>, dialect: Dialect) -> Result<Self, PatternError> {
        let set = RegexSetBuilder::new(patterns.iter().map(|p| &p.regex))
            .unicode(false)
            .dot_matches_new_line(dialect == Dialect::Github)
            .dfa_size_limit(DFA_CACHE_BYTES)
            .build()
            .map_err(|e| PatternError {
                pattern: patterns
                    .iter()
                    .map(|p| p.source.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                position: 0,
                message: format!("the patterns are too large to compile together: {e}"),
            })?;
        Ok(PatternList { patterns, set })
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// The last pattern that matches `name`, or `None` when none does.
    pub fn verdict(&self, name: &str) -> Option<Verdict> {
        let index = self.set.matches(name.as_bytes()).iter().next_back()?;
        Some(Verdict {
            index,
            included: !self.patterns[index].negated,
        })
    }

    /// The indices of every pattern that matches `name`, `!` or not.
    pub fn matching(&self, name: &str) -> impl Iterator<Item = usize> {
        self.set.matches(name.as_bytes()).into_iter()
    }

    /// True when the last pattern that matches `name` is positive.
    pub fn includes(&self, name: &str) -> bool {
        self.verdict(name).is_some_and(|v| v.included)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(pattern: &str) -> String {
        Pattern::new(pattern).unwrap().regex
    }

    #[test]
    fn translates_wildcards() {
        assert_eq!(regex("*.js"), r"^[^/]*\.js$");
        assert_eq!(regex("**.js"), r"^.*\.js$");
        assert_eq!(regex("**/README.md"), r"^(?:.+/)?README\.md$");
        assert_eq!(regex("docs/**"), r"^docs/.*$");
    }

    #[test]
    fn quantifiers_apply_to_the_preceding_character() {
        assert_eq!(regex("*.jsx?"), r"^[^/]*\.jsx?$");
        assert_eq!(regex("v[12].[0-9]+"), r"^v[12]\.[0-9]+$");
        assert_eq!(regex("?x"), r"^\?x$");
        assert_eq!(regex("+x"), r"^\+x$");
        assert_eq!(regex("a*?"), r"^a[^/]*$");
    }

    #[test]
    fn rejects_bad_patterns_with_positions() {
        let err = |p: &str| Pattern::new(p).unwrap_err();
        assert_eq!(err("").message, "the pattern is empty");
        assert_eq!(err("!").position, 1);
        assert_eq!(err("a[]").position, 1);
        assert_eq!(err("a[bc").position, 1);
        assert_eq!(err("[a-9]").position, 2);
        assert_eq!(err("[z-a]").position, 2);
        assert_eq!(err("[-a]").position, 1);
        assert_eq!(err("[a.]").position, 2);
        assert_eq!(err("abc\\").position, 3);
        assert_eq!(err("a*+").position, 2);
        assert_eq!(err("!a++").position, 3);
    }

    #[test]
    fn matches_any_byte_of_a_path() {
        let list = PatternList::new(&["docs/**", "café?", "*.md"]).unwrap();
        assert!(list.includes("docs/line\nbreak"));
        assert!(list.includes("caf") && list.includes("café") && !list.includes("cafe"));
        assert!(list.includes("naïve.md"));
        assert!(!list.includes("a/naïve.md"));
    }

    #[test]
    fn gitea_reads_three_details_as_go_does() {
        let gitea = |patterns: &[&str]| PatternList::with_dialect(patterns, Dialect::Gitea);
        // An empty pattern compiles to `^$`.
        assert!(Pattern::new("").is_err());
        let empty = gitea(&[""]).unwrap();
        assert!(empty.includes("") && !empty.includes("main"));
        // A `-` after a range is a literal.
        let github = PatternList::new(&["[a-c-e]"]).unwrap();
        let go = gitea(&["[a-c-e]"]).unwrap();
        assert!(github.includes("d") && !github.includes("-"));
        assert!(!go.includes("d") && go.includes("-") && go.includes("e") && go.includes("b"));
        assert!(gitea(&["[a-e-c]"]).is_err());
        // `**` stops at a newline; `*` does not.
        let go = gitea(&["docs/**", "*.md"]).unwrap();
        assert!(!go.includes("docs/a\nb") && go.includes("a\nb.md"));
    }

    #[test]
    fn last_match_decides() {
        let list = PatternList::new(&["*.md", "!README.md", "README*"]).unwrap();
        assert_eq!(
            list.verdict("README.md"),
            Some(Verdict {
                index: 2,
                included: true
            })
        );
        let list = PatternList::new(&["*.md", "!README.md"]).unwrap();
        assert!(!list.includes("README.md"));
        assert!(list.includes("hello.md"));
        assert_eq!(list.verdict("src/a.rs"), None);
    }
}
