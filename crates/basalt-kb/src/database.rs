//! PostgreSQL as the data directory's shared half (`--database`): the knowledge-base catalog
//! (`basalt.knowledge_bases`: each knowledge base's settings and wrapped data key, by tenant
//! and name) and the ingestion job queue ([`crate::jobs::PgJobQueue`]), so every process on
//! the database — replicas of `basalt serve`, the CLI — sees the same knowledge bases and
//! jobs. The tables are made by `basalt db migrate` (`basalt_pg::migrations`); a process
//! checks the schema's version when it first connects.

use std::sync::Arc;

use basalt_pg::Connection;
use basalt_security::crypto::Envelope;
use postgres::Client;

use crate::error::{KbError, Result};
use crate::knowledge_base::KbSettings;

/// The database of `--database`, on one connection that the process shares (see
/// [`basalt_pg::Connection`]), whose schema version is checked when it is made.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    connection: Arc<Connection>,
}

impl Database {
    pub(crate) fn new(url: &str) -> Self {
        Database {
            connection: Arc::new(Connection::new(url, basalt_pg::migrations::check)),
        }
    }

    pub(crate) fn url(&self) -> &str {
        self.connection.url()
    }

    pub(crate) fn connection(&self) -> Arc<Connection> {
        self.connection.clone()
    }

    /// Runs `work` on the connection.
    pub(crate) fn run<T: Send>(
        &self,
        work: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error> + Send,
    ) -> Result<T> {
        self.connection.run(
            |error| unavailable(&error),
            |client| {
                work(client).map_err(|error| unavailable(&basalt_pg::migrations::describe(&error)))
            },
        )
    }
}

fn unavailable(message: &str) -> KbError {
    KbError::Database {
        message: message.to_owned(),
    }
}

/// A catalog row: settings and the wrapped data key.
pub(crate) type CatalogRow = (KbSettings, Option<Envelope>);

fn decode_row(row: &postgres::Row) -> Result<CatalogRow> {
    let settings: serde_json::Value = row.get(0);
    let key: Option<serde_json::Value> = row.get(1);
    let bad = |error: serde_json::Error| KbError::Database {
        message: format!("a knowledge base's row in basalt.knowledge_bases is not valid: {error}"),
    };
    Ok((
        serde_json::from_value(settings).map_err(bad)?,
        key.map(serde_json::from_value).transpose().map_err(bad)?,
    ))
}

fn json(value: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|error| KbError::Database {
        message: error.to_string(),
    })
}

impl Database {
    /// Adds a knowledge base; `Exists` when the tenant has one of that name.
    pub(crate) fn insert_kb(
        &self,
        tenant: &str,
        settings: &KbSettings,
        key: Option<&Envelope>,
    ) -> Result<()> {
        let (value, key) = (json(settings)?, key.map(json).transpose()?);
        let inserted = self.run(|client| {
            client.execute(
                "INSERT INTO basalt.knowledge_bases (tenant, name, settings, data_key) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&tenant, &settings.name, &value, &key],
            )
        })?;
        if inserted == 0 {
            return Err(KbError::Exists {
                name: settings.name.clone(),
            });
        }
        Ok(())
    }

    /// Replaces a knowledge base's settings; false when there is none.
    pub(crate) fn update_kb(&self, tenant: &str, settings: &KbSettings) -> Result<bool> {
        let value = json(settings)?;
        Ok(self.run(|client| {
            client.execute(
                "UPDATE basalt.knowledge_bases SET settings = $3 WHERE tenant = $1 AND name = $2",
                &[&tenant, &settings.name, &value],
            )
        })? > 0)
    }

    /// A tenant's knowledge bases, by name.
    pub(crate) fn list_kbs(&self, tenant: &str) -> Result<Vec<KbSettings>> {
        self.run(|client| {
            client.query(
                "SELECT settings, data_key FROM basalt.knowledge_bases WHERE tenant = $1 \
                 ORDER BY name",
                &[&tenant],
            )
        })?
        .iter()
        .map(|row| decode_row(row).map(|(settings, _)| settings))
        .collect()
    }

    /// One knowledge base's row.
    pub(crate) fn kb(&self, tenant: &str, name: &str) -> Result<Option<CatalogRow>> {
        self.run(|client| {
            client.query_opt(
                "SELECT settings, data_key FROM basalt.knowledge_bases \
                 WHERE tenant = $1 AND name = $2",
                &[&tenant, &name],
            )
        })?
        .as_ref()
        .map(decode_row)
        .transpose()
    }

    /// Deletes a knowledge base's row and drops its index's schema (`schema`, when it has one
    /// in the database) in one transaction; false when there was no row.
    pub(crate) fn delete_kb(&self, tenant: &str, name: &str, schema: Option<&str>) -> Result<bool> {
        self.run(|client| {
            let mut transaction = client.transaction()?;
            let deleted = transaction.execute(
                "DELETE FROM basalt.knowledge_bases WHERE tenant = $1 AND name = $2",
                &[&tenant, &name],
            )?;
            if let Some(schema) = schema {
                transaction
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))?;
            }
            transaction.commit()?;
            Ok(deleted > 0)
        })
    }

    /// Every wrapped data key (tenant, name, key), for a master-key rotation.
    pub(crate) fn data_keys(&self) -> Result<Vec<(String, String, Envelope)>> {
        let rows = self.run(|client| {
            client.query(
                "SELECT tenant, name, data_key FROM basalt.knowledge_bases \
                 WHERE data_key IS NOT NULL ORDER BY tenant, name",
                &[],
            )
        })?;
        rows.iter()
            .map(|row| {
                let key: serde_json::Value = row.get(2);
                let key = serde_json::from_value(key).map_err(|error| KbError::Database {
                    message: format!("a wrapped data key is not valid: {error}"),
                })?;
                Ok((row.get(0), row.get(1), key))
            })
            .collect()
    }

    /// The conversation sessions' wrapped data key (`basalt.session_key`), if one was made.
    pub(crate) fn session_key(&self) -> Result<Option<Envelope>> {
        let row =
            self.run(|client| client.query_opt("SELECT envelope FROM basalt.session_key", &[]))?;
        row.map(|row| {
            serde_json::from_value(row.get(0)).map_err(|error| KbError::Database {
                message: format!("the sessions' wrapped data key is not valid: {error}"),
            })
        })
        .transpose()
    }

    /// Replaces the sessions' wrapped data key (a rotation re-wrapped it).
    pub(crate) fn set_session_key(&self, key: &Envelope) -> Result<()> {
        let key = json(key)?;
        self.run(|client| client.execute("UPDATE basalt.session_key SET envelope = $1", &[&key]))?;
        Ok(())
    }

    /// Replaces a knowledge base's wrapped data key (a rotation re-wrapped it).
    pub(crate) fn set_data_key(&self, tenant: &str, name: &str, key: &Envelope) -> Result<()> {
        let key = json(key)?;
        self.run(|client| {
            client.execute(
                "UPDATE basalt.knowledge_bases SET data_key = $3 WHERE tenant = $1 AND name = $2",
                &[&tenant, &name, &key],
            )
        })?;
        Ok(())
    }
}
