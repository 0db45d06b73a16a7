//! Guardrails for Basalt: detectors that look at text going into and coming out of a model.
//!
//! - [`pii`]: structured personal data and secrets, with checksums where formats have them;
//! - [`words`]: custom words and phrases, and a maintained profanity list (`rustrict`);
//! - [`topics`]: denied topics, recognised by embedding similarity;
//! - [`attacks`]: prompt attacks (instruction overrides, jailbreaks, injected instructions in
//!   retrieved passages), by a linear classifier trained from labelled prompts;
//! - [`config`]: named configurations (JSON, validated) that say what to do with each finding
//!   on input and on output — nothing, anonymize (`{EMAIL}`) or block — and apply them;
//! - [`store`]: configurations kept by name and version in the data directory;
//! - [`stream`]: streamed output checked a window at a time before any of it is released;
//! - [`eval`]: precision, recall, F1 and false-positive rate on labelled data.

pub mod attacks;
pub mod config;
pub mod eval;
pub mod pii;
pub mod store;
pub mod stream;
pub mod testing;
pub mod topics;
pub mod words;

pub use attacks::AttackClassifier;
pub use config::{Action, Checked, GuardModels, Guardrail, GuardrailConfig, Outcome, Source};
pub use pii::{CustomPattern, Detector, EntityType, Finding};
pub use store::conformance as guardrail_conformance;
pub use store::{GuardrailConfigs, GuardrailStore, StoreError};
pub use stream::{Release, StreamGuard};
