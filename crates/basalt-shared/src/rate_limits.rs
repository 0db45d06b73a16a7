//! Rate limits that hold across replicas: each caller's token bucket is a row of
//! `basalt.rate_buckets`, refilled and taken from in one statement by the database's clock, so
//! N replicas allow a key its rate once, not N times.

use std::sync::Arc;

use basalt_pg::Connection;

/// The token buckets replicas share.
#[derive(Debug)]
pub struct PgRateLimits {
    connection: Arc<Connection>,
}

impl PgRateLimits {
    pub fn new(connection: Arc<Connection>) -> Self {
        PgRateLimits { connection }
    }

    /// Takes a token from `caller`'s bucket (`per_second` refill, up to `burst`); on refusal,
    /// the seconds until one is back. An error when the database cannot be reached.
    pub fn take(
        &self,
        caller: &str,
        per_second: f64,
        burst: f64,
    ) -> Result<Result<(), u64>, String> {
        // The tokens the bucket holds now, refilled since its last request (the statement's
        // own timestamp: one instant for the whole statement).
        let available = "least($3::float8, bucket.tokens + $2::float8 * \
                         extract(epoch FROM statement_timestamp() - bucket.refilled)::float8)";
        let statement = format!(
            "INSERT INTO basalt.rate_buckets AS bucket (caller, tokens, refilled, allowed) \
             VALUES ($1, $3::float8 - 1, statement_timestamp(), true) \
             ON CONFLICT (caller) DO UPDATE SET \
               allowed = {available} >= 1, \
               tokens = {available} - CASE WHEN {available} >= 1 THEN 1 ELSE 0 END, \
               refilled = statement_timestamp() \
             RETURNING allowed, tokens"
        );
        let row = self.connection.run(
            |message| message,
            |client| {
                client
                    .query_one(&statement, &[&caller, &per_second, &burst])
                    .map_err(|error| basalt_pg::migrations::describe(&error))
            },
        )?;
        let (allowed, tokens): (bool, f64) = (row.get(0), row.get(1));
        Ok(if allowed {
            Ok(())
        } else {
            Err(((1.0 - tokens) / per_second).ceil().max(1.0) as u64)
        })
    }
}
