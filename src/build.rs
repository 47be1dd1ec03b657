//! The build plan: which images, from which Dockerfile and context, with
//! which build args, labels, tags and cache sources.
//!
//! Pure: what comes from the world (the sha, CI variables, the clock, the
//! remote URL) is passed in as [`Inputs`], so `--dry-run` prints exactly the
//! plan that a real build walks, and tests need no engine.

use crate::config::{Config, ImageConfig, Smoke};
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
}

impl Inputs {
    pub fn sha7(&self) -> &str {
        self.sha.get(..7).unwrap_or(&self.sha)
    }
}

/// Everything a build does, image by image.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub sha: String,
    pub sha7: String,
    pub builder: Builder,
    pub no_cache: bool,
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
    /// `repository:staging-<sha7>` then `repository:staging-latest`.
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
    let tags = vec![
        format!("{repository}:staging-{}", inputs.sha7()),
        format!("{repository}:{STAGING_LATEST}"),
    ];
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
    add("org.opencontainers.image.revision", inputs.sha.clone());
    add("org.opencontainers.image.created", inputs.created.clone());
    labels
}

/// Replaces `${sha}`, `${sha7}`, `${ref_name}` and `${run_id}` in `template`;
/// any other `${name}` is returned as the error. A `$` not followed by `{`
/// stays as it is.
pub fn expand(template: &str, inputs: &Inputs) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(after.to_string());
        };
        let value = match &after[..end] {
            "sha" => inputs.sha.as_str(),
            "sha7" => inputs.sha7(),
            "ref_name" => inputs.ref_name.as_str(),
            "run_id" => inputs.run_id.as_deref().unwrap_or(""),
            unknown => return Err(unknown.to_string()),
        };
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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
