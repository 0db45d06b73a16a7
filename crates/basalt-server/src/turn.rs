//! A guarded turn run for a request: the scheduler admits it (a blocked input runs no model and
//! waits for no turn), it runs on a blocking thread, what it shows goes to the response as it
//! comes, and a guardrail block is recorded in the audit trail. The routes only translate
//! [`Progress`] into their wire format.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use basalt_answer::{Engines, GuardReport, GuardedTurn, Reply, TurnEvent};
use basalt_guard::Source;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::guard::ActiveGuardrail;

/// Sets the flag when the request goes away (client disconnect, timeout), so the blocking
/// generation stops at its next token.
pub(crate) struct CancelOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Waits for the worker's last message (`finish` picks it out, skipping progress) within the
/// request timeout. If the request goes away first — the client disconnected, or the timeout
/// passed — the work is cancelled.
pub(crate) async fn final_message<M, T>(
    cancel: Arc<AtomicBool>,
    receiver: &mut mpsc::Receiver<M>,
    timeout: std::time::Duration,
    finish: impl Fn(M) -> Option<Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let _guard = CancelOnDrop(cancel);
    let collect = async {
        while let Some(message) = receiver.recv().await {
            if let Some(result) = finish(message) {
                return result;
            }
        }
        Err(ApiError::internal("the work stopped unexpectedly"))
    };
    tokio::time::timeout(timeout, collect)
        .await
        .unwrap_or_else(|_| Err(ApiError::timed_out(timeout)))
}

/// What a running turn reports to the response.
pub(crate) enum Progress {
    Event(TurnEvent),
    Done(Box<Reply>),
    Failed(ApiError),
}

/// A turn on its way: its reports, and the flag that stops it (set it, or drop a
/// `CancelOnDrop` holding it, when the request goes away).
pub(crate) struct Running {
    pub(crate) progress: mpsc::Receiver<Progress>,
    pub(crate) cancel: Arc<AtomicBool>,
}

impl Running {
    /// The finished turn, skipping its progress, within `timeout`; the turn stops if the
    /// request goes away first.
    pub(crate) async fn reply(mut self, timeout: std::time::Duration) -> Result<Reply, ApiError> {
        let reply =
            final_message(
                self.cancel,
                &mut self.progress,
                timeout,
                |progress| match progress {
                    Progress::Event(_) => None,
                    Progress::Done(reply) => Some(Ok(reply)),
                    Progress::Failed(error) => Some(Err(error)),
                },
            )
            .await?;
        Ok(*reply)
    }
}

/// Starts `turn` for `caller`, guarded by `active` (the guardrail the turn was checked with).
/// `generator` writes it when given (a model served elsewhere), else the embedded model.
pub(crate) async fn start(
    state: &AppState,
    caller: &Caller,
    turn: GuardedTurn,
    active: Option<ActiveGuardrail>,
    generator: Option<Arc<dyn basalt_model::Generator>>,
) -> Result<Running, ApiError> {
    let slot = match (turn.blocked_input(), &active) {
        (Some(_), Some(active)) => {
            active.audit_block(state, caller, Source::Input, turn.input_findings());
            None
        }
        _ => Some(state.scheduler.admit(caller.queue_key()).await?),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let (sender, progress) = mpsc::channel::<Progress>(64);
    let state = state.clone();
    let caller = caller.clone();
    let flag = cancel.clone();
    let generator = generator.unwrap_or_else(|| state.generator.clone());
    let embedder = match turn.knowledge_base() {
        Some(kb) => state.embedder_for(kb)?,
        None => state.embedder.clone(),
    };
    drop(tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let engines = Engines {
            embedder: embedder.as_ref(),
            generator: generator.as_ref(),
        };
        let result = turn.run(engines, &flag, &mut |event| {
            // A response that is gone has set the flag: the turn stops at its next token.
            let _ = sender.blocking_send(Progress::Event(event));
        });
        let progress = match result {
            Ok(reply) => {
                if let (Some(Source::Output), Some(active), Some(report)) =
                    (reply.blocked, &active, &reply.guard)
                {
                    active.audit_block(&state, &caller, Source::Output, &report.output);
                }
                Progress::Done(Box::new(reply))
            }
            Err(error) => Progress::Failed(error.into()),
        };
        let _ = sender.blocking_send(progress);
    }));
    Ok(Running { progress, cancel })
}

/// What a guardrail did to one request, for the response (`guardrail_trace: true`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct GuardrailTrace {
    pub(crate) name: String,
    pub(crate) version: u32,
    #[serde(flatten)]
    pub(crate) report: GuardReport,
}

impl GuardrailTrace {
    /// The trace of `reply` when the request asked for one and a guardrail ran.
    pub(crate) fn of(
        wanted: bool,
        active: Option<&ActiveGuardrail>,
        reply: &Reply,
    ) -> Option<GuardrailTrace> {
        let (active, report) = (active?, reply.guard.as_ref()?);
        wanted.then(|| GuardrailTrace {
            name: active.name.clone(),
            version: active.version,
            report: report.clone(),
        })
    }
}
