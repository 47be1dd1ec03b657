//! The plan of `hoist publish` and the judgements it makes against what the
//! registry already holds. Pure: the command reads git, the engine and the
//! registry, and asks this module what to do with what it found.
//!
//! The plan is what `--dry-run` prints and what a real run walks, step by
//! step: the changes decision, the dependencies, the builds, the pushes.

use crate::build::{self, ExtraTags};
use crate::changes::Decision;
use crate::config::{PushConfig, PushVia};
use crate::context::human_bytes;
use crate::deps::Job;
use crate::dirty::DirtyImage;
use crate::registry::Target;
use serde::Serialize;
use std::path::PathBuf;

/// The tag that follows the newest published commit.
pub const STAGING_LATEST: &str = build::STAGING_LATEST;

/// Everything one publish does, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub sha: String,
    pub sha7: String,
    pub changes: Changes,
    pub deps: Vec<DepStep>,
    pub build: build::Plan,
    pub registry: RegistryStep,
    pub images: Vec<PushStep>,
    /// Tags pointed at every image's manifest beside `staging-<sha7>`
    /// (`--tag`, `tags:`); none for a dirty build.
    pub extra_tags: Vec<String>,
    /// Why templates were left out, and extra tags not pushed.
    pub notes: Vec<String>,
    /// The images whose builds read tracked files that differ from the
    /// commit (published only with `--allow-dirty`, as `-dirty`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dirty: Vec<DirtyImage>,
}

/// Whether the push selects the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    /// `--force`: the decision is not asked.
    pub forced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

impl Changes {
    /// Whether the rest of the plan runs.
    pub fn selected(&self) -> bool {
        self.forced || self.decision.as_ref().is_none_or(|d| d.run)
    }

    /// Why the plan runs or not, as `hoist changes` would say it.
    pub fn reason(&self) -> String {
        match (&self.decision, self.forced) {
            (_, true) => "--force: published whatever the path filters say".to_string(),
            (Some(decision), false) => decision.reason.clone(),
            (None, false) => String::new(),
        }
    }
}

/// One dependency to pre-clone.
#[derive(Debug, Clone, Serialize)]
pub struct DepStep {
    pub category: String,
    pub name: String,
    pub repo: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub private: bool,
    pub provider: String,
    pub path: PathBuf,
}

/// The registry the images go to.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryStep {
    /// Host and repository prefix.
    pub target: String,
    /// `ECR` or `OCI`.
    pub kind: &'static str,
    /// Create missing ECR repositories.
    pub create_repos: bool,
    /// How the images are uploaded.
    pub push: PushRoute,
}

/// How the images are uploaded: `push:` of hoist.yaml, resolved.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PushRoute {
    /// `registry` (hoist uploads) or `engine` (`docker push`).
    pub via: PushVia,
    /// `push.chunk_size` in bytes; `null`: one request per blob.
    pub chunk_size: Option<u64>,
    /// The largest request body actually sent: `chunk_size` capped at
    /// [`crate::push::MAX_CHUNK`].
    pub chunk_sent: Option<u64>,
    /// Blob uploads at once.
    pub jobs: usize,
}

impl PushRoute {
    /// "hoist uploads, chunks of at most 32.0 MiB, 4 blobs at once, …", or
    /// "the engine pushes (docker push)". The chunk is the one sent.
    pub fn describe(&self) -> String {
        match self.via {
            PushVia::Engine => format!(
                "the engine pushes (docker push){}",
                if self.chunk_size.is_some() {
                    "; push.chunk_size applies only to hoist's upload and is ignored"
                } else {
                    ""
                }
            ),
            PushVia::Registry => format!(
                "hoist uploads, {}, {} blobs at once, layers compressed on every core",
                match (self.chunk_size, self.chunk_sent) {
                    (Some(size), Some(sent)) if sent < size => format!(
                        "chunks of at most {} (push.chunk_size {}, capped: a chunk is held in memory until the registry has it)",
                        human_bytes(sent),
                        human_bytes(size)
                    ),
                    (_, Some(sent)) => format!("chunks of at most {}", human_bytes(sent)),
                    _ => "one request per blob".to_string(),
                },
                self.jobs
            ),
        }
    }
}

/// One image's pushes.
#[derive(Debug, Clone, Serialize)]
pub struct PushStep {
    pub name: String,
    /// The repository inside the registry (`prefix/name`).
    pub repository: String,
    /// `staging-<sha7>` (`staging-<sha7>-dirty` for a dirty build), pushed
    /// through the engine.
    pub staging_tag: String,
    /// Full reference of the staging tag.
    pub staging_reference: String,
    /// Full reference of `staging-latest`, pointed registry-side at the
    /// manifest just pushed, unless a newer commit already holds it; `None`
    /// for a dirty build, which no commit's tag may name.
    pub latest_reference: Option<String>,
    /// Full references of the extra tags, written registry-side from the
    /// same manifest bytes.
    pub extra_references: Vec<String>,
}

/// How the registry is written to.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--create-repos`.
    pub create_repos: bool,
    pub push: PushConfig,
}

/// Puts the plan together. `extra` are the expanded `--tag`/`tags:`, and
/// `dirty` what makes the build dirty, if it is.
pub fn plan(
    changes: Changes,
    jobs: &[Job],
    build: build::Plan,
    target: &Target,
    settings: Settings,
    extra: ExtraTags,
    dirty: Vec<DirtyImage>,
) -> Plan {
    let Settings { create_repos, push } = settings;
    let ExtraTags {
        tags: mut extra_tags,
        mut notes,
    } = extra;
    if build.dirty && !extra_tags.is_empty() {
        notes.push(format!(
            "not pushed for a build of a dirty tree: {}",
            extra_tags.join(", ")
        ));
        extra_tags.clear();
    }
    let deps = jobs
        .iter()
        .map(|job| DepStep {
            category: job.dep.category.key().to_string(),
            name: job.dep.name.clone(),
            repo: job.dep.repo.clone(),
            git_ref: job.dep.git_ref.to_string(),
            private: job.dep.private,
            provider: job.provider.clone(),
            path: job.target.clone(),
        })
        .collect();
    let staging_tag = build::staging_tag(&build.sha7, build.dirty);
    let images = build
        .images
        .iter()
        .map(|image| PushStep {
            name: image.name.clone(),
            repository: target.repository(&image.name),
            staging_tag: staging_tag.clone(),
            staging_reference: target.reference(&image.name, &staging_tag),
            latest_reference: (!build.dirty).then(|| target.reference(&image.name, STAGING_LATEST)),
            extra_references: extra_tags
                .iter()
                .map(|tag| target.reference(&image.name, tag))
                .collect(),
        })
        .collect();
    Plan {
        sha: build.sha.clone(),
        sha7: build.sha7.clone(),
        changes,
        deps,
        registry: RegistryStep {
            target: target.to_string(),
            kind: if target.ecr().is_some() { "ECR" } else { "OCI" },
            create_repos,
            push: PushRoute {
                via: push.via,
                chunk_size: push.chunk_size,
                chunk_sent: crate::push::chunk_sent(push.chunk_size),
                jobs: push.jobs,
            },
        },
        build,
        images,
        extra_tags,
        notes,
        dirty,
    }
}

/// Whether a revision the registry reports (a full sha, or the hex of a
/// `staging-<sha7>` tag) names the commit `sha`.
pub fn same_commit(revision: &str, sha: &str) -> bool {
    let revision = revision.to_ascii_lowercase();
    revision.len() >= 7 && sha.to_ascii_lowercase().starts_with(&revision)
}

/// What `staging-<sha7>` already names in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// Nothing: build and push.
    Absent,
    /// An image built from this very commit by an earlier run: nothing to
    /// build or push again.
    Published { digest: String },
    /// An image from another commit, or one that does not say: refusing
    /// protects what the tag names.
    Conflict {
        digest: String,
        revision: Option<String>,
    },
    /// A conflict, overruled by `--force`: build and push over it.
    Replaced { digest: String },
}

/// Judges the registry's `staging-<sha7>`: `found` is its digest and the
/// revision it was built from, if the registry tells.
///
/// A rebuild never reproduces a digest (the `created` label, the run id), so
/// "the same image" means "built from the same commit": that is what makes
/// a re-run a no-op instead of a conflict.
pub fn judge_existing(found: Option<(&str, Option<&str>)>, sha: &str, force: bool) -> Existing {
    let Some((digest, revision)) = found else {
        return Existing::Absent;
    };
    let digest = digest.to_string();
    let ours = revision.is_some_and(|r| same_commit(r, sha));
    match (ours, force) {
        (true, _) => Existing::Published { digest },
        (false, true) => Existing::Replaced { digest },
        (false, false) => Existing::Conflict {
            digest,
            revision: revision.map(str::to_string),
        },
    }
}

/// What to do with `staging-latest` once `staging-<sha7>` is in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Latest {
    /// It already names our manifest.
    InPlace,
    /// Point it at ours; `from` is the digest it named before.
    Move { from: Option<String> },
    /// A commit that descends from ours holds it (a newer push finished
    /// first): leave it.
    Newer { digest: String, revision: String },
    /// Point it at ours, though whether that goes backwards cannot be told.
    MoveUnsure { from: String, why: String },
}

/// Judges `staging-latest`. `current` is what it names now (digest and the
/// revision the registry tells); `descends` is whether that revision
/// descends from our commit, as far as the local history knows.
pub fn judge_latest(
    ours: &str,
    current: Option<(&str, Option<&str>)>,
    sha: &str,
    descends: Option<bool>,
) -> Latest {
    let Some((digest, revision)) = current else {
        return Latest::Move { from: None };
    };
    if digest == ours {
        return Latest::InPlace;
    }
    let from = digest.to_string();
    match (revision, descends) {
        (None, _) => Latest::MoveUnsure {
            from,
            why: "the image it names does not say which commit it was built from".to_string(),
        },
        (Some(revision), _) if same_commit(revision, sha) => Latest::Move { from: Some(from) },
        (Some(revision), Some(true)) => Latest::Newer {
            digest: from,
            revision: revision.to_string(),
        },
        (Some(_), Some(false)) => Latest::Move { from: Some(from) },
        (Some(revision), None) => Latest::MoveUnsure {
            from,
            why: format!(
                "commit {} is not in this clone, so its ancestry is unknown (fetch more history to know)",
                &revision[..revision.len().min(12)]
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn build_plan(dirty: bool) -> build::Plan {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config::load(
            dir.path(),
            None,
            crate::config::Overrides::default(),
            |_| None,
        )
        .unwrap();
        let inputs = build::Inputs {
            sha: SHA.into(),
            ref_name: "v1.2.3".into(),
            run_id: None,
            source: None,
            created: String::new(),
            builder: build::Builder::Buildkit,
            no_cache: false,
            dirty,
        };
        build::plan(&config, Some("r.example/p"), &[], &inputs).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            create_repos: false,
            push: PushConfig {
                via: PushVia::Registry,
                chunk_size: Some(90 << 20),
                jobs: 4,
            },
        }
    }

    #[test]
    fn the_push_route_says_how_images_are_uploaded() {
        let route = |via, chunk_size: Option<u64>| PushRoute {
            via,
            chunk_size,
            chunk_sent: crate::push::chunk_sent(chunk_size),
            jobs: 4,
        };
        assert_eq!(
            route(PushVia::Registry, Some(90 << 20)).describe(),
            "hoist uploads, chunks of at most 32.0 MiB (push.chunk_size 90.0 MiB, capped: a chunk is held in memory until the registry has it), 4 blobs at once, layers compressed on every core"
        );
        assert_eq!(
            route(PushVia::Registry, Some(1 << 20)).describe(),
            "hoist uploads, chunks of at most 1.0 MiB, 4 blobs at once, layers compressed on every core"
        );
        assert_eq!(
            route(PushVia::Engine, Some(1 << 20)).describe(),
            "the engine pushes (docker push); push.chunk_size applies only to hoist's upload and is ignored"
        );
        assert_eq!(
            route(PushVia::Registry, None).describe(),
            "hoist uploads, one request per blob, 4 blobs at once, layers compressed on every core"
        );
        assert_eq!(
            route(PushVia::Engine, None).describe(),
            "the engine pushes (docker push)"
        );
    }

    #[test]
    fn extra_tags_go_with_a_clean_build_only() {
        let target = Target::parse("r.example/p").unwrap();
        let extra = || ExtraTags {
            tags: vec!["1.2.3".into(), "1".into()],
            notes: vec![],
        };
        let changes = || Changes {
            forced: true,
            decision: None,
        };
        let clean = plan(
            changes(),
            &[],
            build_plan(false),
            &target,
            settings(),
            extra(),
            vec![],
        );
        let platform = &clean.images[0];
        assert_eq!(platform.staging_tag, "staging-0123456");
        assert_eq!(
            platform.latest_reference.as_deref(),
            Some("r.example/p/platform:staging-latest")
        );
        assert_eq!(
            platform.extra_references,
            ["r.example/p/platform:1.2.3", "r.example/p/platform:1"]
        );

        let dirty = vec![DirtyImage {
            image: "platform".into(),
            paths: vec!["workspace-server/main.go".into()],
        }];
        let dirty = plan(
            changes(),
            &[],
            build_plan(true),
            &target,
            settings(),
            extra(),
            dirty,
        );
        let platform = &dirty.images[0];
        assert_eq!(platform.staging_tag, "staging-0123456-dirty");
        assert_eq!(platform.latest_reference, None);
        assert!(platform.extra_references.is_empty());
        assert!(dirty.extra_tags.is_empty());
        assert_eq!(
            dirty.notes,
            ["not pushed for a build of a dirty tree: 1.2.3, 1"]
        );
    }

    #[test]
    fn revisions_match_full_shas_and_tag_prefixes() {
        assert!(same_commit(SHA, SHA));
        assert!(same_commit("0123456", SHA));
        assert!(same_commit("0123456789ABCDEF", SHA));
        assert!(!same_commit("012345", SHA), "too short to mean anything");
        assert!(!same_commit("1123456", SHA));
    }

    #[test]
    fn an_existing_staging_tag_is_judged_by_what_it_was_built_from() {
        assert_eq!(judge_existing(None, SHA, false), Existing::Absent);
        assert_eq!(
            judge_existing(Some(("sha256:a", Some(SHA))), SHA, false),
            Existing::Published {
                digest: "sha256:a".into()
            }
        );
        let other = "fedcba9876543210fedcba9876543210fedcba98";
        assert_eq!(
            judge_existing(Some(("sha256:b", Some(other))), SHA, false),
            Existing::Conflict {
                digest: "sha256:b".into(),
                revision: Some(other.into())
            }
        );
        assert_eq!(
            judge_existing(Some(("sha256:b", None)), SHA, false),
            Existing::Conflict {
                digest: "sha256:b".into(),
                revision: None
            }
        );
        assert_eq!(
            judge_existing(Some(("sha256:b", None)), SHA, true),
            Existing::Replaced {
                digest: "sha256:b".into()
            }
        );
    }

    #[test]
    fn staging_latest_never_moves_backwards() {
        let newer = "fedcba9876543210fedcba9876543210fedcba98";
        assert_eq!(
            judge_latest("sha256:o", None, SHA, None),
            Latest::Move { from: None }
        );
        assert_eq!(
            judge_latest("sha256:o", Some(("sha256:o", None)), SHA, None),
            Latest::InPlace
        );
        assert_eq!(
            judge_latest("sha256:o", Some(("sha256:n", Some(newer))), SHA, Some(true)),
            Latest::Newer {
                digest: "sha256:n".into(),
                revision: newer.into()
            }
        );
        assert_eq!(
            judge_latest(
                "sha256:o",
                Some(("sha256:n", Some(newer))),
                SHA,
                Some(false)
            ),
            Latest::Move {
                from: Some("sha256:n".into())
            }
        );
        // A rebuild of our own commit under another digest is ours to replace.
        assert_eq!(
            judge_latest(
                "sha256:o",
                Some(("sha256:n", Some(&SHA[..7]))),
                SHA,
                Some(false)
            ),
            Latest::Move {
                from: Some("sha256:n".into())
            }
        );
        assert!(matches!(
            judge_latest("sha256:o", Some(("sha256:n", Some(newer))), SHA, None),
            Latest::MoveUnsure { why, .. } if why.contains("fedcba987654") && why.contains("not in this clone")
        ));
        assert!(matches!(
            judge_latest("sha256:o", Some(("sha256:n", None)), SHA, None),
            Latest::MoveUnsure { .. }
        ));
    }
}
