//! Conversations: sessions that remember earlier turns for a while, and follow-up questions
//! rewritten to stand alone before retrieval.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::prompt::HistoryTurn;
use crate::text::content_words;

/// Words that make a question lean on the one before it.
const FOLLOW_UP_WORDS: &[&str] = &[
    "it", "its", "they", "them", "their", "that", "this", "those", "these", "he", "she", "his",
    "her", "him", "there", "then", "same",
];
const FOLLOW_UP_OPENINGS: &[&str] = &[
    "and ",
    "what about",
    "how about",
    "also",
    "but ",
    "or ",
    "why",
    "so ",
    "then ",
];

/// The query to retrieve with: `question` itself, or — when it reads as a follow-up (opens
/// with "and", "what about", …, uses a pronoun, or has fewer than three content words) — the
/// previous turn's question followed by it, so "and in 2019?" after "How many vacation days in
/// 2018?" searches for both. Deterministic and instant; small local models rewrite badly.
pub fn standalone_query(question: &str, history: &[HistoryTurn]) -> String {
    let Some(previous) = history.last() else {
        return question.trim().to_owned();
    };
    let lower = question.trim().to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    let follow_up = FOLLOW_UP_OPENINGS
        .iter()
        .any(|opening| lower.starts_with(opening))
        || words.iter().any(|word| FOLLOW_UP_WORDS.contains(word))
        || content_words(question).len() < 3;
    if follow_up {
        let earlier = standalone_query(&previous.question, &history[..history.len() - 1]);
        format!("{earlier} {}", question.trim())
    } else {
        question.trim().to_owned()
    }
}

/// One question and answer of a session.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Turn {
    pub question: String,
    pub answer: String,
    pub query: String,
    pub abstained: bool,
    /// The answer's citations, with the passages they cite, so a resumed conversation shows
    /// them again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<crate::Citation>,
    /// The full prompt, kept only when the store retains prompts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

impl Turn {
    /// The turn `answer` makes of `question` (its prompt is dropped on recording unless the
    /// store retains prompts).
    pub fn new(question: &str, answer: &crate::Answer) -> Self {
        Turn {
            question: question.to_owned(),
            answer: answer.answer.clone(),
            query: answer.query.clone(),
            abstained: answer.abstained,
            citations: answer.citations.clone(),
            prompt: Some(answer.prompt_text.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Session {
    pub id: String,
    pub kb: String,
    /// Who started it: only they may read or continue it.
    pub owner: String,
    /// When it started, in seconds since the Unix epoch.
    pub started: u64,
    pub turns: Vec<Turn>,
    #[serde(skip)]
    last_used: Option<Instant>,
}

impl Session {
    /// The turns the model sees again: the last few, as question/answer pairs.
    pub fn history(&self) -> Vec<HistoryTurn> {
        self.turns
            .iter()
            .rev()
            .take(HISTORY_TURNS)
            .rev()
            .map(|turn| HistoryTurn {
                question: turn.question.clone(),
                answer: turn.answer.clone(),
            })
            .collect()
    }
}

/// Turns given back to the model (older ones are kept in the session but not sent).
pub const HISTORY_TURNS: usize = 3;

/// How sessions are kept.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// A session unused this long is forgotten.
    pub ttl: Duration,
    /// Keep each turn's full prompt (off by default: prompts hold document text).
    pub retain_prompts: bool,
    /// Most sessions at once; the least recently used goes first.
    pub max_sessions: usize,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            ttl: Duration::from_secs(30 * 60),
            retain_prompts: false,
            max_sessions: 10_000,
        }
    }
}

/// Sessions in memory: nothing of a conversation is written to disk.
#[derive(Debug, Default)]
pub struct SessionStore {
    policy: SessionPolicy,
    sessions: Mutex<HashMap<String, Session>>,
}

impl SessionStore {
    pub fn new(policy: SessionPolicy) -> Self {
        SessionStore {
            policy,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session over `kb` for `owner`; its id is 128 random bits, hex.
    pub fn create(&self, kb: &str, owner: &str) -> Session {
        let mut sessions = self.lock();
        self.expire(&mut sessions);
        if sessions.len() >= self.policy.max_sessions.max(1)
            && let Some(oldest) = sessions
                .values()
                .min_by_key(|session| session.last_used)
                .map(|session| session.id.clone())
        {
            sessions.remove(&oldest);
        }
        let session = Session {
            id: basalt_core::id::new_id("", 16),
            kb: kb.to_owned(),
            owner: owner.to_owned(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
            turns: Vec::new(),
            last_used: Some(Instant::now()),
        };
        sessions.insert(session.id.clone(), session.clone());
        session
    }

    /// A live session (touching it), or `None` when unknown or expired.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.lock();
        self.expire(&mut sessions);
        let session = sessions.get_mut(id)?;
        session.last_used = Some(Instant::now());
        Some(session.clone())
    }

    /// Records a turn; `prompt` is dropped unless the policy retains prompts.
    pub fn record(&self, id: &str, mut turn: Turn) -> bool {
        if !self.policy.retain_prompts {
            turn.prompt = None;
        }
        let mut sessions = self.lock();
        match sessions.get_mut(id) {
            Some(session) => {
                session.turns.push(turn);
                session.last_used = Some(Instant::now());
                true
            }
            None => false,
        }
    }

    /// `owner`'s live sessions, most recently used first (not touching them), as overviews
    /// built under the lock: a list never copies the turns and their cited passages.
    pub fn list(&self, owner: &str) -> Vec<SessionOverview> {
        let mut sessions = self.lock();
        self.expire(&mut sessions);
        let mut owned: Vec<&Session> = sessions
            .values()
            .filter(|session| session.owner == owner)
            .collect();
        owned.sort_by_key(|session| std::cmp::Reverse(session.last_used));
        owned
            .into_iter()
            .map(|session| SessionOverview {
                id: session.id.clone(),
                kb: session.kb.clone(),
                started: session.started,
                turns: session.turns.len(),
                title: session
                    .turns
                    .first()
                    .map(|turn| turn.question.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    pub fn delete(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    fn expire(&self, sessions: &mut HashMap<String, Session>) {
        let ttl = self.policy.ttl;
        sessions.retain(|_, session| session.last_used.is_some_and(|used| used.elapsed() < ttl));
    }
}

/// What a list of conversations shows of one: enough to pick it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOverview {
    pub id: String,
    pub kb: String,
    /// Seconds since the Unix epoch.
    pub started: u64,
    /// Turns so far.
    pub turns: usize,
    /// Its first question (empty before the first turn).
    pub title: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(question: &str) -> HistoryTurn {
        HistoryTurn {
            question: question.into(),
            answer: "an answer".into(),
        }
    }

    #[test]
    fn follow_ups_carry_the_earlier_question() {
        let history = [turn("How many vacation days did employees get in 2018?")];
        assert_eq!(
            standalone_query("and what about 2019?", &history),
            "How many vacation days did employees get in 2018? and what about 2019?"
        );
        assert_eq!(
            standalone_query("Who approves travel expenses abroad?", &history),
            "Who approves travel expenses abroad?"
        );
        assert_eq!(
            standalone_query("Is it paid?", &history),
            "How many vacation days did employees get in 2018? Is it paid?"
        );
        assert_eq!(
            standalone_query(" Who founded it? ", &[]),
            "Who founded it?"
        );
        let chain = [turn("What is granite made of?"), turn("and basalt?")];
        assert_eq!(
            standalone_query("why?", &chain),
            "What is granite made of? and basalt? why?"
        );
    }

    #[test]
    fn sessions_expire_forget_prompts_and_stay_bounded() {
        let store = SessionStore::new(SessionPolicy {
            ttl: Duration::from_millis(200),
            retain_prompts: false,
            max_sessions: 2,
        });
        let session = store.create("kb", "alice");
        assert_eq!(session.id.len(), 32);
        let other = store.create("kb", "bob");
        assert_eq!(store.list("bob").len(), 1, "only bob's own");
        assert_eq!(store.list("bob")[0].id, other.id);
        assert_eq!(store.list("bob")[0].title, "", "no turn yet");
        assert!(store.delete(&other.id));
        assert!(store.record(
            &session.id,
            Turn {
                question: "q".into(),
                answer: "a".into(),
                query: "q".into(),
                abstained: false,
                citations: Vec::new(),
                prompt: Some("secret document text".into()),
            }
        ));
        let kept = store.get(&session.id).expect("live");
        assert_eq!(kept.turns[0].prompt, None);
        let listed = store.list("alice");
        assert_eq!((listed[0].turns, listed[0].title.as_str()), (1, "q"));
        assert_eq!(kept.history().len(), 1);
        let second = store.create("kb", "alice");
        let third = store.create("kb", "alice");
        assert_ne!(second.id, third.id);
        assert!(store.get(&session.id).is_none(), "the oldest went first");
        std::thread::sleep(Duration::from_millis(250));
        assert!(store.get(&third.id).is_none(), "expired");
        assert!(!store.record(&third.id, kept.turns[0].clone()));
    }
}
