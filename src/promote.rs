//! The promotion plan (pure): which manifest `latest` and `latest-previous`
//! of each image will name, whether that goes backwards, and what puts
//! things back when a move fails half-way.
//!
//! A promotion points `latest` at the manifest `staging-<sha7>` names, and
//! first points `latest-previous` at what `latest` named, so that a
//! rollback has somewhere to go. A rollback swaps the two. Both are written
//! registry-side, as the exact bytes of a manifest the repository holds.

use crate::error::{Error, Result};
use crate::publish::same_commit;
use serde::Serialize;

/// Production's tag.
pub const LATEST: &str = "latest";
/// What `latest` named before the last promotion or rollback.
pub const LATEST_PREVIOUS: &str = "latest-previous";

/// A commit sha as given on the command line: 7 to 40 hex characters,
/// lower-cased.
pub fn parse_sha(text: &str) -> Result<String> {
    let sha = text.trim().to_ascii_lowercase();
    if (7..=40).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha)
    } else {
        Err(Error::input(format!("'{text}' is not a commit sha"))
            .hint("give 7 to 40 hex characters of the commit, as in its staging-<sha7> tag"))
    }
}

/// The tag a commit's images were published under.
pub fn staging_tag(sha: &str) -> String {
    format!("staging-{}", &sha[..7])
}

/// Whether two shas (full, or prefixes of 7 or more) name the same commit.
pub fn same_sha(a: &str, b: &str) -> bool {
    same_commit(a, b) || same_commit(b, a)
}

/// Whether a staging image is the commit it was asked for, as far as the
/// registry tells.
///
/// `staging-<sha7>` names a commit by 7 characters: another commit sharing
/// them (a collision, or a tag pushed by hand) can hold the tag, and
/// moving `latest` to it would ship the wrong code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Identity {
    /// Every commit the registry names for the image is the one asked for
    /// (`revision`: the longest it gives; on ECR a tag's 7 characters).
    Confirmed { revision: String },
    /// The registry says the image was built from `revision`, another
    /// commit.
    Other { revision: String },
    /// The registry does not say which commit the image was built from.
    Untold,
}

/// Sets what the registry says an image was built from (`revisions`: the
/// revision label's full sha on OCI registries; on ECR the hex of every
/// `staging-<hex>` tag on the image) against `sha`, the commit asked for:
/// the full sha when the local clone knows the commit, else as given (7 to
/// 40 characters). A revision matches when one is a prefix of the other,
/// as publish judges its staging tag.
pub fn identify(sha: &str, revisions: &[String]) -> Identity {
    let longest = |matching: bool| {
        revisions
            .iter()
            .filter(|r| same_sha(r, sha) == matching)
            .max_by_key(|r| r.len())
            .cloned()
    };
    match (longest(false), longest(true)) {
        (Some(revision), _) => Identity::Other { revision },
        (None, Some(revision)) => Identity::Confirmed { revision },
        (None, None) => Identity::Untold,
    }
}

/// How the commit being promoted stands to the one `latest` holds, as the
/// local git history tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancestry {
    /// The promoted commit descends from latest's: forward.
    Ahead,
    /// Latest's commit descends from the promoted one: backwards.
    Behind,
    /// Neither descends from the other: latest holds commits the promoted
    /// one lacks.
    Diverged,
}

/// Where a promotion takes `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "direction", rename_all = "kebab-case")]
pub enum Direction {
    /// `latest` does not exist yet.
    First,
    /// `latest` already names the manifest: nothing to move.
    InPlace,
    /// Forward: the promoted commit descends from latest's, or is the same
    /// commit under another build.
    Forward,
    /// Backwards: latest's commit descends from the promoted one.
    Backwards { revision: String },
    /// Sideways: neither descends from the other.
    Diverged { revision: String },
    /// Cannot be told.
    Unknown { why: String },
}

impl Direction {
    /// Whether moving this way needs `--allow-older`.
    pub fn needs_allow_older(&self) -> bool {
        matches!(
            self,
            Direction::Backwards { .. } | Direction::Diverged { .. } | Direction::Unknown { .. }
        )
    }

    /// One line for people: why this needs `--allow-older`, or where it goes.
    pub fn describe(&self, sha7: &str) -> String {
        let short = |revision: &str| revision[..revision.len().min(7)].to_string();
        match self {
            Direction::First => "first promotion: latest does not exist yet".to_string(),
            Direction::InPlace => "latest already names it".to_string(),
            Direction::Forward => "forward".to_string(),
            Direction::Backwards { revision } => format!(
                "backwards: latest holds {}, which descends from {sha7}",
                short(revision)
            ),
            Direction::Diverged { revision } => format!(
                "sideways: latest holds {}, and neither commit descends from the other",
                short(revision)
            ),
            Direction::Unknown { why } => format!("cannot tell whether this goes backwards: {why}"),
        }
    }
}

/// Judges a promotion to `source` (a digest) of commit `sha`. `latest` is
/// what the tag names now with the commit the registry says it was built
/// from; `ancestry` how `sha` stands to that commit, when the local history
/// knows both.
pub fn judge(
    source: &str,
    sha: &str,
    latest: Option<(&str, Option<&str>)>,
    ancestry: Option<Ancestry>,
) -> Direction {
    let Some((digest, revision)) = latest else {
        return Direction::First;
    };
    if digest == source {
        return Direction::InPlace;
    }
    let Some(revision) = revision else {
        return Direction::Unknown {
            why: format!(
                "the image latest names ({digest}) does not say which commit it was built from"
            ),
        };
    };
    if same_sha(revision, sha) {
        return Direction::Forward;
    }
    let revision = revision.to_string();
    match ancestry {
        Some(Ancestry::Ahead) => Direction::Forward,
        Some(Ancestry::Behind) => Direction::Backwards { revision },
        Some(Ancestry::Diverged) => Direction::Diverged { revision },
        None => Direction::Unknown {
            why: format!(
                "this clone does not hold both commits ({} and {})",
                &revision[..revision.len().min(12)],
                &sha[..sha.len().min(12)]
            ),
        },
    }
}

/// One tag write: `tag` goes from `from` (a digest, `None` when the tag
/// does not exist) to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Write {
    pub tag: &'static str,
    pub from: Option<String>,
    pub to: String,
}

/// The writes that move one image: `latest-previous` first, then `latest`,
/// so that a rollback target exists before production moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub image: String,
    pub repository: String,
    pub writes: Vec<Write>,
}

impl Move {
    /// Where `latest` goes.
    pub fn latest(&self) -> Option<&Write> {
        self.writes.iter().find(|w| w.tag == LATEST)
    }

    /// Where `latest-previous` goes, when it moves.
    pub fn previous(&self) -> Option<&Write> {
        self.writes.iter().find(|w| w.tag == LATEST_PREVIOUS)
    }
}

/// The move that promotes `source` (a digest): `None` when `latest`
/// already names it. `latest` and `previous` are what the two tags name now.
pub fn promotion(
    image: &str,
    repository: &str,
    source: &str,
    latest: Option<&str>,
    previous: Option<&str>,
) -> Option<Move> {
    if latest == Some(source) {
        return None;
    }
    let mut writes = Vec::new();
    // A latest-previous that already names what latest names stays.
    if let Some(latest) = latest.filter(|latest| Some(*latest) != previous) {
        writes.push(Write {
            tag: LATEST_PREVIOUS,
            from: previous.map(str::to_string),
            to: latest.to_string(),
        });
    }
    writes.push(Write {
        tag: LATEST,
        from: latest.map(str::to_string),
        to: source.to_string(),
    });
    Some(Move {
        image: image.to_string(),
        repository: repository.to_string(),
        writes,
    })
}

/// The move that rolls `latest` back to `latest-previous`, swapping the
/// two so that a second rollback undoes the first. `None` when they
/// already name the same manifest; an error without a `latest-previous`.
pub fn rollback(
    image: &str,
    repository: &str,
    latest: Option<&str>,
    previous: Option<&str>,
) -> Result<Option<Move>> {
    let Some(previous) = previous else {
        return Err(Error::failed(format!(
            "{repository}:{LATEST_PREVIOUS} does not exist: {image} has no rollback target"
        ))
        .hint(
            "promote a known-good commit instead (`hoist rollback SHA`); \
             `hoist status` lists the staging tags that still exist",
        ));
    };
    if latest == Some(previous) {
        return Ok(None);
    }
    let mut writes = Vec::new();
    if let Some(latest) = latest {
        writes.push(Write {
            tag: LATEST_PREVIOUS,
            from: Some(previous.to_string()),
            to: latest.to_string(),
        });
    }
    writes.push(Write {
        tag: LATEST,
        from: latest.map(str::to_string),
        to: previous.to_string(),
    });
    Ok(Some(Move {
        image: image.to_string(),
        repository: repository.to_string(),
        writes,
    }))
}

/// What puts back the writes done so far, newest first: each tag to the
/// digest it named (`None`: the tag did not exist and must go).
pub fn undo(done: &[(&Move, &Write)]) -> Vec<(String, &'static str, Option<String>)> {
    done.iter()
        .rev()
        .map(|(m, w)| (m.repository.clone(), w.tag, w.from.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const NEWER: &str = "fedcba9876543210fedcba9876543210fedcba98";

    #[test]
    fn shas_are_7_to_40_hex_characters() {
        assert_eq!(parse_sha("0123ABC").unwrap(), "0123abc");
        assert_eq!(parse_sha(SHA).unwrap(), SHA);
        for bad in [
            "012345",
            "0123456z",
            "",
            "staging-0123456",
            &format!("{SHA}0"),
        ] {
            let error = parse_sha(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad}");
        }
        assert_eq!(staging_tag(SHA), "staging-0123456");
        assert!(same_sha("0123456", SHA) && same_sha(SHA, "0123456"));
        assert!(!same_sha("0123457", SHA));
    }

    #[test]
    fn a_staging_image_must_name_the_commit_asked_for() {
        let one = |r: &str| vec![r.to_string()];
        // The label's full sha, against the full sha the clone resolved.
        assert_eq!(
            identify(SHA, &one(SHA)),
            Identity::Confirmed {
                revision: SHA.into()
            }
        );
        // Another commit sharing the 7 characters of the tag.
        let twin = "0123456fffffffffffffffffffffffffffffffff";
        assert_eq!(
            identify(SHA, &one(twin)),
            Identity::Other {
                revision: twin.into()
            }
        );
        assert_eq!(
            identify(SHA, &one(NEWER)),
            Identity::Other {
                revision: NEWER.into()
            }
        );
        // A clone that does not know the commit: only the prefix given.
        assert!(matches!(
            identify("0123456", &one(SHA)),
            Identity::Confirmed { .. }
        ));
        assert!(matches!(
            identify("01234567", &one(twin)),
            Identity::Other { .. }
        ));
        // ECR: the tags on the image; one naming another commit is enough.
        assert_eq!(
            identify(SHA, &one("0123456")),
            Identity::Confirmed {
                revision: "0123456".into()
            }
        );
        assert_eq!(
            identify(SHA, &["0123456".into(), "fedcba9".into()]),
            Identity::Other {
                revision: "fedcba9".into()
            }
        );
        assert_eq!(identify(SHA, &[]), Identity::Untold);
        // A label that is no sha at all names no commit of ours either.
        assert!(matches!(
            identify(SHA, &one("main")),
            Identity::Other { .. }
        ));
    }

    #[test]
    fn promotions_are_judged_by_ancestry() {
        assert_eq!(judge("sha256:s", SHA, None, None), Direction::First);
        assert_eq!(
            judge("sha256:s", SHA, Some(("sha256:s", None)), None),
            Direction::InPlace
        );
        let latest = Some(("sha256:l", Some(NEWER)));
        assert_eq!(
            judge("sha256:s", SHA, latest, Some(Ancestry::Ahead)),
            Direction::Forward
        );
        let behind = judge("sha256:s", SHA, latest, Some(Ancestry::Behind));
        assert_eq!(
            behind,
            Direction::Backwards {
                revision: NEWER.into()
            }
        );
        assert!(behind.needs_allow_older());
        assert!(behind.describe("0123456").contains("fedcba9"));
        assert!(judge("sha256:s", SHA, latest, Some(Ancestry::Diverged)).needs_allow_older());
        let unknown = judge("sha256:s", SHA, latest, None);
        assert!(
            matches!(&unknown, Direction::Unknown { why } if why.contains("fedcba987654")),
            "{unknown:?}"
        );
        // Another build of the same commit (ECR tells a 7-character prefix).
        assert_eq!(
            judge("sha256:s", SHA, Some(("sha256:l", Some("0123456"))), None),
            Direction::Forward
        );
        assert!(matches!(
            judge(
                "sha256:s",
                SHA,
                Some(("sha256:l", None)),
                Some(Ancestry::Ahead)
            ),
            Direction::Unknown { .. }
        ));
        assert!(!Direction::First.needs_allow_older() && !Direction::Forward.needs_allow_older());
    }

    #[test]
    fn a_promotion_keeps_a_rollback_target() {
        assert_eq!(
            promotion("p", "r/p", "sha256:s", Some("sha256:s"), None),
            None
        );
        let first = promotion("p", "r/p", "sha256:s", None, None).unwrap();
        assert_eq!(
            first.writes,
            vec![Write {
                tag: LATEST,
                from: None,
                to: "sha256:s".into()
            }]
        );
        let next = promotion("p", "r/p", "sha256:s", Some("sha256:l"), Some("sha256:o")).unwrap();
        assert_eq!(
            next.writes,
            vec![
                Write {
                    tag: LATEST_PREVIOUS,
                    from: Some("sha256:o".into()),
                    to: "sha256:l".into()
                },
                Write {
                    tag: LATEST,
                    from: Some("sha256:l".into()),
                    to: "sha256:s".into()
                }
            ]
        );
        assert_eq!(next.latest().unwrap().to, "sha256:s");
        assert_eq!(next.previous().unwrap().to, "sha256:l");
        // After a rollback both name the same manifest: latest-previous stays.
        let same = promotion("p", "r/p", "sha256:s", Some("sha256:l"), Some("sha256:l")).unwrap();
        assert_eq!(same.writes.len(), 1);
        assert!(same.previous().is_none());
    }

    #[test]
    fn rollbacks_swap_and_need_a_target() {
        let error = rollback("p", "r/p", Some("sha256:l"), None).unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert!(error.message.contains("r/p:latest-previous"), "{error}");
        assert_eq!(
            rollback("p", "r/p", Some("sha256:l"), Some("sha256:l")).unwrap(),
            None
        );
        let back = rollback("p", "r/p", Some("sha256:l"), Some("sha256:o"))
            .unwrap()
            .unwrap();
        assert_eq!(back.latest().unwrap().to, "sha256:o");
        assert_eq!(back.previous().unwrap().to, "sha256:l");
        // The second rollback, from the state the first left, undoes it.
        let again = rollback("p", "r/p", Some("sha256:o"), Some("sha256:l"))
            .unwrap()
            .unwrap();
        assert_eq!(again.latest().unwrap().to, "sha256:l");
        assert_eq!(again.previous().unwrap().to, "sha256:o");
    }

    #[test]
    fn undo_walks_back_newest_first() {
        let a = promotion("a", "r/a", "sha256:s", Some("sha256:l"), None).unwrap();
        let b = promotion("b", "r/b", "sha256:t", None, None).unwrap();
        let done = vec![(&a, &a.writes[0]), (&a, &a.writes[1]), (&b, &b.writes[0])];
        assert_eq!(
            undo(&done),
            vec![
                ("r/b".to_string(), LATEST, None),
                ("r/a".to_string(), LATEST, Some("sha256:l".to_string())),
                ("r/a".to_string(), LATEST_PREVIOUS, None),
            ]
        );
    }
}
