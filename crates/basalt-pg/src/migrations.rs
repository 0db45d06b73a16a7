//! The versioned schema of what replicas share (schema `basalt`): the SQL files in
//! `crates/basalt-pg/migrations/`, applied in order by `basalt db migrate` ([`migrate`]) and
//! recorded in `basalt.migrations`. A process checks the version before it uses the database
//! ([`check`]): an older schema asks for `basalt db migrate`, a newer one for a newer Basalt —
//! a replica never writes to tables it does not know.

use postgres::Client;

/// Every migration, in order: its version, its name and its SQL.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "catalog_and_jobs",
        include_str!("../migrations/0001_catalog_and_jobs.sql"),
    ),
    (
        2,
        "identity_and_guardrails",
        include_str!("../migrations/0002_identity_and_guardrails.sql"),
    ),
    (3, "audit", include_str!("../migrations/0003_audit.sql")),
    (
        4,
        "sessions",
        include_str!("../migrations/0004_sessions.sql"),
    ),
    (5, "models", include_str!("../migrations/0005_models.sql")),
    (
        6,
        "rate_limits",
        include_str!("../migrations/0006_rate_limits.sql"),
    ),
];

/// The version this build of Basalt needs.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version before, 0 for a database Basalt never used.
    pub from: i32,
    /// The version now ([`latest`]).
    pub to: i32,
    /// The names of the migrations applied, in order.
    pub applied: Vec<String>,
}

/// A key for `pg_advisory_xact_lock`: two `basalt db migrate` at once take turns.
const LOCK_KEY: i64 = 0x6261_7361_6c74; // "basalt"

/// Applies the migrations the database lacks, each in one transaction with its record, under
/// a lock; refuses a database a newer Basalt migrated.
pub fn migrate(client: &mut Client) -> Result<Migrated, String> {
    let mut transaction = client.transaction().map_err(|error| describe(&error))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .map_err(|error| describe(&error))?;
    transaction
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS basalt; \
             CREATE TABLE IF NOT EXISTS basalt.migrations ( \
                 version integer PRIMARY KEY, \
                 name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(|error| format!("cannot create the migrations table: {}", describe(&error)))?;
    let from = current(&mut transaction)?;
    if from > latest() {
        return Err(newer(from));
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|(version, ..)| *version > from) {
        transaction.batch_execute(sql).map_err(|error| {
            format!("migration {version} ({name}) failed: {}", describe(&error))
        })?;
        transaction
            .execute(
                "INSERT INTO basalt.migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .map_err(|error| describe(&error))?;
        applied.push((*name).to_owned());
    }
    transaction.commit().map_err(|error| describe(&error))?;
    Ok(Migrated {
        from,
        to: latest(),
        applied,
    })
}

/// Whether the database's schema is the one this build knows: an error says what to do.
pub fn check(client: &mut Client) -> Result<(), String> {
    let version = current(client)?;
    match version.cmp(&latest()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(newer(version)),
        std::cmp::Ordering::Less => Err(format!(
            "the database's Basalt schema is at version {version} and this Basalt needs {}: \
             run `basalt db migrate` (with the same --database)",
            latest()
        )),
    }
}

/// The version the database is at: 0 when Basalt never migrated it.
pub fn current(client: &mut impl postgres::GenericClient) -> Result<i32, String> {
    let exists: bool = client
        .query_one("SELECT to_regclass('basalt.migrations') IS NOT NULL", &[])
        .map_err(|error| format!("cannot read the schema version: {}", describe(&error)))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM basalt.migrations",
            &[],
        )
        .map(|row| row.get(0))
        .map_err(|error| format!("cannot read the schema version: {}", describe(&error)))
}

fn newer(version: i32) -> String {
    format!(
        "the database's Basalt schema is at version {version}, newer than this Basalt knows ({}): \
         a newer Basalt migrated it; run that version (replicas must all be upgraded together)",
        latest()
    )
}

/// Connects to `url` (`postgres://…` or `host=… dbname=…`), with an error that says what to
/// check.
pub fn connect(url: &str) -> Result<Client, String> {
    Client::connect(url, postgres::NoTls).map_err(|error| {
        format!(
            "cannot connect to PostgreSQL: {}; check the URL (--database, BASALT_DATABASE_URL) \
             and that the server is up",
            describe(&error)
        )
    })
}

/// A PostgreSQL error with what the server said (the driver's own text is only "db error").
pub fn describe(error: &postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        // The driver's text leaves out the cause ("error connecting to server"): add it.
        return match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        };
    };
    let mut text = format!("{} ({})", db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        text.push_str(&format!("; {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; {hint}"));
    }
    text
}
