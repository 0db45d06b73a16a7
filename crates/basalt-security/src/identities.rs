//! Where the identity directory is kept. Callers read and change it through [`Identities`];
//! [`DirectoryFile`] is the embedded implementation (`<data dir>/security/iam.json`, changed
//! under a file lock, read again only when the file changed), and [`conformance`] is what any
//! other (a shared database's) must pass too.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::directory::{Directory, PrincipalKind};
use crate::error::{Result, SecurityError};

/// The identity directory's store: read whole, changed atomically.
pub trait Identities: Send + Sync + std::fmt::Debug {
    /// The directory as stored now (a change made through any handle is seen at once).
    fn current(&self) -> Result<Arc<Directory>>;

    /// Runs `change` on the directory as stored and stores what it leaves, atomically: two
    /// changes at once never lose each other's, and a change that fails stores nothing.
    fn change(&self, change: &mut (dyn FnMut(&mut Directory) -> Result<()> + Send)) -> Result<()>;
}

/// [`Identities::change`] with a result: what `change` returned.
pub fn update<T: Send>(
    identities: &dyn Identities,
    change: impl FnOnce(&mut Directory) -> Result<T> + Send,
) -> Result<T> {
    let mut change = Some(change);
    let mut value = None;
    identities.change(&mut |directory| {
        let change = change.take().ok_or_else(misbehaved)?;
        value = Some(change(directory)?);
        Ok(())
    })?;
    value.ok_or_else(misbehaved)
}

/// A store that ran a change twice, or reported success without running it.
fn misbehaved() -> SecurityError {
    SecurityError::Invalid {
        message: "the identity store did not run a change exactly once (a bug in the store)".into(),
    }
}

/// The directory file of a data directory, cached until the file changes.
#[derive(Debug)]
pub struct DirectoryFile {
    data_dir: PathBuf,
    /// The directory as last read, with the file's modification time and length then.
    cached: Mutex<Option<(Stamp, Arc<Directory>)>>,
}

/// A file's modification time and length (`None`: no file).
type Stamp = Option<(SystemTime, u64)>;

impl DirectoryFile {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DirectoryFile {
            data_dir: data_dir.into(),
            cached: Mutex::new(None),
        }
    }
}

impl Identities for DirectoryFile {
    fn current(&self) -> Result<Arc<Directory>> {
        let stamp = std::fs::metadata(Directory::path(&self.data_dir))
            .ok()
            .map(|metadata| {
                (
                    metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    metadata.len(),
                )
            });
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, directory)) = cached.as_ref()
            && *seen == stamp
        {
            return Ok(directory.clone());
        }
        let directory = Arc::new(Directory::load(&self.data_dir)?);
        *cached = Some((stamp, directory.clone()));
        Ok(directory)
    }

    fn change(&self, change: &mut (dyn FnMut(&mut Directory) -> Result<()> + Send)) -> Result<()> {
        Directory::update(&self.data_dir, change)?;
        // Read again next time, even if the file's stamp did not move.
        *self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Ok(())
    }
}

/// The behaviour every [`Identities`] must have. `open` gives a new handle on one empty
/// directory each time it is called (another process, another replica).
///
/// # Panics
/// When the store falls short, with what it did.
pub fn conformance(open: &dyn Fn() -> Box<dyn Identities>) {
    let identities = open();
    let empty = identities.current().expect("reads");
    assert!(empty.principals.is_empty() && empty.keys.is_empty());

    // A change through one handle is seen through another, keys included.
    let secret = update(identities.as_ref(), |directory| {
        directory.upsert_principal("alice", PrincipalKind::User, None, &["staff".into()])?;
        directory.attach(crate::READ_ONLY_ACCESS, "alice", false)?;
        directory
            .create_key("alice", None)
            .map(|(_, secret)| secret)
    })
    .expect("changes");
    let other = open();
    let seen = other.current().expect("reads");
    assert!(seen.principals.contains_key("alice"));
    let identity = seen
        .authenticate(secret.expose(), &basalt_core::clock::now_rfc3339())
        .expect("the new key authenticates through another handle");
    assert_eq!(identity.principal, "alice");

    // A change that fails stores nothing.
    let failed = update(other.as_ref(), |directory| {
        directory.upsert_principal("mallory", PrincipalKind::User, None, &[])?;
        Err::<(), _>(SecurityError::NotFound {
            what: "principal",
            name: "nobody".into(),
        })
    });
    assert!(failed.is_err());
    assert!(
        !identities
            .current()
            .expect("reads")
            .principals
            .contains_key("mallory")
    );

    // Changes at once, through two handles from four threads, are all kept.
    let handles = [&identities, &other];
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let handle = handles[thread % 2];
            scope.spawn(move || {
                for index in 0..5 {
                    update(handle.as_ref(), |directory| {
                        directory.upsert_principal(
                            &format!("p{thread}-{index}"),
                            PrincipalKind::Service,
                            None,
                            &[],
                        )
                    })
                    .expect("changes");
                }
            });
        }
    });
    let after = open().current().expect("reads");
    assert_eq!(
        after.principals.len(),
        21,
        "alice and 20 services: none lost"
    );

    // A revoked key is refused at once, through every handle.
    let id = identity.key_id.clone();
    update(identities.as_ref(), |directory| {
        Ok(directory.revoke_key(&id))
    })
    .expect("revokes");
    assert!(
        other
            .current()
            .expect("reads")
            .authenticate(secret.expose(), &basalt_core::clock::now_rfc3339())
            .is_err()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_file_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("temp dir");
        conformance(&|| Box::new(DirectoryFile::new(dir.path())));
    }
}
