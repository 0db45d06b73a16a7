//! The ingestion job queue in PostgreSQL (`basalt.jobs`, `basalt.uploads`), shared by every
//! replica on the database. A worker claims the oldest job that is queued or whose lease ran
//! out with `FOR UPDATE SKIP LOCKED` — two replicas never take the same job, and neither
//! waits for the other's claim — and leases are timed by the database's clock, so replicas
//! whose clocks differ agree on when a lease ran out. A replica killed mid-job leaves a lease
//! that runs out; another replica claims the job and ingests it again (ingestion skips
//! what is unchanged), with the upload's files from `basalt.uploads`.
//!
//! A job of an encrypted knowledge base is stored sealed with its data key, as its spooled
//! files are: the database holds only its id, tenant, knowledge base, status and lease in the
//! clear.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_index::Sealer;
use postgres::GenericClient;

use crate::database::Database;
use crate::error::{KbError, Result};
use crate::jobs::{Job, JobProgress, JobQueue, JobStatus, KEEP_FINISHED, Lease, lock};
use crate::knowledge_base::DataDir;
use crate::pipeline::IngestReport;

/// The database's clock in milliseconds since the Unix epoch.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// How often a running job's progress is written (its lease is renewed sooner when due).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The job queue of a database.
#[derive(Debug)]
pub struct PgJobQueue {
    data: DataDir,
    database: Database,
    /// The data keys of encrypted knowledge bases, by tenant and name, to open sealed jobs.
    sealers: Mutex<HashMap<(String, String), Arc<dyn Sealer>>>,
    /// The jobs this process runs, by id.
    running: Mutex<HashMap<String, Running>>,
}

/// A job this process runs: the record it writes, the key it is sealed with (as it was
/// stored), and when its progress was last written.
#[derive(Debug)]
struct Running {
    job: Job,
    sealer: Option<Arc<dyn Sealer>>,
    written: Instant,
}

fn status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "queued",
        JobStatus::Running => "running",
        JobStatus::Completed => "completed",
        JobStatus::Failed => "failed",
    }
}

impl PgJobQueue {
    /// The queue of `data`'s database (an error when it has none).
    pub fn open(data: &DataDir) -> Result<Self> {
        let database = data.database().cloned().ok_or_else(|| KbError::Database {
            message: "the shared job queue needs --database".into(),
        })?;
        // Connects and checks the schema now, not at the first upload.
        database.run(|client| client.execute("SELECT 1", &[]).map(drop))?;
        Ok(PgJobQueue {
            data: data.clone(),
            database,
            sealers: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// The data key of `tenant`'s `kb` (read from the catalog once, or again when `fresh`);
    /// an error when it is not encrypted (any more) or its key cannot be opened here.
    fn sealer(&self, tenant: &str, kb: &str, fresh: bool) -> Result<Arc<dyn Sealer>> {
        let key = (tenant.to_owned(), kb.to_owned());
        if !fresh && let Some(sealer) = lock(&self.sealers).get(&key) {
            return Ok(sealer.clone());
        }
        let sealer =
            self.data
                .for_tenant(tenant)?
                .sealer(kb)?
                .ok_or_else(|| KbError::Database {
                    message: format!("knowledge base {kb:?} is no longer encrypted"),
                })?;
        lock(&self.sealers).insert(key, sealer.clone());
        Ok(sealer)
    }

    /// A job as stored: JSON, sealed with `sealer` when its knowledge base is encrypted.
    fn encode(job: &Job, sealer: Option<&Arc<dyn Sealer>>) -> (Vec<u8>, bool) {
        let json = serde_json::to_vec(job).unwrap_or_else(|_| unreachable!("a job serializes"));
        match sealer {
            Some(sealer) => (sealer.seal(&json), true),
            None => (json, false),
        }
    }

    /// A stored job read back, with the key it was sealed with (a knowledge base made again
    /// under its name has a new key: the cached one is read again once).
    fn decode(&self, row: &postgres::Row) -> Result<(Job, Option<Arc<dyn Sealer>>)> {
        let (id, tenant, kb): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let (bytes, sealed): (Vec<u8>, bool) = (row.get(3), row.get(4));
        let unreadable = |error: String| KbError::Database {
            message: format!("job {id} cannot be read here: {error}"),
        };
        let (json, sealer) = if sealed {
            let mut sealer = self.sealer(&tenant, &kb, false)?;
            let json = match sealer.open(&bytes) {
                Ok(json) => json,
                Err(_) => {
                    sealer = self.sealer(&tenant, &kb, true)?;
                    sealer.open(&bytes).map_err(unreadable)?
                }
            };
            (json, Some(sealer))
        } else {
            (bytes, None)
        };
        let job = serde_json::from_slice(&json).map_err(|error| unreadable(error.to_string()))?;
        Ok((job, sealer))
    }

    /// Writes `job`'s record (`record`, sealed or not), status and lease, if it is still
    /// `worker`'s; whether it was.
    fn store(
        client: &mut impl GenericClient,
        job: &Job,
        (record, sealed): &(Vec<u8>, bool),
        worker: &str,
    ) -> std::result::Result<bool, postgres::Error> {
        let lease_worker = job.lease.as_ref().map(|lease| lease.worker.as_str());
        let expires = job.lease.as_ref().map(|lease| lease.expires_ms as i64);
        let updated = client.execute(
            "UPDATE basalt.jobs SET status = $2, lease_worker = $3, lease_expires_ms = $4, \
             record = $5, sealed = $6 \
             WHERE id = $1 AND status = 'running' AND lease_worker = $7",
            &[
                &job.id,
                &status_name(job.status),
                &lease_worker,
                &expires,
                record,
                sealed,
                &worker,
            ],
        )?;
        Ok(updated > 0)
    }

    /// The rows of jobs, decoded; jobs that cannot be read (their knowledge base's key is
    /// gone) are skipped with a warning. A job this process runs shows its progress as of now
    /// (the database has it as of the last write, at most [`PROGRESS_EVERY`] ago).
    fn jobs(&self, rows: &[postgres::Row]) -> Vec<Job> {
        let running = lock(&self.running);
        rows.iter()
            .filter_map(|row| match self.decode(row) {
                Ok((mut job, _)) => {
                    if let Some(ours) = running.get(&job.id)
                        && job.status == JobStatus::Running
                        && job.lease == ours.job.lease
                    {
                        job.progress = ours.job.progress;
                    }
                    Some(job)
                }
                Err(error) => {
                    tracing::warn!(%error, "skipping a job record");
                    None
                }
            })
            .collect()
    }
}

const COLUMNS: &str = "id, tenant, kb, record, sealed";

impl JobQueue for PgJobQueue {
    fn submit(&self, mut job: Job, sealer: Option<Arc<dyn Sealer>>) -> Result<()> {
        job.status = JobStatus::Queued;
        job.lease = None;
        let (record, sealed) = Self::encode(&job, sealer.as_ref());
        self.database.run(|client| {
            client.execute(
                "INSERT INTO basalt.jobs (id, tenant, kb, status, created_at, record, sealed) \
                 VALUES ($1, $2, $3, 'queued', $4, $5, $6)",
                &[
                    &job.id,
                    &job.tenant,
                    &job.kb,
                    &job.created_at,
                    &record,
                    &sealed,
                ],
            )
        })?;
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Job>> {
        let row = self.database.run(|client| {
            client.query_opt(
                &format!("SELECT {COLUMNS} FROM basalt.jobs WHERE id = $1"),
                &[&id],
            )
        })?;
        Ok(row.and_then(|row| self.jobs(&[row]).pop()))
    }

    fn list(&self, tenant: &str, kb: Option<&str>) -> Result<Vec<Job>> {
        let rows = self.database.run(|client| {
            client.query(
                &format!(
                    "SELECT {COLUMNS} FROM basalt.jobs WHERE tenant = $1 \
                     AND ($2::text IS NULL OR kb = $2) ORDER BY created_at DESC, id DESC"
                ),
                &[&tenant, &kb],
            )
        })?;
        Ok(self.jobs(&rows))
    }

    fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>> {
        let lease_ms = lease.as_millis() as i64;
        loop {
            // The oldest claimable job nobody else is claiming right now: its lease columns
            // are set in one statement (`SKIP LOCKED`: a job another replica is claiming is
            // passed over, not waited for). Its record is updated next, outside, since
            // opening a sealed one may need the catalog.
            let row = self.database.run(|client| {
                client.query_opt(
                    &format!(
                        "UPDATE basalt.jobs SET status = 'running', lease_worker = $1, \
                             lease_expires_ms = {NOW_MS} + $2 \
                         WHERE id = (SELECT id FROM basalt.jobs \
                             WHERE status IN ('queued', 'running') \
                             AND (status = 'queued' OR lease_expires_ms <= {NOW_MS}) \
                             ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                         RETURNING {COLUMNS}, lease_expires_ms"
                    ),
                    &[&worker, &lease_ms],
                )
            })?;
            let Some(row) = row else {
                return Ok(None);
            };
            // Unreadable here (no master key, a database error): the lease just taken runs
            // out and another worker — or this one, later — tries again; the next claim
            // passes over it meanwhile.
            let (mut job, sealer) = self.decode(&row)?;
            let expires: i64 = row.get(5);
            job.status = JobStatus::Running;
            job.started_at = Some(basalt_core::clock::now_rfc3339());
            job.lease = Some(Lease {
                worker: worker.to_owned(),
                expires_ms: expires.max(0) as u64,
            });
            job.attempts += 1;
            let stored = Self::encode(&job, sealer.as_ref());
            if !self
                .database
                .run(|client| Self::store(client, &job, &stored, worker))?
            {
                continue; // its lease ran out meanwhile and another replica has it
            }
            lock(&self.running).insert(
                job.id.clone(),
                Running {
                    job: job.clone(),
                    sealer,
                    written: Instant::now(),
                },
            );
            return Ok(Some(job));
        }
    }

    fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        progress: JobProgress,
        lease: Duration,
    ) -> Result<bool> {
        let mut running = lock(&self.running);
        let Some(ours) = running
            .get_mut(id)
            .filter(|ours| ours.job.leased_to(worker))
        else {
            return Ok(false);
        };
        ours.job.progress = progress;
        let due = ours.job.lease.as_ref().map_or(0, |lease| lease.expires_ms);
        let renew = crate::jobs::now_ms().saturating_add(lease.as_millis() as u64 / 2) >= due;
        if !renew && ours.written.elapsed() < PROGRESS_EVERY {
            return Ok(true);
        }
        let mut renewed = ours.job.clone();
        let lease_ms = lease.as_millis() as i64;
        let sealer = ours.sealer.clone();
        let still_ours = self.database.run(|client| {
            let mut transaction = client.transaction()?;
            let now: i64 = transaction
                .query_one(&format!("SELECT {NOW_MS}"), &[])?
                .get(0);
            if let Some(held) = &mut renewed.lease {
                held.expires_ms = (now + lease_ms).max(0) as u64;
            }
            let stored = Self::encode(&renewed, sealer.as_ref());
            let ours = Self::store(&mut transaction, &renewed, &stored, worker)?;
            transaction.commit()?;
            Ok(ours)
        })?;
        if still_ours {
            ours.job = renewed;
            ours.written = Instant::now();
        } else {
            running.remove(id);
        }
        Ok(still_ours)
    }

    fn finish(
        &self,
        id: &str,
        worker: &str,
        outcome: std::result::Result<IngestReport, String>,
    ) -> Result<bool> {
        let Running {
            mut job, sealer, ..
        } = {
            let mut running = lock(&self.running);
            match running.remove(id) {
                Some(ours) if ours.job.leased_to(worker) => ours,
                Some(another) => {
                    running.insert(id.to_owned(), another);
                    return Ok(false);
                }
                None => return Ok(false),
            }
        };
        job.end(outcome);
        let stored = Self::encode(&job, sealer.as_ref());
        let finished = self.database.run(|client| {
            let mut transaction = client.transaction()?;
            let ours = Self::store(&mut transaction, &job, &stored, worker)?;
            if ours {
                // The oldest finished jobs beyond what is kept, with any files left of them.
                transaction.execute(
                    "WITH gone AS (DELETE FROM basalt.jobs WHERE id IN ( \
                         SELECT id FROM basalt.jobs WHERE status IN ('completed', 'failed') \
                         ORDER BY created_at DESC, id DESC OFFSET $1) RETURNING id) \
                     DELETE FROM basalt.uploads WHERE job_id IN (SELECT id FROM gone)",
                    &[&(KEEP_FINISHED as i64)],
                )?;
            }
            transaction.commit()?;
            Ok(ours)
        })?;
        Ok(finished)
    }

    fn keep_upload(&self, id: &str, dir: &Path) -> Result<()> {
        let files = crate::jobs::spooled_files(dir)?;
        self.database.run(|client| {
            let mut transaction = client.transaction()?;
            for (position, (name, bytes)) in files.iter().enumerate() {
                transaction.execute(
                    "INSERT INTO basalt.uploads (job_id, position, name, bytes) \
                     VALUES ($1, $2, $3, $4)",
                    &[&id, &(position as i32), name, bytes],
                )?;
            }
            transaction.commit()
        })
    }

    fn fetch_upload(&self, id: &str, dir: &Path) -> Result<bool> {
        if dir.is_dir() {
            return Ok(true);
        }
        let rows = self.database.run(|client| {
            client.query(
                "SELECT name, bytes FROM basalt.uploads WHERE job_id = $1 ORDER BY position",
                &[&id],
            )
        })?;
        if rows.is_empty() {
            return Ok(false);
        }
        crate::jobs::write_spool(
            dir,
            rows.into_iter().map(|row| Ok((row.get(0), row.get(1)))),
        )?;
        Ok(true)
    }

    fn drop_upload(&self, id: &str, dir: &Path) -> Result<()> {
        self.database.run(|client| {
            client
                .execute("DELETE FROM basalt.uploads WHERE job_id = $1", &[&id])
                .map(drop)
        })?;
        crate::jobs::remove_spool(dir)
    }
}
