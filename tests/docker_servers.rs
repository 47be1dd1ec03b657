//! The real servers the image tests stand on (`tests/common/docker.rs`): the
//! Docker Engine answers and builds a FROM-scratch busybox image with the
//! classic builder and with BuildKit, the image runs, and Debian's registry
//! on loopback takes a plain-HTTP push from the engine, with and without
//! htpasswd auth.

mod common;

use common::docker::{
    DOCKER_CLI, Registry, RegistryOptions, SCRATCH_DOCKERFILE, TempImage, busybox, docker,
    docker_env, image_exists, ping_engine, require_engine, scratch_context, try_docker,
};

/// Builds [`SCRATCH_DOCKERFILE`] with `--build-arg GREETING=<greeting>` into
/// `image` with the given `DOCKER_BUILDKIT`; returns the build's output.
fn build(image: &str, buildkit: &str, greeting: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    scratch_context(dir.path(), SCRATCH_DOCKERFILE)?;
    let arg = format!("GREETING={greeting}");
    let out = try_docker(
        &[("DOCKER_BUILDKIT", buildkit)],
        &[
            "build",
            "--build-arg",
            &arg,
            "-t",
            image,
            dir.path().to_str().unwrap(),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "docker build: {text}");
    Some(text)
}

#[test]
fn the_engine_answers_with_api_1_41_or_newer() {
    if !require_engine() {
        return;
    }
    ping_engine().unwrap();
    let api = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    let (major, minor) = api.split_once('.').unwrap();
    let version = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap());
    assert!(version >= (1, 41), "engine API {api}");
    let client = docker(&["version", "--format", "{{.Client.Version}}"]);
    assert!(client.starts_with("20.10."), "{DOCKER_CLI} is {client}");
}

#[test]
fn busybox_is_static() {
    let Some(path) = busybox() else { return };
    assert!(path.is_file());
}

#[test]
fn the_classic_builder_builds_a_scratch_image_that_runs() {
    if !require_engine() {
        return;
    }
    let image = TempImage::unique("classic");
    let Some(output) = build(image.name(), "0", "from-classic") else {
        return;
    };
    assert!(
        output.contains("Step 1/"),
        "not the classic builder: {output}"
    );
    assert!(image_exists(image.name()));
    assert_eq!(docker(&["run", "--rm", image.name()]), "from-classic");
    let hi = docker(&["run", "--rm", image.name(), "/bin/busybox", "echo", "hi"]);
    assert_eq!(hi, "hi");
}

#[test]
fn buildkit_builds_a_scratch_image_that_runs() {
    if !require_engine() {
        return;
    }
    let image = TempImage::unique("buildkit");
    let Some(output) = build(image.name(), "1", "from-buildkit") else {
        return;
    };
    assert!(output.contains("#1 "), "not BuildKit: {output}");
    assert!(image_exists(image.name()));
    assert_eq!(docker(&["run", "--rm", image.name()]), "from-buildkit");
    let hi = docker(&["run", "--rm", image.name(), "/bin/busybox", "echo", "hi"]);
    assert_eq!(hi, "hi");
}

#[test]
fn the_engine_pushes_to_a_loopback_registry_over_plain_http() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let repo = format!("hoist/push-{}", std::process::id());
    assert_eq!(registry.tags(&repo), Vec::<String>::new());
    let image = TempImage::new(registry.image(&repo, "1"));
    let Some(_) = build(image.name(), "1", "pushed") else {
        return;
    };
    docker(&["push", image.name()]);
    assert_eq!(registry.tags(&repo), ["1"]);

    // The digest the engine recorded for the push is the registry's. (The
    // same image may carry digests from parallel tests' registries too.)
    let digest = registry.manifest_digest(&repo, "1").unwrap();
    let repo_digests = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        image.name(),
    ]);
    let repo_digests: Vec<String> = serde_json::from_str(&repo_digests).unwrap();
    let ours = format!("{}/{repo}@{digest}", registry.addr());
    assert!(repo_digests.contains(&ours), "{ours} in {repo_digests:?}");
    assert_eq!(registry.manifest_digest(&repo, "2"), None);
}

#[test]
fn a_registry_with_htpasswd_wants_basic_auth() {
    let options = RegistryOptions {
        htpasswd: Some(("hoist".into(), "s3cret-pw".into())),
    };
    let Some(registry) = Registry::start(options) else {
        return;
    };
    let (status, _) = registry.get("/v2/", None);
    assert_eq!(status, 401);
    let (status, _) = registry.get("/v2/", Some(("hoist", "wrong")));
    assert_eq!(status, 401);
    let (status, body) = registry.get("/v2/", Some(("hoist", "s3cret-pw")));
    assert_eq!(status, 200, "{body}");
    let (status, _) = registry.get("/v2/_catalog", Some(("hoist", "s3cret-pw")));
    assert_eq!(status, 200);
    let (status, head, _) =
        common::docker::http_request(registry.addr(), "GET", "/v2/", None, &[]).unwrap();
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"hoist-test\""),
        "{head}"
    );
}

#[test]
fn the_engine_pushes_to_a_registry_with_htpasswd_after_login() {
    if !require_engine() {
        return;
    }
    let options = RegistryOptions {
        htpasswd: Some(("hoist".into(), "s3cret-pw".into())),
    };
    let Some(registry) = Registry::start(options) else {
        return;
    };
    let repo = format!("hoist/auth-{}", std::process::id());
    let image = TempImage::new(registry.image(&repo, "v1"));
    let Some(_) = build(image.name(), "1", "authed") else {
        return;
    };

    // The CLI keeps logins in DOCKER_CONFIG: a temp dir, not ~/.docker.
    let config = tempfile::tempdir().unwrap();
    let env = [("DOCKER_CONFIG", config.path().to_str().unwrap())];
    let refused = try_docker(&env, &["push", image.name()]);
    assert!(!refused.status.success(), "pushed without credentials");
    assert_eq!(registry.tags(&repo), Vec::<String>::new());

    docker_env(
        &env,
        &[
            "login",
            "--username",
            "hoist",
            "--password",
            "s3cret-pw",
            registry.addr(),
        ],
    );
    docker_env(&env, &["push", image.name()]);
    assert_eq!(registry.tags(&repo), ["v1"]);
}
