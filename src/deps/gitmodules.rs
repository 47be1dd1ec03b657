//! Submodules as a dependency's tree declares them: `.gitmodules` (git's
//! config syntax) parsed, and a submodule's URL resolved the way git
//! resolves it, then checked against what hoist will fetch.
//!
//! Pure functions: the fetch itself is in the parent module. Everything
//! here reads text that hoist did not write, so nothing is trusted: a
//! `path` only matches a gitlink that the tree itself holds (it never
//! names where to write), and a URL must be http(s), or local only when a
//! configured provider is local.

/// One `[submodule "name"]` section. `path` and `url` are `None` when the
/// section does not set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submodule {
    pub name: String,
    pub path: Option<String>,
    pub url: Option<String>,
}

/// The `[submodule "…"]` sections of a `.gitmodules` file, in order; a
/// key set twice keeps its last value, as git does. Other sections are
/// ignored. Errors name the line.
pub fn parse(text: &str) -> Result<Vec<Submodule>, String> {
    let mut modules: Vec<Submodule> = Vec::new();
    // Whether the current section is a submodule's.
    let mut current = false;
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        let rest = if let Some(header) = trimmed.strip_prefix('[') {
            let (section, subsection, rest) = section(header)
                .ok_or_else(|| format!("line {number}: a malformed section header"))?;
            current = section.eq_ignore_ascii_case("submodule") && subsection.is_some();
            if current {
                modules.push(Submodule {
                    name: subsection.unwrap_or_default(),
                    path: None,
                    url: None,
                });
            }
            rest.trim_start()
        } else {
            trimmed
        };
        if rest.is_empty() || rest.starts_with(['#', ';']) {
            continue;
        }
        let key_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let (key, after) = rest.split_at(key_end);
        if key.is_empty() || !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(format!("line {number}: expected a key"));
        }
        let after = after.trim_start();
        let value = match after.strip_prefix('=') {
            None if after.is_empty() || after.starts_with(['#', ';']) => String::from("true"),
            None => return Err(format!("line {number}: expected '=' after '{key}'")),
            Some(raw) => {
                // An odd number of backslashes at the end of a line
                // continues the value on the next.
                let mut raw = raw.trim_end_matches('\r').to_string();
                while (raw.len() - raw.trim_end_matches('\\').len()) % 2 == 1 {
                    raw.pop();
                    let Some((_, next)) = lines.next() else { break };
                    raw.push_str(next.trim_end_matches('\r'));
                }
                value(&raw).map_err(|why| format!("line {number}: {why}"))?
            }
        };
        if let (true, Some(module)) = (current, modules.last_mut()) {
            match key.to_ascii_lowercase().as_str() {
                "path" => module.path = Some(value),
                "url" => module.url = Some(value),
                _ => {}
            }
        }
    }
    Ok(modules)
}

/// `section "subsection"]rest` or `section]rest` (or the old
/// `section.subsection]`) after the `[`.
fn section(header: &str) -> Option<(String, Option<String>, &str)> {
    let name_end = header.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))?;
    let (name, after) = header.split_at(name_end);
    if let Some(rest) = after.strip_prefix(']') {
        return Some(match name.split_once('.') {
            Some((section, sub)) => (section.to_string(), Some(sub.to_string()), rest),
            None => (name.to_string(), None, rest),
        });
    }
    let quoted = after.trim_start().strip_prefix('"')?;
    let mut subsection = String::new();
    let mut chars = quoted.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => subsection.push(chars.next()?.1),
            '"' => {
                let rest = quoted[at + 1..].strip_prefix(']')?;
                return Some((name.to_string(), Some(subsection), rest));
            }
            _ => subsection.push(c),
        }
    }
    None
}

/// A value after its `=`: quotes removed, escapes read, a comment and the
/// surrounding whitespace dropped.
fn value(raw: &str) -> Result<String, String> {
    let mut out = String::new();
    // The length of `out` up to its last character inside quotes or
    // escaped: trailing whitespace after it is dropped.
    let mut kept = 0;
    let mut quoted = false;
    let mut chars = raw.trim_start().chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                kept = out.len();
            }
            '\\' => {
                let escaped = match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('b') => '\u{8}',
                    Some(c @ ('"' | '\\')) => c,
                    Some(other) => return Err(format!("an invalid escape '\\{other}'")),
                    None => return Err("a value ends in a backslash".into()),
                };
                out.push(escaped);
                kept = out.len();
            }
            '#' | ';' if !quoted => break,
            '\r' if !quoted => {}
            c => {
                out.push(c);
                if quoted || !c.is_whitespace() {
                    kept = out.len();
                }
            }
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    out.truncate(kept);
    Ok(out)
}

/// A submodule URL made absolute, as git does: `./x` and `../x` are
/// relative to the superproject's URL (`../x` of `https://h/org/app.git`
/// is `https://h/org/x`, `./x` is `https://h/org/app.git/x`); any other
/// URL is taken as written. A relative URL may not climb above the host.
pub fn resolve(url: &str, superproject: &str) -> Result<String, String> {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return Ok(url.to_string());
    }
    let base = superproject.trim_end_matches('/');
    // The part a `../` may not remove: `scheme://authority`, or nothing
    // for a plain path.
    let root_len = match base.find("://") {
        Some(at) => base[at + 3..]
            .find('/')
            .map_or(base.len(), |slash| at + 3 + slash),
        None => 0,
    };
    let (root, path) = base.split_at(root_len);
    let mut path = path.to_string();
    let mut rest = url;
    loop {
        if let Some(after) = rest.strip_prefix("../") {
            let Some(slash) = path
                .rfind('/')
                .filter(|_| !path.trim_matches('/').is_empty())
            else {
                return Err(format!("'{url}' climbs above the host of its superproject"));
            };
            path.truncate(slash);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("./") {
            rest = after;
        } else {
            break;
        }
    }
    Ok(format!("{root}{path}/{}", rest.trim_end_matches('/')))
}

/// An ssh URL (`git@host:org/x.git`, `ssh://git@host/org/x.git`) as the
/// same repository under `base_url`, when that provider's host is the
/// URL's: .gitmodules often name submodules for developers, who push over
/// ssh, while hoist fetches over https with the provider's token.
pub fn over_provider(url: &str, base_url: &str) -> Option<String> {
    let (host, path) = if let Some(rest) = url.strip_prefix("ssh://") {
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?;
        (host.split(':').next()?, path)
    } else if !url.contains("://") {
        let (authority, path) = url.split_once(':')?;
        if authority.contains('/') {
            return None;
        }
        (authority.rsplit('@').next()?, path)
    } else {
        return None;
    };
    let base = base_url.trim_end_matches('/');
    let base_host = base.split_once("://")?.1.split('/').next()?;
    let base_host = base_host.rsplit('@').next()?.split(':').next()?;
    let path = path.trim_start_matches('/');
    (!host.is_empty() && host.eq_ignore_ascii_case(base_host) && !path.is_empty())
        .then(|| format!("{base}/{path}"))
}

/// Whether `url` is under `base_url` (a provider's): the same text up to a
/// `/`, so that `https://git.example.com.evil` is not under
/// `https://git.example.com`.
pub fn is_under(url: &str, base_url: &str) -> bool {
    let base = base_url.trim_end_matches('/');
    url.strip_prefix(base)
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// Checks that a resolved submodule URL is one hoist fetches: https or
/// http, or a local one (`file://`, a path) only when a configured
/// provider holds it (`configured`), since a repository must never make
/// hoist read the machine's own files. A URL may not carry credentials.
pub fn check(url: &str, configured: bool) -> Result<(), String> {
    let scheme = url.find("://").map(|at| &url[..at]);
    if let Some(at) = url.find("://") {
        let authority = &url[at + 3..];
        let authority = &authority[..authority.find('/').unwrap_or(authority.len())];
        if authority.contains('@') {
            return Err("its URL carries credentials, which hoist does not use".into());
        }
    }
    // `a/../../b` would leave a provider's base path once the server
    // normalises it, while still looking under it here.
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    if path
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err("its URL has '.' or '..' segments past its start".into());
    }
    match scheme {
        Some("https" | "http") => Ok(()),
        Some("file") | None if configured => Ok(()),
        Some("file") | None if url.starts_with('/') || url.starts_with("file://") => {
            Err("a local URL, which hoist follows only under a configured file:// provider".into())
        }
        _ => Err("an unsupported URL: hoist fetches submodules over https or http".into()),
    }
}

/// A URL as it may appear in a message: whatever stands before an `@` in
/// its authority replaced by `***`, and no query.
pub fn redact(url: &str) -> String {
    let url = &url[..url.find(['?', '#']).unwrap_or(url.len())];
    let Some(at) = url.find("://") else {
        return match url.split_once('@') {
            Some((_, rest)) => format!("***@{rest}"),
            None => url.to_string(),
        };
    };
    let (scheme, rest) = url.split_at(at + 3);
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(user) => format!("{scheme}***@{}", &rest[user + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_git_writes_and_what_people_write() {
        let text = "[submodule \"libs/a\"]\n\tpath = libs/a\n\turl = ../a.git\n\
                    # a comment\n[core]\n\tpath = nope\n\
                    [submodule \"b \\\"q\\\"\"] path = \"vendor/b\" ; trailing\n  URL = https://h/o/b.git   \n\
                    [submodule.c]\n\tpath = c\n\tpath = c2\n\turl = \"./c\"\\\n  \"d\"\n";
        let modules = parse(text).unwrap();
        let entry = |name: &str, path: &str, url: &str| Submodule {
            name: name.into(),
            path: Some(path.into()),
            url: Some(url.into()),
        };
        assert_eq!(
            modules,
            vec![
                entry("libs/a", "libs/a", "../a.git"),
                entry("b \"q\"", "vendor/b", "https://h/o/b.git"),
                entry("c", "c2", "./c  d"),
            ]
        );
        assert!(parse("[submodule \"x\"\n").unwrap_err().contains("line 1"));
        assert!(
            parse("[submodule \"x\"]\n url = \"open\n")
                .unwrap_err()
                .contains("line 2")
        );
    }

    #[test]
    fn resolves_relative_urls_as_git_does() {
        let base = "https://git.example.com/org/app.git";
        assert_eq!(
            resolve("../lib.git", base).unwrap(),
            "https://git.example.com/org/lib.git"
        );
        assert_eq!(
            resolve("./sub/", base).unwrap(),
            "https://git.example.com/org/app.git/sub"
        );
        assert_eq!(
            resolve("../../other/x.git", base).unwrap(),
            "https://git.example.com/other/x.git"
        );
        assert!(resolve("../../../x.git", base).is_err(), "above the host");
        assert_eq!(resolve("https://h/x.git", base).unwrap(), "https://h/x.git");
        assert_eq!(
            resolve("../b.git", "file:///srv/git/org/a.git").unwrap(),
            "file:///srv/git/org/b.git"
        );
    }

    #[test]
    fn ssh_urls_of_a_providers_host_go_through_the_provider() {
        let base = "https://github.com";
        for url in [
            "git@github.com:org/x.git",
            "ssh://git@github.com/org/x.git",
            "ssh://git@github.com:22/org/x.git",
        ] {
            assert_eq!(
                over_provider(url, base).as_deref(),
                Some("https://github.com/org/x.git"),
                "{url}"
            );
        }
        assert_eq!(over_provider("git@gitlab.com:org/x.git", base), None);
        assert_eq!(over_provider("https://github.com/org/x.git", base), None);
        assert_eq!(over_provider("/srv/git/x.git", base), None);
    }

    #[test]
    fn only_a_providers_urls_are_under_it() {
        assert!(is_under(
            "https://git.example.com/o/x.git",
            "https://git.example.com/"
        ));
        assert!(!is_under(
            "https://git.example.com.evil/o/x.git",
            "https://git.example.com"
        ));
        assert!(!is_under(
            "https://git.example.com",
            "https://git.example.com"
        ));
    }

    #[test]
    fn checks_schemes_and_credentials() {
        assert!(check("https://h/x.git", false).is_ok());
        assert!(check("file:///etc", false).unwrap_err().contains("local"));
        assert!(check("/etc", false).unwrap_err().contains("local"));
        assert!(check("file:///srv/git/x.git", true).is_ok());
        assert!(
            check("git@github.com:o/x.git", false)
                .unwrap_err()
                .contains("unsupported")
        );
        assert!(
            check("https://u:tok@h/x.git", false)
                .unwrap_err()
                .contains("credentials")
        );
        assert_eq!(redact("https://u:tok@h/x.git?sig=1"), "https://***@h/x.git");
        assert_eq!(redact("git@h:o/x.git"), "***@h:o/x.git");
    }
}
