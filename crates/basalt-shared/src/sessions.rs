//! Conversation sessions in `basalt.sessions`, so a follow-up question may reach any replica.
//! A session's turns (questions, answers, the passages they cite) are one record, sealed with
//! a data key of their own — wrapped by the master key in `basalt.session_key` — when the
//! process has a master key; the owner, knowledge base, start, turn count and last use are in
//! the clear, for listing and expiry. Time is the database's clock, so replicas agree on when
//! a session expired and which was used last.

use std::sync::Arc;

use basalt_answer::{Session, SessionError, SessionOverview, SessionPolicy, Sessions, Turn};
use basalt_core::sealer::Sealer;
use basalt_pg::Connection;
use basalt_security::crypto::{Envelope, KeyProvider};
use postgres::Client;

/// Sessions in PostgreSQL, behind the same seam as the in-memory store.
#[derive(Debug)]
pub struct PgSessions {
    connection: Arc<Connection>,
    policy: SessionPolicy,
    /// Seals the turns; `None` without a master key (they are stored in the clear).
    sealer: Option<Arc<dyn Sealer>>,
}

fn failed(error: &postgres::Error) -> SessionError {
    SessionError(basalt_pg::migrations::describe(error))
}

impl PgSessions {
    /// The sessions of the database `connection` reaches. With `master`, the sessions' data
    /// key is made on first use (or unwrapped: every replica needs the same master key);
    /// without one the turns are stored in the clear, and a database whose sessions are
    /// sealed is refused.
    pub fn open(
        connection: Arc<Connection>,
        policy: SessionPolicy,
        master: Option<&dyn KeyProvider>,
    ) -> Result<Self, SessionError> {
        let row = connection.run(SessionError, |client| {
            client
                .query_opt("SELECT envelope FROM basalt.session_key", &[])
                .map_err(|error| failed(&error))
        })?;
        let stored: Option<Envelope> = match row {
            Some(row) => Some(
                serde_json::from_value(row.get::<_, serde_json::Value>(0))
                    .map_err(|error| SessionError(format!("basalt.session_key: {error}")))?,
            ),
            None => None,
        };
        let sealer: Option<Arc<dyn Sealer>> = match (stored, master) {
            (Some(envelope), Some(master)) => {
                Some(Arc::new(envelope.open(master).map_err(|error| {
                    SessionError(format!("the sessions' key: {error}"))
                })?))
            }
            (Some(envelope), None) => {
                return Err(SessionError(format!(
                    "the database's conversation sessions are sealed with master key {}: give \
                     this replica the same master key (BASALT_MASTER_KEY_FILE)",
                    envelope.master_key_id
                )));
            }
            (None, Some(master)) => Some(Arc::new(Self::make_key(&connection, master)?)),
            (None, None) => None,
        };
        Ok(PgSessions {
            connection,
            policy,
            sealer,
        })
    }

    /// A new data key for the sessions, unless another replica made one first (then its).
    fn make_key(
        connection: &Connection,
        master: &dyn KeyProvider,
    ) -> Result<basalt_security::crypto::DataKey, SessionError> {
        let (envelope, _) =
            Envelope::create(master).map_err(|error| SessionError(error.to_string()))?;
        let json =
            serde_json::to_value(&envelope).map_err(|error| SessionError(error.to_string()))?;
        let row = connection.run(SessionError, |client| {
            client
                .execute(
                    "INSERT INTO basalt.session_key (id, envelope) VALUES (1, $1) \
                         ON CONFLICT DO NOTHING",
                    &[&json],
                )
                .and_then(|_| client.query_one("SELECT envelope FROM basalt.session_key", &[]))
                .map_err(|error| failed(&error))
        })?;
        let kept: Envelope = serde_json::from_value(row.get::<_, serde_json::Value>(0))
            .map_err(|error| SessionError(format!("basalt.session_key: {error}")))?;
        kept.open(master)
            .map_err(|error| SessionError(format!("the sessions' key: {error}")))
    }

    fn run<T: Send>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, SessionError> + Send,
    ) -> Result<T, SessionError> {
        self.connection.run(SessionError, work)
    }

    fn seal(&self, turns: &[Turn]) -> Result<Vec<u8>, SessionError> {
        let json = serde_json::to_vec(turns).map_err(|error| SessionError(error.to_string()))?;
        Ok(match &self.sealer {
            Some(sealer) => sealer.seal(&json),
            None => json,
        })
    }

    fn open_turns(&self, record: &[u8]) -> Result<Vec<Turn>, SessionError> {
        let json = match &self.sealer {
            Some(sealer) => sealer
                .open(record)
                .map_err(|error| SessionError(format!("a sealed session: {error}")))?,
            None => record.to_vec(),
        };
        serde_json::from_slice(&json)
            .map_err(|error| SessionError(format!("a session's record: {error}")))
    }

    fn ttl_seconds(&self) -> f64 {
        self.policy.ttl.as_secs_f64()
    }
}

/// Live sessions only: used within the time to live, by the database's clock.
const LIVE: &str = "last_used > clock_timestamp() - make_interval(secs => $TTL)";

fn live(position: usize) -> String {
    LIVE.replace("$TTL", &format!("${position}"))
}

impl Sessions for PgSessions {
    fn policy(&self) -> SessionPolicy {
        self.policy
    }

    fn create(&self, kb: &str, owner: &str) -> Result<Session, SessionError> {
        let id = basalt_core::id::new_id("", 16);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let record = self.seal(&[])?;
        let (ttl, max) = (self.ttl_seconds(), self.policy.max_sessions.max(1) as i64);
        self.run(|client| {
            let mut transaction = client.transaction().map_err(|error| failed(&error))?;
            // Creations take turns, so the bound holds with several replicas creating at once.
            transaction
                .execute(
                    "SELECT pg_advisory_xact_lock(hashtext('basalt.sessions'))",
                    &[],
                )
                .map_err(|error| failed(&error))?;
            transaction
                .execute(
                    &format!("DELETE FROM basalt.sessions WHERE NOT ({})", live(1)),
                    &[&ttl],
                )
                .map_err(|error| failed(&error))?;
            // Room for one more: the least recently used go first.
            transaction
                .execute(
                    "DELETE FROM basalt.sessions WHERE id IN (SELECT id FROM basalt.sessions \
                     ORDER BY last_used DESC OFFSET $1)",
                    &[&(max - 1)],
                )
                .map_err(|error| failed(&error))?;
            transaction
                .execute(
                    "INSERT INTO basalt.sessions (id, kb, owner, started, turns, record) \
                     VALUES ($1, $2, $3, $4, 0, $5)",
                    &[&id, &kb, &owner, &(started as i64), &record],
                )
                .map_err(|error| failed(&error))?;
            transaction.commit().map_err(|error| failed(&error))
        })?;
        Ok(Session::restored(id, kb, owner, started, Vec::new()))
    }

    fn get(&self, id: &str) -> Result<Option<Session>, SessionError> {
        let ttl = self.ttl_seconds();
        let row = self.run(|client| {
            client
                .query_opt(
                    &format!(
                        "UPDATE basalt.sessions SET last_used = clock_timestamp() \
                         WHERE id = $1 AND {} RETURNING kb, owner, started, record",
                        live(2)
                    ),
                    &[&id, &ttl],
                )
                .map_err(|error| failed(&error))
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (kb, owner, started, record): (String, String, i64, Vec<u8>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let turns = self.open_turns(&record)?;
        Ok(Some(Session::restored(
            id.to_owned(),
            &kb,
            &owner,
            started as u64,
            turns,
        )))
    }

    fn record(&self, id: &str, mut turn: Turn) -> Result<bool, SessionError> {
        if !self.policy.retain_prompts {
            turn.prompt = None;
        }
        let ttl = self.ttl_seconds();
        self.run(|client| {
            let mut transaction = client.transaction().map_err(|error| failed(&error))?;
            let row = transaction
                .query_opt(
                    &format!(
                        "SELECT record FROM basalt.sessions WHERE id = $1 AND {} FOR UPDATE",
                        live(2)
                    ),
                    &[&id, &ttl],
                )
                .map_err(|error| failed(&error))?;
            let Some(row) = row else {
                return Ok(false);
            };
            let mut turns = self.open_turns(&row.get::<_, Vec<u8>>(0))?;
            turns.push(turn);
            let record = self.seal(&turns)?;
            transaction
                .execute(
                    "UPDATE basalt.sessions SET record = $2, turns = $3, \
                     last_used = clock_timestamp() WHERE id = $1",
                    &[&id, &record, &(turns.len() as i32)],
                )
                .map_err(|error| failed(&error))?;
            transaction.commit().map_err(|error| failed(&error))?;
            Ok(true)
        })
    }

    fn list(&self, owner: &str) -> Result<Vec<SessionOverview>, SessionError> {
        let ttl = self.ttl_seconds();
        let rows = self.run(|client| {
            client
                .query(
                    &format!(
                        "SELECT id, kb, started, turns, record FROM basalt.sessions \
                         WHERE owner = $1 AND {} ORDER BY last_used DESC",
                        live(2)
                    ),
                    &[&owner, &ttl],
                )
                .map_err(|error| failed(&error))
        })?;
        rows.into_iter()
            .map(|row| {
                let (turns, record): (i32, Vec<u8>) = (row.get(3), row.get(4));
                let title = match turns {
                    0 => String::new(),
                    _ => self
                        .open_turns(&record)?
                        .first()
                        .map(|turn| turn.question.clone())
                        .unwrap_or_default(),
                };
                Ok(SessionOverview {
                    id: row.get(0),
                    kb: row.get(1),
                    started: row.get::<_, i64>(2) as u64,
                    turns: turns as usize,
                    title,
                })
            })
            .collect()
    }

    fn delete(&self, id: &str) -> Result<bool, SessionError> {
        let deleted = self.run(|client| {
            client
                .execute("DELETE FROM basalt.sessions WHERE id = $1", &[&id])
                .map_err(|error| failed(&error))
        })?;
        Ok(deleted > 0)
    }
}
