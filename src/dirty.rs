//! Whether an image is built from its commit: of the tracked files that
//! differ from the commit (git's answer, [`crate::git::changed_in_worktree`]),
//! those that reach an image's build. An image labelled and tagged as commit
//! X must hold commit X's files; one built from a tree that differs is
//! labelled `<sha>-dirty` and tagged `staging-<sha7>-dirty`, and `hoist
//! publish` refuses it unless told otherwise.
//!
//! Pure: the command asks git and reads the build contexts, and asks this
//! module which paths matter for which image.

use crate::error::Error;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// What a revision label and a staging tag get when the tree differs from
/// the commit.
pub const SUFFIX: &str = "-dirty";

/// How many paths an error or warning names before "and N more".
pub const LISTED: usize = 10;

/// One image whose build would send files that differ from the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirtyImage {
    pub image: String,
    /// Repository-relative paths, sorted.
    pub paths: Vec<String>,
}

/// The paths of `changed` (repository-relative, under `workdir`) that one
/// image's build reads: its Dockerfile, and every path under its `context`
/// dir that the context sends (`sends` gets the path relative to the
/// context, `/`-separated: the `.dockerignore` answer). Paths under
/// `bundle_dir` are left out: `hoist deps` writes that dir on purpose.
/// `workdir`, `context`, `dockerfile` and `bundle_dir` are absolute, with
/// symlinks resolved, so that they compare.
pub fn affecting(
    changed: &[String],
    workdir: &Path,
    bundle_dir: &Path,
    context: &Path,
    dockerfile: &Path,
    sends: impl Fn(&str) -> bool,
) -> Vec<String> {
    changed
        .iter()
        .filter(|path| {
            let absolute = workdir.join(path);
            if absolute.starts_with(bundle_dir) {
                return false;
            }
            if absolute == dockerfile {
                return true;
            }
            match absolute.strip_prefix(context) {
                Ok(rel) => rel.to_str().is_some_and(&sends),
                Err(_) => false,
            }
        })
        .cloned()
        .collect()
}

/// The distinct paths of `dirty`, each with the images it reaches, at most
/// [`LISTED`] of them, then "and N more": the lines an error or warning
/// shows.
pub fn describe(dirty: &[DirtyImage]) -> Vec<String> {
    let mut images_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for image in dirty {
        for path in &image.paths {
            images_of.entry(path).or_default().push(&image.image);
        }
    }
    let mut lines: Vec<String> = images_of
        .iter()
        .take(LISTED)
        .map(|(path, images)| format!("{} (in {})", crate::ci::quote(path), images.join(", ")))
        .collect();
    if images_of.len() > LISTED {
        lines.push(format!("and {} more", images_of.len() - LISTED));
    }
    lines
}

/// The refusal of `hoist publish` to label and tag as commit `sha` images
/// built from a tree that differs from it.
pub fn refusal(dirty: &[DirtyImage], sha: &str) -> Error {
    let count = distinct(dirty);
    let mut error = Error::input(format!(
        "{count} tracked file(s) in the build context differ from commit {}: the images would not be that commit; nothing was built or pushed",
        short(sha)
    ));
    for line in describe(dirty) {
        error = error.caused_by(line);
    }
    error.hint(format!(
        "commit them (and publish that commit), or set them aside (`git stash`); \
         --allow-dirty publishes `staging-{}{SUFFIX}` only, labelled `{sha}{SUFFIX}`",
        short(sha)
    ))
}

/// The warning of `hoist build` for the same tree.
pub fn warning(dirty: &[DirtyImage], sha: &str) -> String {
    format!(
        "{} tracked file(s) in the build context differ from commit {}: labelled {}{SUFFIX} and tagged staging-{}{SUFFIX}: {}",
        distinct(dirty),
        short(sha),
        short(sha),
        short(sha),
        describe(dirty).join("; ")
    )
}

fn distinct(dirty: &[DirtyImage]) -> usize {
    let mut paths: Vec<&str> = dirty
        .iter()
        .flat_map(|d| d.paths.iter().map(String::as_str))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    paths.len()
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn changed(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn only_what_the_build_reads_counts() {
        let work = PathBuf::from("/repo");
        let changed = changed(&[
            "services/api/main.go",
            "services/api/docs/notes.md",
            "services/web/page.tsx",
            "docker/api.Dockerfile",
            "docker/web.Dockerfile",
            ".tenant-bundle-deps/plugins/a/x",
            "README.md",
        ]);
        // The api context leaves out docs/, its Dockerfile is outside it.
        let api = affecting(
            &changed,
            &work,
            &work.join(".tenant-bundle-deps"),
            &work.join("services/api"),
            &work.join("docker/api.Dockerfile"),
            |rel| !rel.starts_with("docs/"),
        );
        assert_eq!(api, ["services/api/main.go", "docker/api.Dockerfile"]);
        // A root context reads everything but the bundle dir.
        let root = affecting(
            &changed,
            &work,
            &work.join(".tenant-bundle-deps"),
            &work,
            &work.join("docker/web.Dockerfile"),
            |_| true,
        );
        assert_eq!(root.len(), 6);
        assert!(!root.iter().any(|p| p.starts_with(".tenant-bundle-deps")));
        // Nothing under the context: clean.
        let other = affecting(
            &changed,
            &work,
            &work.join(".tenant-bundle-deps"),
            &work.join("services/worker"),
            &work.join("services/worker/Dockerfile"),
            |_| true,
        );
        assert!(other.is_empty());
    }

    #[test]
    fn errors_name_at_most_ten_paths_with_their_images() {
        let paths: Vec<String> = (0..12).map(|n| format!("src/f{n:02}.rs")).collect();
        let dirty = vec![
            DirtyImage {
                image: "api".into(),
                paths: paths.clone(),
            },
            DirtyImage {
                image: "web".into(),
                paths: paths[..1].to_vec(),
            },
        ];
        let lines = describe(&dirty);
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[0], "src/f00.rs (in api, web)");
        assert_eq!(lines[9], "src/f09.rs (in api)");
        assert_eq!(lines[10], "and 2 more");

        let error = refusal(&dirty, SHA);
        assert_eq!(error.exit_code(), 2);
        assert!(error.message.starts_with("12 tracked file(s)"), "{error}");
        assert!(error.message.contains("0123456"), "{error}");
        let hint = error.hint.as_deref().unwrap();
        assert!(hint.contains("--allow-dirty"), "{hint}");
        assert!(hint.contains("staging-0123456-dirty"), "{hint}");
        assert!(warning(&dirty, SHA).contains("src/f00.rs (in api, web)"));
    }

    #[test]
    fn a_hostile_path_stays_on_its_line() {
        let dirty = [DirtyImage {
            image: "api".into(),
            paths: vec!["a\n::add-mask::x".into()],
        }];
        assert!(!describe(&dirty)[0].contains('\n'));
    }
}
