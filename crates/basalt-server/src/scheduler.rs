//! Inference admission: a fixed number of jobs run at once (one by default — two jobs that
//! busy-wait on two cores collapse each other's throughput), a bounded queue waits behind them,
//! and everything beyond is refused with 429 and `Retry-After` instead of piling up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct Scheduler {
    running: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    max_wait: Duration,
}

/// Held while a job runs; dropping it lets the next one in.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Scheduler {
    pub fn new(concurrent: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Scheduler {
            running: Arc::new(Semaphore::new(concurrent.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            max_wait,
        }
    }

    /// Jobs waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits for a slot as long as it takes, outside the request queue: for background work
    /// (ingestion jobs take a turn per embedding batch, so answers interleave with them).
    pub async fn background_turn(&self) -> Result<Slot, ApiError> {
        match self.running.clone().acquire_owned().await {
            Ok(permit) => Ok(Slot { _permit: permit }),
            Err(_) => Err(ApiError::internal("the scheduler was shut down")),
        }
    }

    /// Waits for a slot: 429 at once when the queue is full, 503 when the wait would exceed
    /// the limit.
    pub async fn admit(&self) -> Result<Slot, ApiError> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!(
                    "the server is busy ({} requests already waiting); retry shortly",
                    self.max_waiting
                ),
            );
            error.retry_after = Some(2);
            return Err(error);
        }
        let acquired =
            tokio::time::timeout(self.max_wait, self.running.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match acquired {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            Ok(Err(_)) => Err(ApiError::internal("the scheduler was shut down")),
            Err(_) => {
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue_timeout",
                    format!(
                        "waited {} s for the model without getting a turn; retry later",
                        self.max_wait.as_secs()
                    ),
                );
                error.retry_after = Some(5);
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_runs_the_queue_waits_and_the_rest_is_refused() {
        let scheduler = Scheduler::new(1, 1, Duration::from_millis(200));
        let first = scheduler.admit().await.expect("runs");
        let waiter = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.admit().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(scheduler.waiting(), 1);
        let refused = scheduler.admit().await.expect_err("queue full");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(2));
        drop(first);
        let second = waiter
            .await
            .expect("joins")
            .expect("admitted after the first");
        let timed_out = scheduler.admit().await.expect_err("waits too long");
        assert_eq!(timed_out.status, StatusCode::SERVICE_UNAVAILABLE);
        drop(second);
        scheduler.admit().await.expect("free again");
    }
}
