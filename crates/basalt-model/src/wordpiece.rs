//! WordPiece tokenization for BERT-family embedders, done by the Hugging Face `tokenizers` crate
//! from the model's own `tokenizer.json` so ids match sentence-transformers exactly.
//!
//! Truncation follows sentence-transformers, not the file: the shipped `tokenizer.json` says 128,
//! but all-MiniLM-L6-v2 is used with `max_seq_length` 256, so a long text keeps its first 255
//! pieces (including `[CLS]`) and ends with `[SEP]`.

use std::path::Path;

use crate::error::{ModelError, Result};

#[derive(Debug)]
pub(crate) struct WordPieceTokenizer {
    tokenizer: tokenizers::Tokenizer,
    max_tokens: usize,
    separator_id: u32,
}

impl WordPieceTokenizer {
    pub(crate) fn load(path: &Path, max_tokens: usize) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(path).map_err(|error| ModelError::CorruptFile {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|error| ModelError::Load {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?;
        let separator_id =
            tokenizer
                .token_to_id("[SEP]")
                .ok_or_else(|| ModelError::WrongModel {
                    path: path.to_path_buf(),
                    expected: "BERT WordPiece tokenizer".to_string(),
                    reason: "it has no [SEP] token".to_string(),
                })?;
        if max_tokens < 2 {
            return Err(ModelError::InvalidRequest(
                "the embedder's token limit must be at least 2".to_string(),
            ));
        }
        Ok(WordPieceTokenizer {
            tokenizer,
            max_tokens,
            separator_id,
        })
    }

    /// Token ids with `[CLS]` and `[SEP]`, truncated to the token limit.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|error| ModelError::Inference(format!("tokenization failed: {error}")))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > self.max_tokens {
            ids.truncate(self.max_tokens - 1);
            ids.push(self.separator_id);
        }
        Ok(ids)
    }

    /// Token ids with `[CLS]` and `[SEP]`; a text longer than `limit` pieces keeps its first and
    /// last `limit / 2` (a request wrapped in a long preamble often sits at the end).
    pub(crate) fn encode_ends(&self, text: &str, limit: usize) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|error| ModelError::Inference(format!("tokenization failed: {error}")))?;
        let ids = encoding.get_ids();
        let limit = limit.max(2);
        if ids.len() <= limit {
            return Ok(ids.to_vec());
        }
        let head = limit / 2;
        let mut kept = ids[..head].to_vec();
        kept.extend_from_slice(&ids[ids.len() - (limit - head)..]);
        Ok(kept)
    }

    /// Number of word pieces `text` has before truncation, `[CLS]` and `[SEP]` included.
    pub(crate) fn count(&self, text: &str) -> Result<usize> {
        self.tokenizer
            .encode(text, true)
            .map(|encoding| encoding.len())
            .map_err(|error| ModelError::Inference(format!("tokenization failed: {error}")))
    }
}
