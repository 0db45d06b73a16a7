//! Asynchronous ingestion jobs: an upload is spooled to disk and acknowledged with `202` and a
//! job id; one worker thread ingests the jobs in order, taking turns with answers at the
//! scheduler (one embedding batch per turn).
//!
//! ```text
//! <data dir>/jobs/<id>.json   the job's record (written atomically at each state change)
//! <data dir>/uploads/<id>/    its spooled files, removed when the job ends
//! ```
//!
//! An acknowledged upload survives a crash: on start, jobs still `queued` or `running` whose
//! files are on disk run again (ingestion is idempotent: unchanged documents are skipped).
//!
//! A job of an encrypted knowledge base is recorded sealed with that knowledge base's data key
//! (its file names, tags, metadata and report name documents); only its id, tenant and
//! knowledge base are in the clear.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use basalt_core::hex::{decode as unhex, encode as hex};
use basalt_index::Sealer;
use basalt_kb::{DataDir, IngestOptions, IngestProgress, IngestReport};
use basalt_model::{Embedder, EmbedderInfo};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::{AppState, Scheduler, lock};

/// Finished jobs kept for `GET /v1/jobs` (the oldest are forgotten first).
const KEEP_FINISHED: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    fn is_active(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// A file of an upload.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UploadedFile {
    /// The client's file name (with any folders it gave): the document's source is
    /// `upload:<name>`, so uploading the same name again replaces that document.
    pub name: String,
    pub bytes: u64,
}

impl UploadedFile {
    /// The spooled copy's file name in the job's upload folder: its position and the
    /// extension that tells its format.
    pub(crate) fn spool_name(position: usize, name: &str) -> String {
        let extension = Path::new(name)
            .extension()
            .map(|extension| extension.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        format!("{position:04}.{extension}")
    }
}

/// Where a running job stands.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
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

/// An ingestion job, as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
    basalt_kb::DEFAULT_TENANT.to_owned()
}

impl Job {
    /// Whether `caller` may see this job: same tenant, and its owner or one of its readers.
    pub(crate) fn visible_to(&self, caller: &Caller) -> bool {
        self.tenant == caller.tenant
            && (self.owner.as_deref() == Some(caller.principal.as_str())
                || caller
                    .reader()
                    .is_none_or(|reader| reader.admits(&self.readers)))
    }
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

/// The job table, its files on disk, and the queue to the worker.
#[derive(Debug)]
pub struct Jobs {
    dir: PathBuf,
    uploads: PathBuf,
    table: Mutex<HashMap<String, Job>>,
    /// The data keys of encrypted knowledge bases' jobs, by job id.
    sealers: Mutex<HashMap<String, Arc<dyn Sealer>>>,
    queue: Mutex<Option<mpsc::Sender<String>>>,
}

impl Jobs {
    /// Loads the job records of `data_dir` (sealed ones with their knowledge base's key);
    /// jobs a stop interrupted are queued again (or failed, when their files are gone). Call
    /// [`Jobs::start`] to run them.
    pub fn open(data_dir: &DataDir) -> std::io::Result<Self> {
        let dir = data_dir.root().join("jobs");
        let uploads = data_dir.root().join("uploads");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&uploads)?;
        let mut table = HashMap::new();
        let mut sealers = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
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
        let jobs = Jobs {
            dir,
            uploads,
            table: Mutex::new(table),
            sealers: Mutex::new(sealers),
            queue: Mutex::new(None),
        };
        let interrupted: Vec<String> = lock(&jobs.table)
            .values()
            .filter(|job| job.status.is_active())
            .map(|job| job.id.clone())
            .collect();
        for id in interrupted {
            let files_kept = jobs.upload_dir(&id).is_dir();
            jobs.update(&id, |job| {
                if files_kept {
                    job.status = JobStatus::Queued;
                    job.started_at = None;
                    job.progress = JobProgress::default();
                } else {
                    job.status = JobStatus::Failed;
                    job.error = Some(
                        "the server stopped and the uploaded files are gone; upload them again"
                            .into(),
                    );
                }
            });
        }
        Ok(jobs)
    }

    /// The folder an upload's files are spooled to.
    pub fn upload_dir(&self, id: &str) -> PathBuf {
        self.uploads.join(id)
    }

    /// Starts the worker thread and queues the jobs waiting from an earlier run.
    pub(crate) fn start(state: &AppState) {
        let (sender, receiver) = mpsc::channel::<String>();
        let jobs = state.jobs.clone();
        let mut waiting: Vec<Job> = lock(&jobs.table)
            .values()
            .filter(|job| job.status == JobStatus::Queued)
            .cloned()
            .collect();
        waiting.sort_by(|left, right| left.created_at.cmp(&right.created_at));
        for job in waiting {
            let _ = sender.send(job.id);
        }
        *lock(&jobs.queue) = Some(sender);
        let state = state.clone();
        let spawned = std::thread::Builder::new()
            .name("basalt-ingest".into())
            .spawn(move || {
                while let Ok(id) = receiver.recv() {
                    run(&state, &id);
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the ingestion worker");
        }
    }

    /// Records a new job (durably; sealed with `sealer` when its knowledge base is encrypted)
    /// and queues it.
    pub fn submit(&self, job: Job, sealer: Option<Arc<dyn Sealer>>) -> std::io::Result<()> {
        if let Some(sealer) = sealer {
            lock(&self.sealers).insert(job.id.clone(), sealer);
        }
        self.persist(&job)?;
        let id = job.id.clone();
        lock(&self.table).insert(id.clone(), job);
        self.prune();
        if let Some(queue) = &*lock(&self.queue) {
            let _ = queue.send(id);
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        lock(&self.table).get(id).cloned()
    }

    /// The jobs `caller` may see, newest first; `kb` keeps one knowledge base's.
    pub(crate) fn list(&self, caller: &Caller, kb: Option<&str>) -> Vec<Job> {
        let mut jobs: Vec<Job> = lock(&self.table)
            .values()
            .filter(|job| job.visible_to(caller) && kb.is_none_or(|kb| job.kb == kb))
            .cloned()
            .collect();
        jobs.sort_by(|left, right| {
            (&right.created_at, &right.id).cmp(&(&left.created_at, &left.id))
        });
        jobs
    }

    /// Whether a job for `tenant`'s `kb` is queued or running.
    pub fn busy(&self, tenant: &str, kb: &str) -> bool {
        lock(&self.table)
            .values()
            .any(|job| job.tenant == tenant && job.kb == kb && job.status.is_active())
    }

    /// Changes a job in the table and on disk.
    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
        let job = {
            let mut table = lock(&self.table);
            let Some(job) = table.get_mut(id) else {
                return;
            };
            change(job);
            job.clone()
        };
        if let Err(error) = self.persist(&job) {
            tracing::error!(job = id, %error, "cannot record the job's state");
        }
    }

    /// Progress lives in memory only: it changes too often to write each time.
    fn set_progress(&self, id: &str, progress: JobProgress) {
        if let Some(job) = lock(&self.table).get_mut(id) {
            job.progress = progress;
        }
    }

    fn persist(&self, job: &Job) -> std::io::Result<()> {
        let plain = serde_json::to_vec_pretty(job).map_err(std::io::Error::other)?;
        let sealer = lock(&self.sealers).get(&job.id).cloned();
        let bytes = match sealer {
            None => plain,
            Some(sealer) => serde_json::to_vec_pretty(&SealedRecord {
                id: job.id.clone(),
                tenant: job.tenant.clone(),
                kb: job.kb.clone(),
                sealed: hex(&sealer.seal(&plain)),
            })
            .map_err(std::io::Error::other)?,
        };
        basalt_core::fs::write_atomically(&self.dir.join(format!("{}.json", job.id)), &bytes)
    }

    /// Forgets the oldest finished jobs beyond [`KEEP_FINISHED`].
    fn prune(&self) {
        let doomed: Vec<String> = {
            let table = lock(&self.table);
            let mut finished: Vec<&Job> = table
                .values()
                .filter(|job| !job.status.is_active())
                .collect();
            if finished.len() <= KEEP_FINISHED {
                return;
            }
            finished.sort_by(|left, right| left.created_at.cmp(&right.created_at));
            finished[..finished.len() - KEEP_FINISHED]
                .iter()
                .map(|job| job.id.clone())
                .collect()
        };
        let mut table = lock(&self.table);
        for id in doomed {
            table.remove(&id);
            lock(&self.sealers).remove(&id);
            let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
        }
    }
}

/// A job record from its file, and the key it was sealed with.
fn read_record(path: &Path, data_dir: &DataDir) -> Result<(Job, Option<Arc<dyn Sealer>>), String> {
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

/// Runs one job on the worker thread.
fn run(state: &AppState, id: &str) {
    let jobs = &state.jobs;
    let Some(job) = jobs.get(id).filter(|job| job.status == JobStatus::Queued) else {
        return;
    };
    jobs.update(id, |job| {
        job.status = JobStatus::Running;
        job.started_at = Some(basalt_core::clock::now_rfc3339());
    });
    let outcome = ingest(state, &job);
    jobs.update(id, |job| {
        job.finished_at = Some(basalt_core::clock::now_rfc3339());
        match outcome {
            Ok(report) => {
                job.status = JobStatus::Completed;
                job.report = Some(report);
            }
            Err(error) => {
                job.status = JobStatus::Failed;
                job.error = Some(error);
            }
        }
    });
    if let Err(error) = std::fs::remove_dir_all(jobs.upload_dir(id)) {
        tracing::warn!(job = id, %error, "cannot remove the job's spooled files");
    }
}

fn ingest(state: &AppState, job: &Job) -> Result<IngestReport, String> {
    let kb = state
        .open_knowledge_base(&job.tenant, &job.kb)
        .map_err(|error| error.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|error| format!("cannot start the job's runtime: {error}"))?;
    let embedder = TurnTaking {
        inner: state.embedder.as_ref(),
        scheduler: &state.scheduler,
        runtime: &runtime,
    };
    let dir = state.jobs.upload_dir(&job.id);
    let paths: Vec<PathBuf> = job
        .files
        .iter()
        .enumerate()
        .map(|(position, file)| dir.join(UploadedFile::spool_name(position, &file.name)))
        .collect();
    let options = IngestOptions {
        tags: job.tags.clone(),
        metadata: job.metadata.clone(),
        sources: paths
            .iter()
            .zip(&job.files)
            .map(|(path, file)| (path.clone(), format!("upload:{}", file.name)))
            .collect(),
        readers: job.readers.clone(),
        sealed_files: job.encrypted,
        // An upload may not replace a document its uploader could not read.
        replacer: job
            .owner
            .as_ref()
            .map(|owner| state.security.reader_of(owner)),
        ..IngestOptions::default()
    };
    let jobs = state.jobs.clone();
    let id = job.id.clone();
    let report = basalt_kb::ingest(&kb, &embedder, &paths, &options, &mut |progress| {
        jobs.set_progress(&id, progress.into());
    })
    .map_err(|error| error.to_string())?;
    Ok(report)
}

/// The server's embedder, taking a scheduler turn for every batch so a long ingestion never
/// holds the CPU away from answers for more than one batch.
#[derive(Debug)]
struct TurnTaking<'a> {
    inner: &'a dyn Embedder,
    scheduler: &'a Scheduler,
    runtime: &'a tokio::runtime::Runtime,
}

impl TurnTaking<'_> {
    fn turn(&self) -> Result<crate::Slot, basalt_model::ModelError> {
        self.runtime
            .block_on(self.scheduler.background_turn())
            .map_err(|error| basalt_model::ModelError::Inference(error.message))
    }
}

impl Embedder for TurnTaking<'_> {
    fn info(&self) -> &EmbedderInfo {
        self.inner.info()
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, basalt_model::ModelError> {
        let _turn = self.turn()?;
        self.inner.embed_batch(texts)
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, basalt_model::ModelError> {
        let _turn = self.turn()?;
        self.inner.embed_query(text)
    }

    fn count_tokens(&self, text: &str) -> Result<usize, basalt_model::ModelError> {
        self.inner.count_tokens(text)
    }
}

/// A job id: `job-` and 96 random bits.
pub(crate) fn new_id() -> String {
    basalt_core::id::new_id("job-", 12)
}
