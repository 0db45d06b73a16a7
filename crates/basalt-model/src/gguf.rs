//! The GGUF container: a writer for the converter, and a header reader that checks a file before
//! llama.cpp maps it, so a truncated or foreign file gets an error that names the problem.
//!
//! Layout (version 3): magic `GGUF`, version, tensor count, metadata count, the metadata
//! key/values, the tensor descriptions, padding to the alignment, then the tensor data with each
//! tensor's offset aligned.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::error::{ModelError, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;
const ALIGNMENT: u64 = 32;

// Metadata value type tags.
const TYPE_U8: u32 = 0;
const TYPE_I8: u32 = 1;
const TYPE_U16: u32 = 2;
const TYPE_I16: u32 = 3;
const TYPE_U32: u32 = 4;
const TYPE_I32: u32 = 5;
const TYPE_F32: u32 = 6;
const TYPE_BOOL: u32 = 7;
const TYPE_STRING: u32 = 8;
const TYPE_ARRAY: u32 = 9;
const TYPE_U64: u32 = 10;
const TYPE_I64: u32 = 11;
const TYPE_F64: u32 = 12;

/// ggml's tensor type id for f32.
const GGML_TYPE_F32: u32 = 0;

/// A metadata value the converter writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MetadataValue {
    U32(u32),
    F32(f32),
    Bool(bool),
    String(String),
    StringArray(Vec<String>),
    I32Array(Vec<i32>),
}

/// An f32 tensor to write. `dims` are in ggml order: the fastest-varying dimension first, which
/// is the reverse of PyTorch's shape.
#[derive(Debug)]
pub(crate) struct Tensor {
    pub(crate) name: String,
    pub(crate) dims: Vec<u64>,
    pub(crate) values: Vec<f32>,
}

/// Builds a GGUF file in memory and writes it atomically (temp file, fsync, rename).
#[derive(Debug, Default)]
pub(crate) struct GgufWriter {
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<Tensor>,
}

impl GgufWriter {
    pub(crate) fn metadata(&mut self, key: &str, value: MetadataValue) {
        self.metadata.push((key.to_string(), value));
    }

    pub(crate) fn tensor(&mut self, tensor: Tensor) {
        self.tensors.push(tensor);
    }

    pub(crate) fn write_atomically(&self, path: &Path) -> Result<()> {
        let temporary = path.with_extension("gguf.partial");
        let file = std::fs::File::create(&temporary).map_err(|e| ModelError::io(&temporary, e))?;
        let mut out = BufWriter::new(file);
        self.write_to(&mut out)
            .map_err(|e| ModelError::io(&temporary, e))?;
        let file = out
            .into_inner()
            .map_err(|e| ModelError::io(&temporary, e.into_error()))?;
        file.sync_all().map_err(|e| ModelError::io(&temporary, e))?;
        std::fs::rename(&temporary, path).map_err(|e| ModelError::io(path, e))?;
        Ok(())
    }

    fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        // The header is small (the vocabulary is the largest part), so it is built in memory to
        // know where the aligned tensor data starts.
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.extend(VERSION.to_le_bytes());
        header.extend((self.tensors.len() as u64).to_le_bytes());
        header.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            header.extend(encode_string(key));
            header.extend(encode_value(value));
        }
        let mut offset = 0u64;
        for tensor in &self.tensors {
            header.extend(encode_string(&tensor.name));
            header.extend((tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                header.extend(dim.to_le_bytes());
            }
            header.extend(GGML_TYPE_F32.to_le_bytes());
            header.extend(offset.to_le_bytes());
            offset = align(offset + tensor.values.len() as u64 * 4);
        }
        let padding = align(header.len() as u64) as usize - header.len();
        header.resize(header.len() + padding, 0);
        out.write_all(&header)?;
        for tensor in &self.tensors {
            let bytes: Vec<u8> = tensor.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let padding = align(bytes.len() as u64) as usize - bytes.len();
            out.write_all(&bytes)?;
            out.write_all(&vec![0u8; padding])?;
        }
        Ok(())
    }
}

fn align(value: u64) -> u64 {
    value.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn encode_string(text: &str) -> Vec<u8> {
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

fn encode_value(value: &MetadataValue) -> Vec<u8> {
    let mut bytes = Vec::new();
    match value {
        MetadataValue::U32(v) => {
            bytes.extend(TYPE_U32.to_le_bytes());
            bytes.extend(v.to_le_bytes());
        }
        MetadataValue::F32(v) => {
            bytes.extend(TYPE_F32.to_le_bytes());
            bytes.extend(v.to_le_bytes());
        }
        MetadataValue::Bool(v) => {
            bytes.extend(TYPE_BOOL.to_le_bytes());
            bytes.push(u8::from(*v));
        }
        MetadataValue::String(v) => {
            bytes.extend(TYPE_STRING.to_le_bytes());
            bytes.extend(encode_string(v));
        }
        MetadataValue::StringArray(items) => {
            bytes.extend(TYPE_ARRAY.to_le_bytes());
            bytes.extend(TYPE_STRING.to_le_bytes());
            bytes.extend((items.len() as u64).to_le_bytes());
            for item in items {
                bytes.extend(encode_string(item));
            }
        }
        MetadataValue::I32Array(items) => {
            bytes.extend(TYPE_ARRAY.to_le_bytes());
            bytes.extend(TYPE_I32.to_le_bytes());
            bytes.extend((items.len() as u64).to_le_bytes());
            for item in items {
                bytes.extend(item.to_le_bytes());
            }
        }
    }
    bytes
}

/// What the header check learned about a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GgufSummary {
    pub(crate) architecture: Option<String>,
    pub(crate) tensor_count: u64,
    /// Bytes the file must hold for every tensor's data to be present.
    pub(crate) required_size: u64,
}

/// Reads a GGUF header and checks that the file is long enough for every tensor it declares.
pub(crate) fn check_file(path: &Path) -> Result<GgufSummary> {
    let file = std::fs::File::open(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => ModelError::io(path, error),
    })?;
    let file_size = file
        .metadata()
        .map_err(|error| ModelError::io(path, error))?
        .len();
    let corrupt = |reason: String| ModelError::CorruptFile {
        path: path.to_path_buf(),
        reason,
    };
    let summary = read_header(&mut BufReader::new(file), file_size).map_err(corrupt)?;
    if summary.required_size > file_size {
        return Err(corrupt(format!(
            "it is truncated: its tensors need {} bytes but the file has {file_size}",
            summary.required_size
        )));
    }
    Ok(summary)
}

struct HeaderReader<'a, R> {
    input: &'a mut R,
    position: u64,
    file_size: u64,
}

impl<R: Read> HeaderReader<'_, R> {
    fn bytes<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut buffer = [0u8; N];
        self.input
            .read_exact(&mut buffer)
            .map_err(|_| "the header ends early (truncated?)".to_string())?;
        self.position += N as u64;
        Ok(buffer)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }

    fn skip(&mut self, count: u64) -> std::result::Result<(), String> {
        if self.position + count > self.file_size {
            return Err("the header ends early (truncated?)".to_string());
        }
        let copied = std::io::copy(&mut self.input.take(count), &mut std::io::sink())
            .map_err(|error| error.to_string())?;
        self.position += copied;
        if copied != count {
            return Err("the header ends early (truncated?)".to_string());
        }
        Ok(())
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let length = self.u64()?;
        if self.position + length > self.file_size || length > 1 << 20 {
            return Err(format!(
                "a header string claims {length} bytes (truncated?)"
            ));
        }
        let mut buffer = vec![0u8; length as usize];
        self.input
            .read_exact(&mut buffer)
            .map_err(|_| "the header ends early (truncated?)".to_string())?;
        self.position += length;
        String::from_utf8(buffer).map_err(|_| "a header string is not UTF-8".to_string())
    }

    /// Reads one metadata value, returning it when it is a string or a u32 (the only kinds the
    /// check needs) and skipping anything else.
    fn value(&mut self, value_type: u32) -> std::result::Result<Option<ScalarValue>, String> {
        let fixed = |size: u64| -> Option<u64> { Some(size) };
        let size = match value_type {
            TYPE_U8 | TYPE_I8 | TYPE_BOOL => fixed(1),
            TYPE_U16 | TYPE_I16 => fixed(2),
            TYPE_U32 => return self.u32().map(|v| Some(ScalarValue::U32(v))),
            TYPE_I32 | TYPE_F32 => fixed(4),
            TYPE_U64 | TYPE_I64 | TYPE_F64 => fixed(8),
            TYPE_STRING => return self.string().map(|v| Some(ScalarValue::String(v))),
            TYPE_ARRAY => {
                let element_type = self.u32()?;
                let count = self.u64()?;
                if count > self.file_size {
                    return Err(format!("an array claims {count} elements (corrupt header)"));
                }
                for _ in 0..count {
                    self.value(element_type)?;
                }
                return Ok(None);
            }
            other => return Err(format!("unknown metadata type {other} (corrupt header)")),
        };
        self.skip(size.unwrap_or(0))?;
        Ok(None)
    }
}

enum ScalarValue {
    U32(u32),
    String(String),
}

fn read_header(input: &mut impl Read, file_size: u64) -> std::result::Result<GgufSummary, String> {
    let mut reader = HeaderReader {
        input,
        position: 0,
        file_size,
    };
    let magic = reader
        .bytes::<4>()
        .map_err(|_| "the file is too short to be GGUF".to_string())?;
    if &magic != MAGIC {
        return Err("it is not a GGUF file (wrong magic bytes)".to_string());
    }
    let version = reader.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported GGUF version {version}"));
    }
    let tensor_count = reader.u64()?;
    let metadata_count = reader.u64()?;
    if tensor_count > file_size || metadata_count > file_size {
        return Err("the header declares more entries than the file can hold".to_string());
    }
    let mut architecture = None;
    let mut alignment = ALIGNMENT;
    for _ in 0..metadata_count {
        let key = reader.string()?;
        let value_type = reader.u32()?;
        match (key.as_str(), reader.value(value_type)?) {
            ("general.architecture", Some(ScalarValue::String(name))) => architecture = Some(name),
            ("general.alignment", Some(ScalarValue::U32(value))) if value > 0 => {
                alignment = u64::from(value);
            }
            _ => {}
        }
    }
    let mut data_end = 0u64;
    for _ in 0..tensor_count {
        let name = reader.string()?;
        let dimension_count = reader.u32()?;
        if dimension_count > 8 {
            return Err(format!("tensor {name} has {dimension_count} dimensions"));
        }
        let mut element_count = 1u64;
        for _ in 0..dimension_count {
            element_count = element_count.saturating_mul(reader.u64()?);
        }
        let tensor_type = reader.u32()?;
        let offset = reader.u64()?;
        if let Some(bytes) = tensor_bytes(tensor_type, element_count) {
            data_end = data_end.max(offset.saturating_add(bytes));
        }
    }
    let data_start = reader.position.div_ceil(alignment) * alignment;
    Ok(GgufSummary {
        architecture,
        tensor_count,
        required_size: data_start.saturating_add(data_end),
    })
}

/// Bytes a tensor of `element_count` elements takes for the ggml types whose block layout is
/// fixed; `None` for types the check does not know (their size is then left to llama.cpp).
fn tensor_bytes(tensor_type: u32, element_count: u64) -> Option<u64> {
    let (block_elements, block_bytes) = match tensor_type {
        0 => (1, 4),       // F32
        1 | 30 => (1, 2),  // F16, BF16
        2 => (32, 18),     // Q4_0
        3 => (32, 20),     // Q4_1
        6 => (32, 22),     // Q5_0
        7 => (32, 24),     // Q5_1
        8 => (32, 34),     // Q8_0
        9 => (32, 36),     // Q8_1
        10 => (256, 84),   // Q2_K
        11 => (256, 110),  // Q3_K
        12 => (256, 144),  // Q4_K
        13 => (256, 176),  // Q5_K
        14 => (256, 210),  // Q6_K
        15 => (256, 292),  // Q8_K
        24 => (1, 1),      // I8
        25 => (1, 2),      // I16
        26 => (1, 4),      // I32
        27 | 28 => (1, 8), // I64, F64
        _ => return None,
    };
    Some(
        element_count
            .div_ceil(block_elements)
            .saturating_mul(block_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_writer() -> GgufWriter {
        let mut writer = GgufWriter::default();
        writer.metadata("general.architecture", MetadataValue::String("bert".into()));
        writer.metadata("bert.block_count", MetadataValue::U32(6));
        writer.metadata("x.eps", MetadataValue::F32(1e-12));
        writer.metadata("x.flag", MetadataValue::Bool(false));
        writer.metadata(
            "x.tokens",
            MetadataValue::StringArray(vec!["[PAD]".into(), "▁a".into()]),
        );
        writer.metadata("x.types", MetadataValue::I32Array(vec![3, 1]));
        writer.tensor(Tensor {
            name: "a".into(),
            dims: vec![3],
            values: vec![1.0, 2.0, 3.0],
        });
        writer.tensor(Tensor {
            name: "b".into(),
            dims: vec![2, 2],
            values: vec![0.5; 4],
        });
        writer
    }

    #[test]
    fn written_file_reads_back_and_truncation_is_caught() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("m.gguf");
        sample_writer().write_atomically(&path).expect("write");
        let summary = check_file(&path).expect("valid file");
        assert_eq!(summary.architecture.as_deref(), Some("bert"));
        assert_eq!(summary.tensor_count, 2);
        let size = std::fs::metadata(&path).expect("metadata").len();
        // The second tensor starts at the aligned offset 32 and holds 16 bytes.
        assert_eq!(summary.required_size, size - 16);

        let bytes = std::fs::read(&path).expect("read");
        for cut in [3, 20, bytes.len() / 2, summary.required_size as usize - 1] {
            std::fs::write(&path, &bytes[..cut]).expect("truncate");
            let error = check_file(&path).expect_err("truncated file must fail");
            assert!(
                matches!(error, ModelError::CorruptFile { .. }),
                "cut at {cut}: {error}"
            );
        }
    }

    #[test]
    fn foreign_file_is_not_gguf() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.gguf");
        std::fs::write(&path, b"{\"not\": \"gguf\"}").expect("write");
        let error = check_file(&path).expect_err("not gguf");
        assert!(error.to_string().contains("not a GGUF file"), "{error}");
        let missing = check_file(&dir.path().join("missing.gguf")).expect_err("missing");
        assert!(matches!(missing, ModelError::MissingFile { .. }));
    }
}
