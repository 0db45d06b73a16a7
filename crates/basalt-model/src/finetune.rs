//! Fine-tuning the native BERT encoder as a binary text classifier: every transformer layer and
//! a logistic head on the mean-pooled output are trained with AdamW on binary cross-entropy;
//! the embedding tables stay frozen (their rows for rare words would barely move, and leaving
//! them out keeps the gradient dense).
//!
//! The forward pass here keeps what the backward pass needs (each layer's input, attention
//! probabilities, pre-activation values and normalisation statistics); the backward pass is the
//! chain rule written out per operation, with the matrix products on `gemm`. A finite-difference
//! test checks every gradient on a small random encoder.

use std::path::Path;

use rayon::prelude::*;

use crate::bert::{
    BertEncoder, Layer, Linear, Norm, erf, exp, head_attention_probabilities, mean_pool,
};
use crate::error::{ModelError, Result};
use crate::matmul::{MatMut, MatRef, Threads, matmul};
use crate::wordpiece::WordPieceTokenizer;

// The trainable tensors of one layer, in this order; weights input-major like [`Linear`]'s.
const QKV_W: usize = 0;
const QKV_B: usize = 1;
const ATTN_OUT_W: usize = 2;
const ATTN_OUT_B: usize = 3;
const ATTN_NORM_G: usize = 4;
const ATTN_NORM_B: usize = 5;
const UP_W: usize = 6;
const UP_B: usize = 7;
const DOWN_W: usize = 8;
const DOWN_B: usize = 9;
const OUT_NORM_G: usize = 10;
const OUT_NORM_B: usize = 11;
const PER_LAYER: usize = 12;

/// How a fine-tuning run goes.
#[derive(Debug, Clone)]
pub struct FineTuneOptions {
    /// Passes over the training examples.
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Peak AdamW learning rate (linear warm-up over the first 10% of steps, then linear decay).
    pub learning_rate: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Seed of the head's initialisation and of the shuffling.
    pub seed: u64,
}

impl Default for FineTuneOptions {
    fn default() -> Self {
        FineTuneOptions {
            epochs: 3,
            batch_size: 16,
            learning_rate: 5e-5,
            weight_decay: 0.01,
            seed: 0,
        }
    }
}

impl FineTuneOptions {
    /// Optimizer steps of a run over `examples` training examples.
    pub fn steps(&self, examples: usize) -> usize {
        self.epochs * examples.div_ceil(self.batch_size.max(1))
    }
}

/// Trainable parameters: `PER_LAYER` tensors per layer, then the head's weight and bias.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) tensors: Vec<Vec<f32>>,
}

impl Params {
    /// The encoder's layers as trainable tensors, and a head initialised like PyTorch's
    /// `nn.Linear` (uniform in ±1/√hidden) from `seed`.
    pub(crate) fn from_encoder(encoder: &BertEncoder, seed: u64) -> Params {
        let mut tensors = Vec::with_capacity(encoder.layers.len() * PER_LAYER + 2);
        for layer in &encoder.layers {
            tensors.extend(layer_tensors(layer).map(Clone::clone));
        }
        let bound = 1.0 / (encoder.hidden as f32).sqrt();
        let mut random = SplitMix(seed ^ 0x5eed_1e55);
        tensors.push(
            (0..encoder.hidden)
                .map(|_| (random.unit() * 2.0 - 1.0) * bound)
                .collect(),
        );
        tensors.push(vec![(random.unit() * 2.0 - 1.0) * bound]);
        Params { tensors }
    }

    /// Tensors `index` and `index + 1` (a weight or gain and its bias), both writable.
    fn pair_mut(&mut self, index: usize) -> (&mut [f32], &mut [f32]) {
        let (first, rest) = self.tensors[index..].split_at_mut(1);
        (&mut first[0], &mut rest[0])
    }

    fn zeros_like(&self) -> Params {
        Params {
            tensors: self.tensors.iter().map(|t| vec![0.0; t.len()]).collect(),
        }
    }

    fn layers(&self) -> usize {
        (self.tensors.len() - 2) / PER_LAYER
    }

    fn layer(&self, index: usize, tensor: usize) -> &[f32] {
        &self.tensors[index * PER_LAYER + tensor]
    }

    pub(crate) fn head(&self) -> (&[f32], f32) {
        let n = self.tensors.len();
        (&self.tensors[n - 2], self.tensors[n - 1][0])
    }

    /// Writes the trained layers back into `encoder`.
    pub(crate) fn install(&self, encoder: &mut BertEncoder) {
        let hidden = encoder.hidden;
        for (index, layer) in encoder.layers.iter_mut().enumerate() {
            let t = |tensor: usize| self.layer(index, tensor).to_vec();
            let intermediate = layer.intermediate.bias.len();
            *layer = Layer {
                qkv: Linear::from_input_major(t(QKV_W), t(QKV_B), hidden, 3 * hidden),
                attention_output: Linear::from_input_major(
                    t(ATTN_OUT_W),
                    t(ATTN_OUT_B),
                    hidden,
                    hidden,
                ),
                attention_norm: Norm {
                    weight: t(ATTN_NORM_G),
                    bias: t(ATTN_NORM_B),
                },
                intermediate: Linear::from_input_major(t(UP_W), t(UP_B), hidden, intermediate),
                output: Linear::from_input_major(t(DOWN_W), t(DOWN_B), intermediate, hidden),
                output_norm: Norm {
                    weight: t(OUT_NORM_G),
                    bias: t(OUT_NORM_B),
                },
            };
        }
    }
}

/// A layer's trainable tensors, in the order of the indices above.
fn layer_tensors(layer: &Layer) -> [&Vec<f32>; PER_LAYER] {
    [
        &layer.qkv.weight,
        &layer.qkv.bias,
        &layer.attention_output.weight,
        &layer.attention_output.bias,
        &layer.attention_norm.weight,
        &layer.attention_norm.bias,
        &layer.intermediate.weight,
        &layer.intermediate.bias,
        &layer.output.weight,
        &layer.output.bias,
        &layer.output_norm.weight,
        &layer.output_norm.bias,
    ]
}

/// A small deterministic generator (SplitMix64) for the head's initialisation and shuffling.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// What one layer's forward pass keeps for the backward pass.
#[derive(Debug, Default)]
struct LayerCache {
    input: Vec<f32>,
    qkv: Vec<f32>,
    /// One `length × length` matrix per (sequence, head), in task order.
    probabilities: Vec<Vec<f32>>,
    context: Vec<f32>,
    attention_normalized: Vec<f32>,
    attention_inverse_std: Vec<f32>,
    /// The attention block's output (the feed-forward block's input).
    middle: Vec<f32>,
    up: Vec<f32>,
    activated: Vec<f32>,
    output_normalized: Vec<f32>,
    output_inverse_std: Vec<f32>,
}

/// The geometry shared by the forward and backward passes.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hidden: usize,
    heads: usize,
    eps: f32,
}

impl Shape {
    fn of(encoder: &BertEncoder) -> Shape {
        Shape {
            hidden: encoder.hidden,
            heads: encoder.heads,
            eps: encoder.layer_norm_eps,
        }
    }

    fn tasks(&self, spans: &[(usize, usize)]) -> Vec<(usize, usize, usize)> {
        spans
            .iter()
            .flat_map(|&(start, length)| (0..self.heads).map(move |head| (start, length, head)))
            .collect()
    }
}

/// The big products use every thread of the pool the training runs in.
fn product_threads() -> Threads {
    match rayon::current_num_threads() {
        0 | 1 => Threads::One,
        threads => Threads::Pool(threads),
    }
}

/// `output = input · weight + bias` for `rows` rows (weight input-major).
fn linear(input: &[f32], weight: &[f32], bias: &[f32], rows: usize) -> Vec<f32> {
    let outputs = bias.len();
    let inputs = weight.len() / outputs;
    let mut output = Vec::with_capacity(rows * outputs);
    for _ in 0..rows {
        output.extend_from_slice(bias);
    }
    matmul(
        &mut MatMut::rows(&mut output, rows, outputs, outputs),
        MatRef::rows(input, rows, inputs, inputs),
        MatRef::rows(weight, inputs, outputs, outputs),
        1.0,
        true,
        product_threads(),
    );
    output
}

/// Backward of [`linear`]: adds to the weight and bias gradients and returns the input's.
fn linear_backward(
    input: &[f32],
    weight: &[f32],
    output_grad: &[f32],
    rows: usize,
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
) -> Vec<f32> {
    let outputs = bias_grad.len();
    let inputs = weight.len() / outputs;
    matmul(
        &mut MatMut::rows(weight_grad, inputs, outputs, outputs),
        MatRef::rows(input, rows, inputs, inputs).transposed(),
        MatRef::rows(output_grad, rows, outputs, outputs),
        1.0,
        true,
        product_threads(),
    );
    for row in output_grad.chunks_exact(outputs) {
        for (sum, value) in bias_grad.iter_mut().zip(row) {
            *sum += value;
        }
    }
    let mut input_grad = vec![0.0f32; rows * inputs];
    matmul(
        &mut MatMut::rows(&mut input_grad, rows, inputs, inputs),
        MatRef::rows(output_grad, rows, outputs, outputs),
        MatRef::rows(weight, inputs, outputs, outputs).transposed(),
        1.0,
        false,
        product_threads(),
    );
    input_grad
}

/// Layer normalisation of each row of `states` in place; returns the normalised values
/// (before the gain and bias) and each row's inverse standard deviation.
fn norm_forward(states: &mut [f32], gain: &[f32], bias: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let width = gain.len();
    let mut normalized = vec![0.0f32; states.len()];
    let mut inverse_std = vec![0.0f32; states.len() / width];
    for ((row, out), inverse) in states
        .chunks_exact_mut(width)
        .zip(normalized.chunks_exact_mut(width))
        .zip(inverse_std.iter_mut())
    {
        let mean = row.iter().sum::<f32>() / width as f32;
        let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
        *inverse = 1.0 / (variance + eps).sqrt();
        for (((value, n), g), b) in row.iter_mut().zip(out.iter_mut()).zip(gain).zip(bias) {
            *n = (*value - mean) * *inverse;
            *value = *n * g + b;
        }
    }
    (normalized, inverse_std)
}

/// Backward of [`norm_forward`]: `grad` (of the output) becomes the input's gradient in place.
fn norm_backward(
    grad: &mut [f32],
    normalized: &[f32],
    inverse_std: &[f32],
    gain: &[f32],
    gain_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    let width = gain.len();
    let mut scaled = vec![0.0f32; width];
    for ((row, n), &inverse) in grad
        .chunks_exact_mut(width)
        .zip(normalized.chunks_exact(width))
        .zip(inverse_std)
    {
        for i in 0..width {
            gain_grad[i] += row[i] * n[i];
            bias_grad[i] += row[i];
            scaled[i] = row[i] * gain[i];
        }
        let mean = scaled.iter().sum::<f32>() / width as f32;
        let mean_dot = scaled.iter().zip(n).map(|(s, n)| s * n).sum::<f32>() / width as f32;
        for i in 0..width {
            row[i] = inverse * (scaled[i] - mean - n[i] * mean_dot);
        }
    }
}

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// d/dx of `x·Φ(x)`: `Φ(x) + x·φ(x)`.
fn gelu_derivative(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    let density = exp(-0.5 * x * x) * 0.398_942_3;
    cdf + x * density
}

/// One layer forward over `states` (in place), keeping what the backward pass needs.
fn layer_forward(
    params: &Params,
    index: usize,
    shape: Shape,
    states: &mut Vec<f32>,
    spans: &[(usize, usize)],
) -> LayerCache {
    let hidden = shape.hidden;
    let rows = states.len() / hidden;
    let p = |tensor| params.layer(index, tensor);
    let input = states.clone();
    let qkv = linear(&input, p(QKV_W), p(QKV_B), rows);

    let head_size = hidden / shape.heads;
    let scale = 1.0 / (head_size as f32).sqrt();
    let stride = 3 * hidden;
    let tasks = shape.tasks(spans);
    let per_task: Vec<(Vec<f32>, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(start, length, head)| {
            let base = start * stride + head * head_size;
            head_attention_probabilities(&qkv[base..], length, head_size, hidden, scale)
        })
        .collect();
    let mut context = vec![0.0f32; rows * hidden];
    let mut probabilities = Vec::with_capacity(tasks.len());
    for (&(start, _, head), (scores, output)) in tasks.iter().zip(per_task) {
        for (row, values) in output.chunks_exact(head_size).enumerate() {
            let at = (start + row) * hidden + head * head_size;
            context[at..at + head_size].copy_from_slice(values);
        }
        probabilities.push(scores);
    }

    let projected = linear(&context, p(ATTN_OUT_W), p(ATTN_OUT_B), rows);
    let mut middle: Vec<f32> = input.iter().zip(&projected).map(|(a, b)| a + b).collect();
    let (attention_normalized, attention_inverse_std) =
        norm_forward(&mut middle, p(ATTN_NORM_G), p(ATTN_NORM_B), shape.eps);

    let up = linear(&middle, p(UP_W), p(UP_B), rows);
    let activated: Vec<f32> = up.iter().map(|&x| gelu(x)).collect();
    let down = linear(&activated, p(DOWN_W), p(DOWN_B), rows);
    let mut output: Vec<f32> = middle.iter().zip(&down).map(|(a, b)| a + b).collect();
    let (output_normalized, output_inverse_std) =
        norm_forward(&mut output, p(OUT_NORM_G), p(OUT_NORM_B), shape.eps);
    *states = output;
    LayerCache {
        input,
        qkv,
        probabilities,
        context,
        attention_normalized,
        attention_inverse_std,
        middle,
        up,
        activated,
        output_normalized,
        output_inverse_std,
    }
}

/// One layer backward: `grad` (of the layer's output) becomes the gradient of its input; the
/// parameter gradients are added to `grads`.
fn layer_backward(
    params: &Params,
    grads: &mut Params,
    index: usize,
    shape: Shape,
    cache: &LayerCache,
    spans: &[(usize, usize)],
    grad: &mut [f32],
) {
    let hidden = shape.hidden;
    let rows = grad.len() / hidden;
    let p = |tensor| params.layer(index, tensor);
    let base = index * PER_LAYER;
    let (gain_grad, bias_grad) = grads.pair_mut(base + OUT_NORM_G);
    norm_backward(
        grad,
        &cache.output_normalized,
        &cache.output_inverse_std,
        p(OUT_NORM_G),
        gain_grad,
        bias_grad,
    );
    // The residual carries `grad` to the middle; the feed-forward block adds to it.
    let (weight_grad, bias_grad) = grads.pair_mut(base + DOWN_W);
    let mut activated_grad = linear_backward(
        &cache.activated,
        p(DOWN_W),
        grad,
        rows,
        weight_grad,
        bias_grad,
    );
    for (g, &x) in activated_grad.iter_mut().zip(&cache.up) {
        *g *= gelu_derivative(x);
    }
    let (weight_grad, bias_grad) = grads.pair_mut(base + UP_W);
    let middle_grad = linear_backward(
        &cache.middle,
        p(UP_W),
        &activated_grad,
        rows,
        weight_grad,
        bias_grad,
    );
    for (g, m) in grad.iter_mut().zip(&middle_grad) {
        *g += m;
    }
    let (gain_grad, bias_grad) = grads.pair_mut(base + ATTN_NORM_G);
    norm_backward(
        grad,
        &cache.attention_normalized,
        &cache.attention_inverse_std,
        p(ATTN_NORM_G),
        gain_grad,
        bias_grad,
    );
    // `grad` is now the gradient of the attention block's sum (input + projection).
    let (weight_grad, bias_grad) = grads.pair_mut(base + ATTN_OUT_W);
    let context_grad = linear_backward(
        &cache.context,
        p(ATTN_OUT_W),
        grad,
        rows,
        weight_grad,
        bias_grad,
    );

    let head_size = hidden / shape.heads;
    let scale = 1.0 / (head_size as f32).sqrt();
    let stride = 3 * hidden;
    let tasks = shape.tasks(spans);
    let qkv = &cache.qkv;
    let per_task: Vec<[Vec<f32>; 3]> = tasks
        .par_iter()
        .zip(&cache.probabilities)
        .map(|(&(start, length, head), scores)| {
            let base = start * stride + head * head_size;
            let queries = MatRef::rows(&qkv[base..], length, head_size, stride);
            let keys = MatRef::rows(&qkv[base + hidden..], length, head_size, stride);
            let values = MatRef::rows(&qkv[base + 2 * hidden..], length, head_size, stride);
            let output_grad = MatRef::rows(
                &context_grad[start * hidden + head * head_size..],
                length,
                head_size,
                hidden,
            );
            let probabilities = MatRef::rows(scores, length, length, length);
            let mut values_grad = vec![0.0f32; length * head_size];
            matmul(
                &mut MatMut::rows(&mut values_grad, length, head_size, head_size),
                probabilities.transposed(),
                output_grad,
                1.0,
                false,
                Threads::One,
            );
            let mut score_grad = vec![0.0f32; length * length];
            matmul(
                &mut MatMut::rows(&mut score_grad, length, length, length),
                output_grad,
                values.transposed(),
                1.0,
                false,
                Threads::One,
            );
            // Softmax backward, row by row: dz = p ⊙ (dp − Σ dp ⊙ p).
            for (row, probs) in score_grad
                .chunks_exact_mut(length)
                .zip(scores.chunks_exact(length))
            {
                let dot: f32 = row.iter().zip(probs).map(|(g, p)| g * p).sum();
                for (g, p) in row.iter_mut().zip(probs) {
                    *g = p * (*g - dot);
                }
            }
            let mut queries_grad = vec![0.0f32; length * head_size];
            matmul(
                &mut MatMut::rows(&mut queries_grad, length, head_size, head_size),
                MatRef::rows(&score_grad, length, length, length),
                keys,
                scale,
                false,
                Threads::One,
            );
            let mut keys_grad = vec![0.0f32; length * head_size];
            matmul(
                &mut MatMut::rows(&mut keys_grad, length, head_size, head_size),
                MatRef::rows(&score_grad, length, length, length).transposed(),
                queries,
                scale,
                false,
                Threads::One,
            );
            [queries_grad, keys_grad, values_grad]
        })
        .collect();
    let mut qkv_grad = vec![0.0f32; rows * stride];
    for (&(start, _, head), parts) in tasks.iter().zip(&per_task) {
        for (part, values) in parts.iter().enumerate() {
            for (row, chunk) in values.chunks_exact(head_size).enumerate() {
                let at = (start + row) * stride + part * hidden + head * head_size;
                qkv_grad[at..at + head_size].copy_from_slice(chunk);
            }
        }
    }
    let (weight_grad, bias_grad) = grads.pair_mut(base + QKV_W);
    let input_grad = linear_backward(
        &cache.input,
        p(QKV_W),
        &qkv_grad,
        rows,
        weight_grad,
        bias_grad,
    );
    for (g, i) in grad.iter_mut().zip(&input_grad) {
        *g += i;
    }
}

/// The head's logit for each span of the final states.
fn head_logits(
    params: &Params,
    states: &[f32],
    spans: &[(usize, usize)],
    hidden: usize,
) -> (Vec<Vec<f32>>, Vec<f32>) {
    let pooled = mean_pool(states, spans, hidden);
    let (weight, bias) = params.head();
    let logits = pooled
        .iter()
        .map(|p| p.iter().zip(weight).map(|(a, b)| a * b).sum::<f32>() + bias)
        .collect();
    (pooled, logits)
}

/// Binary cross-entropy with `positive_weight` on the positives, averaged over the batch, and
/// the gradient of every parameter for it. `sequences` are token ids with `[CLS]`/`[SEP]`.
pub(crate) fn loss_and_gradient(
    encoder: &BertEncoder,
    params: &Params,
    sequences: &[Vec<u32>],
    labels: &[bool],
    positive_weight: f32,
) -> Result<(f32, Params)> {
    let shape = Shape::of(encoder);
    let hidden = shape.hidden;
    let (mut states, spans) = encoder.embedding_states(sequences)?;
    let mut caches = Vec::with_capacity(params.layers());
    for index in 0..params.layers() {
        caches.push(layer_forward(params, index, shape, &mut states, &spans));
    }
    let (pooled, logits) = head_logits(params, &states, &spans, hidden);
    let count = sequences.len() as f32;
    let mut loss = 0.0f32;
    let mut grads = params.zeros_like();
    let mut grad = vec![0.0f32; states.len()];
    let (weight, _) = params.head();
    let n = grads.tensors.len();
    for (((&logit, &label), pooled), &(start, length)) in
        logits.iter().zip(labels).zip(&pooled).zip(&spans)
    {
        let (weight_of, target) = if label {
            (positive_weight, 1.0)
        } else {
            (1.0, 0.0)
        };
        // log σ(z) and log(1 − σ(z)), computed stably.
        let softplus = |z: f32| z.max(0.0) + (-z.abs()).exp().ln_1p();
        loss += weight_of
            * if label {
                softplus(-logit)
            } else {
                softplus(logit)
            };
        let sigmoid = 1.0 / (1.0 + (-logit).exp());
        let logit_grad = weight_of * (sigmoid - target) / count;
        for (g, p) in grads.tensors[n - 2].iter_mut().zip(pooled) {
            *g += logit_grad * p;
        }
        grads.tensors[n - 1][0] += logit_grad;
        let per_row = logit_grad / length as f32;
        for row in grad[start * hidden..(start + length) * hidden].chunks_exact_mut(hidden) {
            for (g, w) in row.iter_mut().zip(weight) {
                *g = per_row * w;
            }
        }
    }
    for index in (0..params.layers()).rev() {
        layer_backward(
            params,
            &mut grads,
            index,
            shape,
            &caches[index],
            &spans,
            &mut grad,
        );
    }
    Ok((loss / count, grads))
}

/// AdamW (decoupled weight decay), β = (0.9, 0.999), ε = 1e-8, as in PyTorch.
#[derive(Debug)]
pub(crate) struct AdamW {
    first: Params,
    second: Params,
    step: i32,
    weight_decay: f32,
}

impl AdamW {
    pub(crate) fn new(params: &Params, weight_decay: f32) -> AdamW {
        AdamW {
            first: params.zeros_like(),
            second: params.zeros_like(),
            step: 0,
            weight_decay,
        }
    }

    pub(crate) fn update(&mut self, params: &mut Params, grads: &Params, learning_rate: f32) {
        const BETA1: f32 = 0.9;
        const BETA2: f32 = 0.999;
        self.step += 1;
        let correction1 = 1.0 - BETA1.powi(self.step);
        let correction2 = 1.0 - BETA2.powi(self.step);
        let decay = 1.0 - learning_rate * self.weight_decay;
        for (((param, grad), m), v) in params
            .tensors
            .iter_mut()
            .zip(&grads.tensors)
            .zip(&mut self.first.tensors)
            .zip(&mut self.second.tensors)
        {
            for (((p, &g), m), v) in param
                .iter_mut()
                .zip(grad)
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                *m = BETA1 * *m + (1.0 - BETA1) * g;
                *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                *p *= decay;
                *p -= learning_rate * (*m / correction1) / ((*v / correction2).sqrt() + 1e-8);
            }
        }
    }
}

/// Fine-tunes `encoder` on labelled token sequences; returns the trained parameters.
/// `progress(step, steps, loss)` is called after every optimizer step.
pub(crate) fn fine_tune(
    encoder: &BertEncoder,
    sequences: &[Vec<u32>],
    labels: &[bool],
    options: &FineTuneOptions,
    progress: &mut (dyn FnMut(usize, usize, f32) + Send),
) -> Result<Params> {
    let mut params = Params::from_encoder(encoder, options.seed);
    let mut optimizer = AdamW::new(&params, options.weight_decay);
    let positives = labels.iter().filter(|&&label| label).count().max(1);
    let positive_weight = (labels.len() - positives) as f32 / positives as f32;
    let batch = options.batch_size.max(1);
    let steps = options.steps(sequences.len());
    let warmup = (steps as f32 * 0.1).max(1.0);
    let mut random = SplitMix(options.seed);
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    let mut step = 0;
    for _ in 0..options.epochs {
        random.shuffle(&mut order);
        for chunk in order.chunks(batch) {
            let batch_sequences: Vec<Vec<u32>> =
                chunk.iter().map(|&i| sequences[i].clone()).collect();
            let batch_labels: Vec<bool> = chunk.iter().map(|&i| labels[i]).collect();
            let (loss, grads) = loss_and_gradient(
                encoder,
                &params,
                &batch_sequences,
                &batch_labels,
                positive_weight,
            )?;
            let rate = options.learning_rate
                * ((step as f32 + 1.0) / warmup).min(1.0)
                * ((steps - step) as f32 / steps as f32);
            optimizer.update(&mut params, &grads, rate);
            step += 1;
            progress(step, steps, loss);
        }
    }
    Ok(params)
}

/// A BERT encoder fine-tuned as a binary text classifier: [`FineTunedClassifier::train`] on
/// labelled texts, then [`FineTunedClassifier::logits`]. Texts are cut to their first and last
/// `max_tokens / 2` word pieces.
#[derive(Debug)]
pub struct FineTunedClassifier {
    encoder: BertEncoder,
    tokenizer: WordPieceTokenizer,
    head: Vec<f32>,
    bias: f32,
    max_tokens: usize,
    pool: rayon::ThreadPool,
}

/// Leads a saved classifier: the format's name and version.
const MAGIC: &[u8; 8] = b"BSLTFT01";

impl FineTunedClassifier {
    /// Fine-tunes the BERT model in `model_dir` (`tokenizer.json`, `config.json`,
    /// `model.safetensors`) on `texts` labelled `labels`. `progress(step, steps, loss)` follows
    /// the optimizer steps.
    pub fn train(
        model_dir: &Path,
        texts: &[&str],
        labels: &[bool],
        max_tokens: usize,
        threads: usize,
        options: &FineTuneOptions,
        progress: &mut (dyn FnMut(usize, usize, f32) + Send),
    ) -> Result<Self> {
        if texts.len() != labels.len() || texts.is_empty() {
            return Err(ModelError::InvalidRequest(
                "fine-tuning needs as many labels as texts, and at least one".to_string(),
            ));
        }
        let mut encoder = BertEncoder::load(model_dir)?;
        let tokenizer = WordPieceTokenizer::load(&model_dir.join("tokenizer.json"), max_tokens)?;
        let sequences = texts
            .iter()
            .map(|text| tokenizer.encode_ends(text, max_tokens))
            .collect::<Result<Vec<_>>>()?;
        let pool = thread_pool(threads)?;
        let params = pool.install(|| fine_tune(&encoder, &sequences, labels, options, progress))?;
        params.install(&mut encoder);
        let (head, bias) = params.head();
        Ok(FineTunedClassifier {
            head: head.to_vec(),
            bias,
            encoder,
            tokenizer,
            max_tokens,
            pool,
        })
    }

    /// The classifier's logit for each text (positive: the class labelled `true`).
    pub fn logits(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let sequences = texts
            .iter()
            .map(|text| self.tokenizer.encode_ends(text, self.max_tokens))
            .collect::<Result<Vec<_>>>()?;
        let threads = self.pool.current_num_threads();
        let pooled = self
            .pool
            .install(|| self.encoder.encode(&sequences, threads))?;
        Ok(pooled
            .iter()
            .map(|p| p.iter().zip(&self.head).map(|(a, b)| a * b).sum::<f32>() + self.bias)
            .collect())
    }

    /// The trained weights (every layer and the head; the embedding tables are the base
    /// model's), to be read back by [`FineTunedClassifier::from_bytes`] with the same base model.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bias = [self.bias];
        let tensors: Vec<&[f32]> = self
            .encoder
            .layers
            .iter()
            .flat_map(layer_tensors)
            .map(Vec::as_slice)
            .chain([self.head.as_slice(), bias.as_slice()])
            .collect();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.max_tokens as u64).to_le_bytes());
        bytes.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        for tensor in tensors {
            bytes.extend_from_slice(&(tensor.len() as u64).to_le_bytes());
            for value in tensor {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        }
        bytes
    }

    /// Reads weights written by [`FineTunedClassifier::to_bytes`] onto the base model in
    /// `model_dir`.
    pub fn from_bytes(bytes: &[u8], model_dir: &Path, threads: usize) -> Result<Self> {
        let mut encoder = BertEncoder::load(model_dir)?;
        // Each tensor's length: the layers', then the head's weight and bias.
        let expected: Vec<usize> = encoder
            .layers
            .iter()
            .flat_map(|layer| layer_tensors(layer).map(Vec::len))
            .chain([encoder.hidden, 1])
            .collect();
        let damaged = || {
            ModelError::InvalidRequest(
                "the fine-tuned weights are damaged or were trained on another base model"
                    .to_string(),
            )
        };
        let mut reader = Reader(bytes);
        if reader.take(8) != Some(MAGIC.as_slice()) {
            return Err(damaged());
        }
        let max_tokens = reader.number().ok_or_else(damaged)?;
        let count = reader.number().ok_or_else(damaged)?;
        if count != expected.len() || !(2..=512).contains(&max_tokens) {
            return Err(damaged());
        }
        let mut tensors = Vec::with_capacity(count);
        for &length in &expected {
            if reader.number() != Some(length) {
                return Err(damaged());
            }
            let raw = reader.take(4 * length).ok_or_else(damaged)?;
            let tensor: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if tensor.iter().any(|value| !value.is_finite()) {
                return Err(damaged());
            }
            tensors.push(tensor);
        }
        if !reader.0.is_empty() {
            return Err(damaged());
        }
        let params = Params { tensors };
        params.install(&mut encoder);
        let (head, bias) = params.head();
        Ok(FineTunedClassifier {
            head: head.to_vec(),
            bias,
            tokenizer: WordPieceTokenizer::load(&model_dir.join("tokenizer.json"), max_tokens)?,
            encoder,
            max_tokens,
            pool: thread_pool(threads)?,
        })
    }
}

/// Reads a byte string front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(count)?;
        self.0 = rest;
        Some(head)
    }

    fn number(&mut self) -> Option<usize> {
        let bytes = self.take(8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(bytes)).ok()
    }
}

fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|index| format!("basalt-finetune-{index}"))
        .build()
        .map_err(|error| ModelError::Inference(format!("could not start threads: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head's logits for `sequences` under `params` (no gradient): for checks and scoring
    /// during training.
    fn logits(encoder: &BertEncoder, params: &Params, sequences: &[Vec<u32>]) -> Result<Vec<f32>> {
        let shape = Shape::of(encoder);
        let (mut states, spans) = encoder.embedding_states(sequences)?;
        for index in 0..params.layers() {
            layer_forward(params, index, shape, &mut states, &spans);
        }
        Ok(head_logits(params, &states, &spans, shape.hidden).1)
    }

    fn sequences() -> Vec<Vec<u32>> {
        vec![
            vec![1, 5, 7, 9, 2],
            vec![1, 3, 2],
            vec![1, 8, 8, 4, 6, 11, 2],
        ]
    }

    #[test]
    fn gradients_match_finite_differences() {
        let encoder = BertEncoder::tiny_random(7);
        let params = Params::from_encoder(&encoder, 3);
        let labels = [true, false, true];
        let (_, grads) =
            loss_and_gradient(&encoder, &params, &sequences(), &labels, 1.5).expect("ok");
        let mut random = SplitMix(11);
        let mut checked = 0;
        for tensor in 0..params.tensors.len() {
            for _ in 0..4 {
                let at = (random.next() % params.tensors[tensor].len() as u64) as usize;
                let h = 1e-2f32;
                let mut plus = params.clone();
                plus.tensors[tensor][at] += h;
                let mut minus = params.clone();
                minus.tensors[tensor][at] -= h;
                let (up, _) =
                    loss_and_gradient(&encoder, &plus, &sequences(), &labels, 1.5).expect("ok");
                let (down, _) =
                    loss_and_gradient(&encoder, &minus, &sequences(), &labels, 1.5).expect("ok");
                let numeric = (up - down) / (2.0 * h);
                let analytic = grads.tensors[tensor][at];
                let tolerance = 2e-3 + 0.05 * numeric.abs().max(analytic.abs());
                assert!(
                    (numeric - analytic).abs() <= tolerance,
                    "tensor {tensor} element {at}: numeric {numeric}, analytic {analytic}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 4 * PER_LAYER);
    }

    #[test]
    fn training_separates_a_learnable_task() {
        let encoder = BertEncoder::tiny_random(5);
        // Class is whether token 9 appears anywhere.
        let mut random = SplitMix(2);
        let mut sequences = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..64 {
            let length = 3 + (random.next() % 6) as usize;
            let mut tokens = vec![1];
            tokens.extend((0..length).map(|_| 3 + (random.next() % 6) as u32));
            let label = random.next().is_multiple_of(2);
            if label {
                let at = 1 + (random.next() % length as u64) as usize;
                tokens[at] = 9;
            }
            tokens.push(2);
            sequences.push(tokens);
            labels.push(label);
        }
        let before = logits(&encoder, &Params::from_encoder(&encoder, 0), &sequences).expect("ok");
        let options = FineTuneOptions {
            epochs: 30,
            batch_size: 8,
            learning_rate: 3e-3,
            ..FineTuneOptions::default()
        };
        let mut losses = Vec::new();
        let params = fine_tune(
            &encoder,
            &sequences,
            &labels,
            &options,
            &mut |_, _, loss| losses.push(loss),
        )
        .expect("ok");
        let after = logits(&encoder, &params, &sequences).expect("ok");
        let accuracy = |scores: &[f32]| {
            scores
                .iter()
                .zip(&labels)
                .filter(|(s, l)| (**s > 0.0) == **l)
                .count() as f32
                / labels.len() as f32
        };
        assert!(
            accuracy(&after) >= 0.95,
            "accuracy {} (before {})",
            accuracy(&after),
            accuracy(&before)
        );
        assert!(losses.last().expect("ok") < &losses[0]);
        // The trained layers installed in the encoder give the same scores as the trainer.
        let mut tuned = BertEncoder::tiny_random(5);
        params.install(&mut tuned);
        let pooled = tuned.encode(&sequences, 1).expect("ok");
        let (weight, bias) = params.head();
        for (p, expected) in pooled.iter().zip(&after) {
            let logit: f32 = p.iter().zip(weight).map(|(a, b)| a * b).sum::<f32>() + bias;
            assert!((logit - expected).abs() < 1e-3, "{logit} vs {expected}");
        }
    }
}
