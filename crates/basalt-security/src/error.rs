use std::path::{Path, PathBuf};

pub type Result<T, E = SecurityError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("invalid policy: {message}")]
    BadPolicy { message: String },

    #[error("{message}")]
    Invalid { message: String },

    #[error("no {what} named {name:?}")]
    NotFound { what: &'static str, name: String },

    #[error("{path} is damaged: {message}")]
    Corrupt { path: PathBuf, message: String },

    #[error(
        "the master key given ({given}) is not the one this data was encrypted with ({needed}): \
         set BASALT_MASTER_KEY_FILE (or BASALT_MASTER_KEY) to the right key"
    )]
    WrongMasterKey { needed: String, given: String },

    /// The shared store (PostgreSQL, `--database`) cannot be reached or refused a query.
    #[error("the database: {message}")]
    Unavailable { message: String },

    #[error("the operating system's random source failed: {0}")]
    Random(String),

    /// The I/O error is part of the message, not a separate cause.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl SecurityError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        SecurityError::Io {
            path: path.to_owned(),
            error,
        }
    }
}
