//! Asynchronous ingestion jobs in the server: an upload is spooled to disk
//! (`<data dir>/uploads/<id>/`), kept where every worker of the queue can get it (with
//! `--database`, in the database), recorded in the job queue (`basalt_kb::JobQueue`: the data
//! directory's, or the database's that replicas share) and acknowledged with `202` and a job
//! id. A worker thread claims jobs with a lease, ingests them taking turns with answers at the
//! scheduler (one embedding batch per turn), renews the lease as it goes, and records how each
//! ended. An acknowledged upload survives a crash: its job is claimed again (by another
//! replica, once the lease runs out), and ingestion is idempotent (unchanged documents are
//! skipped).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use basalt_index::Sealer;
use basalt_kb::{
    DataDir, FileJobQueue, IngestOptions, IngestReport, Job, JobQueue, ObjectUploads, PgJobQueue,
    UploadedFile,
};
use basalt_model::{Embedder, EmbedderInfo};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{AppState, Scheduler, lock};

/// How often an idle worker looks for a job nobody told it about (one whose lease ran out,
/// or one another process queued).
const POLL: Duration = Duration::from_secs(5);

/// The job queue, the spooled uploads, and the worker that runs them.
#[derive(Debug)]
pub struct Jobs {
    queue: Arc<dyn JobQueue>,
    uploads: PathBuf,
    /// How long a claimed job stays this worker's without a heartbeat.
    lease: Duration,
    /// This process's worker name in the queue's leases.
    worker: String,
    /// Wakes the worker when a job is submitted.
    wake: Mutex<Option<mpsc::Sender<()>>>,
}

impl Jobs {
    /// The job queue of `data_dir` — its database's when it has one — (jobs a stop
    /// interrupted are queued again). Call [`Jobs::start`] to run them.
    pub fn open(data_dir: &DataDir, lease: Duration) -> std::io::Result<Self> {
        let uploads = data_dir.root().join("uploads");
        std::fs::create_dir_all(&uploads)?;
        let queue: Arc<dyn JobQueue> = if data_dir.has_database() {
            Arc::new(
                PgJobQueue::open(data_dir)
                    .map_err(|error| std::io::Error::other(error.to_string()))?,
            )
        } else {
            Arc::new(
                FileJobQueue::open(data_dir)
                    .map_err(|error| std::io::Error::other(error.to_string()))?,
            )
        };
        // With `--objects`, the uploads wait in the object store instead of the queue's place.
        let queue: Arc<dyn JobQueue> = match data_dir.objects() {
            Some(objects) => Arc::new(ObjectUploads::new(queue, objects.clone())),
            None => queue,
        };
        Ok(Jobs {
            queue,
            uploads,
            lease,
            worker: basalt_core::id::new_id("worker-", 6),
            wake: Mutex::new(None),
        })
    }

    /// The folder an upload's files are spooled to.
    pub fn upload_dir(&self, id: &str) -> PathBuf {
        self.uploads.join(id)
    }

    /// Starts the worker thread; it first takes the jobs waiting from an earlier run.
    pub(crate) fn start(state: &AppState) {
        let (sender, receiver) = mpsc::channel::<()>();
        *lock(&state.jobs.wake) = Some(sender);
        let state = state.clone();
        let spawned = std::thread::Builder::new()
            .name("basalt-ingest".into())
            .spawn(move || {
                loop {
                    match state.jobs.queue.claim(&state.jobs.worker, state.jobs.lease) {
                        Ok(Some(job)) => run(&state, &job),
                        Ok(None) => match receiver.recv_timeout(POLL) {
                            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        },
                        Err(error) => {
                            tracing::error!(%error, "cannot claim an ingestion job");
                            std::thread::sleep(POLL);
                        }
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the ingestion worker");
        }
    }

    /// Lets the worker thread end when it is next idle (see [`AppState::stop_jobs`]).
    pub(crate) fn stop(&self) {
        *lock(&self.wake) = None;
    }

    /// Keeps the job's spooled upload where every worker can get it, records the job
    /// (durably; sealed with `sealer` when its knowledge base is encrypted) and wakes the
    /// worker.
    pub fn submit(&self, job: Job, sealer: Option<Arc<dyn Sealer>>) -> basalt_kb::Result<()> {
        self.queue.keep_upload(&job.id, &self.upload_dir(&job.id))?;
        self.queue.submit(job, sealer)?;
        if let Some(wake) = &*lock(&self.wake) {
            let _ = wake.send(());
        }
        Ok(())
    }

    /// Job `id`, if `caller` may see it (the queue is read off the async threads: it may be
    /// a database).
    pub(crate) async fn get(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
    ) -> Result<Option<Job>, ApiError> {
        let (jobs, caller, id) = (self.clone(), caller.clone(), id.to_owned());
        crate::blocking(move || {
            jobs.queue
                .get(&id)
                .map(|job| job.filter(|job| visible_to(job, &caller)))
        })
        .await
    }

    /// The jobs `caller` may see, newest first; `kb` keeps one knowledge base's.
    pub(crate) async fn list(
        self: &Arc<Self>,
        caller: &Caller,
        kb: Option<&str>,
    ) -> Result<Vec<Job>, ApiError> {
        let (jobs, caller, kb) = (self.clone(), caller.clone(), kb.map(str::to_owned));
        crate::blocking(move || {
            let mut found = jobs.queue.list(&caller.tenant, kb.as_deref())?;
            found.retain(|job| visible_to(job, &caller));
            Ok::<_, basalt_kb::KbError>(found)
        })
        .await
    }

    /// Whether a job for `tenant`'s `kb` is queued or running.
    pub(crate) async fn busy(self: &Arc<Self>, tenant: &str, kb: &str) -> Result<bool, ApiError> {
        let (jobs, tenant, kb) = (self.clone(), tenant.to_owned(), kb.to_owned());
        crate::blocking(move || jobs.queue.busy(&tenant, &kb)).await
    }
}

/// Whether `caller` may see `job`: same tenant, and its owner or one of its readers.
fn visible_to(job: &Job, caller: &Caller) -> bool {
    job.tenant == caller.tenant
        && (job.owner.as_deref() == Some(caller.principal.as_str())
            || caller
                .reader()
                .is_none_or(|reader| reader.admits(&job.readers)))
}

/// Runs one claimed job on the worker thread.
fn run(state: &AppState, job: &Job) {
    let jobs = &state.jobs;
    let dir = jobs.upload_dir(&job.id);
    // The database out of reach is not the job's fault: it is left to its lease, which runs
    // out, and the job is claimed again (here or by another replica) rather than failed.
    let retry_later = |error: &basalt_kb::KbError| {
        tracing::error!(job = job.id, %error, "cannot run the job now; it is retried when its lease runs out");
    };
    let outcome = match jobs.queue.fetch_upload(&job.id, &dir) {
        Ok(true) => match state.open_knowledge_base(&job.tenant, &job.kb) {
            Ok(kb) => ingest(state, job, &kb),
            Err(error @ basalt_kb::KbError::Database { .. }) => return retry_later(&error),
            Err(error) => Err(error.to_string()),
        },
        Ok(false) => {
            Err("the server stopped and the uploaded files are gone; upload them again".into())
        }
        Err(error) => return retry_later(&error),
    };
    match jobs.queue.finish(&job.id, &jobs.worker, outcome) {
        Ok(true) => {
            if let Err(error) = jobs.queue.drop_upload(&job.id, &dir) {
                tracing::warn!(job = job.id, %error, "cannot remove the job's spooled files");
            }
        }
        // Its lease ran out and another worker has it: that one finishes it.
        Ok(false) => tracing::warn!(job = job.id, "the job's lease was lost while it ran"),
        Err(error) => tracing::error!(job = job.id, %error, "cannot record the job's end"),
    }
}

fn ingest(
    state: &AppState,
    job: &Job,
    kb: &basalt_kb::KnowledgeBase,
) -> Result<IngestReport, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|error| format!("cannot start the job's runtime: {error}"))?;
    let inner = state.embedder_for(kb).map_err(|error| error.message)?;
    let embedder = TurnTaking {
        inner: inner.as_ref(),
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
    let jobs = &state.jobs;
    let report = basalt_kb::ingest(kb, &embedder, &paths, &options, &mut |progress| {
        if let Err(error) = jobs
            .queue
            .heartbeat(&job.id, &jobs.worker, progress.into(), jobs.lease)
        {
            tracing::warn!(job = job.id, %error, "cannot renew the job's lease");
        }
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
