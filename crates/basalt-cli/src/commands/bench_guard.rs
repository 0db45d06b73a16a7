//! `basalt bench guardrails`: what a guardrail adds to a request — the input check, and the
//! output checked as it streams — on real texts (the shared guardrail data: Presidio's PII
//! sentences and the prompt-attack set, up to 12,000 characters).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use basalt_guard::{
    AttackClassifier, GuardModels, Guardrail, GuardrailConfig, Release, Source, StreamGuard,
};
use basalt_model::{LocalEmbedder, LocalEmbedderOptions};
use serde::Serialize;

use super::bench::{ReportArgs, SharedDataArgs, percentile};
use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct GuardBenchArgs {
    #[command(flatten)]
    report: ReportArgs,
    #[command(flatten)]
    data: SharedDataArgs,
    /// Texts to check, taken in turn from the PII and the prompt-attack files
    #[arg(long, default_value_t = 2000)]
    count: usize,
}

/// Every sensitive-information type (anonymized both ways), a custom pattern, custom words,
/// the profanity list and prompt attacks: the most a configuration can ask for short of the
/// checks that embed text (denied topics, measured apart, and grounding).
const EVERYTHING: &str = r#"{
  "description": "every check",
  "sensitive_information": {
    "entities": [
      {"type": "EMAIL", "input": "anonymize", "output": "anonymize"},
      {"type": "PHONE", "input": "anonymize", "output": "anonymize"},
      {"type": "CREDIT_CARD", "input": "anonymize", "output": "anonymize"},
      {"type": "IBAN", "input": "anonymize", "output": "anonymize"},
      {"type": "US_SSN", "input": "anonymize", "output": "anonymize"},
      {"type": "IP_ADDRESS", "input": "anonymize", "output": "anonymize"},
      {"type": "URL", "input": "anonymize", "output": "anonymize"},
      {"type": "AWS_ACCESS_KEY", "input": "anonymize", "output": "anonymize"},
      {"type": "URL_CREDENTIALS", "input": "anonymize", "output": "anonymize"},
      {"type": "SECRET", "input": "anonymize", "output": "anonymize"}
    ],
    "regexes": [{"name": "EMPLOYEE_ID", "pattern": "EMP-\\d{6}", "input": "anonymize", "output": "anonymize"}]
  },
  "word_filters": {"words": ["project falcon", "codename"], "profanity": true},
  "prompt_attacks": {}
}"#;

/// Characters per streamed piece (about a token).
const PIECE_CHARS: usize = 4;

#[derive(Debug, Serialize)]
struct Latency {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct GuardBench {
    texts: usize,
    mean_chars: f64,
    /// One check of the whole text as input.
    input: Latency,
    /// The text streamed through the output guard in pieces of about a token, all checks summed.
    output_streamed: Latency,
    /// Input and streamed output together: what a guarded request pays.
    request: Latency,
    /// The input check of the same configuration plus two denied topics (each sentence of
    /// the text embedded; on the texts below 500 characters, a question's length).
    input_with_topics_short: Latency,
    /// The prompt-attack screen of one text as a retrieved passage (scored a window at a time).
    passage_screen: Latency,
    /// With a fine-tuned encoder stacked on the prompt-attack classifier: the share of texts
    /// it read in the input check (the others were settled by the n-gram model alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    encoder_share: Option<f64>,
    floor_ms: f64,
}

fn latency(mut samples: Vec<f64>) -> Latency {
    samples.sort_by(f64::total_cmp);
    Latency {
        p50_ms: percentile(&samples, 0.50),
        p95_ms: percentile(&samples, 0.95),
        p99_ms: percentile(&samples, 0.99),
        max_ms: samples.last().copied().unwrap_or_default(),
    }
}

fn texts(args: &GuardBenchArgs) -> anyhow::Result<Vec<String>> {
    let directory = args.data.path.join("guardrails");
    let mut files = Vec::new();
    for name in ["pii-spans.jsonl", "prompt-attacks.jsonl"] {
        let path = directory.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "while reading {} (point --data or BASALT_SHARED_DATA at the shared data)",
                path.display()
            )
        })?;
        let lines: Vec<String> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|value| value["text"].as_str().map(str::to_owned))
            .collect();
        files.push(lines);
    }
    // Alternate the two files, so short sentences and long prompts are both in the sample.
    let mut picked = Vec::with_capacity(args.count);
    for index in 0.. {
        if picked.len() == args.count || files.iter().all(|file| index >= file.len()) {
            break;
        }
        for file in &files {
            if let Some(text) = file.get(index)
                && picked.len() < args.count
            {
                picked.push(text.clone());
            }
        }
    }
    Ok(picked)
}

/// Two denied topics added to [`EVERYTHING`].
const TOPICS: &str = r#"[
  {"name": "investment advice", "definition": "Recommendations about which stocks, funds or other investments to buy or sell.",
   "examples": ["Which stocks should I buy?", "Is bitcoin a good investment right now?"]},
  {"name": "medical diagnosis", "definition": "Telling a person which illness they have from their symptoms.",
   "examples": ["I have a headache and a fever, what disease is it?"]}
]"#;

pub(crate) fn run(args: &GuardBenchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let classifier =
        AttackClassifier::load_or_builtin(&settings.models_dir.prompt_attack_classifier())
            .context("the benchmark checks prompt attacks")?;
    let path = settings.models_dir.default_embedding_model();
    let options = LocalEmbedderOptions {
        threads: settings.threads,
        ..LocalEmbedderOptions::default()
    };
    let embedder = LocalEmbedder::load(&path, &options)
        .with_context(|| format!("while loading the embedding model {}", path.display()))?;
    let classifier = Arc::new(classifier);
    let models = GuardModels {
        embedder: Some(Arc::new(embedder)),
        attacks: Some(Arc::clone(&classifier)),
    };
    let guardrail =
        Guardrail::with_models(GuardrailConfig::from_json(EVERYTHING)?, models.clone())?;
    let mut with_topics = GuardrailConfig::from_json(EVERYTHING)?;
    with_topics.denied_topics = serde_json::from_str(TOPICS)?;
    let with_topics = Guardrail::with_models(with_topics, models)?;
    let texts = texts(args)?;
    anyhow::ensure!(!texts.is_empty(), "no texts to check");
    let (mut input, mut output, mut request) = (Vec::new(), Vec::new(), Vec::new());
    for text in &texts {
        let started = Instant::now();
        std::hint::black_box(guardrail.check(text, Source::Input));
        let input_ms = started.elapsed().as_secs_f64() * 1e3;

        let characters: Vec<char> = text.chars().collect();
        let started = Instant::now();
        let mut stream = StreamGuard::new(&guardrail);
        for piece in characters.chunks(PIECE_CHARS) {
            let piece: String = piece.iter().collect();
            if let Release::Blocked(_) = std::hint::black_box(stream.push(&piece)) {
                break;
            }
        }
        std::hint::black_box(stream.finish());
        let output_ms = started.elapsed().as_secs_f64() * 1e3;
        input.push(input_ms);
        output.push(output_ms);
        request.push(input_ms + output_ms);
    }
    let mut passages = Vec::new();
    for text in &texts {
        let started = Instant::now();
        std::hint::black_box(guardrail.drops_passage(text));
        passages.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut topics = Vec::new();
    for text in texts.iter().filter(|text| text.len() < 500).take(300) {
        let started = Instant::now();
        std::hint::black_box(with_topics.check(text, Source::Input));
        topics.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let encoder_share = classifier.has_encoder().then(|| {
        let read = texts
            .iter()
            .filter(|text| {
                classifier
                    .assess(text, classifier.default_rate(), false)
                    .encoder
            })
            .count();
        read as f64 / texts.len() as f64
    });
    let bench = GuardBench {
        texts: texts.len(),
        mean_chars: texts.iter().map(|text| text.chars().count()).sum::<usize>() as f64
            / texts.len() as f64,
        input: latency(input),
        output_streamed: latency(output),
        request: latency(request),
        input_with_topics_short: latency(topics),
        passage_screen: latency(passages),
        encoder_share,
        floor_ms: 10.0,
    };
    let json = serde_json::to_string_pretty(&bench)?;
    args.report.emit(&json, || {
        print_line(&format!(
            "{} texts, {:.0} characters on average; every sensitive-information type, a custom \
             pattern, words, profanity and prompt attacks",
            bench.texts, bench.mean_chars
        ))?;
        print_line(&format!(
            "{:<22} {:>8} {:>8} {:>8} {:>8}",
            "ms", "p50", "p95", "p99", "max"
        ))?;
        for (name, row) in [
            ("input check", &bench.input),
            ("output, streamed", &bench.output_streamed),
            ("request (both)", &bench.request),
            ("input + topics, short", &bench.input_with_topics_short),
            ("passage screen", &bench.passage_screen),
        ] {
            print_line(&format!(
                "{name:<22} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                row.p50_ms, row.p95_ms, row.p99_ms, row.max_ms
            ))?;
        }
        if let Some(share) = bench.encoder_share {
            print_line(&format!(
                "the fine-tuned prompt-attack encoder read {:.1}% of the texts",
                100.0 * share
            ))?;
        }
        print_line(&format!("floor: ≤ {} ms p50 per request", bench.floor_ms))
    })?;
    Ok(ExitCode::SUCCESS)
}
