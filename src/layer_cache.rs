//! What hoist has uploaded from this machine: for each layer (diff id), the
//! blob it became (digest and size). A run that stopped (killed, Ctrl-C,
//! out of attempts) committed blobs that no tag names yet; the next run
//! finds them here, confirms them with a `HEAD` in the repository, and
//! skips them instead of compressing and uploading them again.
//!
//! Any blob whose content gunzips to the layer serves, so the record needs
//! no compression version. It is only a hint: a blob the repository does
//! not hold is uploaded as usual, and a record that cannot be read or
//! written is ignored (the push never fails for it).
//!
//! Where: `HOIST_CACHE_DIR`, else `$XDG_CACHE_HOME/hoist`, else
//! `~/.cache/hoist` (as cargo and pip keep theirs), file `layers.json`:
//! `{"<diff id>": {"digest": "sha256:…", "size": N}}`. Written whole to a
//! temporary file and renamed, so a reader never sees half of it; two runs
//! at once may lose each other's entries, which costs an upload, nothing
//! more.

use crate::push::Descriptor;
use std::collections::HashMap;
use std::path::PathBuf;

/// At most this many layers are remembered; beyond it the record starts
/// again from the current run's.
const MAX_ENTRIES: usize = 10_000;

const FILE: &str = "layers.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    digest: String,
    size: u64,
}

/// The record's place, if this machine has one.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    dir: Option<PathBuf>,
}

impl LayerCache {
    /// The cache dir from `env` (see the module doc); none without a home.
    pub fn locate(env: &dyn Fn(&str) -> Option<String>) -> LayerCache {
        let dir = env("HOIST_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| env("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("hoist")))
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache/hoist")));
        LayerCache { dir }
    }

    /// No record at all (tests, and where no home is known).
    pub fn none() -> LayerCache {
        LayerCache { dir: None }
    }

    /// Every layer recorded, by diff id; empty when there is no record.
    pub fn read(&self) -> HashMap<String, Descriptor> {
        let Some(dir) = &self.dir else {
            return HashMap::new();
        };
        let Ok(text) = std::fs::read(dir.join(FILE)) else {
            return HashMap::new();
        };
        let entries: HashMap<String, Entry> = serde_json::from_slice(&text).unwrap_or_default();
        entries
            .into_iter()
            .filter(|(diff_id, entry)| is_digest(diff_id) && is_digest(&entry.digest))
            .map(|(diff_id, entry)| {
                let descriptor = Descriptor {
                    digest: entry.digest,
                    size: entry.size,
                };
                (diff_id, descriptor)
            })
            .collect()
    }

    /// Adds `layers` (diff id, blob) to the record.
    pub fn record(&self, layers: &[(String, Descriptor)]) {
        let Some(dir) = &self.dir else { return };
        if layers.is_empty() {
            return;
        }
        let mut all = self.read();
        if all.len() + layers.len() > MAX_ENTRIES {
            all.clear();
        }
        all.extend(layers.iter().cloned());
        let entries: HashMap<&String, Entry> = all
            .iter()
            .map(|(diff_id, d)| {
                let entry = Entry {
                    digest: d.digest.clone(),
                    size: d.size,
                };
                (diff_id, entry)
            })
            .collect();
        let Ok(text) = serde_json::to_vec(&entries) else {
            return;
        };
        let temporary = dir.join(format!("{FILE}.{}", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&temporary, text))
            .and_then(|()| std::fs::rename(&temporary, dir.join(FILE)));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
    }
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn records_and_reads_back_layers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let cache = LayerCache::locate(&|name| (name == "HOIST_CACHE_DIR").then(|| path.clone()));
        assert!(cache.read().is_empty());
        let blob = Descriptor {
            digest: digest(2),
            size: 42,
        };
        cache.record(&[(digest(1), blob.clone())]);
        cache.record(&[(digest(3), blob.clone())]);
        let read = cache.read();
        assert_eq!(read.len(), 2);
        assert_eq!(read[&digest(1)], blob);
        // A damaged record is no record, and is replaced on the next write.
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert!(cache.read().is_empty());
        cache.record(&[(digest(4), blob.clone())]);
        assert_eq!(cache.read().len(), 1);
    }

    #[test]
    fn entries_that_are_not_digests_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            format!(
                r#"{{"../x": {{"digest": "{}", "size": 1}}, "{}": {{"digest": "nope", "size": 1}}}}"#,
                digest(1),
                digest(2)
            ),
        )
        .unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let cache = LayerCache::locate(&|name| (name == "HOIST_CACHE_DIR").then(|| path.clone()));
        assert!(cache.read().is_empty());
    }

    #[test]
    fn the_place_follows_the_environment() {
        let locate = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LayerCache::locate(&move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
            .dir
        };
        assert_eq!(
            locate(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]),
            Some(PathBuf::from("/x/hoist"))
        );
        assert_eq!(
            locate(&[("HOME", "/h")]),
            Some(PathBuf::from("/h/.cache/hoist"))
        );
        assert_eq!(
            locate(&[("HOME", "/h"), ("HOIST_CACHE_DIR", "/c")]),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(locate(&[]), None);
        assert!(LayerCache::none().read().is_empty());
    }
}
