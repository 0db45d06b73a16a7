//! The registry of remote models (`basalt models add`) in `basalt.models`, so a model
//! registered through one replica or machine is known to all: the same JSON the data
//! directory's `models.json` holds (where each model's key is — an environment variable or a
//! file — never the key), one row, changed under its row lock so changes take turns.

use std::sync::Arc;

use basalt_model::{ModelError, RegistryStore};
use basalt_pg::Connection;

/// The remote-model registry replicas share.
#[derive(Debug)]
pub struct PgModelRegistry {
    connection: Arc<Connection>,
}

impl PgModelRegistry {
    pub fn new(connection: Arc<Connection>) -> Self {
        PgModelRegistry { connection }
    }
}

fn unavailable(error: &postgres::Error) -> ModelError {
    ModelError::RegistryUnavailable(basalt_pg::migrations::describe(error))
}

impl RegistryStore for PgModelRegistry {
    fn load(&self) -> Result<Option<String>, ModelError> {
        let row = self
            .connection
            .run(ModelError::RegistryUnavailable, |client| {
                client
                    .query_opt("SELECT registry::text FROM basalt.models", &[])
                    .map_err(|error| unavailable(&error))
            })?;
        Ok(row.map(|row| row.get(0)))
    }

    fn change(
        &self,
        change: &mut (dyn FnMut(Option<String>) -> Result<String, ModelError> + Send),
    ) -> Result<(), ModelError> {
        const ROW: crate::JsonRow = crate::JsonRow {
            insert: "INSERT INTO basalt.models (id, registry) VALUES (1, '{\"models\": []}') \
                     ON CONFLICT DO NOTHING",
            select: "SELECT registry FROM basalt.models FOR UPDATE",
            update: "UPDATE basalt.models SET registry = $1",
        };
        self.connection
            .run(ModelError::RegistryUnavailable, |client| {
                ROW.change(client, unavailable, |registry| {
                    let changed = change(Some(registry.to_string()))?;
                    serde_json::from_str(&changed)
                        .map_err(|error| ModelError::InvalidRequest(error.to_string()))
                })
            })
    }
}
