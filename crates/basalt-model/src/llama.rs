//! What both llama.cpp engines share: the process-wide backend, log routing and checked model
//! loading.

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

/// The CPU features the linked llama.cpp was compiled with, as llama.cpp itself reports them:
/// `"CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | … |"`. These are compile-time choices (llama.cpp
/// runs every kernel it was compiled with, whatever the CPU), so this says which CPUs the
/// binary's generation can run on; `AMX_INT8` must never appear (docs/models.md).
pub fn llama_system_info() -> String {
    // llama.cpp builds the string in one static buffer: calls must not overlap.
    static CALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serialized = CALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    #[allow(unsafe_code)]
    // SAFETY: `llama_print_system_info` takes no arguments and returns a pointer to a
    // NUL-terminated string owned by llama.cpp, valid until its next call, which the mutex above
    // keeps from happening before the string is copied here.
    let text = unsafe {
        let pointer = llama_cpp_sys_2::llama_print_system_info();
        if pointer.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(pointer)
            .to_string_lossy()
            .into_owned()
    };
    text
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
