//! `hoist init`: write a first, commented `hoist.yaml` for the repository
//! it runs in, from the workflows and Dockerfiles git tracks there
//! ([`crate::init`] decides what to write).

use crate::ci::{self, Ci};
use crate::cli::InitArgs;
use crate::config::{CONFIG_FILE, Config, Overrides, resolve};
use crate::error::{Error, Location, Result};
use crate::git;
use crate::init::{self, WorkflowFile};
use crate::registry::Target;
use crate::workflow::{FilterKey, Workflow};
use std::path::{Path, PathBuf};

pub fn run(dir: &Path, config_file: Option<&Path>, args: InitArgs, ci: &Ci) -> Result<u8> {
    let target = resolve(dir, config_file.unwrap_or(Path::new(CONFIG_FILE)));
    if target.exists() && !args.force {
        return Err(Error::input(format!("{} already exists", target.display()))
            .at(Location::new(&target, 1, None))
            .hint("edit it, or pass --force to replace it with a new one"));
    }
    let registry = args
        .registry
        .as_deref()
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| !r.is_empty());
    if let Some(registry) = registry
        && let Err(error) = Target::parse(registry)
    {
        // Not echoed: what precedes an `@` is a password.
        if registry.contains('@') {
            return Err(Error::input(
                "--registry holds credentials, which must never be written to hoist.yaml",
            )
            .hint(
                "give HOST[/PREFIX] only; hoist reads the login from HOIST_REGISTRY_USER and \
                 HOIST_REGISTRY_PASSWORD, or the Docker config",
            ));
        }
        return Err(error);
    }

    let repo = git::open_local_first(dir)?;
    let tracked = tracked_under(&repo, dir)?;
    let read = |path: &str| std::fs::read_to_string(resolve(dir, Path::new(path)));

    let workflows: Vec<WorkflowFile> = tracked
        .iter()
        .filter(|path| init::is_workflow(path))
        .map(|path| {
            let parsed = read(path).map_err(|e| e.to_string()).and_then(|text| {
                Workflow::parse(Path::new(path), &text).map_err(|e| e.message.clone())
            });
            match parsed {
                Ok(workflow) => WorkflowFile {
                    path: path.clone(),
                    path_filters: workflow.event("push").is_some_and(|push| {
                        push.filter(FilterKey::Paths).is_some()
                            || push.filter(FilterKey::PathsIgnore).is_some()
                    }),
                    problem: None,
                },
                Err(problem) => WorkflowFile {
                    path: path.clone(),
                    path_filters: false,
                    problem: Some(problem),
                },
            }
        })
        .collect();
    let mut dockerfiles = Vec::new();
    for path in tracked.iter().filter(|path| init::is_dockerfile(path)) {
        match read(path) {
            Ok(text) => dockerfiles.push((path.clone(), text)),
            // Tracked but deleted or unreadable here: nothing to build from.
            Err(e) => ci.warn(&format!("{} skipped: {e}", ci::quote(path))),
        }
    }
    let repository = std::fs::canonicalize(dir)
        .ok()
        .and_then(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let images = init::images(&dockerfiles, &tracked, &repository);
    let text = init::render(&workflows, &images, registry);

    // What is written must load: a guess that does not is hoist's bug, and
    // must not replace a file that --force was about to replace.
    let written = config_file.unwrap_or(Path::new(CONFIG_FILE));
    let draft = PathBuf::from(format!("{}.hoist-init", written.display()));
    let draft_path = resolve(dir, &draft);
    let cannot_write = |e: std::io::Error| {
        Error::failed(format!("cannot write {}", draft_path.display())).caused_by(e)
    };
    std::fs::write(&draft_path, &text).map_err(cannot_write)?;
    if let Err(error) = Config::load(dir, Some(&draft), Overrides::default(), |_| None) {
        let _ = std::fs::remove_file(&draft_path);
        return Err(error);
    }
    std::fs::rename(&draft_path, &target).map_err(cannot_write)?;

    let mut report = format!("wrote {}\n", target.display());
    match workflows
        .iter()
        .find(|w| w.path_filters && w.problem.is_none())
    {
        Some(chosen) => report.push_str(&format!("  workflow  {}\n", ci::quote(&chosen.path))),
        None => report.push_str("  workflow  none with path filters on push (see the comments)\n"),
    }
    for image in &images {
        report.push_str(&format!(
            "  image     {} from {} (context {})\n",
            image.name,
            ci::quote(&image.dockerfile),
            ci::quote(&image.context)
        ));
    }
    ci.out(&report)?;
    if images.is_empty() {
        ci.warn("no Dockerfile is tracked in git here: list the images under `images:`");
    }
    Ok(0)
}

/// The files of git's index under `dir`, relative to `dir`, `/`-separated:
/// what is tracked, committed or only added.
fn tracked_under(repo: &git2::Repository, dir: &Path) -> Result<Vec<String>> {
    let workdir = repo
        .workdir()
        .ok_or_else(|| Error::input("hoist init needs a working tree, not a bare repository"))?;
    let canonical =
        |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let prefix: PathBuf = canonical(dir)
        .strip_prefix(canonical(workdir))
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let prefix = prefix.to_string_lossy().replace('\\', "/");
    let index = repo
        .index()
        .map_err(|e| Error::failed("cannot read git's index").caused_by(e.message()))?;
    let files = index
        .iter()
        .filter_map(|entry| String::from_utf8(entry.path).ok())
        .filter_map(|path| {
            if prefix.is_empty() {
                Some(path)
            } else {
                path.strip_prefix(&format!("{prefix}/")).map(str::to_string)
            }
        })
        .collect();
    Ok(files)
}
