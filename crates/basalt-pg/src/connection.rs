//! One connection to PostgreSQL, shared by the threads of a process: made when first needed,
//! made again when it broke (a restarted database, a dropped socket), and used and dropped only
//! where the synchronous driver may block ([`off_runtime`]).

use std::sync::{Mutex, PoisonError};

use postgres::Client;

/// What a new connection runs first (session settings, a schema check).
pub type Setup = fn(&mut Client) -> Result<(), String>;

/// A database URL and the connection to it.
pub struct Connection {
    url: String,
    setup: Setup,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        formatter.write_str("Connection(<url>)")
    }
}

impl Connection {
    /// A connection to `url`, made at the first [`Connection::run`]; `setup` runs on each new
    /// one.
    pub fn new(url: &str, setup: Setup) -> Self {
        Connection {
            url: url.to_owned(),
            setup,
            client: Mutex::new(None),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `work` on the connection, connecting first when there is none or it broke; an
    /// error connecting is `unavailable`'s. One caller at a time.
    pub fn run<T: Send, E: Send>(
        &self,
        unavailable: impl FnOnce(String) -> E + Send,
        work: impl FnOnce(&mut Client) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        off_runtime(|| {
            let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = None;
                let made = crate::migrations::connect(&self.url)
                    .and_then(|mut client| (self.setup)(&mut client).map(|()| client));
                *slot = Some(made.map_err(unavailable)?);
            }
            let Some(client) = slot.as_mut() else {
                unreachable!("connected just above")
            };
            work(client)
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closing the connection blocks on the driver's runtime too.
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        off_runtime(move || drop(client));
    }
}

/// Runs `work`, which blocks on PostgreSQL, where blocking is allowed. The `postgres` driver
/// drives a runtime of its own and panics on a thread that is running an async runtime (a
/// server's handler), so there `work` runs on a thread of its own; on any other thread (the
/// CLI, a worker thread) it runs right here. A thread inside `spawn_blocking` cannot be told
/// apart from an async one, so it pays for a thread too (tens of microseconds, against a
/// round trip to the database).
pub fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(work)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
