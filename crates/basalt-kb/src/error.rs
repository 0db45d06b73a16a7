use std::path::{Path, PathBuf};

pub type Result<T, E = KbError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error(
        "no knowledge base named {name:?}; create it with `basalt kb create {name}` (see `basalt kb list`)"
    )]
    NotFound { name: String },

    #[error("a knowledge base named {name:?} exists already")]
    Exists { name: String },

    #[error("invalid knowledge base name {name:?}: use 1–64 letters, digits, '-', '_' or '.'")]
    BadName { name: String },

    #[error("{message}")]
    BadSettingsValue { message: String },

    #[error("bad access map {path}: {message}")]
    BadAccessMap { path: PathBuf, message: String },

    #[error("cannot read the knowledge base settings {path}: {message}")]
    BadSettings { path: PathBuf, message: String },

    #[error(
        "the knowledge base was built with a {expected}-dimensional embedding model, but the \
         loaded model gives {found} dimensions"
    )]
    ModelMismatch { expected: usize, found: usize },

    /// The I/O error is part of the message, not a separate cause: printing the cause chain
    /// would say it twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error(transparent)]
    Index(#[from] basalt_index::IndexError),

    #[error(transparent)]
    Model(#[from] basalt_model::ModelError),

    #[error("{0}")]
    Dataset(String),

    #[error(
        "knowledge base {name:?} is encrypted (master key {key_id}): set BASALT_MASTER_KEY_FILE \
         to the master key file (or BASALT_MASTER_KEY to its 64 hex digits)"
    )]
    MasterKeyRequired { name: String, key_id: String },

    #[error(transparent)]
    Security(#[from] basalt_security::SecurityError),

    /// PostgreSQL (`--database`) is unreachable, not migrated, or refused a query.
    #[error("the database: {message}")]
    Database { message: String },

    /// The S3-compatible object store (`--objects`, an `s3://` source) is unreachable or
    /// refused a request.
    #[error(transparent)]
    Objects(#[from] basalt_objects::ObjectsError),
}

impl KbError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        KbError::Io {
            path: path.to_owned(),
            error,
        }
    }
}
