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
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Turn {
    pub question: String,
    pub answer: String,
    pub query: String,
    pub abstained: bool,
    /// The answer's citations, with the passages they cite, so a resumed conversation shows
    /// them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<crate::Citation>,
    /// The full prompt, kept only when the store retains prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// A session as a shared store read it back (used just now).
    pub fn restored(id: String, kb: &str, owner: &str, started: u64, turns: Vec<Turn>) -> Self {
        Session {
            id,
            kb: kb.to_owned(),
            owner: owner.to_owned(),
            started,
            turns,
            last_used: Some(Instant::now()),
        }
    }

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

/// The store of sessions could not be reached (a shared one: a database that is down).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the session store is unavailable: {0}")]
pub struct SessionError(pub String);

/// Where conversation sessions are kept, behind one seam: the embedded [`SessionStore`] keeps
/// them in memory; a shared store (PostgreSQL, for several replicas) implements the same
/// verbs and must pass [`conformance::sessions`].
pub trait Sessions: Send + Sync + std::fmt::Debug {
    fn policy(&self) -> SessionPolicy;

    /// Starts a session over `kb` for `owner`; its id is 128 random bits, hex. When the store
    /// holds `max_sessions`, the least recently used one goes first.
    fn create(&self, kb: &str, owner: &str) -> Result<Session, SessionError>;

    /// A live session (touching it), or `None` when unknown or expired.
    fn get(&self, id: &str) -> Result<Option<Session>, SessionError>;

    /// Records a turn (its prompt dropped unless the policy retains prompts); false when the
    /// session is unknown or expired.
    fn record(&self, id: &str, turn: Turn) -> Result<bool, SessionError>;

    /// `owner`'s live sessions, most recently used first, without touching them.
    fn list(&self, owner: &str) -> Result<Vec<SessionOverview>, SessionError>;

    /// Forgets a session; false when there was none.
    fn delete(&self, id: &str) -> Result<bool, SessionError>;
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn expire(&self, sessions: &mut HashMap<String, Session>) {
        let ttl = self.policy.ttl;
        sessions.retain(|_, session| session.last_used.is_some_and(|used| used.elapsed() < ttl));
    }
}

impl Sessions for SessionStore {
    fn policy(&self) -> SessionPolicy {
        self.policy
    }

    fn create(&self, kb: &str, owner: &str) -> Result<Session, SessionError> {
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
        Ok(session)
    }

    fn get(&self, id: &str) -> Result<Option<Session>, SessionError> {
        let mut sessions = self.lock();
        self.expire(&mut sessions);
        Ok(sessions.get_mut(id).map(|session| {
            session.last_used = Some(Instant::now());
            session.clone()
        }))
    }

    fn record(&self, id: &str, mut turn: Turn) -> Result<bool, SessionError> {
        if !self.policy.retain_prompts {
            turn.prompt = None;
        }
        let mut sessions = self.lock();
        self.expire(&mut sessions);
        Ok(match sessions.get_mut(id) {
            Some(session) => {
                session.turns.push(turn);
                session.last_used = Some(Instant::now());
                true
            }
            None => false,
        })
    }

    /// Overviews built under the lock: a list never copies the turns and their cited passages.
    fn list(&self, owner: &str) -> Result<Vec<SessionOverview>, SessionError> {
        let mut sessions = self.lock();
        self.expire(&mut sessions);
        let mut owned: Vec<&Session> = sessions
            .values()
            .filter(|session| session.owner == owner)
            .collect();
        owned.sort_by_key(|session| std::cmp::Reverse(session.last_used));
        Ok(owned
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
            .collect())
    }

    fn delete(&self, id: &str) -> Result<bool, SessionError> {
        Ok(self.lock().remove(id).is_some())
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
    fn the_in_memory_store_passes_the_conformance_suite() {
        super::conformance::sessions(&|policy| Box::new(SessionStore::new(policy)));
    }
}

/// The behaviour every [`Sessions`] store must have, run against the embedded one here and
/// against any other (a PostgreSQL store) in its own tests.
pub mod conformance {
    use std::time::Duration;

    use super::{SessionPolicy, Sessions, Turn};

    fn turn(question: &str) -> Turn {
        Turn {
            question: question.into(),
            answer: "an answer".into(),
            query: question.into(),
            abstained: false,
            citations: Vec::new(),
            prompt: Some("secret document text".into()),
        }
    }

    /// `make` opens an empty store with the policy given. Takes about half a second (it waits
    /// for sessions to expire).
    pub fn sessions(make: &dyn Fn(SessionPolicy) -> Box<dyn Sessions>) {
        let policy = SessionPolicy {
            ttl: Duration::from_millis(300),
            retain_prompts: false,
            max_sessions: 2,
        };
        let store = make(policy);
        assert_eq!(store.policy().max_sessions, 2);
        let first = store.create("kb", "alice").expect("create");
        assert_eq!(first.id.len(), 32);
        assert!(first.id.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_eq!((first.kb.as_str(), first.owner.as_str()), ("kb", "alice"));
        assert!(first.turns.is_empty());
        let other = store.create("kb", "bob").expect("create");
        assert_ne!(first.id, other.id);

        // Lists are per owner, with no turns yet.
        let listed = store.list("bob").expect("list");
        assert_eq!(listed.len(), 1, "only bob's own");
        assert_eq!(
            (listed[0].id.as_str(), listed[0].title.as_str()),
            (other.id.as_str(), "")
        );
        assert!(store.delete(&other.id).expect("delete"));
        assert!(!store.delete(&other.id).expect("delete again"));
        assert!(store.get(&other.id).expect("get").is_none());

        // Turns are kept without their prompts (the policy does not retain them).
        assert!(store.record(&first.id, turn("q1")).expect("record"));
        assert!(store.record(&first.id, turn("q2")).expect("record"));
        let kept = store.get(&first.id).expect("get").expect("live");
        assert_eq!(kept.turns.len(), 2);
        assert_eq!(kept.turns[0].prompt, None);
        assert_eq!(kept.history().len(), 2);
        let listed = store.list("alice").expect("list");
        assert_eq!((listed[0].turns, listed[0].title.as_str()), (2, "q1"));
        assert!(!store.record("no-such-session", turn("q")).expect("record"));

        // Bounded: the least recently used goes first.
        let second = store.create("kb", "alice").expect("create");
        assert!(
            store.get(&first.id).expect("get").is_some(),
            "touched: now the newest"
        );
        let third = store.create("kb", "alice").expect("create");
        assert!(
            store.get(&second.id).expect("get").is_none(),
            "the least recently used"
        );
        let listed = store.list("alice").expect("list");
        let ids: Vec<&str> = listed.iter().map(|overview| overview.id.as_str()).collect();
        assert_eq!(
            ids,
            [third.id.as_str(), first.id.as_str()],
            "most recently used first"
        );

        // Unused sessions expire, and a turn for one is refused.
        std::thread::sleep(Duration::from_millis(400));
        assert!(store.get(&third.id).expect("get").is_none(), "expired");
        assert!(!store.record(&third.id, turn("late")).expect("record"));
        assert!(store.list("alice").expect("list").is_empty());

        // A store that retains prompts keeps them.
        let keeping = make(SessionPolicy {
            retain_prompts: true,
            ..policy
        });
        let session = keeping.create("kb", "carol").expect("create");
        assert!(keeping.record(&session.id, turn("q")).expect("record"));
        let kept = keeping.get(&session.id).expect("get").expect("live");
        assert_eq!(
            kept.turns[0].prompt.as_deref(),
            Some("secret document text")
        );
    }
}
