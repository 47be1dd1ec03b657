//! `hoist.yaml` + environment + flags -> [`Config`].
//!
//! Every key is optional and the defaults reproduce the reference pipeline
//! (see the README). Precedence, highest first: a command-line flag, a
//! `HOIST_*` environment variable, `hoist.yaml`, the default. An unknown key
//! in `hoist.yaml` is an error that names it, so a typo never passes as a
//! default.
//!
//! Each pipeline stage adds its keys here as it arrives: one field in
//! [`FileConfig`], one in [`Config`], one line in [`Config::load`].

use crate::dialect::Dialect;
use crate::error::{Error, Location, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CONFIG_FILE: &str = "hoist.yaml";
pub const DEFAULT_WORKFLOW: &str = ".gitea/workflows/publish-workspace-server-image.yml";
pub const DEFAULT_MANIFEST: &str = "manifest.json";
pub const DEFAULT_BUNDLE_DIR: &str = ".tenant-bundle-deps";
/// The provider of manifest entries that name none, and the known ones.
pub const DEFAULT_PROVIDER: &str = "moleculesai";
const DEFAULT_PROVIDERS: [(&str, &str, &str); 2] = [
    (
        "moleculesai",
        "https://git.moleculesai.app",
        "MOLECULE_GITEA_TOKEN",
    ),
    ("github", "https://github.com", "MOLECULE_GITHUB_TOKEN"),
];

/// `hoist.yaml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// The workflow whose `on.push` filters `hoist changes` reads.
    workflow: Option<PathBuf>,
    /// Whose rules decide the filters: `github` or `gitea`.
    dialect: Option<Dialect>,
    /// The dependency manifest that `hoist deps` reads.
    manifest: Option<PathBuf>,
    /// Where `hoist deps` clones the dependencies.
    bundle_dir: Option<PathBuf>,
    git: Option<FileGit>,
    /// Where images are tagged for (and pushed to): a host plus an optional
    /// repository prefix, e.g. `123.dkr.ecr.us-east-2.amazonaws.com/molecule-ai`.
    registry: Option<String>,
    /// Labels for every image, under each image's own `labels:`.
    labels: Option<BTreeMap<String, String>>,
    /// The images the project builds; replaces the default set when given.
    images: Option<BTreeMap<String, FileImage>>,
    /// Tags `hoist publish` writes beside `staging-<sha7>`, as templates.
    tags: Option<Vec<String>>,
    /// How `hoist publish` pushes.
    push: Option<FilePush>,
    /// Where `hoist promote` copies to.
    promote: Option<FilePromote>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePromote {
    /// Each a registry, or a map ([`FileDestination`]): read one by one,
    /// so that an error names the entry and the key.
    to: Option<Vec<serde_yaml::Value>>,
}

/// One entry of `promote.to` written as a map.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDestination {
    registry: String,
    aws_profile: Option<String>,
    aws_role_arn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePush {
    via: Option<PushVia>,
    /// A size (`90MiB`, `100MB`, `65536`), or `null` for one request per
    /// blob.
    chunk_size: Option<serde_yaml::Value>,
    jobs: Option<usize>,
}

/// Who uploads the image: hoist itself through the distribution API, or
/// the engine (`docker push`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PushVia {
    Registry,
    Engine,
}

impl PushVia {
    pub fn as_str(self) -> &'static str {
        match self {
            PushVia::Registry => "registry",
            PushVia::Engine => "engine",
        }
    }
}

/// `push:` resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushConfig {
    /// `push.via` (`HOIST_PUSH_VIA`, `--push-via`); default registry.
    pub via: PushVia,
    /// `push.chunk_size` (`HOIST_PUSH_CHUNK_SIZE`, `--chunk-size`), in
    /// bytes: no request body is larger. `None`: one request per blob.
    pub chunk_size: Option<u64>,
    /// `push.jobs` (`HOIST_PUSH_JOBS`): blob uploads at once; default 4.
    pub jobs: usize,
}

/// How to reach an ECR registry of another account than the default
/// credentials' (a promotion's destination): both `None` use the default
/// chain as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// A profile of the shared AWS config (`~/.aws/config`) to take the
    /// credentials from, instead of `AWS_PROFILE` or the default.
    pub profile: Option<String>,
    /// A role to assume through STS with those credentials, e.g.
    /// `arn:aws:iam::210987654321:role/hoist-promote` (the usual way into
    /// another account).
    pub role_arn: Option<String>,
}

/// A registry that `hoist promote --to` copies verified images to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `HOST[/PREFIX]`, as `registry:` is written.
    pub registry: String,
    /// Used when the host is an ECR host.
    pub aws: AwsSettings,
}

/// The default of `push.jobs`.
pub const DEFAULT_PUSH_JOBS: usize = 4;

/// One image of `images:` as written; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileImage {
    dockerfile: Option<PathBuf>,
    context: Option<PathBuf>,
    build_args: Option<BTreeMap<String, String>>,
    target: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    cache_from: Option<Vec<String>>,
    smoke: Option<FileSmoke>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSmoke {
    port: u16,
    path: Option<String>,
    timeout: Option<String>,
    env: Option<BTreeMap<String, String>>,
    command: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGit {
    /// The provider of entries that name none.
    provider: Option<String>,
    providers: Option<BTreeMap<String, Provider>>,
    /// Whether Git LFS files are fetched for entries and providers that do
    /// not say.
    lfs: Option<bool>,
}

/// Where a provider's repositories are cloned from, and the environment
/// variable that holds its token (the token itself is never configured).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub base_url: String,
    pub token_env: Option<String>,
    /// Whether Git LFS files of this provider's repositories are fetched;
    /// `None` defers to `git.lfs`.
    #[serde(default)]
    pub lfs: Option<bool>,
}

/// Values given on the command line, which win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub workflow: Option<PathBuf>,
    pub dialect: Option<Dialect>,
    pub manifest: Option<PathBuf>,
    pub bundle_dir: Option<PathBuf>,
    /// Base URL of the default provider.
    pub base_url: Option<String>,
    /// Token variable of the default provider.
    pub token_env: Option<String>,
    pub registry: Option<String>,
    pub push_via: Option<PushVia>,
    /// `--chunk-size` as given.
    pub chunk_size: Option<String>,
    /// `--to` as given (repeatable).
    pub promote_to: Vec<String>,
}

/// The git providers the manifest's entries are cloned from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitConfig {
    /// The provider of entries that name none.
    pub default_provider: String,
    pub providers: BTreeMap<String, Provider>,
    /// `git.lfs`: whether Git LFS files are fetched when neither the entry
    /// nor its provider says (default false: they fail the entry instead).
    pub lfs: bool,
}

/// The resolved configuration. Paths are relative to the current directory
/// (they were joined to the project root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The project root (`-C DIR`).
    pub root: PathBuf,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    pub workflow: PathBuf,
    /// Whose rules decide the workflow's filters: the flag, else
    /// `dialect:` in hoist.yaml, else `gitea` on a Gitea runner
    /// (`GITEA_ACTIONS=true`), else `github`.
    pub dialect: Dialect,
    pub manifest: PathBuf,
    pub bundle_dir: PathBuf,
    pub git: GitConfig,
    /// Host plus repository prefix that images are tagged for; `None` tags
    /// them with local names only.
    pub registry: Option<String>,
    /// `labels:` at the top level: labels for every image, which an image's
    /// own `labels:` override key by key. Values may hold `${…}` variables;
    /// an empty value removes a label (see [`crate::build`]).
    pub labels: BTreeMap<String, String>,
    /// The images to build, in name order.
    pub images: Vec<ImageConfig>,
    /// `tags:`: templates of the tags `hoist publish` points at every
    /// image's manifest beside `staging-<sha7>` (`${sha7}`, `${version}`,
    /// …; expanded by [`crate::build::extra_tags`]).
    pub tags: Vec<String>,
    pub push: PushConfig,
    /// `promote.to` (`HOIST_PROMOTE_TO`, `--to`): where `hoist promote`
    /// copies to; empty promotes in `registry` itself.
    pub promote_to: Vec<Destination>,
}

/// How one image is built. Paths are resolved like every other path;
/// `build_args` and `labels` values may still hold `${sha}`-style variables,
/// which the build plan expands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    pub name: String,
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `None`: the registry's `:staging-latest` of this image.
    pub cache_from: Option<Vec<String>>,
    pub smoke: Option<Smoke>,
}

/// A smoke gate: the built image must answer HTTP 200 on `path` at `port`
/// within `timeout`, or it is not an image worth pushing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Smoke {
    pub port: u16,
    pub path: String,
    #[serde(serialize_with = "seconds")]
    pub timeout: Duration,
    pub env: BTreeMap<String, String>,
    /// Replaces the image's command when given.
    pub command: Option<Vec<String>>,
}

/// One image of the reference pipeline.
struct DefaultImage {
    name: &'static str,
    dockerfile: &'static str,
    build_args: &'static [(&'static str, &'static str)],
}

/// The images of the reference pipeline. The tenant's
/// `NEXT_PUBLIC_PLATFORM_URL` is empty on purpose: a URL baked into the
/// canvas at build time broke tenant routing before.
const DEFAULT_IMAGES: [DefaultImage; 2] = [
    DefaultImage {
        name: "platform",
        dockerfile: "workspace-server/Dockerfile",
        build_args: &[("GIT_SHA", "${sha}")],
    },
    DefaultImage {
        name: "platform-tenant",
        dockerfile: "workspace-server/Dockerfile.tenant",
        build_args: &[("GIT_SHA", "${sha}"), ("NEXT_PUBLIC_PLATFORM_URL", "")],
    },
];
/// The build args of an image that is not a reference one and whose
/// `build_args` are not written: every image can say which commit it holds.
const DEFAULT_BUILD_ARGS: [(&str, &str); 1] = [("GIT_SHA", "${sha}")];
/// The labels hoist writes from the facts of the build (the commit, the
/// clock, the repository): configuring them would let an image claim a
/// commit it was not built from.
pub const HOIST_LABELS: [&str; 3] = [
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.source",
];
const DEFAULT_SMOKE_PATH: &str = "/";
const DEFAULT_SMOKE_TIMEOUT: Duration = Duration::from_secs(30);

impl Config {
    /// Loads the configuration of the project at `root`: `config_file` when
    /// given (it must exist), else `root/hoist.yaml` when present.
    pub fn load(
        root: &Path,
        config_file: Option<&Path>,
        overrides: Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let (file, parsed) = match config_file {
            Some(path) => {
                let path = resolve(root, path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::unreadable("config", &path, e))?;
                let parsed = parse(&path, &text)?;
                (Some(path), parsed)
            }
            None => {
                let path = resolve(root, Path::new(CONFIG_FILE));
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let parsed = parse(&path, &text)?;
                        (Some(path), parsed)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        (None, FileConfig::default())
                    }
                    Err(e) => return Err(Error::unreadable("config", &path, e)),
                }
            }
        };
        let env_value = |name: &str| env(name).filter(|v| !v.is_empty());
        let env_path = |name: &str| env_value(name).map(PathBuf::from);
        let path = |flag: Option<PathBuf>, name: &str, file: Option<PathBuf>, default: &str| {
            let chosen = flag
                .or_else(|| env_path(name))
                .or(file)
                .unwrap_or_else(|| PathBuf::from(default));
            resolve(root, &chosen)
        };
        let file_git = parsed.git.unwrap_or_default();
        let default_provider = file_git
            .provider
            .unwrap_or_else(|| DEFAULT_PROVIDER.to_string());
        let mut providers: BTreeMap<String, Provider> = DEFAULT_PROVIDERS
            .iter()
            .map(|(name, base_url, token_env)| {
                let provider = Provider {
                    base_url: base_url.to_string(),
                    token_env: Some(token_env.to_string()),
                    lfs: None,
                };
                (name.to_string(), provider)
            })
            .collect();
        providers.extend(file_git.providers.unwrap_or_default());
        let Some(default) = providers.get_mut(&default_provider) else {
            let known: Vec<&str> = providers.keys().map(String::as_str).collect();
            return Err(Error::input(format!(
                "git.provider '{default_provider}' is not a known provider ({})",
                known.join(", ")
            ))
            .hint("add it under git.providers in hoist.yaml, with its base_url and token_env"));
        };
        if let Some(base_url) = overrides
            .base_url
            .or_else(|| env_value("HOIST_GIT_BASE_URL"))
        {
            default.base_url = base_url;
        }
        if let Some(token_env) = overrides.token_env.or_else(|| env_value("HOIST_TOKEN_ENV")) {
            default.token_env = Some(token_env);
        }
        let labels = parsed.labels.unwrap_or_default();
        check_labels("labels", &labels, file.as_deref())?;
        let images = images(root, parsed.images, file.as_deref())?;
        let push = push_config(
            parsed.push.unwrap_or_default(),
            overrides.push_via,
            overrides.chunk_size,
            &env_value,
            file.as_deref(),
        )?;
        let promote_to = promote_to(
            parsed.promote.and_then(|p| p.to).unwrap_or_default(),
            overrides.promote_to,
            &env_value,
            file.as_deref(),
        )?;
        let dialect = overrides
            .dialect
            .or(parsed.dialect)
            .unwrap_or_else(|| Dialect::detect(&env));
        Ok(Config {
            root: root.to_path_buf(),
            file,
            workflow: path(
                overrides.workflow,
                "HOIST_WORKFLOW",
                parsed.workflow,
                DEFAULT_WORKFLOW,
            ),
            dialect,
            manifest: path(
                overrides.manifest,
                "HOIST_MANIFEST",
                parsed.manifest,
                DEFAULT_MANIFEST,
            ),
            bundle_dir: path(
                overrides.bundle_dir,
                "HOIST_BUNDLE_DIR",
                parsed.bundle_dir,
                DEFAULT_BUNDLE_DIR,
            ),
            git: GitConfig {
                default_provider,
                providers,
                lfs: file_git.lfs.unwrap_or(false),
            },
            registry: overrides
                .registry
                .or_else(|| env_value("HOIST_REGISTRY"))
                .or(parsed.registry)
                .map(|r| r.trim_end_matches('/').to_string())
                .filter(|r| !r.is_empty()),
            labels,
            images,
            tags: parsed.tags.unwrap_or_default(),
            push,
            promote_to,
        })
    }
}

/// The configured images, each filled in from the defaults: an image named
/// like a default one starts from that one, any other from `Dockerfile` in
/// its context.
fn images(
    root: &Path,
    written: Option<BTreeMap<String, FileImage>>,
    file: Option<&Path>,
) -> Result<Vec<ImageConfig>> {
    let written = written.unwrap_or_else(|| {
        DEFAULT_IMAGES
            .iter()
            .map(|image| (image.name.to_string(), FileImage::default()))
            .collect()
    });
    if written.is_empty() {
        let error = Error::input("`images:` in hoist.yaml lists no image");
        let error = match file {
            Some(file) => error.at(Location::new(file, 1, None)),
            None => error,
        };
        return Err(error.hint("list at least one image, or remove `images:` for the defaults"));
    }
    written
        .into_iter()
        .map(|(name, image)| image_config(root, name, image, file))
        .collect()
}

fn image_config(
    root: &Path,
    name: String,
    image: FileImage,
    file: Option<&Path>,
) -> Result<ImageConfig> {
    if !is_image_name(&name) {
        return Err(Error::input(format!(
            "image name '{name}' in hoist.yaml is not a valid repository name"
        ))
        .hint("use lowercase letters, digits and single '.', '_' or '-' between them"));
    }
    let default = DEFAULT_IMAGES.iter().find(|image| image.name == name);
    let pairs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let build_args = match (default, image.build_args) {
        // A reference image keeps its defaults under what is written, as
        // it always has (the tenant's empty NEXT_PUBLIC_PLATFORM_URL is not
        // something to lose by adding one arg).
        (Some(default), written) => {
            let mut build_args = pairs(default.build_args);
            build_args.extend(written.unwrap_or_default());
            build_args
        }
        (None, Some(written)) => written,
        (None, None) => pairs(&DEFAULT_BUILD_ARGS),
    };
    let labels = image.labels.unwrap_or_default();
    check_labels(&format!("images.{name}.labels"), &labels, file)?;
    let context = image.context.unwrap_or_else(|| PathBuf::from("."));
    let dockerfile = image
        .dockerfile
        .or_else(|| default.map(|image| PathBuf::from(image.dockerfile)))
        .unwrap_or_else(|| context.join("Dockerfile"));
    let smoke = match image.smoke {
        None => None,
        Some(smoke) => Some(Smoke {
            port: smoke.port,
            path: smoke.path.unwrap_or_else(|| DEFAULT_SMOKE_PATH.to_string()),
            timeout: match smoke.timeout {
                None => DEFAULT_SMOKE_TIMEOUT,
                Some(text) => parse_duration(&text).ok_or_else(|| {
                    Error::input(format!(
                        "images.{name}.smoke.timeout '{text}' is not a duration"
                    ))
                    .hint("write it like 30s, 2m or 500ms")
                })?,
            },
            env: smoke.env.unwrap_or_default(),
            command: smoke.command,
        }),
    };
    Ok(ImageConfig {
        dockerfile: resolve(root, &dockerfile),
        context: resolve(root, &context),
        build_args,
        target: image.target,
        labels,
        cache_from: image.cache_from,
        smoke,
        name,
    })
}

/// Refuses a label that hoist writes itself ([`HOIST_LABELS`]); `what` is
/// where it was written (`labels`, `images.app.labels`).
fn check_labels(what: &str, labels: &BTreeMap<String, String>, file: Option<&Path>) -> Result<()> {
    let Some(key) = labels
        .keys()
        .find(|key| HOIST_LABELS.contains(&key.as_str()))
    else {
        return Ok(());
    };
    let error = Error::input(format!(
        "{what}.{key} in hoist.yaml: hoist sets this label itself"
    ));
    // serde_yaml keeps no place for map keys: the first line naming the key.
    let line = file
        .and_then(|file| std::fs::read_to_string(file).ok())
        .and_then(|text| text.lines().position(|line| line.contains(key.as_str())));
    let error = match (file, line) {
        (Some(file), Some(line)) => error.at(Location::new(file, line + 1, None)),
        _ => error,
    };
    Err(error.hint(
        "remove it: the revision and creation time are the build's own, and the source comes from \
         GITHUB_SERVER_URL and GITHUB_REPOSITORY, else the origin remote",
    ))
}

/// Docker's rule for one repository path component.
pub fn is_image_name(name: &str) -> bool {
    let separator = |c: char| matches!(c, '.' | '_' | '-');
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || separator(c);
    !name.is_empty()
        && name.chars().all(allowed)
        && !name.starts_with(separator)
        && !name.ends_with(separator)
}

fn seconds<S: serde::Serializer>(
    duration: &Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(duration.as_secs_f64())
}

/// `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "ms" => number,
        "" | "s" => number.checked_mul(1000)?,
        "m" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

/// `promote.to` with `HOIST_PROMOTE_TO` (registries separated by commas or
/// white space) or the `--to` flags instead. A registry given by flag or
/// variable keeps the AWS settings its `promote.to` entry gives.
fn promote_to(
    file: Vec<serde_yaml::Value>,
    flags: Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
    config: Option<&Path>,
) -> Result<Vec<Destination>> {
    let where_file = config.map_or("hoist.yaml".to_string(), |p| p.display().to_string());
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    const EXAMPLE: &str = "write HOST[/PREFIX], or {registry: HOST[/PREFIX], aws_profile: NAME, \
         aws_role_arn: ARN}, e.g. 210987654321.dkr.ecr.eu-west-1.amazonaws.com/team";
    let mut listed = Vec::new();
    for (n, entry) in file.into_iter().enumerate() {
        let what = format!("promote.to entry {} in {where_file}", n + 1);
        let destination = match entry {
            serde_yaml::Value::String(registry) => Destination {
                registry,
                aws: AwsSettings::default(),
            },
            map @ serde_yaml::Value::Mapping(_) => {
                let entry: FileDestination = serde_yaml::from_value(map).map_err(|e| {
                    Error::input(format!("{what} is not a destination"))
                        .caused_by(&e)
                        .hint(EXAMPLE)
                })?;
                Destination {
                    registry: entry.registry,
                    aws: AwsSettings {
                        profile: entry.aws_profile.filter(|p| !p.is_empty()),
                        role_arn: entry.aws_role_arn.filter(|r| !r.is_empty()),
                    },
                }
            }
            _ => {
                return Err(
                    Error::input(format!("{what} is neither a registry nor a map")).hint(EXAMPLE),
                );
            }
        };
        if destination.registry.trim().is_empty() {
            return Err(Error::input(format!("{what} is an empty registry")).hint(EXAMPLE));
        }
        listed.push(destination);
    }
    let given: Vec<String> = if !flags.is_empty() {
        flags
    } else if let Some(text) = env("HOIST_PROMOTE_TO") {
        let given: Vec<String> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .map(str::to_string)
            .collect();
        // Set but naming nothing is a mistake, not "promote in place".
        if given.is_empty() {
            return Err(Error::input(format!(
                "HOIST_PROMOTE_TO is '{text}', which names no registry"
            ))
            .hint("give registries separated by commas or spaces, or unset it"));
        }
        given
    } else {
        return Ok(listed);
    };
    Ok(given
        .into_iter()
        .map(|registry| {
            let aws = listed
                .iter()
                .find(|d| same(&d.registry, &registry))
                .map(|d| d.aws.clone())
                .unwrap_or_default();
            Destination { registry, aws }
        })
        .collect())
}

/// `push:` with the flags and `HOIST_PUSH_*` over it.
fn push_config(
    file: FilePush,
    via: Option<PushVia>,
    chunk_size: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    config: Option<&Path>,
) -> Result<PushConfig> {
    let where_file = config.map_or("hoist.yaml".to_string(), |p| p.display().to_string());
    let via = match (via, env("HOIST_PUSH_VIA")) {
        (Some(via), _) => via,
        (None, Some(text)) => match text.trim() {
            "registry" => PushVia::Registry,
            "engine" => PushVia::Engine,
            other => {
                return Err(Error::input(format!(
                    "HOIST_PUSH_VIA is '{other}', not registry or engine"
                ))
                .hint("unset it, or set it to registry (hoist uploads) or engine (docker push)"));
            }
        },
        (None, None) => file.via.unwrap_or(PushVia::Registry),
    };
    let size = |text: &str, from: &str| {
        parse_size(text).filter(|n| *n > 0).ok_or_else(|| {
            Error::input(format!("{from} is '{text}', which is not a size"))
                .hint("write a size in bytes or with a unit: 90MiB, 100MB, 512KiB, 65536")
        })
    };
    let chunk_size = match (chunk_size, env("HOIST_PUSH_CHUNK_SIZE"), file.chunk_size) {
        (Some(text), _, _) => Some(size(&text, "--chunk-size")?),
        (None, Some(text), _) => Some(size(&text, "HOIST_PUSH_CHUNK_SIZE")?),
        (None, None, None | Some(serde_yaml::Value::Null)) => None,
        (None, None, Some(serde_yaml::Value::Number(n))) => Some(size(
            &n.to_string(),
            &format!("push.chunk_size in {where_file}"),
        )?),
        (None, None, Some(serde_yaml::Value::String(text))) => {
            Some(size(&text, &format!("push.chunk_size in {where_file}"))?)
        }
        (None, None, Some(_)) => {
            return Err(
                Error::input(format!("push.chunk_size in {where_file} is not a size"))
                    .hint("write a size in bytes or with a unit: 90MiB, 100MB, 512KiB, 65536"),
            );
        }
    };
    let jobs = match env("HOIST_PUSH_JOBS") {
        Some(text) => text
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| {
                Error::input(format!(
                    "HOIST_PUSH_JOBS is '{text}', not a number from 1 to 64"
                ))
            })?,
        None => match file.jobs {
            Some(jobs) if !(1..=64).contains(&jobs) => {
                return Err(Error::input(format!(
                    "push.jobs in {where_file} is {jobs}, not a number from 1 to 64"
                )));
            }
            Some(jobs) => jobs,
            None => DEFAULT_PUSH_JOBS,
        },
    };
    Ok(PushConfig {
        via,
        chunk_size,
        jobs,
    })
}

/// A size: a whole number of bytes, or with a unit: `KB`, `MB`, `GB`
/// (powers of 1000), `KiB`, `MiB`, `GiB` or `K`, `M`, `G` (powers of
/// 1024, as the docker CLI reads `90m`), any case, a space allowed.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// `path` as seen from the current directory when given relative to `root`
/// (`-C DIR`), without a noisy `./` for the default root.
pub fn resolve(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new(".") {
        path.to_path_buf()
    } else {
        root.join(path)
    }
}

fn parse(path: &Path, text: &str) -> Result<FileConfig> {
    // An empty file, or one with only comments, is all defaults.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(text).map_err(|e| {
        let error = Error::input(format!("invalid config {}", path.display())).caused_by(&e);
        let error = match e.location() {
            Some(l) => error.at(Location::new(path, l.line(), Some(l.column()))),
            None => error,
        };
        let line = e.location().map(|l| l.line());
        if e.to_string().contains("unknown field") {
            error.hint("remove or correct the key; the README lists the keys of hoist.yaml")
        } else if let Some((line, (key, variable))) =
            line.and_then(|line| Some((line, unquoted_variable_in_flow(text, line)?)))
        {
            error.hint(format!(
                "line {line} has a `${{…}}` without quotes inside `{{…}}`, where `{{` and `}}` are \
                 YAML's own; quote the value: `{key}: '{variable}'`"
            ))
        } else {
            error
        }
    })
}

/// The first `key: ${…}` of line `line` (1-based) of `text`, or of the
/// line before it (libyaml may report the line after a flow map that ends a
/// line), whose `${` stands outside quotes inside a flow map `{…}`: YAML
/// reads that `{` as the start of a nested map, which makes `{GIT_SHA:
/// ${sha}}` an error. Returns the key and the `${…}` as written.
fn unquoted_variable_in_flow(text: &str, line: usize) -> Option<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let candidates = [line.checked_sub(1), line.checked_sub(2)];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|index| lines.get(index))
        .find_map(|line| {
            let mut depth = 0usize;
            let mut quote: Option<char> = None;
            let mut previous = ' ';
            for (at, c) in line.char_indices() {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, '\'' | '"') => quote = Some(c),
                    (None, '#') if previous == ' ' => return None,
                    (None, '{') if previous == '$' && depth > 0 => {
                        let dollar = at - 1;
                        let variable = line[dollar..]
                            .find('}')
                            .map_or(&line[dollar..], |end| &line[dollar..=dollar + end]);
                        let before = line[..dollar].trim_end().trim_end_matches(':');
                        let key = before.rsplit(['{', ',']).next().unwrap_or_default().trim();
                        return Some((key.to_string(), variable.to_string()));
                    }
                    (None, '{') => depth += 1,
                    (None, '}') => depth = depth.saturating_sub(1),
                    _ => {}
                }
                previous = c;
            }
            None
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn promote_destinations_come_from_flags_the_variable_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hoist.yaml"),
            "promote:\n  to:\n    - ghcr.io/acme\n    - registry: 210987654321.dkr.ecr.eu-west-1.amazonaws.com/acme\n      aws_profile: production\n      aws_role_arn: arn:aws:iam::210987654321:role/hoist\n",
        )
        .unwrap();
        let load = |overrides: Overrides, env: &dyn Fn(&str) -> Option<String>| {
            Config::load(dir.path(), None, overrides, env).map(|c| c.promote_to)
        };
        let ecr = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/acme";
        let production = AwsSettings {
            profile: Some("production".into()),
            role_arn: Some("arn:aws:iam::210987654321:role/hoist".into()),
        };
        let file = load(Overrides::default(), &no_env).unwrap();
        assert_eq!(file.len(), 2);
        assert_eq!(file[0].registry, "ghcr.io/acme");
        assert_eq!(file[0].aws, AwsSettings::default());
        assert_eq!(file[1].aws, production);
        // The variable replaces the list, and a registry it names keeps the
        // file's AWS settings.
        let env = |name: &str| {
            (name == "HOIST_PROMOTE_TO").then(|| format!("{ecr}/, mirror.example.com"))
        };
        let from_env = load(Overrides::default(), &env).unwrap();
        let registries: Vec<&str> = from_env.iter().map(|d| d.registry.as_str()).collect();
        assert_eq!(registries, [&format!("{ecr}/"), "mirror.example.com"]);
        assert_eq!(from_env[0].aws, production);
        let flags = Overrides {
            promote_to: vec!["quay.io/acme".into()],
            ..Overrides::default()
        };
        let from_flags = load(flags, &env).unwrap();
        assert_eq!(from_flags.len(), 1);
        assert_eq!(from_flags[0].registry, "quay.io/acme");
        let empty = tempfile::tempdir().unwrap();
        assert!(
            Config::load(empty.path(), None, Overrides::default(), no_env)
                .unwrap()
                .promote_to
                .is_empty()
        );
        for (yaml, says) in [
            ("    - ''\n", "empty registry"),
            ("    - 5000\n", "neither a registry nor a map"),
            (
                "    - {registry: a.io/x, aws_rolearn: arn}\n",
                "aws_rolearn",
            ),
        ] {
            std::fs::write(
                dir.path().join("hoist.yaml"),
                format!("promote:\n  to:\n{yaml}"),
            )
            .unwrap();
            let error = load(Overrides::default(), &no_env).unwrap_err();
            assert_eq!(error.exit_code(), 2);
            let text = format!("{error}");
            assert!(text.contains("promote.to entry 1"), "{text}");
            assert!(text.contains(says), "{yaml}: {text}");
        }
        std::fs::write(
            dir.path().join("hoist.yaml"),
            "promote:\n  to: [ghcr.io/acme]\n",
        )
        .unwrap();
        let blank = |name: &str| (name == "HOIST_PROMOTE_TO").then(|| " , ".to_string());
        let error = load(Overrides::default(), &blank).unwrap_err();
        assert!(error.message.contains("names no registry"), "{error}");
    }

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap();
        assert_eq!(config.workflow, dir.path().join(DEFAULT_WORKFLOW));
        assert_eq!(config.file, None);
    }

    #[test]
    fn sizes_read_as_the_docker_cli_and_si_write_them() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("90MiB"), Some(90 << 20));
        assert_eq!(parse_size("90m"), Some(90 << 20));
        assert_eq!(parse_size("100MB"), Some(100_000_000));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        for bad in [
            "",
            "MiB",
            "90 MiBs",
            "-1",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn push_settings_come_from_flags_env_and_file_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "push:\n  via: engine\n  chunk_size: 64MiB\n  jobs: 2\n",
        )
        .unwrap();
        let load = |overrides: Overrides, env: &dyn Fn(&str) -> Option<String>| {
            Config::load(dir.path(), None, overrides, env).map(|c| c.push)
        };
        let file = load(Overrides::default(), &no_env).unwrap();
        assert_eq!(
            file,
            PushConfig {
                via: PushVia::Engine,
                chunk_size: Some(64 << 20),
                jobs: 2
            }
        );
        let env = |name: &str| match name {
            "HOIST_PUSH_CHUNK_SIZE" => Some("100MB".to_string()),
            "HOIST_PUSH_VIA" => Some("registry".to_string()),
            "HOIST_PUSH_JOBS" => Some("8".to_string()),
            _ => None,
        };
        let from_env = load(Overrides::default(), &env).unwrap();
        assert_eq!(
            from_env,
            PushConfig {
                via: PushVia::Registry,
                chunk_size: Some(100_000_000),
                jobs: 8
            }
        );
        let flags = Overrides {
            push_via: Some(PushVia::Engine),
            chunk_size: Some("1MiB".to_string()),
            ..Overrides::default()
        };
        let from_flags = load(flags, &env).unwrap();
        assert_eq!(
            (from_flags.via, from_flags.chunk_size),
            (PushVia::Engine, Some(1 << 20))
        );
        let empty = tempfile::tempdir().unwrap();
        let default = Config::load(empty.path(), None, Overrides::default(), no_env)
            .unwrap()
            .push;
        assert_eq!(
            default,
            PushConfig {
                via: PushVia::Registry,
                chunk_size: None,
                jobs: DEFAULT_PUSH_JOBS
            }
        );
    }

    #[test]
    fn bad_push_settings_name_where_they_come_from() {
        let dir = tempfile::tempdir().unwrap();
        let error = |text: &str, env: &dyn Fn(&str) -> Option<String>| {
            std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
            let error = Config::load(dir.path(), None, Overrides::default(), env).unwrap_err();
            assert_eq!(error.exit_code(), 2);
            error.to_string()
        };
        let text = error("push:\n  chunk_size: lots\n", &no_env);
        assert!(
            text.contains("push.chunk_size in") && text.contains("'lots'"),
            "{text}"
        );
        assert!(text.contains("90MiB"), "{text}");
        let text = error("push:\n  chunk_size: 0\n", &no_env);
        assert!(text.contains("'0'"), "{text}");
        let text = error("push:\n  jobs: 0\n", &no_env);
        assert!(text.contains("push.jobs"), "{text}");
        let text = error("push:\n  via: carrier-pigeon\n", &no_env);
        assert!(text.contains("via"), "{text}");
        let env = |name: &str| (name == "HOIST_PUSH_CHUNK_SIZE").then(|| "big".to_string());
        let text = error("", &env);
        assert!(text.contains("HOIST_PUSH_CHUNK_SIZE is 'big'"), "{text}");
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "workflow: from-file.yml\n").unwrap();
        let env = |name: &str| (name == "HOIST_WORKFLOW").then(|| "from-env.yml".to_string());
        let load = |overrides, env: &dyn Fn(&str) -> Option<String>| {
            Config::load(dir.path(), None, overrides, env)
                .unwrap()
                .workflow
        };
        assert_eq!(
            load(Overrides::default(), &no_env),
            dir.path().join("from-file.yml")
        );
        assert_eq!(
            load(Overrides::default(), &env),
            dir.path().join("from-env.yml")
        );
        let flag = Overrides {
            workflow: Some("from-flag.yml".into()),
            ..Overrides::default()
        };
        assert_eq!(load(flag, &env), dir.path().join("from-flag.yml"));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "# hoist\nworkflow: a.yml\nworkfow: b.yml\n",
        )
        .unwrap();
        let err = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap_err();
        assert!(err.causes[0].contains("unknown field `workfow`"), "{err}");
        assert_eq!(err.exit_code(), 2);
        assert_eq!(err.location.as_ref().unwrap().line, 3);
    }

    #[test]
    fn providers_merge_with_the_defaults_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "bundle_dir: deps\ngit:\n  providers:\n    local: {base_url: 'http://127.0.0.1:1', token_env: T}\n",
        )
        .unwrap();
        let overrides = Overrides {
            token_env: Some("FROM_FLAG".into()),
            ..Overrides::default()
        };
        let env = |name: &str| (name == "HOIST_GIT_BASE_URL").then(|| "http://env".to_string());
        let config = Config::load(dir.path(), None, overrides, env).unwrap();
        assert_eq!(config.bundle_dir, dir.path().join("deps"));
        assert_eq!(config.manifest, dir.path().join(DEFAULT_MANIFEST));
        let git = &config.git;
        assert_eq!(git.default_provider, "moleculesai");
        let default = &git.providers["moleculesai"];
        assert_eq!(
            (default.base_url.as_str(), default.token_env.as_deref()),
            ("http://env", Some("FROM_FLAG"))
        );
        assert_eq!(
            git.providers["github"].token_env.as_deref(),
            Some("MOLECULE_GITHUB_TOKEN")
        );
        assert_eq!(git.providers["local"].base_url, "http://127.0.0.1:1");

        std::fs::write(dir.path().join(CONFIG_FILE), "git:\n  provider: nowhere\n").unwrap();
        let err = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap_err();
        assert!(
            err.message.contains("'nowhere' is not a known provider"),
            "{err}"
        );
    }

    #[test]
    fn an_explicit_config_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(
            dir.path(),
            Some(Path::new("nope.yaml")),
            Overrides::default(),
            no_env,
        )
        .unwrap_err();
        assert!(err.message.contains("nope.yaml"), "{err}");
    }

    #[test]
    fn every_image_says_its_commit_unless_its_build_args_say_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "images:\n  worker: {}\n  api:\n    build_args: {PORT: '80'}\n  platform-tenant:\n    build_args: {EXTRA: x}\n",
        )
        .unwrap();
        let config = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap();
        let args = |name: &str| {
            let image = config.images.iter().find(|i| i.name == name).unwrap();
            image.build_args.clone()
        };
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(args("worker"), map(&[("GIT_SHA", "${sha}")]));
        assert_eq!(args("api"), map(&[("PORT", "80")]), "written: exactly that");
        assert_eq!(
            args("platform-tenant"),
            map(&[
                ("EXTRA", "x"),
                ("GIT_SHA", "${sha}"),
                ("NEXT_PUBLIC_PLATFORM_URL", "")
            ]),
            "a reference image keeps its defaults, as before"
        );
    }

    #[test]
    fn an_unquoted_variable_in_a_flow_map_gets_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        // The README's example as a new user first wrote it.
        let text = "registry: reg.example\nimages:\n  worker:\n    context: services/worker\n    build_args: {GIT_SHA: ${sha}}\n";
        std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        let err = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.causes[0].contains("did not find expected ',' or '}'"),
            "{err}"
        );
        assert_eq!(err.location.as_ref().unwrap().line, 5, "{err}");
        let hint = err.hint.as_deref().unwrap_or_default();
        assert!(
            hint.contains("quote the value: `GIT_SHA: '${sha}'`"),
            "{err}"
        );

        let quoted = text.replace("${sha}}", "'${sha}'}");
        std::fs::write(dir.path().join(CONFIG_FILE), quoted).unwrap();
        let config = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap();
        assert_eq!(config.images[0].build_args["GIT_SHA"], "${sha}");

        // Other YAML errors get no such hint; a quoted or commented `${` none.
        for (text, hint) in [
            ("images:\n  a: {context: x\n", false),
            ("images:\n  a: {build_args: {A: '${sha}'}\n", false),
            ("images: # {x: ${sha}}\n  a: {context: [}\n", false),
            ("images:\n  a: {labels: {v: ${sha7}}}\n", true),
        ] {
            std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
            let err = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap_err();
            assert_eq!(err.hint.is_some(), hint, "{text:?}: {err}");
        }
        // The hint quotes the user's own key and variable.
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "images:\n  a: {labels: {team: ${image}}}\n",
        )
        .unwrap();
        let err = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap_err();
        let hint = err.hint.as_deref().unwrap_or_default();
        assert!(hint.contains("`team: '${image}'`"), "{err}");
    }

    #[test]
    fn labels_at_the_top_level_and_the_ones_hoist_writes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "labels:\n  team: core\n  molecule.workflow.run_id: ''\nimages:\n  app: {}\n",
        )
        .unwrap();
        let config = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap();
        assert_eq!(config.labels["team"], "core");
        assert_eq!(config.labels["molecule.workflow.run_id"], "");

        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "images:\n  app:\n    labels:\n      team: core\n      org.opencontainers.image.revision: abc\n",
        )
        .unwrap();
        let err = Config::load(dir.path(), None, Overrides::default(), no_env).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.message.contains(
                "images.app.labels.org.opencontainers.image.revision in hoist.yaml: hoist sets this label itself"
            ),
            "{err}"
        );
        assert_eq!(err.location.as_ref().unwrap().line, 5, "{err}");
    }

    /// Every `hoist.yaml` example of the README parses as written: a user
    /// copies them (the unquoted `${sha}` in a flow map once did not).
    #[test]
    fn the_readme_examples_parse() {
        let readme = include_str!("../README.md");
        let mut examples = 0;
        for block in readme.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap_or_default();
            if !block.starts_with("# hoist.yaml") {
                continue;
            }
            examples += 1;
            if let Err(e) = parse(Path::new("README.md"), block) {
                panic!("{e}\n{block}");
            }
        }
        assert!(examples >= 3, "{examples}");
    }
}
