//! What both llama.cpp engines share: the process-wide backend, log routing, checked model
//! loading, and the dedicated worker thread an engine's model and context live on.

use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;

use crate::error::{ModelError, Result};

/// llama.cpp's backend may be initialised once per process.
pub(crate) fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every tensor it loads; route it to `tracing`, where the default
            // filter keeps only warnings.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|error| error.to_string())
        })
        .as_ref()
        .map_err(|reason| ModelError::Inference(format!("llama.cpp did not start: {reason}")))
}

/// Loads a GGUF after checking it is present, complete and of the expected architecture.
pub(crate) fn load_model(
    path: &Path,
    expected: &str,
    architecture_ok: impl Fn(&str) -> bool,
) -> Result<LlamaModel> {
    crate::catalog::check_known_size(path)?;
    let summary = crate::gguf::check_file(path)?;
    let architecture = summary.architecture.unwrap_or_default();
    if !architecture_ok(&architecture) {
        return Err(ModelError::WrongModel {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            reason: format!("its architecture is {architecture:?}"),
        });
    }
    let backend = backend()?;
    let params = LlamaModelParams::default();
    LlamaModel::load_from_file(backend, path, &params).map_err(|error| ModelError::Load {
        path: path.to_path_buf(),
        reason: format!("llama.cpp rejected the file ({error}); it may be corrupt"),
    })
}

/// Threads llama.cpp should use, defaulting to every core the process may run on.
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
