//! The dedicated worker thread each local engine's state lives on (a llama.cpp model and its
//! context, or the native encoder's pool), fed through a channel, one job at a time.

use crate::error::{ModelError, Result};

/// Threads an engine uses unless told otherwise: every core the process may run on.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
}

/// A running worker: jobs go in through [`Worker::send`]. Dropping it closes the job channel and
/// waits for the thread to end — at most the step it is in, since a job whose caller went away
/// stops at its next step. Without the wait, a process could return from `main` while a worker
/// is still inside llama.cpp, whose static objects the exit then destroys under it (a
/// segmentation fault after `basalt ask` printed its answer, one run in three).
#[derive(Debug)]
pub(crate) struct Worker<Job> {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<Job> Worker<Job> {
    pub(crate) fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or(ModelError::WorkerGone)?
            .send(job)
            .map_err(|_| ModelError::WorkerGone)
    }
}

impl<Job> Drop for Worker<Job> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            // A worker that panicked has nothing left to wait for.
            let _ = thread.join();
        }
    }
}

/// Starts a named worker thread that builds its engine state with `init` and then serves jobs
/// from `jobs` until every sender is gone. `init`'s result is reported back before this returns,
/// so load errors surface to the caller.
pub(crate) fn spawn_worker<Job: Send + 'static>(
    name: &str,
    init_and_serve: impl FnOnce(&dyn Fn(Result<()>), std::sync::mpsc::Receiver<Job>) + Send + 'static,
) -> Result<Worker<Job>> {
    let (job_sender, job_receiver) = std::sync::mpsc::channel::<Job>();
    let (ready_sender, ready_receiver) = std::sync::mpsc::sync_channel::<Result<()>>(1);
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let report = move |result: Result<()>| {
                // The caller may have given up waiting; nothing to do then.
                let _ = ready_sender.send(result);
            };
            init_and_serve(&report, job_receiver);
        })
        .map_err(|error| ModelError::Inference(format!("could not start {name}: {error}")))?;
    let worker = Worker {
        jobs: Some(job_sender),
        thread: Some(thread),
    };
    ready_receiver
        .recv()
        .map_err(|_| ModelError::WorkerGone)??;
    Ok(worker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Dropping the handle waits for the job in progress: the process cannot leave `main` with
    /// a worker still computing.
    #[test]
    fn dropping_a_worker_waits_for_its_job_in_progress() {
        let finished = Arc::new(AtomicBool::new(false));
        let started = Arc::new(std::sync::Barrier::new(2));
        let worker = {
            let finished = finished.clone();
            let started = started.clone();
            spawn_worker(
                "test-worker",
                move |ready, jobs: std::sync::mpsc::Receiver<()>| {
                    ready(Ok(()));
                    for () in jobs {
                        started.wait();
                        std::thread::sleep(Duration::from_millis(200));
                        finished.store(true, Ordering::SeqCst);
                    }
                },
            )
            .expect("starts")
        };
        worker.send(()).expect("sent");
        started.wait();
        drop(worker);
        assert!(finished.load(Ordering::SeqCst), "the drop returned mid-job");
    }
}
