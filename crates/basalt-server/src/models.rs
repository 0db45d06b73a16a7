//! Which chat model writes a turn: the embedded one, or a model served elsewhere that was
//! registered with `basalt models add` (the data directory's `models.json`, read at each
//! request, so a model added through one process is usable through every replica at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use basalt_model::{ChatModel, Generator, RemoteGenerator, RemoteModel, RemoteModels};

use crate::error::{ApiError, Code};

/// A registered model as it was when its client was made, and the client.
type Client = (RemoteModel, Arc<RemoteGenerator>);

/// The registered remote models and, for each, the client that calls it (kept between
/// requests for its connection pool and its circuit breaker).
#[derive(Debug)]
pub(crate) struct ChatModels {
    registry: RemoteModels,
    clients: Mutex<HashMap<String, Client>>,
}

impl ChatModels {
    pub(crate) fn new(data_dir: &std::path::Path) -> Self {
        ChatModels {
            registry: RemoteModels::new(data_dir),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The registered remote models: each one's name, provider, and whether it is available
    /// (its circuit breaker closed).
    pub(crate) fn listed(&self) -> Result<Vec<(String, String, bool)>, ApiError> {
        let mut listed = Vec::new();
        for model in self.registry.list()? {
            let available = self.client(&model)?.available();
            listed.push((model.name, model.provider, available));
        }
        Ok(listed)
    }

    /// The client of the remote model `name`, or `None` when no model of that name is
    /// registered.
    pub(crate) fn remote(&self, name: &str) -> Result<Option<Arc<dyn Generator>>, ApiError> {
        let Some(model) = self.registry.get(name)? else {
            return Ok(None);
        };
        let client: Arc<dyn Generator> = self.client(&model)?;
        Ok(Some(client))
    }

    /// The client made for `model`, made again when its registration changed.
    fn client(&self, model: &RemoteModel) -> Result<Arc<RemoteGenerator>, ApiError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((known, client)) = clients.get(&model.name)
            && known == model
        {
            return Ok(client.clone());
        }
        let client = Arc::new(model.generator()?);
        clients.insert(model.name.clone(), (model.clone(), client.clone()));
        Ok(client)
    }

    /// `primary` for an answer from `kb`, with the knowledge base's `answer.fallback_model`
    /// (a registered model, or `local`, the embedded one, by its name) writing when `primary`
    /// fails before it wrote anything.
    pub(crate) fn with_fallback(
        &self,
        kb: &basalt_kb::KnowledgeBase,
        primary: Arc<dyn Generator>,
        local: &Arc<dyn Generator>,
    ) -> Result<Arc<dyn Generator>, ApiError> {
        let Some(name) = kb.settings.answer.fallback_model.as_deref() else {
            return Ok(primary);
        };
        let fallback = match self.registry.resolve(name)? {
            Some(ChatModel::Embedded) => local.clone(),
            Some(ChatModel::Remote(model)) => self.client(&model)?,
            None => {
                return Err(ApiError::new(
                    Code::ModelNotFound,
                    format!(
                        "knowledge base {:?} falls back to model {name:?}, which is not \
                         registered; an administrator registers it with `basalt models add \
                         {name} …`",
                        kb.settings.name
                    ),
                ));
            }
        };
        Ok(Arc::new(basalt_model::FallbackGenerator::new(
            primary, fallback,
        )))
    }

    /// The model a knowledge base's `answer.model` names (an error when it names none that is
    /// registered), or `None` for the embedded model.
    pub(crate) fn for_knowledge_base(
        &self,
        kb: &basalt_kb::KnowledgeBase,
    ) -> Result<Option<Arc<dyn Generator>>, ApiError> {
        let Some(name) = kb.settings.answer.model.as_deref() else {
            return Ok(None);
        };
        self.remote(name)?.map(Some).ok_or_else(|| {
            ApiError::new(
                Code::ModelNotFound,
                format!(
                    "knowledge base {:?} answers with model {name:?}, which is not registered; \
                     an administrator registers it with `basalt models add {name} …`",
                    kb.settings.name
                ),
            )
        })
    }
}
