//! Stage keys: the [`KeyComponents`] struct (sorted maps only, serialised to JSON and hashed
//! with blake3; never `Debug`), and the exact reasons two component sets differ, which `status`
//! and `run --dry-run` print (docs/cache.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache::{ContentDigest, Listing, OutputDigest, StageKey, TreeKind};
use crate::spec::{canonical, display_value};

/// A dep's content as recorded in a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepRecord {
    /// File or folder.
    pub kind: TreeKind,
    /// File digest, or digest of the folder's listing (stored as an object, so reasons can
    /// name the files that changed).
    pub digest: ContentDigest,
    /// Number of files.
    pub files: u64,
}

/// The config section a key includes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// Alias in `configs:`.
    pub alias: String,
    /// Section (the stage's kind).
    pub section: String,
    /// blake3 of the section's canonical JSON.
    pub digest: String,
}

/// Everything a stage key is computed from. Changing any field changes the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyComponents {
    /// Stage kind.
    pub kind: String,
    /// The kind's implementation version.
    pub version: u32,
    /// Effective params (canonical JSON).
    pub params: BTreeMap<String, Value>,
    /// `cmd` (command stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// `outs` as written (command stages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outs: Vec<String>,
    /// Dep contents by name.
    pub deps: BTreeMap<String, DepRecord>,
    /// Config section used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigRecord>,
    /// Output digest of each upstream stage, by name (early cutoff).
    pub upstream: BTreeMap<String, OutputDigest>,
    /// Declared tool and model identities.
    pub identities: BTreeMap<String, String>,
}

impl KeyComponents {
    /// The stage key: blake3 over the canonical JSON of the components.
    #[must_use]
    pub fn key(&self) -> StageKey {
        let mut c = self.clone();
        c.params = c
            .params
            .iter()
            .map(|(k, v)| (k.clone(), canonical(v)))
            .collect();
        StageKey::of_json(&c)
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// Folder listings available for naming changed files: the recorded one is read from the
/// cache, the current one comes from hashing.
pub trait Listings {
    /// The listing stored under `digest`, if available.
    fn listing(&self, digest: &ContentDigest) -> Option<Arc<Listing>>;
}

/// How many changed files of one folder dep are named before "and N more".
const MAX_FILES_NAMED: usize = 10;

/// Exact reasons `new` differs from `old` (empty when equal). `upstream` is compared only
/// when `with_upstream` (it is unknown while an upstream stage is stale).
#[must_use]
pub fn diff(
    old: &KeyComponents,
    new: &KeyComponents,
    listings: &dyn Listings,
    with_upstream: bool,
) -> Vec<String> {
    let mut r = Vec::new();
    if old.kind != new.kind {
        r.push(format!("kind {} -> {}", old.kind, new.kind));
    } else if old.version != new.version {
        r.push(format!("version {} -> {}", old.version, new.version));
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    for (k, v) in &old.params {
        flatten(&format!("params.{k}"), v, &mut a);
    }
    for (k, v) in &new.params {
        flatten(&format!("params.{k}"), v, &mut b);
    }
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x != y => {
                r.push(format!("{k}: {} -> {}", display_value(x), display_value(y)))
            }
            (None, Some(y)) => r.push(format!("{k}: added ({})", display_value(y))),
            (Some(x), None) => r.push(format!("{k}: removed (was {})", display_value(x))),
            _ => {}
        }
    }
    match (&old.config, &new.config) {
        (Some(x), Some(y)) if x.alias != y.alias => {
            r.push(format!("config {} -> {}", x.alias, y.alias))
        }
        (Some(x), Some(y)) if x.digest != y.digest => {
            r.push(format!("config {} section {} changed", y.alias, y.section))
        }
        (None, Some(y)) => r.push(format!("config {} section {} added", y.alias, y.section)),
        (Some(x), None) => r.push(format!("config {} section {} removed", x.alias, x.section)),
        _ => {}
    }
    if old.cmd != new.cmd {
        r.push("cmd changed".to_owned());
    }
    if old.outs != new.outs {
        r.push(format!(
            "outs changed: [{}] -> [{}]",
            old.outs.join(", "),
            new.outs.join(", ")
        ));
    }
    let deps: BTreeSet<&String> = old.deps.keys().chain(new.deps.keys()).collect();
    for d in deps {
        match (old.deps.get(d), new.deps.get(d)) {
            (None, Some(_)) => r.push(format!("dep `{d}` added")),
            (Some(_), None) => r.push(format!("dep `{d}` removed")),
            (Some(x), Some(y)) if x.digest != y.digest => r.extend(dep_reasons(d, x, y, listings)),
            _ => {}
        }
    }
    if with_upstream {
        let ups: BTreeSet<&String> = old.upstream.keys().chain(new.upstream.keys()).collect();
        for u in ups {
            match (old.upstream.get(u), new.upstream.get(u)) {
                (None, Some(_)) => r.push(format!("upstream `{u}` added")),
                (Some(_), None) => r.push(format!("upstream `{u}` removed")),
                (Some(x), Some(y)) if x != y => r.push(format!("upstream `{u}` output changed")),
                _ => {}
            }
        }
    }
    let ids: BTreeSet<&String> = old.identities.keys().chain(new.identities.keys()).collect();
    for i in ids {
        match (old.identities.get(i), new.identities.get(i)) {
            (None, Some(_)) => r.push(format!("identity `{i}` added")),
            (Some(_), None) => r.push(format!("identity `{i}` removed")),
            (Some(x), Some(y)) if x != y => r.push(format!("identity `{i}` changed")),
            _ => {}
        }
    }
    r
}

fn dep_reasons(
    name: &str,
    old: &DepRecord,
    new: &DepRecord,
    listings: &dyn Listings,
) -> Vec<String> {
    if old.kind == TreeKind::File || new.kind == TreeKind::File {
        return vec![format!("dep file `{name}` modified")];
    }
    let (Some(a), Some(b)) = (listings.listing(&old.digest), listings.listing(&new.digest)) else {
        return vec![format!(
            "dep `{name}` changed ({} -> {} files)",
            old.files, new.files
        )];
    };
    // Both listings are sorted: one merge pass names every change.
    let mut changes = Vec::new();
    let dir = name.trim_end_matches('/');
    let (mut ai, mut bi) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let (what, file) = match (ai.peek().copied(), bi.peek().copied()) {
            (None, None) => break,
            (Some((fa, _)), None) => {
                ai.next();
                ("removed", fa)
            }
            (None, Some((fb, _))) => {
                bi.next();
                ("added", fb)
            }
            (Some((fa, da)), Some((fb, db))) => match fa.cmp(fb) {
                std::cmp::Ordering::Less => {
                    ai.next();
                    ("removed", fa)
                }
                std::cmp::Ordering::Greater => {
                    bi.next();
                    ("added", fb)
                }
                std::cmp::Ordering::Equal => {
                    ai.next();
                    bi.next();
                    if da == db {
                        continue;
                    }
                    ("modified", fa)
                }
            },
        };
        changes.push(format!("dep file `{dir}/{file}` {what}"));
    }
    if changes.len() > MAX_FILES_NAMED {
        let more = changes.len() - MAX_FILES_NAMED;
        changes.truncate(MAX_FILES_NAMED);
        changes.push(format!("dep `{name}`: and {more} more changed files"));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    struct Map(BTreeMap<ContentDigest, Arc<Listing>>);
    impl Listings for Map {
        fn listing(&self, d: &ContentDigest) -> Option<Arc<Listing>> {
            self.0.get(d).cloned()
        }
    }

    fn base() -> KeyComponents {
        KeyComponents {
            kind: "train_aasist".into(),
            version: 2,
            params: [
                ("lr".to_owned(), json!(5e-6)),
                ("opt".to_owned(), json!({"beta": 0.9})),
            ]
            .into_iter()
            .collect(),
            cmd: None,
            outs: vec![],
            deps: BTreeMap::new(),
            config: Some(ConfigRecord {
                alias: "model".into(),
                section: "train_aasist".into(),
                digest: "a".into(),
            }),
            upstream: [("meta".to_owned(), OutputDigest::of_bytes(b"m"))]
                .into_iter()
                .collect(),
            identities: [("ssl_checkpoint".to_owned(), "x".to_owned())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn every_kind_of_change_has_its_reason() {
        let old = base();
        let mut new = base();
        new.version = 3;
        new.params.insert("lr".into(), json!(1e-5));
        new.params
            .insert("opt".into(), json!({"beta": 0.9, "eps": 1e-8}));
        new.config.as_mut().unwrap().digest = "b".into();
        new.upstream
            .insert("meta".into(), OutputDigest::of_bytes(b"other"));
        new.identities.insert("ssl_checkpoint".into(), "y".into());
        let reasons = diff(&old, &new, &Map(BTreeMap::new()), true);
        assert_eq!(
            reasons,
            [
                "version 2 -> 3",
                "params.lr: 5e-6 -> 1e-5",
                "params.opt.eps: added (1e-8)",
                "config model section train_aasist changed",
                "upstream `meta` output changed",
                "identity `ssl_checkpoint` changed",
            ]
        );
        assert!(
            diff(&old, &new, &Map(BTreeMap::new()), false)
                .iter()
                .all(|r| !r.starts_with("upstream"))
        );
        assert!(diff(&old, &old, &Map(BTreeMap::new()), true).is_empty());
    }

    #[test]
    fn folder_deps_name_the_files_that_changed() {
        let l1: Listing = [
            ("a.flac".to_owned(), ContentDigest::of_bytes(b"1")),
            ("b.flac".to_owned(), ContentDigest::of_bytes(b"2")),
        ]
        .into_iter()
        .collect();
        let l2: Listing = [
            ("a.flac".to_owned(), ContentDigest::of_bytes(b"1x")),
            ("c.flac".to_owned(), ContentDigest::of_bytes(b"3")),
        ]
        .into_iter()
        .collect();
        let (d1, d2) = (
            ContentDigest::of_bytes(b"l1"),
            ContentDigest::of_bytes(b"l2"),
        );
        let mut old = base();
        old.deps.insert(
            "corpus".into(),
            DepRecord {
                kind: TreeKind::Dir,
                digest: d1,
                files: 2,
            },
        );
        let mut new = base();
        new.deps.insert(
            "corpus".into(),
            DepRecord {
                kind: TreeKind::Dir,
                digest: d2,
                files: 2,
            },
        );
        let listings = Map([(d1, Arc::new(l1)), (d2, Arc::new(l2))]
            .into_iter()
            .collect());
        assert_eq!(
            diff(&old, &new, &listings, true),
            [
                "dep file `corpus/a.flac` modified",
                "dep file `corpus/b.flac` removed",
                "dep file `corpus/c.flac` added"
            ]
        );
        assert_eq!(
            diff(&old, &new, &Map(BTreeMap::new()), true),
            ["dep `corpus` changed (2 -> 2 files)"]
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from)
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop::collection::vec(("[a-e]{1,2}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect()))
        })
    }

    proptest! {
        #[test]
        fn key_does_not_depend_on_map_insertion_order(entries in prop::collection::vec(("[a-f]{1,3}", json_value()), 0..6)) {
            let mut dedup = BTreeMap::new();
            for (k, v) in entries { dedup.insert(k, v); }
            let forward: Vec<(String, Value)> = dedup.into_iter().collect();
            let mut backward = forward.clone();
            backward.reverse();
            let make = |pairs: &[(String, Value)]| {
                let mut c = base();
                // Rebuild nested objects in the given order too.
                c.params = BTreeMap::new();
                for (k, v) in pairs {
                    c.params.insert(k.clone(), reorder(v));
                }
                c.key()
            };
            prop_assert_eq!(make(&forward), make(&backward));
        }
    }

    fn reorder(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
                pairs.reverse();
                let mut out = serde_json::Map::new();
                for (k, v) in pairs {
                    out.insert(k.clone(), reorder(v));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    #[test]
    fn any_component_changes_the_key() {
        let k = base().key();
        let mut c = base();
        c.cmd = Some("x".into());
        assert_ne!(c.key(), k);
        let mut c = base();
        c.upstream.clear();
        assert_ne!(c.key(), k);
        assert_eq!(base().key(), k);
    }
}
