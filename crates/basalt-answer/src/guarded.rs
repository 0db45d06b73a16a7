//! A finished answer checked by a guardrail as output: its text, and the passage text of its
//! sources and citations, which the user sees too.

use std::collections::HashSet;

use basalt_guard::config::{Action, Assessment, GroundingAction};
use basalt_guard::{Checked, Guardrail, Outcome, Source};
use basalt_model::Embedder;

use crate::error::Result;
use crate::grounding::{GroundingReport, score_grounding};
use crate::pipeline::Answer;

/// What checking an answer did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnswerCheck {
    /// The answer was withheld: its text is now the guardrail's message, without citations or
    /// sources.
    pub blocked: bool,
    /// Something was anonymized.
    pub anonymized: bool,
    /// The grounding check found the answer short of its thresholds (blocked or flagged).
    pub ungrounded: bool,
    /// The grounding scores, when the guardrail has a grounding policy and the answer is not
    /// "not found".
    pub grounding: Option<GroundingReport>,
    /// Every finding (byte offsets into the text each was found in), each passage once.
    pub assessments: Vec<Assessment>,
}

/// [`check_answer`], preceded by the guardrail's contextual grounding check (scored on the
/// answer as generated, against the passages it was given).
pub fn check_answer_grounded(
    guardrail: &Guardrail,
    embedder: &dyn Embedder,
    question: &str,
    answer: &mut Answer,
) -> Result<AnswerCheck> {
    let mut grounding = None;
    let mut findings = Vec::new();
    let mut ungrounded = false;
    let mut block = false;
    if let Some(policy) = &guardrail.config().contextual_grounding
        && !answer.abstained
    {
        let report = score_grounding(embedder, question, &answer.answer, &answer.sources)?;
        let action = match policy.action {
            GroundingAction::Block => Action::Block,
            GroundingAction::Flag => Action::None,
        };
        let end = answer.answer.len();
        for (name, score, threshold) in [
            ("grounding", report.grounding, policy.grounding_threshold),
            ("relevance", report.relevance, policy.relevance_threshold),
        ] {
            if score < threshold {
                ungrounded = true;
                findings.push(Assessment {
                    policy: "contextual_grounding",
                    name: name.to_owned(),
                    action,
                    start: 0,
                    end,
                    score: Some(basalt_guard::config::Score { score, threshold }),
                });
            }
        }
        block = ungrounded && policy.action == GroundingAction::Block;
        grounding = Some(report);
    }
    let mut check = check_answer(guardrail, answer);
    if block && !check.blocked {
        answer.answer = guardrail.config().messages.blocked_output.clone();
        answer.citations.clear();
        answer.sources.clear();
        check.blocked = true;
    }
    check.ungrounded = ungrounded;
    check.grounding = grounding;
    findings.append(&mut check.assessments);
    check.assessments = findings;
    Ok(check)
}

/// Checks `answer` as output and rewrites it: entities anonymized in the answer (citation
/// spans moved to match), in its sources and in its citations' references; or, if anything
/// in them is blocked, the whole answer replaced by the blocked message.
pub fn check_answer(guardrail: &Guardrail, answer: &mut Answer) -> AnswerCheck {
    let mut result = AnswerCheck::default();
    let checked = guardrail.check(&answer.answer, Source::Output);
    result
        .assessments
        .extend(checked.assessments.iter().cloned());
    match checked.outcome {
        Outcome::Blocked => result.blocked = true,
        Outcome::Anonymized => {
            result.anonymized = true;
            let original = std::mem::take(&mut answer.answer);
            for citation in &mut answer.citations {
                citation.span.start = char_offset_after(&original, &checked, citation.span.start);
                citation.span.end = char_offset_after(&original, &checked, citation.span.end);
            }
            answer.answer = checked.text;
        }
        Outcome::Passed => {}
    }
    let mut check_passage = |text: &mut String| {
        let checked = guardrail.check(text, Source::Output);
        let original = text.clone();
        match checked.outcome {
            Outcome::Passed => {}
            Outcome::Anonymized => {
                result.anonymized = true;
                text.clone_from(&checked.text);
            }
            Outcome::Blocked => result.blocked = true,
        }
        result
            .assessments
            .extend(checked.assessments.iter().cloned());
        (original, checked)
    };
    for source in &mut answer.sources {
        check_passage(&mut source.text);
    }
    for citation in &mut answer.citations {
        for reference in &mut citation.references {
            let (original, checked) = check_passage(&mut reference.text);
            // The supporting sentence moves with what was anonymized before it.
            for support in citation
                .support
                .iter_mut()
                .filter(|support| support.number == reference.number)
            {
                support.start = char_offset_after(&original, &checked, support.start);
                support.end = char_offset_after(&original, &checked, support.end);
            }
        }
    }
    // The same passage is checked as a source and as a citation's reference: once is enough.
    let mut seen = HashSet::new();
    result
        .assessments
        .retain(|a| seen.insert((a.policy, a.name.clone(), a.start, a.end)));
    if result.blocked {
        answer.answer = guardrail.config().messages.blocked_output.clone();
        answer.citations.clear();
        answer.sources.clear();
    }
    result
}

/// The character offset in the anonymized text of character `offset` of `original`.
fn char_offset_after(original: &str, checked: &Checked, offset: usize) -> usize {
    let byte = original
        .char_indices()
        .nth(offset)
        .map_or(original.len(), |(byte, _)| byte);
    let mapped = checked.map_offset(byte).min(checked.text.len());
    checked.text[..mapped].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::citations::{Citation, CitationKind, Reference, Span, Support};
    use basalt_guard::GuardrailConfig;

    fn guardrail(json: &str) -> Guardrail {
        Guardrail::new(GuardrailConfig::from_json(json).expect("config")).expect("guardrail")
    }

    fn reference(text: &str) -> Reference {
        crate::grounding::tests::source(1, text)
    }

    fn answer() -> Answer {
        // "Écrivez à ana@example.com. Merci [1]." — spans in characters, with an accent before.
        let text = "Écrivez à ana@example.com. Merci [1].";
        let mut answer = Answer::plain(text.into(), "q".into());
        let passage = reference("Support: ana@example.com, card 4716424521511864.");
        answer.sources = vec![passage.clone()];
        answer.citations = vec![
            Citation {
                span: Span { start: 0, end: 26 },
                kind: CitationKind::Cited,
                references: vec![passage.clone()],
                support: Vec::new(),
            },
            Citation {
                span: Span { start: 27, end: 37 },
                kind: CitationKind::Cited,
                references: vec![passage],
                // The whole passage sentence, which the anonymized email shortens.
                support: vec![Support {
                    number: 1,
                    start: 0,
                    end: 49,
                }],
            },
        ];
        answer
    }

    #[test]
    fn anonymizes_text_passages_and_moves_citation_spans() {
        let guard = guardrail(
            r#"{"sensitive_information": {"entities": [
                {"type": "EMAIL", "output": "anonymize"},
                {"type": "CREDIT_CARD", "output": "anonymize"}]}}"#,
        );
        let mut answer = answer();
        let check = check_answer(&guard, &mut answer);
        assert!(check.anonymized && !check.blocked);
        assert_eq!(answer.answer, "Écrivez à {EMAIL}. Merci [1].");
        let span = |index: usize| {
            let span = &answer.citations[index].span;
            answer
                .answer
                .chars()
                .skip(span.start)
                .take(span.end - span.start)
                .collect::<String>()
        };
        assert_eq!(span(0), "Écrivez à {EMAIL}.");
        assert_eq!(span(1), "Merci [1].");
        assert_eq!(
            answer.sources[0].text,
            "Support: {EMAIL}, card {CREDIT_CARD}."
        );
        assert_eq!(
            answer.citations[1].references[0].text,
            answer.sources[0].text
        );
        let support = answer.citations[1].support[0];
        assert_eq!(
            (support.start, support.end),
            (0, answer.sources[0].text.chars().count())
        );
        assert_eq!(check.assessments.len(), 3, "{:?}", check.assessments);
    }

    #[test]
    fn the_grounding_check_blocks_or_flags_an_invented_sentence() {
        use crate::grounding::tests::{embedder, source};
        let invented = || {
            let mut answer = Answer::plain(
                "Employees get 27 days of paid vacation [1]. The CEO owns three yachts.".into(),
                "q".into(),
            );
            answer.sources = vec![source(
                1,
                "Every employee receives 27 days of paid vacation.",
            )];
            answer
        };
        let question = "How many vacation days do employees get?";
        let block = guardrail(r#"{"contextual_grounding": {"grounding_threshold": 0.6}}"#);
        let mut answer = invented();
        let check =
            check_answer_grounded(&block, &embedder(), question, &mut answer).expect("check");
        assert!(check.blocked && check.ungrounded);
        assert!(answer.answer.contains("blocked by a guardrail"));
        assert_eq!(check.assessments[0].policy, "contextual_grounding");
        let report = check.grounding.expect("scores");
        assert!(
            report.grounding < 0.6 && report.sentences[0].support > 0.6,
            "{report:?}"
        );

        let flag = guardrail(
            r#"{"contextual_grounding": {"grounding_threshold": 0.6, "action": "flag"}}"#,
        );
        let mut answer = invented();
        let check =
            check_answer_grounded(&flag, &embedder(), question, &mut answer).expect("check");
        assert!(!check.blocked && check.ungrounded);
        assert!(answer.answer.contains("yachts"));

        // A supported answer passes; a "not found" answer is not scored.
        let mut answer = invented();
        answer.answer = "Employees get 27 days of paid vacation [1].".into();
        let check =
            check_answer_grounded(&block, &embedder(), question, &mut answer).expect("check");
        assert!(!check.blocked && !check.ungrounded);
        let mut answer = invented();
        answer.abstained = true;
        let check =
            check_answer_grounded(&block, &embedder(), question, &mut answer).expect("check");
        assert!(check.grounding.is_none() && !check.blocked);
    }

    #[test]
    fn a_block_in_a_passage_withholds_the_whole_answer() {
        let guard = guardrail(
            r#"{"sensitive_information": {"entities": [{"type": "CREDIT_CARD", "output": "block"}]}}"#,
        );
        let mut answer = answer();
        let check = check_answer(&guard, &mut answer);
        assert!(check.blocked);
        assert!(answer.answer.contains("blocked by a guardrail"));
        assert!(answer.citations.is_empty() && answer.sources.is_empty());
    }
}
