//! The data directory and the knowledge bases in it.
//!
//! ```text
//! <data dir>/kb/<name>/kb.json     settings (written atomically; search-time ones may change)
//! <data dir>/kb/<name>/index/      the tantivy index (documents, chunks, vectors)
//! <data dir>/tenants/<tenant>/kb/<name>/…   the knowledge bases of a tenant other than `default`
//! ```
//!
//! Knowledge-base names are per tenant: two tenants may each have a `handbook`, and a
//! [`DataDir`] scoped to one tenant ([`DataDir::for_tenant`]) cannot name the other's.
//!
//! With a database ([`DataDir::with_database`]) the catalog is PostgreSQL's instead
//! (`basalt.knowledge_bases`: settings and wrapped data keys), and so are the indexes of the
//! knowledge bases in it: nothing of them is in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use basalt_index::Sealer;
use basalt_index::{
    ANALYZERS, Bm25Params, DEFAULT_ANALYZER, DocumentRecord, DocumentWrite, Fusion, IndexStats,
    KnowledgeStore, SearchMode, StoreOptions, TantivyStore, VectorIndex,
};
use basalt_model::{DEFAULT_EMBEDDING_MODEL, ModelsDir};
use basalt_security::crypto::KeyProvider;
use serde::{Deserialize, Serialize};

use crate::error::{KbError, Result};

/// Where Basalt keeps its knowledge bases: `--data-dir`, else `BASALT_DATA_DIR`, else
/// `$XDG_DATA_HOME/basalt`, else `~/.local/share/basalt`.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    tenant: String,
    /// Where this tenant's knowledge bases live.
    kb_root: PathBuf,
    /// The master key: knowledge bases created with one are encrypted, and need it to open.
    master_key: Option<Arc<dyn KeyProvider>>,
    /// PostgreSQL (`--database`): the catalog, and the indexes of its knowledge bases.
    database: Option<crate::database::Database>,
    /// S3-compatible storage (`--objects`): uploads wait there for their job.
    objects: Option<Arc<basalt_objects::Objects>>,
}

pub use basalt_security::DEFAULT_TENANT;

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        DataDir {
            tenant: DEFAULT_TENANT.to_owned(),
            kb_root: root.join("kb"),
            root,
            master_key: None,
            database: None,
            objects: None,
        }
    }

    /// The same data directory with PostgreSQL (a `postgres://` URL or `host=… dbname=…`) as
    /// its catalog: the knowledge bases are those in the database (settings and wrapped data
    /// keys), and keep their documents, chunks, postings and vectors there; the ones in the
    /// data directory are not seen. The database must have been migrated (`basalt db
    /// migrate`).
    pub fn with_database(mut self, url: &str) -> Self {
        self.database = Some(crate::database::Database::new(url));
        self
    }

    /// Keeps uploads in S3-compatible storage (`--objects s3://bucket/prefix`).
    pub fn with_objects(mut self, objects: Arc<basalt_objects::Objects>) -> Self {
        self.objects = Some(objects);
        self
    }

    /// The object store (`--objects`), if any.
    pub fn objects(&self) -> Option<&Arc<basalt_objects::Objects>> {
        self.objects.as_ref()
    }

    pub(crate) fn database(&self) -> Option<&crate::database::Database> {
        self.database.as_ref()
    }

    /// Whether the catalog is in PostgreSQL.
    pub fn has_database(&self) -> bool {
        self.database.is_some()
    }

    /// The connection to the database (`--database`) this process shares, if any: what else
    /// lives there (the identity directory, guardrails) uses it too.
    pub fn database_connection(&self) -> Option<Arc<basalt_pg::Connection>> {
        self.database
            .as_ref()
            .map(crate::database::Database::connection)
    }

    /// The database's URL (`--database`), if any.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(crate::database::Database::url)
    }

    /// The schema of a PostgreSQL knowledge base's index: derived from its tenant, name, store
    /// id and embedding generation, so a re-embedding builds beside the index it replaces.
    fn pg_schema(&self, settings: &KbSettings) -> String {
        let key = format!(
            "{}/{}/{}/{}",
            self.tenant,
            settings.name,
            settings.store_id.as_deref().unwrap_or_default(),
            settings.embedding.generation
        );
        format!("kb_{}", &basalt_core::hex::sha256(key.as_bytes())[..24])
    }

    /// The database URL a PostgreSQL knowledge base needs. Without one, the knowledge base is
    /// one an earlier Basalt made with its settings here and its index in the database, which
    /// the database's catalog does not list.
    fn database_for(&self, name: &str) -> Result<&str> {
        self.database
            .as_ref()
            .map(crate::database::Database::url)
            .ok_or_else(|| KbError::BadSettingsValue {
                message: format!(
                    "knowledge base {name:?} was made by an earlier Basalt with its settings in \
                     the data directory and its index in PostgreSQL, which this Basalt does not \
                     open: delete it (`basalt kb delete {name}`, without --database) and create \
                     it again with --database"
                ),
            })
    }

    /// Removes the index `settings` name (a directory, or a PostgreSQL schema).
    pub(crate) fn remove_index(&self, settings: &KbSettings) -> Result<()> {
        match settings.backend {
            Backend::Embedded => {
                let dir = self
                    .kb_path(&settings.name)
                    .join(crate::reembed::index_dir_name(
                        settings.embedding.generation,
                    ));
                match std::fs::remove_dir_all(&dir) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        Err(KbError::io(&dir, error))
                    }
                    _ => Ok(()),
                }
            }
            Backend::Postgres => Ok(basalt_pg::PgStore::drop_schema(
                self.database_for(&settings.name)?,
                &self.pg_schema(settings),
            )?),
        }
    }

    /// The same data directory with a master key: knowledge bases created from now on are
    /// encrypted at rest, and encrypted ones can be opened.
    pub fn with_master_key(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.master_key = Some(provider);
        self
    }

    pub fn master_key(&self) -> Option<&dyn KeyProvider> {
        self.master_key.as_deref()
    }

    /// The data key of the knowledge base `name` as a sealer: `None` when it is not encrypted,
    /// an error when it is and the master key is missing or wrong.
    pub fn sealer(&self, name: &str) -> Result<Option<Arc<dyn Sealer>>> {
        validate_name(name)?;
        let envelope = match &self.database {
            Some(database) => self.row(database, name)?.1,
            None => crate::encryption::read_key(&self.kb_path(name))?,
        };
        crate::encryption::open_envelope(envelope, name, self.master_key.as_deref())
    }

    /// Whether the knowledge base `name` is encrypted at rest.
    pub fn is_encrypted(&self, name: &str) -> bool {
        match &self.database {
            Some(database) => self.row(database, name).is_ok_and(|(_, key)| key.is_some()),
            None => self
                .kb_path(name)
                .join(crate::encryption::KEY_FILE)
                .is_file(),
        }
    }

    /// The catalog row of `name` in the database.
    fn row(
        &self,
        database: &crate::database::Database,
        name: &str,
    ) -> Result<crate::database::CatalogRow> {
        database
            .kb(&self.tenant, name)?
            .ok_or_else(|| KbError::NotFound { name: name.into() })
    }

    /// The same data directory seen by `tenant`: only its knowledge bases exist.
    pub fn for_tenant(&self, tenant: &str) -> Result<Self> {
        basalt_security::validate_tenant_name(tenant)?;
        let kb_root = if tenant == DEFAULT_TENANT {
            self.root.join("kb")
        } else {
            self.root.join("tenants").join(tenant).join("kb")
        };
        Ok(DataDir {
            root: self.root.clone(),
            tenant: tenant.to_owned(),
            kb_root,
            master_key: self.master_key.clone(),
            database: self.database.clone(),
            objects: self.objects.clone(),
        })
    }

    /// The tenant whose knowledge bases this sees.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn from_env() -> Self {
        match std::env::var_os("BASALT_DATA_DIR").filter(|value| !value.is_empty()) {
            Some(dir) => DataDir::new(dir),
            None => DataDir::new(basalt_model::basalt_data_home()),
        }
    }

    /// The data directory shared by every tenant (the identity directory, the audit trail).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This tenant's own directory for what is not a knowledge base (its guardrails): the data
    /// directory itself for the default tenant, `tenants/<tenant>` for the others.
    pub fn tenant_dir(&self) -> PathBuf {
        self.kb_root
            .parent()
            .map_or_else(|| self.root.clone(), Path::to_path_buf)
    }

    /// The directory of the knowledge base `name` (whether or not it exists).
    pub fn kb_path(&self, name: &str) -> PathBuf {
        self.kb_root.join(name)
    }

    /// Creates a knowledge base, encrypted when this data directory has a master key; fails if
    /// one with that name exists.
    pub fn create(&self, settings: &KbSettings) -> Result<()> {
        self.create_with(settings, self.master_key.is_some())
    }

    /// Creates a knowledge base, encrypted at rest or not (encrypting needs a master key).
    pub fn create_with(&self, settings: &KbSettings, encrypted: bool) -> Result<()> {
        let provider = match (&self.master_key, encrypted) {
            (Some(provider), true) => Some(provider.clone()),
            (None, true) => {
                return Err(KbError::BadSettingsValue {
                    message:
                        "an encrypted knowledge base needs a master key (BASALT_MASTER_KEY_FILE)"
                            .into(),
                });
            }
            (_, false) => None,
        };
        let mut settings = settings.clone();
        if let Some(database) = &self.database {
            settings.backend = Backend::Postgres;
            settings.store_id = Some(basalt_core::id::new_id("", 8));
            validate_name(&settings.name)?;
            settings.validate()?;
            let key = provider
                .map(|provider| basalt_security::crypto::Envelope::create(provider.as_ref()))
                .transpose()?
                .map(|(envelope, _)| envelope);
            return database.insert_kb(&self.tenant, &settings, key.as_ref());
        }
        let settings = &settings;
        validate_name(&settings.name)?;
        settings.validate()?;
        let dir = self.kb_path(&settings.name);
        if dir.join(SETTINGS_FILE).exists() {
            return Err(KbError::Exists {
                name: settings.name.clone(),
            });
        }
        let io = |error: std::io::Error| KbError::io(&dir, error);
        std::fs::create_dir_all(&dir).map_err(io)?;
        // The key first: a knowledge base that lists (has settings) always has its key.
        if let Some(provider) = &provider {
            crate::encryption::create_key(&dir, provider.as_ref())?;
        }
        let json =
            serde_json::to_vec_pretty(settings).map_err(|error| KbError::io(&dir, error.into()))?;
        write_atomically(&dir.join(SETTINGS_FILE), &json).map_err(io)?;
        Ok(())
    }

    /// Replaces the settings of an existing knowledge base (atomically). Only search- and
    /// answer-time settings may differ: chunking, analyzer and embedding model shape the index
    /// and are fixed at creation. Open handles keep the old settings until reopened.
    pub fn update(&self, settings: &KbSettings) -> Result<()> {
        let current = self.settings(&settings.name)?;
        settings.validate()?;
        let fixed = |what: &str| {
            Err(KbError::BadSettingsValue {
                message: format!(
                    "{what} is fixed when the knowledge base is created; create a new one to change it"
                ),
            })
        };
        if settings.embedding != current.embedding {
            return fixed("the embedding model");
        }
        if settings.chunking != current.chunking {
            return fixed("chunking");
        }
        if settings.analyzer != current.analyzer {
            return fixed("the analyzer");
        }
        if settings.created_at != current.created_at {
            return fixed("created_at");
        }
        if settings.backend != current.backend || settings.store_id != current.store_id {
            return fixed("the backend");
        }
        self.store_settings(settings)
    }

    /// Writes the settings of an existing knowledge base (atomically), unchecked.
    pub(crate) fn store_settings(&self, settings: &KbSettings) -> Result<()> {
        if let Some(database) = &self.database {
            return match database.update_kb(&self.tenant, settings)? {
                true => Ok(()),
                false => Err(KbError::NotFound {
                    name: settings.name.clone(),
                }),
            };
        }
        let dir = self.kb_path(&settings.name);
        let json =
            serde_json::to_vec_pretty(settings).map_err(|error| KbError::io(&dir, error.into()))?;
        write_atomically(&dir.join(SETTINGS_FILE), &json).map_err(|error| KbError::io(&dir, error))
    }

    /// The settings of every knowledge base, by name.
    pub fn list(&self) -> Result<Vec<KbSettings>> {
        if let Some(database) = &self.database {
            return database.list_kbs(&self.tenant);
        }
        let root = &self.kb_root;
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(KbError::io(root, error)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| KbError::io(root, error))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if entry.path().join(SETTINGS_FILE).is_file() {
                out.push(self.settings(&name)?);
            }
        }
        out.sort_by(|left, right| left.name.cmp(&right.name));
        Ok(out)
    }

    pub fn settings(&self, name: &str) -> Result<KbSettings> {
        validate_name(name)?;
        if let Some(database) = &self.database {
            return Ok(self.row(database, name)?.0);
        }
        let path = self.kb_path(name).join(SETTINGS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(KbError::NotFound { name: name.into() });
            }
            Err(error) => return Err(KbError::io(&path, error)),
        };
        serde_json::from_slice(&bytes).map_err(|error| KbError::BadSettings {
            path: path.clone(),
            message: error.to_string(),
        })
    }

    /// Opens a knowledge base's index.
    pub fn open(&self, name: &str) -> Result<KnowledgeBase> {
        self.open_settings(self.settings(name)?)
    }

    /// Opens a knowledge base with its settings changed for this process only (the search-time
    /// ones: mode, fusion, BM25 parameters, vector index).
    pub fn open_settings(&self, settings: KbSettings) -> Result<KnowledgeBase> {
        validate_name(&settings.name)?;
        let dir = self.kb_path(&settings.name);
        let sealer = self.sealer(&settings.name)?;
        let options = StoreOptions {
            dimension: settings.embedding.dimension,
            analyzer: settings.analyzer.clone(),
            vector_index: settings.vector_index,
        };
        let index_dir = dir.join(crate::reembed::index_dir_name(
            settings.embedding.generation,
        ));
        let store: Box<dyn KnowledgeStore> = match (settings.backend, &sealer) {
            (Backend::Embedded, Some(sealer)) => Box::new(TantivyStore::open_sealed(
                &index_dir,
                &options,
                sealer.clone(),
            )?),
            (Backend::Embedded, None) => Box::new(TantivyStore::open(&index_dir, &options)?),
            (Backend::Postgres, None) => Box::new(basalt_pg::PgStore::open(
                self.database_for(&settings.name)?,
                &self.pg_schema(&settings),
                &options,
            )?),
            (Backend::Postgres, Some(sealer)) => Box::new(basalt_pg::PgStore::open_sealed(
                self.database_for(&settings.name)?,
                &self.pg_schema(&settings),
                &options,
                sealer.clone(),
            )?),
        };
        Ok(KnowledgeBase {
            settings,
            store,
            sealer,
        })
    }

    /// Deletes a knowledge base and everything in it.
    pub fn delete(&self, name: &str) -> Result<()> {
        let settings = self.settings(name)?;
        if let Some(database) = &self.database {
            let schema = (settings.backend == Backend::Postgres).then(|| self.pg_schema(&settings));
            return match database.delete_kb(&self.tenant, name, schema.as_deref())? {
                true => Ok(()),
                false => Err(KbError::NotFound { name: name.into() }),
            };
        }
        // Here without a database, a `postgres` knowledge base is an earlier Basalt's (see
        // `database_for`): its settings go; its tables, of a layout no longer read, stay.
        let dir = self.kb_path(name);
        // Rename first so a crash mid-delete never leaves a half-deleted KB that still lists.
        let doomed = self
            .kb_root
            .join(format!(".deleting-{name}-{}", std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(|error| KbError::io(&dir, error))?;
        std::fs::remove_dir_all(&doomed).map_err(|error| KbError::io(&doomed, error))
    }
}

pub(crate) const SETTINGS_FILE: &str = "kb.json";

pub(crate) use basalt_core::fs::write_atomically;

/// Names are 1–64 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(KbError::BadName { name: name.into() })
    }
}

/// A knowledge base's settings, fixed at creation (search-time ones can be overridden per query).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KbSettings {
    pub name: String,
    pub created_at: String,
    pub embedding: EmbeddingSettings,
    pub chunking: ChunkingSettings,
    /// BM25 analyzer (one of [`ANALYZERS`]).
    pub analyzer: String,
    pub bm25: Bm25Params,
    /// Default search mode and hybrid fusion.
    pub mode: SearchMode,
    pub fusion: Fusion,
    /// Exact scans or HNSW graphs for vector search (absent in KBs made before it existed).
    #[serde(default)]
    pub vector_index: VectorIndex,
    /// How questions over this KB are answered; unset fields take Basalt's defaults.
    #[serde(default)]
    pub answer: AnswerSettings,
    /// Where its index is: `embedded` (a tantivy index in the data directory, the default) or
    /// `postgres` (tables in the database of `--database`). Chosen when it is created.
    #[serde(default, skip_serializing_if = "Backend::is_embedded")]
    pub backend: Backend,
    /// For `postgres`: drawn at random when it was created, so two knowledge bases of the same
    /// name (two installations sharing a database, one deleted and made again) never share
    /// tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
}

/// Where a knowledge base's index is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A tantivy index in the data directory.
    #[default]
    Embedded,
    /// Tables in PostgreSQL with pgvector (`--database`).
    Postgres,
}

impl Backend {
    pub fn is_embedded(&self) -> bool {
        *self == Backend::Embedded
    }
}

/// Per-KB answering settings (see `basalt-answer`); `None` means Basalt's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AnswerSettings {
    /// The prompt template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PromptTemplate>,
    /// Passages given to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passages: Option<usize>,
    /// Below this cosine similarity between the question and the best passage, the answer is
    /// "not found in the documents" without asking the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_relevance: Option<f32>,
    /// How answers are written: quoted from the passages (`extractive`, the default) or
    /// written by the model (`generative`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<AnswerStyle>,
    /// The guardrail (`NAME` or `NAME:VERSION`) every answer from this knowledge base passes,
    /// on its question and on its answer, unless a request names another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<String>,
    /// The chat model that writes generative answers: a name registered with `basalt models
    /// add` (a model served elsewhere) [default: the embedded model].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The chat model that writes when `model` fails before writing anything (a server down,
    /// a refused key): another registered name, or the embedded model's
    /// (`smollm2-135m-instruct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model: Option<String>,
}

/// How an answer is written.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AnswerStyle {
    /// The passage sentence the selector judges to answer the question, quoted and cited; no
    /// model writes anything. Right for a small local model, which misstates what it reads.
    #[default]
    Extractive,
    /// The model writes the answer from the passages, shown a sentence at a time once each
    /// passes the grounding check.
    Generative,
}

impl std::str::FromStr for AnswerStyle {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "extractive" => Ok(Self::Extractive),
            "generative" => Ok(Self::Generative),
            other => Err(format!(
                "unknown answer style {other:?}: use extractive or generative"
            )),
        }
    }
}

/// A versioned prompt template. Placeholders: in `passage`, `{n}`, `{title}`, `{location}`
/// (source path, page, section) and `{text}`; in `user`, `{passages}` and `{question}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplate {
    /// Reported with every answer, so a change of wording is visible in logs and evaluations.
    pub version: String,
    pub system: String,
    pub passage: String,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EmbeddingSettings {
    /// A catalogued model name (resolved in the models directory) or a path.
    pub model: String,
    pub dimension: usize,
    /// The model's input limit in tokens; no chunk is longer.
    pub max_tokens: usize,
    /// How many times the knowledge base was re-embedded (`basalt kb reembed`): its index is
    /// `index` at 0, `index-N` after.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChunkingSettings {
    /// Most model tokens per chunk (special tokens included); at most the model's limit.
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl KbSettings {
    /// Defaults for the default embedding model (all-MiniLM-L6-v2: 384 dimensions, 256 tokens).
    pub fn new(name: &str) -> Self {
        KbSettings {
            name: name.into(),
            created_at: basalt_core::clock::now_rfc3339(),
            embedding: EmbeddingSettings {
                model: DEFAULT_EMBEDDING_MODEL.into(),
                dimension: 384,
                max_tokens: 256,
                generation: 0,
            },
            chunking: ChunkingSettings {
                max_tokens: 256,
                overlap_tokens: 32,
            },
            analyzer: DEFAULT_ANALYZER.into(),
            bm25: Bm25Params::default(),
            mode: SearchMode::Hybrid,
            fusion: Fusion::default(),
            vector_index: VectorIndex::Auto,
            answer: AnswerSettings::default(),
            backend: Backend::Embedded,
            store_id: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(KbError::BadSettingsValue { message });
        if !ANALYZERS.contains(&self.analyzer.as_str()) {
            return bad(format!(
                "unknown analyzer {:?}; choose one of {}",
                self.analyzer,
                ANALYZERS.join(", ")
            ));
        }
        let chunking = self.chunking;
        if chunking.max_tokens < 16 || chunking.max_tokens > self.embedding.max_tokens {
            return bad(format!(
                "chunk size {} must be between 16 and the model's limit of {} tokens",
                chunking.max_tokens, self.embedding.max_tokens
            ));
        }
        if chunking.overlap_tokens * 2 > chunking.max_tokens {
            return bad(format!(
                "overlap {} must be at most half the chunk size {}",
                chunking.overlap_tokens, chunking.max_tokens
            ));
        }
        if !(self.bm25.k1 >= 0.0 && (0.0..=1.0).contains(&self.bm25.b)) {
            return bad("BM25 needs k1 ≥ 0 and 0 ≤ b ≤ 1".into());
        }
        Ok(())
    }

    /// Where the embedding model's files are.
    pub fn model_path(&self, models: &ModelsDir) -> PathBuf {
        if basalt_model::catalog()
            .iter()
            .any(|spec| spec.name == self.embedding.model)
        {
            models.model_dir(&self.embedding.model)
        } else {
            PathBuf::from(&self.embedding.model)
        }
    }
}

/// An open knowledge base: its settings and its index, which only its verbs reach.
#[derive(Debug)]
pub struct KnowledgeBase {
    pub settings: KbSettings,
    pub(crate) store: Box<dyn KnowledgeStore>,
    /// The data key of an encrypted knowledge base: what else holds its content on disk (an
    /// upload waiting to be ingested) is sealed with it too.
    pub sealer: Option<Arc<dyn Sealer>>,
}

impl KnowledgeBase {
    /// Adds or replaces documents with their chunks (ingestion does this; `ingest`).
    pub fn write(&self, documents: Vec<DocumentWrite>) -> Result<()> {
        Ok(self.store.write(documents)?)
    }

    /// Deletes documents by id; returns how many there were.
    pub fn delete(&self, doc_ids: &[String]) -> Result<usize> {
        Ok(self.store.delete(doc_ids)?)
    }

    /// One document's record.
    pub fn document(&self, doc_id: &str) -> Result<Option<DocumentRecord>> {
        Ok(self.store.document(doc_id)?)
    }

    /// Every document's record.
    pub fn documents(&self) -> Result<Vec<DocumentRecord>> {
        Ok(self.store.documents()?)
    }

    /// A document's chunks in order (text, headings, offsets, vectors).
    pub fn chunks(&self, doc_id: &str) -> Result<Vec<basalt_index::ChunkRecord>> {
        Ok(self.store.chunks(doc_id)?)
    }

    /// Document and chunk counts and the index's size.
    pub fn stats(&self) -> Result<IndexStats> {
        Ok(self.store.stats()?)
    }

    /// Bytes the index takes where it is stored (its files, or its tables in the database).
    pub fn index_bytes(&self) -> Result<u64> {
        Ok(self.store.size_bytes()?)
    }

    /// Settles merges and builds the vector graphs of merged segments now, not during a later
    /// search.
    pub fn finish_writes(&self) -> Result<()> {
        Ok(self.store.finish_writes()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_open_delete() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = DataDir::new(dir.path());
        assert!(data.list().expect("empty list").is_empty());
        data.create(&KbSettings::new("alpha")).expect("creates");
        data.create(&KbSettings::new("beta")).expect("creates");
        assert!(matches!(
            data.create(&KbSettings::new("alpha")),
            Err(KbError::Exists { .. })
        ));
        let names: Vec<String> = data
            .list()
            .expect("lists")
            .into_iter()
            .map(|kb| kb.name)
            .collect();
        assert_eq!(names, ["alpha", "beta"]);
        let kb = data.open("alpha").expect("opens");
        assert_eq!(kb.stats().expect("stats").documents, 0);
        drop(kb);
        data.delete("alpha").expect("deletes");
        assert!(matches!(data.open("alpha"), Err(KbError::NotFound { .. })));
        assert_eq!(data.list().expect("lists").len(), 1);
    }

    #[test]
    fn search_settings_change_and_index_settings_do_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = DataDir::new(dir.path());
        data.create(&KbSettings::new("alpha")).expect("creates");
        let mut settings = data.settings("alpha").expect("reads");
        settings.mode = SearchMode::Bm25;
        settings.answer.passages = Some(3);
        data.update(&settings).expect("search settings change");
        assert_eq!(data.settings("alpha").expect("reads"), settings);
        for change in [
            |s: &mut KbSettings| s.chunking.max_tokens = 100,
            |s: &mut KbSettings| s.analyzer = "standard".into(),
            |s: &mut KbSettings| s.embedding.dimension = 768,
        ] {
            let mut changed = settings.clone();
            change(&mut changed);
            let error = data.update(&changed).expect_err("fixed at creation");
            assert!(error.to_string().contains("fixed"), "{error}");
        }
        assert_eq!(data.settings("alpha").expect("reads"), settings);
        assert!(matches!(
            data.update(&KbSettings::new("ghost")),
            Err(KbError::NotFound { .. })
        ));
    }

    #[test]
    fn names_and_settings_are_checked() {
        for bad in ["", ".hidden", "a/b", "with space", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("team-docs_v2.1").expect("valid");
        let mut settings = KbSettings::new("x");
        settings.chunking.max_tokens = 1000;
        assert!(settings.validate().is_err());
        let mut settings = KbSettings::new("x");
        settings.analyzer = "klingon".into();
        assert!(settings.validate().is_err());
    }
}
