//! `hoist publish`: the CI step. Decide from the workflow's filters whether
//! the push needs images, pre-clone the dependencies, build every image,
//! push `:staging-<sha7>` through the engine, point `:staging-latest` at the
//! same manifest registry-side, and read both back from the registry.
//!
//! The plan ([`crate::publish`]) is made first and printed by `--dry-run`;
//! a real run walks it. What the registry already holds is checked before
//! anything is built, so a re-run of a published commit is a no-op.

use super::build::{
    BuiltImage, DryRun, Sent, build_all, builder_name, describe, inputs, read_tree, scan_all,
    sent_text, short_id, warn_sent,
};
use super::changes::{PushSource, decide};
use crate::build::Builder;
use crate::ci::{self, Ci, markdown, markdown_code};
use crate::cli::{Format, PublishArgs};
use crate::config::{Config, Overrides, PushVia};
use crate::context::{self, Context, Summary, human_bytes};
use crate::deps::{self, Options, Outcome};
use crate::dirty::{self, DirtyImage};
use crate::docker::{BuildSettings, Credentials, Engine, engine_credentials};
use crate::error::{Error, Result};
use crate::git;
use crate::layer_cache::LayerCache;
use crate::manifest;
use crate::publish::{self, Changes, Existing, Latest, Plan, PushRoute, PushStep, STAGING_LATEST};
use crate::push;
use crate::registry::credentials::Source;
use crate::registry::oci::Oci;
use crate::registry::retry::Retries;
use crate::registry::{Manifest, Missing, PushAuth, Registry, Target};
use crate::secret::Secret;
use crate::workflow::Workflow;
use futures_util::future::join_all;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

pub fn run(dir: &Path, config_file: Option<&Path>, args: PublishArgs, ci: &Ci) -> Result<u8> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let overrides = Overrides {
        registry: args.registry.clone(),
        dialect: args.dialect,
        push_via: args.push_via,
        chunk_size: args.chunk_size.clone(),
        ..Overrides::default()
    };
    let config = Config::load(dir, config_file, overrides, env)?;
    let Some(registry) = config.registry.as_deref() else {
        return Err(
            Error::input("hoist publish needs a registry to push to").hint(
                "pass --registry HOST/PREFIX, set HOIST_REGISTRY, or set `registry:` in hoist.yaml",
            ),
        );
    };
    let target = Target::parse(registry)?;
    mask_secrets(&config, ci, &env);

    let mut inputs = inputs(&config, args.sha.as_deref(), args.builder, false, &env)?;
    let registry_name = target.to_string();
    let build_plan = crate::build::plan(&config, Some(&registry_name), &args.images, &inputs)?;
    // Checked now, so that a missing Dockerfile fails before anything runs.
    let contexts = contexts_of(&build_plan)?;
    let given_by = if args.sha.is_some() {
        "--sha"
    } else {
        "GITHUB_SHA"
    };
    let dirty = check_tree(
        &config,
        &inputs,
        &build_plan,
        &contexts,
        given_by,
        args.allow_dirty,
    )?;
    let build_plan = if dirty.is_empty() {
        build_plan
    } else {
        inputs.dirty = true;
        crate::build::plan(&config, Some(&registry_name), &args.images, &inputs)?
    };
    let changes = if args.force {
        Changes {
            forced: true,
            decision: None,
        }
    } else {
        let workflow = Workflow::read(&config.workflow)?;
        // This commit's push: the event's range when it is for this commit,
        // else the commit against its parent.
        let source = PushSource {
            commit: Some(&inputs.sha),
            ..PushSource::default()
        };
        let decision = decide(&config, &workflow, &source)?;
        Changes {
            forced: false,
            decision: Some(decision),
        }
    };
    let templates: Vec<(&str, &str)> = config
        .tags
        .iter()
        .map(|t| ("tags: in hoist.yaml", t.as_str()))
        .chain(args.tags.iter().map(|t| ("--tag", t.as_str())))
        .collect();
    let git_ref = env("GITHUB_REF");
    let extra = crate::build::extra_tags(&templates, &inputs, git_ref.as_deref())?;
    let dependencies = if config.manifest.exists() {
        manifest::read(&config.manifest)?
    } else {
        Vec::new()
    };
    let jobs = deps::plan(dependencies, &config.git, &config.bundle_dir)?;
    let plan = publish::plan(
        changes,
        &jobs,
        build_plan,
        &target,
        publish::Settings {
            create_repos: args.create_repos,
            push: config.push,
        },
        extra,
        dirty,
    );

    if plan.registry.push.via == PushVia::Engine && plan.registry.push.chunk_size.is_some() {
        ci.warn(
            "push.chunk_size is set but the engine pushes (push.via: engine): the engine's push does not chunk; use push.via: registry to chunk",
        );
    }
    if args.dry_run {
        let sizes = scan_all(&contexts, plan.build.builder)?;
        return dry_run(&plan, &sizes, &config, args.format, ci);
    }
    if !plan.changes.selected() {
        return skipped(&plan, args.format, ci);
    }

    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| Error::failed("cannot start the async runtime").caused_by(e))?;
    let started = Instant::now();
    let registry = runtime.block_on(Registry::connect(&target, &env))?;
    let existing = runtime.block_on(check_registry(&registry, &plan, args.force, ci))?;
    let to_build: Vec<String> = plan
        .images
        .iter()
        .zip(&existing)
        .filter(|(_, e)| matches!(e, Existing::Absent | Existing::Replaced { .. }))
        .map(|(image, _)| image.name.clone())
        .collect();

    let mut built = Vec::new();
    let mut engine = None;
    if !to_build.is_empty() {
        // Reached before the slow steps, so that a dead engine fails fast.
        let connected = engine.insert(runtime.block_on(Engine::connect())?);
        fetch_deps(&jobs, usize::from(args.jobs), ci)?;
        let mut build_plan = plan.build.clone();
        build_plan
            .images
            .retain(|image| to_build.contains(&image.name));
        // The contexts are read again: the dependencies are part of them now.
        let contexts = contexts_of(&build_plan)?;
        // BuildKit asks the session for what the Dockerfile reads: only the
        // classic builder's tar is walked up front.
        let sizes = match build_plan.builder {
            Builder::Classic => scan_all(&contexts, build_plan.builder)?,
            Builder::Buildkit => vec![Summary::default(); contexts.len()],
        };
        warn_sizes(&build_plan, &sizes, ci);
        built = runtime.block_on(async {
            let auth = registry.push_auth().await?;
            if let Some(login) = &auth.login {
                mask(ci, &login.password);
            }
            let settings = BuildSettings {
                builder: build_plan.builder,
                no_cache: false,
                credentials: cache_credentials(&auth),
            };
            build_all(connected, &build_plan, contexts, settings, ci).await
        })?;
        warn_sent(&built, &sizes, ci);
    } else {
        ci.say("every image is already in the registry for this commit: nothing to build");
    }

    let push_retries = Retries::default();
    let (results, upload_retries) = runtime.block_on(push_all(
        &registry,
        engine.as_ref(),
        &plan,
        &built,
        &push_retries,
        &config.root,
        ci,
    ))?;
    let seconds = started.elapsed().as_secs_f64();
    let retries = registry.retries() + push_retries.count() + upload_retries;
    report(&plan, &results, retries, seconds, args.format, ci)
}

/// Refuses to publish as commit `sha` anything but that commit (input
/// errors): a sha that is not HEAD (the working tree is what is built), a
/// tree outside a repository, and tracked files the builds read that
/// differ from HEAD unless `allow_dirty`. Returns those files' images when
/// allowed.
fn check_tree(
    config: &Config,
    inputs: &crate::build::Inputs,
    plan: &crate::build::Plan,
    contexts: &[Context],
    given_by: &str,
    allow_dirty: bool,
) -> Result<Vec<DirtyImage>> {
    let Some(tree) = read_tree(config, &plan.images, contexts)? else {
        return Err(Error::input(format!(
            "cannot tell whether {} holds commit {}: it is not in a git repository",
            config.root.display(),
            inputs.sha7()
        ))
        .hint("publish from a git checkout of the commit (-C DIR): hoist compares the tree with it before labelling images as that commit"));
    };
    if tree.head != inputs.sha {
        let sha7 = inputs.sha7();
        return Err(Error::input(format!(
            "{given_by} names commit {sha7}, but the checked-out commit is {}: hoist builds the working tree, so it publishes only HEAD",
            tree.head.get(..7).unwrap_or(&tree.head)
        ))
        .hint(format!(
            "publish {sha7} from a checkout of it: `git worktree add --detach ../hoist-{sha7} {}` then `hoist -C ../hoist-{sha7} publish` (and `git worktree remove ../hoist-{sha7}` after)",
            inputs.sha
        )));
    }
    if tree.dirty.is_empty() || allow_dirty {
        return Ok(tree.dirty);
    }
    Err(dirty::refusal(&tree.dirty, &inputs.sha))
}

/// Every image's build context, with its Dockerfile checked.
fn contexts_of(plan: &crate::build::Plan) -> Result<Vec<Context>> {
    plan.images
        .iter()
        .map(|image| Context::new(&image.context, &image.dockerfile))
        .collect()
}

fn mask(ci: &Ci, secret: &Secret) {
    ci.mask(secret.expose());
}

/// Tells the runner to mask every secret hoist may hold, before anything
/// could print one: the git tokens, the registry password, the AWS keys.
pub(super) fn mask_secrets(config: &Config, ci: &Ci, env: &dyn Fn(&str) -> Option<String>) {
    let mut names: Vec<&str> = config
        .git
        .providers
        .values()
        .filter_map(|p| p.token_env.as_deref())
        .collect();
    names.extend([
        "HOIST_REGISTRY_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ]);
    for name in names {
        if let Some(value) = env(name) {
            mask(ci, &Secret::new(value));
        }
    }
    // One registry's password each (`HOIST_REGISTRY_PASSWORD_<HOST>`): their
    // names are not known ahead.
    for (name, _) in std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
        .filter(|(name, _)| name.starts_with("HOIST_REGISTRY_PASSWORD_"))
    {
        if let Some(value) = env(&name) {
            mask(ci, &Secret::new(value));
        }
    }
}

/// What each image's `staging-<sha7>` names now; conflicts stop the run
/// before anything is built.
async fn check_registry(
    registry: &Registry,
    plan: &Plan,
    force: bool,
    ci: &Ci,
) -> Result<Vec<Existing>> {
    let missing = if plan.registry.create_repos {
        Missing::Create
    } else {
        Missing::Fail
    };
    let mut judged = Vec::new();
    for image in &plan.images {
        if let Some(created) = registry
            .ensure_repository(&image.repository, missing)
            .await?
        {
            ci.say(&format!(
                "{}: repository {}: {created}",
                image.name, image.repository
            ));
        }
        let found = registry
            .manifest(&image.repository, &image.staging_tag)
            .await?;
        let existing = match found {
            None => Existing::Absent,
            // A dirty tag names no commit's image: each dirty build replaces it.
            Some(manifest) if plan.build.dirty => Existing::Replaced {
                digest: manifest.digest,
            },
            Some(manifest) => {
                let revision = registry.revision(&image.repository, &manifest).await?;
                publish::judge_existing(
                    Some((&manifest.digest, revision.as_deref())),
                    &plan.sha,
                    force,
                )
            }
        };
        match &existing {
            Existing::Published { digest } => ci.say(&format!(
                "{}: {} already names {} from this commit: nothing to push",
                image.name, image.staging_reference, digest
            )),
            Existing::Replaced { digest } if plan.build.dirty => ci.say(&format!(
                "{}: {} names {digest}, an earlier build of a dirty tree: replacing it",
                image.name, image.staging_reference
            )),
            Existing::Replaced { digest } => ci.say(&format!(
                "{}: {} names {digest}, not built from this commit; --force: replacing it",
                image.name, image.staging_reference
            )),
            _ => {}
        }
        judged.push(existing);
    }
    let conflicts: Vec<String> = plan
        .images
        .iter()
        .zip(&judged)
        .filter_map(|(image, existing)| match existing {
            Existing::Conflict { digest, revision } => Some(format!(
                "{} names {digest}, {}",
                image.staging_reference,
                match revision {
                    Some(revision) => format!("built from commit {revision}"),
                    None => "an image that does not say which commit it was built from".to_string(),
                }
            )),
            _ => None,
        })
        .collect();
    if conflicts.is_empty() {
        return Ok(judged);
    }
    let mut error = Error::failed(format!(
        "the staging tag of commit {} already holds another image; nothing was built or pushed",
        plan.sha
    ));
    for conflict in conflicts {
        error = error.caused_by(conflict);
    }
    Err(error.hint(
        "a staging tag names one commit's image; check what pushed it, and run with --force to replace it",
    ))
}

/// Pre-clones the dependencies into the bundle dir, in a log group.
fn fetch_deps(jobs: &[deps::Job], parallel: usize, ci: &Ci) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    ci.group(&format!("deps ({} dependencies)", jobs.len()));
    let started = Instant::now();
    let options = Options {
        jobs: parallel,
        tolerant: false,
    };
    let reports = deps::fetch_all(jobs, &options, |report| {
        let line = format!(
            "deps | {:<8} {}/{} {}@{}{}",
            report.outcome.as_str(),
            report.category.dir(),
            report.name,
            report.repo,
            report.git_ref,
            report
                .message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        ci.say(&ci::one_line(&line));
    });
    ci.end_group();
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .collect();
    let count = |outcome| reports.iter().filter(|r| r.outcome == outcome).count();
    ci.say(&format!(
        "deps: {} cloned, {} reused, {} failed in {:.2} s",
        count(Outcome::Cloned),
        count(Outcome::Reused),
        failed.len(),
        started.elapsed().as_secs_f64()
    ));
    if failed.is_empty() {
        return Ok(());
    }
    let mut error = Error::failed(format!(
        "{} of {} dependencies failed; nothing was built or pushed",
        failed.len(),
        reports.len()
    ));
    for report in failed {
        error = error.caused_by(format!(
            "{}/{} ({}@{}): {}",
            report.category.dir(),
            report.name,
            report.repo,
            report.git_ref,
            report.message.as_deref().unwrap_or("unknown failure")
        ));
    }
    Err(error.hint("fix the entries above (`hoist deps` shows the same), then run again"))
}

fn warn_sizes(plan: &crate::build::Plan, sizes: &[Summary], ci: &Ci) {
    for (image, size) in plan.images.iter().zip(sizes) {
        if let Some(warning) = context::size_warning(size) {
            let text = format!("{}: {warning}", image.name);
            ci.warn(&text);
        }
    }
}

/// The login for pulling cache sources from the registry being pushed to.
fn cache_credentials(auth: &PushAuth) -> Credentials {
    let mut credentials = Credentials::new();
    if auth.login.is_some() {
        credentials.insert(auth.server.clone(), engine_credentials(auth));
    }
    credentials
}

/// One published image: what the registry says now.
#[derive(Debug, Serialize)]
struct Published {
    name: String,
    /// The registry's manifest digest of `staging-<sha7>`.
    digest: String,
    /// `repository@digest`.
    reference: String,
    tags: Vec<String>,
    /// Built and pushed by this run, or found already published.
    built: bool,
    /// What became of `staging-latest`; absent for a dirty build, which
    /// leaves it alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    staging_latest: Option<LatestOutcome>,
    /// Config and layers, as the manifest declares them.
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    build_seconds: f64,
    /// What of the build context reached the engine; absent when nothing
    /// was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    context_sent: Option<Sent>,
    push_seconds: f64,
    /// What hoist's own upload moved; absent when the engine pushed or
    /// nothing was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<Uploaded>,
}

/// What hoist's upload of one image moved.
#[derive(Debug, Clone, Serialize)]
struct Uploaded {
    /// Blob bytes sent (a resent chunk counts again).
    bytes: u64,
    /// Blobs uploaded, skipped (the repository held them) and mounted
    /// (from a sibling repository).
    blobs_uploaded: usize,
    blobs_skipped: usize,
    blobs_mounted: usize,
    seconds: f64,
}

impl From<&push::Pushed> for Uploaded {
    fn from(pushed: &push::Pushed) -> Uploaded {
        Uploaded {
            bytes: pushed.bytes_uploaded,
            blobs_uploaded: pushed.blobs_uploaded,
            blobs_skipped: pushed.blobs_skipped,
            blobs_mounted: pushed.blobs_mounted,
            seconds: pushed.seconds,
        }
    }
}

impl Uploaded {
    /// "12.0 MiB in 2 blob(s), 3 skipped, 1 mounted".
    fn describe(&self) -> String {
        format!(
            "{} in {} blob(s), {} skipped, {} mounted",
            human_bytes(self.bytes),
            self.blobs_uploaded,
            self.blobs_skipped,
            self.blobs_mounted,
        )
    }
}

#[derive(Debug, Serialize)]
struct LatestOutcome {
    /// `moved`, `in-place`, `left` or `moved-unsure`.
    action: &'static str,
    /// The digest it named before, when it moved or was left.
    #[serde(skip_serializing_if = "Option::is_none")]
    digest_before: Option<String>,
    note: String,
}

/// Pushes every built image, moves `staging-latest`, and reads both tags
/// back; all images at once. A failure is reported after the others have
/// finished, saying what is in the registry and what is not. Gives the
/// retries of a blob client of its own (ECR's) beside the images.
async fn push_all(
    registry: &Registry,
    engine: Option<&Engine>,
    plan: &Plan,
    built: &[BuiltImage],
    retries: &Retries,
    root: &Path,
    ci: &Ci,
) -> Result<(Vec<Published>, u32)> {
    let auth = match engine {
        Some(_) => Some(registry.push_auth().await?),
        None => None,
    };
    let route = plan.registry.push;
    // ECR's registry endpoint takes the token of GetAuthorizationToken as
    // Basic auth: blobs go through the OCI client with it.
    let ecr_blobs = match (registry, &auth, route.via) {
        (Registry::Ecr(_), Some(auth), PushVia::Registry) => match &auth.login {
            Some(login) => Some(Oci::with_login(
                &Target::parse(&plan.registry.target)?,
                login.clone(),
                Source::EcrToken,
            )?),
            None => None,
        },
        _ => None,
    };
    let blobs = match (registry, &ecr_blobs) {
        (Registry::Oci(oci), _) => Some(oci),
        (Registry::Ecr(_), Some(oci)) => Some(oci),
        (Registry::Ecr(_), None) => None,
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let run = push::Run::new(
        push::Options {
            chunk_size: route.chunk_size,
            jobs: route.jobs,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        },
        LayerCache::locate(&env),
    );
    let repositories: Vec<String> = plan.images.iter().map(|i| i.repository.clone()).collect();
    let outcomes = join_all(plan.images.iter().map(|image| {
        let built = built.iter().find(|b| b.name == image.name);
        let auth = auth.as_ref();
        let (run, repositories) = (&run, &repositories);
        async move {
            let mut lines = Vec::new();
            let sources = Sources {
                registry,
                engine,
                auth,
                retries,
                root,
                route,
                run,
                blobs,
                repositories,
            };
            let outcome = publish_one(&sources, plan, image, built, &mut lines).await;
            (image.name.clone(), lines, outcome)
        }
    }))
    .await;

    let mut published = Vec::new();
    let mut failures = Vec::new();
    let width = plan.images.iter().map(|i| i.name.len()).max().unwrap_or(0);
    for (name, lines, outcome) in outcomes {
        super::print_image_log(ci, "push", &name, width, &lines);
        match outcome {
            Ok(image) => published.push(image),
            Err(error) => failures.push(error),
        }
    }
    if failures.is_empty() {
        return Ok((published, ecr_blobs.as_ref().map_or(0, Oci::retries)));
    }
    let mut error = Error::failed(format!(
        "{} of {} images were not published",
        failures.len(),
        plan.images.len()
    ));
    // The failures' own hints (a body cap asks for a chunk size) come
    // first, once each.
    let mut hints: Vec<String> = Vec::new();
    for failure in failures {
        let mut text = failure.message.clone();
        for cause in &failure.causes {
            text.push_str("\ncaused by: ");
            text.push_str(cause);
        }
        error = error.caused_by(text);
        if let Some(hint) = &failure.hint
            && !hints.contains(hint)
        {
            hints.push(hint.clone());
        }
    }
    for image in &published {
        error = error.caused_by(format!(
            "{} is published and verified: {}",
            image.name, image.reference
        ));
    }
    let again = "run again: images already published from this commit are not pushed again, nor blobs this machine committed";
    hints.push(again.to_string());
    Err(error.hint(hints.join("; then ")))
}

/// What one image's publish talks to.
struct Sources<'a> {
    registry: &'a Registry,
    /// The engine and login, when something was built to push.
    engine: Option<&'a Engine>,
    auth: Option<&'a PushAuth>,
    retries: &'a Retries,
    /// The repository whose history tells whether a commit is newer.
    root: &'a Path,
    route: PushRoute,
    /// What the images of the run share when hoist uploads.
    run: &'a push::Run,
    /// The OCI client blobs go through (ECR: with its token).
    blobs: Option<&'a Oci>,
    /// Every repository of the run, to mount shared layers from.
    repositories: &'a [String],
}

async fn publish_one(
    sources: &Sources<'_>,
    plan: &Plan,
    image: &PushStep,
    built: Option<&BuiltImage>,
    lines: &mut Vec<String>,
) -> Result<Published> {
    let registry = sources.registry;
    let started = Instant::now();
    let mut upload = None;
    let ours = match (built, sources.engine, sources.auth) {
        (Some(built), Some(engine), Some(_)) if sources.route.via == PushVia::Registry => {
            let blobs = sources.blobs.ok_or_else(|| {
                Error::failed(format!(
                    "hoist has no login to upload {} to the registry",
                    image.staging_reference
                ))
                .hint("give AWS credentials, or push with the engine: --push-via engine")
            })?;
            let target = push::Target {
                local: &built.image_id,
                repository: &image.repository,
                tag: &image.staging_tag,
                siblings: sources.repositories,
            };
            let mut print = |line: String| lines.push(line);
            let pushed =
                push::push(sources.run, engine, blobs, registry, &target, &mut print).await?;
            let manifest = read_back(registry, image, &image.staging_tag).await?;
            if manifest.digest != pushed.manifest.digest {
                return Err(Error::failed(format!(
                    "{} names {} in the registry, but hoist wrote {}",
                    image.staging_reference, manifest.digest, pushed.manifest.digest
                ))
                .hint("something else pushed the tag meanwhile; run again"));
            }
            let uploaded = Uploaded::from(&pushed);
            lines.push(format!(
                "pushed {} {} ({} in {:.1} s)",
                image.staging_reference,
                manifest.digest,
                uploaded.describe(),
                uploaded.seconds
            ));
            upload = Some(uploaded);
            manifest
        }
        (Some(_), Some(engine), Some(auth)) => {
            let mut print = |line: String| lines.push(line);
            let reported = engine
                .push(&image.staging_reference, auth, sources.retries, &mut print)
                .await?;
            let manifest = read_back(registry, image, &image.staging_tag).await?;
            if let Some(reported) = reported
                && reported != manifest.digest
            {
                return Err(Error::failed(format!(
                    "{} names {} in the registry, but the engine pushed {reported}",
                    image.staging_reference, manifest.digest
                ))
                .hint("something else pushed the tag meanwhile; run again"));
            }
            lines.push(format!(
                "pushed {} {}",
                image.staging_reference, manifest.digest
            ));
            manifest
        }
        _ => read_back(registry, image, &image.staging_tag).await?,
    };
    let push_seconds = started.elapsed().as_secs_f64();

    let latest = match &image.latest_reference {
        Some(reference) => {
            Some(move_latest(registry, sources.root, plan, image, reference, &ours, lines).await?)
        }
        None => None,
    };
    // The extra tags: the same manifest bytes, registry-side, as
    // `staging-latest` is written.
    for (tag, reference) in plan.extra_tags.iter().zip(&image.extra_references) {
        registry.put_manifest(&image.repository, tag, &ours).await?;
        lines.push(format!("{reference}: points at {}", ours.digest));
    }
    // Verified: every tag read back from the registry, as it answers now.
    let staging = read_back(registry, image, &image.staging_tag).await?;
    if staging.digest != ours.digest {
        return Err(Error::failed(format!(
            "{} changed while publishing: it names {} now, not {}",
            image.staging_reference, staging.digest, ours.digest
        )));
    }
    let mut tags = vec![image.staging_reference.clone()];
    if let (Some(latest), Some(reference)) = (&latest, &image.latest_reference)
        && latest.action != "left"
    {
        let now = read_back(registry, image, STAGING_LATEST).await?;
        if now.digest != ours.digest {
            return Err(Error::failed(format!(
                "{reference} names {} after the move, not {}",
                now.digest, ours.digest
            ))
            .hint("another publish moved it meanwhile; run again to judge again"));
        }
        tags.push(reference.clone());
    }
    for (tag, reference) in plan.extra_tags.iter().zip(&image.extra_references) {
        let now = read_back(registry, image, tag).await?;
        if now.digest != ours.digest {
            return Err(Error::failed(format!(
                "{reference} names {} after it was written, not {}",
                now.digest, ours.digest
            ))
            .hint("another writer moved it meanwhile; run again"));
        }
        tags.push(reference.clone());
    }
    Ok(Published {
        name: image.name.clone(),
        reference: format!(
            "{}@{}",
            image
                .staging_reference
                .rsplit_once(':')
                .map_or(image.staging_reference.as_str(), |(repo, _)| repo),
            ours.digest
        ),
        digest: ours.digest.clone(),
        tags,
        built: built.is_some(),
        staging_latest: latest,
        size: ours.size(),
        build_seconds: built.map_or(0.0, |b| b.seconds),
        context_sent: built.map(|b| b.context_sent),
        push_seconds,
        upload,
    })
}

/// A tag's manifest, which must be there.
async fn read_back(registry: &Registry, image: &PushStep, tag: &str) -> Result<Manifest> {
    registry
        .manifest(&image.repository, tag)
        .await?
        .ok_or_else(|| {
            Error::failed(format!(
                "{}:{tag} is not in the registry after the push",
                image.repository
            ))
            .hint("the registry lost or refused the push; run again")
        })
}

/// Points `staging-latest` at our manifest, unless a newer commit holds it.
async fn move_latest(
    registry: &Registry,
    root: &Path,
    plan: &Plan,
    image: &PushStep,
    reference: &str,
    ours: &Manifest,
    lines: &mut Vec<String>,
) -> Result<LatestOutcome> {
    let current = registry.manifest(&image.repository, STAGING_LATEST).await?;
    let revision = match &current {
        Some(manifest) if manifest.digest != ours.digest => {
            registry.revision(&image.repository, manifest).await?
        }
        _ => None,
    };
    let descends = revision.as_deref().and_then(|revision| {
        let repo = git::open(root).ok()?;
        git::descends_from(&repo, revision, &plan.sha)
    });
    let judged = publish::judge_latest(
        &ours.digest,
        current
            .as_ref()
            .map(|m| (m.digest.as_str(), revision.as_deref())),
        &plan.sha,
        descends,
    );
    let outcome = match judged {
        Latest::InPlace => LatestOutcome {
            action: "in-place",
            digest_before: None,
            note: "already names this image".to_string(),
        },
        Latest::Newer { digest, revision } => LatestOutcome {
            action: "left",
            note: format!(
                "left in place: it names {digest}, from commit {revision}, which descends from {} (a newer push finished first)",
                plan.sha7
            ),
            digest_before: Some(digest),
        },
        Latest::Move { from } => {
            registry
                .put_manifest(&image.repository, STAGING_LATEST, ours)
                .await?;
            LatestOutcome {
                action: "moved",
                note: match &from {
                    Some(from) => format!("moved from {from}"),
                    None => "created".to_string(),
                },
                digest_before: from,
            }
        }
        Latest::MoveUnsure { from, why } => {
            registry
                .put_manifest(&image.repository, STAGING_LATEST, ours)
                .await?;
            LatestOutcome {
                action: "moved-unsure",
                note: format!("moved from {from}, though it may have been newer: {why}"),
                digest_before: Some(from),
            }
        }
    };
    lines.push(format!("{reference}: {}", outcome.note));
    Ok(outcome)
}

fn dry_run(plan: &Plan, sizes: &[Summary], config: &Config, format: Format, ci: &Ci) -> Result<u8> {
    if format == Format::Json {
        let document = DryRun::new(plan, &plan.build.images, sizes);
        return ci.out(&super::json(&document)).map(|()| 0);
    }
    let mut text = format!("dry run: hoist publish of {} ({})\n", plan.sha7, plan.sha);
    if !plan.dirty.is_empty() {
        text.push_str(&format!(
            "\n--allow-dirty: the tree differs from {}: labelled {}{}, pushed as {} only\n",
            plan.sha7,
            plan.sha7,
            dirty::SUFFIX,
            plan.images
                .first()
                .map_or(String::new(), |image| image.staging_tag.clone())
        ));
        for line in dirty::describe(&plan.dirty) {
            text.push_str(&format!("  {line}\n"));
        }
    }
    text.push_str("\n1. changes\n");
    match (&plan.changes.decision, plan.changes.forced) {
        (_, true) => text.push_str("  --force: published whatever the path filters say\n"),
        (Some(decision), false) => {
            let verdict = if decision.run { "run" } else { "skip" };
            text.push_str(&format!(
                "  {verdict}: {}\n",
                ci::one_line(&decision.reason)
            ));
            if !decision.run {
                text.push_str("  would stop here: published=false, nothing built or pushed\n");
            }
        }
        (None, false) => {}
    }
    text.push_str(&format!(
        "\n2. deps into {} ({} dependencies)\n",
        config.bundle_dir.display(),
        plan.deps.len()
    ));
    for dep in &plan.deps {
        let private = if dep.private { ", private" } else { "" };
        let line = format!(
            "  {:<20} {:<28} {}@{} (provider {}{private})",
            dep.category, dep.name, dep.repo, dep.git_ref, dep.provider
        );
        text.push_str(&format!("{}\n", ci::one_line(&line)));
    }
    text.push_str(&format!(
        "\n3. build {} image(s) with {}\n",
        plan.build.images.len(),
        builder_name(plan.build.builder)
    ));
    for (image, size) in plan.build.images.iter().zip(sizes) {
        text.push_str(&describe(image, size));
    }
    text.push_str(&format!(
        "\n4. push to {} ({}{}): {}\n",
        plan.registry.target,
        plan.registry.kind,
        if plan.registry.create_repos {
            ", creating missing repositories"
        } else {
            ""
        },
        plan.registry.push.describe()
    ));
    let route = match plan.registry.push.via {
        PushVia::Registry => "uploaded by hoist, layers the registry holds skipped",
        PushVia::Engine => "through the engine",
    };
    for image in &plan.images {
        text.push_str(&format!(
            "  {:<16} {} ({route}; skipped when it already holds this commit's image)\n",
            image.name, image.staging_reference
        ));
        match &image.latest_reference {
            Some(reference) => text.push_str(&format!(
                "  {:<16} {reference} (registry-side, unless a newer commit holds it)\n",
                ""
            )),
            None => text.push_str(&format!(
                "  {:<16} (staging-latest left alone: the tree is dirty)\n",
                ""
            )),
        }
        for reference in &image.extra_references {
            text.push_str(&format!(
                "  {:<16} {reference} (registry-side, the same manifest)\n",
                ""
            ));
        }
    }
    for note in &plan.notes {
        text.push_str(&format!("  note: {}\n", ci::one_line(note)));
    }
    text.push_str("\n5. read every tag back and report the registry's digests\n");
    ci.out(&text)?;
    Ok(0)
}

fn skipped(plan: &Plan, format: Format, ci: &Ci) -> Result<u8> {
    let reason = plan.changes.reason();
    match format {
        Format::Json => {
            let document = serde_json::json!({
                "published": false,
                "sha": plan.sha,
                "sha7": plan.sha7,
                "reason": reason,
            });
            ci.out(&super::json(&document))?;
        }
        Format::Text => ci.out(&format!("not published: {}\n", ci::one_line(&reason)))?,
    }
    ci.set_output("published", "false")?;
    ci.set_output("sha7", &plan.sha7)?;
    ci.add_summary(&format!(
        "### hoist publish\n\nnot published: {} (use `--force` to publish anyway)\n\n",
        markdown(&reason)
    ))?;
    Ok(0)
}

#[derive(Serialize)]
struct Document<'a> {
    published: bool,
    /// Why it ran: the change decision's reason, or `--force`.
    reason: String,
    sha: &'a str,
    sha7: &'a str,
    registry: &'a str,
    retries: u32,
    seconds: f64,
    /// What made the build dirty (`--allow-dirty`); absent when clean.
    #[serde(skip_serializing_if = "<[DirtyImage]>::is_empty")]
    dirty: &'a [DirtyImage],
    /// Extra tag templates left out, and why.
    notes: &'a [String],
    images: &'a [Published],
}

fn report(
    plan: &Plan,
    images: &[Published],
    retries: u32,
    seconds: f64,
    format: Format,
    ci: &Ci,
) -> Result<u8> {
    match format {
        Format::Json => {
            let document = Document {
                published: true,
                reason: plan.changes.reason(),
                sha: &plan.sha,
                sha7: &plan.sha7,
                registry: &plan.registry.target,
                retries,
                seconds,
                dirty: &plan.dirty,
                notes: &plan.notes,
                images,
            };
            ci.out(&super::json(&document))?;
        }
        Format::Text => {
            let mut text = format!("run: {}\n", ci::one_line(&plan.changes.reason()));
            if !plan.dirty.is_empty() {
                text.push_str(&format!(
                    "dirty (--allow-dirty): labelled {}{}, not a commit's image\n",
                    plan.sha7,
                    dirty::SUFFIX
                ));
                for line in dirty::describe(&plan.dirty) {
                    text.push_str(&format!("  {}\n", ci::one_line(&line)));
                }
            }
            for image in images {
                let how = if image.built {
                    let sent = image.context_sent.unwrap_or_default();
                    format!(
                        "built in {:.1} s with {} of context, pushed in {:.1} s{}",
                        image.build_seconds,
                        sent_text(&sent),
                        image.push_seconds,
                        image
                            .upload
                            .as_ref()
                            .map(|u| format!(": {}", u.describe()))
                            .unwrap_or_default()
                    )
                } else {
                    "already published from this commit".to_string()
                };
                text.push_str(&format!(
                    "published {} {} ({}{how})\n",
                    image.name,
                    image.reference,
                    image
                        .size
                        .map(|s| format!("{}, ", human_bytes(s)))
                        .unwrap_or_default()
                ));
                for tag in &image.tags {
                    text.push_str(&format!("  {tag}\n"));
                }
                if let Some(latest) = &image.staging_latest
                    && (latest.action == "left" || latest.action == "moved-unsure")
                {
                    text.push_str(&format!("  {STAGING_LATEST}: {}\n", latest.note));
                }
            }
            for note in &plan.notes {
                text.push_str(&format!("note: {}\n", ci::one_line(note)));
            }
            text.push_str(&format!(
                "{} image(s) of {} in {seconds:.1} s, {retries} request(s) retried\n",
                images.len(),
                plan.sha7
            ));
            ci.out(&text)?;
        }
    }
    ci.set_output("published", "true")?;
    ci.set_output("sha7", &plan.sha7)?;
    for image in images {
        ci.set_output(&format!("{}-digest", image.name), &image.digest)?;
        ci.set_output(&format!("{}-ref", image.name), &image.reference)?;
        ci.set_output(&format!("{}-tags", image.name), &image.tags.join(","))?;
    }
    ci.add_summary(&summary(plan, images, retries, seconds))?;
    Ok(0)
}

fn summary(plan: &Plan, images: &[Published], retries: u32, seconds: f64) -> String {
    let mut out = format!(
        "### hoist publish\n\n{} image(s) of {} to {} in {seconds:.1} s ({retries} retried requests)\n\n",
        images.len(),
        markdown_code(&plan.sha7),
        markdown_code(&plan.registry.target.to_string())
    );
    out.push_str(&format!("run: {}\n\n", markdown(&plan.changes.reason())));
    out.push_str("| image | tags | digest | size | build | push | uploaded | blobs uploaded / skipped / mounted |\n|---|---|---|---|---|---|---|---|\n");
    for image in images {
        let tags: Vec<String> = image.tags.iter().map(|t| markdown_code(t)).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} s | {} | {} |\n",
            markdown(&image.name),
            tags.join("<br>"),
            markdown_code(short_id(&image.digest)),
            image.size.map(human_bytes).unwrap_or_default(),
            if image.built {
                let sent = image.context_sent.unwrap_or_default();
                format!(
                    "{:.1} s ({} of context)",
                    image.build_seconds,
                    sent_text(&sent)
                )
            } else {
                "already published".to_string()
            },
            image.push_seconds,
            image
                .upload
                .as_ref()
                .map(|u| human_bytes(u.bytes))
                .unwrap_or_default(),
            image
                .upload
                .as_ref()
                .map(|u| format!(
                    "{} / {} / {}",
                    u.blobs_uploaded, u.blobs_skipped, u.blobs_mounted
                ))
                .unwrap_or_default(),
        ));
    }
    out.push('\n');
    for note in &plan.notes {
        out.push_str(&format!("note: {}\n\n", markdown(note)));
    }
    out
}
