//! Ingestion from an S3 prefix (`basalt ingest --kb handbook s3://bucket/handbook/`) as a sync:
//! the prefix's objects are copied into a private temporary directory (sealed with the
//! knowledge base's data key when it is encrypted, so no clear copy touches the disk), ingested
//! from there as a directory would be — sidecars, formats, unchanged content skipped by its hash
//! — under their `s3://` addresses, and then every document that came from below the prefix and
//! whose object is gone is removed from the index.
//!
//! With `--objects`, the files of an upload wait for their job in the object store
//! (`uploads/JOB/NAME`, sealed by the server when the knowledge base is encrypted), where any
//! replica's worker fetches them: [`ObjectUploads`], a queue around the queue.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use basalt_index::Sealer;

use basalt_model::Embedder;
use basalt_objects::Objects;

use crate::jobs::{Job, JobProgress, JobQueue};
use crate::pipeline::{AccessMap, Failure, IngestOptions, IngestProgress, IngestReport, ingest};
use crate::{KbError, KnowledgeBase, Result};

/// Syncs `kb` with the objects below `objects`' prefix: new and changed ones ingested, the
/// documents of deleted ones removed (counted in [`IngestReport::removed`]). An access map's
/// directories (`access_map`) are read relative to the prefix.
pub fn ingest_objects(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    objects: &Objects,
    options: &IngestOptions,
    access_map: Option<&Path>,
    observe: &mut dyn FnMut(&IngestProgress),
) -> Result<IngestReport> {
    let mirror = Mirror::fetch(kb, objects, options.max_file_bytes)?;
    let mut options = options.clone();
    options.sources.extend(mirror.sources.clone());
    options.sealed_files = kb.sealer.is_some();
    if let Some(path) = access_map {
        options.access_map = AccessMap::load_under(path, mirror.dir.path())?;
    }
    let mut report = ingest(
        kb,
        embedder,
        &[mirror.dir.path().to_owned()],
        &options,
        observe,
    )?;
    // Failures name the object, not the temporary copy.
    let copy = mirror.dir.path().display().to_string();
    for failure in report.failed.iter_mut().chain(report.skipped.iter_mut()) {
        if let Some(key) = failure.path.strip_prefix(&copy) {
            failure.path = objects.url_of(key.trim_start_matches('/'));
        }
    }
    report.failed.extend(mirror.failed.iter().cloned());
    report.removed = mirror.remove_missing(kb, &objects.url().to_url())?;
    Ok(report)
}

/// The prefix's objects, copied into a temporary directory.
struct Mirror {
    dir: tempfile::TempDir,
    /// Each copy's `s3://` address (the documents' source).
    sources: BTreeMap<PathBuf, String>,
    /// The address of every object listed, copied or not: a document whose object is still
    /// there is kept even when this run could not read it.
    listed: BTreeSet<String>,
    failed: Vec<Failure>,
}

impl Mirror {
    fn fetch(kb: &KnowledgeBase, objects: &Objects, max_file_bytes: u64) -> Result<Mirror> {
        let listing = objects.list("")?;
        let dir = tempfile::Builder::new()
            .prefix("basalt-s3-")
            .tempdir()
            .map_err(|error| KbError::io(&std::env::temp_dir(), error))?;
        let mut mirror = Mirror {
            dir,
            sources: BTreeMap::new(),
            listed: BTreeSet::new(),
            failed: Vec::new(),
        };
        for object in listing {
            let url = objects.url_of(&object.key);
            mirror.listed.insert(url.clone());
            let fail = |reason: String| Failure {
                path: url.clone(),
                reason,
            };
            if object.key.ends_with('/') {
                continue; // a "folder" marker some tools create
            }
            if object.size > max_file_bytes {
                mirror.failed.push(fail(format!(
                    "{} MB is over the {} MB limit (--max-file-size)",
                    object.size >> 20,
                    max_file_bytes >> 20
                )));
                continue;
            }
            if object
                .key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
            {
                mirror.failed.push(fail(
                    "the key has an empty, `.` or `..` part, so it cannot be read as a path".into(),
                ));
                continue;
            }
            let bytes = match objects.get(&object.key) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue, // deleted since the listing
                Err(error) => return Err(error.into()),
            };
            let bytes = match &kb.sealer {
                Some(sealer) => sealer.seal(&bytes),
                None => bytes,
            };
            let path = mirror.dir.path().join(&object.key);
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, bytes));
            match written {
                Ok(()) => {
                    mirror.sources.insert(path, url);
                }
                Err(error) => mirror.failed.push(fail(format!("cannot copy it: {error}"))),
            }
        }
        Ok(mirror)
    }

    /// Removes the documents that came from below `root` and whose object is gone.
    fn remove_missing(&self, kb: &KnowledgeBase, root: &str) -> Result<u64> {
        let below = format!("{root}/");
        let gone: Vec<String> = kb
            .documents()?
            .into_iter()
            .filter(|document| {
                document.source.starts_with(&below) && !self.listed.contains(&document.source)
            })
            .map(|document| document.doc_id)
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let removed = kb.delete(&gone)?;
        kb.store.finish_writes()?;
        Ok(removed as u64)
    }
}

/// A job queue whose uploads wait in the object store (`uploads/JOB/` below its prefix)
/// instead of the queue's own place, so a worker on any replica can run the job: every other
/// verb is the wrapped queue's (`--objects`).
#[derive(Debug)]
pub struct ObjectUploads {
    queue: std::sync::Arc<dyn JobQueue>,
    objects: std::sync::Arc<Objects>,
}

impl ObjectUploads {
    pub fn new(queue: std::sync::Arc<dyn JobQueue>, objects: std::sync::Arc<Objects>) -> Self {
        ObjectUploads { queue, objects }
    }
}

impl JobQueue for ObjectUploads {
    fn submit(&self, job: Job, sealer: Option<std::sync::Arc<dyn Sealer>>) -> Result<()> {
        self.queue.submit(job, sealer)
    }

    fn get(&self, id: &str) -> Result<Option<Job>> {
        self.queue.get(id)
    }

    fn list(&self, tenant: &str, kb: Option<&str>) -> Result<Vec<Job>> {
        self.queue.list(tenant, kb)
    }

    fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>> {
        self.queue.claim(worker, lease)
    }

    fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        progress: JobProgress,
        lease: Duration,
    ) -> Result<bool> {
        self.queue.heartbeat(id, worker, progress, lease)
    }

    fn finish(
        &self,
        id: &str,
        worker: &str,
        outcome: std::result::Result<IngestReport, String>,
    ) -> Result<bool> {
        self.queue.finish(id, worker, outcome)
    }

    /// Stores the files spooled in `dir` (as they are: sealed when they were spooled sealed).
    fn keep_upload(&self, id: &str, dir: &Path) -> Result<()> {
        for (name, bytes) in crate::jobs::spooled_files(dir)? {
            self.objects.put(&format!("uploads/{id}/{name}"), bytes)?;
        }
        Ok(())
    }

    /// Puts job `id`'s files in `dir` unless they are there already; false when the store has
    /// none (the job's upload is gone).
    fn fetch_upload(&self, id: &str, dir: &Path) -> Result<bool> {
        if dir.is_dir() {
            return Ok(true);
        }
        let listing = self.objects.list(&format!("uploads/{id}"))?;
        if listing.is_empty() {
            return Ok(false);
        }
        let files = listing.into_iter().filter_map(|object| {
            let name = object.key.rsplit('/').next().unwrap_or_default().to_owned();
            match self.objects.get(&object.key) {
                Ok(Some(bytes)) => Some(Ok((name, bytes))),
                Ok(None) => None, // removed since the listing
                Err(error) => Some(Err(error.into())),
            }
        });
        crate::jobs::write_spool(dir, files)?;
        Ok(true)
    }

    /// Removes job `id`'s files from the store and the local copy in `dir`.
    fn drop_upload(&self, id: &str, dir: &Path) -> Result<()> {
        self.objects.delete_under(&format!("uploads/{id}"))?;
        crate::jobs::remove_spool(dir)
    }

    fn busy(&self, tenant: &str, kb: &str) -> Result<bool> {
        self.queue.busy(tenant, kb)
    }
}
