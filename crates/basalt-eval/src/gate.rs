//! The CI gate (`--fail-under METRIC=VALUE`, `--fail-over METRIC=VALUE`) and the comparison of
//! runs (`basalt eval compare`), which flags changes beyond the noise of the sample.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{AnswerReport, Direction, METRICS, escape, grouped_bar_chart, page};

/// One `METRIC=VALUE` bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub metric: String,
    pub value: f64,
}

/// Parses `METRIC=VALUE` (for clap's `value_parser`).
pub fn parse_bound(text: &str) -> Result<Bound, String> {
    let (metric, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected METRIC=VALUE, as in faithfulness=0.8"))?;
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {value:?} is not a number"))?;
    if metric.trim().is_empty() || !value.is_finite() {
        return Err(format!("{text:?}: expected METRIC=VALUE"));
    }
    Ok(Bound {
        metric: metric.trim().to_owned(),
        value,
    })
}

/// The bounds a run breaks, each as a sentence naming the metric; an unknown metric is an
/// error that lists the known ones.
pub fn check(
    metrics: &BTreeMap<String, f64>,
    under: &[Bound],
    over: &[Bound],
) -> Result<Vec<String>, String> {
    let mut failures = Vec::new();
    for (bounds, below) in [(under, true), (over, false)] {
        for bound in bounds {
            let Some(&value) = metrics.get(&bound.metric) else {
                let known: Vec<&str> = metrics.keys().map(String::as_str).collect();
                return Err(format!(
                    "unknown metric {:?} in a gate; the metrics of this evaluation are: {}",
                    bound.metric,
                    known.join(", ")
                ));
            };
            if below && value < bound.value {
                failures.push(format!(
                    "{} is {value:.4}, under the required {}",
                    bound.metric, bound.value
                ));
            }
            if !below && value > bound.value {
                failures.push(format!(
                    "{} is {value:.4}, over the allowed {}",
                    bound.metric, bound.value
                ));
            }
        }
    }
    Ok(failures)
}

/// How a metric moved from the first run to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Better,
    Same,
    Worse,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComparedMetric {
    pub metric: String,
    pub values: Vec<f64>,
    /// Each run minus the first.
    pub deltas: Vec<f64>,
    /// The change that counts as beyond noise, per run.
    pub noise: Vec<f64>,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub runs: Vec<String>,
    pub metrics: Vec<ComparedMetric>,
    /// `metric (run)` for every change for the worse beyond noise.
    pub regressions: Vec<String>,
}

/// The change beyond which a difference is not noise: two standard errors of the difference
/// for means and rates; for single values (corpus BLEU, percentiles, throughput), a fixed
/// margin — 2 BLEU points, or a quarter of the first run's value for times and speeds, which
/// vary that much on a shared machine.
fn noise_of(
    name: &str,
    first: &crate::report::MetricValue,
    other: &crate::report::MetricValue,
) -> f64 {
    if first.standard_error > 0.0 || other.standard_error > 0.0 {
        return 1.96 * (first.standard_error.powi(2) + other.standard_error.powi(2)).sqrt();
    }
    if name == "bleu" {
        2.0
    } else {
        first.value.abs() * 0.25
    }
}

/// Compares runs against the first.
pub fn compare(runs: &[(String, AnswerReport)]) -> Comparison {
    let mut metrics = Vec::new();
    let mut regressions = Vec::new();
    for (name, _) in METRICS {
        let Some(first) = runs
            .first()
            .and_then(|(_, report)| report.metrics.get(*name))
        else {
            continue;
        };
        let mut row = ComparedMetric {
            metric: (*name).to_owned(),
            values: Vec::new(),
            deltas: Vec::new(),
            noise: Vec::new(),
            changes: Vec::new(),
        };
        for (label, report) in runs {
            let Some(metric) = report.metrics.get(*name) else {
                continue;
            };
            let delta = metric.value - first.value;
            let noise = noise_of(name, first, metric);
            let signed = match first.better {
                Direction::Higher => delta,
                Direction::Lower => -delta,
            };
            let change = if signed > noise {
                Change::Better
            } else if signed < -noise {
                Change::Worse
            } else {
                Change::Same
            };
            if change == Change::Worse {
                regressions.push(format!("{name} ({label})"));
            }
            row.values.push(metric.value);
            row.deltas.push(delta);
            row.noise.push(noise);
            row.changes.push(change);
        }
        metrics.push(row);
    }
    Comparison {
        runs: runs.iter().map(|(label, _)| label.clone()).collect(),
        metrics,
        regressions,
    }
}

impl Comparison {
    /// A text table: each run's value, and its change from the first with a mark when it is
    /// beyond noise.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "{:<24}", "metric");
        for (index, run) in self.runs.iter().enumerate() {
            let label = format!("[{}] {}", index + 1, short(run));
            let _ = write!(out, " {label:>28}");
        }
        out.push('\n');
        for row in &self.metrics {
            let _ = write!(out, "{:<24}", row.metric);
            for (index, value) in row.values.iter().enumerate() {
                let cell = if index == 0 {
                    format!("{value:.4}")
                } else {
                    let mark = match row.changes[index] {
                        Change::Better => " better",
                        Change::Worse => " WORSE",
                        Change::Same => "",
                    };
                    format!("{value:.4} ({:+.4}){mark}", row.deltas[index])
                };
                let _ = write!(out, " {cell:>28}");
            }
            out.push('\n');
        }
        if self.regressions.is_empty() {
            out.push_str("no change for the worse beyond noise\n");
        } else {
            let _ = writeln!(out, "worse beyond noise: {}", self.regressions.join(", "));
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("# Evaluation comparison\n\n| metric |");
        for (index, run) in self.runs.iter().enumerate() {
            let _ = write!(out, " [{}] {} |", index + 1, run.replace('|', "\\|"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(self.runs.len()));
        out.push('\n');
        for row in &self.metrics {
            let _ = write!(out, "| {} |", row.metric);
            for (index, value) in row.values.iter().enumerate() {
                let mark = match row.changes[index] {
                    Change::Worse => " **worse**",
                    Change::Better => " better",
                    Change::Same => "",
                };
                if index == 0 {
                    let _ = write!(out, " {value:.4} |");
                } else {
                    let _ = write!(out, " {value:.4} ({:+.4}){mark} |", row.deltas[index]);
                }
            }
            out.push('\n');
        }
        out
    }

    pub fn html(&self) -> String {
        let quality: Vec<&ComparedMetric> = self
            .metrics
            .iter()
            .filter(|row| !row.metric.ends_with("_ms") && !row.metric.contains("tokens"))
            .collect();
        let labels: Vec<String> = quality.iter().map(|row| row.metric.clone()).collect();
        let series: Vec<(String, Vec<f64>)> = self
            .runs
            .iter()
            .enumerate()
            .map(|(index, run)| {
                let values = quality
                    .iter()
                    .map(|row| {
                        let value = row.values.get(index).copied().unwrap_or(0.0);
                        if row.metric == "bleu" {
                            value / 100.0
                        } else {
                            value
                        }
                    })
                    .collect();
                (format!("[{}] {}", index + 1, short(run)), values)
            })
            .collect();
        let mut body = String::from("<h1>Evaluation comparison</h1><section>");
        body.push_str(&grouped_bar_chart(
            &labels,
            &series,
            "Quality metrics by run, 0 to 1 (BLEU / 100)",
        ));
        body.push_str("</section><section><table><thead><tr><th>metric</th>");
        for (index, run) in self.runs.iter().enumerate() {
            let _ = write!(body, "<th>[{}] {}</th>", index + 1, escape(run));
        }
        body.push_str("</tr></thead><tbody>");
        for row in &self.metrics {
            let _ = write!(body, "<tr><td><code>{}</code></td>", escape(&row.metric));
            for (index, value) in row.values.iter().enumerate() {
                let (class, mark) = match row.changes[index] {
                    Change::Worse => ("down", " worse"),
                    Change::Better => ("up", " better"),
                    Change::Same => ("", ""),
                };
                if index == 0 {
                    let _ = write!(body, "<td class=\"num\">{value:.4}</td>");
                } else {
                    let _ = write!(
                        body,
                        "<td class=\"num {class}\">{value:.4} ({:+.4}){mark}</td>",
                        row.deltas[index]
                    );
                }
            }
            body.push_str("</tr>");
        }
        body.push_str("</tbody></table>");
        if self.regressions.is_empty() {
            body.push_str("<p>No change for the worse beyond noise.</p>");
        } else {
            let _ = write!(
                body,
                "<p class=\"down\">Worse beyond noise: {}</p>",
                escape(&self.regressions.join(", "))
            );
        }
        body.push_str("</section>");
        page("Evaluation comparison", &body)
    }
}

fn short(label: &str) -> String {
    let name = std::path::Path::new(label)
        .parent()
        .and_then(|parent| parent.file_name())
        .filter(|_| label.ends_with("report.json"))
        .map_or_else(
            || label.to_owned(),
            |dir| dir.to_string_lossy().into_owned(),
        );
    name.chars().take(18).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{record, run};

    #[test]
    fn bounds_parse_and_fail_with_the_metric_named() {
        assert_eq!(
            parse_bound("faithfulness=0.8"),
            Ok(Bound {
                metric: "faithfulness".into(),
                value: 0.8
            })
        );
        assert!(parse_bound("faithfulness").is_err());
        assert!(parse_bound("faithfulness=high").is_err());
        let metrics: BTreeMap<String, f64> = [
            ("faithfulness".to_owned(), 0.7),
            ("total_p50_ms".to_owned(), 900.0),
        ]
        .into();
        let failures = check(
            &metrics,
            &[parse_bound("faithfulness=0.8").expect("bound")],
            &[parse_bound("total_p50_ms=1000").expect("bound")],
        )
        .expect("known metrics");
        assert_eq!(failures, ["faithfulness is 0.7000, under the required 0.8"]);
        let error =
            check(&metrics, &[parse_bound("rouge=0.1").expect("bound")], &[]).expect_err("unknown");
        assert!(error.contains("faithfulness, total_p50_ms"), "{error}");
    }

    #[test]
    fn comparison_flags_only_changes_beyond_noise() {
        let good: Vec<_> = (0..40)
            .map(|i| record(&format!("q{i}"), true, false))
            .collect();
        let mut worse = good.clone();
        for record in worse.iter_mut().take(20) {
            record.abstained = true;
            record.faithfulness = None;
            record.citations.clear();
        }
        let mut nearly = good.clone();
        nearly[0].abstained = true;
        let runs = vec![
            ("a".to_owned(), AnswerReport::new(run(), good, 20.0)),
            ("b".to_owned(), AnswerReport::new(run(), worse, 19.0)),
            ("c".to_owned(), AnswerReport::new(run(), nearly, 20.5)),
        ];
        let comparison = compare(&runs);
        let answer_rate = comparison
            .metrics
            .iter()
            .find(|row| row.metric == "answer_rate")
            .expect("answer rate");
        assert_eq!(
            answer_rate.changes,
            [Change::Same, Change::Worse, Change::Same]
        );
        assert!(
            comparison
                .regressions
                .contains(&"answer_rate (b)".to_owned())
        );
        assert!(!comparison.regressions.iter().any(|r| r.ends_with("(c)")));
        assert!(comparison.table().contains("WORSE"));
        assert!(comparison.html().contains("<svg"));
    }
}
