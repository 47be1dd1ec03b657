//! The engine's image export (`GET /images/{name}/get`, what `docker save`
//! writes), read as it streams: each layer tar is handed on, once, while
//! the engine sends it; nothing is kept whole in memory or on disk.
//!
//! The export is a tar. Two layouts exist, and both are read:
//! - **Docker's legacy layout** (engines before 25; this machine's 20.10):
//!   `<v1 id>/VERSION`, `<v1 id>/json`, `<v1 id>/layer.tar` per layer, in
//!   lexical order of the v1 ids, then `<image id hex>.json` (the config),
//!   `manifest.json` (`[{"Config", "RepoTags", "Layers": [paths]}]`, the
//!   layer order) and `repositories`. A layer that repeats an earlier one
//!   is a symlink to its `layer.tar`.
//! - **The OCI layout** (engines 25 and later): `blobs/sha256/<hex>`, where
//!   a layer tar is named by its diff id, plus `manifest.json` as above.
//!
//! The layer order arrives last, in `manifest.json`, but a pusher must know
//! which layer a tar is *before* its bytes stream past, to skip one the
//! registry already has. In the OCI layout the path says it. In the legacy
//! layout the v1 id does: the engine derives it as the sha256 of the
//! layer's `json` with `id` removed, `parent` as a full digest and
//! `layer_id` set to the layer's chain id (moby `image/v1/imagev1.go`
//! `CreateID`, called from `image/tarexport/save.go`); the `os` field is
//! added after, except on the top layer. [`identify`] tries each position
//! and accepts only an exact sha256 match, so a guess can never mislabel a
//! layer: a tar it cannot identify is handed on as unknown, and its diff id
//! comes from hashing it.

use crate::error::{Error, Result};
use bytes::Bytes;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

/// What the engine says of an image before its export: enough to
/// identify the export's entries.
#[derive(Debug, Clone)]
pub struct ImageIds {
    /// The image id, `sha256:<hex>`: the config blob's digest.
    pub config: String,
    /// `rootfs.diff_ids`, bottom layer first.
    pub diff_ids: Vec<String>,
}

/// One layer tar of the export, as it streams.
pub struct LayerTar<'a> {
    /// Its path in the export.
    pub path: &'a str,
    /// Its diff id, when the export's names say it before its bytes.
    pub diff_id: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Its bytes; what the visitor leaves unread is skipped.
    pub bytes: &'a mut dyn Read,
}

/// The export, read to its end.
#[derive(Debug, Clone)]
pub struct Export {
    /// The config blob, exact bytes.
    pub config: Bytes,
    /// The layer paths in image order (bottom first), each resolved to the
    /// path whose bytes were handed on (a repeated layer is a link to the
    /// first).
    pub layers: Vec<String>,
}

/// Reads an export from `tar`, calling `visit` for each layer tar as it
/// comes. Errors: a tar that is not an export of `image` (no manifest, no
/// config, a layer count other than the config's), or the visitor's.
pub fn read(
    tar: &mut dyn Read,
    image: &ImageIds,
    visit: &mut dyn FnMut(LayerTar<'_>) -> Result<()>,
) -> Result<Export> {
    let bad = |why: String| {
        Error::failed(format!(
            "the engine's export of image {} is not what hoist expects",
            short(&image.config)
        ))
        .caused_by(why)
        .hint(
            "push with the engine instead: `push.via: engine` in hoist.yaml (or --push-via engine)",
        )
    };
    let chains = chain_ids(&image.diff_ids);
    let config_hex = image.config.trim_start_matches("sha256:");
    let mut identified: HashMap<String, String> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut config = None;
    let mut manifest = None;
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("cannot read it as a tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("cannot read it as a tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry with an unreadable name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                links.insert(path.clone(), resolve_link(&path, &target.to_string_lossy()));
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let blob_hex = path.strip_prefix("blobs/sha256/");
        if path == "manifest.json" {
            manifest = Some(read_small(&mut entry, &path).map_err(|e| bad(e.to_string()))?);
        } else if path == format!("{config_hex}.json") || blob_hex == Some(config_hex) {
            config = Some(read_small(&mut entry, &path).map_err(|e| bad(e.to_string()))?);
        } else if let Some(dir) = path.strip_suffix("/json") {
            let json = read_small(&mut entry, &path).map_err(|e| bad(e.to_string()))?;
            if let Some(position) = identify(dir, &json, &chains) {
                identified.insert(dir.to_string(), image.diff_ids[position].clone());
            }
        } else if let Some(dir) = path.strip_suffix("/layer.tar") {
            let diff_id = identified.get(dir).cloned();
            visit(LayerTar {
                path: &path,
                diff_id,
                size,
                bytes: &mut entry,
            })?;
        } else if let Some(hex) = blob_hex {
            let digest = format!("sha256:{hex}");
            if image.diff_ids.contains(&digest) {
                visit(LayerTar {
                    path: &path,
                    diff_id: Some(digest),
                    size,
                    bytes: &mut entry,
                })?;
            }
        }
    }
    let manifest = manifest.ok_or_else(|| bad("it has no manifest.json".to_string()))?;
    let config = config.ok_or_else(|| bad(format!("it has no config {}", image.config)))?;
    let layers = layer_paths(&manifest).map_err(bad)?;
    if layers.len() != image.diff_ids.len() {
        return Err(bad(format!(
            "its manifest.json lists {} layers, the image has {}",
            layers.len(),
            image.diff_ids.len()
        )));
    }
    let layers = layers
        .into_iter()
        .map(|path| {
            let mut path = path;
            // Links to links are legal; a loop is not followed forever.
            for _ in 0..8 {
                match links.get(&path) {
                    Some(target) => path = target.clone(),
                    None => break,
                }
            }
            path
        })
        .collect();
    Ok(Export { config, layers })
}

/// `manifest.json`'s layer paths, in order.
fn layer_paths(manifest: &[u8]) -> std::result::Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(rename = "Layers")]
        layers: Vec<String>,
    }
    let items: Vec<Item> = serde_json::from_slice(manifest)
        .map_err(|e| format!("its manifest.json is not the expected list: {e}"))?;
    match <[Item; 1]>::try_from(items) {
        Ok([item]) => Ok(item.layers),
        Err(items) => Err(format!(
            "its manifest.json lists {} images, not one",
            items.len()
        )),
    }
}

/// A link's target as a path from the export's root (`../a/layer.tar`
/// from `b/layer.tar` is `a/layer.tar`).
fn resolve_link(path: &str, target: &str) -> String {
    if target.starts_with('/') {
        return target.trim_start_matches('/').to_string();
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// Small entries only: a JSON file of the export is kilobytes.
fn read_small(entry: &mut dyn Read, path: &str) -> io::Result<Bytes> {
    const LIMIT: u64 = 16 << 20;
    let mut bytes = Vec::new();
    entry.take(LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > LIMIT {
        return Err(io::Error::other(format!(
            "{path} is larger than {} MiB",
            LIMIT >> 20
        )));
    }
    Ok(Bytes::from(bytes))
}

/// The chain id of each layer position: the first diff id, then
/// `sha256(chain + " " + diff id)` (the OCI image spec's ChainID).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let chain = match chains.last() {
            None => diff_id.clone(),
            Some(parent) => crate::registry::digest_of(format!("{parent} {diff_id}").as_bytes()),
        };
        chains.push(chain);
    }
    chains
}

/// The layer position whose v1 id is `dir`, given the layer's legacy
/// `json` and every position's chain id; `None` when no position gives
/// exactly that id.
pub fn identify(dir: &str, json: &[u8], chains: &[String]) -> Option<usize> {
    let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(json).ok()?;
    fields.remove("id");
    let parent = match fields.get("parent") {
        Some(raw) => {
            let hex: String = serde_json::from_str(raw.get()).ok()?;
            Some(format!("sha256:{}", hex.trim_start_matches("sha256:")))
        }
        None => None,
    };
    if let Some(parent) = &parent {
        fields.insert("parent".to_string(), raw_string(parent)?);
    }
    let without_os = {
        let mut fields = fields.clone();
        fields.remove("os");
        fields
    };
    for (position, chain) in chains.iter().enumerate() {
        // The bottom layer has no parent, every other one has.
        if (position == 0) == parent.is_some() {
            continue;
        }
        for candidate in [&without_os, &fields] {
            let mut candidate = candidate.clone();
            candidate.insert("layer_id".to_string(), raw_string(chain)?);
            if sha256_hex(&go_map_json(&candidate)) == dir {
                return Some(position);
            }
        }
    }
    None
}

fn raw_string(text: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(serde_json::to_string(text).ok()?).ok()
}

/// A map as Go's `json.Marshal` writes a `map[string]*json.RawMessage`:
/// keys sorted, values as they were, no spaces.
fn go_map_json(fields: &BTreeMap<String, Box<RawValue>>) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(key, value)| {
            format!(
                "{}:{}",
                serde_json::to_string(key).unwrap_or_default(),
                value.get()
            )
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three layers as engine 20.10 saved them (`docker save` of a
    /// FROM-scratch image with three COPY steps, on this machine).
    const DIFF_IDS: [&str; 3] = [
        "sha256:2d0b1eaf7336fa1de350cd1fcea61a14807c4171f7ceaa00fec4c326c675c2a7",
        "sha256:3be276417879ec9e15a89d2393f9e5c394132a16153947184b42cdb85bbe7268",
        "sha256:b5c85a5cf1a8b6162fbe6f0cd36db87b0e201cce885989d6267a46fc3b071757",
    ];
    const CONTAINER_CONFIG: &str = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null}"#;

    fn saved() -> Vec<(&'static str, String)> {
        let c = CONTAINER_CONFIG;
        vec![
            (
                "79ddc6961aa571dd89b8b362c01d3b40369b86f57acac0a9696b6a65d18c5a77",
                format!(
                    r#"{{"id":"79ddc6961aa571dd89b8b362c01d3b40369b86f57acac0a9696b6a65d18c5a77","created":"1970-01-01T00:00:00Z","container_config":{c},"os":"linux"}}"#
                ),
            ),
            (
                "3d73e2dad7f16c3e61b7bb5367fece9abf9ad29d5a333c438d3fa239943cb8ee",
                format!(
                    r#"{{"id":"3d73e2dad7f16c3e61b7bb5367fece9abf9ad29d5a333c438d3fa239943cb8ee","parent":"79ddc6961aa571dd89b8b362c01d3b40369b86f57acac0a9696b6a65d18c5a77","created":"1970-01-01T00:00:00Z","container_config":{c},"os":"linux"}}"#
                ),
            ),
            (
                "c54cae55aeae157704c7bd6cb893c52a4e7287cfb3f0d8080dba8ab91bd20bd1",
                format!(
                    r#"{{"id":"c54cae55aeae157704c7bd6cb893c52a4e7287cfb3f0d8080dba8ab91bd20bd1","parent":"3d73e2dad7f16c3e61b7bb5367fece9abf9ad29d5a333c438d3fa239943cb8ee","created":"2026-11-30T10:44:33.856076001Z","container_config":{c},"config":{{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"/","Entrypoint":null,"OnBuild":null,"Labels":null}},"architecture":"amd64","os":"linux"}}"#
                ),
            ),
        ]
    }

    #[test]
    fn v1_ids_give_each_layer_its_position() {
        let diff_ids: Vec<String> = DIFF_IDS.iter().map(|d| d.to_string()).collect();
        let chains = chain_ids(&diff_ids);
        for (position, (dir, json)) in saved().iter().enumerate() {
            assert_eq!(identify(dir, json.as_bytes(), &chains), Some(position));
        }
        // Another image's chain ids match nothing: unknown, never a guess.
        let other = chain_ids(&[
            diff_ids[1].clone(),
            diff_ids[0].clone(),
            diff_ids[2].clone(),
        ]);
        for (dir, json) in saved() {
            assert_eq!(identify(dir, json.as_bytes(), &other), None);
        }
        assert_eq!(identify("x", b"not json", &chains), None);
    }

    fn tar_of(entries: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, link, bytes) in entries {
            let mut header = tar::Header::new_ustar();
            match link {
                Some(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    header.set_mode(0o777);
                    builder.append_link(&mut header, path, target).unwrap();
                }
                None => {
                    header.set_size(bytes.len() as u64);
                    header.set_mode(0o644);
                    builder.append_data(&mut header, path, *bytes).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_legacy_export_hands_on_each_layer_with_its_identity() {
        let diff_ids: Vec<String> = DIFF_IDS.iter().map(|d| d.to_string()).collect();
        let saved = saved();
        let config_hex = "3bca5357adc13b307f68f0943ce87368d4928f42e4b75d6640a2d07974314e7b";
        let manifest = format!(
            r#"[{{"Config":"{config_hex}.json","RepoTags":["x:y"],"Layers":["{}/layer.tar","{}/layer.tar","{}/layer.tar"]}}]"#,
            saved[0].0, saved[1].0, saved[2].0
        );
        let (j0, j1, j2) = (
            saved[0].1.as_bytes(),
            saved[1].1.as_bytes(),
            saved[2].1.as_bytes(),
        );
        let l0 = format!("{}/layer.tar", saved[0].0);
        let l1 = format!("{}/json", saved[1].0);
        let l1t = format!("{}/layer.tar", saved[1].0);
        let l2 = format!("{}/json", saved[2].0);
        let l2t = format!("{}/layer.tar", saved[2].0);
        let j0p = format!("{}/json", saved[0].0);
        let link = format!("../{}/layer.tar", saved[0].0);
        // Lexical order, as the engine writes it; the third layer repeats
        // the first as a link.
        let tar = tar_of(&[
            (&format!("{config_hex}.json"), None, b"{\"config\":1}"),
            (&l1, None, j1),
            (&l1t, None, b"layer one"),
            (&j0p, None, j0),
            (&l0, None, b"layer zero"),
            (&l2, None, j2),
            (&l2t, Some(&link), b""),
            ("manifest.json", None, manifest.as_bytes()),
        ]);
        let image = ImageIds {
            config: format!("sha256:{config_hex}"),
            diff_ids,
        };
        let mut seen = Vec::new();
        let export = read(&mut &tar[..], &image, &mut |layer| {
            let mut bytes = String::new();
            layer.bytes.read_to_string(&mut bytes).unwrap();
            seen.push((layer.path.to_string(), layer.diff_id, bytes));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (
                    l1t.clone(),
                    Some(DIFF_IDS[1].to_string()),
                    "layer one".to_string()
                ),
                (
                    l0.clone(),
                    Some(DIFF_IDS[0].to_string()),
                    "layer zero".to_string()
                ),
            ]
        );
        assert_eq!(&export.config[..], b"{\"config\":1}");
        assert_eq!(export.layers, vec![l0.clone(), l1t, l0]);
    }

    #[test]
    fn an_oci_export_names_layers_by_diff_id() {
        let tar = tar_of(&[
            ("blobs/sha256/aaaa", None, b"{\"config\":2}"),
            ("blobs/sha256/bbbb", None, b"layer b"),
            ("blobs/sha256/cccc", None, b"{\"a manifest\":1}"),
            ("index.json", None, b"{}"),
            (
                "manifest.json",
                None,
                br#"[{"Config":"blobs/sha256/aaaa","Layers":["blobs/sha256/bbbb"]}]"#,
            ),
        ]);
        let image = ImageIds {
            config: "sha256:aaaa".to_string(),
            diff_ids: vec!["sha256:bbbb".to_string()],
        };
        let mut seen = Vec::new();
        let export = read(&mut &tar[..], &image, &mut |layer| {
            seen.push((layer.path.to_string(), layer.diff_id, layer.size));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(
                "blobs/sha256/bbbb".to_string(),
                Some("sha256:bbbb".to_string()),
                7
            )]
        );
        assert_eq!(export.layers, vec!["blobs/sha256/bbbb".to_string()]);
    }

    #[test]
    fn a_tar_that_is_not_an_export_of_the_image_is_refused() {
        let image = ImageIds {
            config: "sha256:aaaa".to_string(),
            diff_ids: vec!["sha256:bbbb".to_string()],
        };
        let no_manifest = tar_of(&[("blobs/sha256/aaaa", None, b"{}")]);
        let error = read(&mut &no_manifest[..], &image, &mut |_| Ok(())).unwrap_err();
        assert!(error.to_string().contains("no manifest.json"), "{error}");
        let wrong_count = tar_of(&[
            ("blobs/sha256/aaaa", None, b"{}"),
            ("manifest.json", None, br#"[{"Config":"x","Layers":[]}]"#),
        ]);
        let error = read(&mut &wrong_count[..], &image, &mut |_| Ok(())).unwrap_err();
        assert!(error.to_string().contains("lists 0 layers"), "{error}");
    }
}
