//! `hoist promote`, `hoist rollback` and `hoist status`: production's tag,
//! moved registry-side.
//!
//! A promotion reads every image's `staging-<sha7>`, `latest` and
//! `latest-previous` first, and refuses before anything moves when one is
//! missing, when a staging image names another commit than the one asked
//! for, or when `latest` would go backwards. After waiting for canaries
//! it reads `latest` again (someone else may have promoted
//! meanwhile). It writes image by image: the exact manifest bytes under the
//! tag, no layer touched. When a write fails, the writes already done are
//! put back, and every tag's state is reported. Last, `latest` is read back
//! and checked. With destinations (`--to`), the same moves happen there,
//! after a copy: see [`super::promote_to`].

use super::publish::mask_secrets;
use crate::canary;
use crate::ci::{Ci, markdown, markdown_code};
use crate::cli::{Format, PromoteArgs, RollbackArgs, StatusArgs};
use crate::config::{AwsSettings, Config, Overrides, parse_duration};
use crate::error::{Error, Result};
use crate::git;
use crate::promote::{
    self, Ancestry, Direction, Identity, LATEST, LATEST_PREVIOUS, Move, Write, parse_sha,
    staging_tag,
};
use crate::publish::STAGING_LATEST;
use crate::registry::{Manifest, REVISION_LABEL, Registry, Target};
use futures_util::future::join_all;
use git2::Repository;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The registry and the images a command works on.
pub(super) struct Setup {
    pub(super) config: Config,
    pub(super) target: Target,
    /// (image name, repository)
    pub(super) images: Vec<(String, String)>,
    /// The AWS settings `promote.to` gives this registry, so that `status`
    /// and `rollback --registry DEST` reach a destination as promote does.
    pub(super) aws: AwsSettings,
}

impl Setup {
    /// Connects to the registry, with its `promote.to` AWS settings.
    pub(super) async fn connect(&self) -> Result<Registry> {
        Registry::connect_with(&self.target, &self.aws, &env).await
    }
}

pub(super) fn setup(
    dir: &Path,
    config_file: Option<&Path>,
    registry: Option<String>,
    selected: &[String],
    promote_to: Vec<String>,
    verb: &str,
    ci: &Ci,
) -> Result<Setup> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let overrides = Overrides {
        registry,
        promote_to,
        ..Overrides::default()
    };
    let config = Config::load(dir, config_file, overrides, env)?;
    let Some(registry) = config.registry.as_deref() else {
        return Err(Error::input(format!("hoist {verb} needs a registry")).hint(
            "pass --registry HOST/PREFIX, set HOIST_REGISTRY, or set `registry:` in hoist.yaml",
        ));
    };
    let target = Target::parse(registry)?;
    mask_secrets(&config, ci, &env);
    let known: Vec<&str> = config.images.iter().map(|i| i.name.as_str()).collect();
    if let Some(name) = selected.iter().find(|name| !known.contains(&name.as_str())) {
        return Err(Error::input(format!(
            "unknown image '{name}' (this project builds: {})",
            known.join(", ")
        ))
        .hint("name one of those with --image, or add it under `images:` in hoist.yaml"));
    }
    let images = known
        .iter()
        .filter(|name| selected.is_empty() || selected.iter().any(|s| s == *name))
        .map(|name| (name.to_string(), target.repository(name)))
        .collect();
    let aws = config
        .promote_to
        .iter()
        .find(|d| Target::parse(&d.registry).is_ok_and(|t| t == target))
        .map(|d| d.aws.clone())
        .unwrap_or_default();
    Ok(Setup {
        config,
        target,
        images,
        aws,
    })
}

/// The commit a user named for promote or rollback.
pub(super) enum Named {
    /// This clone resolves the name (`HEAD`, a branch, a tag, a sha or a
    /// prefix of one): its full sha.
    Known(String),
    /// 7 to 40 hex characters this clone does not hold (a shallow CI
    /// checkout, a commit not fetched yet): only its staging tag can say
    /// more.
    Unknown(String),
}

impl Named {
    fn sha(&self) -> &str {
        match self {
            Named::Known(sha) | Named::Unknown(sha) => sha,
        }
    }
}

/// Resolves what the user typed in the local repository first, as `git`
/// would, and falls back to a bare sha only when the repository does not
/// know it. Anything else is an input error that says why.
fn named_commit(repo: Option<&Repository>, given: &str) -> Result<Named> {
    if let Some(sha) = repo.and_then(|repo| git::commit_sha(repo, given).ok()) {
        return Ok(Named::Known(sha));
    }
    match (parse_sha(given), repo) {
        (Ok(hex), _) => Ok(Named::Unknown(hex)),
        (Err(_), Some(_)) => Err(Error::input(format!(
            "'{}' names no commit of this repository",
            crate::ci::one_line(given)
        ))
        .hint(
            "give HEAD, a branch, a tag or a sha this clone holds (`git fetch` it first), \
             or 7 to 40 hex characters of a published commit",
        )),
        (Err(error), None) => Err(error.hint(
            "outside a git repository only 7 to 40 hex characters name a commit; run hoist in a \
             clone (or -C DIR) to promote HEAD, a branch or a tag",
        )),
    }
}

/// One thread: these commands wait on the registry and the canaries, and
/// starting worker threads cost more than they would save.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::failed("cannot start the async runtime").caused_by(e))
}

pub(super) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(super) fn duration(text: &str, flag: &str) -> Result<Duration> {
    parse_duration(text).ok_or_else(|| {
        Error::input(format!("{flag} '{text}' is not a duration"))
            .hint("write it like 30s, 10m or 500ms")
    })
}

/// What one image's tags name when the plan is made.
pub(super) struct Tags {
    pub(super) name: String,
    pub(super) repository: String,
    pub(super) source: Option<Manifest>,
    pub(super) latest: Option<Manifest>,
    /// The commit `latest` was built from, read when `latest` names another
    /// manifest than the source.
    pub(super) latest_revision: Option<String>,
    /// Every commit the registry names for the source image (see
    /// [`Registry::revisions`]).
    pub(super) source_revisions: Vec<String>,
    pub(super) previous: Option<Manifest>,
}

/// Reads `source_tag` (when given), `latest` and `latest-previous` of every
/// image, the commits the source names and the revision of a `latest` that
/// differs from the source; all images at once, and each image's revisions
/// as soon as its two manifests are in.
async fn read_tags(
    registry: &Registry,
    images: &[(String, String)],
    source_tag: Option<&str>,
) -> Result<Vec<Tags>> {
    let reads = images.iter().map(|(name, repository)| async move {
        let source_and_latest = async {
            let source = async {
                match source_tag {
                    Some(tag) => registry.manifest(repository, tag).await,
                    None => Ok(None),
                }
            };
            let (source, latest) =
                futures_util::try_join!(source, registry.manifest(repository, LATEST))?;
            let latest_revision = async {
                match (&source, &latest) {
                    (Some(source), Some(latest)) if latest.digest != source.digest => {
                        registry.revision(repository, latest).await
                    }
                    _ => Ok(None),
                }
            };
            let source_revisions = async {
                match &source {
                    Some(source) => registry.revisions(repository, source).await,
                    None => Ok(Vec::new()),
                }
            };
            let (revision, revisions) = futures_util::try_join!(latest_revision, source_revisions)?;
            Ok::<_, Error>((source, latest, revision, revisions))
        };
        let ((source, latest, latest_revision, source_revisions), previous) = futures_util::try_join!(
            source_and_latest,
            registry.manifest(repository, LATEST_PREVIOUS)
        )?;
        Ok(Tags {
            name: name.clone(),
            repository: repository.clone(),
            source,
            latest,
            latest_revision,
            source_revisions,
            previous,
        })
    });
    join_all(reads).await.into_iter().collect()
}

/// Where a promotion moves `latest`.
enum Where {
    /// In the registry of `--to`, `HOIST_PROMOTE_TO` or `promote.to` when
    /// one is given, else in the source.
    Configured,
    /// In the source registry (a rollback to a commit).
    Source,
}

pub fn promote(dir: &Path, config_file: Option<&Path>, args: PromoteArgs, ci: &Ci) -> Result<u8> {
    promote_in(dir, config_file, args, Where::Configured, ci)
}

fn promote_in(
    dir: &Path,
    config_file: Option<&Path>,
    args: PromoteArgs,
    place: Where,
    ci: &Ci,
) -> Result<u8> {
    let setup = setup(
        dir,
        config_file,
        args.registry.clone(),
        &args.images,
        args.to.clone(),
        "promote",
        ci,
    )?;
    // Checked before anything is read: a typo fails at once.
    duration(&args.timeout, "--timeout")?;
    duration(&args.interval, "--interval")?;
    canary::check_urls(&args.wait_for)?;
    let repo = git::open_local_first(&setup.config.root).ok();
    let named = named_commit(repo.as_ref(), &args.sha)?;
    if let Named::Unknown(hex) = &named {
        ci.say(&format!(
            "commit {hex} is unknown to this repository: looking for {} in the registry only",
            staging_tag(hex)
        ));
    }
    let sha = named.sha().to_string();
    let source_tag = staging_tag(&sha);
    let elsewhere = matches!(place, Where::Configured) && !setup.config.promote_to.is_empty();
    if args.create_repos && !elsewhere {
        return Err(Error::input(
            "--create-repos creates repositories in a promotion's destinations, and none is given",
        )
        .hint("add --to REGISTRY (or HOIST_PROMOTE_TO, promote.to); in the source, publish creates them"));
    }
    if elsewhere {
        let found = Found {
            repo: repo.as_ref(),
            named: &named,
            sha: &sha,
            source_tag: &source_tag,
        };
        return super::promote_to::promote_to(&setup, &args, found, ci);
    }

    let runtime = runtime()?;
    let started = Instant::now();
    let registry = runtime.block_on(setup.connect())?;
    let tags = runtime.block_on(read_tags(&registry, &setup.images, Some(&source_tag)))?;

    let missing: Vec<String> = tags
        .iter()
        .filter(|t| t.source.is_none())
        .map(|t| format!("{}:{source_tag}", t.repository))
        .collect();
    if !missing.is_empty() {
        return Err(not_published(&named, &missing, &setup.target));
    }

    let identities = identities(&tags, &sha, &source_tag)?;
    for (t, identity) in tags.iter().zip(&identities) {
        if *identity == Identity::Untold {
            ci.warn(&format!(
                "{}: {}:{source_tag} does not say which commit it was built from \
                 (no {REVISION_LABEL} label): promoting it unchecked",
                t.name, t.repository
            ));
        }
    }

    let directions = directions(
        repo.as_ref(),
        &setup.config.root,
        &sha,
        &tags,
        !args.allow_older,
        ci,
    );
    let refused: Vec<String> = tags
        .iter()
        .zip(&directions)
        .filter(|(_, d)| d.needs_allow_older())
        .map(|(t, d)| format!("{}: {}", t.name, d.describe(&sha[..7])))
        .collect();
    if !refused.is_empty() && !args.allow_older {
        let mut error = Error::failed(format!(
            "nothing promoted: `{LATEST}` would not move forward to {}",
            &sha[..7]
        ));
        for line in refused {
            error = error.caused_by(line);
        }
        return Err(error.hint(
            "to go back on purpose, pass --allow-older (or run `hoist rollback SHA`); \
             in CI, check out the whole history (fetch-depth: 0) so hoist can tell",
        ));
    }

    let mut manifests = HashMap::new();
    let mut moves = Vec::new();
    for t in &tags {
        let Some(source) = t.source.clone() else {
            continue;
        };
        let planned = promote::promotion(
            &t.name,
            &t.repository,
            &source.digest,
            t.latest.as_ref().map(|m| m.digest.as_str()),
            t.previous.as_ref().map(|m| m.digest.as_str()),
        );
        moves.extend(planned);
        for manifest in [Some(source), t.latest.clone(), t.previous.clone()]
            .into_iter()
            .flatten()
        {
            manifests.insert(manifest.digest.clone(), manifest);
        }
    }
    let plan = Plan {
        verb: "promote",
        sha: Some(sha.clone()),
        source_tag: Some(source_tag.clone()),
        registry: setup.target.to_string(),
        images: tags
            .iter()
            .zip(&directions)
            .zip(&identities)
            .map(|((t, direction), identity)| PlannedImage {
                name: t.name.clone(),
                repository: t.repository.clone(),
                digest: t
                    .source
                    .as_ref()
                    .map(|m| m.digest.clone())
                    .unwrap_or_default(),
                direction: Some(direction.clone()),
                identity: Some(identity.clone()),
                copy: None,
                writes: moves
                    .iter()
                    .find(|m| m.image == t.name)
                    .map(|m| m.writes.clone())
                    .unwrap_or_default(),
            })
            .collect(),
        canaries: args.wait_for.clone(),
    };
    if args.dry_run {
        return print_plan(&plan, args.format, ci);
    }

    let mut canaries = Vec::new();
    if !moves.is_empty() && !args.wait_for.is_empty() {
        canaries = wait_for_canaries(&runtime, &args, &sha, ci)?;
        // The plan's reads are as old as the wait: check them again.
        runtime.block_on(compare(&registry, &tags, &moves))?;
    }
    runtime.block_on(apply(&registry, &moves, &manifests))?;
    let report = Report::new(&plan, true, canaries, &registry, started);
    print_report(&report, args.format, ci)
}

/// Waits until every canary of `--wait-for` reports `sha`, saying so.
pub(super) fn wait_for_canaries(
    runtime: &tokio::runtime::Runtime,
    args: &PromoteArgs,
    sha: &str,
    ci: &Ci,
) -> Result<Vec<canary::Canary>> {
    let timeout = duration(&args.timeout, "--timeout")?;
    let interval = duration(&args.interval, "--interval")?;
    ci.say(&format!(
        "waiting up to {} for {} canar{} to report {}",
        args.timeout,
        args.wait_for.len(),
        if args.wait_for.len() == 1 { "y" } else { "ies" },
        &sha[..7]
    ));
    let mut print = |canary: &canary::Canary| ci.say(&format!("  {canary}"));
    runtime.block_on(canary::wait(
        &args.wait_for,
        sha,
        timeout,
        interval,
        &mut print,
    ))
}

/// The error of a promotion whose staging tags are `missing`.
pub(super) fn not_published(named: &Named, missing: &[String], target: &Target) -> Error {
    let sha = named.sha();
    let unknown = match named {
        Named::Unknown(hex) => format!("commit {hex} is unknown to this repository, and "),
        Named::Known(_) => String::new(),
    };
    Error::failed(format!(
        "nothing promoted: {unknown}{} not in {target}",
        missing.join(", "),
    ))
    .hint(format!(
        "publish that commit first, from a clean checkout of it: `git worktree add --detach ../hoist-{sha7} {sha}`, \
         then `hoist -C ../hoist-{sha7} publish --sha {sha}` (a `-dirty` image is never promoted); \
         or check the sha: `hoist status` lists the staging tags",
        sha7 = &sha[..7]
    ))
}

/// What `hoist promote` found before connecting: the commit asked for.
pub(super) struct Found<'a> {
    pub repo: Option<&'a Repository>,
    pub named: &'a Named,
    pub sha: &'a str,
    pub source_tag: &'a str,
}

/// Whether each image's source is the commit `sha` (full when the local
/// clone knows it); refuses, before anything moves, when one names another
/// commit.
pub(super) fn identities(tags: &[Tags], sha: &str, source_tag: &str) -> Result<Vec<Identity>> {
    let identities: Vec<Identity> = tags
        .iter()
        .map(|t| promote::identify(sha, &t.source_revisions))
        .collect();
    let others: Vec<String> = tags
        .iter()
        .zip(&identities)
        .filter_map(|(t, identity)| match identity {
            Identity::Other { revision } => Some(format!(
                "{}: {}:{source_tag} holds an image built from commit {revision}, not {sha}",
                t.name, t.repository
            )),
            _ => None,
        })
        .collect();
    if others.is_empty() {
        return Ok(identities);
    }
    let mut error = Error::failed(format!(
        "nothing promoted: {source_tag} holds another commit's image, not {sha}"
    ));
    for line in others {
        error = error.caused_by(line);
    }
    Err(error.hint(format!(
        "7 characters can name two commits, and a tag can be pushed by hand; republish this \
         commit with `hoist publish --sha {sha} --force`, then promote again"
    )))
}

/// How each image's promotion stands to what `latest` holds; `fetch`: deepen
/// a clone that cannot tell (not worth it when going back is allowed).
pub(super) fn directions(
    repo: Option<&Repository>,
    root: &Path,
    sha: &str,
    tags: &[Tags],
    fetch: bool,
    ci: &Ci,
) -> Vec<Direction> {
    let ancestry =
        |repo: &Repository, revision: &str| match git::descends_from(repo, sha, revision)? {
            true => Some(Ancestry::Ahead),
            false => match git::descends_from(repo, revision, sha)? {
                true => Some(Ancestry::Behind),
                false => Some(Ancestry::Diverged),
            },
        };
    let of_all = |repo: Option<&Repository>| -> Vec<Option<Ancestry>> {
        tags.iter()
            .map(|t| ancestry(repo?, t.latest_revision.as_deref()?))
            .collect()
    };
    let mut known = of_all(repo);
    // A shallow CI checkout does not hold latest's commit: fetch the
    // history once, then ask again.
    let unknown = tags.iter().zip(&known).any(|(t, ancestry)| {
        t.latest_revision
            .as_deref()
            .is_some_and(|r| !promote::same_sha(r, sha))
            && ancestry.is_none()
    });
    if fetch && unknown && repo.is_some() {
        ci.say("fetching history from origin, to tell whether latest would go backwards");
        match git::fetch_history(root) {
            // The fetched objects are new to the open repository's view:
            // open it again.
            Ok(()) => known = of_all(git::open(root).ok().as_ref()),
            Err(why) => ci.say(&format!("  {why}")),
        }
    }
    tags.iter()
        .zip(known)
        .map(|(t, ancestry)| {
            promote::judge(
                &t.source
                    .as_ref()
                    .map(|m| m.digest.clone())
                    .unwrap_or_default(),
                sha,
                t.latest
                    .as_ref()
                    .map(|m| (m.digest.as_str(), t.latest_revision.as_deref())),
                ancestry,
            )
        })
        .collect()
}

pub fn rollback(dir: &Path, config_file: Option<&Path>, args: RollbackArgs, ci: &Ci) -> Result<u8> {
    if let Some(sha) = args.sha {
        let promote_args = PromoteArgs {
            sha,
            registry: args.registry,
            images: args.images,
            wait_for: Vec::new(),
            timeout: "0s".to_string(),
            interval: "1s".to_string(),
            allow_older: true,
            dry_run: args.dry_run,
            format: args.format,
            to: Vec::new(),
            create_repos: false,
        };
        return promote_in(dir, config_file, promote_args, Where::Source, ci);
    }
    let setup = setup(
        dir,
        config_file,
        args.registry.clone(),
        &args.images,
        Vec::new(),
        "rollback",
        ci,
    )?;
    let runtime = runtime()?;
    let started = Instant::now();
    let registry = runtime.block_on(setup.connect())?;
    let tags = runtime.block_on(read_tags(&registry, &setup.images, None))?;
    let mut moves = Vec::new();
    let mut manifests = HashMap::new();
    let mut errors = Vec::new();
    for t in &tags {
        match promote::rollback(
            &t.name,
            &t.repository,
            t.latest.as_ref().map(|m| m.digest.as_str()),
            t.previous.as_ref().map(|m| m.digest.as_str()),
        ) {
            Ok(planned) => moves.extend(planned),
            Err(error) => errors.push(error),
        }
        for manifest in [t.latest.clone(), t.previous.clone()].into_iter().flatten() {
            manifests.insert(manifest.digest.clone(), manifest);
        }
    }
    if let Some(first) = errors.first() {
        let mut error = Error::failed("nothing rolled back: an image has no rollback target");
        for e in &errors {
            error = error.caused_by(e.message.clone());
        }
        return Err(error.hint(first.hint.clone().unwrap_or_default()));
    }
    let plan = Plan {
        verb: "rollback",
        sha: None,
        source_tag: Some(LATEST_PREVIOUS.to_string()),
        registry: setup.target.to_string(),
        images: tags
            .iter()
            .map(|t| PlannedImage {
                name: t.name.clone(),
                repository: t.repository.clone(),
                digest: t
                    .previous
                    .as_ref()
                    .map(|m| m.digest.clone())
                    .unwrap_or_default(),
                direction: None,
                identity: None,
                copy: None,
                writes: moves
                    .iter()
                    .find(|m| m.image == t.name)
                    .map(|m| m.writes.clone())
                    .unwrap_or_default(),
            })
            .collect(),
        canaries: Vec::new(),
    };
    if args.dry_run {
        return print_plan(&plan, args.format, ci);
    }
    runtime.block_on(apply(&registry, &moves, &manifests))?;
    let report = Report::new(&plan, true, Vec::new(), &registry, started);
    print_report(&report, args.format, ci)
}

/// Write, put back on failure, verify. `latest-previous` of every
/// image is written first, all at once: it is not production, and each
/// image's rollback target must exist before its `latest` moves. Then
/// `latest`, image by image.
pub(super) async fn apply(
    registry: &Registry,
    moves: &[Move],
    manifests: &HashMap<String, Manifest>,
) -> Result<()> {
    if moves.is_empty() {
        return Ok(());
    }
    let mut done: Vec<(&Move, &Write)> = Vec::new();
    let previous: Vec<(&Move, &Write)> = moves
        .iter()
        .filter_map(|m| m.previous().map(|w| (m, w)))
        .collect();
    let written = join_all(previous.iter().map(|(planned, write)| {
        registry.put_manifest(&planned.repository, write.tag, &manifests[&write.to])
    }))
    .await;
    let mut failed = None;
    for (step, result) in previous.into_iter().zip(written) {
        match result {
            Ok(()) => done.push(step),
            Err(cause) => failed = failed.or(Some((step, cause))),
        }
    }
    if let Some(((planned, write), cause)) = failed {
        return Err(write_failed(registry, planned, write, cause, &done, manifests).await);
    }
    for planned in moves {
        let Some(write) = planned.latest() else {
            continue;
        };
        let manifest = &manifests[&write.to];
        match registry
            .put_manifest(&planned.repository, write.tag, manifest)
            .await
        {
            Ok(()) => done.push((planned, write)),
            Err(cause) => {
                return Err(write_failed(registry, planned, write, cause, &done, manifests).await);
            }
        }
    }
    verify(registry, moves).await
}

/// The error of a failed write, once what had moved is put back: the
/// registry's answer, then where every tag is left.
async fn write_failed(
    registry: &Registry,
    planned: &Move,
    write: &Write,
    cause: Error,
    done: &[(&Move, &Write)],
    manifests: &HashMap<String, Manifest>,
) -> Error {
    let states = put_back(registry, done, manifests).await;
    let mut error = Error::failed(format!(
        "cannot point {}:{} at {}; what had moved is put back",
        planned.repository,
        write.tag,
        short(&write.to)
    ))
    .caused_by(&cause.message);
    for cause in &cause.causes {
        error = error.caused_by(cause);
    }
    if let Some(hint) = &cause.hint {
        error = error.hint(hint.clone());
    }
    for state in states {
        error = error.caused_by(state);
    }
    error
}

/// Reads `latest` again after the canary wait, right before the first
/// write: when another promotion moved it since the plan was made, stop.
/// Without a wait the plan is milliseconds old: no registry offers a
/// conditional PUT, so a window that small stays either way.
pub(super) async fn compare(registry: &Registry, tags: &[Tags], moves: &[Move]) -> Result<()> {
    let now = join_all(
        moves
            .iter()
            .map(|planned| registry.manifest(&planned.repository, LATEST)),
    )
    .await;
    for (planned, now) in moves.iter().zip(now) {
        let was = tags
            .iter()
            .find(|t| t.name == planned.image)
            .and_then(|t| t.latest.as_ref())
            .map(|m| m.digest.clone());
        let now = now?.map(|m| m.digest);
        if now != was {
            return Err(Error::failed(format!(
                "nothing moved: {}:{LATEST} changed while hoist was planning (it named {}, now {})",
                planned.repository,
                was.as_deref().map_or("nothing", short),
                now.as_deref().map_or("nothing", short)
            ))
            .hint("someone else promoted meanwhile; run `hoist status`, then promote again if still wanted"));
        }
    }
    Ok(())
}

/// Puts back the writes done, newest first; says where every tag is left.
async fn put_back(
    registry: &Registry,
    done: &[(&Move, &Write)],
    manifests: &HashMap<String, Manifest>,
) -> Vec<String> {
    let mut states = Vec::new();
    for (repository, tag, from) in promote::undo(done) {
        let name = format!("{repository}:{tag}");
        let state = match &from {
            Some(digest) => match registry
                .put_manifest(&repository, tag, &manifests[digest])
                .await
            {
                Ok(()) => format!("{name}: put back to {}", short(digest)),
                Err(e) => format!("{name}: NOT put back to {}: {e}", short(digest)),
            },
            None => match registry.delete_tag(&repository, tag).await {
                Ok(true) => format!("{name}: removed again (it did not exist before)"),
                Ok(false) => format!(
                    "{name}: left at the new manifest: it did not exist before, and this registry cannot remove a tag alone"
                ),
                Err(e) => format!("{name}: NOT removed (it did not exist before): {e}"),
            },
        };
        states.push(state);
    }
    if states.is_empty() {
        states.push("nothing had moved yet".to_string());
    }
    states
}

/// Reads every moved `latest` back: it must name what was written.
async fn verify(registry: &Registry, moves: &[Move]) -> Result<()> {
    let written: Vec<(&Move, &Write)> = moves
        .iter()
        .flat_map(|m| {
            m.writes
                .iter()
                .filter(|w| w.tag == LATEST)
                .map(move |w| (m, w))
        })
        .collect();
    let read = join_all(
        written
            .iter()
            .map(|(planned, write)| registry.manifest(&planned.repository, write.tag)),
    )
    .await;
    for ((planned, write), there) in written.into_iter().zip(read) {
        let there = there?.map(|m| m.digest);
        if there.as_deref() != Some(write.to.as_str()) {
            return Err(Error::failed(format!(
                "{}:{} names {} after the move, not {}",
                planned.repository,
                write.tag,
                there.as_deref().unwrap_or("nothing"),
                write.to
            ))
            .hint("another writer moved it at the same time; run `hoist status`"));
        }
    }
    Ok(())
}

pub(super) fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

/// The plan a dry run prints and a real run walks.
#[derive(Serialize)]
pub(super) struct Plan {
    pub(super) verb: &'static str,
    pub(super) sha: Option<String>,
    /// The tag whose manifests become `latest`.
    pub(super) source_tag: Option<String>,
    pub(super) registry: String,
    pub(super) images: Vec<PlannedImage>,
    pub(super) canaries: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct PlannedImage {
    pub(super) name: String,
    pub(super) repository: String,
    /// What `latest` will name.
    pub(super) digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) direction: Option<Direction>,
    /// Whether the source is the commit asked for, as the registry tells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) identity: Option<Identity>,
    /// What copying the image to this registry takes (`promote --to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) copy: Option<super::promote_to::CopyNeeds>,
    /// Empty when `latest` already names it.
    pub(super) writes: Vec<Write>,
}

pub(super) fn plan_lines(plan: &Plan) -> String {
    let mut text = String::new();
    for image in &plan.images {
        let how = image
            .direction
            .as_ref()
            .map(|d| {
                format!(
                    " ({})",
                    d.describe(plan.sha.as_deref().map_or("", |s| &s[..7]))
                )
            })
            .unwrap_or_default();
        if image.writes.is_empty() {
            // The direction would only say the same again.
            text.push_str(&format!(
                "{}: {LATEST} already names {}\n",
                image.name,
                short(&image.digest)
            ));
        }
        for write in &image.writes {
            text.push_str(&format!(
                "{}: {}:{} {} -> {}{}\n",
                image.name,
                image.repository,
                write.tag,
                write.from.as_deref().map_or("(none)", short),
                short(&write.to),
                if write.tag == LATEST {
                    how.as_str()
                } else {
                    ""
                }
            ));
        }
    }
    text
}

pub(super) fn print_plan(plan: &Plan, format: Format, ci: &Ci) -> Result<u8> {
    match format {
        Format::Json => {
            #[derive(Serialize)]
            struct DryRun<'a> {
                dry_run: bool,
                #[serde(flatten)]
                plan: &'a Plan,
            }
            ci.out(&super::json(&DryRun {
                dry_run: true,
                plan,
            }))
        }
        Format::Text => {
            let mut text = format!(
                "hoist {} --dry-run: {} in {} (nothing is written)\n",
                plan.verb,
                plan.source_tag.as_deref().unwrap_or_default(),
                plan.registry
            );
            text.push_str(&plan_lines(plan));
            if !plan.canaries.is_empty() {
                text.push_str(&format!(
                    "would first wait for {} canar{}: {}\n",
                    plan.canaries.len(),
                    if plan.canaries.len() == 1 { "y" } else { "ies" },
                    plan.canaries.join(", ")
                ));
            }
            ci.out(&text)
        }
    }?;
    Ok(0)
}

#[derive(Serialize)]
struct Report<'a> {
    dry_run: bool,
    #[serde(flatten)]
    plan: &'a Plan,
    /// Whether `latest` names the planned manifest of every image now.
    promoted: bool,
    /// How many tags were written.
    moved: usize,
    canaries: Vec<canary::Canary>,
    retries: u32,
    seconds: f64,
}

impl<'a> Report<'a> {
    fn new(
        plan: &'a Plan,
        promoted: bool,
        canaries: Vec<canary::Canary>,
        registry: &Registry,
        started: Instant,
    ) -> Report<'a> {
        Report {
            dry_run: false,
            plan,
            promoted,
            moved: plan.images.iter().map(|i| i.writes.len()).sum(),
            canaries,
            retries: registry.retries(),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

fn print_report(report: &Report, format: Format, ci: &Ci) -> Result<u8> {
    let plan = report.plan;
    match format {
        Format::Json => {
            // `canaries` of the plan are URLs; the report's are states.
            let mut value = serde_json::to_value(report).unwrap_or_default();
            value["canaries"] = serde_json::to_value(&report.canaries).unwrap_or_default();
            ci.out(&super::json(&value))?;
        }
        Format::Text => {
            let mut text = plan_lines(plan);
            let what = match plan.verb {
                "rollback" => format!("rolled back to {LATEST_PREVIOUS}"),
                _ => format!(
                    "{LATEST} names {}",
                    plan.source_tag.as_deref().unwrap_or_default()
                ),
            };
            text.push_str(&format!(
                "{what} for {} image(s) in {:.1} s: {} tag(s) written, {} request(s) retried\n",
                plan.images.len(),
                report.seconds,
                report.moved,
                report.retries
            ));
            ci.out(&text)?;
        }
    }
    ci.set_output("promoted", if report.promoted { "true" } else { "false" })?;
    for image in &plan.images {
        ci.set_output(&format!("{}-digest", image.name), &image.digest)?;
    }
    ci.add_summary(&summary(report))?;
    Ok(0)
}

fn summary(report: &Report) -> String {
    let plan = report.plan;
    let mut out = format!(
        "### hoist {}\n\n{} in {}: {} tag(s) written in {:.1} s\n\n",
        plan.verb,
        markdown_code(plan.source_tag.as_deref().unwrap_or_default()),
        markdown_code(&plan.registry.to_string()),
        report.moved,
        report.seconds
    );
    out.push_str("| image | tag | from | to |\n|---|---|---|---|\n");
    for image in &plan.images {
        if image.writes.is_empty() {
            out.push_str(&format!(
                "| {} | `{LATEST}` | {} | already there |\n",
                markdown(&image.name),
                markdown_code(short(&image.digest))
            ));
        }
        for write in &image.writes {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                markdown(&image.name),
                markdown_code(write.tag),
                write
                    .from
                    .as_deref()
                    .map_or("(none)".to_string(), |f| markdown_code(short(f))),
                markdown_code(short(&write.to))
            ));
        }
    }
    out.push('\n');
    out
}

// --- status --------------------------------------------------------------------

/// What one tag names.
#[derive(Clone, Serialize)]
struct TagState {
    digest: String,
    /// The commit it was built from, as far as the registry tells.
    revision: Option<String>,
    /// The `staging-<sha7>` tag on the same manifest, when it still exists.
    staging_tag: Option<String>,
    pushed_at: Option<String>,
}

#[derive(Clone, Serialize)]
struct StagingTag {
    tag: String,
    digest: Option<String>,
    pushed_at: Option<String>,
    /// Whether its image is the commit the tag names (the full sha when the
    /// local clone knows it), as the registry tells.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<Identity>,
}

#[derive(Clone, Serialize)]
struct ImageStatus {
    name: String,
    repository: String,
    latest: Option<TagState>,
    latest_previous: Option<TagState>,
    staging_latest: Option<TagState>,
    /// The newest `staging-<sha7>` tags, newest first.
    staging: Vec<StagingTag>,
    /// What is wrong with this image's tags; in JSON the rollback gap's
    /// too (see [`ImageStatus::with_gap`]).
    warnings: Vec<String>,
    /// Why a rollback of this image would have nowhere to go.
    #[serde(skip)]
    gap: Option<RollbackGap>,
}

/// Why `latest-previous` cannot serve a rollback.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RollbackGap {
    /// `latest` exists, `latest-previous` does not.
    NoPrevious,
    /// `latest-previous` names an image whose staging tag is gone.
    StagingGone,
}

impl RollbackGap {
    const ALL: [RollbackGap; 2] = [RollbackGap::NoPrevious, RollbackGap::StagingGone];

    /// The warning for the images `names` (`image (repository)`, or
    /// several joined).
    fn warning(self, names: &str) -> String {
        match self {
            RollbackGap::NoPrevious => format!(
                "{names}: {LATEST_PREVIOUS} does not exist: a rollback has no target \
                 (never promoted twice, or a lifecycle rule deleted the image)"
            ),
            RollbackGap::StagingGone => format!(
                "{names}: the staging tag of {LATEST_PREVIOUS} no longer exists: a lifecycle \
                 rule may delete its image, and the rollback target with it"
            ),
        }
    }
}

impl ImageStatus {
    /// This image as JSON shows it: the rollback gap among its warnings.
    fn with_gap(&self) -> ImageStatus {
        let mut image = self.clone();
        if let Some(gap) = self.gap {
            image
                .warnings
                .push(gap.warning(&format!("{} ({})", self.name, self.repository)));
        }
        image
    }
}

/// The warnings of every image, printed once each: a rollback gap that
/// several images share is one warning naming them all.
fn status_warnings(images: &[ImageStatus]) -> Vec<String> {
    let mut warnings: Vec<String> = images
        .iter()
        .flat_map(|image| image.warnings.iter().cloned())
        .collect();
    for gap in RollbackGap::ALL {
        let names: Vec<&str> = images
            .iter()
            .filter(|image| image.gap == Some(gap))
            .map(|image| image.name.as_str())
            .collect();
        if !names.is_empty() {
            warnings.push(gap.warning(&names.join(", ")));
        }
    }
    warnings
}

pub fn status(dir: &Path, config_file: Option<&Path>, args: StatusArgs, ci: &Ci) -> Result<u8> {
    let setup = setup(
        dir,
        config_file,
        args.registry.clone(),
        &args.images,
        Vec::new(),
        "status",
        ci,
    )?;
    let repo = git::open_local_first(&setup.config.root).ok();
    let runtime = runtime()?;
    let registry = runtime.block_on(setup.connect())?;
    let newest_first = |tags: &[&str]| match &repo {
        Some(repo) => {
            let hexes: Vec<&str> = tags.iter().map(|t| staging_hex(t).unwrap_or(t)).collect();
            git::newest_first(repo, &hexes)
        }
        None => vec![None; tags.len()],
    };
    let resolve = |hex: &str| {
        repo.as_ref()
            .and_then(|repo| git::commit_sha(repo, hex).ok())
    };
    let images = runtime.block_on(join_all(setup.images.iter().map(|(name, repository)| {
        image_status(
            &registry,
            name,
            repository,
            args.staging,
            &newest_first,
            &resolve,
        )
    })));
    let images = images.into_iter().collect::<Result<Vec<_>>>()?;
    match args.format {
        Format::Json => {
            #[derive(Serialize)]
            struct Document<'a> {
                registry: String,
                images: &'a [ImageStatus],
            }
            let images: Vec<ImageStatus> = images.iter().map(ImageStatus::with_gap).collect();
            ci.out(&super::json(&Document {
                registry: setup.target.to_string(),
                images: &images,
            }))?;
        }
        Format::Text => ci.out(&status_text(&images))?,
    }
    for warning in status_warnings(&images) {
        ci.annotate("warning", None, &warning);
    }
    Ok(0)
}

/// The hex of a `staging-<hex>` tag (`staging-latest` is not one).
fn staging_hex(tag: &str) -> Option<&str> {
    let hex = tag.strip_prefix("staging-")?;
    ((7..=40).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

async fn image_status(
    registry: &Registry,
    name: &str,
    repository: &str,
    newest: usize,
    newest_first: &dyn Fn(&[&str]) -> Vec<Option<usize>>,
    resolve: &dyn Fn(&str) -> Option<String>,
) -> Result<ImageStatus> {
    let mut states = Vec::new();
    for tag in [LATEST, LATEST_PREVIOUS, STAGING_LATEST] {
        states.push(tag_state(registry, repository, tag).await?);
    }
    let staging_latest = states.pop().flatten();
    let latest_previous = states.pop().flatten();
    let latest = states.pop().flatten();

    let staging: Vec<StagingTag> = registry
        .tags(repository)
        .await?
        .into_iter()
        .filter(|t| staging_hex(&t.name).is_some())
        .map(|t| StagingTag {
            tag: t.name,
            digest: t.digest,
            pushed_at: t.pushed_at,
            identity: None,
        })
        .collect();
    // Newest first: by push time where the registry tells it, else in the
    // commits' order where this clone knows them; unknown ones last.
    let names: Vec<&str> = staging.iter().map(|t| t.tag.as_str()).collect();
    let places = newest_first(&names);
    let mut staging: Vec<(StagingTag, Option<usize>)> = staging.into_iter().zip(places).collect();
    staging.sort_by_cached_key(|(tag, place)| {
        (
            tag.pushed_at.is_none(),
            std::cmp::Reverse(tag.pushed_at.clone()),
            place.is_none(),
            *place,
            tag.tag.clone(),
        )
    });
    let mut staging: Vec<StagingTag> = staging.into_iter().map(|(tag, _)| tag).collect();
    staging.truncate(newest);

    let mut warnings = Vec::new();
    // A listed tag whose image is another commit's (a collision of 7
    // characters, or a tag pushed by hand) would be refused by promote:
    // say so before anyone tries.
    let identities = join_all(staging.iter().map(|tag| async move {
        let Some(manifest) = registry.manifest(repository, &tag.tag).await? else {
            return Ok::<_, Error>(None);
        };
        let hex = staging_hex(&tag.tag).unwrap_or_default();
        let sha = resolve(hex).unwrap_or_else(|| hex.to_string());
        let revisions = registry.revisions(repository, &manifest).await?;
        let identity = promote::identify(&sha, &revisions);
        Ok(Some((sha, identity, manifest.digest)))
    }))
    .await;
    for (tag, identity) in staging.iter_mut().zip(identities) {
        // One unreadable tag (an index naming a manifest the registry lost)
        // is worth a warning, not the whole report.
        let (sha, identity) = match identity {
            Ok(Some((sha, identity, digest))) => {
                // A registry's tag list gives no digests; the read did.
                tag.digest.get_or_insert(digest);
                (sha, identity)
            }
            Ok(None) => continue,
            Err(error) => {
                warnings.push(format!(
                    "{name}: cannot tell which commit {repository}:{} holds: {}",
                    tag.tag, error.message
                ));
                continue;
            }
        };
        if let Identity::Other { revision } = &identity {
            warnings.push(format!(
                "{name}: {repository}:{} holds an image built from commit {revision}, not {sha}: \
                 promoting it is refused until that commit is republished \
                 (`hoist publish --sha {sha} --force`)",
                tag.tag
            ));
        }
        tag.identity = Some(identity);
    }
    let gap = match (&latest, &latest_previous) {
        (Some(_), None) => Some(RollbackGap::NoPrevious),
        (_, Some(previous)) if previous.staging_tag.is_none() => Some(RollbackGap::StagingGone),
        _ => None,
    };
    Ok(ImageStatus {
        name: name.to_string(),
        repository: repository.to_string(),
        latest,
        latest_previous,
        staging_latest,
        staging,
        warnings,
        gap,
    })
}

async fn tag_state(registry: &Registry, repository: &str, tag: &str) -> Result<Option<TagState>> {
    let Some(manifest) = registry.manifest(repository, tag).await? else {
        return Ok(None);
    };
    let revision = registry.revision(repository, &manifest).await?;
    let mut staging_tag = None;
    // A label is the registry's text: only a sha makes a tag to look for.
    if let Some(revision) = revision
        .as_deref()
        .filter(|r| staging_hex(&format!("staging-{r}")).is_some())
    {
        let candidate = promote::staging_tag(revision);
        let there = registry.manifest(repository, &candidate).await?;
        if there.is_some_and(|m| m.digest == manifest.digest) {
            staging_tag = Some(candidate);
        }
    }
    Ok(Some(TagState {
        pushed_at: registry.pushed_at(repository, &manifest.digest).await?,
        digest: manifest.digest,
        revision,
        staging_tag,
    }))
}

fn status_text(images: &[ImageStatus]) -> String {
    let mut text = String::new();
    // Tags, revisions and warnings quote the registry: each line stays one.
    let mut line = |content: String| {
        text.push_str(&crate::ci::one_line(&content));
        text.push('\n');
    };
    for image in images {
        line(format!("{} ({})", image.name, image.repository));
        for (tag, state) in [
            (LATEST, &image.latest),
            (LATEST_PREVIOUS, &image.latest_previous),
            (STAGING_LATEST, &image.staging_latest),
        ] {
            match state {
                None => line(format!("  {tag:<16} (none)")),
                Some(state) => line(format!(
                    "  {tag:<16} {}  {}{}{}",
                    short(&state.digest),
                    state
                        .revision
                        .as_deref()
                        .map_or("(commit unknown)", |r| r.get(..7).unwrap_or(r)),
                    state
                        .staging_tag
                        .as_deref()
                        .map(|t| format!("  {t}"))
                        .unwrap_or_default(),
                    state
                        .pushed_at
                        .as_deref()
                        .map(|t| format!("  pushed {t}"))
                        .unwrap_or_default()
                )),
            }
        }
        if !image.staging.is_empty() {
            line("  newest staging tags:".to_string());
            for tag in &image.staging {
                line(format!(
                    "    {}{}{}{}",
                    tag.tag,
                    tag.digest
                        .as_deref()
                        .map(|d| format!("  {}", short(d)))
                        .unwrap_or_default(),
                    tag.pushed_at
                        .as_deref()
                        .map(|t| format!("  pushed {t}"))
                        .unwrap_or_default(),
                    match &tag.identity {
                        Some(Identity::Other { revision }) => format!("  OTHER COMMIT {revision}"),
                        _ => String::new(),
                    }
                ));
            }
        }
    }
    for warning in status_warnings(images) {
        line(format!("warning: {warning}"));
    }
    text
}
