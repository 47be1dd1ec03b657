//! The local git repository, through git2: which files a push changed, the
//! files tracked at HEAD and those that differ from it, the current branch,
//! which commit descends from which (fetching the history when a shallow
//! clone cannot tell).

use crate::changes::ChangedFiles;
use crate::error::{Error, Result};
use git2::{DiffFindOptions, ObjectType, Oid, Repository, Tree};
use std::collections::BTreeSet;
use std::path::Path;

/// Declares that this process uses git only on local repositories, before
/// its first git2 call.
///
/// libgit2, built with OpenSSL for https remotes, creates its TLS context
/// when it initialises and loads the CA bundle named by `SSL_CERT_FILE` (or
/// found by openssl-probe) into it then: parsing its ~200 KB of
/// certificates took about 35 ms here, ten times the rest of `hoist
/// changes`. A process that never speaks TLS points the variable at an empty
/// file instead; one that fetches over https must not call this.
pub fn local_only() {
    // SAFETY: called from the main thread before any other thread or any
    // git2 call exists, so nothing reads the environment meanwhile.
    unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") };
}

/// [`open`] as the process's first git2 call, with libgit2's TLS set-up
/// skipped as [`local_only`] does, but the environment put back after it, so
/// that the TLS clients that run later (rustls, the git CLI of
/// [`fetch_history`]) read the user's `SSL_CERT_FILE`. For commands that
/// use git2 on the local repository only; to be called before any other
/// thread exists.
pub fn open_local_first(dir: &Path) -> Result<Repository> {
    let saved = std::env::var_os("SSL_CERT_FILE");
    local_only();
    let repo = open(dir);
    // SAFETY: as in `local_only`: no other thread exists yet.
    unsafe {
        match saved {
            Some(value) => std::env::set_var("SSL_CERT_FILE", value),
            None => std::env::remove_var("SSL_CERT_FILE"),
        }
    }
    repo
}

pub fn open(dir: &Path) -> Result<Repository> {
    Repository::discover(dir).map_err(|e| {
        Error::input(format!("{} is not in a git repository", dir.display()))
            .caused_by(e.message())
            .hint("run hoist inside a clone, or pass -C <dir>")
    })
}

/// `refs/heads/<name>` of the checked-out branch, or `None` when HEAD is
/// detached or unborn.
pub fn current_branch(repo: &Repository) -> Option<String> {
    let head = repo.head().ok()?;
    if !head.is_branch() {
        return None;
    }
    head.name().ok().map(str::to_string)
}

/// The full sha of the commit `rev` names (a sha, short or full, a branch,
/// a tag, `HEAD`).
pub fn commit_sha(repo: &Repository, rev: &str) -> Result<String> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id().to_string())
        .map_err(|e| {
            // A repository just made with `git init`: HEAD names a branch
            // that has no commit yet.
            if rev == "HEAD"
                && repo
                    .head()
                    .is_err_and(|h| h.code() == git2::ErrorCode::UnbornBranch)
            {
                return Error::input("this repository has no commits yet")
                    .hint("commit first, or pass the commit to label the images with --sha");
            }
            Error::input(format!("'{rev}' names no commit of this repository"))
                .caused_by(e.message())
                .hint("pass a commit sha with --sha, or fetch the commit first")
        })
}

/// Whether the commit `later` (a sha or a prefix of one) descends from
/// `earlier`: `None` when this clone does not know one of them (a shallow
/// CI checkout often does not), so the caller can say it cannot tell.
pub fn descends_from(repo: &Repository, later: &str, earlier: &str) -> Option<bool> {
    let commit = |rev: &str| {
        repo.revparse_single(rev)
            .ok()?
            .peel_to_commit()
            .ok()
            .map(|c| c.id())
    };
    let (later, earlier) = (commit(later)?, commit(earlier)?);
    if later == earlier {
        return Some(false);
    }
    repo.graph_descendant_of(later, earlier).ok()
}

/// Each of `revs`' place when they are listed newest first as `git log`
/// lists them: by commit time, and a commit before its ancestors when the
/// times tie (commits made in the same second). `None` for a rev this clone
/// does not hold.
pub fn newest_first(repo: &Repository, revs: &[&str]) -> Vec<Option<usize>> {
    let commits: Vec<Option<(Oid, i64)>> = revs
        .iter()
        .map(|rev| {
            let commit = repo.revparse_single(rev).ok()?.peel_to_commit().ok()?;
            Some((commit.id(), commit.time().seconds()))
        })
        .collect();
    // Within one second, the commit that descends from more of the others
    // is the newer: a total order on a line of history.
    let descended = |(id, time): (Oid, i64)| {
        commits
            .iter()
            .flatten()
            .filter(|(other, other_time)| *other_time == time && *other != id)
            .filter(|(other, _)| repo.graph_descendant_of(id, *other).unwrap_or(false))
            .count()
    };
    let mut known: Vec<(usize, i64, usize)> = commits
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c.1, descended(c))))
        .collect();
    known.sort_by_key(|&(i, time, descended)| {
        (
            std::cmp::Reverse(time),
            std::cmp::Reverse(descended),
            revs[i],
        )
    });
    let mut places = vec![None; revs.len()];
    for (place, (i, _, _)) in known.into_iter().enumerate() {
        places[i] = Some(place);
    }
    places
}

/// Fetches `origin`'s branches, with their whole history when the clone is
/// shallow (a CI checkout), so that [`descends_from`] can tell. Runs the git
/// CLI, which reads the credentials the checkout configured (an
/// `http.extraheader`, a credential helper); its output is not shown, since
/// a URL in it may carry a token.
pub fn fetch_history(root: &Path) -> std::result::Result<(), String> {
    let repo = Repository::discover(root).map_err(|e| e.message().to_string())?;
    if repo.find_remote("origin").is_err() {
        return Err("the clone has no `origin` remote to fetch from".to_string());
    }
    let mut git = std::process::Command::new("git");
    git.arg("-C")
        .arg(root)
        .args(["fetch", "--quiet", "--no-tags"]);
    if repo.is_shallow() {
        git.arg("--unshallow");
    }
    git.args(["origin", "+refs/heads/*:refs/remotes/origin/*"]);
    git.env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    match git.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`git fetch origin` failed ({status})")),
        Err(e) => Err(format!("cannot run git: {e}")),
    }
}

/// The URL of the `origin` remote, else of the only remote.
pub fn remote_url(repo: &Repository) -> Option<String> {
    let remote = repo.find_remote("origin").ok().or_else(|| {
        let names = repo.remotes().ok()?;
        match names.len() {
            1 => repo.find_remote(names.get(0).ok().flatten()?).ok(),
            _ => None,
        }
    })?;
    remote.url().ok().map(str::to_string)
}

fn is_zero_sha(rev: &str) -> bool {
    !rev.is_empty() && rev.chars().all(|c| c == '0')
}

/// The files changed between `base` and `head` (commits or revisions),
/// sorted; a rename counts both its paths. `base = None` means the head
/// commit's parent, or the empty tree for a root commit.
///
/// A base of all zeros (a new branch) or one missing from this clone (a
/// shallow checkout) gives [`ChangedFiles::Unknown`]: hoist does not guess.
pub fn changed_files(repo: &Repository, base: Option<&str>, head: &str) -> Result<ChangedFiles> {
    if is_zero_sha(head) {
        return Ok(ChangedFiles::RefDeleted);
    }
    let head_commit = repo
        .revparse_single(head)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| {
            Error::input(format!("commit {head} is not in the repository"))
                .caused_by(e.message())
                .hint("fetch it first, or check --head and the push event")
        })?;
    let head_tree = head_commit.tree().map_err(git_failed)?;
    let base_tree: Option<Tree> = match base {
        Some(base) if is_zero_sha(base) => {
            return Ok(ChangedFiles::Unknown(
                "the push created a new branch (base is all zeros)".into(),
            ));
        }
        Some(base) => match repo
            .revparse_single(base)
            .and_then(|o| o.peel(ObjectType::Commit))
        {
            Ok(commit) => Some(commit.peel_to_tree().map_err(git_failed)?),
            Err(_) => {
                return Ok(ChangedFiles::Unknown(format!(
                    "base commit {base} is not in this clone (a shallow checkout?)"
                )));
            }
        },
        None => match head_commit.parent(0) {
            Ok(parent) => Some(parent.tree().map_err(git_failed)?),
            Err(_) if head_commit.parent_count() == 0 => None,
            Err(_) => {
                return Ok(ChangedFiles::Unknown(format!(
                    "the parent of {} is not in this clone (a shallow checkout?)",
                    short(head_commit.id())
                )));
            }
        },
    };
    let mut diff = repo
        .diff_tree_to_tree(base_tree.as_ref(), Some(&head_tree), None)
        .map_err(git_failed)?;
    diff.find_similar(Some(DiffFindOptions::new().renames(true)))
        .map_err(git_failed)?;
    let mut files = BTreeSet::new();
    for delta in diff.deltas() {
        // Both sides: a rename counts its old and its new path.
        for path in [delta.old_file().path(), delta.new_file().path()]
            .into_iter()
            .flatten()
        {
            files.insert(path.to_string_lossy().into_owned());
        }
    }
    Ok(ChangedFiles::Known(files.into_iter().collect()))
}

/// The files the commit `head` changed against its first parent, as
/// `git diff-tree --root -r <head>` lists them: every file of a root commit,
/// none for a merge commit (diff-tree shows a merge only with `-m` or
/// `-c`). This is what Gitea (1.20.3 and later) decides a new branch's push
/// on, where `before` is all zeros.
pub fn commit_files(repo: &Repository, head: &str) -> Result<ChangedFiles> {
    if is_zero_sha(head) {
        return Ok(ChangedFiles::RefDeleted);
    }
    let merge = repo
        .revparse_single(head)
        .and_then(|o| o.peel_to_commit())
        .is_ok_and(|c| c.parent_count() > 1);
    if merge {
        return Ok(ChangedFiles::Known(Vec::new()));
    }
    changed_files(repo, None, head)
}

/// Checks a base commit given on the command line: one that names no
/// commit of a clone that is not shallow is a mistake in the input, not
/// missing history, so it is an error rather than a reason to fail open.
/// In a shallow clone only a sha can be missing history: an empty base (an
/// unset `${{ github.event.before }}`) or a name that is not hex is an
/// error there too.
pub fn check_base(repo: &Repository, base: &str) -> Result<()> {
    if base.trim().is_empty() {
        return Err(Error::input("--base is empty")
            .hint("pass the commit before the push (in a workflow, `${{ github.event.before }}`), or leave --base and --head out to read the push event"));
    }
    let could_be_missing_history =
        (4..=64).contains(&base.len()) && base.bytes().all(|b| b.is_ascii_hexdigit());
    if is_zero_sha(base) || (repo.is_shallow() && could_be_missing_history) {
        return Ok(());
    }
    match repo
        .revparse_single(base)
        .and_then(|o| o.peel(ObjectType::Commit))
    {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::input(format!(
            "--base '{}' names no commit of this repository",
            crate::ci::one_line(base)
        ))
        .caused_by(e.message())
        .hint(if repo.is_shallow() {
            "only a sha can be missing from a shallow clone, and this is not one: pass a sha, or \
             a branch or tag this clone holds"
        } else {
            "the clone is not shallow, so the commit is not merely missing history: pass a sha, \
             branch or tag that `git log --all` shows, or fetch it first"
        })),
    }
}

/// Why a line of a changed-file list cannot be read; `line` counts entries
/// from 1 (lines, or NUL-separated names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameListError {
    pub line: usize,
    pub message: String,
}

/// Reads a list of changed paths as git prints them: one a line, with names
/// that hold special or non-ASCII bytes C-quoted (`"i18n/r\303\251sum\303\251.json"`,
/// as `git diff --name-only` does with the default `core.quotePath`), or
/// NUL-separated and unquoted (`git diff --name-only -z`) when `nul` is set
/// or the input holds a NUL byte. Blank lines are skipped and a leading
/// `./` is dropped; the result is sorted, without duplicates.
pub fn parse_name_list(input: &[u8], nul: bool) -> std::result::Result<Vec<String>, NameListError> {
    let nul = nul || input.contains(&0);
    let entries: Vec<&[u8]> = if nul {
        input.split(|&b| b == 0).collect()
    } else {
        input.split(|&b| b == b'\n').collect()
    };
    let mut names = BTreeSet::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let line = index + 1;
        let error = |message: String| NameListError { line, message };
        let entry = if nul {
            entry
        } else {
            entry.strip_suffix(b"\r").unwrap_or(entry)
        };
        if entry.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bytes = if !nul && entry.first() == Some(&b'"') {
            unquote_c_style(entry).map_err(|m| error(m.to_string()))?
        } else {
            entry.to_vec()
        };
        let name = String::from_utf8(bytes).map_err(|_| {
            error(
                "the name is not valid UTF-8 (hoist matches names as UTF-8, as git prints them)"
                    .into(),
            )
        })?;
        let name = name.strip_prefix("./").unwrap_or(&name);
        names.insert(name.to_string());
    }
    Ok(names.into_iter().collect())
}

/// Undoes git's C-style quoting (`quote_c_style` in git's quote.c): the
/// name between double quotes, with `\\`, `\"`, `\a`, `\b`, `\f`, `\n`, `\r`,
/// `\t`, `\v` and three-digit octal bytes.
fn unquote_c_style(quoted: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    let inner = quoted
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
        .ok_or("a quoted name must end with '\"'")?;
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                let escaped = bytes.next().ok_or("'\\' at the end of a quoted name")?;
                out.push(match escaped {
                    b'\\' | b'"' => escaped,
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 0x0b,
                    b'0'..=b'3' => {
                        let mut value = u32::from(escaped - b'0');
                        for _ in 0..2 {
                            match bytes.next() {
                                Some(d @ b'0'..=b'7') => value = value * 8 + u32::from(d - b'0'),
                                _ => return Err("an octal escape needs three digits, e.g. \\303"),
                            }
                        }
                        value as u8
                    }
                    _ => return Err("unknown escape in a quoted name"),
                });
            }
            b'"' => return Err("an unescaped '\"' inside a quoted name"),
            _ => out.push(b),
        }
    }
    Ok(out)
}

/// The tracked files whose content differs from the commit at HEAD,
/// repository-relative and sorted: modified, deleted, renamed or
/// type-changed in the working tree or the index, and files staged as new.
/// Untracked and ignored files are not listed (the build context's
/// `.dockerignore` decides about those). What `git status --porcelain`
/// shows without its `??` lines.
pub fn changed_in_worktree(repo: &Repository) -> Result<Vec<String>> {
    use git2::Status;
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo.statuses(Some(&mut options)).map_err(git_failed)?;
    let differs = Status::INDEX_NEW
        | Status::INDEX_MODIFIED
        | Status::INDEX_DELETED
        | Status::INDEX_RENAMED
        | Status::INDEX_TYPECHANGE
        | Status::WT_MODIFIED
        | Status::WT_DELETED
        | Status::WT_RENAMED
        | Status::WT_TYPECHANGE;
    let mut paths = BTreeSet::new();
    for entry in statuses.iter().filter(|e| e.status().intersects(differs)) {
        // Both sides of a rename: the old path is gone from the tree, the
        // new one is not the commit's.
        let sides = [entry.head_to_index(), entry.index_to_workdir()];
        for delta in sides.into_iter().flatten() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path() {
                    paths.insert(path.to_string_lossy().into_owned());
                }
            }
        }
        if let Ok(path) = entry.path() {
            paths.insert(path.to_string());
        }
    }
    Ok(paths.into_iter().collect())
}

/// Every file tracked in HEAD's tree.
pub fn tracked_files(repo: &Repository) -> Result<Vec<String>> {
    let tree = repo
        .head()
        .and_then(|h| h.peel_to_tree())
        .map_err(|e| Error::input("the repository has no commit at HEAD").caused_by(e.message()))?;
    let mut files = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() != Some(ObjectType::Tree) {
            files.push(format!(
                "{dir}{}",
                String::from_utf8_lossy(entry.name_bytes())
            ));
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(git_failed)?;
    Ok(files)
}

fn short(id: Oid) -> String {
    id.to_string()[..7].to_string()
}

fn git_failed(e: git2::Error) -> Error {
    Error::failed("git failed").caused_by(e.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::{Signature, Time};

    /// Commits `count` times on a line, every commit in the same second.
    fn same_second_line(repo: &Repository, count: usize) -> Vec<String> {
        let who = Signature::new("t", "t@example.com", &Time::new(1_700_000_000, 0)).unwrap();
        let tree = repo
            .find_tree(repo.index().unwrap().write_tree().unwrap())
            .unwrap();
        let mut shas: Vec<String> = Vec::new();
        for n in 0..count {
            let parent = shas
                .last()
                .map(|s| repo.find_commit(Oid::from_str(s).unwrap()).unwrap());
            let parents: Vec<&git2::Commit> = parent.iter().collect();
            let id = repo
                .commit(Some("HEAD"), &who, &who, &format!("c{n}"), &tree, &parents)
                .unwrap();
            shas.push(id.to_string());
        }
        shas
    }

    #[test]
    fn the_worktree_differs_by_tracked_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        for name in ["kept", "edited", "gone", "staged", "sub/typed"] {
            write(name, "one\n");
        }
        write(".gitignore", "ignored\n");
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let who = Signature::now("t", "t@example.com").unwrap();
        repo.commit(Some("HEAD"), &who, &who, "one", &tree, &[])
            .unwrap();
        assert!(changed_in_worktree(&repo).unwrap().is_empty());

        write("edited", "two\n");
        std::fs::remove_file(dir.path().join("gone")).unwrap();
        write("staged", "two\n");
        write("added", "new\n");
        write("untracked", "new\n");
        write("ignored", "new\n");
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("staged")).unwrap();
        index.add_path(Path::new("added")).unwrap();
        index.write().unwrap();
        assert_eq!(
            changed_in_worktree(&repo).unwrap(),
            ["added", "edited", "gone", "staged"]
        );
    }

    #[test]
    fn reads_names_as_git_prints_them() {
        let list = |input: &[u8], nul| parse_name_list(input, nul);
        assert_eq!(
            list(
                b"\"i18n/r\\303\\251sum\\303\\251.json\"\n./docs/a.md\r\n\n",
                false
            )
            .unwrap(),
            ["docs/a.md", "i18n/résumé.json"]
        );
        assert_eq!(
            list(b"\"tab\\there\\\\ \\\"q\\\"\\n\"\n", false).unwrap(),
            ["tab\there\\ \"q\"\n"]
        );
        // NUL-separated: no quoting, newlines are part of names.
        assert_eq!(
            list("i18n/résumé.json\0a\nb\0".as_bytes(), false).unwrap(),
            ["a\nb", "i18n/résumé.json"]
        );
        assert_eq!(list(b"\"quoted\"", true).unwrap(), ["\"quoted\""]);
        let err = list(b"ok\n\"bad\\q\"\n", false).unwrap_err();
        assert_eq!(err.line, 2);
        let err = list(b"ok\n\"\\377\"\n", false).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("UTF-8"), "{}", err.message);
        assert_eq!(list(b"\"open\n", false).unwrap_err().line, 1);
        assert_eq!(list(b"\"\\30\"", false).unwrap_err().line, 1);
    }

    #[test]
    fn newest_first_puts_a_commit_before_its_ancestors_within_one_second() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let shas = same_second_line(&repo, 4);
        // Given in an order that the sha's letters would not fix.
        let given: Vec<&str> = vec![&shas[1][..7], &shas[3][..7], "0000000", &shas[0], &shas[2]];
        let places = newest_first(&repo, &given);
        assert_eq!(places, vec![Some(2), Some(0), None, Some(3), Some(1)]);
    }
}
