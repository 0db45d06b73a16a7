//! The inference gate: one compute job at a time across every local engine of the process.
//!
//! llama.cpp's CPU threads busy-wait, so two engines computing at once on a 2-core machine slow
//! each other down more than taking turns does. Each engine holds the gate for one step (a prompt
//! chunk, one decoded token, one embedding batch), and waiting interactive work (a single search
//! query) goes before waiting bulk work, so a query never sits behind a whole ingestion.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// How urgent a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// A single query or a token of a streamed answer: a person is waiting for it.
    Interactive,
    /// Batches of passages during ingestion.
    Bulk,
}

#[derive(Debug, Default)]
struct GateState {
    busy: bool,
    interactive_waiting: usize,
}

/// Shared by every engine that should take turns; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct InferenceGate {
    inner: Arc<(Mutex<GateState>, Condvar)>,
}

/// Held while an engine computes; dropping it lets the next step in.
#[derive(Debug)]
pub(crate) struct GatePass<'a> {
    gate: &'a InferenceGate,
}

impl InferenceGate {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // A panic while holding the lock leaves only counters behind, which stay valid.
        self.inner
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn enter(&self, priority: Priority) -> GatePass<'_> {
        let condvar = &self.inner.1;
        let mut state = self.lock();
        if priority == Priority::Interactive {
            state.interactive_waiting += 1;
        }
        loop {
            let blocked =
                state.busy || (priority == Priority::Bulk && state.interactive_waiting > 0);
            if !blocked {
                break;
            }
            state = condvar
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if priority == Priority::Interactive {
            state.interactive_waiting -= 1;
        }
        state.busy = true;
        GatePass { gate: self }
    }
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        self.gate.lock().busy = false;
        self.gate.inner.1.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn steps_never_overlap() {
        let gate = InferenceGate::new();
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let gate = gate.clone();
                let inside = inside.clone();
                std::thread::spawn(move || {
                    let priority = if i % 2 == 0 {
                        Priority::Bulk
                    } else {
                        Priority::Interactive
                    };
                    for _ in 0..200 {
                        let _pass = gate.enter(priority);
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no step overlapped");
        }
    }

    #[test]
    fn interactive_goes_before_waiting_bulk() {
        let gate = InferenceGate::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        let pass = gate.enter(Priority::Bulk);
        let spawn = |priority: Priority, label: &'static str| {
            let gate = gate.clone();
            let order = order.clone();
            std::thread::spawn(move || {
                let _pass = gate.enter(priority);
                order.lock().expect("order").push(label);
            })
        };
        let bulk = spawn(Priority::Bulk, "bulk");
        std::thread::sleep(Duration::from_millis(50));
        let interactive = spawn(Priority::Interactive, "interactive");
        // Wait until the interactive step is registered as waiting before releasing.
        while gate.lock().interactive_waiting == 0 {
            std::thread::yield_now();
        }
        drop(pass);
        bulk.join().expect("bulk");
        interactive.join().expect("interactive");
        assert_eq!(*order.lock().expect("order"), vec!["interactive", "bulk"]);
    }
}
