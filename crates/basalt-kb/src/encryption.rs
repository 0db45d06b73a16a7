//! Knowledge bases encrypted at rest: each has its own data key, stored wrapped by the master
//! key in `<kb>/key.json`; its index files and vector graphs are sealed with it.
//!
//! A knowledge base is encrypted when it is created while a master key is configured
//! (`BASALT_MASTER_KEY_FILE`), and from then on cannot be opened without that key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use basalt_index::Sealer;
use basalt_security::crypto::{Envelope, KeyProvider};

use crate::error::{KbError, Result};
use crate::knowledge_base::write_atomically;

/// The wrapped data key of an encrypted knowledge base.
pub(crate) const KEY_FILE: &str = "key.json";

/// Makes a new data key for the knowledge base in `dir` and stores it wrapped.
pub(crate) fn create_key(dir: &Path, provider: &dyn KeyProvider) -> Result<()> {
    let (envelope, _) = Envelope::create(provider)?;
    write_envelope(&dir.join(KEY_FILE), &envelope)
}

/// The wrapped data key of the knowledge base in `dir`: `None` when it is not encrypted.
pub(crate) fn read_key(dir: &Path) -> Result<Option<Envelope>> {
    read_envelope(&dir.join(KEY_FILE))
}

/// The sealer of the knowledge base `name` from its wrapped data key: `None` when it is not
/// encrypted, an error when the master key is missing or another.
pub(crate) fn open_envelope(
    envelope: Option<Envelope>,
    name: &str,
    provider: Option<&dyn KeyProvider>,
) -> Result<Option<Arc<dyn Sealer>>> {
    let Some(envelope) = envelope else {
        return Ok(None);
    };
    let provider = provider.ok_or_else(|| KbError::MasterKeyRequired {
        name: name.to_owned(),
        key_id: envelope.master_key_id.clone(),
    })?;
    let key = envelope.open(provider)?;
    Ok(Some(Arc::new(key)))
}

fn read_envelope(path: &Path) -> Result<Option<Envelope>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| KbError::BadSettings {
                    path: path.to_owned(),
                    message: error.to_string(),
                })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(KbError::io(path, error)),
    }
}

fn write_envelope(path: &Path, envelope: &Envelope) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(envelope).map_err(|error| KbError::io(path, error.into()))?;
    write_atomically(path, &json).map_err(|error| KbError::io(path, error))
}

/// What a master-key rotation did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Rotation {
    /// Knowledge bases whose data key is now wrapped by the new master key.
    pub rotated: Vec<PathBuf>,
    /// Already wrapped by the new key (a rotation that was run before, or interrupted).
    pub already: Vec<PathBuf>,
    /// Not encrypted: nothing to rotate.
    pub unencrypted: Vec<PathBuf>,
    /// Wrapped by a third master key, neither the old nor the new one: left as they are.
    pub other_key: Vec<PathBuf>,
}

/// Re-wraps the data key of every knowledge base under `root` (every tenant) that `old`
/// wrapped, to `new`; those under yet another master key are reported and left alone. The data is not touched. Each key file is replaced atomically, so an
/// interrupted rotation leaves every knowledge base readable with one of the two keys, and
/// running it again finishes it.
pub fn rotate_master(
    root: &Path,
    old: &dyn KeyProvider,
    new: &dyn KeyProvider,
) -> Result<Rotation> {
    let mut rotation = Rotation::default();
    for dir in kb_dirs(root)? {
        let path = dir.join(KEY_FILE);
        match read_envelope(&path)? {
            None => rotation.unencrypted.push(dir),
            Some(envelope) if envelope.master_key_id == new.key_id() => {
                // Proves the new key opens it before calling it done.
                envelope.open(new)?;
                rotation.already.push(dir);
            }
            Some(envelope) if envelope.master_key_id == old.key_id() => {
                write_envelope(&path, &envelope.rewrap(old, new)?)?;
                rotation.rotated.push(dir);
            }
            Some(_) => rotation.other_key.push(dir),
        }
    }
    Ok(rotation)
}

impl crate::DataDir {
    /// [`rotate_master`] for this data directory, and for the knowledge bases of its database
    /// (`postgres:<tenant>/<name>` in the report), whose wrapped keys are replaced one row at
    /// a time.
    pub fn rotate_master(&self, old: &dyn KeyProvider, new: &dyn KeyProvider) -> Result<Rotation> {
        let mut rotation = rotate_master(self.root(), old, new)?;
        let Some(database) = self.database() else {
            return Ok(rotation);
        };
        let mut rotate = |place: String,
                          envelope: &Envelope,
                          set: &dyn Fn(&Envelope) -> Result<()>|
         -> Result<()> {
            let place = PathBuf::from(place);
            if envelope.master_key_id == new.key_id() {
                envelope.open(new)?;
                rotation.already.push(place);
            } else if envelope.master_key_id == old.key_id() {
                set(&envelope.rewrap(old, new)?)?;
                rotation.rotated.push(place);
            } else {
                rotation.other_key.push(place);
            }
            Ok(())
        };
        for (tenant, name, envelope) in database.data_keys()? {
            rotate(format!("postgres:{tenant}/{name}"), &envelope, &|key| {
                database.set_data_key(&tenant, &name, key)
            })?;
        }
        // The conversation sessions' key (`basalt-shared`'s PgSessions), when one was made.
        if let Some(envelope) = database.session_key()? {
            rotate("postgres:sessions".into(), &envelope, &|key| {
                database.set_session_key(key)
            })?;
        }
        Ok(rotation)
    }
}

/// Every knowledge-base directory of every tenant.
fn kb_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut roots = vec![root.join("kb")];
    let tenants = root.join("tenants");
    for tenant in list(&tenants)? {
        roots.push(tenant.join("kb"));
    }
    let mut dirs = Vec::new();
    for kb_root in roots {
        for dir in list(&kb_root)? {
            let hidden = dir
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'));
            if !hidden && dir.join("kb.json").is_file() {
                dirs.push(dir);
            }
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| {
                entry
                    .map(|entry| entry.path())
                    .map_err(|error| KbError::io(dir, error))
            })
            .filter(|path| path.as_ref().map_or(true, |path| path.is_dir()))
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(KbError::io(dir, error)),
    }
}
