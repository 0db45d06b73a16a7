//! What replicas on one database share besides knowledge bases and jobs (`basalt-kb` has
//! those): the identity directory ([`PgIdentities`]), each tenant's guardrail configurations
//! ([`PgGuardrails`]) and the audit trail ([`PgAudit`]), in the tables `basalt db migrate`
//! makes, behind the seams the data directory's files fill for one process (`Identities`,
//! `GuardrailConfigs`, `AuditTrail`), and conversation sessions ([`PgSessions`], behind the
//! in-memory store's `Sessions` seam), and the registry of remote models ([`PgModelRegistry`]).
//! Each passes the same conformance suite as its embedded
//! counterpart.

pub mod migrate;
mod models;
mod rate_limits;
mod sessions;

pub use models::PgModelRegistry;
pub use rate_limits::PgRateLimits;
pub use sessions::PgSessions;

/// The registry of remote models `data_dir` uses: its database's when it has one (shared by
/// every replica), else its `models.json`.
pub fn remote_models(data_dir: &basalt_kb::DataDir) -> basalt_model::RemoteModels {
    match data_dir.database_connection() {
        Some(connection) => {
            basalt_model::RemoteModels::shared(Arc::new(PgModelRegistry::new(connection)))
        }
        None => basalt_model::RemoteModels::new(data_dir.root()),
    }
}

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use basalt_guard::config::GuardrailConfig;
use basalt_guard::store::{GuardrailSummary, StoredGuardrail, check_name};
use basalt_guard::{GuardrailConfigs, StoreError};
use basalt_pg::Connection;
use basalt_security::audit::{AuditTrail, Event, Record, Verification};
use basalt_security::{Directory, Identities, SecurityError};
use postgres::Client;
use postgres::error::SqlState;

/// The identity directory in `basalt.identity`: one row, re-read only when its version moved.
#[derive(Debug)]
pub struct PgIdentities {
    connection: Arc<Connection>,
    /// The directory as last read, with its version.
    cached: Mutex<Option<(i64, Arc<Directory>)>>,
}

impl PgIdentities {
    pub fn new(connection: Arc<Connection>) -> Self {
        PgIdentities {
            connection,
            cached: Mutex::new(None),
        }
    }

    fn run<T: Send>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, SecurityError> + Send,
    ) -> Result<T, SecurityError> {
        self.connection
            .run(|message| SecurityError::Unavailable { message }, work)
    }
}

fn unavailable(error: &postgres::Error) -> SecurityError {
    SecurityError::Unavailable {
        message: basalt_pg::migrations::describe(error),
    }
}

/// Where an error says the directory is.
const IDENTITY_ROW: &str = "basalt.identity";

impl Identities for PgIdentities {
    fn current(&self) -> basalt_security::Result<Arc<Directory>> {
        let known = self
            .cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(version, directory)| (*version, directory.clone()));
        // One round trip: the version, and the directory only when it moved.
        let row = self.run(|client| {
            client
                .query_opt(
                    "SELECT version, CASE WHEN version IS DISTINCT FROM $1 THEN directory END \
                     FROM basalt.identity",
                    &[&known.as_ref().map(|(version, _)| *version)],
                )
                .map_err(|error| unavailable(&error))
        })?;
        let Some(row) = row else {
            return Ok(Arc::new(Directory::default()));
        };
        let version: i64 = row.get(0);
        let json: Option<serde_json::Value> = row.get(1);
        let directory = match (json, known) {
            (None, Some((_, directory))) => directory,
            (Some(json), _) => Arc::new(Directory::from_json(
                json.to_string().as_bytes(),
                Path::new(IDENTITY_ROW),
            )?),
            (None, None) => unreachable!("an unknown version always brings the directory"),
        };
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((version, directory.clone()));
        Ok(directory)
    }

    fn change(
        &self,
        change: &mut (dyn FnMut(&mut Directory) -> basalt_security::Result<()> + Send),
    ) -> basalt_security::Result<()> {
        const ROW: JsonRow = JsonRow {
            insert: "INSERT INTO basalt.identity (version, directory) VALUES (0, '{}') \
                     ON CONFLICT DO NOTHING",
            select: "SELECT directory FROM basalt.identity FOR UPDATE",
            update: "UPDATE basalt.identity SET directory = $1, version = version + 1",
        };
        self.run(|client| {
            ROW.change(client, unavailable, |json| {
                let mut directory =
                    Directory::from_json(json.to_string().as_bytes(), Path::new(IDENTITY_ROW))?;
                change(&mut directory)?;
                serde_json::from_slice(&directory.to_json()?).map_err(|error| {
                    SecurityError::Invalid {
                        message: error.to_string(),
                    }
                })
            })
        })
    }
}

/// A JSON document that is the one row of a table, changed under the row's lock so changes
/// through any replica take turns: `insert` makes the row when there is none, `select` reads
/// the document `FOR UPDATE`, `update` writes the new one (`$1`).
pub(crate) struct JsonRow {
    pub(crate) insert: &'static str,
    pub(crate) select: &'static str,
    pub(crate) update: &'static str,
}

impl JsonRow {
    /// Replaces the document with what `change` makes of it, in one transaction.
    pub(crate) fn change<E>(
        &self,
        client: &mut Client,
        failed: impl Fn(&postgres::Error) -> E,
        change: impl FnOnce(serde_json::Value) -> Result<serde_json::Value, E>,
    ) -> Result<(), E> {
        let mut transaction = client.transaction().map_err(|error| failed(&error))?;
        transaction
            .execute(self.insert, &[])
            .map_err(|error| failed(&error))?;
        let row = transaction
            .query_one(self.select, &[])
            .map_err(|error| failed(&error))?;
        let changed = change(row.get(0))?;
        transaction
            .execute(self.update, &[&changed])
            .map_err(|error| failed(&error))?;
        transaction.commit().map_err(|error| failed(&error))
    }
}

/// One tenant's guardrail configurations in `basalt.guardrails`, a row per version.
#[derive(Debug, Clone)]
pub struct PgGuardrails {
    connection: Arc<Connection>,
    tenant: String,
}

impl PgGuardrails {
    pub fn new(connection: Arc<Connection>, tenant: &str) -> Self {
        PgGuardrails {
            connection,
            tenant: tenant.to_owned(),
        }
    }

    fn run<T: Send>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, StoreError> {
        self.connection.run(StoreError::Unavailable, |client| {
            work(client)
                .map_err(|error| StoreError::Unavailable(basalt_pg::migrations::describe(&error)))
        })
    }

    /// Adds version `version` of `name` as it is (another store's, copied), or finds it there
    /// already with the same configuration: true when it was added, an error when that
    /// version holds another configuration.
    pub fn import(
        &self,
        name: &str,
        version: u32,
        config: &GuardrailConfig,
    ) -> Result<bool, StoreError> {
        check_name(name)?;
        let value = serde_json::to_value(config)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let (added, stored) = self.run(|client| {
            let added = client.execute(
                "INSERT INTO basalt.guardrails (tenant, name, version, config) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&self.tenant, &name, &(version as i32), &value],
            )?;
            let stored: serde_json::Value = client
                .query_one(
                    "SELECT config FROM basalt.guardrails \
                     WHERE tenant = $1 AND name = $2 AND version = $3",
                    &[&self.tenant, &name, &(version as i32)],
                )?
                .get(0);
            Ok((added > 0, stored))
        })?;
        if config_of(name, stored)? != *config {
            return Err(StoreError::Unavailable(format!(
                "the database holds another version {version} of guardrail {name:?} in tenant \
                 {:?}: delete it there, or migrate into a database without it",
                self.tenant
            )));
        }
        Ok(added)
    }
}

fn config_of(name: &str, value: serde_json::Value) -> Result<GuardrailConfig, StoreError> {
    serde_json::from_value(value).map_err(|error| {
        StoreError::Unavailable(format!(
            "guardrail {name:?} in the database is damaged: {error}"
        ))
    })
}

impl GuardrailConfigs for PgGuardrails {
    fn save(&self, name: &str, config: &GuardrailConfig) -> Result<StoredGuardrail, StoreError> {
        check_name(name)?;
        config.validate()?;
        let value = serde_json::to_value(config)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        // The next version in one statement; two saves at once: one fails on the key and is
        // tried again.
        let version = loop {
            let saved = self.run(|client| {
                match client.query_one(
                    "INSERT INTO basalt.guardrails (tenant, name, version, config) \
                     SELECT $1, $2, coalesce(max(version), 0) + 1, $3 FROM basalt.guardrails \
                     WHERE tenant = $1 AND name = $2 RETURNING version",
                    &[&self.tenant, &name, &value],
                ) {
                    Ok(row) => Ok(Some(row.get::<_, i32>(0))),
                    Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(None),
                    Err(error) => Err(error),
                }
            })?;
            if let Some(version) = saved {
                break version;
            }
        };
        Ok(StoredGuardrail {
            name: name.to_owned(),
            version: version as u32,
            config: config.clone(),
        })
    }

    fn load(&self, name: &str, version: Option<u32>) -> Result<StoredGuardrail, StoreError> {
        check_name(name)?;
        let wanted = version.map(|version| version as i32);
        let (row, latest) = self.run(|client| {
            let latest: Option<i32> = client
                .query_one(
                    "SELECT max(version) FROM basalt.guardrails WHERE tenant = $1 AND name = $2",
                    &[&self.tenant, &name],
                )?
                .get(0);
            let row = client.query_opt(
                "SELECT version, config FROM basalt.guardrails WHERE tenant = $1 AND name = $2 \
                 AND version = coalesce($3, (SELECT max(version) FROM basalt.guardrails \
                     WHERE tenant = $1 AND name = $2))",
                &[&self.tenant, &name, &wanted],
            )?;
            Ok((row, latest))
        })?;
        let Some(latest) = latest else {
            return Err(StoreError::NotFound(name.to_owned()));
        };
        let Some(row) = row else {
            return Err(StoreError::NoVersion {
                name: name.to_owned(),
                version: version.unwrap_or_default(),
                latest: latest as u32,
            });
        };
        Ok(StoredGuardrail {
            name: name.to_owned(),
            version: row.get::<_, i32>(0) as u32,
            config: config_of(name, row.get(1))?,
        })
    }

    fn list(&self) -> Result<Vec<GuardrailSummary>, StoreError> {
        let rows = self.run(|client| {
            client.query(
                "SELECT DISTINCT ON (name) name, version, config FROM basalt.guardrails \
                 WHERE tenant = $1 ORDER BY name, version DESC",
                &[&self.tenant],
            )
        })?;
        rows.into_iter()
            .map(|row| {
                let name: String = row.get(0);
                let config = config_of(&name, row.get(2))?;
                Ok(GuardrailSummary {
                    latest_version: row.get::<_, i32>(1) as u32,
                    description: config.description,
                    name,
                })
            })
            .collect()
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        let deleted = self.run(|client| {
            client.execute(
                "DELETE FROM basalt.guardrails WHERE tenant = $1 AND name = $2",
                &[&self.tenant, &name],
            )
        })?;
        match deleted {
            0 => Err(StoreError::NotFound(name.to_owned())),
            _ => Ok(()),
        }
    }
}

/// The audit trail in `basalt.audit`: one linear hash chain whichever replica appends. An
/// append takes a transaction-scoped lock, reads the last record and inserts the next: two
/// replicas appending at once take turns, and a record is durable once its commit returns.
#[derive(Debug)]
pub struct PgAudit {
    connection: Arc<Connection>,
}

/// The lock appends take turns on (`pg_advisory_xact_lock`).
const AUDIT_LOCK: i64 = 0x0061_7564_6974; // "audit"

impl PgAudit {
    pub fn new(connection: Arc<Connection>) -> Self {
        PgAudit { connection }
    }

    fn run<T: Send>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, SecurityError> {
        self.connection.run(
            |message| SecurityError::Unavailable { message },
            |client| work(client).map_err(|error| unavailable(&error)),
        )
    }

    /// Adds `records` (another trail's, verified, oldest first) to this one as they are, so
    /// their hashes still chain: into an empty trail, or after an earlier import of some or
    /// all of them (this trail's record of the same number carries the same hash). Returns how
    /// many were added; an error, adding none, when this trail holds other records.
    pub fn import(&self, records: &[Record]) -> Result<usize, SecurityError> {
        let added = self.run(|client| {
            let mut transaction = client.transaction()?;
            transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
            let Some((_, start)) = common_records(&mut transaction, records)? else {
                return Ok(None);
            };
            for batch in records[start..].chunks(1000) {
                let seqs: Vec<i64> = batch.iter().map(|record| record.seq as i64).collect();
                let json: Vec<serde_json::Value> = batch
                    .iter()
                    .map(|record| serde_json::to_value(record).unwrap_or_default())
                    .collect();
                transaction.execute(
                    "INSERT INTO basalt.audit (seq, record) \
                     SELECT * FROM unnest($1::bigint[], $2::jsonb[])",
                    &[&seqs, &json],
                )?;
            }
            transaction.commit()?;
            Ok(Some(records.len() - start))
        })?;
        added.ok_or_else(parted)
    }

    /// Whether this trail holds nothing but the first records of `records` (none, some or
    /// all): whether `records` with more appended could be imported.
    pub fn precedes(&self, records: &[Record]) -> Result<bool, SecurityError> {
        self.run(|client| {
            Ok(common_records(client, records)?
                .is_some_and(|(last, common)| last as usize == common))
        })
    }

    /// Every stored record's JSON, oldest first.
    fn stored(&self) -> Result<Vec<Vec<u8>>, SecurityError> {
        let rows = self.run(|client| {
            client.query("SELECT record::text FROM basalt.audit ORDER BY seq", &[])
        })?;
        Ok(rows
            .into_iter()
            .map(|row| row.get::<_, String>(0).into_bytes())
            .collect())
    }
}

/// The error of a trail whose history is not the one being imported.
fn parted() -> SecurityError {
    SecurityError::Invalid {
        message: "the database's audit trail holds records the data directory's does not \
                  (another installation's, or ones replicas appended after an earlier \
                  migration): migrate into a database without them"
            .into(),
    }
}

/// The trail's last sequence number and how many of `records` it holds (by the hash of the
/// last record both should hold); `None` when they differ there.
fn common_records(
    client: &mut impl postgres::GenericClient,
    records: &[Record],
) -> Result<Option<(i64, usize)>, postgres::Error> {
    let last: i64 = client
        .query_one("SELECT coalesce(max(seq), 0) FROM basalt.audit", &[])?
        .get(0);
    let common = last.min(records.len() as i64);
    if common == 0 {
        return Ok(Some((last, 0)));
    }
    let hash: Option<String> = client
        .query_opt(
            "SELECT record->>'hash' FROM basalt.audit WHERE seq = $1",
            &[&common],
        )?
        .map(|row| row.get(0));
    let same = hash.as_deref() == Some(records[common as usize - 1].hash.as_str());
    Ok(same.then_some((last, common as usize)))
}

impl AuditTrail for PgAudit {
    fn append(&self, event: Event) -> basalt_security::Result<Record> {
        let record = self.run(|client| {
            let mut transaction = client.transaction()?;
            transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
            let last = transaction
                .query_opt(
                    "SELECT seq, record->>'hash' FROM basalt.audit ORDER BY seq DESC LIMIT 1",
                    &[],
                )?
                .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, String>(1)));
            let record = Record::after(last, event);
            let json = serde_json::to_value(&record).unwrap_or_default();
            transaction.execute(
                "INSERT INTO basalt.audit (seq, record) VALUES ($1, $2)",
                &[&(record.seq as i64), &json],
            )?;
            transaction.commit()?;
            Ok(record)
        })?;
        Ok(record)
    }

    fn records(&self) -> basalt_security::Result<Vec<Record>> {
        Ok(self
            .stored()?
            .iter()
            .filter_map(|json| serde_json::from_slice(json).ok())
            .collect())
    }

    fn verify(&self) -> basalt_security::Result<Verification> {
        basalt_security::audit::verify_lines(self.stored()?.into_iter().map(Ok))
    }
}
