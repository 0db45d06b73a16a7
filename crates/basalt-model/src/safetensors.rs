//! A reader for the safetensors format (an 8-byte header length, a JSON header, raw tensor bytes),
//! enough for the converter: it validates every offset so a truncated or foreign file is reported,
//! never indexed out of bounds.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{ModelError, Result};

/// One tensor's description from the header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorInfo {
    pub(crate) dtype: String,
    pub(crate) shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// A whole safetensors file in memory.
#[derive(Debug)]
pub(crate) struct SafeTensors {
    data: Vec<u8>,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
}

#[derive(serde::Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

impl SafeTensors {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ModelError::MissingFile {
                path: path.to_path_buf(),
            },
            _ => ModelError::io(path, error),
        })?;
        Self::parse(data).map_err(|reason| ModelError::CorruptFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn parse(data: Vec<u8>) -> std::result::Result<Self, String> {
        let header_len_bytes: [u8; 8] = data
            .get(..8)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("the file is shorter than a safetensors header")?;
        let header_len = usize::try_from(u64::from_le_bytes(header_len_bytes))
            .map_err(|_| "the header length does not fit in memory")?;
        let data_start = 8usize
            .checked_add(header_len)
            .filter(|&end| end <= data.len())
            .ok_or("the header length points past the end of the file (truncated?)")?;
        let header: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&data[8..data_start])
                .map_err(|error| format!("the header is not valid JSON: {error}"))?;
        let payload_len = data.len() - data_start;
        let mut tensors = BTreeMap::new();
        for (name, value) in header {
            if name == "__metadata__" {
                continue;
            }
            let raw: RawInfo =
                serde_json::from_value(value).map_err(|error| format!("tensor {name}: {error}"))?;
            let (begin, end) = raw.data_offsets;
            if begin > end || end > payload_len {
                return Err(format!(
                    "tensor {name} lies outside the file (bytes {begin}..{end} of {payload_len}; truncated?)"
                ));
            }
            tensors.insert(
                name,
                TensorInfo {
                    dtype: raw.dtype,
                    shape: raw.shape,
                    begin,
                    end,
                },
            );
        }
        Ok(SafeTensors {
            data,
            data_start,
            tensors,
        })
    }

    #[cfg(test)]
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub(crate) fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The tensor's values as f32, checking that dtype and byte length agree with its shape.
    pub(crate) fn f32_values(&self, name: &str) -> std::result::Result<Vec<f32>, String> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        if info.dtype != "F32" {
            return Err(format!(
                "tensor {name} has dtype {}, expected F32",
                info.dtype
            ));
        }
        let element_count: usize = info.shape.iter().product();
        let bytes = &self.data[self.data_start + info.begin..self.data_start + info.end];
        if bytes.len() != element_count * 4 {
            return Err(format!(
                "tensor {name} holds {} bytes but its shape {:?} needs {}",
                bytes.len(),
                info.shape,
                element_count * 4
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(header: &str, payload: &[u8]) -> Vec<u8> {
        let mut data = (header.len() as u64).to_le_bytes().to_vec();
        data.extend_from_slice(header.as_bytes());
        data.extend_from_slice(payload);
        data
    }

    #[test]
    fn reads_f32_tensor() {
        let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{}}"#;
        let payload: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let tensors = SafeTensors::parse(file_with(header, &payload)).expect("valid file");
        assert_eq!(tensors.f32_values("a"), Ok(vec![1.5, -2.0]));
        assert_eq!(tensors.names().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn truncated_payload_is_reported() {
        let header = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let error = SafeTensors::parse(file_with(header, &[0; 8])).expect_err("truncated");
        assert!(error.contains("truncated"), "{error}");
    }

    #[test]
    fn garbage_is_reported() {
        assert!(SafeTensors::parse(b"GGUF".to_vec()).is_err());
        assert!(SafeTensors::parse(u64::MAX.to_le_bytes().to_vec()).is_err());
        assert!(SafeTensors::parse(file_with("not json", &[])).is_err());
    }

    #[test]
    fn wrong_dtype_or_length_is_reported() {
        let header = r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let tensors = SafeTensors::parse(file_with(header, &[0; 8])).expect("valid header");
        assert!(tensors.f32_values("a").is_err());
        assert!(tensors.f32_values("b").is_err());
        assert!(tensors.f32_values("c").is_err());
    }
}
