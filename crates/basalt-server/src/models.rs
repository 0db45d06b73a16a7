//! Which chat model writes a turn — the embedded one, or a model served elsewhere that was
//! registered with `basalt models add` — and which embedding model a knowledge base's searches
//! use: the one it was built with (the data directory's `models.json`, read at each request, so
//! a model added through one process is usable through every replica at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use basalt_model::{
    ChatModel, Embedder, Generator, LocalEmbedder, RemoteGenerator, RemoteKind, RemoteModel,
    RemoteModels,
};

use crate::error::{ApiError, Code};

/// A registered model as it was when its client was made, and the client.
type Client = (RemoteModel, Arc<RemoteGenerator>);

/// An embedding model's registration (or local path) and dimension when its client was made,
/// and the client.
type EmbeddingClient = ((Option<RemoteModel>, usize), Arc<dyn Embedder>);

/// A registered remote model as the model lists show it.
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) provider: String,
    pub(crate) kind: RemoteKind,
    pub(crate) available: bool,
}

/// The registered remote models and, for each, the client that calls it (kept between
/// requests for its connection pool and its circuit breaker).
#[derive(Debug)]
pub(crate) struct ChatModels {
    registry: RemoteModels,
    clients: Mutex<HashMap<String, Client>>,
    embedders: Mutex<HashMap<String, EmbeddingClient>>,
}

impl ChatModels {
    pub(crate) fn new(data_dir: &basalt_kb::DataDir) -> Self {
        ChatModels {
            registry: basalt_shared::remote_models(data_dir),
            clients: Mutex::new(HashMap::new()),
            embedders: Mutex::new(HashMap::new()),
        }
    }

    /// The registered remote models: each one's name, provider, kind, and whether it is
    /// available (a chat model's circuit breaker closed).
    pub(crate) fn listed(&self) -> Result<Vec<Listed>, ApiError> {
        let mut listed = Vec::new();
        for model in self.registry.list()? {
            let available = match model.kind {
                RemoteKind::Chat => self.client(&model)?.available(),
                RemoteKind::Embedding => true,
            };
            listed.push(Listed {
                name: model.name,
                provider: model.provider,
                kind: model.kind,
                available,
            });
        }
        Ok(listed)
    }

    /// The registered remote embedding model `name`, called once: its name, dimension and
    /// input limit.
    pub(crate) fn probe_embedding(
        &self,
        name: &str,
    ) -> Result<basalt_model::EmbedderInfo, ApiError> {
        let model = self.registry.get(name)?.ok_or_else(|| {
            ApiError::new(
                Code::ModelNotFound,
                format!(
                    "no embedding model {name:?}: an administrator registers it with `basalt \
                     models add {name} --embedding …`"
                ),
            )
        })?;
        Ok(model.embedder(None)?.info().clone())
    }

    /// The embedding model the knowledge base `kb` was built with: `served` (the server's own,
    /// named `served_name`) when it names that, else a registered remote embedding model, else
    /// a local model directory (loaded once). Each is checked to give vectors of the knowledge
    /// base's dimension.
    pub(crate) fn embedder_for(
        &self,
        kb: &basalt_kb::KbSettings,
        served_name: &str,
        served: &Arc<dyn Embedder>,
    ) -> Result<Arc<dyn Embedder>, ApiError> {
        let name = &kb.embedding.model;
        let dimension = kb.embedding.dimension;
        if name == served_name {
            return Ok(served.clone());
        }
        let remote = self.registry.get(name)?;
        let mut embedders = self
            .embedders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (remote.clone(), dimension);
        if let Some((known, client)) = embedders.get(name)
            && *known == key
        {
            return Ok(client.clone());
        }
        let path = std::path::Path::new(name);
        let client: Arc<dyn Embedder> = match &remote {
            Some(model) => Arc::new(model.embedder(Some(dimension))?),
            None if path.is_absolute() && path.is_dir() => {
                let local =
                    LocalEmbedder::load(path, &basalt_model::LocalEmbedderOptions::default())?;
                Arc::new(local)
            }
            None => {
                return Err(ApiError::new(
                    Code::ModelNotFound,
                    format!(
                        "knowledge base {:?} was built with the embedding model {name:?}, which \
                         this server neither runs nor has registered; an administrator \
                         registers it with `basalt models add {name} --embedding …`, or \
                         re-embeds the knowledge base with `basalt kb reembed`",
                        kb.name
                    ),
                ));
            }
        };
        let found = client.info().dimension;
        if found != dimension {
            return Err(ApiError::new(
                Code::ModelNotFound,
                format!(
                    "knowledge base {:?} holds vectors of {dimension} dimensions, but its \
                     embedding model {name:?} makes {found}; re-embed it with `basalt kb \
                     reembed`",
                    kb.name
                ),
            ));
        }
        embedders.insert(name.clone(), (key, client.clone()));
        Ok(client)
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
