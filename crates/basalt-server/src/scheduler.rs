//! Inference admission: a fixed number of jobs run at once (one by default — the CPU serves one
//! generation at full speed), the rest wait in one queue per API key, and a freed slot goes to
//! the next key in turn (round robin), so one key sending many requests delays its own, not
//! everyone's. Each key may have a few requests running or waiting; beyond that, and beyond
//! the server's whole queue, requests are refused with 429 and `Retry-After` instead of piling
//! up, and a request that waits too long gets 503.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{ApiError, Code};

/// The queue ingestion jobs wait in: one more party to the round robin, with no limits.
const BACKGROUND: &str = "\0background";

#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Mutex<State>>,
    limits: Limits,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_waiting: usize,
    per_key: usize,
    max_wait: Duration,
}

#[derive(Debug)]
struct State {
    /// Slots not held by anyone.
    free: usize,
    /// Waiting requests by key, each in arrival order.
    queues: HashMap<String, VecDeque<oneshot::Sender<Slot>>>,
    /// Keys with waiting requests, in the order they are served.
    turns: VecDeque<String>,
    /// Requests running or waiting, by key.
    active: HashMap<String, usize>,
    waiting: usize,
}

/// Where a request stands once admitted: running now, or waiting for its slot.
enum Place {
    Now(Slot),
    Queued(oneshot::Receiver<Slot>),
}

/// Held while a job runs; dropping it hands the slot to the next key in turn.
#[derive(Debug)]
pub struct Slot {
    scheduler: Option<Scheduler>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.release(&self.key);
        }
    }
}

impl Scheduler {
    /// `concurrent` jobs run at once; at most `max_waiting` wait, at most `per_key` of one key
    /// run or wait, and none waits longer than `max_wait`.
    pub fn new(concurrent: usize, max_waiting: usize, per_key: usize, max_wait: Duration) -> Self {
        Scheduler {
            inner: Arc::new(Mutex::new(State {
                free: concurrent.max(1),
                queues: HashMap::new(),
                turns: VecDeque::new(),
                active: HashMap::new(),
                waiting: 0,
            })),
            limits: Limits {
                max_waiting,
                per_key: per_key.max(1),
                max_wait,
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counters and queues stay consistent between statements: a panic elsewhere cannot
        // leave them half-updated.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Jobs waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Waits for a turn as long as it takes, outside the request limits: for background work
    /// (ingestion jobs take a turn per embedding batch, so answers interleave with them).
    pub async fn background_turn(&self) -> Result<Slot, ApiError> {
        let receiver = match self.enqueue(BACKGROUND, false)? {
            Place::Now(slot) => return Ok(slot),
            Place::Queued(receiver) => receiver,
        };
        receiver
            .await
            .map_err(|_| ApiError::internal("the scheduler was shut down"))
    }

    /// Waits for a turn for a request of `key` (an API key id, or the principal without keys):
    /// 429 at once when that key already has its share running or waiting, or the queue is
    /// full; 503 when the wait would exceed the limit.
    pub async fn admit(&self, key: &str) -> Result<Slot, ApiError> {
        let receiver = match self.enqueue(key, true)? {
            Place::Now(slot) => return Ok(slot),
            Place::Queued(receiver) => receiver,
        };
        // Dropping the receiver (timeout, or the client went away) withdraws the request: the
        // slot it would have got goes to the next one.
        match tokio::time::timeout(self.limits.max_wait, receiver).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) => Err(ApiError::internal("the scheduler was shut down")),
            Err(_) => Err(ApiError::retry_later(
                Code::QueueTimeout,
                format!(
                    "waited {} s for the model without getting a turn; retry later",
                    self.limits.max_wait.as_secs()
                ),
            )),
        }
    }

    /// A slot at once if one is free and nobody waits, else a place in `key`'s queue.
    fn enqueue(&self, key: &str, limited: bool) -> Result<Place, ApiError> {
        let mut state = self.lock();
        state.forget_withdrawn();
        let active = state.active.get(key).copied().unwrap_or(0);
        if limited && active >= self.limits.per_key {
            let mut error = ApiError::new(
                Code::TooManyConcurrentRequests,
                format!(
                    "this API key already has {active} requests running or waiting, as many as \
                     one key may (the server's --max-requests-per-key); wait for one to finish"
                ),
            );
            error.retry_after = Some(2);
            return Err(error);
        }
        if state.free > 0 && state.waiting == 0 {
            state.free -= 1;
            *state.active.entry(key.to_owned()).or_default() += 1;
            return Ok(Place::Now(Slot {
                scheduler: Some(self.clone()),
                key: key.to_owned(),
            }));
        }
        if limited && state.waiting >= self.limits.max_waiting {
            let mut error = ApiError::new(
                Code::QueueFull,
                format!(
                    "the server is busy ({} requests already waiting); retry shortly",
                    self.limits.max_waiting
                ),
            );
            error.retry_after = Some(2);
            return Err(error);
        }
        let (sender, receiver) = oneshot::channel();
        *state.active.entry(key.to_owned()).or_default() += 1;
        state.waiting += 1;
        let queue = state.queues.entry(key.to_owned()).or_default();
        if queue.is_empty() {
            state.turns.push_back(key.to_owned());
        }
        state
            .queues
            .get_mut(key)
            .expect("just inserted")
            .push_back(sender);
        Ok(Place::Queued(receiver))
    }

    /// Gives the slot `key` held to the next key in turn that still has someone waiting.
    fn release(&self, key: &str) {
        let mut state = self.lock();
        state.done(key);
        let mut slot_free = true;
        while let Some(next) = state.turns.pop_front() {
            let Some(queue) = state.queues.get_mut(&next) else {
                continue;
            };
            let Some(sender) = queue.pop_front() else {
                state.queues.remove(&next);
                continue;
            };
            let more = !queue.is_empty();
            if more {
                state.turns.push_back(next.clone());
            } else {
                state.queues.remove(&next);
            }
            state.waiting -= 1;
            let slot = Slot {
                scheduler: Some(self.clone()),
                key: next.clone(),
            };
            match sender.send(slot) {
                Ok(()) => {
                    slot_free = false;
                    break;
                }
                Err(mut unclaimed) => {
                    // That request was withdrawn: it no longer counts, and the slot moves on.
                    unclaimed.scheduler = None;
                    state.done(&next);
                }
            }
        }
        if slot_free {
            state.free += 1;
        }
    }
}

impl State {
    /// One request of `key` ended (finished, or withdrawn before its turn).
    fn done(&mut self, key: &str) {
        if let Some(count) = self.active.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.active.remove(key);
            }
        }
    }

    /// Drops waiters whose requests went away (timed out, client disconnected), so they count
    /// neither against their key nor against the queue.
    fn forget_withdrawn(&mut self) {
        let mut withdrawn = Vec::new();
        for (key, queue) in &mut self.queues {
            let before = queue.len();
            queue.retain(|sender| !sender.is_closed());
            for _ in queue.len()..before {
                withdrawn.push(key.clone());
            }
        }
        for key in withdrawn {
            self.waiting -= 1;
            self.done(&key);
        }
        self.queues.retain(|_, queue| !queue.is_empty());
        let queues = &self.queues;
        self.turns.retain(|key| queues.contains_key(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn one_runs_the_queue_waits_and_the_rest_is_refused() {
        let scheduler = Scheduler::new(1, 1, 4, Duration::from_millis(200));
        let first = scheduler.admit("a").await.expect("runs");
        let waiter = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.admit("b").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(scheduler.waiting(), 1);
        let refused = scheduler.admit("c").await.expect_err("queue full");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.code, Code::QueueFull);
        assert_eq!(refused.retry_after, Some(2));
        drop(first);
        let second = waiter
            .await
            .expect("joins")
            .expect("admitted after the first");
        let timed_out = scheduler.admit("c").await.expect_err("waits too long");
        assert_eq!(timed_out.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(timed_out.retry_after, Some(5));
        drop(second);
        scheduler.admit("c").await.expect("free again");
        assert_eq!(scheduler.waiting(), 0);
    }

    #[tokio::test]
    async fn one_key_cannot_hold_more_than_its_share() {
        let scheduler = Scheduler::new(1, 16, 2, Duration::from_secs(5));
        let _running = scheduler.admit("greedy").await.expect("runs");
        let queued = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.admit("greedy").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = scheduler
            .admit("greedy")
            .await
            .expect_err("third of one key");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.code, Code::TooManyConcurrentRequests);
        assert!(refused.retry_after.is_some());
        // Another key still gets in line.
        let other = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.admit("polite").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(scheduler.waiting(), 2);
        queued.abort();
        other.abort();
    }

    /// The slot goes round the keys: a key that queued five requests before another key queued
    /// one is served once, then the other key, then the rest of its own.
    #[tokio::test]
    async fn freed_slots_go_round_the_keys() {
        let scheduler = Scheduler::new(1, 16, 8, Duration::from_secs(5));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = scheduler.admit("flood").await.expect("runs");
        let mut tasks = Vec::new();
        let mut spawn = |key: &'static str| {
            let scheduler = scheduler.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let slot = scheduler.admit(key).await.expect("admitted");
                order.lock().expect("order").push(key);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
        };
        for _ in 0..4 {
            spawn("flood");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        spawn("single");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        for task in tasks {
            task.await.expect("joins");
        }
        let order = order.lock().expect("order").clone();
        assert_eq!(order, ["flood", "single", "flood", "flood", "flood"]);
    }

    #[tokio::test]
    async fn a_withdrawn_request_gives_its_place_up() {
        let scheduler = Scheduler::new(1, 1, 1, Duration::from_secs(5));
        let running = scheduler.admit("a").await.expect("runs");
        let gone = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.admit("b").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        // b's place is free again, for b as for the queue.
        let next = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.admit("b").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(running);
        next.await.expect("joins").expect("b runs");
        assert_eq!(scheduler.waiting(), 0);
    }

    #[tokio::test]
    async fn background_work_takes_turns_without_limits() {
        let scheduler = Scheduler::new(1, 0, 1, Duration::from_millis(50));
        let running = scheduler.admit("a").await.expect("runs");
        let background = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.background_turn().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(running);
        let turn = background.await.expect("joins").expect("a turn");
        drop(turn);
        scheduler.admit("a").await.expect("free again");
    }
}
