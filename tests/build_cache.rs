//! `hoist build` reusing the previous build's layers from a registry on a
//! fresh engine: the image is built and pushed to Debian's registry on
//! loopback, every local trace of it is removed (its tags, and BuildKit's
//! build cache), and the next build must take the expensive step from the
//! registry. Its own test binary: pruning the build cache would only slow
//! down builds of other tests running beside it.

mod common;

use common::docker::{self, Registry, RegistryOptions, require_engine, scratch_context};
use common::hoist;
use serde_json::Value;

const FIRST: &str = "1111111111111111111111111111111111111111";
const SECOND: &str = "2222222222222222222222222222222222222222";

/// The expensive early step writes a value no second run can reproduce, so
/// finding it in the rebuilt image proves its layer came from the cache.
const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox date +%s%N > /expensive; /bin/busybox sleep 1"]
ARG GIT_SHA
RUN ["/bin/busybox", "sh", "-c", "echo $GIT_SHA > /sha"]
CMD ["/bin/busybox", "cat", "/expensive", "/sha"]
"#;

/// Removes every local tag of `repository` and BuildKit's build cache: what
/// a fresh runner starts with.
fn forget_locally(repository: &str) {
    for tag in [FIRST, SECOND] {
        docker::remove_image(&format!("{repository}:staging-{}", &tag[..7]));
    }
    docker::remove_image(&format!("{repository}:staging-latest"));
    docker::docker(&["builder", "prune", "--all", "--force"]);
}

/// One test at a time: a prune in one would empty the cache the other is
/// checking.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Who pushes the first image.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pusher {
    /// `docker push` of what `hoist build` tagged.
    Engine,
    /// `hoist publish --force`: hoist's own upload, its layers compressed
    /// by hoist, not by the engine.
    Hoist,
}

/// Builds, pushes `:staging-latest`, forgets everything locally, rebuilds
/// at another sha: the expensive layer must come back from the registry.
fn reuses_the_registry_cache(builder: &str, registry: &Registry) {
    reuses_the_registry_cache_pushed_by(builder, registry, Pusher::Engine);
}

fn reuses_the_registry_cache_pushed_by(builder: &str, registry: &Registry, pusher: Pusher) {
    let _alone = ENGINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let project = tempfile::tempdir().unwrap();
    let Some(_) = scratch_context(&project.path().join("app"), DOCKERFILE) else {
        return;
    };
    let prefix = format!("{}/{}", registry.addr(), docker::unique_name(builder));
    std::fs::write(
        project.path().join("hoist.yaml"),
        format!("registry: {prefix}\nimages:\n  app:\n    context: app\n    build_args: {{GIT_SHA: '${{sha7}}'}}\n"),
    )
    .unwrap();
    let repository = format!("{prefix}/app");
    let credentials = registry.credentials();
    let docker_config = tempfile::tempdir().unwrap();
    let config_env = [("DOCKER_CONFIG", docker_config.path().to_str().unwrap())];
    let mut env = vec![("DOCKER_CONFIG", docker_config.path().to_str().unwrap())];
    if let Some((user, password)) = credentials {
        env.push(("HOIST_REGISTRY_USER", user));
        env.push(("HOIST_REGISTRY_PASSWORD", password));
        docker::docker_env(
            &config_env,
            &[
                "login",
                "--username",
                user,
                "--password",
                password,
                registry.addr(),
            ],
        );
    }

    // The first build: its cache source does not exist yet, which is fine.
    let args = |sha| {
        [
            "build",
            "--sha",
            sha,
            "--builder",
            builder,
            "--format",
            "json",
        ]
    };
    let latest = format!("{repository}:staging-latest");
    let mut pushed_sha = String::new();
    match pusher {
        Pusher::Engine => {
            let out = hoist(project.path(), &args(FIRST), &env);
            assert!(
                out.status.success(),
                "{builder}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            docker::docker_env(&config_env, &["push", &latest]);
        }
        Pusher::Hoist => {
            common::git(project.path(), &["init", "-q", "-b", "main"]);
            common::git(project.path(), &["add", "-A"]);
            common::git(project.path(), &["commit", "-q", "-m", "app"]);
            pushed_sha = common::git(project.path(), &["rev-parse", "HEAD"]);
            let out = hoist(
                project.path(),
                &[
                    "publish",
                    "--force",
                    "--builder",
                    builder,
                    "--format",
                    "json",
                ],
                &env,
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{builder}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                report["images"][0]["upload"]["blobs_uploaded"]
                    .as_u64()
                    .unwrap()
                    >= 2,
                "{builder}: hoist uploaded the image: {stdout}"
            );
            docker::remove_image(&format!("{repository}:staging-{}", &pushed_sha[..7]));
            docker::docker_env(&config_env, &["pull", &latest]);
        }
    }
    let first = docker::docker(&["run", "--rm", &latest]);
    forget_locally(&repository);
    assert!(!docker::image_exists(&latest));

    let out = hoist(project.path(), &args(SECOND), &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{builder}: {stderr}");
    if let Some((_, password)) = credentials {
        assert!(
            !stderr.contains(password),
            "{builder}: the password leaked: {stderr}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains(password));
    }
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let second = docker::docker(&["run", "--rm", &latest]);
    let expensive = |output: &str| output.lines().next().unwrap_or_default().to_string();
    assert_eq!(
        expensive(&second),
        expensive(&first),
        "{builder}: the expensive layer came from the registry\n{stderr}"
    );
    assert!(
        second.ends_with(&SECOND[..7]),
        "{builder}: the cheap step ran: {second}"
    );
    assert!(
        result["images"][0]["cached_steps"].as_u64().unwrap() >= 2,
        "{builder}: {result}"
    );
    forget_locally(&repository);
    if pusher == Pusher::Hoist {
        docker::remove_image(&format!("{repository}:staging-{}", &pushed_sha[..7]));
    }
}

#[test]
fn a_fresh_engine_reuses_layers_from_the_registry() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    for builder in ["buildkit", "classic"] {
        reuses_the_registry_cache(builder, &registry);
    }
}

/// The same when hoist pushed the first image itself: BuildKit's inline
/// cache names layers by position, and hoist's manifest keeps one layer per
/// diff id in order, so its own compression does not lose the cache.
#[test]
fn a_fresh_engine_reuses_layers_that_hoist_uploaded() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    for builder in ["buildkit", "classic"] {
        reuses_the_registry_cache_pushed_by(builder, &registry, Pusher::Hoist);
    }
}

/// The registry wants a password: hoist hands HOIST_REGISTRY_USER and
/// HOIST_REGISTRY_PASSWORD to the engine for the cache source, without a
/// `docker login` and without printing the password.
#[test]
fn the_cache_source_is_read_with_registry_credentials() {
    if !require_engine() {
        return;
    }
    let options = RegistryOptions {
        htpasswd: Some(("hoist".into(), "cache-pass-9f3e".into())),
    };
    let Some(registry) = Registry::start(options) else {
        return;
    };
    for builder in ["buildkit", "classic"] {
        reuses_the_registry_cache(builder, &registry);
    }
}
