//! A deterministic embedder for tests of logic that needs one (grounding, denied topics): a
//! bag of words hashed into buckets, so texts that share words are similar. Never a stand-in
//! for the real model where a user would run it.

use basalt_model::{Embedder, EmbedderInfo, ModelError};

/// Words of four letters or more, lower-cased, a plural `s` dropped, hashed into 128 buckets;
/// unit length.
#[derive(Debug)]
pub struct BagOfWords(EmbedderInfo);

impl Default for BagOfWords {
    fn default() -> Self {
        BagOfWords(EmbedderInfo {
            model_name: "bag-of-words".into(),
            dimension: 128,
            max_tokens: 256,
        })
    }
}

impl Embedder for BagOfWords {
    fn info(&self) -> &EmbedderInfo {
        &self.0
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        let dimension = self.0.dimension;
        Ok(texts
            .iter()
            .map(|text| {
                let mut vector = vec![0.0f32; dimension];
                for word in text.to_lowercase().split(|c: char| !c.is_alphanumeric()) {
                    if word.chars().count() > 3 {
                        let word = word.strip_suffix('s').unwrap_or(word);
                        let bucket = word.bytes().fold(5usize, |hash, byte| {
                            hash.wrapping_mul(33) + usize::from(byte)
                        });
                        vector[bucket % dimension] += 1.0;
                    }
                }
                let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
                vector.iter().map(|v| v / norm).collect()
            })
            .collect())
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, ModelError> {
        let mut vectors = self.embed_batch(&[text.to_owned()])?;
        Ok(vectors.remove(0))
    }

    fn count_tokens(&self, text: &str) -> Result<usize, ModelError> {
        Ok(text.split_whitespace().count())
    }
}
