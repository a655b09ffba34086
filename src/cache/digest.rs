//! blake3 digests with a phantom kind, so a stage key, an output digest and a content digest
//! cannot be swapped by mistake; serialised as lowercase hex.

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a digest is of.
pub trait DigestKind {}

/// Content of a file, or of a folder listing.
#[derive(Debug)]
pub enum Content {}
/// A stage key (the digest of its key components).
#[derive(Debug)]
pub enum Key {}
/// The outputs of one committed stage run (digest of its file list).
#[derive(Debug)]
pub enum Output {}

impl DigestKind for Content {}
impl DigestKind for Key {}
impl DigestKind for Output {}

/// A blake3 digest of kind `K`.
pub struct Digest<K: DigestKind> {
    hash: blake3::Hash,
    _kind: PhantomData<fn() -> K>,
}

/// Digest of file or folder content.
pub type ContentDigest = Digest<Content>;
/// A stage key.
pub type StageKey = Digest<Key>;
/// Digest of a stage run's outputs.
pub type OutputDigest = Digest<Output>;

impl<K: DigestKind> Digest<K> {
    /// Wraps a blake3 hash.
    #[must_use]
    pub fn from_hash(hash: blake3::Hash) -> Self {
        Digest {
            hash,
            _kind: PhantomData,
        }
    }

    /// Digest of a byte string.
    #[must_use]
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_hash(blake3::hash(bytes))
    }

    /// Digest of a value's JSON serialisation. Only for types made of sorted maps and
    /// sequences (never `Debug` output, never hash maps).
    ///
    /// # Panics
    /// Never for such types: serde_json only fails on maps with non-string keys.
    #[must_use]
    pub fn of_json<T: Serialize>(value: &T) -> Self {
        let bytes = serde_json::to_vec(value).expect("key structs serialise to JSON");
        Self::of_bytes(&bytes)
    }

    /// Parses 64 hex characters.
    #[must_use]
    pub fn from_hex(hex: &str) -> Option<Self> {
        blake3::Hash::from_hex(hex).ok().map(Self::from_hash)
    }

    /// Lowercase hex.
    #[must_use]
    pub fn to_hex(&self) -> String {
        self.hash.to_hex().to_string()
    }

    /// The first 12 hex characters, for display.
    #[must_use]
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_owned()
    }

    /// The raw 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.hash.as_bytes()
    }

    /// The same bytes as another kind (for the one place where a content digest *is* the
    /// identity of something else, e.g. a folder listing stored as an object).
    #[must_use]
    pub fn cast<L: DigestKind>(&self) -> Digest<L> {
        Digest::from_hash(self.hash)
    }
}

impl<K: DigestKind> Clone for Digest<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: DigestKind> Copy for Digest<K> {}
impl<K: DigestKind> PartialEq for Digest<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}
impl<K: DigestKind> Eq for Digest<K> {}
impl<K: DigestKind> std::hash::Hash for Digest<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.hash.as_bytes().hash(state);
    }
}
impl<K: DigestKind> PartialOrd for Digest<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: DigestKind> Ord for Digest<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash.as_bytes().cmp(other.hash.as_bytes())
    }
}
impl<K: DigestKind> fmt::Display for Digest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl<K: DigestKind> fmt::Debug for Digest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}
impl<K: DigestKind> Serialize for Digest<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.hash.to_hex().as_str())
    }
}
impl<'de, K: DigestKind> Deserialize<'de> for Digest<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor, so the hex is read in place (folder listings hold one digest per file).
        struct Hex<K>(PhantomData<fn() -> K>);
        impl<K: DigestKind> serde::de::Visitor<'_> for Hex<K> {
            type Value = Digest<K>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 hex characters")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Digest::from_hex(s).ok_or_else(|| E::custom(format!("invalid digest `{s}`")))
            }
        }
        d.deserialize_str(Hex(PhantomData))
    }
}

/// Files larger than this are hashed with memory mapping and blake3's own thread pool.
const MMAP_THRESHOLD: u64 = 16 * 1024 * 1024;

/// blake3 of a file's content.
///
/// # Errors
/// The I/O error reading it.
pub fn hash_file(path: &Path, size: u64) -> std::io::Result<ContentDigest> {
    let mut hasher = blake3::Hasher::new();
    if size >= MMAP_THRESHOLD {
        hasher.update_mmap_rayon(path)?;
    } else {
        let mut f = std::fs::File::open(path)?;
        hasher.update_reader(&mut f)?;
    }
    Ok(Digest::from_hash(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_serde() {
        let d = ContentDigest::of_bytes(b"abc");
        assert_eq!(ContentDigest::from_hex(&d.to_hex()), Some(d));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.to_hex()));
        let back: ContentDigest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert_eq!(d.short().len(), 12);
    }

    #[test]
    fn files_hash_like_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(hash_file(&p, 5).unwrap(), ContentDigest::of_bytes(b"hello"));
    }
}
