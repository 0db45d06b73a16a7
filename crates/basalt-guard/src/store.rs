//! Named, versioned guardrail configurations in the data directory:
//! `<data>/guardrails/<name>/v<N>.json`. Saving a name again adds version N+1; earlier versions
//! stay readable, so a request or a key can pin one.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{ConfigError, GuardrailConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid guardrail name {0:?}: use 1–50 letters, digits, '-' or '_'")]
    InvalidName(String),
    #[error(
        "no guardrail named {0:?} (create one with `basalt guard create {0} --file CONFIG.json`)"
    )]
    NotFound(String),
    #[error("guardrail {name:?} has no version {version} (its versions are 1–{latest})")]
    NoVersion {
        name: String,
        version: u32,
        latest: u32,
    },
    #[error("guardrail {0:?}: write NAME or NAME:VERSION with a numeric version")]
    InvalidReference(String),
    #[error("invalid guardrail configuration: {0}")]
    Invalid(#[from] ConfigError),
    /// The shared store (PostgreSQL, `--database`) cannot be reached or refused a query.
    #[error("the database: {0}")]
    Unavailable(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `InvalidName` unless `name` is a guardrail name (as every store checks before it stores).
pub fn check_name(name: &str) -> Result<(), StoreError> {
    match valid_name(name) {
        true => Ok(()),
        false => Err(StoreError::InvalidName(name.to_owned())),
    }
}

/// Guardrail names follow Bedrock's: 1–50 ASCII letters, digits, `-` or `_`.
fn valid_name(name: &str) -> bool {
    (1..=50).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredGuardrail {
    pub name: String,
    pub version: u32,
    pub config: GuardrailConfig,
}

/// A summary for listings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardrailSummary {
    pub name: String,
    pub latest_version: u32,
    pub description: String,
}

/// Where one tenant's guardrail configurations are kept, behind one seam: the embedded
/// [`GuardrailStore`] keeps them as files; a shared store (PostgreSQL, for several replicas)
/// implements the same verbs and must pass [`conformance::guardrail_configs`].
pub trait GuardrailConfigs: Send + Sync + std::fmt::Debug {
    /// Validates `config` and stores it as the next version of `name` (1 for a new name).
    fn save(&self, name: &str, config: &GuardrailConfig) -> Result<StoredGuardrail, StoreError>;

    /// Version `version` of `name`, or its latest.
    fn load(&self, name: &str, version: Option<u32>) -> Result<StoredGuardrail, StoreError>;

    /// Every guardrail with its latest version, by name.
    fn list(&self) -> Result<Vec<GuardrailSummary>, StoreError>;

    /// Deletes every version of `name`.
    fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// The guardrail a reference names: `NAME` (its latest version) or `NAME:VERSION`, as
    /// requests, keys and knowledge bases name one.
    fn load_reference(&self, reference: &str) -> Result<StoredGuardrail, StoreError> {
        match reference.rsplit_once(':') {
            Some((name, version)) => {
                let version = version
                    .parse()
                    .map_err(|_| StoreError::InvalidReference(reference.to_owned()))?;
                self.load(name, Some(version))
            }
            None => self.load(reference, None),
        }
    }
}

/// The guardrails of one data directory.
#[derive(Debug, Clone)]
pub struct GuardrailStore {
    root: PathBuf,
}

impl GuardrailStore {
    /// The store under `data_dir/guardrails`.
    pub fn new(data_dir: &Path) -> Self {
        GuardrailStore {
            root: data_dir.join("guardrails"),
        }
    }

    fn directory(&self, name: &str) -> Result<PathBuf, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::InvalidName(name.to_owned()));
        }
        Ok(self.root.join(name))
    }

    fn versions(&self, name: &str) -> Result<Vec<u32>, StoreError> {
        let directory = self.directory(name)?;
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(&directory)(error)),
        };
        let mut versions: Vec<u32> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }
}

impl GuardrailConfigs for GuardrailStore {
    fn save(&self, name: &str, config: &GuardrailConfig) -> Result<StoredGuardrail, StoreError> {
        config.validate()?;
        let directory = self.directory(name)?;
        std::fs::create_dir_all(&directory).map_err(io(&directory))?;
        let version = self.versions(name)?.last().map_or(1, |latest| latest + 1);
        let path = directory.join(format!("v{version}.json"));
        let bytes = serde_json::to_vec_pretty(config).expect("a configuration serializes");
        basalt_core::fs::write_atomically(&path, &bytes).map_err(io(&path))?;
        Ok(StoredGuardrail {
            name: name.to_owned(),
            version,
            config: config.clone(),
        })
    }

    fn load(&self, name: &str, version: Option<u32>) -> Result<StoredGuardrail, StoreError> {
        let versions = self.versions(name)?;
        let Some(&latest) = versions.last() else {
            return Err(StoreError::NotFound(name.to_owned()));
        };
        let version = version.unwrap_or(latest);
        if !versions.contains(&version) {
            return Err(StoreError::NoVersion {
                name: name.to_owned(),
                version,
                latest,
            });
        }
        let path = self.directory(name)?.join(format!("v{version}.json"));
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let config = GuardrailConfig::from_json(&text)?;
        Ok(StoredGuardrail {
            name: name.to_owned(),
            version,
            config,
        })
    }

    fn list(&self) -> Result<Vec<GuardrailSummary>, StoreError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(&self.root)(error)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| valid_name(name))
            .collect();
        names.sort();
        let mut summaries = Vec::new();
        for name in names {
            if self.versions(&name)?.is_empty() {
                continue;
            }
            let stored = self.load(&name, None)?;
            summaries.push(GuardrailSummary {
                name,
                latest_version: stored.version,
                description: stored.config.description,
            });
        }
        Ok(summaries)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        if self.versions(name)?.is_empty() {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        let directory = self.directory(name)?;
        std::fs::remove_dir_all(&directory).map_err(io(&directory))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::guardrail_configs(&GuardrailStore::new(dir.path()));
    }
}

/// The behaviour every [`GuardrailConfigs`] store must have, run against the embedded one here
/// and against any other (a PostgreSQL store) in its own tests.
pub mod conformance {
    use super::{GuardrailConfigs, StoreError};
    use crate::config::GuardrailConfig;

    /// `store` must be empty.
    pub fn guardrail_configs(store: &dyn GuardrailConfigs) {
        assert!(store.list().expect("list").is_empty());
        let mut config = GuardrailConfig {
            description: "first".into(),
            ..GuardrailConfig::default()
        };
        assert_eq!(store.save("support", &config).expect("save").version, 1);
        config.description = "second".into();
        assert_eq!(store.save("support", &config).expect("save").version, 2);
        assert_eq!(
            store
                .load("support", None)
                .expect("latest")
                .config
                .description,
            "second"
        );
        assert_eq!(
            store
                .load("support", Some(1))
                .expect("v1")
                .config
                .description,
            "first"
        );
        assert!(matches!(
            store.load("support", Some(3)),
            Err(StoreError::NoVersion { latest: 2, .. })
        ));
        assert_eq!(store.load_reference("support:1").expect("v1").version, 1);
        assert_eq!(store.load_reference("support").expect("latest").version, 2);
        assert!(matches!(
            store.load_reference("support:x"),
            Err(StoreError::InvalidReference(_))
        ));
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].latest_version, 2);
        assert!(matches!(
            store.load("nope", None),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.save("../x", &config),
            Err(StoreError::InvalidName(_))
        ));
        store.delete("support").expect("delete");
        assert!(matches!(
            store.delete("support"),
            Err(StoreError::NotFound(_))
        ));
    }
}
