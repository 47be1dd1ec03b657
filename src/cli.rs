//! The command tree.

use crate::build::Builder;
use crate::config::PushVia;
use crate::dialect::Dialect;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `hoist --version`: the version and the commit it was built from
/// (`build.rs`), e.g. "0.1.0 (3921529)".
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HOIST_COMMIT"), ")");

/// The exit codes of hoist as a whole (`hoist --help`); each command's
/// `--help` lists only the ones it can return. `2` is always clap's for a
/// usage error as well.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the command ran and failed, or `hoist changes --check` found problems
  2  usage, config or input error (a missing or invalid file, a bad pattern)";

const EXIT_CHANGES: &str = "\
Exit codes:
  0  decided (whether the push runs or not: read the output), or --check found nothing
  1  --check found problems, or git failed
  2  usage, config or input error: a missing or invalid workflow, a bad pattern, a --base
     that this full clone does not hold, an unreadable --files-from";

const EXIT_INIT: &str = "\
Exit codes:
  0  hoist.yaml was written
  1  it could not be written
  2  usage or input error: not a git repository, a hoist.yaml already there (--force
     replaces it), a registry with credentials in it";

const EXIT_DEPS: &str = "\
Exit codes:
  0  every dependency is in place (cloned or reused; with --tolerant, skipped ones too)
  1  a dependency failed (each one is listed with its cause)
  2  usage, config or input error: an invalid manifest, an unknown provider, a base URL
     without a scheme";

const EXIT_BUILD: &str = "\
Exit codes:
  0  every image was built, tagged and passed its smoke gate
  1  the engine could not be reached, a build or a smoke gate failed
  2  usage, config or input error: a missing Dockerfile or context, an unknown --image, an
     invalid hoist.yaml, a --sha that is not a commit, a bad --build-arg";

const EXIT_PUBLISH: &str = "\
Exit codes:
  0  published and verified, or not selected by the path filters (the output says which)
  1  a dependency, build, push or check failed, or a staging tag holds another commit's image
  2  usage, config or input error: no registry, an invalid hoist.yaml or workflow, a --sha
     that is not the checked-out commit, tracked files changed in a context (see
     --allow-dirty)";

const EXIT_PROMOTE: &str = "\
Exit codes:
  0  latest names the commit's images, verified (or already did), in every destination
  1  a missing staging tag, latest would go backwards, latest changed meanwhile, a canary
     timed out, or a write failed or could not be verified; with --to also a refused or
     missing login, an unreachable destination, a missing repository, a destination's
     staging tag naming another image, or a failed copy
  2  usage, config or input error: no registry, a sha that is not 7 to 40 hex characters,
     a bad --to or promote.to entry, a destination listed twice";

const EXIT_ROLLBACK: &str = "\
Exit codes:
  0  latest is back, verified
  1  no latest-previous to go back to, a missing staging tag, or a write failed
  2  usage, config or input error: no registry, a bad sha";

const EXIT_STATUS: &str = "\
Exit codes:
  0  the tags were read
  1  the registry could not be read
  2  usage, config or input error: no registry, an invalid hoist.yaml";

/// hoist: a monorepo's container-image pipeline, from commit to production tag.
#[derive(Debug, Parser)]
#[command(name = "hoist", version = VERSION, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Run as if started in DIR (relative paths are read from there).
    #[arg(short = 'C', value_name = "DIR", default_value = ".", global = true)]
    pub dir: PathBuf,

    /// The config file [default: hoist.yaml in DIR, when present].
    #[arg(long, value_name = "FILE", env = "HOIST_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decide whether a push selects the pipeline, from the workflow's `on.push` filters.
    #[command(after_help = EXIT_CHANGES)]
    Changes(ChangesArgs),
    /// Write a commented hoist.yaml for this repository: its workflows, and an image per Dockerfile.
    #[command(after_help = EXIT_INIT)]
    Init(InitArgs),
    /// Pre-clone the git dependencies of manifest.json into the bundle dir.
    #[command(after_help = EXIT_DEPS)]
    Deps(DepsArgs),
    /// Build the images through the Docker engine, tagged `:staging-<sha7>` and `:staging-latest`.
    #[command(after_help = EXIT_BUILD)]
    Build(BuildArgs),
    /// The CI step: changes, deps, build, push `:staging-<sha7>` and `:staging-latest`, verify.
    #[command(after_help = EXIT_PUBLISH)]
    Publish(PublishArgs),
    /// Point `latest` at a published commit's images, registry-side: all images or none, verified.
    #[command(after_help = EXIT_PROMOTE)]
    Promote(PromoteArgs),
    /// Move `latest` back to `latest-previous` (swapping them), or to a given commit.
    #[command(after_help = EXIT_ROLLBACK)]
    Rollback(RollbackArgs),
    /// What `latest`, `latest-previous` and `staging-latest` name, and the newest staging tags.
    #[command(after_help = EXIT_STATUS)]
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// The workflow whose `on.push` filters decide [default: .gitea/workflows/publish-workspace-server-image.yml,
    /// or `workflow` in hoist.yaml, or HOIST_WORKFLOW].
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<PathBuf>,

    /// The pushed ref, refs/heads/<branch> or refs/tags/<tag> [default: GITHUB_REF, else the current branch].
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,

    /// Whose rules decide the filters [default: `dialect` in hoist.yaml, else gitea when
    /// GITEA_ACTIONS=true, else github].
    #[arg(long, value_enum, value_name = "DIALECT")]
    pub dialect: Option<Dialect>,

    /// Read the changed files from FILE instead of git (`-` for stdin): one path per line as
    /// `git diff --name-only` prints them (C-quoted names are unquoted), or NUL-separated as
    /// `git diff -z` prints them (detected from the first NUL byte).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["base", "head"])]
    pub files_from: Option<PathBuf>,

    /// The --files-from input is NUL-separated (`git diff --name-only -z`), even without a NUL.
    #[arg(long, requires = "files_from")]
    pub files_from_nul: bool,

    /// The commit before the push [default: `before` of the push event at GITHUB_EVENT_PATH, else HEAD~1].
    #[arg(long, value_name = "SHA", requires = "head")]
    pub base: Option<String>,

    /// The commit after the push [default: `after` of the push event, else HEAD].
    #[arg(long, value_name = "SHA", requires = "base")]
    pub head: Option<String>,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Lint the workflow's filters instead of deciding; exit 1 when something is found.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The registry to write, HOST[/PREFIX] [default: none, a commented example].
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,

    /// Replace an existing hoist.yaml.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DepsArgs {
    /// The dependency manifest [default: manifest.json, or `manifest` in hoist.yaml, or HOIST_MANIFEST].
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Where to clone [default: .tenant-bundle-deps, or `bundle_dir` in hoist.yaml, or HOIST_BUNDLE_DIR].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Base URL of the default provider's repositories (`<URL>/<org>/<repo>.git`).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// The environment variable holding the default provider's token.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,

    /// How many dependencies to fetch at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Skip `private` entries whose token is not set (with a warning) instead of failing.
    #[arg(long)]
    pub tolerant: bool,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build only this image (repeatable) [default: every image of hoist.yaml].
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,

    /// The commit being built [default: GITHUB_SHA, else the repository's HEAD].
    #[arg(long, value_name = "SHA")]
    pub sha: Option<String>,

    /// Registry host and repository prefix the tags are for [default: HOIST_REGISTRY, else
    /// `registry` in hoist.yaml; none: local names].
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,

    /// The engine's builder.
    #[arg(long, value_enum, default_value_t = Builder::Buildkit)]
    pub builder: Builder,

    /// Build every step afresh: no layer cache, no cache source.
    #[arg(long)]
    pub no_cache: bool,

    /// Set a build arg on every image, over hoist.yaml's (repeatable); `KEY` alone takes the
    /// value from the environment, and is not passed when it is not set. For one-off builds:
    /// `hoist publish` takes no such flag, so what it pushes is what its commit's hoist.yaml says.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// Print what would be built, without touching the engine.
    #[arg(long)]
    pub dry_run: bool,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Registry host and repository prefix to push to [default: HOIST_REGISTRY, else
    /// `registry` in hoist.yaml]. An `<account>.dkr.ecr.<region>.amazonaws.com` host is ECR.
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,

    /// The commit being published [default: GITHUB_SHA, else the repository's HEAD]. It must be
    /// the checked-out commit (HEAD): the working tree is what is built.
    #[arg(long, value_name = "SHA")]
    pub sha: Option<String>,

    /// Whose rules decide the workflow's filters [default: `dialect` in hoist.yaml, else gitea
    /// when GITEA_ACTIONS=true, else github].
    #[arg(long, value_enum, value_name = "DIALECT")]
    pub dialect: Option<Dialect>,

    /// Publish even when the workflow's path filters skip this push, and replace a
    /// `staging-<sha7>` that holds another commit's image.
    #[arg(long)]
    pub force: bool,

    /// Publish even though tracked files the builds read differ from the commit: labelled
    /// `<sha>-dirty` and pushed as `staging-<sha7>-dirty` only (never `staging-<sha7>`,
    /// `staging-latest` or the extra tags).
    #[arg(long)]
    pub allow_dirty: bool,

    /// Also point this tag at each image's manifest, registry-side (repeatable); a template
    /// like `tags:` in hoist.yaml: `${sha7}`, `${ref_name}`, on a tag push `${version}`,
    /// `${major}`, `${minor}`, `${patch}`.
    #[arg(long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// Create missing ECR repositories (tags immutable except staging-latest, latest and
    /// latest-previous, where the API allows).
    #[arg(long)]
    pub create_repos: bool,

    /// Publish only this image (repeatable) [default: every image of hoist.yaml].
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,

    /// The engine's builder.
    #[arg(long, value_enum, default_value_t = Builder::Buildkit)]
    pub builder: Builder,

    /// How many dependencies to fetch at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Who uploads the images: hoist itself through the registry's API (parallel
    /// compression, chunks, resume), or the engine (`docker push`) [default: HOIST_PUSH_VIA,
    /// else `push.via` in hoist.yaml, else registry].
    #[arg(long, value_enum, value_name = "VIA")]
    pub push_via: Option<PushVia>,

    /// Upload blobs in requests of at most this size, e.g. 90MiB behind a proxy that caps
    /// request bodies near 100 MB [default: HOIST_PUSH_CHUNK_SIZE, else `push.chunk_size` in
    /// hoist.yaml, else one request per blob].
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<String>,

    /// Print the whole plan (changes, deps, builds, pushes) without touching the engine,
    /// the network or any credential.
    #[arg(long)]
    pub dry_run: bool,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The commit whose `staging-<sha7>` images become `latest`: HEAD, a branch, a tag or a sha
    /// of the local repository, or 7 to 40 hex characters of a commit it does not hold.
    #[arg(value_name = "SHA", env = "HOIST_PROMOTE_SHA")]
    pub sha: String,

    /// The registry, HOST[/PREFIX] [default: HOIST_REGISTRY, else `registry` in hoist.yaml].
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,

    /// Promote only this image (repeatable) [default: every image of hoist.yaml].
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,

    /// Copy the verified images to this registry, HOST[/PREFIX], digest for digest, and move
    /// `latest` there instead of in the source (repeatable) [default: HOIST_PROMOTE_TO, else
    /// `promote.to` in hoist.yaml].
    #[arg(long = "to", value_name = "REGISTRY")]
    pub to: Vec<String>,

    /// With --to: create missing ECR repositories in the destination, as `publish
    /// --create-repos` does (immutable tags except the moving ones).
    #[arg(long)]
    pub create_repos: bool,

    /// Before promoting, wait until this canary reports the sha (JSON with `sha`, `git_sha`
    /// or `revision`); repeatable.
    #[arg(long = "wait-for", value_name = "URL")]
    pub wait_for: Vec<String>,

    /// How long to wait for the canaries.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: String,

    /// How often to ask the canaries.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub interval: String,

    /// Promote even when `latest` holds a newer commit, or one whose ancestry is unknown.
    #[arg(long)]
    pub allow_older: bool,

    /// Read the registry and print the moves, without writing or waiting.
    #[arg(long)]
    pub dry_run: bool,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Promote this commit instead (a ref or a sha, as for promote), backwards allowed
    /// [default: `latest-previous`].
    #[arg(value_name = "SHA")]
    pub sha: Option<String>,

    /// The registry, HOST[/PREFIX] [default: HOIST_REGISTRY, else `registry` in hoist.yaml].
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,

    /// Roll back only this image (repeatable) [default: every image of hoist.yaml].
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,

    /// Read the registry and print the moves, without writing.
    #[arg(long)]
    pub dry_run: bool,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The registry, HOST[/PREFIX] [default: HOIST_REGISTRY, else `registry` in hoist.yaml].
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,

    /// Only this image (repeatable) [default: every image of hoist.yaml].
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,

    /// How many of the newest `staging-*` tags to list per image.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub staging: usize,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}
