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
//!
//! A dependency is complete or it fails: its submodules are fetched at
//! their pinned commits into the same tree ([`gitmodules`] resolves their
//! URLs; a provider's token goes only to URLs under its base URL), and its
//! Git LFS files are fetched through the LFS batch API ([`lfs`]) when the
//! entry opts in, else they fail it by name: a pointer or an empty
//! submodule directory is never shipped as if it were the file.

pub mod gitmodules;
pub mod lfs;

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
/// How deep submodules may nest (a submodule's submodule is depth 2).
const MAX_SUBMODULE_DEPTH: usize = 8;

/// One dependency to fetch: where from, with which token variable, to where.
#[derive(Debug, Clone)]
pub struct Job {
    pub dep: Dependency,
    pub provider: String,
    /// `<base-url>/<repo>.git`; never holds credentials.
    pub url: String,
    pub token_env: Option<String>,
    pub target: PathBuf,
    /// Whether Git LFS files are fetched (the entry's `lfs`, else its
    /// provider's, else `git.lfs`); when false they fail the dependency.
    pub lfs: bool,
    /// Every configured provider: a submodule URL under one's base URL is
    /// fetched with that one's token, any other URL with none.
    pub origins: Vec<Origin>,
}

/// A configured provider as a submodule URL is matched against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub name: String,
    pub base_url: String,
    pub token_env: Option<String>,
}

/// Resolves every dependency's provider into a job; an unknown provider, or
/// a base URL that holds credentials or lacks a scheme hoist fetches with,
/// is an input error that names it.
pub fn plan(deps: Vec<Dependency>, git: &GitConfig, out: &Path) -> Result<Vec<Job>> {
    let origins: Vec<Origin> = git
        .providers
        .iter()
        .map(|(name, provider)| Origin {
            name: name.clone(),
            base_url: provider.base_url.trim_end_matches('/').to_string(),
            token_env: provider.token_env.clone(),
        })
        .collect();
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
            check_base_url(&name, &provider.base_url)?;
            Ok(Job {
                url: format!(
                    "{}/{}.git",
                    provider.base_url.trim_end_matches('/'),
                    dep.repo
                ),
                target: dep.target(out),
                token_env: provider.token_env.clone(),
                lfs: dep.lfs.or(provider.lfs).unwrap_or(git.lfs),
                origins: origins.clone(),
                provider: name,
                dep,
            })
        })
        .collect()
}

/// A base URL must say how to fetch: `https://`, `http://`, `file://`, or an
/// absolute path of local bare repositories. Without a scheme libgit2 fails
/// every entry alike ("unsupported URL protocol"), which is one input error
/// about the base URL, not a failure of each entry.
fn check_base_url(provider: &str, base_url: &str) -> Result<()> {
    let (scheme, rest) = base_url.split_once("://").unwrap_or(("", base_url));
    let supported = match scheme {
        "https" | "http" => !rest.trim_matches('/').is_empty(),
        "file" => rest.starts_with('/'),
        "" => base_url.starts_with('/'),
        _ => false,
    };
    if supported {
        return Ok(());
    }
    let what = if scheme.is_empty() {
        "has no scheme".to_string()
    } else {
        format!("has the scheme '{scheme}', which hoist does not fetch with")
    };
    let example = format!("https://{}", rest.trim_start_matches('/'));
    Err(Error::input(format!(
        "the base URL '{base_url}' of provider '{provider}' {what}"
    ))
    .hint(format!(
        "write it with its scheme, e.g. '{example}' (http:// for a server on loopback, \
                 file:// for local bare repositories), in --base-url, HOIST_GIT_BASE_URL or \
                 git.providers.{provider}.base_url of hoist.yaml"
    )))
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

    /// The same failure, said of a submodule: its path in the dependency
    /// and its URL (without credentials).
    fn of_submodule(self, path: &str, url: &str) -> Failure {
        Failure {
            message: format!(
                "submodule {path} ({}): {}",
                gitmodules::redact(url),
                self.message
            ),
            transient: self.transient,
        }
    }
}

/// A provider's token as read from its variable, or why there is none.
#[derive(Debug, Clone)]
enum Token {
    Set {
        variable: String,
        secret: Secret,
    },
    Unset(String),
    Empty(String),
    /// The provider names no token variable.
    NoVariable,
    /// The URL is under no provider's base URL: no token goes there.
    Foreign,
}

impl Token {
    fn read(variable: Option<&str>) -> Token {
        let Some(variable) = variable else {
            return Token::NoVariable;
        };
        match std::env::var_os(variable) {
            None => Token::Unset(variable.to_string()),
            Some(value) if value.is_empty() => Token::Empty(variable.to_string()),
            Some(_) => match Secret::from_env(variable) {
                Some(secret) => Token::Set {
                    variable: variable.to_string(),
                    secret,
                },
                // Set, but not unicode: as good as unset for a password.
                None => Token::Unset(variable.to_string()),
            },
        }
    }

    fn secret(&self) -> Option<&Secret> {
        match self {
            Token::Set { secret, .. } => Some(secret),
            _ => None,
        }
    }

    fn variable(&self) -> Option<&str> {
        match self {
            Token::Set { variable, .. } | Token::Unset(variable) | Token::Empty(variable) => {
                Some(variable)
            }
            Token::NoVariable | Token::Foreign => None,
        }
    }

    /// Why there is no token, to follow "needs authentication, and".
    fn missing(&self) -> String {
        match self {
            Token::Set { variable, .. } => format!("{variable} is set"),
            Token::Unset(variable) => format!("{variable} is not set"),
            Token::Empty(variable) => format!("{variable} is set but empty"),
            Token::NoVariable => "its provider names no token variable (token_env)".into(),
            Token::Foreign => {
                "its URL is under no configured provider's base URL, and hoist sends a \
                 provider's token only there"
                    .into()
            }
        }
    }
}

/// One repository to fetch from: the dependency's own, or a submodule's.
#[derive(Debug, Clone)]
struct Remote {
    /// What messages call it: `org/repo` or a submodule's URL.
    name: String,
    url: String,
    token: Token,
}

impl Remote {
    /// libgit2 cannot shallow-fetch over its local transport.
    fn is_local(&self) -> bool {
        self.url.starts_with("file://") || !self.url.contains("://")
    }
}

fn fetch(job: &Job, tolerant: bool) -> Report {
    let started = Instant::now();
    let remote = Remote {
        name: job.dep.repo.clone(),
        url: job.url.clone(),
        token: Token::read(job.token_env.as_deref()),
    };
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
    if job.dep.private && remote.token.secret().is_none() && tolerant {
        report.outcome = Outcome::Skipped;
        report.message = Some(format!("private, and {}", remote.token.missing()));
        report.seconds = started.elapsed().as_secs_f64();
        return report;
    }
    let mut delay = Duration::from_millis(200);
    loop {
        report.attempts += 1;
        match attempt(job, &remote) {
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
///
/// `submodules` and `lfs_files` are required when read: a tree written by
/// a hoist that shipped empty submodule directories and LFS pointers has a
/// marker without them, and is fetched anew rather than reused.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    provider: String,
    repo: String,
    #[serde(rename = "ref")]
    git_ref: String,
    kind: RefKind,
    commit: String,
    /// The submodules written into the tree, at their pinned commits; the
    /// dependency's commit pins them, so they need no comparing of their own.
    submodules: Vec<SubmoduleMarker>,
    /// How many Git LFS files were replaced by their objects.
    lfs_files: usize,
}

/// A submodule as the marker records it (its URL without credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SubmoduleMarker {
    path: String,
    url: String,
    commit: String,
}

impl Marker {
    fn of(job: &Job, resolved: &Resolved, written: &Written) -> Marker {
        Marker {
            provider: job.provider.clone(),
            repo: job.dep.repo.clone(),
            git_ref: job.dep.git_ref.to_string(),
            kind: resolved.kind,
            commit: resolved.commit.clone(),
            submodules: written.submodules.clone(),
            lfs_files: written.lfs_files,
        }
    }

    fn read(dir: &Path) -> Option<Marker> {
        let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Whether the tree came from the same provider, repo and ref, at the
    /// commit the ref resolves to now.
    fn holds(&self, job: &Job, resolved: &Resolved) -> bool {
        self.provider == job.provider
            && self.repo == job.dep.repo
            && self.git_ref == job.dep.git_ref.as_str()
            && self.kind == resolved.kind
            && self.commit == resolved.commit
    }
}

/// One clean attempt: reuse the target when its marker still holds, else
/// clone anew.
fn attempt(job: &Job, remote: &Remote) -> std::result::Result<(Outcome, String), Failure> {
    let existing = Marker::read(&job.target);
    // A pinned commit never moves, so it needs no network to compare; a
    // branch or tag is looked up on the remote, but only when there is a
    // tree to reuse (a cold clone learns the commit from its fetch).
    let known = match &job.dep.git_ref {
        GitRef::Commit(sha) => Some(Resolved {
            kind: RefKind::Commit,
            commit: sha.clone(),
        }),
        GitRef::Named(name) if existing.is_some() => Some(resolve_remote(remote, name)?),
        GitRef::Named(_) => None,
    };
    if let (Some(resolved), Some(existing)) = (&known, &existing)
        && existing.holds(job, resolved)
    {
        return Ok((Outcome::Reused, resolved.commit.clone()));
    }
    let resolved = clone(job, remote, known.as_ref())?;
    Ok((Outcome::Cloned, resolved.commit))
}

/// Lists the remote's refs (no objects) and finds the branch or tag.
fn resolve_remote(remote: &Remote, name: &str) -> std::result::Result<Resolved, Failure> {
    let mut detached =
        git2::Remote::create_detached(remote.url.as_str()).map_err(|e| failure(remote, &e))?;
    let connection = detached
        .connect_auth(Direction::Fetch, Some(callbacks(remote)), None)
        .map_err(|e| failure(remote, &e))?;
    let heads = connection.list().map_err(|e| failure(remote, &e))?;
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
            remote.name
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
/// a remote URL, can end up in the bundle. Submodules get bare repositories
/// of their own (`modules/<n>`), so that no server learns of another's
/// commits in a fetch negotiation.
fn clone(
    job: &Job,
    remote: &Remote,
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
    let result = fetch_into(job, remote, known, &temp, &tree).and_then(|(resolved, written)| {
        let marker =
            serde_json::to_string_pretty(&Marker::of(job, &resolved, &written)).unwrap_or_default();
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

/// What was written into a tree besides the dependency's own files.
#[derive(Debug, Default)]
struct Written {
    submodules: Vec<SubmoduleMarker>,
    lfs_files: usize,
}

/// Fetches the one ref (or commit) into a new bare repository in `temp`
/// and writes its tree to `tree`, with its submodules and LFS objects.
/// With `known = None` the ref is fetched as a branch and as a tag at
/// once, and whichever exists decides.
fn fetch_into(
    job: &Job,
    remote: &Remote,
    known: Option<&Resolved>,
    temp: &Path,
    tree: &Path,
) -> std::result::Result<(Resolved, Written), Failure> {
    let repo = new_repository(&temp.join("git"))?;
    let (commit, kind) = match known {
        Some(Resolved {
            kind: RefKind::Commit,
            commit: sha,
        }) => (fetch_commit(&repo, remote, sha)?, RefKind::Commit),
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
            fetch_refspecs(&repo, remote, &refspecs, true).map_err(|e| failure(remote, &e))?;
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
            let commit = reference
                .peel_to_commit()
                .map_err(|e| failure(remote, &e))?;
            (commit, kind)
        }
    };
    let mut checkout = Checkout {
        job,
        temp,
        repositories: 0,
        written: Written::default(),
        lfs: Vec::new(),
        chain: Vec::new(),
    };
    checkout.write(&repo, remote, &commit, tree, "")?;
    let Checkout {
        lfs, mut written, ..
    } = checkout;
    let pointers: Vec<&lfs::File> = lfs.iter().flat_map(|(_, files)| files).collect();
    if !pointers.is_empty() && !job.lfs {
        let files: Vec<lfs::File> = pointers.into_iter().cloned().collect();
        return Err(Failure::fatal(format!(
            "{} has Git LFS files, which would ship as pointer text: {}; set \"lfs\": true on \
             the entry (or lfs: true for its provider or git in hoist.yaml) to fetch them",
            job.dep.repo,
            lfs::list(&files)
        )));
    }
    let scratch = temp.join("lfs");
    for (owner, files) in &lfs {
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Failure::fatal(format!("cannot create {}: {e}", scratch.display())))?;
        lfs::download(&owner.name, &owner.url, &owner.token, files, &scratch)?;
        written.lfs_files += files.len();
    }
    Ok((
        Resolved {
            kind,
            commit: commit.id().to_string(),
        },
        written,
    ))
}

/// A new scratch repository, as a failure that names it.
fn new_repository(git_dir: &Path) -> std::result::Result<Repository, Failure> {
    scratch_repository(git_dir).map_err(|e| {
        Failure::fatal(format!(
            "cannot create a repository in {}: {e}",
            git_dir.display()
        ))
    })
}

/// Fetches `refspecs` from `remote` into `repo`, at depth 1 when `shallow`
/// (and the transport can).
fn fetch_refspecs(
    repo: &Repository,
    remote: &Remote,
    refspecs: &[String],
    shallow: bool,
) -> std::result::Result<(), git2::Error> {
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(remote));
    options.download_tags(AutotagOption::None);
    options.update_fetchhead(false);
    if shallow && !remote.is_local() {
        options.depth(1);
    }
    let mut anonymous = repo.remote_anonymous(&remote.url)?;
    anonymous.fetch(refspecs, Some(&mut options), None)
}

/// Fetches one commit by its sha where the server allows it, else
/// everything, and finds it.
fn fetch_commit<'r>(
    repo: &'r Repository,
    remote: &Remote,
    sha: &str,
) -> std::result::Result<git2::Commit<'r>, Failure> {
    let oid = Oid::from_str(sha).map_err(|e| failure(remote, &e))?;
    if let Err(by_sha) = fetch_refspecs(repo, remote, &[format!("+{sha}:refs/hoist/commit")], true)
    {
        if is_transient(&by_sha) || is_auth(&by_sha) {
            return Err(failure(remote, &by_sha));
        }
        let everything = [
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        ];
        fetch_refspecs(repo, remote, &everything.map(String::from), false)
            .map_err(|e| failure(remote, &e))?;
    }
    repo.find_commit(oid)
        .map_err(|_| Failure::fatal(format!("{} has no commit {sha}", remote.name)))
}

/// Writes a commit's tree and, recursively, its submodules' trees into one
/// directory, and collects the LFS pointer files met on the way.
struct Checkout<'a> {
    job: &'a Job,
    /// Where submodule repositories are made.
    temp: &'a Path,
    /// How many submodule repositories were made (their names).
    repositories: usize,
    written: Written,
    /// The pointer files, by the repository whose LFS server has them.
    lfs: Vec<(Remote, Vec<lfs::File>)>,
    /// The submodules being written, outermost first: (URL, commit).
    chain: Vec<(String, Oid)>,
}

impl Checkout<'_> {
    /// Writes `commit` of `remote` to `dir`, which is `at` in the
    /// dependency ("" for its top).
    fn write(
        &mut self,
        repo: &Repository,
        remote: &Remote,
        commit: &git2::Commit<'_>,
        dir: &Path,
        at: &str,
    ) -> std::result::Result<(), Failure> {
        let files = commit.tree().map_err(|e| failure(remote, &e))?;
        let mut found = Found::default();
        write_tree(repo, &files, dir, "", &mut found)
            .map_err(|e| Failure::fatal(format!("{}: {e}", remote.name)))?;
        let shown = |path: &str| format!("{at}{}{path}", if at.is_empty() { "" } else { "/" });
        if !found.pointers.is_empty() {
            let files = found
                .pointers
                .into_iter()
                .map(|(path, pointer)| lfs::File {
                    path: dir.join(&path),
                    shown: shown(&path),
                    pointer,
                })
                .collect();
            self.lfs.push((remote.clone(), files));
        }
        if found.gitlinks.is_empty() {
            return Ok(());
        }
        let modules = match files.get_name(".gitmodules") {
            None => Vec::new(),
            Some(entry) => {
                let blob = repo
                    .find_blob(entry.id())
                    .map_err(|e| failure(remote, &e))?;
                let text = String::from_utf8_lossy(blob.content());
                gitmodules::parse(&text).map_err(|why| {
                    Failure::fatal(format!(
                        "{}: .gitmodules of {}: {why}",
                        shown(""),
                        remote.name
                    ))
                })?
            }
        };
        for (path, oid) in found.gitlinks {
            let place = shown(&path);
            let Some(module) = modules
                .iter()
                .rev()
                .find(|m| m.path.as_deref().map(|p| p.trim_end_matches('/')) == Some(&path))
            else {
                return Err(Failure::fatal(format!(
                    "submodule {place}: .gitmodules has no entry for it, so its URL is unknown"
                )));
            };
            let Some(url) = module.url.as_deref() else {
                return Err(Failure::fatal(format!(
                    "submodule {place}: its .gitmodules entry has no url"
                )));
            };
            let url = gitmodules::resolve(url, &remote.url)
                .map_err(|why| Failure::fatal(format!("submodule {place}: its URL {why}")))?;
            let url = self
                .job
                .origins
                .iter()
                .find_map(|o| gitmodules::over_provider(&url, &o.base_url))
                .unwrap_or(url);
            let owner = self
                .job
                .origins
                .iter()
                .find(|o| gitmodules::is_under(&url, &o.base_url));
            gitmodules::check(&url, owner.is_some()).map_err(|why| {
                Failure::fatal(format!(
                    "submodule {place} ({}): {why}",
                    gitmodules::redact(&url)
                ))
            })?;
            if self.chain.len() >= MAX_SUBMODULE_DEPTH {
                return Err(Failure::fatal(format!(
                    "submodule {place} ({url}): submodules nest deeper than {MAX_SUBMODULE_DEPTH}"
                )));
            }
            if self.chain.contains(&(url.clone(), oid)) {
                return Err(Failure::fatal(format!(
                    "submodule {place} ({url}): a cycle, it contains itself"
                )));
            }
            let sub = Remote {
                name: gitmodules::redact(&url),
                token: owner.map_or(Token::Foreign, |o| Token::read(o.token_env.as_deref())),
                url,
            };
            self.repositories += 1;
            let sub_repo = new_repository(
                &self
                    .temp
                    .join("modules")
                    .join(self.repositories.to_string()),
            )?;
            let sub_commit = fetch_commit(&sub_repo, &sub, &oid.to_string())
                .map_err(|f| f.of_submodule(&place, &sub.url))?;
            self.written.submodules.push(SubmoduleMarker {
                path: place.clone(),
                url: gitmodules::redact(&sub.url),
                commit: oid.to_string(),
            });
            self.chain.push((sub.url.clone(), oid));
            self.write(&sub_repo, &sub, &sub_commit, &dir.join(&path), &place)
                .map_err(|f| match f.message.starts_with("submodule ") {
                    true => f,
                    false => f.of_submodule(&place, &sub.url),
                })?;
            self.chain.pop();
        }
        Ok(())
    }
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

/// What a tree holds besides plain files: submodules (gitlinks: path and
/// pinned commit) and LFS pointer files (path and pointer), paths relative
/// to the tree's top with `/`.
#[derive(Debug, Default)]
struct Found {
    gitlinks: Vec<(String, Oid)>,
    pointers: Vec<(String, lfs::Pointer)>,
}

/// Writes a commit's tree to `dir` (which must not exist): files with
/// their executable bit, symlinks as links, as git's checkout does; a
/// submodule's directory is left for its own tree, and noted in `found`
/// with the LFS pointer files. Done here rather than by libgit2's
/// checkout, which stats every path against an index and a workdir that a
/// fresh export does not have: on this project's machines that was most of
/// a clone's time. `at` is `dir`'s path in the tree.
fn write_tree(
    repo: &Repository,
    tree: &git2::Tree,
    dir: &Path,
    at: &str,
    found: &mut Found,
) -> std::io::Result<()> {
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
        let relative = || {
            let name = name.to_string_lossy();
            match at {
                "" => name.into_owned(),
                at => format!("{at}/{name}"),
            }
        };
        let object = |e: git2::Error| std::io::Error::other(e.message().to_string());
        match entry.filemode() {
            0o040000 => {
                let subtree = repo.find_tree(entry.id()).map_err(object)?;
                write_tree(repo, &subtree, &path, &relative(), found)?;
            }
            0o120000 => {
                let blob = repo.find_blob(entry.id()).map_err(object)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(blob.content()), &path)?;
            }
            0o160000 => found.gitlinks.push((relative(), entry.id())),
            mode => {
                let blob = repo.find_blob(entry.id()).map_err(object)?;
                let executable = mode == 0o100755;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .open(&path)?;
                std::io::Write::write_all(&mut file, blob.content())?;
                if let Some(pointer) = lfs::Pointer::parse(blob.content()) {
                    found.pointers.push((relative(), pointer));
                }
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

/// Hands the token to libgit2 once per connection, only when the server
/// asks, and only to the remote's own origin: libgit2 follows a redirect
/// of the first request, and a host it was sent to must not get the token
/// by asking for it. A second ask means the token was rejected.
fn callbacks(remote: &Remote) -> RemoteCallbacks<'_> {
    let token = remote.token.secret();
    let own = lfs::origin(&remote.url);
    let mut callbacks = RemoteCallbacks::new();
    let mut asked = 0;
    callbacks.credentials(move |url, _user, _allowed| {
        asked += 1;
        match token {
            Some(_) if lfs::origin(url) != own => Err(git2::Error::from_str(AUTH_ELSEWHERE)),
            Some(token) if asked == 1 => Cred::userpass_plaintext(TOKEN_USER, token.expose()),
            Some(_) => Err(git2::Error::from_str(AUTH_REJECTED)),
            None => Err(git2::Error::from_str(AUTH_REQUIRED)),
        }
    });
    callbacks
}

const AUTH_ELSEWHERE: &str = "hoist: a host other than the remote's asked for credentials (a redirect?); the token is not sent";

const AUTH_REJECTED: &str = "hoist: the token was rejected";
const AUTH_REQUIRED: &str = "hoist: authentication required, no token";

fn is_auth(e: &git2::Error) -> bool {
    e.message().contains(AUTH_REJECTED)
        || e.message().contains(AUTH_ELSEWHERE)
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

/// A libgit2 error as a clear message naming the repository (never the
/// token: the URL holds none, and libgit2 never sees the variable's name).
fn failure(remote: &Remote, e: &git2::Error) -> Failure {
    let message = e.message();
    let name = &remote.name;
    let url = gitmodules::redact(&remote.url);
    // A submodule is named by its URL, which its message already shows.
    let (server, not_found) = match *name == url {
        true => ("the server".to_string(), format!("no repository at {url}")),
        false => (
            name.clone(),
            format!("repository {name} not found at {url}"),
        ),
    };
    let text = if message.contains(AUTH_ELSEWHERE) {
        format!(
            "fetching {url}: another host asked for credentials (the server redirected?); \
             the token was not sent to it"
        )
    } else if message.contains(AUTH_REQUIRED) {
        format!(
            "{server} needs authentication, and {}",
            remote.token.missing()
        )
    } else if message.contains(AUTH_REJECTED) || e.code() == git2::ErrorCode::Auth {
        format!(
            "authentication failed for {name}: the server rejected the token in {}",
            remote.token.variable().unwrap_or("the token variable")
        )
    } else if message.contains("status code: 404") {
        not_found
    } else {
        format!("fetching {url}: {message}")
    };
    Failure {
        message: text,
        transient: is_transient(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_needs_a_scheme_hoist_fetches_with() {
        for ok in [
            "https://git.example.com",
            "http://127.0.0.1:8080/",
            "file:///srv/git",
            "/srv/git",
        ] {
            assert!(check_base_url("p", ok).is_ok(), "{ok}");
        }
        let err = check_base_url("moleculesai", "git.example.com").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.message.contains("'git.example.com'"), "{err}");
        assert!(err.message.contains("has no scheme"), "{err}");
        assert!(
            err.hint
                .as_deref()
                .unwrap()
                .contains("https://git.example.com"),
            "{err}"
        );
        let err = check_base_url("p", "ssh://git.example.com").unwrap_err();
        assert!(err.message.contains("scheme 'ssh'"), "{err}");
        assert!(check_base_url("p", "https://").is_err());
    }
}
