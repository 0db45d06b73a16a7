//! Basalt's own converter from a Hugging Face BERT checkpoint (`model.safetensors`,
//! `config.json`, `tokenizer.json`) to the GGUF layout llama.cpp's `bert` architecture loads.
//!
//! Weights stay f32 (f16 and q8_0 measured slower for MiniLM on this CPU). The query, key and
//! value projections are fused into one `attn_qkv` tensor so each layer runs one matrix product
//! instead of three.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::gguf::{GgufWriter, MetadataValue, Tensor};
use crate::safetensors::SafeTensors;

/// Bumped whenever the converter's output changes, so installed files get rebuilt.
pub(crate) const CONVERTER_VERSION: u32 = 1;

/// llama.cpp's pooling type id for mean pooling.
const POOLING_MEAN: u32 = 1;

// GGUF token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNKNOWN: i32 = 2;
const TOKEN_CONTROL: i32 = 3;

#[derive(Debug, Deserialize)]
pub(crate) struct BertConfig {
    model_type: String,
    pub(crate) hidden_size: u32,
    pub(crate) intermediate_size: u32,
    pub(crate) num_hidden_layers: u32,
    pub(crate) num_attention_heads: u32,
    pub(crate) max_position_embeddings: u32,
    pub(crate) layer_norm_eps: f32,
    #[serde(default = "default_type_vocab_size")]
    pub(crate) type_vocab_size: u32,
    pub(crate) vocab_size: u32,
    #[serde(default)]
    hidden_act: Option<String>,
}

fn default_type_vocab_size() -> u32 {
    2
}

/// Reads and checks `config.json` of a BERT checkpoint: a BERT model with GELU activation.
pub(crate) fn read_bert_config(model_dir: &Path) -> Result<BertConfig> {
    let config_path = model_dir.join("config.json");
    let config: BertConfig = read_json(&config_path)?;
    let wrong_model = |reason: String| ModelError::WrongModel {
        path: config_path.clone(),
        expected: "BERT (sentence-transformers) embedding".to_string(),
        reason,
    };
    if config.model_type != "bert" {
        return Err(wrong_model(format!(
            "config.json says model_type {:?}",
            config.model_type
        )));
    }
    if let Some(activation) = &config.hidden_act
        && activation != "gelu"
    {
        return Err(wrong_model(format!(
            "activation {activation:?} is not supported (only gelu)"
        )));
    }
    if config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Err(wrong_model(format!(
            "hidden size {} is not a multiple of {} attention heads",
            config.hidden_size, config.num_attention_heads
        )));
    }
    Ok(config)
}

/// Tensor `name` of a BERT checkpoint (with or without the `bert.` prefix) as f32, after
/// checking its shape against the one `config.json` implies.
pub(crate) fn bert_tensor(
    weights: &SafeTensors,
    name: &str,
    shape: &[usize],
) -> std::result::Result<Vec<f32>, String> {
    let prefixed = format!("bert.{name}");
    let full_name = if weights.info(name).is_none() && weights.info(&prefixed).is_some() {
        prefixed.as_str()
    } else {
        name
    };
    let info = weights
        .info(full_name)
        .ok_or_else(|| format!("tensor {full_name} is missing (not a BERT checkpoint?)"))?;
    if info.shape != shape {
        return Err(format!(
            "tensor {full_name} has shape {:?}, config.json implies {shape:?}",
            info.shape
        ));
    }
    weights.f32_values(full_name)
}

/// Converts the BERT checkpoint in `model_dir` into a GGUF file at `output`.
pub fn convert_bert_safetensors_to_gguf(model_dir: &Path, output: &Path, name: &str) -> Result<()> {
    let config = read_bert_config(model_dir)?;
    let wrong_model = |path: &Path, reason: String| ModelError::WrongModel {
        path: path.to_path_buf(),
        expected: "BERT (sentence-transformers) embedding".to_string(),
        reason,
    };

    let vocab = read_vocab(&model_dir.join("tokenizer.json"))?;
    if vocab.len() != config.vocab_size as usize {
        return Err(wrong_model(
            &model_dir.join("tokenizer.json"),
            format!(
                "it has {} tokens but config.json says {}",
                vocab.len(),
                config.vocab_size
            ),
        ));
    }

    let weights_path = model_dir.join("model.safetensors");
    let weights = SafeTensors::read(&weights_path)?;
    let mut writer = GgufWriter::default();
    write_metadata(&mut writer, &config, &vocab, name);
    add_tensors(&mut writer, &weights, &config)
        .map_err(|reason| wrong_model(&weights_path, reason))?;
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    }
    writer.write_atomically(output)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => ModelError::io(path, error),
    })?;
    serde_json::from_str(&text).map_err(|error| ModelError::CorruptFile {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })
}

#[derive(Debug, Deserialize)]
struct TokenizerFile {
    model: TokenizerModel,
}

#[derive(Debug, Deserialize)]
struct TokenizerModel {
    #[serde(rename = "type")]
    kind: String,
    vocab: std::collections::HashMap<String, u32>,
}

/// The vocabulary in id order.
fn read_vocab(path: &Path) -> Result<Vec<String>> {
    let file: TokenizerFile = read_json(path)?;
    if file.model.kind != "WordPiece" {
        return Err(ModelError::WrongModel {
            path: path.to_path_buf(),
            expected: "WordPiece tokenizer".to_string(),
            reason: format!("its model type is {}", file.model.kind),
        });
    }
    let mut vocab = vec![None; file.model.vocab.len()];
    for (token, id) in file.model.vocab {
        let slot = vocab
            .get_mut(id as usize)
            .ok_or_else(|| ModelError::CorruptFile {
                path: path.to_path_buf(),
                reason: format!("token id {id} is past the end of the vocabulary"),
            })?;
        *slot = Some(token);
    }
    vocab
        .into_iter()
        .enumerate()
        .map(|(id, token)| {
            token.ok_or_else(|| ModelError::CorruptFile {
                path: path.to_path_buf(),
                reason: format!("token id {id} is missing from the vocabulary"),
            })
        })
        .collect()
}

/// llama.cpp's WordPiece vocabulary marks word starts with U+2581 instead of marking
/// continuations with `##`.
fn phantom_space(token: &str) -> String {
    if token.starts_with('[') && token.ends_with(']') {
        token.to_string()
    } else if let Some(rest) = token.strip_prefix("##") {
        rest.to_string()
    } else {
        format!("\u{2581}{token}")
    }
}

fn write_metadata(writer: &mut GgufWriter, config: &BertConfig, vocab: &[String], name: &str) {
    use MetadataValue::{Bool, F32, I32Array, String as Str, StringArray, U32};
    writer.metadata("general.architecture", Str("bert".into()));
    writer.metadata("general.name", Str(name.into()));
    writer.metadata("general.file_type", U32(0));
    writer.metadata("basalt.converter_version", U32(CONVERTER_VERSION));
    writer.metadata("bert.context_length", U32(config.max_position_embeddings));
    writer.metadata("bert.embedding_length", U32(config.hidden_size));
    writer.metadata("bert.feed_forward_length", U32(config.intermediate_size));
    writer.metadata("bert.block_count", U32(config.num_hidden_layers));
    writer.metadata("bert.attention.head_count", U32(config.num_attention_heads));
    writer.metadata(
        "bert.attention.layer_norm_epsilon",
        F32(config.layer_norm_eps),
    );
    writer.metadata("bert.attention.causal", Bool(false));
    writer.metadata("bert.pooling_type", U32(POOLING_MEAN));

    let id_of = |wanted: &str| vocab.iter().position(|token| token == wanted);
    let token_types: Vec<i32> = vocab
        .iter()
        .map(|token| match token.as_str() {
            "[UNK]" => TOKEN_UNKNOWN,
            "[PAD]" | "[CLS]" | "[SEP]" | "[MASK]" => TOKEN_CONTROL,
            _ => TOKEN_NORMAL,
        })
        .collect();
    writer.metadata("tokenizer.ggml.model", Str("bert".into()));
    writer.metadata("tokenizer.ggml.pre", Str("default".into()));
    writer.metadata(
        "tokenizer.ggml.tokens",
        StringArray(vocab.iter().map(|token| phantom_space(token)).collect()),
    );
    writer.metadata("tokenizer.ggml.token_type", I32Array(token_types));
    writer.metadata(
        "tokenizer.ggml.token_type_count",
        U32(config.type_vocab_size),
    );
    for (key, token) in [
        ("tokenizer.ggml.bos_token_id", "[CLS]"),
        ("tokenizer.ggml.cls_token_id", "[CLS]"),
        ("tokenizer.ggml.seperator_token_id", "[SEP]"),
        ("tokenizer.ggml.unknown_token_id", "[UNK]"),
        ("tokenizer.ggml.padding_token_id", "[PAD]"),
        ("tokenizer.ggml.mask_token_id", "[MASK]"),
    ] {
        if let Some(id) = id_of(token) {
            writer.metadata(key, U32(id as u32));
        }
    }
}

/// Maps the Hugging Face tensor names to llama.cpp's and checks every shape against the config,
/// so a checkpoint of another model is rejected here rather than inside llama.cpp.
fn add_tensors(
    writer: &mut GgufWriter,
    weights: &SafeTensors,
    config: &BertConfig,
) -> std::result::Result<(), String> {
    let hidden = config.hidden_size as usize;
    let intermediate = config.intermediate_size as usize;
    let load = |name: &str, shape: &[usize]| bert_tensor(weights, name, shape);
    // PyTorch shapes are [rows, columns]; ggml lists the fastest dimension first.
    let ggml_dims = |shape: &[usize]| shape.iter().rev().map(|&d| d as u64).collect::<Vec<_>>();
    let mut put = |gguf_name: String, shape: &[usize], values: Vec<f32>| {
        writer.tensor(Tensor {
            name: gguf_name,
            dims: ggml_dims(shape),
            values,
        });
    };

    let vocab = config.vocab_size as usize;
    let positions = config.max_position_embeddings as usize;
    let types = config.type_vocab_size as usize;
    for (hf, gguf, shape) in [
        (
            "embeddings.word_embeddings.weight",
            "token_embd.weight",
            vec![vocab, hidden],
        ),
        (
            "embeddings.position_embeddings.weight",
            "position_embd.weight",
            vec![positions, hidden],
        ),
        (
            "embeddings.token_type_embeddings.weight",
            "token_types.weight",
            vec![types, hidden],
        ),
        (
            "embeddings.LayerNorm.weight",
            "token_embd_norm.weight",
            vec![hidden],
        ),
        (
            "embeddings.LayerNorm.bias",
            "token_embd_norm.bias",
            vec![hidden],
        ),
    ] {
        put(gguf.to_string(), &shape, load(hf, &shape)?);
    }

    for layer in 0..config.num_hidden_layers {
        let hf = |suffix: &str| format!("encoder.layer.{layer}.{suffix}");
        let gguf = |suffix: &str| format!("blk.{layer}.{suffix}");

        let mut qkv_weight = Vec::with_capacity(3 * hidden * hidden);
        let mut qkv_bias = Vec::with_capacity(3 * hidden);
        for part in ["query", "key", "value"] {
            qkv_weight.extend(load(
                &hf(&format!("attention.self.{part}.weight")),
                &[hidden, hidden],
            )?);
            qkv_bias.extend(load(
                &hf(&format!("attention.self.{part}.bias")),
                &[hidden],
            )?);
        }
        put(gguf("attn_qkv.weight"), &[3 * hidden, hidden], qkv_weight);
        put(gguf("attn_qkv.bias"), &[3 * hidden], qkv_bias);

        for (hf_suffix, gguf_suffix, shape) in [
            (
                "attention.output.dense.weight",
                "attn_output.weight",
                vec![hidden, hidden],
            ),
            (
                "attention.output.dense.bias",
                "attn_output.bias",
                vec![hidden],
            ),
            (
                "attention.output.LayerNorm.weight",
                "attn_output_norm.weight",
                vec![hidden],
            ),
            (
                "attention.output.LayerNorm.bias",
                "attn_output_norm.bias",
                vec![hidden],
            ),
            (
                "intermediate.dense.weight",
                "ffn_up.weight",
                vec![intermediate, hidden],
            ),
            ("intermediate.dense.bias", "ffn_up.bias", vec![intermediate]),
            (
                "output.dense.weight",
                "ffn_down.weight",
                vec![hidden, intermediate],
            ),
            ("output.dense.bias", "ffn_down.bias", vec![hidden]),
            (
                "output.LayerNorm.weight",
                "layer_output_norm.weight",
                vec![hidden],
            ),
            (
                "output.LayerNorm.bias",
                "layer_output_norm.bias",
                vec![hidden],
            ),
        ] {
            put(gguf(gguf_suffix), &shape, load(&hf(hf_suffix), &shape)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantom_space_marks_word_starts() {
        assert_eq!(phantom_space("[CLS]"), "[CLS]");
        assert_eq!(phantom_space("##ing"), "ing");
        assert_eq!(phantom_space("walk"), "\u{2581}walk");
        assert_eq!(phantom_space("#"), "\u{2581}#");
    }

    #[test]
    fn config_of_another_model_is_rejected() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type":"llama","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
                "num_attention_heads":1,"max_position_embeddings":8,"layer_norm_eps":1e-5,"vocab_size":4}"#,
        )
        .expect("write");
        let error = convert_bert_safetensors_to_gguf(dir.path(), &dir.path().join("o.gguf"), "x")
            .expect_err("llama config");
        assert!(matches!(error, ModelError::WrongModel { .. }), "{error}");
    }
}
