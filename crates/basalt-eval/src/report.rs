//! The answer-evaluation report: per-question records and aggregated metrics, written as
//! `report.json` (what `eval compare` and the gate read), `report.md` and `report.html` — one
//! self-contained file with inline SVG charts and no script or network access, readable offline.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::metrics::Rouge;

/// One passage a citation names, and whether it supports the cited span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitedPassage {
    pub number: usize,
    pub doc_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The grounding scorer's support of the span by this passage alone (0–1).
    pub support: f32,
    pub supported: bool,
}

/// One cited span of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitationRecord {
    pub text: String,
    pub passages: Vec<CitedPassage>,
    /// `cited`: the answer's own marker names the passages; `matched`: a sentence without a
    /// marker, attributed to the passage holding most of its words.
    #[serde(default = "cited")]
    pub kind: String,
}

fn cited() -> String {
    "cited".into()
}

/// One question's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecord {
    pub id: String,
    pub question: String,
    pub answerable: bool,
    pub gold_answers: Vec<String>,
    pub answer: String,
    pub abstained: bool,
    /// No generated sentence passed the check against the passages: the answer is a passage
    /// sentence, not the model's words.
    #[serde(default)]
    pub extractive: bool,
    /// Generated sentences that failed the check and were never shown.
    #[serde(default)]
    pub unverified_sentences: usize,
    /// Numbers and names in the answer, and those no passage it cites holds (an outside check,
    /// `metrics::unsupported_facts`, not the pipeline's own).
    #[serde(default)]
    pub facts_checked: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported_facts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abstain_reason: Option<String>,
    /// The cosine of the question with the best passage sentence retrieved (what the
    /// relevance threshold compares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevance: Option<f32>,
    /// Answerable questions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rouge: Option<Rouge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<bool>,
    /// The answer holds one of the question's `facts` (answerable questions that list them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fact_right: Option<bool>,
    /// Share of the answer's sentences supported by the passages they cite (answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faithfulness: Option<f64>,
    pub citations: Vec<CitationRecord>,
    /// Sentences of the answer with content words (what citation coverage is over).
    #[serde(default)]
    pub sentences: usize,
    /// Share of the gold passages among the passages retrieved (when the dataset names them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_recall: Option<f64>,
    pub first_token_ms: f64,
    /// When the first text was shown: a verified sentence, the quoted one, or "not found".
    #[serde(default)]
    pub first_shown_ms: f64,
    pub total_ms: f64,
    pub generation_ms: f64,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl QuestionRecord {
    /// An answer counts as faithful when every sentence is supported by what it cites.
    pub fn faithful(&self) -> Option<bool> {
        self.faithfulness.map(|share| share >= 1.0 - 1e-9)
    }
}

/// What the run was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub knowledge_base: String,
    pub datasets: Vec<String>,
    pub template_version: String,
    pub generation_model: String,
    pub max_tokens: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passages: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_relevance: Option<f32>,
    /// The support (0–1) from which a passage supports a sentence.
    pub support_threshold: f32,
    pub started: String,
}

/// Whether more or less of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Higher,
    Lower,
}

/// One aggregated metric: its value, its standard error (over the questions it averages), how
/// many questions it is over, and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    pub value: f64,
    pub standard_error: f64,
    pub count: usize,
    pub better: Direction,
}

/// A whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerReport {
    pub run: RunInfo,
    pub metrics: BTreeMap<String, MetricValue>,
    pub records: Vec<QuestionRecord>,
}

/// The metrics, in the order reports show them, with a description.
pub const METRICS: &[(&str, &str)] = &[
    (
        "answer_rate",
        "answerable questions answered (not \"not found\")",
    ),
    (
        "abstention_rate",
        "unanswerable questions answered \"not found\"",
    ),
    (
        "rouge1",
        "ROUGE-1 F-measure against the gold answers (answerable questions)",
    ),
    ("rouge2", "ROUGE-2 F-measure"),
    ("rouge_l", "ROUGE-L F-measure"),
    ("bleu", "corpus BLEU, sacreBLEU's defaults (0–100)"),
    ("token_f1", "SQuAD token F1"),
    ("exact_match", "SQuAD exact match"),
    (
        "fact_rate",
        "answerable questions answered with one of their listed facts",
    ),
    (
        "faithfulness",
        "share of answer sentences supported by the passages they cite",
    ),
    (
        "faithfulness_model_written",
        "faithfulness of the answers in the model's words",
    ),
    (
        "faithfulness_extractive",
        "faithfulness of the extractive answers (a passage sentence)",
    ),
    (
        "rouge_l_model_written",
        "ROUGE-L of the answers in the model's words",
    ),
    ("rouge_l_extractive", "ROUGE-L of the quoted answers"),
    (
        "token_f1_model_written",
        "token F1 of the answers in the model's words",
    ),
    ("token_f1_extractive", "token F1 of the quoted answers"),
    (
        "fact_support",
        "answers whose every number and name is in a passage they cite (an outside check)",
    ),
    (
        "fact_support_model_written",
        "fact support of the answers in the model's words",
    ),
    (
        "extractive_rate",
        "answers that quote the passages (the extractive style, or no generated sentence passed)",
    ),
    (
        "unverified_sentences_mean",
        "generated sentences per answer that failed the check and were not shown",
    ),
    (
        "citation_precision",
        "cited passages that support the span citing them",
    ),
    (
        "citation_precision_cited",
        "citation precision of the answer's own markers",
    ),
    (
        "citation_precision_matched",
        "citation precision of citations matched to unmarked sentences",
    ),
    (
        "citation_coverage",
        "answer sentences with a citation that supports them",
    ),
    ("gold_recall", "gold passages among the passages retrieved"),
    (
        "first_token_p50_ms",
        "time to first generated token, median",
    ),
    (
        "first_shown_p50_ms",
        "time to the first text shown (verified or quoted), median",
    ),
    ("total_p50_ms", "answer latency, median"),
    ("total_p95_ms", "answer latency, 95th percentile"),
    ("prompt_tokens_mean", "prompt tokens per answer"),
    ("completion_tokens_mean", "completion tokens per answer"),
    (
        "tokens_per_second",
        "completion tokens per second of generation",
    ),
];

fn mean_and_error(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (variance / n).sqrt())
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

impl AnswerReport {
    /// Aggregates `records`; `bleu` is the corpus BLEU of the answerable questions (it is not
    /// a mean of per-question values, so it is computed by the caller from the counts).
    pub fn new(run: RunInfo, records: Vec<QuestionRecord>, bleu: f64) -> Self {
        let mut metrics = BTreeMap::new();
        let mut put = |name: &str, values: Vec<f64>, better: Direction| {
            let (value, standard_error) = mean_and_error(&values);
            let metric = MetricValue {
                value,
                standard_error,
                count: values.len(),
                better,
            };
            metrics.insert(name.to_owned(), metric);
        };
        let flag = |value: bool| f64::from(u8::from(value));
        let answerable: Vec<&QuestionRecord> = records.iter().filter(|r| r.answerable).collect();
        let unanswerable: Vec<&QuestionRecord> = records.iter().filter(|r| !r.answerable).collect();
        let answered: Vec<&QuestionRecord> = records.iter().filter(|r| !r.abstained).collect();
        use Direction::{Higher, Lower};
        put(
            "answer_rate",
            answerable.iter().map(|r| flag(!r.abstained)).collect(),
            Higher,
        );
        put(
            "abstention_rate",
            unanswerable.iter().map(|r| flag(r.abstained)).collect(),
            Higher,
        );
        let rouge: Vec<Rouge> = answerable.iter().filter_map(|r| r.rouge).collect();
        put("rouge1", rouge.iter().map(|r| r.rouge1).collect(), Higher);
        put("rouge2", rouge.iter().map(|r| r.rouge2).collect(), Higher);
        put("rouge_l", rouge.iter().map(|r| r.rouge_l).collect(), Higher);
        put(
            "token_f1",
            answerable.iter().filter_map(|r| r.token_f1).collect(),
            Higher,
        );
        put(
            "exact_match",
            answerable
                .iter()
                .filter_map(|r| r.exact_match.map(flag))
                .collect(),
            Higher,
        );
        put(
            "fact_rate",
            answerable
                .iter()
                .filter_map(|r| r.fact_right.map(flag))
                .collect(),
            Higher,
        );
        put(
            "faithfulness",
            answered.iter().filter_map(|r| r.faithfulness).collect(),
            Higher,
        );
        for (name, extractive) in [
            ("faithfulness_model_written", false),
            ("faithfulness_extractive", true),
        ] {
            put(
                name,
                answered
                    .iter()
                    .filter(|r| r.extractive == extractive)
                    .filter_map(|r| r.faithfulness)
                    .collect(),
                Higher,
            );
        }
        for (part, extractive) in [("model_written", false), ("extractive", true)] {
            let written = || {
                answerable
                    .iter()
                    .filter(move |r| !r.abstained && r.extractive == extractive)
            };
            put(
                &format!("rouge_l_{part}"),
                written()
                    .filter_map(|r| r.rouge.map(|x| x.rouge_l))
                    .collect(),
                Higher,
            );
            put(
                &format!("token_f1_{part}"),
                written().filter_map(|r| r.token_f1).collect(),
                Higher,
            );
        }
        put(
            "fact_support",
            answered
                .iter()
                .map(|r| flag(r.unsupported_facts.is_empty()))
                .collect(),
            Higher,
        );
        put(
            "fact_support_model_written",
            answered
                .iter()
                .filter(|r| !r.extractive)
                .map(|r| flag(r.unsupported_facts.is_empty()))
                .collect(),
            Higher,
        );
        put(
            "extractive_rate",
            answered.iter().map(|r| flag(r.extractive)).collect(),
            Lower,
        );
        for kind in ["cited", "matched"] {
            put(
                &format!("citation_precision_{kind}"),
                answered
                    .iter()
                    .flat_map(|r| &r.citations)
                    .filter(|c| c.kind == kind)
                    .flat_map(|c| &c.passages)
                    .map(|p| flag(p.supported))
                    .collect(),
                Higher,
            );
        }
        let cited: Vec<f64> = answered
            .iter()
            .flat_map(|r| &r.citations)
            .flat_map(|c| &c.passages)
            .map(|p| flag(p.supported))
            .collect();
        put("citation_precision", cited, Higher);
        // Per answer sentence: 1 for each citation a passage supports, 0 for the rest (a
        // sentence without a citation included).
        let covered: Vec<f64> = answered
            .iter()
            .flat_map(|r| {
                let supported = r
                    .citations
                    .iter()
                    .filter(|c| c.passages.iter().any(|p| p.supported))
                    .count();
                let sentences = r.sentences.max(r.citations.len());
                (0..sentences).map(move |index| flag(index < supported))
            })
            .collect();
        put("citation_coverage", covered, Higher);
        put(
            "gold_recall",
            answerable.iter().filter_map(|r| r.gold_recall).collect(),
            Higher,
        );
        let generated: Vec<&QuestionRecord> =
            records.iter().filter(|r| r.completion_tokens > 0).collect();
        let mut first: Vec<f64> = generated.iter().map(|r| r.first_token_ms).collect();
        first.sort_by(f64::total_cmp);
        let mut shown: Vec<f64> = records.iter().map(|r| r.first_shown_ms).collect();
        shown.sort_by(f64::total_cmp);
        let mut total: Vec<f64> = records.iter().map(|r| r.total_ms).collect();
        total.sort_by(f64::total_cmp);
        put(
            "unverified_sentences_mean",
            generated
                .iter()
                .map(|r| r.unverified_sentences as f64)
                .collect(),
            Lower,
        );
        put(
            "prompt_tokens_mean",
            records.iter().map(|r| r.prompt_tokens as f64).collect(),
            Lower,
        );
        put(
            "completion_tokens_mean",
            records.iter().map(|r| r.completion_tokens as f64).collect(),
            Lower,
        );
        let completion: usize = records.iter().map(|r| r.completion_tokens).sum();
        let seconds: f64 = records.iter().map(|r| r.generation_ms).sum::<f64>() / 1e3;
        let speed = if seconds > 0.0 {
            completion as f64 / seconds
        } else {
            0.0
        };
        // Values that are not means of per-question values: no standard error.
        for (name, value, count, better) in [
            ("bleu", bleu, answerable.len(), Higher),
            (
                "first_token_p50_ms",
                percentile(&first, 0.5),
                first.len(),
                Lower,
            ),
            (
                "first_shown_p50_ms",
                percentile(&shown, 0.5),
                shown.len(),
                Lower,
            ),
            ("total_p50_ms", percentile(&total, 0.5), total.len(), Lower),
            ("total_p95_ms", percentile(&total, 0.95), total.len(), Lower),
            ("tokens_per_second", speed, generated.len(), Higher),
        ] {
            let metric = MetricValue {
                value,
                standard_error: 0.0,
                count,
                better,
            };
            metrics.insert(name.to_owned(), metric);
        }
        AnswerReport {
            run,
            metrics,
            records,
        }
    }

    pub fn value(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).map(|metric| metric.value)
    }

    /// The report as Markdown: the metrics table, then every question.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let run = &self.run;
        let _ = writeln!(out, "# Answer evaluation: {}\n", run.knowledge_base);
        let _ = writeln!(
            out,
            "{} questions ({} answerable) from {}; template `{}`, model {}, at most {} tokens; started {}.\n",
            self.records.len(),
            self.records.iter().filter(|r| r.answerable).count(),
            run.datasets.join(", "),
            run.template_version,
            run.generation_model,
            run.max_tokens,
            run.started
        );
        let _ = writeln!(
            out,
            "| metric | value | ± | over | meaning |\n|---|---:|---:|---:|---|"
        );
        for (name, meaning) in METRICS {
            if let Some(metric) = self.metrics.get(*name) {
                let _ = writeln!(
                    out,
                    "| {name} | {:.4} | {:.4} | {} | {meaning} |",
                    metric.value, metric.standard_error, metric.count
                );
            }
        }
        let _ = writeln!(out, "\n## Questions\n");
        let _ = writeln!(
            out,
            "| id | question | answer | gold | ROUGE-L | faithful | ms |\n|---|---|---|---|---:|---|---:|"
        );
        for record in &self.records {
            let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.0} |",
                cell(&record.id),
                cell(&record.question),
                cell(&record.answer),
                cell(&record.gold_answers.join(" / ")),
                record
                    .rouge
                    .map_or_else(|| "–".to_owned(), |r| format!("{:.3}", r.rouge_l)),
                match record.faithful() {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                },
                record.total_ms
            );
        }
        out
    }

    /// The report as one self-contained HTML page.
    pub fn html(&self) -> String {
        let run = &self.run;
        let mut body = String::new();
        let _ = write!(
            body,
            "<h1>Answer evaluation: {}</h1><p class=\"meta\">{} questions ({} answerable) from {} · \
             template <code>{}</code> · {} · at most {} tokens · started {}</p>",
            escape(&run.knowledge_base),
            self.records.len(),
            self.records.iter().filter(|r| r.answerable).count(),
            escape(&run.datasets.join(", ")),
            escape(&run.template_version),
            escape(&run.generation_model),
            run.max_tokens,
            escape(&run.started)
        );
        let quality: Vec<(String, f64)> = METRICS
            .iter()
            .filter(|(name, _)| !name.ends_with("_ms") && !name.contains("tokens"))
            .filter_map(|(name, _)| {
                self.metrics.get(*name).map(|metric| {
                    let value = if *name == "bleu" {
                        metric.value / 100.0
                    } else {
                        metric.value
                    };
                    let label = if *name == "bleu" { "bleu / 100" } else { name };
                    (label.to_owned(), value)
                })
            })
            .collect();
        body.push_str("<section><h2>Quality</h2>");
        body.push_str(&bar_chart(&quality, "Quality metrics, 0 to 1"));
        body.push_str("</section><section><h2>Latency</h2>");
        let latencies: Vec<f64> = self.records.iter().map(|r| r.total_ms).collect();
        body.push_str(&histogram(
            &latencies,
            "Answer latency (ms), questions per bin",
        ));
        body.push_str("</section><section><h2>All metrics</h2><table><thead><tr><th>metric</th><th>value</th><th>±</th><th>over</th><th>meaning</th></tr></thead><tbody>");
        for (name, meaning) in METRICS {
            if let Some(metric) = self.metrics.get(*name) {
                let _ = write!(
                    body,
                    "<tr><td><code>{name}</code></td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                    metric.value,
                    metric.standard_error,
                    metric.count,
                    escape(meaning)
                );
            }
        }
        body.push_str("</tbody></table></section><section><h2>Questions</h2><table class=\"questions\"><thead><tr><th>question</th><th>answer</th><th>gold</th><th>citations</th><th>faithful</th><th>ROUGE-L</th><th>ms</th></tr></thead><tbody>");
        for record in &self.records {
            let answer_class = if record.abstained { "abstained" } else { "" };
            let faithful = match record.faithful() {
                Some(true) => "<span class=\"ok\">✓ yes</span>".to_owned(),
                Some(false) => format!(
                    "<span class=\"bad\">✗ {:.0}%</span>",
                    record.faithfulness.unwrap_or(0.0) * 100.0
                ),
                None => "–".to_owned(),
            };
            let mut citations = String::new();
            for citation in &record.citations {
                let passages: Vec<String> = citation
                    .passages
                    .iter()
                    .map(|p| {
                        format!(
                            "<span class=\"{}\">[{}] {}</span>",
                            if p.supported { "ok" } else { "bad" },
                            p.number,
                            escape(p.title.as_deref().unwrap_or(&p.doc_id))
                        )
                    })
                    .collect();
                let _ = write!(
                    citations,
                    "<div class=\"cite\"><q>{}</q> {}</div>",
                    escape(&citation.text),
                    passages.join(" ")
                );
            }
            let _ = write!(
                body,
                "<tr><td><span class=\"id\">{}</span> {}{}</td><td class=\"{answer_class}\">{}</td><td>{}</td><td>{}</td><td>{faithful}</td><td class=\"num\">{}</td><td class=\"num\">{:.0}</td></tr>",
                escape(&record.id),
                escape(&record.question),
                if record.answerable {
                    ""
                } else {
                    " <span class=\"tag\">unanswerable</span>"
                },
                escape(&record.answer),
                escape(&record.gold_answers.join(" / ")),
                citations,
                record
                    .rouge
                    .map_or_else(|| "–".to_owned(), |r| format!("{:.3}", r.rouge_l)),
                record.total_ms
            );
        }
        body.push_str("</tbody></table></section>");
        page(&format!("Answer evaluation: {}", run.knowledge_base), &body)
    }
}

/// A page with the report style; no scripts, no external resources.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style>\
         </head><body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f7f7f5;color:#1d1d1b}\
main{max-width:1200px;margin:0 auto;padding:24px}h1{font-size:1.6em;margin:.2em 0}\
.meta{color:#555}section{background:#fff;border:1px solid #ddd;border-radius:8px;padding:16px;margin:16px 0}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e5e5e5;padding:6px 8px;text-align:left;vertical-align:top}\
th{background:#f0f0ee}.num{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#1a7f37}.bad{color:#c62828;font-weight:600}.abstained{color:#8a6d00;font-style:italic}\
.tag{background:#eee;border-radius:4px;padding:0 4px;font-size:.8em}.id{color:#888;font-size:.8em;display:block}\
.cite{font-size:.9em;margin-bottom:4px}svg text{font:12px system-ui,sans-serif;fill:#333}\
.up{color:#1a7f37}.down{color:#c62828;font-weight:600}\
@media (prefers-color-scheme:dark){body{background:#161616;color:#e8e8e8}section{background:#1f1f1f;border-color:#333}\
th{background:#2a2a2a}th,td{border-color:#333}svg text{fill:#ddd}.meta{color:#aaa}}";

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const COLORS: [&str; 6] = [
    "#2f6db5", "#e07b24", "#3a9a5b", "#9c4fb0", "#c23b3b", "#6b6b6b",
];

/// Horizontal bars of values in 0–1, one group per metric and one bar per series.
pub fn grouped_bar_chart(labels: &[String], series: &[(String, Vec<f64>)], title: &str) -> String {
    let bar = 14.0;
    let group = bar * series.len().max(1) as f64 + 10.0;
    let (left, width) = (190.0, 420.0);
    let legend = if series.len() > 1 { 22.0 } else { 0.0 };
    let height = 30.0 + legend + group * labels.len() as f64;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {} {height}\" width=\"100%\" style=\"max-width:720px\">\
         <text x=\"0\" y=\"16\" font-weight=\"600\">{}</text>",
        escape(title),
        left + width + 70.0,
        escape(title)
    );
    for (index, (name, _)) in series.iter().enumerate().filter(|_| series.len() > 1) {
        let x = index as f64 * 160.0;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"26\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"37\">{}</text>",
            COLORS[index % COLORS.len()],
            x + 16.0,
            escape(name)
        );
    }
    for (row, label) in labels.iter().enumerate() {
        let top = 30.0 + legend + row as f64 * group;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            top + group / 2.0,
            escape(label)
        );
        for (index, (_, values)) in series.iter().enumerate() {
            let value = values.get(row).copied().unwrap_or(0.0);
            let clamped = value.clamp(0.0, 1.0);
            let y = top + index as f64 * bar;
            let _ = write!(
                svg,
                "<rect x=\"{left}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{value:.3}</text>",
                (clamped * width).max(1.0),
                bar - 2.0,
                COLORS[index % COLORS.len()],
                left + clamped * width + 4.0,
                y + bar - 4.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn bar_chart(values: &[(String, f64)], title: &str) -> String {
    let labels: Vec<String> = values.iter().map(|(label, _)| label.clone()).collect();
    let series = vec![(String::new(), values.iter().map(|(_, v)| *v).collect())];
    grouped_bar_chart(&labels, &series, title)
}

/// A histogram of `values` in ten bins.
pub fn histogram(values: &[f64], title: &str) -> String {
    let bins = 10;
    let (low, high) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let mut counts = vec![0usize; bins];
    if !values.is_empty() {
        let span = (high - low).max(1e-9);
        for &value in values {
            let bin = (((value - low) / span) * bins as f64) as usize;
            counts[bin.min(bins - 1)] += 1;
        }
    }
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    let (left, width, plot) = (40.0, 60.0, 160.0);
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {} {}\" width=\"100%\" style=\"max-width:720px\">\
         <text x=\"0\" y=\"16\" font-weight=\"600\">{}</text>",
        escape(title),
        left + width * bins as f64 + 20.0,
        plot + 70.0,
        escape(title)
    );
    let step = if values.is_empty() {
        0.0
    } else {
        (high - low) / bins as f64
    };
    for (index, &count) in counts.iter().enumerate() {
        let bar = plot * count as f64 / most as f64;
        let x = left + index as f64 * width;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bar}\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{count}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.0}</text>",
            x + 2.0,
            30.0 + plot - bar,
            width - 4.0,
            COLORS[0],
            x + width / 2.0,
            26.0 + plot - bar,
            x + width / 2.0,
            plot + 48.0,
            low + step * (index as f64 + 0.5)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(id: &str, answerable: bool, abstained: bool) -> QuestionRecord {
        QuestionRecord {
            id: id.into(),
            question: format!("question <{id}>?"),
            answerable,
            gold_answers: if answerable {
                vec!["gold".into()]
            } else {
                Vec::new()
            },
            answer: if abstained {
                "NOT FOUND".into()
            } else {
                "an answer [1]".into()
            },
            abstained,
            abstain_reason: None,
            relevance: Some(0.6),
            rouge: answerable.then_some(Rouge {
                rouge1: 0.5,
                rouge2: 0.25,
                rouge_l: 0.5,
            }),
            token_f1: answerable.then_some(0.5),
            exact_match: answerable.then_some(false),
            fact_right: answerable.then_some(id != "b"),
            faithfulness: (!abstained).then_some(if id == "b" { 0.5 } else { 1.0 }),
            citations: if abstained {
                Vec::new()
            } else {
                vec![CitationRecord {
                    text: "an answer".into(),
                    passages: vec![CitedPassage {
                        number: 1,
                        doc_id: "d1".into(),
                        title: Some("Doc & co".into()),
                        support: 0.8,
                        supported: id != "b",
                    }],
                    kind: "cited".into(),
                }]
            },
            sentences: usize::from(!abstained),
            extractive: false,
            unverified_sentences: 0,
            facts_checked: 1,
            unsupported_facts: Vec::new(),
            gold_recall: answerable.then_some(1.0),
            first_token_ms: 100.0,
            first_shown_ms: 150.0,
            total_ms: 300.0,
            generation_ms: 200.0,
            prompt_tokens: 400,
            completion_tokens: 20,
        }
    }

    pub(crate) fn run() -> RunInfo {
        RunInfo {
            knowledge_base: "kb".into(),
            datasets: vec!["data.jsonl".into()],
            template_version: "basalt-rag-1".into(),
            generation_model: "smollm2".into(),
            max_tokens: 64,
            passages: None,
            min_relevance: None,
            support_threshold: 0.5,
            started: "2026-11-30T00:00:00Z".into(),
        }
    }

    #[test]
    fn aggregates_rates_and_means_over_the_right_questions() {
        let mut records = vec![
            record("a", true, false),
            record("b", true, false),
            record("c", true, true),
            record("d", false, true),
            record("e", false, false),
        ];
        records[1].extractive = true;
        records[0].unverified_sentences = 5;
        let report = AnswerReport::new(run(), records, 12.5);
        let value = |name: &str| report.value(name).expect(name);
        assert!((value("answer_rate") - 2.0 / 3.0).abs() < 1e-12);
        assert!((value("abstention_rate") - 0.5).abs() < 1e-12);
        // Faithfulness over the three answers: 1, 0.5, 1.
        assert!((value("faithfulness") - 2.5 / 3.0).abs() < 1e-12);
        // "b" (0.5) is the extractive one: the model wrote "a" and "e" (1 each).
        assert_eq!(value("faithfulness_model_written"), 1.0);
        assert_eq!(value("faithfulness_extractive"), 0.5);
        assert!((value("extractive_rate") - 1.0 / 3.0).abs() < 1e-12);
        assert!((value("unverified_sentences_mean") - 1.0).abs() < 1e-12);
        assert!((value("citation_precision") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(report.metrics["rouge1"].count, 3);
        assert_eq!(value("bleu"), 12.5);
        assert_eq!(value("tokens_per_second"), 100.0);
        assert!(report.metrics["answer_rate"].standard_error > 0.0);
    }

    #[test]
    fn renders_markdown_and_self_contained_escaped_html() {
        let report = AnswerReport::new(
            run(),
            vec![record("a", true, false), record("b", true, false)],
            10.0,
        );
        let html = report.html();
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<svg") && html.contains("question &lt;a&gt;?"));
        assert!(html.contains("Doc &amp; co"));
        assert!(
            !html.contains("<script") && !html.contains("http://") && !html.contains("https://")
        );
        let markdown = report.markdown();
        assert!(markdown.contains("| faithfulness |"));
        assert!(markdown.contains("**no**"), "b is not faithful");
        let json = serde_json::to_string(&report).expect("json");
        let back: AnswerReport = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, report);
    }
}
