//! What `hoist init` writes: a first, commented `hoist.yaml` for a
//! repository that is not the reference one, from the files git tracks.
//!
//! Pure: the command ([`crate::cmd`]) lists the tracked files and reads the
//! workflows and Dockerfiles; this module proposes the workflow and the
//! images and renders the YAML. Everything here is a guess a person checks
//! before committing it, and the file says so where it guesses.

use crate::config::is_image_name;
use std::collections::{BTreeMap, BTreeSet};

/// Directories whose Dockerfiles belong to someone else's project:
/// installed packages, vendored code, and the bundle dir `hoist deps` fills.
const FOREIGN_DIRS: [&str; 4] = [
    "node_modules",
    "vendor",
    "third_party",
    ".tenant-bundle-deps",
];

/// A workflow file found, as `hoist init` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowFile {
    /// Relative to the repository root, `/`-separated.
    pub path: String,
    /// Whether its `on.push` has `paths` or `paths-ignore`: what
    /// `hoist changes` decides with.
    pub path_filters: bool,
    /// Why it could not be read as a workflow, when it could not.
    pub problem: Option<String>,
}

/// One image `hoist init` proposes, from one Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// A valid repository name, unique among the proposed images.
    pub name: String,
    /// Relative to the repository root, `/`-separated.
    pub dockerfile: String,
    /// The guessed context, relative to the repository root (`.` for it).
    pub context: String,
    /// Why that context: the guess, in words, for a comment.
    pub why: String,
}

/// Whether `path` (tracked, relative to the root) is a workflow GitHub or
/// Gitea would read: `.github/workflows/*.yml` or `.gitea/workflows/*.yml`
/// (or `.yaml`), not in a subdirectory.
pub fn is_workflow(path: &str) -> bool {
    let Some((dir, file)) = path.rsplit_once('/') else {
        return false;
    };
    matches!(dir, ".github/workflows" | ".gitea/workflows")
        && (file.ends_with(".yml") || file.ends_with(".yaml"))
        && is_plain(path)
}

/// Whether `path` is a Dockerfile of this project: named `Dockerfile`,
/// `Dockerfile.<variant>` or `<variant>.Dockerfile`, outside
/// [`FOREIGN_DIRS`].
pub fn is_dockerfile(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let Some(file) = parts.pop() else {
        return false;
    };
    let named = file == "Dockerfile"
        || file
            .strip_prefix("Dockerfile.")
            .is_some_and(|v| !v.is_empty())
        || file
            .strip_suffix(".Dockerfile")
            .is_some_and(|v| !v.is_empty());
    named && !parts.iter().any(|dir| FOREIGN_DIRS.contains(dir)) && is_plain(path)
}

/// A name that can be written in YAML and in a comment as it is: no control
/// characters (a newline in a file name would end a comment).
fn is_plain(path: &str) -> bool {
    !path.chars().any(char::is_control)
}

/// One proposed image per Dockerfile, in the order given. `dockerfiles` are
/// `(path, text)`; `tracked` is every tracked file (to tell where a `COPY`
/// source exists); `repository` names an image whose Dockerfile is at the
/// root (the repository's directory name).
pub fn images(
    dockerfiles: &[(String, String)],
    tracked: &[String],
    repository: &str,
) -> Vec<Image> {
    let exists = Tracked::new(tracked);
    let mut proposed: Vec<Image> = dockerfiles
        .iter()
        .map(|(path, text)| {
            let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
            let (context, why) = guess_context(dir, text, &exists);
            Image {
                name: image_name(path, dir.rsplit('/').next().unwrap_or(""), repository),
                dockerfile: path.clone(),
                context,
                why,
            }
        })
        .collect();
    // Two `api/Dockerfile` in different places: name both by their whole
    // directory, then number what is still the same.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for image in &proposed {
        *counts.entry(image.name.clone()).or_default() += 1;
    }
    for image in &mut proposed {
        if counts[&image.name] > 1 {
            let dir = image.dockerfile.rsplit_once('/').map_or("", |(dir, _)| dir);
            image.name = image_name(&image.dockerfile, dir, repository);
        }
    }
    let mut taken = BTreeSet::new();
    for image in &mut proposed {
        let base = image.name.clone();
        let mut number = 1;
        while !taken.insert(image.name.clone()) {
            number += 1;
            image.name = format!("{base}-{number}");
        }
    }
    proposed
}

/// The image name of the Dockerfile at `path`, from `dir` (its directory,
/// or more of its path) and its variant (`Dockerfile.tenant`,
/// `worker.Dockerfile`); `repository` when it is at the root.
fn image_name(path: &str, dir: &str, repository: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let variant = file
        .strip_prefix("Dockerfile.")
        .or_else(|| file.strip_suffix(".Dockerfile"));
    let base = if dir.is_empty() { repository } else { dir };
    let base = repository_name(base);
    let name = match variant.map(repository_name) {
        Some(variant) if base.is_empty() => variant,
        Some(variant) if variant != base && !variant.is_empty() => {
            format!("{base}-{variant}")
        }
        _ => base,
    };
    if is_image_name(&name) {
        name
    } else {
        "app".to_string()
    }
}

/// `text` as a repository name by Docker's rule: lowercase letters and
/// digits, separated by one `.`, one `_`, `__` or dashes; any other run of
/// characters becomes one `-`. Empty when nothing is left.
pub fn repository_name(text: &str) -> String {
    let mut name = String::new();
    let mut separators = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if !name.is_empty() && !separators.is_empty() {
                name.push_str(match separators.as_str() {
                    "." => ".",
                    "_" => "_",
                    "__" => "__",
                    _ => "-",
                });
            }
            separators.clear();
            name.push(c);
        } else {
            separators.push(c);
        }
    }
    name
}

/// The tracked files, and the directories that hold them.
struct Tracked<'a> {
    files: BTreeSet<&'a str>,
    dirs: BTreeSet<&'a str>,
}

impl<'a> Tracked<'a> {
    fn new(tracked: &'a [String]) -> Self {
        let mut dirs = BTreeSet::new();
        for file in tracked {
            let mut rest = file.as_str();
            while let Some((dir, _)) = rest.rsplit_once('/') {
                dirs.insert(dir);
                rest = dir;
            }
        }
        Tracked {
            files: tracked.iter().map(String::as_str).collect(),
            dirs,
        }
    }

    fn has(&self, path: &str) -> bool {
        self.files.contains(path) || self.dirs.contains(path)
    }
}

/// The context of the Dockerfile in `dir`: that directory, unless a `COPY`
/// or `ADD` source exists only when read from the repository root (the
/// reference images, `COPY workspace-server/ …` in
/// `workspace-server/Dockerfile`, are built so). A guess from the tracked
/// files; a generated source it cannot see keeps the Dockerfile's directory.
fn guess_context(dir: &str, dockerfile: &str, tracked: &Tracked) -> (String, String) {
    let here = if dir.is_empty() { "." } else { dir };
    if dir.is_empty() {
        return (
            ".".to_string(),
            "the Dockerfile's directory, the repository root".to_string(),
        );
    }
    for source in copy_sources(dockerfile) {
        let Some(source) = literal_part(&source) else {
            continue;
        };
        if !tracked.has(&format!("{dir}/{source}")) && tracked.has(&source) {
            return (
                ".".to_string(),
                format!(
                    "the repository root: the Dockerfile copies {source}, which is there and not in {dir}/"
                ),
            );
        }
    }
    (here.to_string(), "the Dockerfile's directory".to_string())
}

/// The sources of the `COPY` and `ADD` instructions that read the context
/// (not `--from` another stage or image), shell or JSON form, with `\`
/// line continuations joined.
fn copy_sources(dockerfile: &str) -> Vec<String> {
    let mut sources = Vec::new();
    let mut instruction = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if instruction.is_empty() && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                instruction.push_str(start);
                instruction.push(' ');
                continue;
            }
            None => instruction.push_str(trimmed),
        }
        let text = std::mem::take(&mut instruction);
        let Some((keyword, rest)) = text.split_once(char::is_whitespace) else {
            continue;
        };
        if !keyword.eq_ignore_ascii_case("COPY") && !keyword.eq_ignore_ascii_case("ADD") {
            continue;
        }
        let mut words: Vec<String> = Vec::new();
        let mut from_stage = false;
        let mut rest = rest.trim();
        while let Some(flag) = rest.strip_prefix("--") {
            let (flag, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
            from_stage |= flag.starts_with("from=");
            rest = after.trim_start();
        }
        if from_stage {
            continue;
        }
        if rest.starts_with('[') {
            if let Ok(list) = serde_json::from_str::<Vec<String>>(rest) {
                words = list;
            }
        } else {
            words = rest.split_whitespace().map(str::to_string).collect();
        }
        words.pop(); // the destination
        sources.extend(words);
    }
    sources
}

/// The part of a `COPY` source that names a place without patterns
/// (`libs/*.go` -> `libs`), without `./` and a trailing `/`; `None` for the
/// context itself, a URL, or a pattern at the top.
fn literal_part(source: &str) -> Option<String> {
    if source.contains("://") {
        return None;
    }
    let source = source.trim_start_matches("./").trim_start_matches('/');
    let literal = match source.find(['*', '?', '[']) {
        Some(pattern) => source[..pattern].rsplit_once('/')?.0,
        None => source,
    };
    let literal = literal.trim_end_matches('/');
    (!literal.is_empty() && literal != "." && !literal.starts_with(".."))
        .then(|| literal.to_string())
}

/// `text` as a single-quoted YAML scalar.
fn yaml_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The commented `hoist.yaml` for what was found.
pub fn render(workflows: &[WorkflowFile], images: &[Image], registry: Option<&str>) -> String {
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    line("# hoist.yaml, written by `hoist init` from the files git tracks here.");
    line("# Check the guesses below, then commit it. Every key is optional; the README's");
    line("# \"Configuration: hoist.yaml\" lists them all.");
    line("");
    line("# The workflow whose `on.push` path filters decide whether a push needs new");
    line("# images (`hoist changes`, `hoist publish`).");
    let chosen = workflows
        .iter()
        .find(|w| w.path_filters && w.problem.is_none());
    if workflows.is_empty() {
        line("# No workflow found under .github/workflows or .gitea/workflows.");
        line("# workflow: .github/workflows/images.yml");
    } else if chosen.is_none() {
        line("# None of these filters `on.push` by path; name the one that runs hoist.");
    }
    for workflow in workflows {
        let note = match (&workflow.problem, workflow.path_filters) {
            (Some(problem), _) => format!("not readable as a workflow: {problem}"),
            (None, true) => "on.push has path filters".to_string(),
            (None, false) => "no path filters on push".to_string(),
        };
        let prefix = if Some(workflow) == chosen { "" } else { "# " };
        line(&format!(
            "{prefix}workflow: {}   # {}",
            yaml_quote(&workflow.path),
            crate::ci::one_line(&note)
        ));
    }
    if let Some(chosen) = chosen
        && chosen.path.starts_with(".gitea/")
    {
        line("# Gitea's rules for the filters, also when run outside its runner.");
        line("dialect: gitea");
    }
    line("");
    line("# Where images are pushed: a host and an optional repository prefix.");
    match registry {
        Some(registry) => line(&format!("registry: {}", yaml_quote(registry))),
        None => line("# registry: 123456789012.dkr.ecr.us-east-2.amazonaws.com/my-org"),
    }
    line("");
    line("# Labels for every image; an image's own `labels:` win, and an empty value");
    line("# removes a label. These two are the defaults (`${image}` is the image's name,");
    line("# a label whose value is empty, as `${run_id}` outside CI, is not set):");
    line("# labels:");
    line("#   org.opencontainers.image.description: '${image} — pending canary verify'");
    line("#   molecule.workflow.run_id: '${run_id}'");
    line("");
    if images.is_empty() {
        line("# No Dockerfile tracked in git; list the images to build:");
        line("# images:");
        line("#   app:");
        line("#     dockerfile: Dockerfile");
        line("#     context: .");
        return out;
    }
    line("# One image per Dockerfile tracked in git. Each gets the build arg");
    line("# GIT_SHA: '${sha}' unless it sets `build_args:`, which are then all it gets.");
    line("# The contexts are guesses: check them.");
    line("images:");
    for image in images {
        line(&format!("  {}:", image.name));
        line(&format!(
            "    dockerfile: {}",
            yaml_quote(&image.dockerfile)
        ));
        line(&format!(
            "    context: {}   # {}",
            yaml_quote(&image.context),
            crate::ci::one_line(&image.why)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_workflows_and_dockerfiles_of_this_project_only() {
        for path in [".github/workflows/ci.yml", ".gitea/workflows/publish.yaml"] {
            assert!(is_workflow(path), "{path}");
        }
        for path in [
            ".github/workflows/sub/ci.yml",
            ".github/ci.yml",
            ".github/workflows/README.md",
        ] {
            assert!(!is_workflow(path), "{path}");
        }
        for path in [
            "Dockerfile",
            "services/api/Dockerfile",
            "workspace-server/Dockerfile.tenant",
            "docker/worker.Dockerfile",
        ] {
            assert!(is_dockerfile(path), "{path}");
        }
        for path in [
            "web/node_modules/x/Dockerfile",
            "vendor/github.com/x/Dockerfile",
            ".tenant-bundle-deps/plugins/p/Dockerfile",
            "Dockerfile.",
            "docs/Dockerfile.md/x",
            "Dockerfiles",
            "a\nb/Dockerfile",
        ] {
            assert!(!is_dockerfile(path), "{path:?}");
        }
    }

    #[test]
    fn names_follow_docker_rules_and_never_collide() {
        assert_eq!(repository_name("My Service"), "my-service");
        assert_eq!(repository_name("--api__v2..x_"), "api__v2-x");
        assert_eq!(repository_name("ÄÖ"), "");
        let dockerfiles: Vec<(String, String)> = [
            "services/api/Dockerfile",
            "libs/api/Dockerfile",
            "workspace-server/Dockerfile.tenant",
            "Dockerfile",
            "docker/Worker.Dockerfile",
            "services/api/Dockerfile.api",
            "ÄÖ/Dockerfile",
            "a/b/c/Dockerfile",
            "a-b/c/Dockerfile",
        ]
        .iter()
        .map(|p| (p.to_string(), "FROM scratch\n".to_string()))
        .collect();
        let names: Vec<String> = images(&dockerfiles, &[], "My Repo")
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(
            names,
            [
                "services-api",
                "libs-api",
                "workspace-server-tenant",
                "my-repo",
                "docker-worker",
                "services-api-api",
                "app",
                "a-b-c",
                "a-b-c-2"
            ]
        );
        for name in &names {
            assert!(is_image_name(name), "{name}");
        }
    }

    #[test]
    fn the_context_is_the_root_when_a_copy_source_exists_only_there() {
        let tracked = strings(&[
            "libs/go/util.go",
            "services/api/main.go",
            "services/api/Dockerfile",
            "services/worker/Dockerfile",
            "services/worker/worker.py",
            "workspace-server/Dockerfile",
            "workspace-server/main.go",
        ]);
        let dockerfiles = vec![
            (
                "services/api/Dockerfile".to_string(),
                "FROM scratch AS build\n# COPY libs/ nowhere\nCOPY --chown=1:1 \\\n  main.go libs/go/*.go /src/\nFROM scratch\nCOPY --from=build /src /src\n".to_string(),
            ),
            (
                "services/worker/Dockerfile".to_string(),
                "FROM scratch\nCOPY [\"worker.py\", \"/app/\"]\nADD https://example.com/x.tgz /x\nCOPY --from=build libs/ /libs/\n".to_string(),
            ),
            (
                "workspace-server/Dockerfile".to_string(),
                "FROM scratch\ncopy ./workspace-server/ /srv/workspace-server/\n".to_string(),
            ),
        ];
        let proposed = images(&dockerfiles, &tracked, "mono");
        let contexts: Vec<&str> = proposed.iter().map(|i| i.context.as_str()).collect();
        assert_eq!(contexts, [".", "services/worker", "."]);
        assert!(proposed[0].why.contains("libs/go"), "{}", proposed[0].why);
        assert_eq!(proposed[1].why, "the Dockerfile's directory");
    }

    #[test]
    fn renders_a_commented_file_choosing_the_filtered_workflow() {
        let workflows = vec![
            WorkflowFile {
                path: ".gitea/workflows/test.yml".into(),
                path_filters: false,
                problem: None,
            },
            WorkflowFile {
                path: ".gitea/workflows/images.yml".into(),
                path_filters: true,
                problem: None,
            },
        ];
        let images = vec![Image {
            name: "api".into(),
            dockerfile: "services/api/it's.Dockerfile".into(),
            context: "services/api".into(),
            why: "the Dockerfile's directory".into(),
        }];
        let text = render(&workflows, &images, Some("reg.example/org"));
        for want in [
            "# workflow: '.gitea/workflows/test.yml'   # no path filters on push\n",
            "\nworkflow: '.gitea/workflows/images.yml'   # on.push has path filters\n",
            "\ndialect: gitea\n",
            "\nregistry: 'reg.example/org'\n",
            "  api:\n    dockerfile: 'services/api/it''s.Dockerfile'\n    context: 'services/api'   # the Dockerfile's directory\n",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
        let nothing = render(&[], &[], None);
        assert!(nothing.contains("# registry: "), "{nothing}");
        assert!(!nothing.contains("\nimages:"), "{nothing}");
    }

    #[test]
    fn what_is_rendered_loads_as_written() {
        use crate::config::{Config, Overrides};
        let dir = tempfile::tempdir().unwrap();
        let workflows = vec![WorkflowFile {
            path: ".gitea/workflows/images: v2.yml".into(),
            path_filters: true,
            problem: None,
        }];
        let dockerfiles = vec![
            (
                "svc/a #1/Dockerfile".to_string(),
                "FROM scratch\n".to_string(),
            ),
            ("Dockerfile.web".to_string(), "FROM scratch\n".to_string()),
        ];
        let proposed = images(&dockerfiles, &[], "repo");
        let text = render(&workflows, &proposed, Some("localhost:5000/t"));
        std::fs::write(dir.path().join("hoist.yaml"), &text).unwrap();
        let config = Config::load(dir.path(), None, Overrides::default(), |_| None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            config.workflow,
            dir.path().join(".gitea/workflows/images: v2.yml")
        );
        assert_eq!(config.dialect, crate::dialect::Dialect::Gitea);
        assert_eq!(config.registry.as_deref(), Some("localhost:5000/t"));
        let loaded: Vec<(&str, PathBuf, PathBuf)> = config
            .images
            .iter()
            .map(|i| (i.name.as_str(), i.dockerfile.clone(), i.context.clone()))
            .collect();
        let root = dir.path();
        assert_eq!(
            loaded,
            [
                (
                    "a-1",
                    root.join("svc/a #1/Dockerfile"),
                    root.join("svc/a #1")
                ),
                ("repo-web", root.join("Dockerfile.web"), root.join(".")),
            ]
        );
        assert_eq!(config.images[0].build_args["GIT_SHA"], "${sha}");

        // Nothing found: every line a comment, so the defaults load.
        std::fs::write(dir.path().join("hoist.yaml"), render(&[], &[], None)).unwrap();
        let config = Config::load(dir.path(), None, Overrides::default(), |_| None).unwrap();
        assert_eq!(config.registry, None);
    }
}
