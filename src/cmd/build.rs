//! `hoist build`: build every image of the plan, concurrently, through the
//! engine; tag each `:staging-<sha7>` and `:staging-latest`; run its smoke
//! gate. `--dry-run` prints the same plan without touching the engine.

use crate::build::{self, Builder, ImagePlan, Inputs, Plan};
use crate::ci::{self, Ci, markdown, markdown_code};
use crate::cli::{BuildArgs, Format};
use crate::config::{Config, Overrides};
use crate::context::{self, Context, Summary, human_bytes};
use crate::dirty::{self, DirtyImage};
use crate::docker::{self, BuildSettings, Credentials, Engine};
use crate::error::{Error, Result};
use crate::git;
use crate::registry::{self, PushAuth, Target};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::mpsc;

pub fn run(dir: &Path, config_file: Option<&Path>, args: BuildArgs, ci: &Ci) -> Result<u8> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let overrides = Overrides {
        registry: args.registry.clone(),
        ..Overrides::default()
    };
    let config = Config::load(dir, config_file, overrides, env)?;
    // Checked as publish checks it: a registry with a password in it is
    // refused before it can reach a tag, a plan or an engine error.
    let registry = config
        .registry
        .as_deref()
        .map(|r| Target::parse(r).map(|t| t.to_string()))
        .transpose()?;
    let mut inputs = inputs(
        &config,
        args.sha.as_deref(),
        args.builder,
        args.no_cache,
        &env,
    )?;
    let one_off = build_args(&args.build_args, &env, ci)?;
    let plan =
        build::plan(&config, registry.as_deref(), &args.images, &inputs)?.with_build_args(&one_off);
    let contexts = plan
        .images
        .iter()
        .map(|image| Context::new(&image.context, &image.dockerfile))
        .collect::<Result<Vec<_>>>()?;
    // BuildKit asks the session for what the Dockerfile reads: only a dry
    // run walks its contexts up front.
    let sizes = match args.dry_run || plan.builder == Builder::Classic {
        true => scan_all(&contexts, plan.builder)?,
        false => vec![Summary::default(); contexts.len()],
    };
    // A local build is not refused: it says what it builds, and labels it so.
    let tree = read_tree(&config, &plan.images, &contexts)?;
    let mut warnings = Vec::new();
    if let Some(tree) = &tree {
        if tree.head != inputs.sha {
            warnings.push(format!(
                "commit {} is not the checked-out commit {}: the working tree is built, labelled {}",
                &inputs.sha7(),
                tree.head.get(..7).unwrap_or(&tree.head),
                inputs.sha7()
            ));
        }
        if !tree.dirty.is_empty() {
            warnings.push(dirty::warning(&tree.dirty, &inputs.sha));
            inputs.dirty = true;
        }
    }
    let plan = match inputs.dirty {
        true => build::plan(&config, registry.as_deref(), &args.images, &inputs)?
            .with_build_args(&one_off),
        false => plan,
    };
    if !one_off.is_empty() {
        let keys: Vec<&str> = one_off.keys().map(String::as_str).collect();
        warnings.push(format!(
            "--build-arg {}: these images differ from what `hoist publish` builds for {}, \
             under the same tags",
            keys.join(", "),
            inputs.sha7()
        ));
    }

    if args.dry_run {
        // A `--build-arg KEY` value came from the environment and may be a
        // token: the plan shows that it is passed, not what it is.
        let hidden: BTreeMap<String, String> = args
            .build_args
            .iter()
            .filter(|arg| !arg.contains('=') && one_off.contains_key(arg.as_str()))
            .map(|key| (key.clone(), "***".to_string()))
            .collect();
        let shown = plan.clone().with_build_args(&hidden);
        return dry_run(&shown, &sizes, &warnings, args.format, ci);
    }
    for warning in &warnings {
        ci.warn(warning);
    }
    for (image, size) in plan.images.iter().zip(&sizes) {
        if let Some(warning) = context::size_warning(size) {
            ci.warn(&format!("{}: {warning}", image.name));
        }
    }
    let settings = BuildSettings {
        builder: plan.builder,
        no_cache: plan.no_cache,
        credentials: credentials(registry.as_deref(), &env)?,
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| Error::failed("cannot start the async runtime").caused_by(e))?;
    let results = runtime.block_on(async {
        let engine = Engine::connect().await?;
        build_all(&engine, &plan, contexts, settings, ci).await
    })?;
    warn_sent(&results, &sizes, ci);
    report(&plan, &results, args.format, ci)
}

/// `--build-arg KEY=VALUE` and `--build-arg KEY` (the value from the
/// environment, as `docker build` takes it; not passed when unset) as a map.
/// A value from the environment is masked under a runner: it may be a token.
fn build_args(
    given: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    ci: &Ci,
) -> Result<BTreeMap<String, String>> {
    let mut args = BTreeMap::new();
    for arg in given {
        let (key, value) = match arg.split_once('=') {
            Some((key, value)) => (key, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        if !is_arg_name(key) {
            // Only the key: the value may be a secret.
            return Err(Error::input(format!(
                "--build-arg: '{}' is not a build arg name",
                ci::one_line(key)
            ))
            .hint(
                "write --build-arg KEY=VALUE or --build-arg KEY, KEY of letters, digits and '_', \
                 not starting with a digit",
            ));
        }
        let value = match value {
            Some(value) => value,
            None => match env(key) {
                Some(value) => {
                    ci.mask(&value);
                    value
                }
                None => {
                    ci.warn(&format!(
                        "--build-arg {key}: {key} is not set in the environment; not passed"
                    ));
                    continue;
                }
            },
        };
        args.insert(key.to_string(), value);
    }
    Ok(args)
}

/// A name `ARG` declares and the shell can expand: letters, digits and `_`,
/// not starting with a digit.
fn is_arg_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Each context's size. Images sharing a context directory (the reference
/// pipeline's two share the repository root) are walked once: a walk opens
/// every file it would send.
/// With BuildKit, each is counted as its session would send it whole (the
/// engine asks for less when the Dockerfile copies less).
pub(super) fn scan_all(contexts: &[Context], builder: Builder) -> Result<Vec<Summary>> {
    let mut sizes: Vec<Summary> = Vec::with_capacity(contexts.len());
    for (index, context) in contexts.iter().enumerate() {
        // A Dockerfile from outside is part of what its own context sends;
        // a Dockerfile's own ignore file makes the context its own too.
        let same = |other: &Context| {
            other.dir() == context.dir()
                && other.ignore_file() == context.ignore_file()
                && !other.dockerfile_is_outside()
                && !context.dockerfile_is_outside()
        };
        let size = match contexts[..index].iter().position(same) {
            Some(earlier) => sizes[earlier].clone(),
            None if builder == Builder::Buildkit => context.scan_for_session()?,
            None => context.scan()?,
        };
        sizes.push(size);
    }
    Ok(sizes)
}

/// `refs/heads/<name>` and `refs/tags/<name>` as `<name>`, as
/// `GITHUB_REF_NAME` gives them.
fn short_ref(reference: &str) -> &str {
    reference
        .strip_prefix("refs/heads/")
        .or_else(|| reference.strip_prefix("refs/tags/"))
        .unwrap_or(reference)
}

/// The sha, CI values, source URL and clock the plan needs.
pub(super) fn inputs(
    config: &Config,
    sha: Option<&str>,
    builder: Builder,
    no_cache: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Inputs> {
    let repo = git::open(&config.root).ok();
    let wanted = sha.map(str::to_string).or_else(|| env("GITHUB_SHA"));
    let sha = match (&wanted, &repo) {
        (Some(sha), _) if is_full_sha(sha) => sha.to_ascii_lowercase(),
        (Some(rev), Some(repo)) => git::commit_sha(repo, rev)?,
        (None, Some(repo)) => git::commit_sha(repo, "HEAD")?,
        (Some(rev), None) => {
            return Err(Error::input(format!(
                "--sha '{rev}' is not a full commit sha, and {} is not in a git repository to resolve it",
                config.root.display()
            ))
            .hint("pass the full 40-character sha"));
        }
        (None, None) => {
            return Err(Error::input(
                "no commit to build: GITHUB_SHA is not set and there is no git repository",
            )
            .hint("pass --sha, or run hoist inside a clone (-C DIR)"));
        }
    };
    let branch = repo.as_ref().and_then(git::current_branch);
    // The ref that decides the push (and `${version}`) names it too.
    let ref_name = env("GITHUB_REF_NAME")
        .or_else(|| {
            env("GITHUB_REF")
                .or(branch)
                .map(|r| short_ref(&r).to_string())
        })
        .unwrap_or_default();
    let remote = repo.as_ref().and_then(git::remote_url);
    let source = build::source_url(
        env("GITHUB_SERVER_URL").as_deref(),
        env("GITHUB_REPOSITORY").as_deref(),
        remote.as_deref(),
    );
    let created = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Ok(Inputs {
        sha,
        ref_name,
        run_id: env("GITHUB_RUN_ID"),
        source,
        created,
        builder,
        no_cache,
        dirty: false,
    })
}

/// The working tree against HEAD, in a repository.
pub(super) struct Tree {
    /// The checked-out commit's full sha: what the working tree is.
    pub head: String,
    /// The images whose builds read tracked files that differ from HEAD.
    pub dirty: Vec<DirtyImage>,
}

/// Reads the repository at the project root: HEAD, and which of `images`
/// (built from `contexts`) read tracked files that differ from it. `None`
/// outside a repository, where nothing can be compared.
pub(super) fn read_tree(
    config: &Config,
    images: &[ImagePlan],
    contexts: &[Context],
) -> Result<Option<Tree>> {
    let Ok(repo) = git::open(&config.root) else {
        return Ok(None);
    };
    let Some(workdir) = repo.workdir().and_then(|w| std::fs::canonicalize(w).ok()) else {
        return Ok(None);
    };
    let head = git::commit_sha(&repo, "HEAD")?;
    let changed = git::changed_in_worktree(&repo)?;
    let bundle_dir = absolute(&config.bundle_dir);
    let mut dirty = Vec::new();
    for (image, context) in images.iter().zip(contexts) {
        let dockerfile = absolute(&image.dockerfile);
        let ignore = context.dockerignore();
        let paths = dirty::affecting(
            &changed,
            &workdir,
            &bundle_dir,
            context.dir(),
            &dockerfile,
            |rel| !ignore.excludes(rel),
        );
        if !paths.is_empty() {
            dirty.push(DirtyImage {
                image: image.name.clone(),
                paths,
            });
        }
    }
    Ok(Some(Tree { head, dirty }))
}

/// `path` absolute with symlinks resolved, as far as it exists (the bundle
/// dir may not yet).
fn absolute(path: &Path) -> PathBuf {
    if let Ok(path) = std::fs::canonicalize(path) {
        return path;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let base = match parent {
        Some(parent) => std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf()),
        None => std::env::current_dir().unwrap_or_default(),
    };
    match path.file_name() {
        Some(name) => base.join(name),
        None => base,
    }
}

fn is_full_sha(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// Credentials for the registry the cache sources live in: the login
/// `hoist publish` would push with (`HOIST_REGISTRY_USER` and
/// `HOIST_REGISTRY_PASSWORD`, else the Docker config). ECR's token needs
/// the AWS API, which `hoist build` does not call: there, a cache source
/// without a login is just not used.
fn credentials(
    registry: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials> {
    let mut credentials = Credentials::new();
    let Some(registry) = registry else {
        return Ok(credentials);
    };
    let host = docker::registry_host(&format!("{registry}/x"));
    if let Some(login) = registry::credentials::login_for(&host, env)? {
        let auth = PushAuth {
            server: host.clone(),
            login: Some(login),
        };
        credentials.insert(host, docker::engine_credentials(&auth));
    }
    Ok(credentials)
}

/// What `--dry-run --format json` prints: a plan, with each context's size.
#[derive(Serialize)]
pub(super) struct DryRun<'a, P: Serialize> {
    dry_run: bool,
    #[serde(flatten)]
    plan: &'a P,
    contexts: Vec<ContextSize<'a>>,
}

#[derive(Serialize)]
struct ContextSize<'a> {
    image: &'a str,
    files: u64,
    bytes: u64,
}

impl<'a, P: Serialize> DryRun<'a, P> {
    /// `plan`, whose images are `images`, their contexts measured `sizes`.
    pub(super) fn new(plan: &'a P, images: &'a [ImagePlan], sizes: &[Summary]) -> Self {
        let contexts = images
            .iter()
            .zip(sizes)
            .map(|(image, size)| ContextSize {
                image: &image.name,
                files: size.files,
                bytes: size.bytes,
            })
            .collect();
        DryRun {
            dry_run: true,
            plan,
            contexts,
        }
    }
}

fn dry_run(
    plan: &Plan,
    sizes: &[Summary],
    warnings: &[String],
    format: Format,
    ci: &Ci,
) -> Result<u8> {
    match format {
        Format::Json => {
            let document = DryRun::new(plan, &plan.images, sizes);
            ci.out(&super::json(&document))?;
            for warning in warnings {
                ci.warn(warning);
            }
        }
        Format::Text => {
            let mut text = format!(
                "dry run: would build {} image(s) of {} with {}\n",
                plan.images.len(),
                plan.sha7,
                builder_name(plan.builder)
            );
            for warning in warnings {
                text.push_str(&format!("warning: {}\n", ci::one_line(warning)));
            }
            for (image, size) in plan.images.iter().zip(sizes) {
                text.push_str(&describe(image, size));
            }
            ci.out(&text)?;
        }
    }
    Ok(0)
}

pub(super) fn builder_name(builder: Builder) -> &'static str {
    match builder {
        Builder::Buildkit => "BuildKit",
        Builder::Classic => "the classic builder",
    }
}

/// One image of the plan, as the dry run prints it.
pub(super) fn describe(image: &ImagePlan, size: &Summary) -> String {
    let mut text = format!("\n{}\n", image.name);
    text.push_str(&format!("  dockerfile  {}\n", image.dockerfile.display()));
    text.push_str(&format!(
        "  context     {} ({} files, {})\n",
        image.context.display(),
        size.files,
        human_bytes(size.bytes)
    ));
    if let Some(target) = &image.target {
        text.push_str(&format!("  target      {target}\n"));
    }
    for (key, value) in &image.build_args {
        text.push_str(&format!("  arg         {key}={value}\n"));
    }
    for (key, value) in &image.labels {
        text.push_str(&format!("  label       {key}={value}\n"));
    }
    for tag in &image.tags {
        text.push_str(&format!("  tag         {tag}\n"));
    }
    for source in &image.cache_from {
        text.push_str(&format!("  cache from  {source}\n"));
    }
    if let Some(smoke) = &image.smoke {
        text.push_str(&format!(
            "  smoke       HTTP 200 on :{}{} within {:?}\n",
            smoke.port, smoke.path, smoke.timeout
        ));
    }
    if let Some(warning) = context::size_warning(size) {
        text.push_str(&format!("  warning     {warning}\n"));
    }
    text
}

/// One built image.
#[derive(Debug, Serialize)]
pub(super) struct BuiltImage {
    pub name: String,
    pub image_id: String,
    pub tags: Vec<String>,
    pub seconds: f64,
    pub steps: usize,
    pub cached_steps: usize,
    pub smoke: &'static str,
    /// What of the context reached the engine.
    pub context_sent: Sent,
    /// The ignore file in force for the context, for the warning.
    #[serde(skip)]
    pub ignore_file: PathBuf,
}

/// What of a build context reached the engine: with a BuildKit session,
/// the files the engine asked for; with a tar, the whole (filtered)
/// context.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(super) struct Sent {
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// `session` or `tar`.
    pub route: &'static str,
}

impl From<crate::session::Sent> for Sent {
    fn from(sent: crate::session::Sent) -> Sent {
        Sent {
            files: sent.files,
            bytes: sent.bytes,
            route: "session",
        }
    }
}

/// A line of one image's build log, or the end of that image's build.
enum Event {
    Line(usize, String),
    Done(usize),
}

/// Builds every image at once; each image's log stays readable: its own
/// `::group::` in CI, prefixed lines elsewhere. A failure fails the whole
/// command, after the other builds have finished.
pub(super) async fn build_all(
    engine: &Engine,
    plan: &Plan,
    contexts: Vec<Context>,
    settings: BuildSettings,
    ci: &Ci,
) -> Result<Vec<BuiltImage>> {
    let (events, mut received) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (index, (image, context)) in plan.images.iter().cloned().zip(contexts).enumerate() {
        let engine = engine.clone();
        let settings = settings.clone();
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = build_one(&engine, &image, &settings, context, |line| {
                let _ = events.send(Event::Line(index, line));
            })
            .await;
            let _ = events.send(Event::Done(index));
            outcome
        }));
    }
    drop(events);

    let names: Vec<&str> = plan.images.iter().map(|i| i.name.as_str()).collect();
    let mut printer = Printer::new(&names, ci);
    while let Some(event) = received.recv().await {
        printer.print(event);
    }

    let mut results = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(error)) => failures.push(error),
            Err(join) => failures.push(Error::failed("a build task stopped").caused_by(join)),
        }
    }
    match failures.len() {
        0 => Ok(results),
        1 => Err(failures.remove(0)),
        n => {
            // Every failure in full: each names its image, step and output.
            let mut error = Error::failed(format!("{n} of {} images failed", plan.images.len()));
            for failure in failures {
                let text = failure.to_string();
                error = error.caused_by(text.strip_prefix("error: ").unwrap_or(&text));
            }
            Err(error)
        }
    }
}

async fn build_one(
    engine: &Engine,
    image: &ImagePlan,
    settings: &BuildSettings,
    context: Context,
    mut print: impl FnMut(String) + Send,
) -> Result<BuiltImage> {
    let started = Instant::now();
    let ignore_file = context.ignore_file();
    let (built, sent) = match (settings.builder, engine.session_address()) {
        (Builder::Buildkit, Some(address)) => {
            let sources = context.session_sources();
            let built = engine
                .build_in_session(
                    &address,
                    image,
                    settings,
                    sources,
                    context.dockerfile_name(),
                    &mut print,
                )
                .await?;
            let sent = built.sent.unwrap_or_default();
            (built, Sent::from(sent))
        }
        _ => {
            let dockerfile = context.dockerfile_in_tar().to_string();
            let build_id = format!("hoist build {} {}", image.name, docker::unique_suffix());
            let (body, writer) = context.with_build_id(build_id).stream();
            let built = engine
                .build(image, settings, body, &dockerfile, &mut print)
                .await;
            // A context that could not be read explains a failed upload
            // better than the engine's complaint about a cut stream.
            match (built, writer.join()) {
                (_, Err(context)) => return Err(context),
                (built, Ok(summary)) => {
                    let summary = summary.unwrap_or_default();
                    let sent = Sent {
                        files: summary.files,
                        bytes: summary.bytes,
                        route: "tar",
                    };
                    (built?, sent)
                }
            }
        }
    };
    print(format!("context: sent {}", sent_text(&sent)));
    let mut smoke = "none";
    if let Some(gate) = &image.smoke {
        print(format!(
            "smoke: waiting for HTTP 200 on :{}{}",
            gate.port, gate.path
        ));
        if let Err(error) = engine.smoke(&image.name, &built.image_id, gate).await {
            // A broken image must not be pushable by its tags.
            for tag in &image.tags {
                let _ = engine.untag(tag).await;
            }
            return Err(
                error.hint("the image was untagged so it cannot be pushed; fix it and build again")
            );
        }
        print("smoke: passed".to_string());
        smoke = "passed";
    }
    Ok(BuiltImage {
        name: image.name.clone(),
        image_id: built.image_id,
        tags: image.tags.clone(),
        seconds: started.elapsed().as_secs_f64(),
        steps: built.steps,
        cached_steps: built.cached,
        smoke,
        context_sent: sent,
        ignore_file,
    })
}

/// Prints build logs to stderr: prefixed with the image name as they come,
/// or, under a CI runner, one `::group::` per image when it finishes (groups
/// cannot interleave).
struct Printer {
    names: Vec<String>,
    width: usize,
    grouped: bool,
    buffered: Vec<Vec<String>>,
    ci: Ci,
}

impl Printer {
    fn new(names: &[&str], ci: &Ci) -> Printer {
        Printer {
            names: names.iter().map(|n| n.to_string()).collect(),
            width: names.iter().map(|n| n.len()).max().unwrap_or(0),
            grouped: ci.actions,
            buffered: vec![Vec::new(); names.len()],
            ci: ci.clone(),
        }
    }

    fn print(&mut self, event: Event) {
        match event {
            Event::Line(index, line) if self.grouped => self.buffered[index].push(line),
            Event::Line(index, line) => {
                self.ci
                    .say(&super::prefixed(&self.names[index], self.width, &line));
            }
            Event::Done(index) if self.grouped => {
                let lines = std::mem::take(&mut self.buffered[index]);
                super::print_image_log(&self.ci, "build", &self.names[index], self.width, &lines);
            }
            Event::Done(_) => {}
        }
    }
}

#[derive(Serialize)]
struct Document<'a> {
    sha: &'a str,
    sha7: &'a str,
    builder: Builder,
    images: &'a [BuiltImage],
}

fn report(plan: &Plan, results: &[BuiltImage], format: Format, ci: &Ci) -> Result<u8> {
    match format {
        Format::Json => {
            let document = Document {
                sha: &plan.sha,
                sha7: &plan.sha7,
                builder: plan.builder,
                images: results,
            };
            ci.out(&super::json(&document))?;
        }
        Format::Text => {
            let mut text = String::new();
            for result in results {
                text.push_str(&format!(
                    "built {} {} in {:.1}s ({}/{} steps cached, smoke {}, context sent: {})\n",
                    result.name,
                    short_id(&result.image_id),
                    result.seconds,
                    result.cached_steps,
                    result.steps,
                    result.smoke,
                    sent_text(&result.context_sent)
                ));
                for tag in &result.tags {
                    text.push_str(&format!("  {tag}\n"));
                }
            }
            ci.out(&text)?;
        }
    }
    ci.set_output("sha7", &plan.sha7)?;
    for result in results {
        ci.set_output(&format!("{}-image-id", result.name), &result.image_id)?;
    }
    let mut summary = String::from(
        "### hoist build\n\n| image | id | tags | context sent | time | cached |\n|---|---|---|---|---|---|\n",
    );
    for result in results {
        summary.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} s | {}/{} |\n",
            markdown(&result.name),
            markdown_code(short_id(&result.image_id)),
            result
                .tags
                .iter()
                .map(|t| markdown_code(t))
                .collect::<Vec<_>>()
                .join("<br>"),
            sent_text(&result.context_sent),
            result.seconds,
            result.cached_steps,
            result.steps
        ));
    }
    ci.add_summary(&summary)?;
    Ok(0)
}

/// After builds whose contexts were not walked up front (BuildKit): the
/// warning about a big context, from what the engine asked for.
pub(super) fn warn_sent(results: &[BuiltImage], sizes: &[Summary], ci: &Ci) {
    for (result, size) in results.iter().zip(sizes) {
        let sent = &result.context_sent;
        // A context walked up front was warned about then.
        if size.entries > 0 || sent.bytes <= context::WARN_BYTES {
            continue;
        }
        ci.warn(&format!(
            "{}: the engine asked for {} of context; list what the image does not need in {}",
            result.name,
            sent_text(sent),
            result.ignore_file.display()
        ));
    }
}

/// `1.0 MiB in 12 files`: what of a context was sent.
pub(super) fn sent_text(sent: &Sent) -> String {
    format!(
        "{} in {} file{}",
        human_bytes(sent.bytes),
        sent.files,
        if sent.files == 1 { "" } else { "s" }
    )
}

pub(super) fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}
