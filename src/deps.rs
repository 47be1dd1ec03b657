//! Pre-clone the manifest's git dependencies into the bundle dir: in
//! parallel, one ref each at depth 1, with the token kept out of
//! everything, safe to interrupt and cheap to re-run.
//!
//! Each dependency is fetched into a scratch repository in a temp dir beside
//! its target, its tree is written next to it (so no `.git` ever enters the
//! tree), given a marker file (provider, repo, ref, commit; never the token)
//! and renamed into place, so a target path never holds a half tree.
//! A target whose marker names the same repo, ref and remote commit is
//! reused without downloading objects. The token reaches libgit2 only
//! through the credentials callback, never a URL or a config.

use crate::config::GitConfig;
use crate::error::{Error, Result};
use crate::manifest::{Category, Dependency, GitRef};
use crate::secret::Secret;
use git2::{
    AutotagOption, Cred, Direction, ErrorClass, FetchOptions, Oid, RemoteCallbacks, Repository,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The marker file written into every cloned dependency.
pub const MARKER: &str = ".hoist-dep.json";
/// How many times a transient network failure is tried.
const ATTEMPTS: u32 = 3;
/// The user name sent with a token (forges read the token as the password).
const TOKEN_USER: &str = "x-access-token";

/// One dependency to fetch: where from, with which token variable, to where.
#[derive(Debug, Clone)]
pub struct Job {
    pub dep: Dependency,
    pub provider: String,
    /// `<base-url>/<repo>.git`; never holds credentials.
    pub url: String,
    pub token_env: Option<String>,
    pub target: PathBuf,
}

/// Resolves every dependency's provider into a job; an unknown provider is
/// an input error that names it.
pub fn plan(deps: Vec<Dependency>, git: &GitConfig, out: &Path) -> Result<Vec<Job>> {
    deps.into_iter()
        .map(|dep| {
            let name = dep
                .provider
                .clone()
                .unwrap_or_else(|| git.default_provider.clone());
            let Some(provider) = git.providers.get(&name) else {
                let known: Vec<&str> = git.providers.keys().map(String::as_str).collect();
                return Err(Error::input(format!(
                    "{} '{}' names an unknown provider '{name}' (known: {})",
                    dep.category,
                    dep.name,
                    known.join(", ")
                ))
                .hint(
                    "add it under git.providers in hoist.yaml, with its base_url and token_env",
                ));
            };
            if provider.base_url.contains('@') {
                return Err(Error::input(format!(
                    "the base URL of provider '{name}' holds credentials"
                ))
                .hint(
                    "put the token in the environment variable named by token_env, never in a URL",
                ));
            }
            Ok(Job {
                url: format!(
                    "{}/{}.git",
                    provider.base_url.trim_end_matches('/'),
                    dep.repo
                ),
                target: dep.target(out),
                token_env: provider.token_env.clone(),
                provider: name,
                dep,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Cloned,
    Reused,
    Skipped,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Cloned => "cloned",
            Outcome::Reused => "reused",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }
}

/// What happened to one dependency.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub category: Category,
    pub repo: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: Option<String>,
    pub outcome: Outcome,
    pub seconds: f64,
    pub attempts: u32,
    /// Why it failed or was skipped.
    pub message: Option<String>,
}

pub struct Options {
    pub jobs: usize,
    /// Skip `private` entries whose token is not set, instead of failing.
    pub tolerant: bool,
}

/// Fetches every job, `options.jobs` at a time; `on_done` sees each report
/// as it finishes. Returns the reports in the order of `jobs`.
pub fn fetch_all(jobs: &[Job], options: &Options, mut on_done: impl FnMut(&Report)) -> Vec<Report> {
    configure_libgit2();
    let next = AtomicUsize::new(0);
    let (sender, receiver) = mpsc::channel();
    let mut reports: Vec<Option<Report>> = vec![None; jobs.len()];
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.clamp(1, jobs.len().max(1)) {
            let sender = sender.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(index) else { break };
                    if sender.send((index, fetch(job, options.tolerant))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for (index, report) in receiver {
            on_done(&report);
            reports[index] = Some(report);
        }
    });
    reports.into_iter().flatten().collect()
}

/// Process-wide libgit2 settings for fetching: timeouts (libgit2 waits
/// forever on a silent server by default), and no user or system git
/// config, so that a developer's `url.*.insteadOf` or credential settings
/// cannot change what CI fetches, and no file is read for them per clone.
/// Owner checks are off: hoist made every repository it opens.
fn configure_libgit2() {
    use git2::ConfigLevel;
    // SAFETY: these set process-wide libgit2 options; they are called before
    // any fetch thread starts, and git2 initialises libgit2 first.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(15_000);
        let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
        let _ = git2::opts::set_verify_owner_validation(false);
        for level in [
            ConfigLevel::System,
            ConfigLevel::XDG,
            ConfigLevel::Global,
            ConfigLevel::ProgramData,
        ] {
            let _ = git2::opts::set_search_path(level, "");
        }
    }
}

/// Why one attempt failed, and whether another could succeed.
struct Failure {
    message: String,
    transient: bool,
}

impl Failure {
    fn fatal(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            transient: false,
        }
    }
}

fn fetch(job: &Job, tolerant: bool) -> Report {
    let started = Instant::now();
    let token = job.token_env.as_deref().and_then(Secret::from_env);
    let mut report = Report {
        name: job.dep.name.clone(),
        category: job.dep.category,
        repo: job.dep.repo.clone(),
        git_ref: job.dep.git_ref.to_string(),
        commit: None,
        outcome: Outcome::Failed,
        seconds: 0.0,
        attempts: 0,
        message: None,
    };
    if job.dep.private && token.is_none() && tolerant {
        report.outcome = Outcome::Skipped;
        report.message = Some(format!(
            "private, and {} is not set",
            job.token_env.as_deref().unwrap_or("no token variable")
        ));
        report.seconds = started.elapsed().as_secs_f64();
        return report;
    }
    let mut delay = Duration::from_millis(200);
    loop {
        report.attempts += 1;
        match attempt(job, token.as_ref()) {
            Ok((outcome, commit)) => {
                report.outcome = outcome;
                report.commit = Some(commit);
                report.message = None;
                break;
            }
            Err(failure) if failure.transient && report.attempts < ATTEMPTS => {
                report.message = Some(failure.message);
                std::thread::sleep(delay + jitter(delay));
                delay *= 2;
            }
            Err(failure) => {
                report.message = Some(failure.message);
                break;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Up to half of `delay`, from the clock: enough to keep parallel retries
/// from hitting the server in step.
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    delay.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// The commit a ref resolves to, and what kind of ref it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    kind: RefKind,
    commit: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RefKind {
    Branch,
    Tag,
    Commit,
}

/// The marker file: what a target dir was cloned from.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    provider: String,
    repo: String,
    #[serde(rename = "ref")]
    git_ref: String,
    kind: RefKind,
    commit: String,
}

impl Marker {
    fn of(job: &Job, resolved: &Resolved) -> Marker {
        Marker {
            provider: job.provider.clone(),
            repo: job.dep.repo.clone(),
            git_ref: job.dep.git_ref.to_string(),
            kind: resolved.kind,
            commit: resolved.commit.clone(),
        }
    }

    fn read(dir: &Path) -> Option<Marker> {
        let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// One clean attempt: reuse the target when its marker still holds, else
/// clone anew.
fn attempt(job: &Job, token: Option<&Secret>) -> std::result::Result<(Outcome, String), Failure> {
    let existing = Marker::read(&job.target);
    // A pinned commit never moves, so it needs no network to compare; a
    // branch or tag is looked up on the remote, but only when there is a
    // tree to reuse (a cold clone learns the commit from its fetch).
    let known = match &job.dep.git_ref {
        GitRef::Commit(sha) => Some(Resolved {
            kind: RefKind::Commit,
            commit: sha.clone(),
        }),
        GitRef::Named(name) if existing.is_some() => Some(resolve_remote(job, token, name)?),
        GitRef::Named(_) => None,
    };
    if let Some(resolved) = &known
        && existing.as_ref() == Some(&Marker::of(job, resolved))
    {
        return Ok((Outcome::Reused, resolved.commit.clone()));
    }
    let resolved = clone(job, token, known.as_ref())?;
    Ok((Outcome::Cloned, resolved.commit))
}

/// Lists the remote's refs (no objects) and finds the branch or tag.
fn resolve_remote(
    job: &Job,
    token: Option<&Secret>,
    name: &str,
) -> std::result::Result<Resolved, Failure> {
    let mut remote =
        git2::Remote::create_detached(job.url.as_str()).map_err(|e| failure(job, &e))?;
    let connection = remote
        .connect_auth(Direction::Fetch, Some(callbacks(token)), None)
        .map_err(|e| failure(job, &e))?;
    let heads = connection.list().map_err(|e| failure(job, &e))?;
    let find = |refname: String| {
        heads
            .iter()
            .find(|h| h.name() == refname)
            .map(|h| h.oid().to_string())
    };
    let resolved = if let Some(commit) = find(format!("refs/heads/{name}")) {
        Resolved {
            kind: RefKind::Branch,
            commit,
        }
    } else if let Some(commit) =
        find(format!("refs/tags/{name}^{{}}")).or_else(|| find(format!("refs/tags/{name}")))
    {
        Resolved {
            kind: RefKind::Tag,
            commit,
        }
    } else {
        return Err(Failure::fatal(format!(
            "{} has no branch or tag named '{name}'",
            job.dep.repo
        )));
    };
    Ok(resolved)
}

/// Clones into a temp dir beside the target, writes the marker and renames
/// the tree into place; returns what the ref resolved to.
///
/// The temp dir holds a bare repository (`git/`) and the checked-out tree
/// (`tree/`) side by side, so the tree never contains a `.git` to remove
/// (and git trees cannot hold one), and nothing of the repository, such as
/// a remote URL, can end up in the bundle.
fn clone(
    job: &Job,
    token: Option<&Secret>,
    known: Option<&Resolved>,
) -> std::result::Result<Resolved, Failure> {
    let parent = job.target.parent().expect("a target has a category dir");
    let io = |what: &str, e: std::io::Error| Failure::fatal(format!("{what}: {e}"));
    std::fs::create_dir_all(parent)
        .map_err(|e| io(&format!("cannot create {}", parent.display()), e))?;
    remove_leftovers(parent, &job.dep.name);
    let temp = parent.join(format!(
        ".{}.hoist-tmp-{}",
        job.dep.name,
        std::process::id()
    ));
    // libgit2 reads a relative checkout target against the repository.
    let temp = std::path::absolute(&temp).map_err(|e| io("cannot resolve the temp dir", e))?;
    let tree = temp.join("tree");
    let result = fetch_into(job, token, known, &temp.join("git"), &tree).and_then(|resolved| {
        let marker = serde_json::to_string_pretty(&Marker::of(job, &resolved)).unwrap_or_default();
        std::fs::write(tree.join(MARKER), marker + "\n")
            .map_err(|e| io("cannot write the marker", e))?;
        replace(&tree, &job.target).map_err(|e| {
            io(
                &format!("cannot move the clone to {}", job.target.display()),
                e,
            )
        })?;
        Ok(resolved)
    });
    let _ = std::fs::remove_dir_all(&temp);
    result
}

/// Fetches the one ref (or commit) into a new bare repository at `git_dir`
/// and checks it out into `tree`. With `known = None` the ref is fetched as
/// a branch and as a tag at once, and whichever exists decides.
fn fetch_into(
    job: &Job,
    token: Option<&Secret>,
    known: Option<&Resolved>,
    git_dir: &Path,
    tree: &Path,
) -> std::result::Result<Resolved, Failure> {
    let repo = scratch_repository(git_dir).map_err(|e| {
        Failure::fatal(format!(
            "cannot create a repository in {}: {e}",
            git_dir.display()
        ))
    })?;
    let local = job.url.starts_with("file://") || !job.url.contains("://");
    let fetch = |refspecs: &[String], shallow: bool| {
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks(token));
        options.download_tags(AutotagOption::None);
        options.update_fetchhead(false);
        // libgit2 cannot shallow-fetch over the local transport.
        if shallow && !local {
            options.depth(1);
        }
        let mut remote = repo.remote_anonymous(&job.url)?;
        remote.fetch(refspecs, Some(&mut options), None)
    };
    let (commit, resolved) = match known {
        Some(Resolved {
            kind: RefKind::Commit,
            commit: sha,
        }) => {
            let oid = Oid::from_str(sha).map_err(|e| failure(job, &e))?;
            // By sha where the server allows it, else everything and look.
            if let Err(by_sha) = fetch(&[format!("+{sha}:refs/hoist/commit")], true) {
                if is_transient(&by_sha) || is_auth(&by_sha) {
                    return Err(failure(job, &by_sha));
                }
                let everything = [
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ];
                fetch(&everything.map(String::from), false).map_err(|e| failure(job, &e))?;
            }
            let commit = repo
                .find_commit(oid)
                .map_err(|_| Failure::fatal(format!("{} has no commit {sha}", job.dep.repo)))?;
            (commit, RefKind::Commit)
        }
        known => {
            let name = job.dep.git_ref.as_str();
            let kind = known.map(|r| r.kind);
            let mut refspecs = Vec::new();
            if kind != Some(RefKind::Tag) {
                refspecs.push(format!("+refs/heads/{name}:refs/hoist/branch"));
            }
            if kind != Some(RefKind::Branch) {
                refspecs.push(format!("+refs/tags/{name}:refs/hoist/tag"));
            }
            fetch(&refspecs, true).map_err(|e| failure(job, &e))?;
            let (kind, reference) = match repo.find_reference("refs/hoist/branch") {
                Ok(reference) => (RefKind::Branch, reference),
                Err(_) => match repo.find_reference("refs/hoist/tag") {
                    Ok(reference) => (RefKind::Tag, reference),
                    Err(_) => {
                        return Err(Failure::fatal(format!(
                            "{} has no branch or tag named '{name}'",
                            job.dep.repo
                        )));
                    }
                },
            };
            let commit = reference.peel_to_commit().map_err(|e| failure(job, &e))?;
            (commit, kind)
        }
    };
    let files = commit.tree().map_err(|e| failure(job, &e))?;
    write_tree(&repo, &files, tree)
        .map_err(|e| Failure::fatal(format!("{}: {e}", job.dep.repo)))?;
    Ok(Resolved {
        kind: resolved,
        commit: commit.id().to_string(),
    })
}

/// The smallest bare repository libgit2 fetches into: `HEAD`, `objects/pack/` and
/// `refs/`. `Repository::init` also writes a config (three times, through
/// lock files), a description, hook and exclude samples and a dozen
/// directories; for a scratch repository that lives for one fetch, that was
/// a fifth of a clone's file operations.
fn scratch_repository(git_dir: &Path) -> std::io::Result<Repository> {
    std::fs::create_dir_all(git_dir.join("objects/pack"))?;
    std::fs::create_dir(git_dir.join("refs"))?;
    std::fs::write(git_dir.join("HEAD"), "ref: refs/heads/main\n")?;
    Repository::open_bare(git_dir).map_err(|e| std::io::Error::other(e.message().to_string()))
}

/// Writes a commit's tree to `dir` (which must not exist): files with
/// their executable bit, symlinks as links, submodules as empty dirs, as
/// git's checkout does. Done here rather than by libgit2's checkout, which
/// stats every path against an index and a workdir that a fresh export does
/// not have: on this project's machines that was most of a clone's time.
fn write_tree(repo: &Repository, tree: &git2::Tree, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir(dir)?;
    for entry in tree.iter() {
        let name = std::ffi::OsStr::from_bytes(entry.name_bytes());
        if name.is_empty()
            || name == "."
            || name == ".."
            || name == ".git"
            || name.as_bytes().contains(&b'/')
        {
            return Err(std::io::Error::other(format!(
                "the tree holds an unsafe path {name:?}"
            )));
        }
        let path = dir.join(name);
        let object = |e: git2::Error| std::io::Error::other(e.message().to_string());
        match entry.filemode() {
            0o040000 => {
                let subtree = repo.find_tree(entry.id()).map_err(object)?;
                write_tree(repo, &subtree, &path)?;
            }
            0o120000 => {
                let blob = repo.find_blob(entry.id()).map_err(object)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(blob.content()), &path)?;
            }
            0o160000 => std::fs::create_dir(&path)?,
            mode => {
                let blob = repo.find_blob(entry.id()).map_err(object)?;
                let executable = mode == 0o100755;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .open(&path)?;
                std::io::Write::write_all(&mut file, blob.content())?;
            }
        }
    }
    Ok(())
}

/// Removes what an interrupted run left beside `name`: temp and old dirs.
fn remove_leftovers(parent: &Path, name: &str) {
    let prefix = format!(".{name}.hoist-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Moves `temp` to `target`, replacing what is there; the target path holds
/// either the old tree or the new one, never a mix.
fn replace(temp: &Path, target: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::rename(temp, target),
        Err(e) => Err(e),
        Ok(meta) => {
            let name = target.file_name().unwrap_or_default().to_string_lossy();
            let old = target.with_file_name(format!(".{name}.hoist-old-{}", std::process::id()));
            std::fs::rename(target, &old)?;
            std::fs::rename(temp, target)?;
            if meta.is_dir() {
                std::fs::remove_dir_all(&old)
            } else {
                std::fs::remove_file(&old)
            }
        }
    }
}

/// Hands the token to libgit2 once per connection, and only when the
/// server asks; a second ask means it was rejected.
fn callbacks(token: Option<&Secret>) -> RemoteCallbacks<'_> {
    let mut callbacks = RemoteCallbacks::new();
    let mut asked = 0;
    callbacks.credentials(move |_url, _user, _allowed| {
        asked += 1;
        match token {
            Some(token) if asked == 1 => Cred::userpass_plaintext(TOKEN_USER, token.expose()),
            Some(_) => Err(git2::Error::from_str(AUTH_REJECTED)),
            None => Err(git2::Error::from_str(AUTH_REQUIRED)),
        }
    });
    callbacks
}

const AUTH_REJECTED: &str = "hoist: the token was rejected";
const AUTH_REQUIRED: &str = "hoist: authentication required, no token";

fn is_auth(e: &git2::Error) -> bool {
    e.message().contains(AUTH_REJECTED)
        || e.message().contains(AUTH_REQUIRED)
        || e.code() == git2::ErrorCode::Auth
}

fn is_transient(e: &git2::Error) -> bool {
    let message = e.message().to_ascii_lowercase();
    let server_error = ["500", "502", "503", "504", "429"]
        .iter()
        .any(|code| message.contains(&format!("status code: {code}")));
    (e.class() == ErrorClass::Net && !message.contains("status code: 4"))
        || server_error
        || message.contains("timed out")
        || message.contains("connection reset")
        || message.contains("early eof")
}

/// A libgit2 error as a clear message naming the repo (never the token:
/// the URL holds none, and libgit2 never sees the variable's name).
fn failure(job: &Job, e: &git2::Error) -> Failure {
    let variable = job.token_env.as_deref().unwrap_or("a token variable");
    let message = e.message();
    let text = if message.contains(AUTH_REQUIRED) {
        format!(
            "{} needs authentication, and {variable} is not set",
            job.dep.repo
        )
    } else if message.contains(AUTH_REJECTED) || e.code() == git2::ErrorCode::Auth {
        format!(
            "authentication failed for {}: the server rejected the token in {variable}",
            job.dep.repo
        )
    } else if message.contains("status code: 404") {
        format!("repository {} not found at {}", job.dep.repo, job.url)
    } else {
        format!("fetching {}: {message}", job.url)
    };
    Failure {
        message: text,
        transient: is_transient(e),
    }
}
