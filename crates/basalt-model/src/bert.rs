//! The native BERT encoder: runs a sentence-transformers BERT checkpoint (all-MiniLM-L6-v2 by
//! default) straight from `model.safetensors`, in f32, with the matrix products in `gemm`.
//!
//! Why not llama.cpp for this model: llama.cpp encodes a batch of sequences as one attention
//! over all their tokens with a mask, so its cost grows with the square of the batch, and its
//! f32 kernels reach about a third of this CPU's peak. Here every sequence attends only to
//! itself, the big products run on `gemm`'s packed kernels, and a single query runs on both
//! cores. The numbers behind the choice are in ARCHITECTURE.md.

use std::path::Path;

use rayon::prelude::*;

use crate::convert::{BertConfig, bert_tensor, read_bert_config};
use crate::error::{ModelError, Result};
use crate::matmul::{MatMut, MatRef, PackedWeights, Threads, matmul, matmul_few_rows};
use crate::safetensors::SafeTensors;
use crate::simd::vectorized;

/// States (`tokens × hidden`) of sequences laid end to end, and each one's `(first row, length)`.
pub(crate) type Embedded = (Vec<f32>, Vec<(usize, usize)>);

/// A loaded BERT encoder. Read-only after loading, so workers share it behind an `Arc`.
#[derive(Debug)]
pub(crate) struct BertEncoder {
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) layer_norm_eps: f32,
    max_positions: usize,
    vocab: usize,
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    /// Row 0 of the token-type table: sentence-transformers encodes single texts as type 0.
    token_type_embedding: Vec<f32>,
    embedding_norm: Norm,
    pub(crate) layers: Vec<Layer>,
}

#[derive(Debug)]
pub(crate) struct Norm {
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

/// `y = x W + b` with `W` stored input-major (`inputs × outputs`, the transpose of PyTorch's),
/// and once more packed for products with a few rows (single queries).
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) weight: Vec<f32>,
    packed: PackedWeights,
    pub(crate) bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

#[derive(Debug)]
pub(crate) struct Layer {
    /// Query, key and value fused: outputs `[0, h)` are queries, `[h, 2h)` keys, `[2h, 3h)` values.
    pub(crate) qkv: Linear,
    pub(crate) attention_output: Linear,
    pub(crate) attention_norm: Norm,
    pub(crate) intermediate: Linear,
    pub(crate) output: Linear,
    pub(crate) output_norm: Norm,
}

/// Scratch buffers reused across layers of one forward pass.
#[derive(Debug, Default)]
struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    intermediate: Vec<f32>,
}

impl BertEncoder {
    /// Loads `config.json` and `model.safetensors` from `model_dir`.
    pub(crate) fn load(model_dir: &Path) -> Result<Self> {
        let config = read_bert_config(model_dir)?;
        let weights_path = model_dir.join("model.safetensors");
        let weights = SafeTensors::read(&weights_path)?;
        Self::from_weights(&config, &weights).map_err(|reason| ModelError::WrongModel {
            path: weights_path,
            expected: "BERT (sentence-transformers) embedding".to_string(),
            reason,
        })
    }

    fn from_weights(
        config: &BertConfig,
        weights: &SafeTensors,
    ) -> std::result::Result<Self, String> {
        let hidden = config.hidden_size as usize;
        let intermediate = config.intermediate_size as usize;
        let vocab = config.vocab_size as usize;
        let max_positions = config.max_position_embeddings as usize;
        let types = config.type_vocab_size as usize;
        let load = |name: &str, shape: &[usize]| bert_tensor(weights, name, shape);
        let norm = |prefix: &str| -> std::result::Result<Norm, String> {
            Ok(Norm {
                weight: load(&format!("{prefix}.weight"), &[hidden])?,
                bias: load(&format!("{prefix}.bias"), &[hidden])?,
            })
        };
        let linear = |prefix: &str, inputs: usize, outputs: usize| {
            Ok::<_, String>(Linear::from_pytorch(
                &load(&format!("{prefix}.weight"), &[outputs, inputs])?,
                load(&format!("{prefix}.bias"), &[outputs])?,
                inputs,
                outputs,
            ))
        };

        let mut layers = Vec::new();
        for index in 0..config.num_hidden_layers {
            let prefix = format!("encoder.layer.{index}");
            let mut qkv_weight = Vec::with_capacity(3 * hidden * hidden);
            let mut qkv_bias = Vec::with_capacity(3 * hidden);
            for part in ["query", "key", "value"] {
                let part_prefix = format!("{prefix}.attention.self.{part}");
                qkv_weight.extend(load(&format!("{part_prefix}.weight"), &[hidden, hidden])?);
                qkv_bias.extend(load(&format!("{part_prefix}.bias"), &[hidden])?);
            }
            layers.push(Layer {
                qkv: Linear::from_pytorch(&qkv_weight, qkv_bias, hidden, 3 * hidden),
                attention_output: linear(
                    &format!("{prefix}.attention.output.dense"),
                    hidden,
                    hidden,
                )?,
                attention_norm: norm(&format!("{prefix}.attention.output.LayerNorm"))?,
                intermediate: linear(
                    &format!("{prefix}.intermediate.dense"),
                    hidden,
                    intermediate,
                )?,
                output: linear(&format!("{prefix}.output.dense"), intermediate, hidden)?,
                output_norm: norm(&format!("{prefix}.output.LayerNorm"))?,
            });
        }
        let token_types = load("embeddings.token_type_embeddings.weight", &[types, hidden])?;
        Ok(BertEncoder {
            hidden,
            heads: config.num_attention_heads as usize,
            layer_norm_eps: config.layer_norm_eps,
            max_positions,
            vocab,
            word_embeddings: load("embeddings.word_embeddings.weight", &[vocab, hidden])?,
            position_embeddings: load(
                "embeddings.position_embeddings.weight",
                &[max_positions, hidden],
            )?,
            token_type_embedding: token_types[..hidden].to_vec(),
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
        })
    }

    pub(crate) fn dimension(&self) -> usize {
        self.hidden
    }

    /// Mean-pooled (not yet normalised) embeddings of token sequences, each `[CLS] … [SEP]`.
    /// Runs on the current rayon pool; `threads` is how many of its threads a product may use.
    pub(crate) fn encode(&self, sequences: &[Vec<u32>], threads: usize) -> Result<Vec<Vec<f32>>> {
        let hidden = self.hidden;
        let (mut states, spans) = self.embedding_states(sequences)?;
        let product_threads = if threads > 1 {
            Threads::Pool(threads)
        } else {
            Threads::One
        };
        let mut scratch = Scratch::default();
        for layer in &self.layers {
            self.layer_forward(layer, &mut states, &spans, product_threads, &mut scratch);
        }
        Ok(mean_pool(&states, &spans, hidden))
    }

    /// The embedding layer's output for `sequences` laid end to end (`tokens × hidden`), and
    /// each sequence's `(first row, length)`. Refuses empty or over-long sequences and unknown
    /// token ids.
    pub(crate) fn embedding_states(&self, sequences: &[Vec<u32>]) -> Result<Embedded> {
        let hidden = self.hidden;
        let mut spans = Vec::with_capacity(sequences.len());
        let mut total = 0;
        for tokens in sequences {
            if tokens.is_empty() || tokens.len() > self.max_positions {
                return Err(ModelError::InvalidRequest(format!(
                    "a sequence of {} tokens is outside the encoder's 1..={} positions",
                    tokens.len(),
                    self.max_positions
                )));
            }
            if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(ModelError::InvalidRequest(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    self.vocab
                )));
            }
            spans.push((total, tokens.len()));
            total += tokens.len();
        }

        let mut states = vec![0.0f32; total * hidden];
        vectorized(
            #[inline(always)]
            || {
                for (tokens, &(start, _)) in sequences.iter().zip(&spans) {
                    for (position, &id) in tokens.iter().enumerate() {
                        let row = &mut states[(start + position) * hidden..][..hidden];
                        let word = &self.word_embeddings[id as usize * hidden..][..hidden];
                        let place = &self.position_embeddings[position * hidden..][..hidden];
                        for (((value, w), p), t) in row
                            .iter_mut()
                            .zip(word)
                            .zip(place)
                            .zip(&self.token_type_embedding)
                        {
                            *value = w + p + t;
                        }
                    }
                }
            },
        );
        layer_norm(&mut states, &self.embedding_norm, self.layer_norm_eps);
        Ok((states, spans))
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        states: &mut [f32],
        spans: &[(usize, usize)],
        threads: Threads,
        scratch: &mut Scratch,
    ) {
        let rows = states.len() / self.hidden;
        layer.qkv.forward(states, rows, &mut scratch.qkv, threads);
        self.attention(&scratch.qkv, spans, &mut scratch.context);
        layer
            .attention_output
            .forward(&scratch.context, rows, &mut scratch.projected, threads);
        add_in_place(states, &scratch.projected);
        layer_norm(states, &layer.attention_norm, self.layer_norm_eps);

        layer
            .intermediate
            .forward(states, rows, &mut scratch.intermediate, threads);
        scratch
            .intermediate
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .with_min_len(MIN_CHUNKS_PER_TASK)
            .for_each(|chunk| {
                vectorized(
                    #[inline(always)]
                    || gelu_in_place(chunk),
                );
            });
        layer
            .output
            .forward(&scratch.intermediate, rows, &mut scratch.projected, threads);
        add_in_place(states, &scratch.projected);
        layer_norm(states, &layer.output_norm, self.layer_norm_eps);
    }

    /// Scaled dot-product attention of every sequence with itself, one task per (sequence, head).
    fn attention(&self, qkv: &[f32], spans: &[(usize, usize)], context: &mut Vec<f32>) {
        let hidden = self.hidden;
        let head_size = hidden / self.heads;
        let scale = 1.0 / (head_size as f32).sqrt();
        let stride = 3 * hidden;
        let tasks: Vec<(usize, usize, usize)> = spans
            .iter()
            .flat_map(|&(start, length)| (0..self.heads).map(move |head| (start, length, head)))
            .collect();
        let head_attention = |&(start, length, head): &(usize, usize, usize)| {
            let base = start * stride + head * head_size;
            if length <= FEW_ROWS {
                return vectorized(
                    #[inline(always)]
                    || short_attention(&qkv[base..], length, head_size, hidden, scale),
                );
            }
            head_attention_probabilities(&qkv[base..], length, head_size, hidden, scale).1
        };
        // A query's attention is microseconds of work: waking the pool would cost more.
        let outputs: Vec<Vec<f32>> = if qkv.len() / stride <= FEW_ROWS {
            tasks.iter().map(head_attention).collect()
        } else {
            tasks.par_iter().map(head_attention).collect()
        };

        context.clear();
        context.resize(qkv.len() / 3, 0.0);
        for (&(start, length, head), output) in tasks.iter().zip(&outputs) {
            for (row, values) in output.chunks_exact(head_size).enumerate().take(length) {
                let at = (start + row) * hidden + head * head_size;
                context[at..at + head_size].copy_from_slice(values);
            }
        }
    }
}

/// The mean of each span's rows of `states` (`rows × hidden`).
pub(crate) fn mean_pool(states: &[f32], spans: &[(usize, usize)], hidden: usize) -> Vec<Vec<f32>> {
    spans
        .iter()
        .map(|&(start, length)| {
            let mut pooled = vec![0.0f32; hidden];
            for row in states[start * hidden..(start + length) * hidden].chunks_exact(hidden) {
                for (sum, value) in pooled.iter_mut().zip(row) {
                    *sum += value;
                }
            }
            let count = length as f32;
            pooled.iter_mut().for_each(|value| *value /= count);
            pooled
        })
        .collect()
}

impl Linear {
    /// A layer from an input-major (`inputs × outputs`) weight, as this module stores it.
    pub(crate) fn from_input_major(
        weight: Vec<f32>,
        bias: Vec<f32>,
        inputs: usize,
        outputs: usize,
    ) -> Self {
        Linear {
            packed: PackedWeights::pack(&weight, inputs, outputs),
            weight,
            bias,
            inputs,
            outputs,
        }
    }

    /// Takes PyTorch's `outputs × inputs` weight and stores its transpose.
    fn from_pytorch(weight: &[f32], bias: Vec<f32>, inputs: usize, outputs: usize) -> Self {
        let mut transposed = vec![0.0f32; inputs * outputs];
        for output in 0..outputs {
            for input in 0..inputs {
                transposed[input * outputs + output] = weight[output * inputs + input];
            }
        }
        Self::from_input_major(transposed, bias, inputs, outputs)
    }

    fn forward(&self, input: &[f32], rows: usize, output: &mut Vec<f32>, threads: Threads) {
        if rows <= FEW_ROWS {
            output.clear();
            output.resize(rows * self.outputs, 0.0);
            let input = &input[..rows * self.inputs];
            matmul_few_rows(output, input, &self.packed, &self.bias, rows, threads);
            return;
        }
        output.clear();
        output.reserve(rows * self.outputs);
        for _ in 0..rows {
            output.extend_from_slice(&self.bias);
        }
        matmul(
            &mut MatMut::rows(output, rows, self.outputs, self.outputs),
            MatRef::rows(input, rows, self.inputs, self.inputs),
            MatRef::rows(&self.weight, self.inputs, self.outputs, self.outputs),
            1.0,
            true,
            threads,
        );
    }
}

/// One head's attention with `gemm`: `qkv` starts at the head's first query; keys and values
/// are `hidden` and `2 * hidden` further, rows `3 * hidden` apart. Returns the attention
/// probabilities (`length × length`) and the output (`length × head_size`).
pub(crate) fn head_attention_probabilities(
    qkv: &[f32],
    length: usize,
    head_size: usize,
    hidden: usize,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let stride = 3 * hidden;
    let queries = MatRef::rows(qkv, length, head_size, stride);
    let keys = MatRef::rows(&qkv[hidden..], length, head_size, stride);
    let values = MatRef::rows(&qkv[2 * hidden..], length, head_size, stride);
    let mut scores = vec![0.0f32; length * length];
    matmul(
        &mut MatMut::rows(&mut scores, length, length, length),
        queries,
        keys.transposed(),
        scale,
        false,
        Threads::One,
    );
    vectorized(
        #[inline(always)]
        || scores.chunks_exact_mut(length).for_each(softmax_in_place),
    );
    let mut output = vec![0.0f32; length * head_size];
    matmul(
        &mut MatMut::rows(&mut output, length, head_size, head_size),
        MatRef::rows(&scores, length, length, length),
        values,
        1.0,
        false,
        Threads::One,
    );
    (scores, output)
}

/// Up to this many rows (a query, a short passage) a product runs on the packed weights.
const FEW_ROWS: usize = 48;

/// One head's attention for a short sequence with plain loops: for a query of a dozen tokens,
/// two `gemm` calls per head cost more in setup than the arithmetic. `qkv` starts at the
/// head's first query; keys and values are `hidden` and `2 * hidden` further, rows `3 * hidden`
/// apart. Returns `length × head_size` outputs. The keys are transposed first, so that a
/// query's scores are `head_size` vector updates across all keys, which vectorize, rather than
/// one short dot product (and its horizontal sum) per key.
#[inline(always)]
fn short_attention(
    qkv: &[f32],
    length: usize,
    head_size: usize,
    hidden: usize,
    scale: f32,
) -> Vec<f32> {
    let stride = 3 * hidden;
    let row = |offset: usize, index: usize| &qkv[offset + index * stride..][..head_size];
    let mut keys_by_dimension = vec![0.0f32; head_size * length];
    for key_index in 0..length {
        for (dimension, &value) in row(hidden, key_index).iter().enumerate() {
            keys_by_dimension[dimension * length + key_index] = value;
        }
    }
    let mut scores = vec![0.0f32; length];
    let mut output = vec![0.0f32; length * head_size];
    for (query_index, out) in output.chunks_exact_mut(head_size).enumerate() {
        scores.fill(0.0);
        for (&query, keys) in row(0, query_index)
            .iter()
            .zip(keys_by_dimension.chunks_exact(length))
        {
            let query = query * scale;
            for (score, &key) in scores.iter_mut().zip(keys) {
                *score += query * key;
            }
        }
        softmax_in_place(&mut scores);
        for (value_index, &weight) in scores.iter().enumerate() {
            for (out, value) in out.iter_mut().zip(row(2 * hidden, value_index)) {
                *out += weight * value;
            }
        }
    }
    output
}

/// Elements per chunk of the element-wise steps.
const ELEMENTWISE_CHUNK: usize = 16 * 1024;
/// Chunks a parallel task takes at least: below that a step runs on the calling thread, since
/// waking a sleeping pool thread costs more than a query's element-wise work.
const MIN_CHUNKS_PER_TASK: usize = 4;

fn add_in_place(target: &mut [f32], addend: &[f32]) {
    vectorized(
        #[inline(always)]
        || {
            for (value, add) in target.iter_mut().zip(addend) {
                *value += add;
            }
        },
    );
}

fn layer_norm(states: &mut [f32], norm: &Norm, eps: f32) {
    let width = norm.weight.len();
    let rows_per_task = (ELEMENTWISE_CHUNK / width).max(1);
    states
        .par_chunks_mut(rows_per_task * width)
        .with_min_len(MIN_CHUNKS_PER_TASK)
        .for_each(|rows| {
            vectorized(
                #[inline(always)]
                || {
                    for row in rows.chunks_exact_mut(width) {
                        let mean = lane_sum(row, |value| value) / width as f32;
                        let variance =
                            lane_sum(row, |value| (value - mean) * (value - mean)) / width as f32;
                        let inverse = 1.0 / (variance + eps).sqrt();
                        for ((value, weight), bias) in
                            row.iter_mut().zip(&norm.weight).zip(&norm.bias)
                        {
                            *value = (*value - mean) * inverse * weight + bias;
                        }
                    }
                },
            );
        });
}

/// Lanes of the vectorized reductions: the compiler does not reorder a plain float sum, so
/// the sums below keep eight partial sums by hand (one AVX vector).
const LANES: usize = 8;

/// `Σ f(value)` over eight lanes.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (chunks, tail) = values.as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for chunk in chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += f(value);
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().map(|&value| f(value)).sum::<f32>()
}

#[inline(always)]
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Exponentials first and the sum apart: a running sum in the same loop would keep the
    // compiler from vectorizing `exp`.
    for value in row.iter_mut() {
        *value = exp(*value - max);
    }
    let inverse = 1.0 / lane_sum(row, |value| value);
    row.iter_mut().for_each(|value| *value *= inverse);
}

/// BERT's exact GELU, `x·Φ(x)`, not the tanh approximation.
#[inline(always)]
fn gelu_in_place(values: &mut [f32]) {
    for value in values {
        let x = *value;
        *value = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, 5e-7 after f32 rounding), written
/// without branches so the compiler vectorizes the loops that call it.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let magnitude = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * magnitude);
    let polynomial = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    (1.0 - polynomial * exp(-magnitude * magnitude)).copysign(x)
}

/// `e^x` for `x` in about [-87, 88] (clamped outside), relative error ~2e-7: Cephes' range
/// reduction and polynomial, branch-free so that it vectorizes (`f32::exp` is a libm call).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let r2 = r * r;
    let polynomial =
        (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
            + 1.666_666_5e-1)
            * r
            + 0.5)
            * r2
            + r
            + 1.0;
    // n is in [-126, 127], so n + 127 is a valid biased exponent. It is read from the low bits
    // of 2^23 + n + 127 rather than by an `as` cast, whose saturating semantics keep the
    // compiler from vectorizing the callers' loops.
    let exponent = (n + (127.0 + 8_388_608.0)).to_bits() & 0xff;
    polynomial * f32::from_bits(exponent << 23)
}

#[cfg(test)]
impl BertEncoder {
    /// A small encoder with random weights (hidden 8, 2 heads, 2 layers, 12 tokens), for
    /// tests of the arithmetic.
    pub(crate) fn tiny_random(seed: u64) -> BertEncoder {
        let (hidden, intermediate, vocab, positions) = (8, 16, 12, 16);
        let mut random = crate::finetune::SplitMix(seed);
        let mut values = |count: usize, scale: f32, centre: f32| -> Vec<f32> {
            (0..count)
                .map(|_| centre + (random.unit() * 2.0 - 1.0) * scale)
                .collect()
        };
        let norm = |values: &mut dyn FnMut(usize, f32, f32) -> Vec<f32>| Norm {
            weight: values(hidden, 0.1, 1.0),
            bias: values(hidden, 0.1, 0.0),
        };
        let embedding_norm = norm(&mut values);
        let mut layers = Vec::new();
        for _ in 0..2 {
            layers.push(Layer {
                qkv: Linear::from_input_major(
                    values(hidden * 3 * hidden, 0.5, 0.0),
                    values(3 * hidden, 0.1, 0.0),
                    hidden,
                    3 * hidden,
                ),
                attention_output: Linear::from_input_major(
                    values(hidden * hidden, 0.5, 0.0),
                    values(hidden, 0.1, 0.0),
                    hidden,
                    hidden,
                ),
                attention_norm: norm(&mut values),
                intermediate: Linear::from_input_major(
                    values(hidden * intermediate, 0.5, 0.0),
                    values(intermediate, 0.1, 0.0),
                    hidden,
                    intermediate,
                ),
                output: Linear::from_input_major(
                    values(intermediate * hidden, 0.3, 0.0),
                    values(hidden, 0.1, 0.0),
                    intermediate,
                    hidden,
                ),
                output_norm: norm(&mut values),
            });
        }
        BertEncoder {
            hidden,
            heads: 2,
            layer_norm_eps: 1e-12,
            max_positions: positions,
            vocab,
            word_embeddings: values(vocab * hidden, 1.0, 0.0),
            position_embeddings: values(positions * hidden, 0.5, 0.0),
            token_type_embedding: values(hidden, 0.1, 0.0),
            embedding_norm,
            layers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_standard_library() {
        for step in -2000..=2000 {
            let x = step as f32 * 0.04;
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!(
                ((got - want) / want).abs() < 1e-6,
                "exp({x}) = {got}, want {want}"
            );
        }
        // erf against a high-precision series at a few points.
        for (x, want) in [
            (0.0f32, 0.0f64),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-1.5, -0.966_105_146_475_310_7),
            (2.5, 0.999_593_047_982_555),
            (6.0, 1.0),
        ] {
            let got = f64::from(erf(x));
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn lane_reductions_match_plain_sums() {
        for length in [0, 1, 7, 8, 9, 32, 45] {
            let a: Vec<f32> = (0..length).map(|i| (i as f32 * 0.3).sin()).collect();
            let plain_squares: f32 = a.iter().map(|x| x * x).sum();
            assert!((lane_sum(&a, |x| x * x) - plain_squares).abs() < 1e-5);
        }
    }

    #[test]
    fn short_attention_matches_the_textbook_formula() {
        let (length, head_size, hidden) = (7, 4, 8);
        let stride = 3 * hidden;
        let qkv: Vec<f32> = (0..length * stride)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let scale = 0.5;
        // Head 1: its queries start at column `head_size`.
        let got = short_attention(&qkv[head_size..], length, head_size, hidden, scale);
        let at = |offset: usize, row: usize, d: usize| qkv[row * stride + offset + head_size + d];
        for query in 0..length {
            let scores: Vec<f64> = (0..length)
                .map(|key| {
                    (0..head_size)
                        .map(|d| f64::from(at(0, query, d) * at(hidden, key, d)))
                        .sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            let max = scores.iter().copied().fold(f64::MIN, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for d in 0..head_size {
                let want: f64 = (0..length)
                    .map(|key| weights[key] / total * f64::from(at(2 * hidden, key, d)))
                    .sum();
                let value = f64::from(got[query * head_size + d]);
                assert!((value - want).abs() < 1e-5, "query {query}, dim {d}");
            }
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut row = vec![1.0, 3.0, -2.0, 3.0, 0.5];
        softmax_in_place(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[1] > row[0] && row[0] > row[4] && row[4] > row[2]);
        assert!((row[1] - row[3]).abs() < 1e-7);
    }

    #[test]
    fn layer_norm_centres_and_scales_each_row() {
        let norm = Norm {
            weight: vec![1.0; 4],
            bias: vec![0.5; 4],
        };
        let mut states = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        layer_norm(&mut states, &norm, 1e-12);
        let first = &states[..4];
        assert!((first.iter().sum::<f32>() / 4.0 - 0.5).abs() < 1e-6);
        assert!((first[3] - first[0] - 2.683_281_6).abs() < 1e-5);
        assert!(states[4..].iter().all(|&value| (value - 0.5).abs() < 1e-6));
    }
}
