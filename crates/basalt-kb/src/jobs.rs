//! The ingestion job queue: an upload is recorded as a job, a worker claims it with a lease,
//! keeps the lease alive while it ingests, and records how it ended. A job whose worker died
//! (its lease ran out) is claimed again by another and ingested again — ingestion is
//! idempotent: unchanged documents are skipped. Callers use the queue through [`JobQueue`];
//! [`FileJobQueue`] is the embedded implementation and [`conformance`] is what any other (a
//! shared database's, with several replicas claiming) must pass too.
//!
//! ```text
//! <data dir>/jobs/<id>.json   a job's record (written atomically at each state change)
//! ```
//!
//! A job of an encrypted knowledge base is recorded sealed with that knowledge base's data key
//! (its file names, tags, metadata and report name documents); only its id, tenant and
//! knowledge base are in the clear.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use basalt_core::hex::{decode as unhex, encode as hex};
use basalt_index::Sealer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{KbError, Result};
use crate::knowledge_base::DataDir;
use crate::pipeline::{IngestProgress, IngestReport};

/// Finished jobs kept (the oldest are forgotten first).
pub const KEEP_FINISHED: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    /// Ran to the end; files that could not be ingested are listed in `report.failed`.
    Completed,
    /// Stopped without finishing; `error` says why.
    Failed,
}

impl JobStatus {
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// A file of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UploadedFile {
    /// The client's file name (with any folders it gave): the document's source is
    /// `upload:<name>`, so uploading the same name again replaces that document.
    pub name: String,
    pub bytes: u64,
}

impl UploadedFile {
    /// The spooled copy's file name in the job's upload folder: its position and the
    /// extension that tells its format.
    pub fn spool_name(position: usize, name: &str) -> String {
        let extension = Path::new(name)
            .extension()
            .map(|extension| extension.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        format!("{position:04}.{extension}")
    }
}

/// Where a running job stands.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct JobProgress {
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub documents_done: u64,
    pub chunks_done: u64,
}

impl From<&IngestProgress> for JobProgress {
    fn from(progress: &IngestProgress) -> Self {
        JobProgress {
            files_total: progress.files_total,
            files_done: progress.files_done,
            bytes_total: progress.bytes_total,
            bytes_done: progress.bytes_done,
            documents_done: progress.documents_done,
            chunks_done: progress.chunks_done,
        }
    }
}

/// Who is running a job, and until when unless renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Lease {
    pub worker: String,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// An ingestion job, as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Job {
    pub id: String,
    pub kb: String,
    /// The tenant of the knowledge base; jobs of other tenants are invisible.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The principal that uploaded the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who may read the documents (`principal:NAME`, `group:NAME`); empty: everyone who may
    /// read the knowledge base. The job itself (its file names) is visible to its owner and
    /// to these readers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<String>,
    /// The spooled files are encrypted with the knowledge base's data key.
    #[serde(default)]
    pub encrypted: bool,
    pub status: JobStatus,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The worker running it (while `running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// How many times a worker claimed it (more than one: it was resumed).
    #[serde(default)]
    pub attempts: u32,
    pub files: Vec<UploadedFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Value>,
    pub progress: JobProgress,
    /// Counts and per-file failures, when the job has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<IngestReport>,
    /// Why a failed job stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn default_tenant() -> String {
    crate::DEFAULT_TENANT.to_owned()
}

impl Job {
    /// A new job id: `job-` and 96 random bits.
    pub fn new_id() -> String {
        basalt_core::id::new_id("job-", 12)
    }

    /// A queued job `id` of `tenant`'s `kb` for `files`, created now.
    pub fn new(id: String, tenant: &str, kb: &str, files: Vec<UploadedFile>) -> Self {
        Job {
            id,
            kb: kb.to_owned(),
            tenant: tenant.to_owned(),
            owner: None,
            readers: Vec::new(),
            encrypted: false,
            status: JobStatus::Queued,
            created_at: basalt_core::clock::now_rfc3339_millis(),
            started_at: None,
            finished_at: None,
            lease: None,
            attempts: 0,
            progress: JobProgress {
                files_total: files.len() as u64,
                bytes_total: files.iter().map(|file| file.bytes).sum(),
                ..JobProgress::default()
            },
            files,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            report: None,
            error: None,
        }
    }

    /// Whether a worker may claim it now: queued, or running on a lease that ran out.
    fn claimable(&self, now_ms: u64) -> bool {
        match self.status {
            JobStatus::Queued => true,
            JobStatus::Running => self
                .lease
                .as_ref()
                .is_none_or(|lease| lease.expires_ms <= now_ms),
            JobStatus::Completed | JobStatus::Failed => false,
        }
    }

    /// Records how the job ended, now: its report, or why it failed; the lease is gone.
    pub(crate) fn end(&mut self, outcome: std::result::Result<IngestReport, String>) {
        self.lease = None;
        self.finished_at = Some(basalt_core::clock::now_rfc3339());
        match outcome {
            Ok(report) => {
                self.status = JobStatus::Completed;
                self.report = Some(report);
            }
            Err(error) => {
                self.status = JobStatus::Failed;
                self.error = Some(error);
            }
        }
    }

    pub(crate) fn leased_to(&self, worker: &str) -> bool {
        self.status == JobStatus::Running
            && self
                .lease
                .as_ref()
                .is_some_and(|lease| lease.worker == worker)
    }
}

/// The durable queue of ingestion jobs.
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Records a new job, durably (it survives a crash once this returns), as queued. A job of
    /// an encrypted knowledge base is stored sealed with `sealer`.
    fn submit(&self, job: Job, sealer: Option<Arc<dyn Sealer>>) -> Result<()>;

    fn get(&self, id: &str) -> Result<Option<Job>>;

    /// The jobs of `tenant` (of one knowledge base when `kb` is given), newest first.
    fn list(&self, tenant: &str, kb: Option<&str>) -> Result<Vec<Job>>;

    /// Gives `worker` the oldest job that is queued or whose lease ran out, leased for
    /// `lease`; `None` when there is none. No job is ever leased to two workers at once.
    fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>>;

    /// Renews `worker`'s lease on job `id` for `lease` and records its progress; false when
    /// the lease is no longer `worker`'s (it ran out and another claimed the job): stop.
    fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        progress: JobProgress,
        lease: Duration,
    ) -> Result<bool>;

    /// Records how `worker`'s job `id` ended: its report, or why it failed. False (and
    /// nothing recorded) when the lease is no longer `worker`'s.
    fn finish(
        &self,
        id: &str,
        worker: &str,
        outcome: std::result::Result<IngestReport, String>,
    ) -> Result<bool>;

    /// Keeps the files of job `id`'s upload, spooled in `dir`, where any worker of this
    /// queue can get them (before the job is submitted). The files in `dir` are that place
    /// for a queue one process works.
    fn keep_upload(&self, _id: &str, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// Puts the files of job `id`'s upload in `dir` (a worker that did not spool them fetches
    /// them); false when they are gone.
    fn fetch_upload(&self, _id: &str, dir: &Path) -> Result<bool> {
        Ok(dir.is_dir())
    }

    /// Forgets the files of job `id`'s upload (it ended), and the copy in `dir`.
    fn drop_upload(&self, _id: &str, dir: &Path) -> Result<()> {
        remove_spool(dir)
    }

    /// Whether a job of `tenant`'s `kb` is queued or running.
    fn busy(&self, tenant: &str, kb: &str) -> Result<bool> {
        Ok(self
            .list(tenant, Some(kb))?
            .iter()
            .any(|job| job.status.is_active()))
    }
}

/// The files of an upload spooled in `dir`: name and bytes.
pub(crate) fn spooled_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|error| KbError::io(dir, error))?;
    for entry in entries {
        let path = entry.map_err(|error| KbError::io(dir, error))?.path();
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&path).map_err(|error| KbError::io(&path, error))?;
        files.push((name, bytes));
    }
    Ok(files)
}

/// Spools an upload's `files` (fetched from where the queue kept them) into `dir`: written
/// beside it and renamed into place, so a half-fetched upload is never taken whole.
pub(crate) fn write_spool(
    dir: &Path,
    files: impl IntoIterator<Item = Result<(String, Vec<u8>)>>,
) -> Result<()> {
    let partial = dir.with_extension("partial");
    let io = |error: std::io::Error| KbError::io(&partial, error);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(io)?;
    for file in files {
        let (name, bytes) = file?;
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the upload has a spooled file named {name:?}"),
            )));
        }
        std::fs::write(partial.join(&name), bytes).map_err(io)?;
    }
    std::fs::rename(&partial, dir).map_err(io)
}

/// Removes an upload's spooled copy in `dir`, if it is there.
pub(crate) fn remove_spool(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(KbError::io(dir, error)),
        _ => Ok(()),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn expiry(lease: Duration) -> u64 {
    now_ms().saturating_add(lease.as_millis() as u64)
}

/// How a job of an encrypted knowledge base is stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedRecord {
    id: String,
    tenant: String,
    kb: String,
    /// Hex of the job record, sealed with the knowledge base's data key.
    sealed: String,
}

/// A job record file: sealed or plain.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StoredJob {
    Sealed(SealedRecord),
    Plain(Box<Job>),
}

/// The jobs of one data directory: a record file per job, and the table in memory. One
/// process works a data directory's queue, so a job found running when the queue opens has no
/// live worker: it is queued again at once rather than after its lease.
#[derive(Debug)]
pub struct FileJobQueue {
    dir: PathBuf,
    table: Mutex<HashMap<String, Job>>,
    /// The data keys of encrypted knowledge bases' jobs, by job id.
    sealers: Mutex<HashMap<String, Arc<dyn Sealer>>>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FileJobQueue {
    /// Loads the job records of `data_dir` (sealed ones with their knowledge base's key); jobs
    /// a stop interrupted are queued again.
    pub fn open(data_dir: &DataDir) -> Result<Self> {
        let dir = data_dir.root().join("jobs");
        std::fs::create_dir_all(&dir).map_err(|error| KbError::io(&dir, error))?;
        let mut table = HashMap::new();
        let mut sealers = HashMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|error| KbError::io(&dir, error))?;
        for entry in entries {
            let path = entry.map_err(|error| KbError::io(&dir, error))?.path();
            if path.extension().is_none_or(|extension| extension != "json") {
                continue;
            }
            match read_record(&path, data_dir) {
                Ok((job, sealer)) => {
                    if let Some(sealer) = sealer {
                        sealers.insert(job.id.clone(), sealer);
                    }
                    table.insert(job.id.clone(), job);
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "skipping a job record");
                }
            }
        }
        let queue = FileJobQueue {
            dir,
            table: Mutex::new(table),
            sealers: Mutex::new(sealers),
        };
        let interrupted: Vec<Job> = lock(&queue.table)
            .values_mut()
            .filter(|job| job.status == JobStatus::Running)
            .map(|job| {
                job.status = JobStatus::Queued;
                job.lease = None;
                job.started_at = None;
                job.progress = JobProgress {
                    files_total: job.progress.files_total,
                    bytes_total: job.progress.bytes_total,
                    ..JobProgress::default()
                };
                job.clone()
            })
            .collect();
        for job in interrupted {
            queue.persist(&job)?;
        }
        Ok(queue)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn persist(&self, job: &Job) -> Result<()> {
        let path = self.path(&job.id);
        let io = |error: std::io::Error| KbError::io(&path, error);
        let plain = serde_json::to_vec_pretty(job).map_err(|error| io(error.into()))?;
        let sealer = lock(&self.sealers).get(&job.id).cloned();
        let bytes = match sealer {
            None => plain,
            Some(sealer) => serde_json::to_vec_pretty(&SealedRecord {
                id: job.id.clone(),
                tenant: job.tenant.clone(),
                kb: job.kb.clone(),
                sealed: hex(&sealer.seal(&plain)),
            })
            .map_err(|error| io(error.into()))?,
        };
        basalt_core::fs::write_atomically(&path, &bytes).map_err(io)
    }

    /// Changes job `id` if `change` says so (it returns false to leave it), in the table and on
    /// disk; `None` when there is no such job.
    fn change(&self, id: &str, change: impl FnOnce(&mut Job) -> bool) -> Result<Option<bool>> {
        let mut table = lock(&self.table);
        let Some(job) = table.get_mut(id) else {
            return Ok(None);
        };
        let mut changed = job.clone();
        if !change(&mut changed) {
            return Ok(Some(false));
        }
        self.persist(&changed)?;
        *job = changed;
        Ok(Some(true))
    }

    /// Forgets the oldest finished jobs beyond [`KEEP_FINISHED`].
    fn prune(&self) {
        let mut table = lock(&self.table);
        let mut finished: Vec<(String, String)> = table
            .values()
            .filter(|job| !job.status.is_active())
            .map(|job| (job.created_at.clone(), job.id.clone()))
            .collect();
        if finished.len() <= KEEP_FINISHED {
            return;
        }
        finished.sort();
        for (_, id) in &finished[..finished.len() - KEEP_FINISHED] {
            table.remove(id);
            lock(&self.sealers).remove(id);
            let _ = std::fs::remove_file(self.path(id));
        }
    }
}

impl JobQueue for FileJobQueue {
    fn submit(&self, mut job: Job, sealer: Option<Arc<dyn Sealer>>) -> Result<()> {
        job.status = JobStatus::Queued;
        job.lease = None;
        if let Some(sealer) = sealer {
            lock(&self.sealers).insert(job.id.clone(), sealer);
        }
        self.persist(&job)?;
        lock(&self.table).insert(job.id.clone(), job);
        self.prune();
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Job>> {
        Ok(lock(&self.table).get(id).cloned())
    }

    fn list(&self, tenant: &str, kb: Option<&str>) -> Result<Vec<Job>> {
        let mut jobs: Vec<Job> = lock(&self.table)
            .values()
            .filter(|job| job.tenant == tenant && kb.is_none_or(|kb| job.kb == kb))
            .cloned()
            .collect();
        jobs.sort_by(|left, right| {
            (&right.created_at, &right.id).cmp(&(&left.created_at, &left.id))
        });
        Ok(jobs)
    }

    fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>> {
        let now = now_ms();
        let next = lock(&self.table)
            .values()
            .filter(|job| job.claimable(now))
            .min_by(|left, right| (&left.created_at, &left.id).cmp(&(&right.created_at, &right.id)))
            .map(|job| job.id.clone());
        let Some(id) = next else {
            return Ok(None);
        };
        let claimed = self.change(&id, |job| {
            // Checked again under the lock: another thread may have claimed it meanwhile.
            if !job.claimable(now_ms()) {
                return false;
            }
            job.status = JobStatus::Running;
            job.started_at = Some(basalt_core::clock::now_rfc3339());
            job.lease = Some(Lease {
                worker: worker.to_owned(),
                expires_ms: expiry(lease),
            });
            job.attempts += 1;
            true
        })?;
        match claimed {
            Some(true) => self.get(&id),
            // Taken by another worker in between: try the next one.
            _ => self.claim(worker, lease),
        }
    }

    fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        progress: JobProgress,
        lease: Duration,
    ) -> Result<bool> {
        let mut table = lock(&self.table);
        let Some(job) = table.get_mut(id).filter(|job| job.leased_to(worker)) else {
            return Ok(false);
        };
        job.progress = progress;
        let renewed = expiry(lease);
        // The lease is written only when it moves by more than half its length: progress
        // changes too often to write each time, and a stop re-queues the job anyway.
        let written = job.lease.as_ref().map_or(0, |lease| lease.expires_ms);
        if renewed.saturating_sub(written) * 2 > lease.as_millis() as u64 {
            drop(table);
            return Ok(self
                .change(id, |job| {
                    if !job.leased_to(worker) {
                        return false;
                    }
                    job.lease = Some(Lease {
                        worker: worker.to_owned(),
                        expires_ms: renewed,
                    });
                    true
                })?
                .unwrap_or(false));
        }
        Ok(true)
    }

    fn finish(
        &self,
        id: &str,
        worker: &str,
        outcome: std::result::Result<IngestReport, String>,
    ) -> Result<bool> {
        let finished = self.change(id, |job| {
            if !job.leased_to(worker) {
                return false;
            }
            job.end(outcome);
            true
        })?;
        Ok(finished.unwrap_or(false))
    }
}

/// A job record from its file, and the key it was sealed with.
fn read_record(
    path: &Path,
    data_dir: &DataDir,
) -> std::result::Result<(Job, Option<Arc<dyn Sealer>>), String> {
    let bytes = std::fs::read(path).map_err(|error| error.to_string())?;
    let stored: StoredJob = serde_json::from_slice(&bytes).map_err(|error| error.to_string())?;
    let record = match stored {
        StoredJob::Plain(job) => return Ok((*job, None)),
        StoredJob::Sealed(record) => record,
    };
    let sealer = data_dir
        .for_tenant(&record.tenant)
        .and_then(|data| data.sealer(&record.kb))
        .map_err(|error| format!("cannot open the key of its knowledge base: {error}"))?
        .ok_or("its knowledge base is no longer encrypted")?;
    let sealed = unhex(&record.sealed).ok_or("the sealed record is not hex")?;
    let plain = sealer.open(&sealed)?;
    let job: Job = serde_json::from_slice(&plain).map_err(|error| error.to_string())?;
    Ok((job, Some(sealer)))
}

/// For a queue whose workers may be other processes (replicas): an upload kept through `one`
/// is fetched through `two` into a spool of its own, byte for byte, and is gone once dropped.
pub fn shared_upload_conformance(one: &dyn JobQueue, two: &dyn JobQueue) {
    let spool = tempfile::tempdir().expect("spool");
    let (here, there) = (spool.path().join("a"), spool.path().join("b"));
    std::fs::create_dir(&here).expect("spools");
    std::fs::write(here.join("0000.md"), b"# First").expect("writes");
    std::fs::write(here.join("0001.pdf"), vec![0_u8, 159, 255]).expect("writes");
    one.keep_upload("job-shared", &here).expect("keeps");
    assert!(two.fetch_upload("job-shared", &there).expect("fetches"));
    assert_eq!(
        std::fs::read(there.join("0000.md")).expect("reads"),
        b"# First"
    );
    assert_eq!(
        std::fs::read(there.join("0001.pdf")).expect("reads"),
        [0_u8, 159, 255]
    );
    two.drop_upload("job-shared", &there).expect("drops");
    assert!(
        !one.fetch_upload("job-shared", &spool.path().join("c"))
            .expect("fetches")
    );
}

/// The behaviour every [`JobQueue`] must have. `open` opens the queue over one store, empty
/// at the first call; a second call is the queue after a restart.
///
/// # Panics
/// When the queue falls short, with what it did.
pub fn conformance(open: &dyn Fn() -> Box<dyn JobQueue>) {
    let queue = open();
    assert!(queue.list("default", None).expect("lists").is_empty());
    assert!(
        queue
            .claim("w1", Duration::from_secs(60))
            .expect("claims")
            .is_none()
    );

    let file = |name: &str| UploadedFile {
        name: name.into(),
        bytes: 10,
    };
    let mut submitted = Vec::new();
    for (index, (tenant, kb)) in [
        ("default", "handbook"),
        ("default", "papers"),
        ("acme", "handbook"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut job = Job::new(
            Job::new_id(),
            tenant,
            kb,
            vec![file(&format!("f{index}.md"))],
        );
        // Distinct creation times: the queue is first in, first out.
        job.created_at = format!("2026-12-06T10:00:0{index}.000Z");
        job.tags = vec![format!("t{index}")];
        queue.submit(job.clone(), None).expect("submits");
        submitted.push(job);
    }
    let got = queue.get(&submitted[0].id).expect("gets").expect("exists");
    assert_eq!(got.status, JobStatus::Queued);
    assert_eq!(
        (&got.files, &got.tags),
        (&submitted[0].files, &submitted[0].tags)
    );
    assert!(queue.get("job-missing").expect("gets").is_none());
    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|job| job.id).collect::<Vec<_>>();
    assert_eq!(
        ids(queue.list("default", None).expect("lists")),
        [submitted[1].id.clone(), submitted[0].id.clone()],
        "a tenant's jobs, newest first"
    );
    assert_eq!(
        ids(queue.list("default", Some("papers")).expect("lists")),
        [submitted[1].id.clone()]
    );
    assert_eq!(
        ids(queue.list("acme", None).expect("lists")),
        [submitted[2].id.clone()]
    );
    assert!(queue.busy("default", "handbook").expect("busy"));
    assert!(!queue.busy("default", "nothing").expect("busy"));

    // Claims go oldest first, each job to one worker; heartbeats record progress.
    let long = Duration::from_secs(60);
    let first = queue.claim("w1", long).expect("claims").expect("a job");
    assert_eq!(first.id, submitted[0].id);
    assert_eq!((first.status, first.attempts), (JobStatus::Running, 1));
    assert_eq!(
        first.lease.as_ref().map(|lease| lease.worker.as_str()),
        Some("w1")
    );
    let progress = JobProgress {
        files_total: 1,
        files_done: 1,
        ..JobProgress::default()
    };
    assert!(
        queue
            .heartbeat(&first.id, "w1", progress, long)
            .expect("beats")
    );
    assert!(
        !queue
            .heartbeat(&first.id, "w2", progress, long)
            .expect("beats"),
        "not w2's"
    );
    assert_eq!(
        queue
            .get(&first.id)
            .expect("gets")
            .expect("exists")
            .progress,
        progress
    );

    // A lease that runs out: the job goes to the next worker, and the first may no longer
    // report on it.
    let second = queue
        .claim("w2", Duration::ZERO)
        .expect("claims")
        .expect("a job");
    assert_eq!(second.id, submitted[1].id);
    std::thread::sleep(Duration::from_millis(5));
    let resumed = queue.claim("w3", long).expect("claims").expect("a job");
    assert_eq!(resumed.id, submitted[1].id, "the expired one comes first");
    assert_eq!(resumed.attempts, 2);
    assert!(
        !queue
            .heartbeat(&second.id, "w2", progress, long)
            .expect("beats")
    );
    assert!(
        !queue
            .finish(&second.id, "w2", Err("late".into()))
            .expect("finishes")
    );
    let third = queue.claim("w1", long).expect("claims").expect("a job");
    assert_eq!(third.id, submitted[2].id);
    assert!(
        queue.claim("w4", long).expect("claims").is_none(),
        "every job is leased"
    );

    // Finishing: the report or the error, durably; the lease is gone.
    let report = IngestReport {
        added: 1,
        ..IngestReport::default()
    };
    assert!(
        queue
            .finish(&first.id, "w1", Ok(report.clone()))
            .expect("finishes")
    );
    assert!(
        queue
            .finish(&third.id, "w1", Err("the model went away".into()))
            .expect("finishes")
    );
    assert!(
        !queue
            .finish(&first.id, "w1", Err("twice".into()))
            .expect("finishes"),
        "once"
    );
    drop(queue);

    let reopened = open();
    let done = reopened.get(&first.id).expect("gets").expect("kept");
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.report.as_ref().map(|report| report.added), Some(1));
    assert!(done.lease.is_none() && done.finished_at.is_some());
    let failed = reopened.get(&third.id).expect("gets").expect("kept");
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (JobStatus::Failed, Some("the model went away"))
    );
    assert!(!reopened.busy("default", "handbook").expect("busy"));
    // The job w3 was running when the queue closed is claimed again (at once, or once its
    // lease runs out) and was not lost.
    assert!(
        reopened
            .get(&submitted[1].id)
            .expect("gets")
            .expect("kept")
            .status
            .is_active()
    );

    // Many workers at once: every job is claimed exactly once.
    for index in 0..12 {
        let mut job = Job::new(
            Job::new_id(),
            "default",
            "bulk",
            vec![file(&format!("b{index}.md"))],
        );
        job.created_at = format!("2026-12-06T11:00:{index:02}.000Z");
        reopened.submit(job, None).expect("submits");
    }
    let claimed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let (queue, claimed) = (&reopened, &claimed);
            scope.spawn(move || {
                let name = format!("t{worker}");
                while let Some(job) = queue.claim(&name, long).expect("claims") {
                    lock(claimed).push(job.id.clone());
                    assert!(
                        queue
                            .finish(&job.id, &name, Ok(IngestReport::default()))
                            .expect("finishes")
                    );
                }
            });
        }
    });
    let mut claimed = claimed
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let total = claimed.len();
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), total, "no job went to two workers");
    assert!(claimed.len() >= 12, "every bulk job was claimed: {total}");

    // An upload's files: kept before the job is submitted, there for the worker, gone after.
    let spool = tempfile::tempdir().expect("temp dir");
    let dir = spool.path().join("job-spooled");
    std::fs::create_dir(&dir).expect("spool");
    std::fs::write(dir.join("0000.md"), b"# Spooled").expect("writes");
    reopened.keep_upload("job-spooled", &dir).expect("keeps");
    assert!(reopened.fetch_upload("job-spooled", &dir).expect("fetches"));
    assert_eq!(
        std::fs::read(dir.join("0000.md")).expect("reads"),
        b"# Spooled"
    );
    reopened.drop_upload("job-spooled", &dir).expect("drops");
    assert!(!dir.exists());
    assert!(!reopened.fetch_upload("job-spooled", &dir).expect("fetches"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_queue_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("temp dir");
        conformance(&|| Box::new(FileJobQueue::open(&DataDir::new(dir.path())).expect("opens")));
    }

    #[test]
    fn a_job_running_when_the_process_stopped_is_queued_again_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = DataDir::new(dir.path());
        let queue = FileJobQueue::open(&data).expect("opens");
        let job = Job::new(Job::new_id(), "default", "kb", vec![]);
        queue.submit(job.clone(), None).expect("submits");
        let claimed = queue
            .claim("gone", Duration::from_secs(3600))
            .expect("claims");
        assert!(claimed.is_some());
        drop(queue);
        let reopened = FileJobQueue::open(&data).expect("opens");
        let again = reopened
            .claim("next", Duration::from_secs(60))
            .expect("claims")
            .expect("the interrupted job");
        assert_eq!((again.id, again.attempts), (job.id, 2));
    }
}
