//! Encryption at rest for an index: every file tantivy writes goes through a [`Sealer`] (the
//! knowledge base's data key), so postings, stored chunks, document records and vectors are
//! ciphertext on disk.
//!
//! A file is sealed whole when tantivy finishes writing it (index files are written once and
//! never changed) and opened whole into memory when tantivy first reads it, in place of a
//! memory map. Lock files stay with the file system; they hold nothing.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, OwnedBytes,
    TerminatingWrite, WatchCallback, WatchHandle, WritePtr,
};

pub use basalt_core::sealer::Sealer;

/// A tantivy directory whose files are sealed.
#[derive(Debug, Clone)]
pub(crate) struct SealedDirectory {
    inner: MmapDirectory,
    sealer: Arc<dyn Sealer>,
}

impl SealedDirectory {
    pub(crate) fn open(path: &Path, sealer: Arc<dyn Sealer>) -> tantivy::Result<Self> {
        Ok(SealedDirectory {
            inner: MmapDirectory::open(path)?,
            sealer,
        })
    }

    fn unseal(&self, sealed: &[u8], path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.sealer.open(sealed).map_err(|message| {
            OpenReadError::wrap_io_error(
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cannot decrypt (wrong key, or the file was changed): {message}"),
                ),
                path.to_owned(),
            )
        })
    }
}

impl Directory for SealedDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        let sealed = self
            .inner
            .open_read(path)?
            .read_bytes()
            .map_err(|error| OpenReadError::wrap_io_error(error, path.to_owned()))?;
        let plain = self.unseal(sealed.as_slice(), path)?;
        Ok(Arc::new(OwnedBytes::new(plain)))
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let target = self.inner.open_write(path)?;
        Ok(BufWriter::new(Box::new(SealingWriter {
            plain: Vec::new(),
            target: Some(target),
            sealer: self.sealer.clone(),
            path: path.to_owned(),
        })))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        let sealed = self.inner.atomic_read(path)?;
        self.unseal(&sealed, path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.inner.atomic_write(path, &self.sealer.seal(data))
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}

/// Collects a file's bytes; seals and writes them when tantivy terminates the file.
struct SealingWriter {
    plain: Vec<u8>,
    target: Option<WritePtr>,
    sealer: Arc<dyn Sealer>,
    path: PathBuf,
}

impl Write for SealingWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.plain.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    /// Nothing reaches the disk before the file is complete: a sealed file is written once.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TerminatingWrite for SealingWriter {
    fn terminate_ref(&mut self, token: AntiCallToken) -> io::Result<()> {
        let Some(mut target) = self.target.take() else {
            return Err(io::Error::other(format!(
                "{} was already finished",
                self.path.display()
            )));
        };
        let sealed = self.sealer.seal(&std::mem::take(&mut self.plain));
        target.write_all(&sealed)?;
        target.flush()?;
        target.terminate_ref(token)
    }
}
