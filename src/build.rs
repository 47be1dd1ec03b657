//! The build plan: which images, from which Dockerfile and context, with
//! which build args, labels, tags and cache sources.
//!
//! Pure: what comes from the world (the sha, CI variables, the clock, the
//! remote URL) is passed in as [`Inputs`], so `--dry-run` prints exactly the
//! plan that a real build walks, and tests need no engine.

use crate::config::{Config, ImageConfig, Smoke};
use crate::dirty;
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The label holding the CI run that built an image (the reference
/// pipeline's name for it).
pub const RUN_ID_LABEL: &str = "molecule.workflow.run_id";
/// The labels every image gets unless `labels:` in hoist.yaml changes or
/// removes them: the reference deployment's. `${image}` is the image's
/// name; a value that expands to nothing (`${run_id}` outside CI) is no
/// label.
pub const DEFAULT_LABELS: [(&str, &str); 2] = [
    (
        "org.opencontainers.image.description",
        "${image} — pending canary verify",
    ),
    (RUN_ID_LABEL, "${run_id}"),
];
/// The tag that follows the newest build of every image.
pub const STAGING_LATEST: &str = "staging-latest";

/// The engine's two builders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// BuildKit: what the reference Dockerfiles need (`RUN --mount`, parallel
    /// stages), and what writes inline cache metadata.
    Buildkit,
    /// The classic builder.
    Classic,
}

/// What the plan needs from the world.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The full commit sha being built.
    pub sha: String,
    /// The branch or tag name (`GITHUB_REF_NAME`, else the current branch).
    pub ref_name: String,
    /// The CI run (`GITHUB_RUN_ID`), when in CI.
    pub run_id: Option<String>,
    /// The repository's web address, for `org.opencontainers.image.source`.
    pub source: Option<String>,
    /// When the build happens, UTC RFC 3339.
    pub created: String,
    pub builder: Builder,
    pub no_cache: bool,
    /// Tracked files the images' builds read differ from the commit (see
    /// [`crate::dirty`]): the revision label becomes `<sha>-dirty` and the
    /// only tag `staging-<sha7>-dirty`.
    pub dirty: bool,
}

impl Inputs {
    pub fn sha7(&self) -> &str {
        self.sha.get(..7).unwrap_or(&self.sha)
    }

    /// What the images say they were built from: the sha, with
    /// [`dirty::SUFFIX`] when the tree differs from it.
    pub fn revision(&self) -> String {
        match self.dirty {
            true => format!("{}{}", self.sha, dirty::SUFFIX),
            false => self.sha.clone(),
        }
    }
}

/// `staging-<sha7>`, or `staging-<sha7>-dirty` for a build of a tree that
/// differs from the commit.
pub fn staging_tag(sha7: &str, dirty: bool) -> String {
    match dirty {
        true => format!("staging-{sha7}{}", dirty::SUFFIX),
        false => format!("staging-{sha7}"),
    }
}

/// Everything a build does, image by image.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub sha: String,
    pub sha7: String,
    pub builder: Builder,
    pub no_cache: bool,
    /// Built from a tree that differs from the commit: see [`Inputs::dirty`].
    pub dirty: bool,
    pub images: Vec<ImagePlan>,
}

/// One image's build, with every value final.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub name: String,
    /// `<registry>/<name>`, or the bare name without a registry.
    pub repository: String,
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `repository:staging-<sha7>` then `repository:staging-latest`; only
    /// `repository:staging-<sha7>-dirty` for a dirty tree.
    pub tags: Vec<String>,
    pub cache_from: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smoke: Option<Smoke>,
}

impl Plan {
    /// The plan with `args` (`hoist build --build-arg`) set on every image,
    /// over what hoist.yaml says. The values are taken as given, with no
    /// `${…}` expansion, as `docker build --build-arg` takes them.
    pub fn with_build_args(mut self, args: &BTreeMap<String, String>) -> Plan {
        for image in &mut self.images {
            image.build_args.extend(args.clone());
        }
        self
    }
}

/// Plans the build of the `selected` images (all when empty).
pub fn plan(
    config: &Config,
    registry: Option<&str>,
    selected: &[String],
    inputs: &Inputs,
) -> Result<Plan> {
    for name in selected {
        if !config.images.iter().any(|image| &image.name == name) {
            let known: Vec<&str> = config.images.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::input(format!(
                "unknown image '{name}' (this project builds: {})",
                known.join(", ")
            ))
            .hint("name one of those with --image, or add it under `images:` in hoist.yaml"));
        }
    }
    let images = config
        .images
        .iter()
        .filter(|image| selected.is_empty() || selected.contains(&image.name))
        .map(|image| image_plan(image, &config.labels, registry, inputs))
        .collect::<Result<Vec<_>>>()?;
    Ok(Plan {
        sha: inputs.sha.clone(),
        sha7: inputs.sha7().to_string(),
        builder: inputs.builder,
        no_cache: inputs.no_cache,
        dirty: inputs.dirty,
        images,
    })
}

fn image_plan(
    image: &ImageConfig,
    config_labels: &BTreeMap<String, String>,
    registry: Option<&str>,
    inputs: &Inputs,
) -> Result<ImagePlan> {
    // `what` names the value in an error: `build_args.GIT_SHA`, `cache_from`.
    let expand_one = |what: String, value: &str| {
        expand(value, inputs).map_err(|unknown| {
            Error::input(format!(
                "images.{}.{what}: unknown variable ${{{unknown}}}",
                image.name
            ))
            .hint(
                "the variables are ${sha}, ${sha7}, ${ref_name}, ${run_id}, and in labels ${image}",
            )
        })
    };
    let expand_all = |what: &str, values: &BTreeMap<String, String>| {
        values
            .iter()
            .map(|(key, value)| Ok((key.clone(), expand_one(format!("{what}.{key}"), value)?)))
            .collect::<Result<BTreeMap<_, _>>>()
    };
    let mut build_args = expand_all("build_args", &image.build_args)?;
    if inputs.builder == Builder::Buildkit && !inputs.no_cache {
        // Writes the cache metadata into the image itself, so the next build
        // on a fresh runner can reuse these layers straight from the registry.
        build_args
            .entry("BUILDKIT_INLINE_CACHE".to_string())
            .or_insert_with(|| "1".to_string());
    }
    // Defaults, then the top-level `labels:`, then the image's own: the
    // later wins, an empty value removes. `${image}` only means something
    // in labels shared by every image.
    let mut written: BTreeMap<String, String> = DEFAULT_LABELS
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    written.extend(config_labels.clone());
    written.extend(image.labels.clone());
    let mut labels = BTreeMap::new();
    for (key, value) in written {
        let value = value.replace("${image}", &image.name);
        let value = if image.labels.contains_key(&key) {
            expand_one(format!("labels.{key}"), &value)?
        } else {
            // A top-level label: its error must not send the reader to
            // the image's own `labels:`.
            expand(&value, inputs).map_err(|unknown| {
                Error::input(format!("labels.{key}: unknown variable ${{{unknown}}}"))
                    .hint("the variables are ${sha}, ${sha7}, ${ref_name}, ${run_id} and ${image}")
            })?
        };
        if !value.is_empty() {
            labels.insert(key, value);
        }
    }
    labels.extend(standard_labels(inputs));
    let repository = match registry {
        Some(registry) => format!("{registry}/{}", image.name),
        None => image.name.clone(),
    };
    let staging = format!("{repository}:{}", staging_tag(inputs.sha7(), inputs.dirty));
    let tags = match inputs.dirty {
        // `staging-latest` follows commits, and this image is none.
        true => vec![staging],
        false => vec![staging, format!("{repository}:{STAGING_LATEST}")],
    };
    let cache_from = match (&image.cache_from, registry) {
        _ if inputs.no_cache => Vec::new(),
        (Some(sources), _) => sources
            .iter()
            .map(|source| expand_one("cache_from".to_string(), source))
            .collect::<Result<_>>()?,
        (None, Some(_)) => vec![format!("{repository}:{STAGING_LATEST}")],
        (None, None) => Vec::new(),
    };
    Ok(ImagePlan {
        name: image.name.clone(),
        repository,
        dockerfile: image.dockerfile.clone(),
        context: image.context.clone(),
        build_args,
        target: image.target.clone(),
        labels,
        tags,
        cache_from,
        smoke: image.smoke.clone(),
    })
}

/// The labels hoist writes from the facts of the build, which no
/// configuration can change ([`crate::config::HOIST_LABELS`]).
fn standard_labels(inputs: &Inputs) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut add = |key: &str, value: String| labels.insert(key.to_string(), value);
    if let Some(source) = &inputs.source {
        add("org.opencontainers.image.source", source.clone());
    }
    add("org.opencontainers.image.revision", inputs.revision());
    add("org.opencontainers.image.created", inputs.created.clone());
    labels
}

/// Replaces `${sha}`, `${sha7}`, `${ref_name}` and `${run_id}` in `template`;
/// any other `${name}` is returned as the error. A `$` not followed by `{`
/// stays as it is.
pub fn expand(template: &str, inputs: &Inputs) -> std::result::Result<String, String> {
    let value = |name: &str| match name {
        "sha" => Lookup::Value(inputs.sha.clone()),
        "sha7" => Lookup::Value(inputs.sha7().to_string()),
        "ref_name" => Lookup::Value(inputs.ref_name.clone()),
        "run_id" => Lookup::Value(inputs.run_id.clone().unwrap_or_default()),
        _ => Lookup::Unknown,
    };
    substitute(template, value).map(|(text, _)| text)
}

/// What a template's `${name}` stands for.
enum Lookup {
    Value(String),
    /// A variable this push has no value for, and why.
    Absent(String),
    Unknown,
}

/// `template` with its variables replaced, and why the first absent one is
/// absent; `Err` names the first unknown variable (or the unclosed rest).
fn substitute(
    template: &str,
    lookup: impl Fn(&str) -> Lookup,
) -> std::result::Result<(String, Option<String>), String> {
    let mut out = String::with_capacity(template.len());
    let mut absent = None;
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(after.to_string());
        };
        match lookup(&after[..end]) {
            Lookup::Value(value) => out.push_str(&value),
            Lookup::Absent(why) => {
                absent.get_or_insert(why);
            }
            Lookup::Unknown => return Err(after[..end].to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, absent))
}

/// A release version read from a pushed tag, as docker/metadata-action's
/// `type=semver` reads it (node-semver): `v1.2.3`, `1.2.3-rc.1`,
/// `v1.2.3+build.5` (build metadata is dropped, as node-semver's `version`
/// drops it; a tag cannot hold `+`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// The pre-release part (`rc.1`), if any.
    pub pre: Option<String>,
}

impl Version {
    /// Parses a tag name: a leading `v` is dropped; anything that is not
    /// semantic versioning 2.0.0 after that is `None`.
    pub fn parse(tag: &str) -> Option<Version> {
        let text = tag.strip_prefix('v').unwrap_or(tag);
        let (text, build) = match text.split_once('+') {
            Some((text, build)) => (text, Some(build)),
            None => (text, None),
        };
        let (core, pre) = match text.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (text, None),
        };
        let number = |part: &str| {
            let plain = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part == "0" || !part.starts_with('0'));
            plain.then(|| part.parse::<u64>().ok()).flatten()
        };
        let identifiers_ok = |text: &str, numeric_rule: bool| {
            text.split('.').all(|id| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !(numeric_rule
                        && id.bytes().all(|b| b.is_ascii_digit())
                        && id.len() > 1
                        && id.starts_with('0'))
            })
        };
        let mut parts = core.split('.');
        let (major, minor, patch) = (
            number(parts.next()?)?,
            number(parts.next()?)?,
            number(parts.next()?)?,
        );
        if parts.next().is_some()
            || pre.is_some_and(|p| !identifiers_ok(p, true))
            || build.is_some_and(|b| !identifiers_ok(b, false))
        {
            return None;
        }
        Some(Version {
            major,
            minor,
            patch,
            pre: pre.map(str::to_string),
        })
    }

    /// `1.2.3` or `1.2.3-rc.1`.
    pub fn text(&self) -> String {
        let core = format!("{}.{}.{}", self.major, self.minor, self.patch);
        match &self.pre {
            Some(pre) => format!("{core}-{pre}"),
            None => core,
        }
    }
}

/// The tags pushed beside `staging-<sha7>`, from `--tag` and `tags:` in
/// hoist.yaml, and why any template was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtraTags {
    /// Tag names, in the order given, without duplicates.
    pub tags: Vec<String>,
    /// One line per template left out.
    pub notes: Vec<String>,
}

/// Expands the extra tag templates, each given with where it comes from
/// (`--tag`, `tags: in hoist.yaml`). The variables are those of build args
/// (`${sha}`, `${sha7}`, `${run_id}`; `${ref_name}` with every run of
/// characters a tag cannot hold made one `-`, as docker/metadata-action
/// does) and, on a tag push (`git_ref` = `refs/tags/<semver>`),
/// `${version}`, `${major}`, `${minor}` and `${patch}`. A template whose
/// variable this push has no value for is left out with a note: semver
/// parts outside a tag push, and `${major}`/`${minor}`/`${patch}` for a
/// pre-release ("pre-releases only extend `{{version}}`", metadata-action's
/// README).
///
/// Errors (input): an unknown variable, a result that is not a tag
/// (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, the distribution spec's grammar),
/// and the tags hoist itself manages (`latest`, `latest-previous`,
/// `staging-*`), which only promote and publish's own steps may move.
pub fn extra_tags(
    templates: &[(&str, &str)],
    inputs: &Inputs,
    git_ref: Option<&str>,
) -> Result<ExtraTags> {
    let tag_name = git_ref.and_then(|r| r.strip_prefix("refs/tags/"));
    let version = tag_name.and_then(Version::parse);
    let ref_name = sanitize(&inputs.ref_name);
    let mut extra = ExtraTags::default();
    for &(source, template) in templates {
        let semver = |part: Option<u64>| -> Lookup {
            let Some(tag) = tag_name else {
                return Lookup::Absent(format!(
                    "not a tag push ({})",
                    git_ref.map_or("no GITHUB_REF".to_string(), |r| crate::ci::quote(r)
                        .into_owned())
                ));
            };
            match (&version, part) {
                (None, _) => Lookup::Absent(format!(
                    "tag {} is not a semantic version",
                    crate::ci::quote(tag)
                )),
                (Some(version), None) => Lookup::Value(version.text()),
                (Some(version), Some(_)) if version.pre.is_some() => Lookup::Absent(format!(
                    "{} is a pre-release, which only `${{version}}` tags",
                    version.text()
                )),
                (Some(_), Some(value)) => Lookup::Value(value.to_string()),
            }
        };
        let value = |name: &str| match name {
            "sha" => Lookup::Value(inputs.sha.clone()),
            "sha7" => Lookup::Value(inputs.sha7().to_string()),
            "ref_name" if ref_name.is_empty() => Lookup::Absent(
                "no branch or tag name (GITHUB_REF_NAME, or a checked-out branch)".into(),
            ),
            "ref_name" => Lookup::Value(ref_name.clone()),
            "run_id" => match &inputs.run_id {
                Some(run_id) => Lookup::Value(run_id.clone()),
                None => Lookup::Absent("no GITHUB_RUN_ID (not in CI)".into()),
            },
            "version" => semver(None),
            "major" => semver(version.as_ref().map(|v| v.major)),
            "minor" => semver(version.as_ref().map(|v| v.minor)),
            "patch" => semver(version.as_ref().map(|v| v.patch)),
            _ => Lookup::Unknown,
        };
        let (tag, absent) = substitute(template, value).map_err(|unknown| {
            Error::input(format!(
                "tag template '{template}' ({source}): unknown variable ${{{unknown}}}"
            ))
            .hint("the variables are ${sha}, ${sha7}, ${ref_name}, ${run_id}, and on a tag push ${version}, ${major}, ${minor}, ${patch}")
        })?;
        if let Some(why) = absent {
            extra.notes.push(format!(
                "tag template '{template}' ({source}) left out: {why}"
            ));
            continue;
        }
        if !is_tag(&tag) {
            return Err(Error::input(format!(
                "tag template '{template}' ({source}) gives {}, which is not a valid tag",
                crate::ci::quote(&tag)
            ))
            .hint("a tag is 1 to 128 letters, digits, '_', '.' and '-', and starts with a letter, digit or '_'"));
        }
        if tag == "latest" || tag == "latest-previous" || tag.starts_with("staging-") {
            return Err(Error::input(format!(
                "tag template '{template}' ({source}) gives '{tag}', a tag hoist manages itself"
            ))
            .hint("`latest` moves only through `hoist promote` (after canary verification), `staging-*` only through publish's own steps; choose another name"));
        }
        if !extra.tags.contains(&tag) {
            extra.tags.push(tag);
        }
    }
    Ok(extra)
}

/// The distribution spec's tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let mut bytes = tag.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_alphanumeric() || first == b'_' => {}
        _ => return false,
    }
    tag.len() <= 128 && bytes.all(allowed)
}

/// A branch or tag name as a tag: every run of characters a tag cannot
/// hold becomes one `-` (docker/metadata-action's `sanitizeTag`).
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    out
}

/// The repository's web address: the CI server and repository when set
/// (`GITHUB_SERVER_URL`, `GITHUB_REPOSITORY`), else the git remote's URL
/// without credentials or `.git`.
pub fn source_url(
    server_url: Option<&str>,
    repository: Option<&str>,
    remote: Option<&str>,
) -> Option<String> {
    if let (Some(server), Some(repository)) = (server_url, repository) {
        let server = server.trim_end_matches('/');
        let repository = repository.trim_matches('/');
        // A server URL that already ends with the org (some runners set it
        // so) must not give `org/org/repo`.
        let repository = match (server.rsplit('/').next(), repository.split_once('/')) {
            (Some(last), Some((org, rest))) if last == org && server.matches('/').count() > 2 => {
                rest
            }
            _ => repository,
        };
        return Some(format!("{server}/{repository}"));
    }
    let remote = remote?.trim();
    let web = if let Some((scheme, rest)) = remote.split_once("://") {
        if scheme == "file" {
            return None;
        }
        // Drop `user:token@`: a credential must never end up in a label.
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let scheme = if scheme == "http" { "http" } else { "https" };
        format!("{scheme}://{rest}")
    } else if let Some((user_host, path)) = remote.split_once(':') {
        // scp-like `git@host:org/repo.git`
        let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
        format!("https://{host}/{}", path.trim_start_matches('/'))
    } else {
        return None;
    };
    Some(
        web.trim_end_matches('/')
            .trim_end_matches(".git")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn inputs() -> Inputs {
        Inputs {
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            ref_name: "main".into(),
            run_id: Some("42".into()),
            source: Some("https://git.example/org/repo".into()),
            created: "2026-11-24T08:00:00Z".into(),
            builder: Builder::Buildkit,
            no_cache: false,
            dirty: false,
        }
    }

    fn config(yaml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hoist.yaml"), yaml).unwrap();
        let root = dir.path().to_path_buf();
        Config::load(&root, None, Overrides::default(), |_| None).unwrap()
    }

    #[test]
    fn the_defaults_reproduce_the_reference_pipeline() {
        let config = config("");
        let plan = plan(&config, Some("reg.example/molecule-ai"), &[], &inputs()).unwrap();
        let names: Vec<&str> = plan.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["platform", "platform-tenant"]);
        let [platform, tenant] = &plan.images[..] else {
            unreachable!()
        };
        assert!(platform.dockerfile.ends_with("workspace-server/Dockerfile"));
        assert!(
            tenant
                .dockerfile
                .ends_with("workspace-server/Dockerfile.tenant")
        );
        assert_eq!(platform.build_args["GIT_SHA"], inputs().sha);
        assert!(!platform.build_args.contains_key("NEXT_PUBLIC_PLATFORM_URL"));
        assert_eq!(tenant.build_args["NEXT_PUBLIC_PLATFORM_URL"], "");
        assert_eq!(tenant.build_args["BUILDKIT_INLINE_CACHE"], "1");
        assert_eq!(
            tenant.tags,
            [
                "reg.example/molecule-ai/platform-tenant:staging-0123456",
                "reg.example/molecule-ai/platform-tenant:staging-latest"
            ]
        );
        assert_eq!(
            tenant.cache_from,
            ["reg.example/molecule-ai/platform-tenant:staging-latest"]
        );
        let labels = &platform.labels;
        assert_eq!(
            labels["org.opencontainers.image.revision"],
            inputs().sha.as_str()
        );
        assert_eq!(
            labels["org.opencontainers.image.description"],
            "platform — pending canary verify"
        );
        assert_eq!(labels[RUN_ID_LABEL], "42");
        assert_eq!(
            labels["org.opencontainers.image.source"],
            "https://git.example/org/repo"
        );
    }

    #[test]
    fn configured_images_merge_with_the_defaults_of_their_name() {
        let config = config(
            "images:\n  platform:\n    build_args: {EXTRA: 'v-${sha7}-${ref_name}'}\n    labels: {team: core}\n    target: runtime\n  worker:\n    context: svc\n    cache_from: ['cache.example/worker:${ref_name}']\n",
        );
        let plan = plan(&config, None, &[], &inputs()).unwrap();
        let [platform, worker] = &plan.images[..] else {
            panic!("{plan:?}")
        };
        assert_eq!(platform.build_args["GIT_SHA"], inputs().sha);
        assert_eq!(platform.build_args["EXTRA"], "v-0123456-main");
        assert_eq!(platform.labels["team"], "core");
        assert_eq!(platform.target.as_deref(), Some("runtime"));
        assert_eq!(platform.tags[0], "platform:staging-0123456");
        assert!(
            platform.cache_from.is_empty(),
            "no registry, no cache source"
        );
        assert!(worker.dockerfile.ends_with("svc/Dockerfile"));
        assert_eq!(worker.cache_from, ["cache.example/worker:main"]);
    }

    #[test]
    fn selection_unknown_images_and_variables_are_input_errors() {
        let config = config("");
        let selected = ["platform-tenant".to_string()];
        let plan = plan(&config, None, &selected, &inputs()).unwrap();
        assert_eq!(plan.images.len(), 1);

        let err = super::plan(&config, None, &["nope".into()], &inputs()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.message.contains("unknown image 'nope'"), "{err}");
        assert!(err.message.contains("platform, platform-tenant"), "{err}");

        let config = self::config(
            "images:\n  b:\n    cache_from: ['r/b:${branch}']\n  a:\n    build_args: {X: '${commit}'}\n",
        );
        let err = super::plan(&config, None, &[], &inputs()).unwrap_err();
        assert!(
            err.message
                .contains("images.a.build_args.X: unknown variable ${commit}"),
            "{err}"
        );
        let selected = ["b".to_string()];
        let err = super::plan(&config, None, &selected, &inputs()).unwrap_err();
        assert!(
            err.message
                .contains("images.b.cache_from: unknown variable ${branch}"),
            "{err}"
        );
    }

    #[test]
    fn no_cache_and_classic_write_no_inline_cache() {
        let config = config("");
        let classic = Inputs {
            builder: Builder::Classic,
            ..inputs()
        };
        let plan = plan(&config, Some("r.example"), &[], &classic).unwrap();
        assert!(
            !plan.images[0]
                .build_args
                .contains_key("BUILDKIT_INLINE_CACHE")
        );
        assert_eq!(
            plan.images[0].cache_from,
            ["r.example/platform:staging-latest"]
        );
        let no_cache = Inputs {
            no_cache: true,
            ..inputs()
        };
        let plan = super::plan(&config, Some("r.example"), &[], &no_cache).unwrap();
        assert!(plan.images[0].cache_from.is_empty());
        assert!(
            !plan.images[0]
                .build_args
                .contains_key("BUILDKIT_INLINE_CACHE")
        );
    }

    #[test]
    fn expand_replaces_known_variables_only() {
        let i = inputs();
        assert_eq!(
            expand("a-${sha7}-$HOME-${run_id}", &i).unwrap(),
            "a-0123456-$HOME-42"
        );
        assert_eq!(expand("${nope}", &i).unwrap_err(), "nope");
        assert_eq!(expand("${sha", &i).unwrap_err(), "sha");
    }

    #[test]
    fn a_dirty_tree_is_labelled_and_tagged_as_such_and_never_staging_latest() {
        let config = config("");
        let dirty = Inputs {
            dirty: true,
            ..inputs()
        };
        let plan = plan(&config, Some("r.example"), &[], &dirty).unwrap();
        assert!(plan.dirty);
        for image in &plan.images {
            assert_eq!(
                image.labels["org.opencontainers.image.revision"],
                format!("{}-dirty", inputs().sha)
            );
            assert_eq!(
                image.tags,
                [format!("r.example/{}:staging-0123456-dirty", image.name)]
            );
            // Reading the cache is harmless; only writing tags is not.
            assert_eq!(
                image.cache_from,
                [format!("r.example/{}:staging-latest", image.name)]
            );
        }
        assert_eq!(staging_tag("0123456", false), "staging-0123456");
    }

    #[test]
    fn versions_are_read_as_metadata_action_reads_them() {
        let v = |text: &str| Version::parse(text).map(|v| v.text());
        assert_eq!(v("v1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(v("1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(v("v2.0.8-beta.67").as_deref(), Some("2.0.8-beta.67"));
        assert_eq!(v("v1.2.3+build.5").as_deref(), Some("1.2.3"));
        let full = Version::parse("v10.20.30-rc.1").unwrap();
        assert_eq!((full.major, full.minor, full.patch), (10, 20, 30));
        assert_eq!(full.pre.as_deref(), Some("rc.1"));
        for bad in [
            "v1.2",
            "release1",
            "v01.2.3",
            "1.2.3.4",
            "v1.2.3-",
            "v1.2.3-01",
            "vv1.2.3",
            "1.2.x",
            "",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn extra_tags_expand_on_tag_pushes_and_leave_out_what_a_push_lacks() {
        let templates = [
            ("tags: in hoist.yaml", "${version}"),
            ("tags: in hoist.yaml", "${major}.${minor}"),
            ("tags: in hoist.yaml", "${major}"),
            ("--tag", "sha-${sha7}"),
            ("--tag", "${ref_name}"),
            ("--tag", "sha-${sha7}"),
        ];
        let tag_push = Inputs {
            ref_name: "v1.2.3".into(),
            ..inputs()
        };
        let extra = extra_tags(&templates, &tag_push, Some("refs/tags/v1.2.3")).unwrap();
        assert_eq!(extra.tags, ["1.2.3", "1.2", "1", "sha-0123456", "v1.2.3"]);
        assert!(extra.notes.is_empty());

        let rc = Inputs {
            ref_name: "v2.0.0-rc.1".into(),
            ..inputs()
        };
        let extra = extra_tags(&templates, &rc, Some("refs/tags/v2.0.0-rc.1")).unwrap();
        assert_eq!(extra.tags, ["2.0.0-rc.1", "sha-0123456", "v2.0.0-rc.1"]);
        assert_eq!(extra.notes.len(), 2);
        assert!(extra.notes[0].contains("pre-release"), "{:?}", extra.notes);

        // A branch push: no semver tags, a note each; `/` made `-`.
        let branch = Inputs {
            ref_name: "feature/new ui".into(),
            ..inputs()
        };
        let extra = extra_tags(&templates, &branch, Some("refs/heads/feature/new ui")).unwrap();
        assert_eq!(extra.tags, ["sha-0123456", "feature-new-ui"]);
        assert_eq!(extra.notes.len(), 3);
        assert!(
            extra.notes[0].contains("not a tag push"),
            "{:?}",
            extra.notes
        );
        let extra = extra_tags(&templates[..1], &inputs(), Some("refs/tags/release1")).unwrap();
        assert!(
            extra.notes[0].contains("not a semantic version"),
            "{:?}",
            extra.notes
        );
    }

    #[test]
    fn a_bad_or_reserved_tag_is_an_input_error_naming_the_template() {
        let error = |template: &str| {
            extra_tags(&[("--tag", template)], &inputs(), None)
                .unwrap_err()
                .to_string()
        };
        assert!(error("${branch}").contains("'${branch}' (--tag): unknown variable ${branch}"));
        assert!(error(".hidden").contains("not a valid tag"));
        assert!(error("a:b").contains("not a valid tag"));
        assert!(error(&"x".repeat(129)).contains("not a valid tag"));
        assert!(error("latest").contains("manages itself"));
        assert!(error("staging-${sha7}").contains("manages itself"));
        assert!(is_tag("_a.B-9") && is_tag(&"x".repeat(128)));
        assert!(!is_tag("-a") && !is_tag(""));
    }

    #[test]
    fn source_url_never_doubles_the_org_nor_keeps_a_credential() {
        let cases = [
            (
                Some("https://git.moleculesai.app"),
                Some("molecule-ai/core"),
                None,
                "https://git.moleculesai.app/molecule-ai/core",
            ),
            (
                Some("https://git.moleculesai.app/molecule-ai/"),
                Some("molecule-ai/core"),
                None,
                "https://git.moleculesai.app/molecule-ai/core",
            ),
            (
                Some("https://github.com"),
                Some("github/github"),
                None,
                "https://github.com/github/github",
            ),
            (
                None,
                None,
                Some("https://x-access-token:s3cret@git.example/org/repo.git"),
                "https://git.example/org/repo",
            ),
            (
                None,
                None,
                Some("git@github.com:org/repo.git"),
                "https://github.com/org/repo",
            ),
            (
                None,
                None,
                Some("ssh://git@git.example:2222/org/repo.git"),
                "https://git.example:2222/org/repo",
            ),
            (
                None,
                Some("org/repo"),
                Some("http://127.0.0.1:3000/org/repo"),
                "http://127.0.0.1:3000/org/repo",
            ),
        ];
        for (server, repository, remote, want) in cases {
            assert_eq!(
                source_url(server, repository, remote).as_deref(),
                Some(want),
                "{server:?} {repository:?} {remote:?}"
            );
        }
        assert_eq!(source_url(None, None, Some("/srv/git/repo")), None);
        assert_eq!(source_url(None, None, Some("file:///srv/git/repo")), None);
        assert_eq!(source_url(None, None, None), None);
    }

    #[test]
    fn labels_default_to_the_reference_ones_and_yield_to_hoist_yaml() {
        let labels = |yaml: &str, inputs: &Inputs| {
            let config = config(yaml);
            let plan = plan(&config, None, &[], inputs).unwrap();
            plan.images[0].labels.clone()
        };
        let ci = inputs();
        let local = Inputs {
            run_id: None,
            ..inputs()
        };
        // No `labels:`: the reference deployment's, the run id only in CI.
        let defaults = labels("images:\n  worker: {}\n", &ci);
        assert_eq!(
            defaults["org.opencontainers.image.description"],
            "worker — pending canary verify"
        );
        assert_eq!(defaults[RUN_ID_LABEL], "42");
        assert!(!labels("images:\n  worker: {}\n", &local).contains_key(RUN_ID_LABEL));

        // Top level for every image, the image's own over it; empty removes.
        let yaml = "labels:\n  org.opencontainers.image.description: '${image} at ${sha7}'\n  molecule.workflow.run_id: ''\n  ci.run: '${run_id}'\n  team: platform\nimages:\n  api:\n    labels: {team: api, org.opencontainers.image.description: ''}\n  worker: {}\n";
        let config = config(yaml);
        let plan = plan(&config, None, &[], &ci).unwrap();
        let [api, worker] = &plan.images[..] else {
            panic!("{plan:?}")
        };
        assert_eq!(
            worker.labels["org.opencontainers.image.description"],
            "worker at 0123456"
        );
        assert_eq!(worker.labels["team"], "platform");
        assert_eq!(worker.labels["ci.run"], "42");
        assert!(!worker.labels.contains_key(RUN_ID_LABEL));
        assert_eq!(api.labels["team"], "api");
        assert!(
            !api.labels
                .contains_key("org.opencontainers.image.description")
        );
        for image in [api, worker] {
            assert_eq!(image.labels["org.opencontainers.image.revision"], ci.sha);
            assert_eq!(image.labels["org.opencontainers.image.created"], ci.created);
        }
        let local_plan = super::plan(&config, None, &[], &local).unwrap();
        assert!(!local_plan.images[1].labels.contains_key("ci.run"));

        let config = self::config("labels: {v: '${version}'}\nimages:\n  app: {}\n");
        let err = super::plan(&config, None, &[], &ci).unwrap_err();
        assert!(
            err.message
                .contains("labels.v: unknown variable ${version}")
                && !err.message.contains("images."),
            "{err}"
        );
    }

    #[test]
    fn build_args_from_the_command_line_win_on_every_image() {
        let config =
            config("images:\n  api:\n    build_args: {MODE: prod, PORT: '80'}\n  worker: {}\n");
        let args: BTreeMap<String, String> =
            [("MODE".to_string(), "debug-${sha}".to_string())].into();
        let plan = plan(&config, None, &[], &inputs())
            .unwrap()
            .with_build_args(&args);
        let [api, worker] = &plan.images[..] else {
            panic!("{plan:?}")
        };
        assert_eq!(api.build_args["MODE"], "debug-${sha}", "taken as given");
        assert_eq!(api.build_args["PORT"], "80");
        assert_eq!(worker.build_args["MODE"], "debug-${sha}");
        assert_eq!(worker.build_args["GIT_SHA"], inputs().sha, "the default");
    }
}
