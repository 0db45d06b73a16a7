//! The one error type of the model crate. Every message says what went wrong and, where the user
//! can fix it, the command that does.

use std::path::PathBuf;

/// Everything that can go wrong while provisioning, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model file {path} is missing; run `basalt models fetch` (or `scripts/setup.sh`) to install it"
    )]
    MissingFile { path: PathBuf },

    #[error(
        "model file {path} is corrupt: {reason}; delete it and run `basalt models fetch` to reinstall it"
    )]
    CorruptFile { path: PathBuf, reason: String },

    #[error(
        "{path} is not the expected model: {reason}; point the path at a {expected} model or run `basalt models fetch`"
    )]
    WrongModel {
        path: PathBuf,
        expected: String,
        reason: String,
    },

    #[error("could not load model {path}: {reason}")]
    Load { path: PathBuf, reason: String },

    #[error(
        "the prompt is {prompt_tokens} tokens but the model's context window is {context_window}; shorten the prompt"
    )]
    PromptTooLong {
        prompt_tokens: usize,
        context_window: usize,
    },

    #[error(
        "the model's context window is {context_window} tokens: the prompt takes {prompt_tokens} and max_tokens asks for {max_tokens} more, so at most {} completion tokens fit; lower max_tokens or shorten the prompt",
        context_window.saturating_sub(*prompt_tokens)
    )]
    CompletionTooLong {
        prompt_tokens: usize,
        max_tokens: usize,
        context_window: usize,
    },

    #[error("invalid request: {0}")]
    InvalidRequest(String),

    #[error("inference failed: {0}")]
    Inference(String),

    #[error("model server of {model}: {reason}")]
    Remote { model: String, reason: String },

    /// The shared registry of remote models (PostgreSQL, `--database`) cannot be reached.
    #[error("the registry of remote models: {0}")]
    RegistryUnavailable(String),

    #[error("the inference worker stopped unexpectedly; restart the process")]
    WorkerGone,

    #[error("while provisioning models: {0}")]
    Provision(String),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

pub(crate) type Result<T, E = ModelError> = std::result::Result<T, E>;
