//! Evaluation keys that survive restarts: a content-addressed store.
//!
//! A client uploads its evaluation keys once; the server keeps them under
//! their **key id**, the SHA-256 of their bytes, so an upload is idempotent
//! and a client can ask whether it must upload at all. [`KeyStore`] is the
//! interface; [`FileStore`] keeps each key in a file of its own
//! (`DIR/keys/<key id>`) and a small embedded index (`DIR/index.redb`: model,
//! parameter hash, size, created, last used).
//!
//! An upload is streamed: written to a temporary file while hashed and
//! counted, refused as soon as it passes its size limit, refused when its
//! hash is not the key id it claims, and only then synced and renamed into
//! place and indexed, so the bytes are never held in memory and a crash
//! leaves either the whole key or nothing. Opening a store finishes what a
//! crash interrupted: temporary files are removed, a key file without an
//! index entry (the crash came between rename and index) is removed, an
//! index entry without a file is dropped.
//!
//! ```
//! use cml_serve::store::{FileStore, KeyId, KeyStore, NewKey, Stored};
//!
//! let dir = std::env::temp_dir().join(format!("cml-store-doc-{}", std::process::id()));
//! let store = FileStore::open(&dir).unwrap();
//! let bytes = b"evaluation keys".to_vec();
//! let id = KeyId::of(&bytes);
//! let new = NewKey { model: "iris_tree", params_hash: "p1", limit: 1 << 20 };
//! assert_eq!(store.put(&id, &new, &mut &bytes[..]).unwrap(), Stored::Created);
//! assert_eq!(store.put(&id, &new, &mut &bytes[..]).unwrap(), Stored::Existing);
//! drop(store);
//!
//! // A restart keeps it.
//! let store = FileStore::open(&dir).unwrap();
//! let (meta, mut file) = store.get(&id).unwrap().unwrap();
//! assert_eq!((meta.model.as_str(), meta.size), ("iris_tree", 15));
//! let mut back = Vec::new();
//! std::io::Read::read_to_end(&mut file, &mut back).unwrap();
//! assert_eq!(back, bytes);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The index: key id → [`KeyMeta`] as JSON.
const INDEX: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");

/// A key id: the SHA-256 of a key's bytes, as 64 lowercase hex digits
/// (which is also its file name, so nothing else is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex(&Sha256::digest(bytes)))
    }

    /// Parses an id given by a client (a URL path segment, a header).
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(text.to_owned()))
        } else {
            Err(StoreError::BadKeyId(text.chars().take(80).collect()))
        }
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for KeyId {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        Self::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

/// What the index holds about a stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// Its id.
    pub key_id: KeyId,
    /// The model it was uploaded for.
    pub model: String,
    /// A hash of the parameters it was made for (the server's model hash).
    pub params_hash: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was stored, seconds since the Unix epoch.
    pub created: u64,
    /// When it was last read, seconds since the Unix epoch.
    pub last_used: u64,
}

/// What an upload is for, and how large it may be.
#[derive(Debug, Clone, Copy)]
pub struct NewKey<'a> {
    /// The model it is for.
    pub model: &'a str,
    /// Hash of the parameters it must have been made for.
    pub params_hash: &'a str,
    /// The most bytes it may have (derived from the model's parameters,
    /// never from the sender).
    pub limit: u64,
}

/// The outcome of a successful [`KeyStore::put`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The key is new.
    Created,
    /// The key was already stored (uploads are idempotent).
    Existing,
}

/// Why a key store refused or failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Not 64 lowercase hex digits.
    #[error("`{0}` is not a key id (64 lowercase hex digits of SHA-256)")]
    BadKeyId(String),
    /// The upload passed its size limit (reading stopped there).
    #[error("the key is larger than the {limit} bytes its model's parameters allow")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The bytes do not hash to the id they were sent under.
    #[error("the key's bytes hash to {actual}, not to the key id {claimed}")]
    HashMismatch {
        /// The id it was sent under.
        claimed: KeyId,
        /// The hash of what arrived.
        actual: KeyId,
    },
    /// The key is stored for another model.
    #[error("key {key_id} is stored for model `{stored}`, not `{asked}`")]
    OtherModel {
        /// The key.
        key_id: KeyId,
        /// The model it is stored for.
        stored: String,
        /// The model asked for.
        asked: String,
    },
    /// The upload's body could not be read to its end (the client went
    /// away, or sent less than it announced).
    #[error("the upload stopped before its end: {0}")]
    Upload(std::io::Error),
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The index failed.
    #[error("key index: {0}")]
    Index(String),
}

/// A store of evaluation keys by content hash.
pub trait KeyStore: Send + Sync {
    /// Streams a key from `body` into the store under `key_id`, refusing it
    /// past `new.limit` bytes or when its hash is not `key_id`; storing a
    /// key already there changes nothing.
    fn put(
        &self,
        key_id: &KeyId,
        new: &NewKey<'_>,
        body: &mut dyn Read,
    ) -> Result<Stored, StoreError>;

    /// What the index holds about a key, if it is stored.
    fn meta(&self, key_id: &KeyId) -> Result<Option<KeyMeta>, StoreError>;

    /// A stored key's index entry and its bytes (marking it used).
    fn get(&self, key_id: &KeyId) -> Result<Option<(KeyMeta, File)>, StoreError>;

    /// Removes a key; false when it was not stored.
    fn remove(&self, key_id: &KeyId) -> Result<bool, StoreError>;

    /// Every stored key's index entry, by key id.
    fn list(&self) -> Result<Vec<KeyMeta>, StoreError>;
}

/// Keys as files under `DIR/keys/`, indexed in `DIR/index.redb`.
pub struct FileStore {
    dir: PathBuf,
    db: Database,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).finish()
    }
}

static UPLOADS: AtomicU64 = AtomicU64::new(0);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn index_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Index(e.to_string())
}

impl FileStore {
    /// Opens (creating it when missing) the store in `dir`, and finishes
    /// what a crash interrupted (see the module docs).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        for sub in ["keys", "tmp"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|source| StoreError::Io { path, source })?;
        }
        let db = Database::create(dir.join("index.redb")).map_err(index_error)?;
        let tx = db.begin_write().map_err(index_error)?;
        tx.open_table(INDEX).map_err(index_error)?;
        tx.commit().map_err(index_error)?;
        let store = Self { dir, db };
        store.recover()?;
        Ok(store)
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn key_path(&self, key_id: &KeyId) -> PathBuf {
        self.dir.join("keys").join(key_id.as_str())
    }

    fn recover(&self) -> Result<(), StoreError> {
        let tmp = self.dir.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(Self::io(&tmp))? {
            let path = entry.map_err(Self::io(&tmp))?.path();
            std::fs::remove_file(&path).map_err(Self::io(&path))?;
        }
        let indexed: Vec<KeyMeta> = self.list()?;
        let keys = self.dir.join("keys");
        for entry in std::fs::read_dir(&keys).map_err(Self::io(&keys))? {
            let path = entry.map_err(Self::io(&keys))?.path();
            let known = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| KeyId::parse(n).ok())
                .is_some_and(|id| indexed.iter().any(|m| m.key_id == id));
            if !known {
                std::fs::remove_file(&path).map_err(Self::io(&path))?;
            }
        }
        for meta in indexed {
            if !self.key_path(&meta.key_id).is_file() {
                self.unindex(&meta.key_id)?;
            }
        }
        Ok(())
    }

    fn index(&self, meta: &KeyMeta) -> Result<(), StoreError> {
        let json = serde_json::to_vec(meta).expect("key metadata always serializes");
        let tx = self.db.begin_write().map_err(index_error)?;
        {
            let mut table = tx.open_table(INDEX).map_err(index_error)?;
            table
                .insert(meta.key_id.as_str(), json.as_slice())
                .map_err(index_error)?;
        }
        tx.commit().map_err(index_error)
    }

    fn unindex(&self, key_id: &KeyId) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(index_error)?;
        let removed = {
            let mut table = tx.open_table(INDEX).map_err(index_error)?;
            let removed = table.remove(key_id.as_str()).map_err(index_error)?;
            removed.is_some()
        };
        tx.commit().map_err(index_error)?;
        Ok(removed)
    }

    /// Streams `body` into `file`, hashing and counting, up to `limit`.
    fn receive(
        file: &mut File,
        body: &mut dyn Read,
        limit: u64,
    ) -> Result<(KeyId, u64), ReceiveError> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReceiveError::Read(e)),
            };
            size += n as u64;
            if size > limit {
                return Err(ReceiveError::TooLarge);
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(ReceiveError::Write)?;
        }
        Ok((KeyId(hex(&hasher.finalize())), size))
    }
}

enum ReceiveError {
    TooLarge,
    Read(std::io::Error),
    Write(std::io::Error),
}

impl KeyStore for FileStore {
    fn put(
        &self,
        key_id: &KeyId,
        new: &NewKey<'_>,
        body: &mut dyn Read,
    ) -> Result<Stored, StoreError> {
        let tmp = self.dir.join("tmp").join(format!(
            "{key_id}.{}.{}",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = File::create(&tmp).map_err(Self::io(&tmp))?;
        let received = Self::receive(&mut file, body, new.limit);
        let outcome = (|| {
            let (actual, size) = match received {
                Ok(r) => r,
                Err(ReceiveError::TooLarge) => {
                    return Err(StoreError::TooLarge { limit: new.limit })
                }
                Err(ReceiveError::Read(e)) => return Err(StoreError::Upload(e)),
                Err(ReceiveError::Write(source)) => {
                    return Err(StoreError::Io {
                        path: tmp.clone(),
                        source,
                    })
                }
            };
            if &actual != key_id {
                return Err(StoreError::HashMismatch {
                    claimed: key_id.clone(),
                    actual,
                });
            }
            if let Some(meta) = self.meta(key_id)? {
                return if meta.model == new.model {
                    Ok(Stored::Existing)
                } else {
                    Err(StoreError::OtherModel {
                        key_id: key_id.clone(),
                        stored: meta.model,
                        asked: new.model.into(),
                    })
                };
            }
            file.sync_all().map_err(Self::io(&tmp))?;
            let path = self.key_path(key_id);
            std::fs::rename(&tmp, &path).map_err(Self::io(&path))?;
            let keys = self.dir.join("keys");
            File::open(&keys)
                .and_then(|d| d.sync_all())
                .map_err(Self::io(&keys))?;
            let t = now();
            self.index(&KeyMeta {
                key_id: key_id.clone(),
                model: new.model.into(),
                params_hash: new.params_hash.into(),
                size,
                created: t,
                last_used: t,
            })?;
            Ok(Stored::Created)
        })();
        // Gone after a rename; otherwise what is left of a refused upload.
        let _ = std::fs::remove_file(&tmp);
        outcome
    }

    fn meta(&self, key_id: &KeyId) -> Result<Option<KeyMeta>, StoreError> {
        let tx = self.db.begin_read().map_err(index_error)?;
        let table = tx.open_table(INDEX).map_err(index_error)?;
        let Some(json) = table.get(key_id.as_str()).map_err(index_error)? else {
            return Ok(None);
        };
        serde_json::from_slice(json.value())
            .map(Some)
            .map_err(|e| StoreError::Index(format!("entry {key_id}: {e}")))
    }

    fn get(&self, key_id: &KeyId) -> Result<Option<(KeyMeta, File)>, StoreError> {
        let Some(mut meta) = self.meta(key_id)? else {
            return Ok(None);
        };
        let path = self.key_path(key_id);
        let file = File::open(&path).map_err(Self::io(&path))?;
        meta.last_used = now();
        self.index(&meta)?;
        Ok(Some((meta, file)))
    }

    fn remove(&self, key_id: &KeyId) -> Result<bool, StoreError> {
        let removed = self.unindex(key_id)?;
        let path = self.key_path(key_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(removed),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn list(&self) -> Result<Vec<KeyMeta>, StoreError> {
        let tx = self.db.begin_read().map_err(index_error)?;
        let table = tx.open_table(INDEX).map_err(index_error)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(index_error)? {
            let (id, json) = entry.map_err(index_error)?;
            out.push(
                serde_json::from_slice(json.value())
                    .map_err(|e| StoreError::Index(format!("entry {}: {e}", id.value())))?,
            );
        }
        Ok(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cml-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A reader whose connection drops.
    struct Broken;

    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            ))
        }
    }

    const NEW: NewKey<'static> = NewKey {
        model: "m",
        params_hash: "h",
        limit: 1 << 20,
    };

    fn files(dir: &Path, sub: &str) -> usize {
        std::fs::read_dir(dir.join(sub)).unwrap().count()
    }

    #[test]
    fn key_ids_are_sha256_hex_and_nothing_else() {
        let id = KeyId::of(b"abc");
        assert_eq!(
            id.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyId::parse(id.as_str()).unwrap(), id);
        for bad in [
            "",
            "../../etc/passwd",
            &id.as_str().to_uppercase(),
            &id.as_str()[..63],
            &format!("{}0", id.as_str()),
            &format!("{}/", &id.as_str()[..63]),
        ] {
            let e = KeyId::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not a key id"), "{e}");
        }
    }

    #[test]
    fn uploads_are_idempotent_durable_and_checked() {
        let dir = scratch("put");
        let store = FileStore::open(&dir).unwrap();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let id = KeyId::of(&bytes);
        assert!(store.meta(&id).unwrap().is_none());
        assert_eq!(
            store.put(&id, &NEW, &mut &bytes[..]).unwrap(),
            Stored::Created
        );
        assert_eq!(
            store.put(&id, &NEW, &mut &bytes[..]).unwrap(),
            Stored::Existing
        );
        let e = store
            .put(
                &id,
                &NewKey {
                    model: "other",
                    ..NEW
                },
                &mut &bytes[..],
            )
            .unwrap_err();
        assert!(matches!(e, StoreError::OtherModel { .. }), "{e}");

        // Wrong hash: refused, nothing kept.
        let other = KeyId::of(b"something else");
        let e = store
            .put(&other, &NEW, &mut &bytes[..])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("hash to {id}, not to the key id {other}")),
            "{e}"
        );
        assert!(store.meta(&other).unwrap().is_none());
        // Past the limit: refused while streaming, from an endless body.
        let mut endless = std::io::repeat(7);
        let e = store
            .put(
                &other,
                &NewKey {
                    limit: 100_000,
                    ..NEW
                },
                &mut endless,
            )
            .unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { limit: 100_000 }), "{e}");
        // A body that breaks off: refused, nothing kept.
        let mut broken = (&bytes[..1000]).chain(Broken);
        let e = store
            .put(&other, &NEW, &mut broken)
            .unwrap_err()
            .to_string();
        assert!(e.contains("the upload stopped before its end"), "{e}");
        assert_eq!(files(&dir, "tmp"), 0);
        assert_eq!(files(&dir, "keys"), 1);

        // A restart keeps the key and its index entry.
        drop(store);
        let store = FileStore::open(&dir).unwrap();
        let (meta, mut file) = store.get(&id).unwrap().unwrap();
        assert_eq!((meta.model.as_str(), meta.params_hash.as_str()), ("m", "h"));
        assert_eq!(meta.size, bytes.len() as u64);
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, bytes);
        assert_eq!(
            store.list().unwrap(),
            vec![store.meta(&id).unwrap().unwrap()]
        );
        assert!(store.remove(&id).unwrap());
        assert!(!store.remove(&id).unwrap());
        assert!(store.get(&id).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn opening_finishes_what_a_crash_interrupted() {
        let dir = scratch("recover");
        let store = FileStore::open(&dir).unwrap();
        let (a, b) = (b"key a".to_vec(), b"key b".to_vec());
        let (ida, idb) = (KeyId::of(&a), KeyId::of(&b));
        store.put(&ida, &NEW, &mut &a[..]).unwrap();
        store.put(&idb, &NEW, &mut &b[..]).unwrap();
        drop(store);
        // A half-written upload, a key renamed but never indexed, and an
        // index entry whose file is gone.
        std::fs::write(dir.join("tmp").join("partial"), b"half").unwrap();
        let orphan = KeyId::of(b"orphan");
        std::fs::write(dir.join("keys").join(orphan.as_str()), b"orphan").unwrap();
        std::fs::write(dir.join("keys").join("not-a-key"), b"x").unwrap();
        std::fs::remove_file(dir.join("keys").join(idb.as_str())).unwrap();

        let store = FileStore::open(&dir).unwrap();
        assert_eq!(files(&dir, "tmp"), 0);
        assert_eq!(files(&dir, "keys"), 1);
        assert!(store.meta(&orphan).unwrap().is_none());
        assert!(store.meta(&idb).unwrap().is_none());
        assert!(store.get(&ida).unwrap().is_some());
        // The client re-uploads what was lost.
        assert_eq!(store.put(&idb, &NEW, &mut &b[..]).unwrap(), Stored::Created);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
