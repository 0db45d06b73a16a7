//! A guarded turn, as every caller runs it (the OpenAI-compatible and native routes, the CLI):
//! what it shows while it streams and what it answers, with no guardrail, one that anonymizes,
//! one that blocks a word in the question or in the answer, and one that withholds ungrounded
//! answers. Engine doubles: a bag-of-words embedder and a generator that says what it is told.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use basalt_answer::{
    AnswerOptions, Ask, Engines, Finish, GuardAction, GuardedTurn, HistoryTurn, Reply, TurnEvent,
};
use basalt_guard::testing::BagOfWords;
use basalt_guard::{Guardrail, GuardrailConfig, Source};
use basalt_kb::{AnswerStyle, DataDir, IngestOptions, KbSettings, KnowledgeBase};
use basalt_model::testing::Scripted;
use basalt_model::{ChatMessage, ChatRole, SamplingOptions};

const POLICY: &str = "Refunds are paid to the card used for the purchase within five days. \
                      Questions about refunds go to desk@example.com by email. \
                      Refunds for Project Falcon are paid by the finance team.";

struct Fixture {
    _dir: tempfile::TempDir,
    kb: Arc<KnowledgeBase>,
    embedder: BagOfWords,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).expect("docs");
    std::fs::write(docs.join("refunds.md"), format!("# Refunds\n\n{POLICY}\n")).expect("doc");
    let data = DataDir::new(dir.path().join("data"));
    let mut settings = KbSettings::new("support");
    settings.embedding.model = "bag-of-words".into();
    settings.embedding.dimension = 128;
    data.create(&settings).expect("creates");
    let kb = data.open("support").expect("opens");
    let embedder = BagOfWords::default();
    basalt_kb::ingest(
        &kb,
        &embedder,
        &[docs],
        &IngestOptions::default(),
        &mut |_| {},
    )
    .expect("ingests");
    Fixture {
        _dir: dir,
        kb: Arc::new(kb),
        embedder,
    }
}

fn guardrail(json: &str) -> Option<Arc<Guardrail>> {
    let config = GuardrailConfig::from_json(json).expect("config");
    Some(Arc::new(Guardrail::new(config).expect("guardrail")))
}

/// Runs a question on the fixture's knowledge base with a generator that says `reply` (the
/// model writes the answer), counting the generations it starts.
fn ask(
    fixture: &Fixture,
    question: &str,
    reply: &str,
    guard: Option<Arc<Guardrail>>,
) -> (Vec<TurnEvent>, Reply, usize) {
    ask_in_style(fixture, question, reply, guard, AnswerStyle::Generative)
}

fn ask_in_style(
    fixture: &Fixture,
    question: &str,
    reply: &str,
    guard: Option<Arc<Guardrail>>,
    style: AnswerStyle,
) -> (Vec<TurnEvent>, Reply, usize) {
    ask_after(fixture, &[], question, reply, guard, style)
}

fn ask_after(
    fixture: &Fixture,
    history: &[HistoryTurn],
    question: &str,
    reply: &str,
    guard: Option<Arc<Guardrail>>,
    style: AnswerStyle,
) -> (Vec<TurnEvent>, Reply, usize) {
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let said = reply.to_owned();
    let generator = Scripted::new(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        said.clone()
    })
    .with_context_window(4096);
    let ask = Ask::Kb {
        kb: fixture.kb.clone(),
        question: question.into(),
        history: history.to_vec(),
        options: Box::new(AnswerOptions {
            min_relevance: Some(-1.0),
            style: Some(style),
            ..AnswerOptions::default()
        }),
    };
    let engines = Engines {
        embedder: &fixture.embedder,
        generator: &generator,
    };
    let mut events = Vec::new();
    let cancel = Arc::new(AtomicBool::new(false));
    let reply = GuardedTurn::new(ask, guard)
        .run(engines, &cancel, &mut |event| events.push(event))
        .expect("runs");
    (events, reply, started.load(Ordering::Relaxed))
}

/// The text events, and their text put together as a reader of the stream sees it.
fn shown(events: &[TurnEvent]) -> String {
    let mut text = String::new();
    for event in events {
        match event {
            TurnEvent::Sources(_) => {}
            TurnEvent::Delta(delta) => text.push_str(delta),
            TurnEvent::Blocked(whole) => whole.clone_into(&mut text),
        }
    }
    text
}

const ANSWER: &str = "Refunds are paid to the card used for the purchase within five days [1].";

#[test]
fn without_a_guardrail_the_stream_is_the_answer() {
    let fixture = fixture();
    let (events, reply, generations) = ask(&fixture, "Where are refunds paid?", ANSWER, None);
    assert_eq!(generations, 1);
    assert!(
        matches!(&events[0], TurnEvent::Sources(sources) if !sources.is_empty()),
        "{events:?}"
    );
    assert_eq!(shown(&events), reply.answer.answer);
    assert!(reply.answer.answer.contains("five days"), "{reply:?}");
    assert_eq!(reply.finish, Finish::Stop);
    assert!(reply.blocked.is_none() && reply.guard.is_none());
    assert!(!reply.answer.citations.is_empty());
}

#[test]
fn an_extractive_answer_quotes_the_passage_and_runs_no_model() {
    let fixture = fixture();
    let (events, reply, generations) = ask_in_style(
        &fixture,
        "Which card are refunds paid to?",
        "The model is never asked [1].",
        None,
        AnswerStyle::Extractive,
    );
    assert_eq!(generations, 0);
    assert_eq!(shown(&events), reply.answer.answer);
    assert!(reply.answer.extractive, "{reply:?}");
    assert!(
        reply
            .answer
            .answer
            .starts_with("Refunds are paid to the card used for the purchase within five days."),
        "{reply:?}"
    );
    assert_eq!(reply.answer.citations.len(), 1);
    assert_eq!(reply.answer.usage.completion_tokens, 0);
    // The default style is extractive.
    assert_eq!(AnswerStyle::default(), AnswerStyle::Extractive);
}

#[test]
fn what_the_guardrail_anonymizes_never_shows_in_sources_stream_or_answer() {
    let fixture = fixture();
    let guard = guardrail(
        r#"{"sensitive_information": {"entities": [{"type": "EMAIL", "output": "anonymize"}]}}"#,
    );
    let said = "Questions about refunds go to desk@example.com by email [1].";
    let (events, reply, _) = ask(
        &fixture,
        "Who answers questions about refunds?",
        said,
        guard,
    );
    let TurnEvent::Sources(sources) = &events[0] else {
        panic!("sources first: {events:?}");
    };
    assert!(sources.iter().all(|source| !source.text.contains("desk@")));
    assert!(sources.iter().any(|source| source.text.contains("{EMAIL}")));
    let streamed = shown(&events);
    assert!(
        !streamed.contains("desk@") && streamed.contains("{EMAIL}"),
        "{streamed}"
    );
    assert_eq!(streamed, reply.answer.answer);
    assert!(
        reply
            .answer
            .sources
            .iter()
            .all(|s| !s.text.contains("desk@"))
    );
    let report = reply.guard.expect("report");
    assert_eq!(report.action, GuardAction::Intervened);
    assert!(report.output.iter().any(|finding| finding.name == "EMAIL"));
    assert!(reply.blocked.is_none());
}

#[test]
fn a_blocked_question_runs_no_model_and_a_blocked_answer_stops_the_stream() {
    let fixture = fixture();
    let words = r#"{"word_filters": {"words": ["project falcon"]}}"#;
    // The question: blocked before retrieval and generation.
    let (events, reply, generations) = ask(
        &fixture,
        "Is project falcon refunded?",
        ANSWER,
        guardrail(words),
    );
    assert_eq!(generations, 0);
    assert!(
        matches!(events.as_slice(), [TurnEvent::Blocked(_)]),
        "{events:?}"
    );
    assert_eq!(reply.blocked, Some(Source::Input));
    assert_eq!(reply.finish, Finish::Blocked);
    assert_eq!(shown(&events), reply.answer.answer);
    assert!(reply.answer.sources.is_empty());

    // The answer: the stream ends with the guardrail's message, nothing after it.
    let said = "Refunds are paid to the card used for the purchase [1]. Refunds for Project \
                Falcon are paid by the finance team [1].";
    let (events, reply, _) = ask(&fixture, "Where are refunds paid?", said, guardrail(words));
    assert!(
        matches!(events.last(), Some(TurnEvent::Blocked(_))),
        "{events:?}"
    );
    assert_eq!(reply.blocked, Some(Source::Output));
    assert_eq!(reply.finish, Finish::Blocked);
    let shown = shown(&events);
    assert!(!shown.to_lowercase().contains("falcon"), "{shown}");
    assert_eq!(shown, reply.answer.answer);
    assert!(reply.answer.citations.is_empty() && reply.answer.sources.is_empty());
    let report = reply.guard.expect("report");
    assert!(
        report
            .output
            .iter()
            .any(|finding| finding.policy == "word_filters")
    );
}

#[test]
fn an_answer_that_must_be_grounded_shows_nothing_before_its_check() {
    let fixture = fixture();
    for (action, blocked) in [("block", true), ("flag", false)] {
        let guard = guardrail(&format!(
            r#"{{"contextual_grounding": {{"grounding_threshold": 0.99, "relevance_threshold": 0.99, "action": "{action}"}}}}"#
        ));
        let (events, reply, _) = ask(&fixture, "Where are refunds paid?", ANSWER, guard);
        let texts: Vec<&TurnEvent> = events
            .iter()
            .filter(|event| !matches!(event, TurnEvent::Sources(_)))
            .collect();
        let report = reply.guard.clone().expect("report");
        assert!(report.grounding.is_some(), "{report:?}");
        if blocked {
            assert_eq!(texts.len(), 1, "only the verdict: {events:?}");
            assert!(matches!(texts[0], TurnEvent::Blocked(_)));
            assert_eq!(reply.blocked, Some(Source::Output));
            assert_eq!(report.action, GuardAction::Intervened);
        } else {
            assert_eq!(report.action, GuardAction::Flagged);
            assert!(reply.blocked.is_none());
            assert_eq!(shown(&events), reply.answer.answer);
        }
    }
}

#[test]
fn a_plain_chat_streams_through_the_same_guard() {
    let generator = Scripted::saying("Write to ana@example.com today. It helps.");
    let embedder = BagOfWords::default();
    let engines = Engines {
        embedder: &embedder,
        generator: &generator,
    };
    let chat = |max_tokens: Option<usize>, guard: Option<Arc<Guardrail>>| {
        let ask = Ask::Chat {
            messages: vec![ChatMessage::new(ChatRole::User, "Whom do I write to?")],
            sampling: SamplingOptions::default(),
            max_tokens,
        };
        let mut events = Vec::new();
        let cancel = Arc::new(AtomicBool::new(false));
        let reply = GuardedTurn::new(ask, guard)
            .run(engines, &cancel, &mut |event| events.push(event))
            .expect("runs");
        (events, reply)
    };
    let guard = || {
        guardrail(
            r#"{"sensitive_information": {"entities": [{"type": "EMAIL", "output": "anonymize"}]}}"#,
        )
    };
    let (events, reply) = chat(None, guard());
    assert_eq!(shown(&events), "Write to {EMAIL} today. It helps. ");
    assert_eq!(reply.answer.answer, shown(&events));
    assert_eq!(reply.finish, Finish::Stop);
    assert_eq!(reply.answer.usage.completion_tokens, 6);
    assert!(reply.answer.citations.is_empty() && reply.answer.sources.is_empty());

    let (events, reply) = chat(Some(2), None);
    assert_eq!(shown(&events), "Write to ");
    assert_eq!(reply.finish, Finish::Length);

    let words = guardrail(r#"{"word_filters": {"words": ["helps"]}}"#);
    let (events, reply) = chat(None, words);
    assert!(
        matches!(events.last(), Some(TurnEvent::Blocked(_))),
        "{events:?}"
    );
    assert_eq!(reply.finish, Finish::Blocked);
    assert!(!shown(&events).contains("helps"));
}

#[test]
fn a_generated_sentence_the_passages_do_not_support_is_never_shown() {
    let fixture = fixture();
    let said = "Refunds are paid to the card used for the purchase within five days [1]. \
                The CEO owns three yachts. Refunds take 30 days [1].";
    let (events, reply, _) = ask(&fixture, "Where are refunds paid?", said, None);
    let streamed = shown(&events);
    assert_eq!(
        streamed,
        "Refunds are paid to the card used for the purchase within five days [1]."
    );
    assert_eq!(streamed, reply.answer.answer);
    assert_eq!(reply.answer.unverified_sentences, 2, "{reply:?}");
    assert!(!reply.answer.extractive);

    // Nothing holds up: the passage sentence is the answer, and the only text shown.
    let (events, reply, _) = ask(
        &fixture,
        "To which card are refunds paid?",
        "The CEO owns three yachts.",
        None,
    );
    let texts: Vec<&TurnEvent> = events
        .iter()
        .filter(|event| !matches!(event, TurnEvent::Sources(_)))
        .collect();
    assert_eq!(texts.len(), 1, "{events:?}");
    assert!(reply.answer.extractive, "{reply:?}");
    assert_eq!(shown(&events), reply.answer.answer);
    assert!(
        reply.answer.answer.starts_with("Refunds are paid"),
        "{}",
        reply.answer.answer
    );
    assert!(reply.answer.timings.first_shown_ms >= reply.answer.timings.first_token_ms);
}

/// A follow-up asks what its own words ask: after "How many days until a refund is paid?",
/// "And who handles them for Project Falcon?" is retrieved with the earlier question but asks
/// for no number, so the sentence that names the team answers it.
#[test]
fn a_follow_up_is_not_held_to_the_quantity_the_earlier_question_asked_for() {
    let fixture = fixture();
    let earlier = "How many days until a refund is paid?";
    let (_, first, _) = ask_in_style(&fixture, earlier, "", None, AnswerStyle::Extractive);
    assert!(first.answer.answer.contains("five days"), "{first:?}");
    let history = [HistoryTurn {
        question: earlier.into(),
        answer: first.answer.answer.clone(),
    }];
    let question = "And who handles them for Project Falcon?";
    let (_, reply, _) = ask_after(
        &fixture,
        &history,
        question,
        "",
        None,
        AnswerStyle::Extractive,
    );
    assert!(reply.answer.answer.contains("finance team"), "{reply:?}");
}
