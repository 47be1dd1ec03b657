//! `.dockerignore`, read and matched exactly as Docker does, so that hoist
//! sends the daemon the same build context as `docker build` would.
//!
//! Docker's rules live in three places, each ported here with its quirks:
//! the file format is `ignorefile.ReadAll` (moby/patternmatcher): comments
//! are lines *starting* with `#`, whitespace is trimmed, a `!` prefix makes
//! an exception, each pattern goes through Go's `filepath.Clean` and loses a
//! leading `/`. The syntax check is Go's `filepath.Match`, and the matching
//! is patternmatcher's regex translation (`*` stays within one path segment,
//! `?` is one character but not `/`, `**` any number of segments, `[...]`
//! and `\` pass through to the regex), with its exact, prefix and suffix
//! shortcuts. Paths are decided the way `archive.TarWithOptions` walks the
//! context: the last matching pattern wins, a path is excluded when one of
//! its parent directories is, and an excluded directory is skipped whole
//! unless an exception pattern names something under it (then it is walked,
//! though not sent itself). What this gives up is spelled out where the code
//! differs; `tests/build_context.rs` compares the result with the real
//! `docker build`.

use crate::error::{Error, Location, Result};
use regex::Regex;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// The name of the file, at the root of the build context.
pub const FILE_NAME: &str = ".dockerignore";

/// The patterns of one `.dockerignore`, plus the exceptions hoist adds for
/// the files that must reach the daemon whatever the patterns say.
#[derive(Debug, Clone, Default)]
pub struct Dockerignore {
    patterns: Vec<Pattern>,
    /// Whether any pattern is an exception (`!`), which makes the walk look
    /// inside excluded directories (patternmatcher's `Exclusions()`).
    exceptions: bool,
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The cleaned pattern without its `!`: what patternmatcher's
    /// `String()` returns and what the directory-skip test compares.
    text: Vec<u8>,
    exception: bool,
    /// 1-based line in the file; `None` for the exceptions hoist adds.
    line: Option<usize>,
    matcher: Matcher,
}

/// patternmatcher's match types: patterns without wildcards compare
/// strings, the rest run a regex.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(Vec<u8>),
    /// `dir/**`: everything starting with `dir/`.
    Prefix(Vec<u8>),
    /// `**/name` or `**name`: everything ending with it.
    Suffix(Vec<u8>),
    Regex(Regex),
}

/// What a directory's patterns matched, handed to its children so that a
/// pattern that matched the directory also counts for everything inside it
/// (patternmatcher's `MatchInfo`). The default, empty, means "no parent
/// information": the parents are then matched from the path itself.
#[derive(Debug, Clone, Default)]
pub struct MatchInfo(Vec<bool>);

impl Pattern {
    /// The pattern as Docker holds it: cleaned, without its `!`.
    pub fn text(&self) -> Cow<'_, str> {
        lossy(&self.text)
    }

    pub fn is_exception(&self) -> bool {
        self.exception
    }

    /// [`Pattern::text`] as the bytes it was written with.
    pub fn bytes(&self) -> &[u8] {
        &self.text
    }

    /// The line of `.dockerignore` it comes from; `None` for the exceptions
    /// hoist adds for the Dockerfile and `.dockerignore`.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    fn is_match(&self, path: &[u8], text: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(exact) => path == exact.as_slice(),
            Matcher::Prefix(prefix) => path.starts_with(prefix),
            // `**/foo` also matches `foo` itself.
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix) || (suffix.first() == Some(&b'/') && path == &suffix[1..])
            }
            Matcher::Regex(regex) => regex.is_match(text),
        }
    }
}

impl Dockerignore {
    /// Reads `<context_dir>/.dockerignore`; without one nothing is excluded.
    pub fn read(context_dir: &Path) -> Result<Dockerignore> {
        let path = context_dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => Dockerignore::parse(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Dockerignore::default()),
            Err(e) => Err(Error::unreadable(FILE_NAME, &path, e)),
        }
    }

    /// Parses the text of a `.dockerignore`; `path` only names it in errors.
    /// Bytes that are not UTF-8 are kept as they are, as Go does.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Dockerignore> {
        let mut ignore = Dockerignore::default();
        for (index, line) in lines(text).enumerate() {
            let number = index + 1;
            // A UTF-8 byte order mark is dropped from the first line only.
            let line = if index == 0 {
                line.strip_prefix(b"\xEF\xBB\xBF".as_slice())
                    .unwrap_or(line)
            } else {
                line
            };
            // Comments are recognised before trimming: `  # x` is a pattern.
            if line.first() == Some(&b'#') {
                continue;
            }
            let line = trim_space(line);
            if line.is_empty() {
                continue;
            }
            let (exception, body) = match line.strip_prefix(b"!") {
                Some(rest) => (true, trim_space(rest)),
                None => (false, line),
            };
            let mut cleaned = Vec::new();
            if !body.is_empty() {
                cleaned = go_clean(body);
                // Patterns are relative to the context root; `/` alone stays.
                if cleaned.len() > 1 && cleaned[0] == b'/' {
                    cleaned.remove(0);
                }
            }
            // patternmatcher cleans the line again, with its `!`: `!/`
            // becomes `!` and is refused like a bare `!`.
            let whole = if exception {
                go_clean(&[b"!".as_slice(), &cleaned].concat())
            } else {
                go_clean(&cleaned)
            };
            let (exception, text) = match whole.strip_prefix(b"!") {
                Some(_) if whole.len() == 1 => {
                    return Err(
                        pattern_error(path, number, "!", "an exception needs a pattern")
                            .hint("write the path to keep after the `!`, e.g. `!README.md`"),
                    );
                }
                Some(rest) => (true, rest.to_vec()),
                None => (false, whole),
            };
            let matcher = compile(&text).map_err(|cause| {
                pattern_error(path, number, &lossy(&text), &cause).hint(
                    "Docker's syntax: `*` and `?` within one path segment, `**` across \
                     segments, `[a-z]` classes, `\\` escapes the next character \
                     (`\\[` for a literal bracket); docker build refuses this file too",
                )
            })?;
            ignore.exceptions |= exception;
            ignore.patterns.push(Pattern {
                text,
                exception,
                line: Some(number),
                matcher,
            });
        }
        Ok(ignore)
    }

    /// patternmatcher's `New`: patterns as BuildKit sends them in a session
    /// (`include-patterns`, `exclude-patterns`, resolved `followpaths`),
    /// already read from their file: each is trimmed and cleaned, a leading
    /// `!` makes an exception, nothing is a comment. The error is the
    /// reason a pattern is refused, as Go's `filepath.Match` would give it.
    pub fn from_patterns<P: AsRef<[u8]>>(
        patterns: &[P],
    ) -> std::result::Result<Dockerignore, String> {
        let mut ignore = Dockerignore::default();
        for pattern in patterns {
            let pattern = trim_space(pattern.as_ref());
            if pattern.is_empty() {
                continue;
            }
            let cleaned = go_clean(pattern);
            let (exception, text) = match cleaned.strip_prefix(b"!") {
                Some([]) => return Err("illegal exclusion pattern: \"!\"".to_string()),
                Some(rest) => (true, rest.to_vec()),
                None => (false, cleaned),
            };
            let matcher = compile(&text).map_err(|cause| format!("{cause}: '{}'", lossy(&text)))?;
            ignore.exceptions |= exception;
            ignore.patterns.push(Pattern {
                text,
                exception,
                line: None,
                matcher,
            });
        }
        Ok(ignore)
    }

    /// Whether any pattern is an exception (patternmatcher's `Exclusions`).
    pub fn has_exceptions(&self) -> bool {
        self.exceptions
    }

    /// Makes sure `rel` (a slash path from the context root) is sent even
    /// when a pattern excludes it, as the docker CLI does for the Dockerfile
    /// and `.dockerignore` (its `TrimBuildFilesFromExcludes`): an exception
    /// for it goes after every pattern, so it wins, and the directories
    /// leading to it are walked even when excluded (they are not sent
    /// themselves). Unlike Docker's `!<path>`, the exception matches the
    /// path literally, so a Dockerfile named `Dockerfile[1]` is kept too.
    pub fn always_send(&mut self, rel: &str) {
        let text = go_clean(rel.as_bytes());
        if self
            .patterns
            .iter()
            .any(|p| p.exception && p.line.is_none() && p.text == text)
        {
            return;
        }
        self.exceptions = true;
        self.patterns.push(Pattern {
            matcher: Matcher::Exact(text.clone()),
            text,
            exception: true,
            line: None,
        });
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the build context leaves out `rel` (a slash path from the
    /// context root): the path or one of its parents is excluded, or one of
    /// its parent directories is skipped whole. This is the walk of
    /// [`crate::context`] for one path.
    pub fn excludes(&self, rel: &str) -> bool {
        let rel = go_clean(rel.as_bytes());
        let mut info = MatchInfo::default();
        for (i, _) in rel.iter().enumerate().filter(|&(_, &b)| b == b'/') {
            let dir = &rel[..i];
            let (excluded, dir_info) = self.matches(dir, &info);
            if excluded && !self.walks_excluded_dir(dir) {
                return true;
            }
            info = dir_info;
        }
        self.matches(&rel, &info).0
    }

    /// patternmatcher's `MatchesUsingParentResults`: whether `path` is
    /// excluded, given what its parent directory matched (`parent`; the
    /// default when the parent is the context root or unknown), and what
    /// `path` matched, for its own children.
    pub fn matches(&self, path: &[u8], parent: &MatchInfo) -> (bool, MatchInfo) {
        let text = lossy(path);
        let mut excluded = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, pattern) in self.patterns.iter().enumerate() {
            // A pattern that matched the parent directory matches this path.
            let mut matched = parent.0.get(i).copied().unwrap_or(false);
            if !matched {
                // Only a pattern that can change the answer is evaluated: an
                // exclusion while not excluded, an exception while excluded.
                // Docker records the skipped ones as "not matched", which
                // its children then inherit; so does this.
                if pattern.exception != excluded {
                    continue;
                }
                matched = pattern.is_match(path, &text);
                if !matched && parent.0.is_empty() {
                    matched = parents(path).any(|dir| pattern.is_match(dir, &lossy(dir)));
                }
            }
            info[i] = matched;
            if matched {
                excluded = !pattern.exception;
            }
        }
        (excluded, MatchInfo(info))
    }

    /// For an excluded directory: whether the walk must still look inside
    /// it, because an exception pattern starts with `dir/`. Like Docker,
    /// this compares the pattern's text: `!dir/*.txt` opens `dir`, but
    /// `!**/keep.txt` opens nothing.
    pub fn walks_excluded_dir(&self, dir: &[u8]) -> bool {
        if !self.exceptions {
            return false;
        }
        self.patterns
            .iter()
            .filter(|p| p.exception)
            .any(|p| p.text.starts_with(dir) && p.text.get(dir.len()).is_none_or(|&b| b == b'/'))
    }
}

fn pattern_error(path: &Path, line: usize, pattern: &str, cause: &str) -> Error {
    Error::input(format!(
        "invalid pattern '{pattern}' in {}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| FILE_NAME.to_string())
    ))
    .at(Location::new(PathBuf::from(path), line, None))
    .caused_by(cause)
}

/// Go's `bufio.ScanLines`: lines end at `\n`, lose one trailing `\r`, and a
/// last line without `\n` counts.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let (line, next) = match current.iter().position(|&b| b == b'\n') {
            Some(i) => (&current[..i], Some(&current[i + 1..])),
            None if current.is_empty() => return None,
            None => (current, None),
        };
        rest = next.filter(|n| !n.is_empty());
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

/// Go's `strings.TrimSpace` on bytes: Unicode white space at both ends;
/// bytes that are not UTF-8 are not space.
fn trim_space(mut s: &[u8]) -> &[u8] {
    while let Some((c, n)) = first_char(s) {
        if !c.is_whitespace() {
            break;
        }
        s = &s[n..];
    }
    while let Some((c, n)) = last_char(s) {
        if !c.is_whitespace() {
            break;
        }
        s = &s[..s.len() - n];
    }
    s
}

fn first_char(s: &[u8]) -> Option<(char, usize)> {
    (1..=s.len().min(4)).find_map(|n| {
        std::str::from_utf8(&s[..n])
            .ok()
            .and_then(|t| t.chars().next().map(|c| (c, n)))
    })
}

fn last_char(s: &[u8]) -> Option<(char, usize)> {
    (1..=s.len().min(4)).find_map(|n| {
        std::str::from_utf8(&s[s.len() - n..])
            .ok()
            .and_then(|t| t.chars().next().map(|c| (c, n)))
    })
}

/// Go's `utf8.DecodeRune`: a byte that does not start a valid character
/// decodes as U+FFFD of width 1. `s` must not be empty.
fn decode_rune(s: &[u8]) -> (char, usize) {
    first_char(s)
        .filter(|&(_, n)| n == utf8_width(s[0]))
        .unwrap_or(('\u{FFFD}', 1))
}

fn utf8_width(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// A path as Go's regexp sees it: each byte that is not part of valid UTF-8
/// is one U+FFFD.
pub(crate) fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 8);
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                out.extend(std::iter::repeat_n('\u{FFFD}', chunk.invalid().len()));
            }
            Cow::Owned(out)
        }
    }
}

/// The parent directories of a slash path, shortest first: `a/b/c` gives
/// `a` and `a/b`.
fn parents(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// Go's `path.Clean` (`filepath.Clean` on Unix), on bytes.
pub(crate) fn go_clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let n = path.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        out.push(b'/');
        (r, dotdot) = (1, 1);
    }
    while r < n {
        // An empty element, or `.`.
        if path[r] == b'/' || (path[r] == b'.' && (r + 1 == n || path[r + 1] == b'/')) {
            r += 1;
        } else if path[r] == b'.' && path[r + 1] == b'.' && (r + 2 == n || path[r + 2] == b'/') {
            r += 2;
            if out.len() > dotdot {
                // Back up to the previous separator (or to what `..` may
                // not remove).
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && path[r] != b'/' {
                out.push(path[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return b".".to_vec();
    }
    out
}

/// patternmatcher's `compile`: the pattern becomes an exact, prefix or
/// suffix comparison when it can, else a regex in Go's syntax, which
/// [`go_regex_to_rust`] then carries over. Errors are Go's `filepath.Match`
/// syntax check (Docker refuses the file) or a regex that does not compile
/// (Docker fails when it first evaluates the pattern; hoist refuses the file
/// up front).
fn compile(pattern: &[u8]) -> Result<Matcher, String> {
    if go_match(pattern, b".").is_err() {
        return Err("syntax error in pattern".to_string());
    }
    #[derive(PartialEq, Clone, Copy)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let text = lossy(pattern);
    let chars: Vec<char> = text.chars().collect();
    let mut regex = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    // Counts loop turns, not characters: `**/` is one turn.
    let mut turn = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    // Any number of segments, including none.
                    regex.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if turn == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                regex.push('\\');
                regex.push(c);
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    regex.push('\\');
                    regex.push(next);
                    i += 1;
                    kind = Kind::Regex;
                }
                None => regex.push('\\'),
            },
            '[' | ']' => {
                regex.push(c);
                kind = Kind::Regex;
            }
            _ => regex.push(c),
        }
        turn += 1;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact(pattern.to_vec()),
        // Without the trailing `**`.
        Kind::Prefix => Matcher::Prefix(pattern[..pattern.len() - 2].to_vec()),
        // Without the leading `**`.
        Kind::Suffix => Matcher::Suffix(pattern[2..].to_vec()),
        Kind::Regex => {
            regex.push('$');
            let rust = go_regex_to_rust(&regex)?;
            Matcher::Regex(Regex::new(&rust).map_err(|e| {
                let e = e.to_string();
                e.lines().last().unwrap_or(&e).trim().to_string()
            })?)
        }
    })
}

/// Rewrites a regex in Go's RE2 syntax, as patternmatcher generates it, into
/// the `regex` crate's syntax with the same meaning. They differ in
/// character classes (`[` inside a class is literal in Go and nests in
/// Rust; `&&`, `--` and `~~` are set operators in Rust only) and in the
/// Perl classes and word boundaries, which are ASCII in Go.
fn go_regex_to_rust(go: &str) -> Result<String, String> {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\\' => {
                let Some(&next) = chars.get(i) else {
                    return Err("trailing backslash at end of expression".to_string());
                };
                i += 1;
                push_escape(&chars, &mut i, next, false, &mut out);
            }
            '[' => i = push_go_class(&chars, i, &mut out)?,
            ']' => out.push_str("\\]"),
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Carries over `\<next>` (inside a class when `in_class`): Go's Perl
/// classes and word boundaries are ASCII-only.
fn push_escape(chars: &[char], i: &mut usize, next: char, in_class: bool, out: &mut String) {
    let ascii = match next {
        'd' => Some(("0-9", false)),
        'D' => Some(("0-9", true)),
        's' => Some(("\\t\\n\\x0C\\r ", false)),
        'S' => Some(("\\t\\n\\x0C\\r ", true)),
        'w' => Some(("0-9A-Za-z_", false)),
        'W' => Some(("0-9A-Za-z_", true)),
        _ => None,
    };
    match (ascii, in_class) {
        (Some((set, false)), true) => out.push_str(set),
        (Some((set, negated)), _) => {
            out.push('[');
            if negated {
                out.push('^');
            }
            out.push_str(set);
            out.push(']');
        }
        (None, _) if next == 'b' || next == 'B' => {
            out.push_str("(?-u:\\");
            out.push(next);
            out.push(')');
        }
        (None, _) => {
            out.push('\\');
            out.push(next);
            // `\p{Greek}`: copy the braces along.
            if (next == 'p' || next == 'P') && chars.get(*i) == Some(&'{') {
                while let Some(&c) = chars.get(*i) {
                    out.push(c);
                    *i += 1;
                    if c == '}' {
                        break;
                    }
                }
            }
        }
    }
}

/// Carries over a Go character class whose `[` was just read; returns the
/// index after its closing `]`.
fn push_go_class(chars: &[char], mut i: usize, out: &mut String) -> Result<usize, String> {
    out.push('[');
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("missing closing ]".to_string());
        };
        i += 1;
        match c {
            ']' if !first => {
                out.push(']');
                return Ok(i);
            }
            ']' => out.push_str("\\]"),
            '[' if chars.get(i) == Some(&':') => {
                // A POSIX class `[:alpha:]` means the same in both; an
                // unterminated one is a literal `[` in Go.
                let rest: String = chars[i..].iter().collect();
                match rest.find(":]") {
                    Some(end) => {
                        out.push('[');
                        out.push_str(&rest[..end + 2]);
                        i += rest[..end + 2].chars().count();
                    }
                    None => out.push_str("\\["),
                }
            }
            '[' => out.push_str("\\["),
            '\\' => {
                let Some(&next) = chars.get(i) else {
                    return Err("missing closing ]".to_string());
                };
                i += 1;
                push_escape(chars, &mut i, next, true, out);
            }
            '&' | '~' | '-' if chars.get(i) == Some(&c) => {
                // Doubled, these are set operators in Rust.
                out.push(c);
                out.push('\\');
                out.push(c);
                i += 1;
            }
            _ => out.push(c),
        }
        first = false;
    }
}

/// Go's `filepath.Match` (Unix), which Docker calls on every pattern only
/// to reject bad syntax. `Err` is `ErrBadPattern`.
pub(crate) fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, ()> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest unless it has a `/`.
            return Ok(!name.contains(&b'/'));
        }
        let (t, ok) = match_chunk(chunk, name)?;
        // The last chunk must use up the name.
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            // Try the chunk further on; a `*` cannot skip a `/`.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (t, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                i += 1;
            }
        }
        // No match: the rest of the pattern must still be well-formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while pattern.first() == Some(&b'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // A `\` at the end is reported by `match_chunk`.
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches one chunk (no `*`) at the start of `s`: `Ok((rest, matched))`.
/// After a mismatch it keeps going over the chunk, to report bad syntax.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<(&'a [u8], bool), ()> {
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            b'[' => {
                let mut r = '\0';
                if !failed {
                    let (c, n) = decode_rune(s);
                    r = c;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if chunk.first() == Some(&b'^') {
                    negated = true;
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk[0] == b'-' {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            c => {
                let literal = if c == b'\\' {
                    chunk = &chunk[1..];
                    *chunk.first().ok_or(())?
                } else {
                    c
                };
                if !failed {
                    if literal != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { (b"", false) } else { (s, true) })
}

/// One character of a class, `\` escapes included; it must be followed by
/// more of the class.
fn get_esc(mut chunk: &[u8]) -> Result<(char, &[u8]), ()> {
    if chunk.is_empty() || chunk[0] == b'-' || chunk[0] == b']' {
        return Err(());
    }
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err(());
        }
    }
    let (r, n) = decode_rune(chunk);
    if r == '\u{FFFD}' && n == 1 {
        return Err(());
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(());
    }
    Ok((r, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(lines: &[&str]) -> Dockerignore {
        Dockerignore::parse(Path::new(".dockerignore"), lines.join("\n").as_bytes()).unwrap()
    }

    /// What patternmatcher's tests check: `MatchesUsingParentResults` fed
    /// the results of every parent directory, without the walk's skipping.
    fn matches(ignore: &Dockerignore, path: &str) -> bool {
        let mut info = MatchInfo::default();
        for dir in parents(path.as_bytes()) {
            info = ignore.matches(dir, &info).1;
        }
        ignore.matches(path.as_bytes(), &info).0
    }

    fn texts(ignore: &Dockerignore) -> Vec<String> {
        ignore
            .patterns()
            .iter()
            .map(|p| format!("{}{}", if p.is_exception() { "!" } else { "" }, p.text()))
            .collect()
    }

    #[test]
    fn patternmatcher_table() {
        // moby/patternmatcher TestMatches: (pattern, path, matches with
        // parents). Their `exact`/`inexact` both mean "matches" here.
        let table: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "/", true),
            ("**/", "/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file/", true),
            ("**/", "dir/file/", true),
            ("**/**", "dir/file", true),
            ("**/**", "dir/file/", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/file/", true),
            ("dir/**", "dir/dir2/file", true),
            ("dir/**", "dir/dir2/file/", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            ("a\\\\", "a\\", true),
            ("a\\*b", "a*b", true),
        ];
        for &(pattern, path, expected) in table {
            let ignore = ignore(&[pattern]);
            assert_eq!(matches(&ignore, path), expected, "{pattern} vs {path}");
        }
    }

    #[test]
    fn patternmatcher_multi_pattern_table() {
        let table: &[(&[&str], &str, bool)] = &[
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (
                &["**", "!util/docker/web", "util/docker/web/foo"],
                "util/docker/web/foo",
                true,
            ),
            (
                &[
                    "**",
                    "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                ],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
            (
                &["**", "!dist/*.whl"],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
            // Older patternmatcher tests (TestPatternMatches & co).
            (&["*"], "fileutils.go", true),
            (&["*.go"], "fileutils.go", true),
            (&["!fileutils.go", "*.go"], "fileutils.go", true),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs/", "!docs/README.md"], "docs/README.md", false),
            (&["docs/*", "!docs/README.md"], "docs/README.md", false),
            (&["*.go", "!fileutils.go"], "fileutils.go", false),
        ];
        for &(patterns, path, expected) in table {
            assert_eq!(
                matches(&ignore(patterns), path),
                expected,
                "{patterns:?} vs {path}"
            );
        }
    }

    #[test]
    fn go_filepath_match_table() {
        // Go's filepath.Match tests, as patternmatcher's TestMatch runs
        // them: (pattern, name, matches, bad syntax).
        let table: &[(&str, &str, bool, bool)] = &[
            ("abc", "abc", true, false),
            ("*", "abc", true, false),
            ("*c", "abc", true, false),
            ("a*", "a", true, false),
            ("a*", "abc", true, false),
            ("a*", "ab/c", true, false),
            ("a*/b", "abc/b", true, false),
            ("a*/b", "a/c/b", false, false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
            ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
            ("ab[c]", "abc", true, false),
            ("ab[b-d]", "abc", true, false),
            ("ab[e-g]", "abc", false, false),
            ("ab[^c]", "abc", false, false),
            ("ab[^b-d]", "abc", false, false),
            ("ab[^e-g]", "abc", true, false),
            ("a\\*b", "a*b", true, false),
            ("a\\*b", "ab", false, false),
            ("a?b", "a☺b", true, false),
            ("a[^a]b", "a☺b", true, false),
            ("a???b", "a☺b", false, false),
            ("a[^a][^a][^a]b", "a☺b", false, false),
            ("[a-ζ]*", "α", true, false),
            ("*[a-ζ]", "A", false, false),
            ("a?b", "a/b", false, false),
            ("a*b", "a/b", false, false),
            ("[\\]a]", "]", true, false),
            ("[\\-]", "-", true, false),
            ("[x\\-]", "x", true, false),
            ("[x\\-]", "-", true, false),
            ("[x\\-]", "z", false, false),
            ("[\\-x]", "x", true, false),
            ("[\\-x]", "-", true, false),
            ("[\\-x]", "a", false, false),
            ("[]a]", "]", false, true),
            ("[-]", "-", false, true),
            ("[x-]", "x", false, true),
            ("[x-]", "-", false, true),
            ("[x-]", "z", false, true),
            ("[-x]", "x", false, true),
            ("[-x]", "-", false, true),
            ("[-x]", "a", false, true),
            ("\\", "a", false, true),
            ("[a-b-c]", "a", false, true),
            ("[", "a", false, true),
            ("[^", "a", false, true),
            ("[^bc", "a", false, true),
            ("a[", "a", false, true),
            ("a[", "ab", false, true),
            ("*x", "xxx", true, false),
        ];
        for &(pattern, name, expected, bad) in table {
            let parsed = Dockerignore::parse(Path::new(".dockerignore"), pattern.as_bytes());
            match parsed {
                Err(e) => assert!(bad, "{pattern}: unexpected error {e}"),
                Ok(ignore) => {
                    assert!(!bad, "{pattern}: accepted");
                    assert_eq!(matches(&ignore, name), expected, "{pattern} vs {name}");
                }
            }
        }
    }

    #[test]
    fn compiles_like_patternmatcher() {
        // patternmatcher's compileTests: the match type, and the regex.
        let regex = |p: &str| match compile(p.as_bytes()).unwrap() {
            Matcher::Regex(r) => format!("regex {}", r.as_str()),
            Matcher::Exact(e) => format!("exact {}", lossy(&e)),
            Matcher::Prefix(e) => format!("prefix {}", lossy(&e)),
            Matcher::Suffix(e) => format!("suffix {}", lossy(&e)),
        };
        assert_eq!(regex("*"), "regex ^[^/]*$");
        assert_eq!(regex("file*"), "regex ^file[^/]*$");
        assert_eq!(regex("*file"), "regex ^[^/]*file$");
        assert_eq!(regex("a*/b"), "regex ^a[^/]*/b$");
        assert_eq!(regex("**"), "suffix ");
        assert_eq!(regex("**/**"), "regex ^(.*/)?.*$");
        assert_eq!(regex("dir/**"), "prefix dir/");
        assert_eq!(regex("**/dir"), "suffix /dir");
        assert_eq!(regex("**/dir2/*"), "regex ^(.*/)?dir2/[^/]*$");
        assert_eq!(regex("**/dir2/**"), "regex ^(.*/)?dir2/.*$");
        assert_eq!(regex("**file"), "suffix file");
        assert_eq!(regex("**/file*txt"), "regex ^(.*/)?file[^/]*txt$");
        assert_eq!(regex("**/**/*.txt"), r"regex ^(.*/)?(.*/)?[^/]*\.txt$");
        assert_eq!(regex("a[b-d]e"), "regex ^a[b-d]e$");
        assert_eq!(regex(".*"), r"regex ^\.[^/]*$");
        assert_eq!(regex("abc.def"), "exact abc.def");
        assert_eq!(regex("abc?def"), "regex ^abc[^/]def$");
        assert_eq!(regex("**/foo/bar"), "suffix /foo/bar");
        assert_eq!(regex("a(b)c/def"), "exact a(b)c/def");
        assert_eq!(regex("a.|)$(}+{bc"), "exact a.|)$(}+{bc");
        assert_eq!(regex("a\\*b"), r"regex ^a\*b$");
        // Go's escapes, carried into the Rust syntax.
        assert_eq!(regex("[[]x"), r"regex ^[\[]x$");
        assert_eq!(regex("[a&&b]"), r"regex ^[a&\&b]$");
        assert_eq!(regex("x\\d"), "regex ^x[0-9]$");
        // `*` inside a class is Docker's `[^/]*`, which Go reads as the
        // class `[[^/]` repeated, then a literal `]`.
        assert_eq!(regex("[*]"), r"regex ^[\[^/]*\]$");
    }

    #[test]
    fn go_classes_keep_their_go_meaning() {
        // `!` does not negate a class in Go; `^` does.
        let bang = ignore(&["x[!a]"]);
        assert!(matches(&bang, "x!") && matches(&bang, "xa") && !matches(&bang, "xb"));
        let caret = ignore(&["x[^a]"]);
        assert!(matches(&caret, "xb") && !matches(&caret, "xa"));
        // A `[` inside a class is a literal character in Go.
        let bracket = ignore(&["x[[a]"]);
        assert!(matches(&bracket, "x[") && matches(&bracket, "xa"));
        // `\d` in a pattern reaches the regex: an ASCII digit, as in Go.
        let digit = ignore(&["v\\d"]);
        assert!(matches(&digit, "v1") && !matches(&digit, "v٣") && !matches(&digit, "vd"));
        // `**file` is a suffix comparison: it matches `myfile` too.
        assert!(matches(&ignore(&["**file"]), "dir/myfile"));
    }

    #[test]
    fn reads_the_file_like_ignorefile_read_all() {
        let text = "\u{FEFF}# comment\r\n\
                    \r\n\
                    \t spaced.txt \t\r\n\
                    \x20 # not a comment\n\
                    ./dot/./x/\n\
                    a/../b\n\
                    /leading\n\
                    //double//slash\n\
                    /\n\
                    ! keep.txt \n\
                    !/rooted\n\
                    ../up\n\
                    last-without-newline";
        let ignore = Dockerignore::parse(Path::new(".dockerignore"), text.as_bytes()).unwrap();
        assert_eq!(
            texts(&ignore),
            [
                "spaced.txt",
                "# not a comment",
                "dot/x",
                "b",
                "leading",
                "double/slash",
                "/",
                "!keep.txt",
                "!rooted",
                "../up",
                "last-without-newline",
            ]
        );
        let lines: Vec<_> = ignore
            .patterns()
            .iter()
            .map(|p| p.line().unwrap())
            .collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert!(matches(&ignore, "# not a comment"));
        assert!(matches(&ignore, "dot/x/y"));
        assert!(!matches(&ignore, "sub/leading"));
    }

    #[test]
    fn the_last_matching_pattern_decides() {
        let ignore = ignore(&["*.md", "!README*.md", "README-secret.md"]);
        assert!(matches(&ignore, "CHANGELOG.md"));
        assert!(!matches(&ignore, "README.md"));
        assert!(matches(&ignore, "README-secret.md"));
        assert!(!matches(&ignore, "src/CHANGELOG.md"));
    }

    #[test]
    fn a_parent_match_excludes_everything_inside() {
        let ignore = ignore(&["build", "**/node_modules", "tmp/*"]);
        assert!(ignore.excludes("build"));
        assert!(ignore.excludes("build/x/y.o"));
        assert!(!ignore.excludes("src/build"));
        assert!(ignore.excludes("node_modules/a/b.js"));
        assert!(ignore.excludes("a/b/node_modules/c/d.js"));
        assert!(ignore.excludes("tmp/a/b"));
        assert!(!ignore.excludes("tmp"));
        assert!(!ignore.excludes("buildx"));
    }

    #[test]
    fn the_walk_enters_an_excluded_dir_only_for_an_exception_under_it() {
        let ignore = ignore(&["build", "!build/keep.txt", "docs", "!**/README.md"]);
        assert!(ignore.walks_excluded_dir(b"build"));
        assert!(!ignore.excludes("build/keep.txt"));
        assert!(ignore.excludes("build/other.txt"));
        assert!(ignore.excludes("build"));
        // `!**/README.md` names no directory: `docs` is skipped whole, as
        // Docker does, though the pattern alone would re-include the file.
        assert!(!ignore.walks_excluded_dir(b"docs"));
        assert!(ignore.excludes("docs/README.md"));
        assert!(!ignore.excludes("README.md"));
        // Without exceptions, nothing excluded is entered.
        assert!(!self::ignore(&["build"]).walks_excluded_dir(b"build"));
        // The test is on text: `!buildx/a` does not open `build`.
        assert!(!self::ignore(&["build*", "!buildx/a"]).walks_excluded_dir(b"build"));
    }

    #[test]
    fn always_send_beats_every_pattern() {
        let mut ignore = ignore(&["*", "docker", "Dockerfile[1]"]);
        assert!(ignore.excludes("docker/Dockerfile[1]"));
        assert!(ignore.excludes(".dockerignore"));
        ignore.always_send("docker/Dockerfile[1]");
        ignore.always_send(".dockerignore");
        ignore.always_send(".dockerignore");
        assert_eq!(ignore.patterns().len(), 5);
        assert!(!ignore.excludes("docker/Dockerfile[1]"));
        assert!(!ignore.excludes(".dockerignore"));
        // The directory on the way is walked but stays excluded, and so
        // does the rest of it.
        assert!(ignore.excludes("docker"));
        assert!(ignore.walks_excluded_dir(b"docker"));
        assert!(ignore.excludes("docker/other"));
        assert!(ignore.excludes("src/main.rs"));
    }

    #[test]
    fn bad_patterns_are_input_errors_at_their_line() {
        let err = Dockerignore::parse(Path::new("ctx/.dockerignore"), b"# ok\nbuild\nsrc/[ab\n")
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(err.message, "invalid pattern 'src/[ab' in .dockerignore");
        let location = err.location.clone().unwrap();
        assert_eq!(
            (location.file, location.line),
            ("ctx/.dockerignore".into(), 3)
        );
        assert_eq!(err.causes, ["syntax error in pattern"]);
        assert!(err.hint.is_some());

        for bad in ["!", "! ", "!/", "a\\", "[]a]", "x[z-a]", "\\1"] {
            let err = Dockerignore::parse(Path::new(".dockerignore"), bad.as_bytes());
            assert!(err.is_err(), "{bad:?} accepted");
        }
        let bang = Dockerignore::parse(Path::new(".dockerignore"), b"a\n\n!\n").unwrap_err();
        assert_eq!(bang.location.clone().unwrap().line, 3);
    }

    #[test]
    fn non_utf8_names_match_like_go() {
        let ignore = ignore(&["x?y", "a*"]);
        assert!(ignore.matches(b"x\xFFy", &MatchInfo::default()).0);
        assert!(ignore.matches(b"a\xFF\xFE", &MatchInfo::default()).0);
        // Each stray byte is one character: `?` takes one.
        assert!(!ignore.matches(b"x\xFF\xFEy", &MatchInfo::default()).0);
    }

    #[test]
    fn go_clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("./", "."),
            ("../", ".."),
            ("../../", "../.."),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("//abc//", "/abc"),
            ("abc//", "abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("/../abc", "/abc"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
        ] {
            assert_eq!(lossy(&go_clean(input.as_bytes())), want, "Clean({input:?})");
        }
    }
}
