//! The dedicated worker thread each local engine's state lives on (a llama.cpp model and its
//! context, or the native encoder's pool), fed through a channel, one job at a time.

use crate::error::{ModelError, Result};

/// Threads an engine uses unless told otherwise: every core the process may run on.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
}

/// Starts a named worker thread that builds its engine state with `init` and then serves jobs
/// from `jobs` until every sender is gone. `init`'s result is reported back before this returns,
/// so load errors surface to the caller.
pub(crate) fn spawn_worker<Job: Send + 'static>(
    name: &str,
    init_and_serve: impl FnOnce(&dyn Fn(Result<()>), std::sync::mpsc::Receiver<Job>) + Send + 'static,
) -> Result<std::sync::mpsc::Sender<Job>> {
    let (job_sender, job_receiver) = std::sync::mpsc::channel::<Job>();
    let (ready_sender, ready_receiver) = std::sync::mpsc::sync_channel::<Result<()>>(1);
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let report = move |result: Result<()>| {
                // The caller may have given up waiting; nothing to do then.
                let _ = ready_sender.send(result);
            };
            init_and_serve(&report, job_receiver);
        })
        .map_err(|error| ModelError::Inference(format!("could not start {name}: {error}")))?;
    ready_receiver
        .recv()
        .map_err(|_| ModelError::WorkerGone)??;
    Ok(job_sender)
}
