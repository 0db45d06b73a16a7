pub type Result<T, E = AnswerError> = std::result::Result<T, E>;

/// What can stop an answer, phrased for the person asking.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the question is empty")]
    EmptyQuestion,

    #[error(
        "the model's context window ({window} tokens) cannot hold a passage and a \
         {max_tokens}-token answer; lower --max-tokens or load the model with a larger context"
    )]
    ContextTooSmall { window: usize, max_tokens: usize },

    #[error("the answer was cancelled")]
    Cancelled,

    #[error(transparent)]
    Kb(#[from] basalt_kb::KbError),

    #[error(transparent)]
    Model(#[from] basalt_model::ModelError),
}
