use std::path::PathBuf;

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// What can go wrong in an index, phrased for the person who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "the index at {path} is being written by another process (an ingest or delete still \
         running?); wait for it to finish and try again"
    )]
    Locked { path: PathBuf },

    #[error("a vector has {found} dimensions, but this knowledge base stores {expected}")]
    Dimension { expected: usize, found: usize },

    #[error("{mode} search needs a query vector")]
    MissingQueryVector { mode: &'static str },

    #[error("unknown analyzer {name:?}; choose one of {choices}")]
    UnknownAnalyzer { name: String, choices: String },

    #[error("the index at {path} is damaged or from an incompatible version: {message}")]
    Corrupt { path: PathBuf, message: String },

    #[error("index operation failed at {path}: {message}")]
    Engine { path: PathBuf, message: String },
}
