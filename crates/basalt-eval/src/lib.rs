//! Evaluation of answers: the lexical metrics ([`metrics`]), reports people can read
//! ([`report`]: JSON, Markdown, self-contained HTML with charts), and the comparison of runs
//! and the CI gate ([`gate`]). Running the questions is the CLI's (`basalt eval answers`);
//! faithfulness and citation support come from `basalt-answer`'s grounding scorer.

pub mod gate;
pub mod metrics;
pub mod report;

pub use report::{AnswerReport, QuestionRecord};
