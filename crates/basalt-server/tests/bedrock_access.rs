//! Document-level access on Bedrock's routes as a property: in random worlds — principals in
//! random groups, documents with random readers — no Retrieve, RetrieveAndGenerate(Stream) or
//! Converse(Stream) on `kb:NAME` ever shows a caller a word of a document it may not read,
//! with the worst possible model (it says back its whole prompt, passages included), while
//! Retrieve shows every document it may read (so a test that showed nothing would fail).
//!
//! `BASALT_ACL_CASES` sets how many worlds (default 30), `BASALT_ACL_SEED` the first seed; a
//! failure names the seed of its world.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use basalt_guard::testing::BagOfWords;
use basalt_index::DocumentWrite;
use basalt_kb::{AnswerStyle, DataDir, KbSettings};
use basalt_model::Embedder;
use basalt_model::testing::Scripted;
use basalt_security::{Directory, PrincipalKind};
use basalt_server::{AppState, ServerOptions, router};

/// A small deterministic generator (xorshift64*), so a world is reproduced from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const PRINCIPALS: usize = 4;
const GROUPS: usize = 3;

/// A world: each principal's groups, and each document's readers.
struct World {
    groups: Vec<Vec<String>>,
    readers: Vec<Vec<String>>,
}

impl World {
    fn random(rng: &mut Rng) -> Self {
        let groups = (0..PRINCIPALS)
            .map(|_| {
                (0..GROUPS)
                    .filter(|_| rng.chance(40))
                    .map(|group| format!("g{group}"))
                    .collect()
            })
            .collect();
        let documents = 2 + rng.below(6);
        let readers = (0..documents)
            .map(|_| {
                if rng.chance(25) {
                    return Vec::new();
                }
                let mut readers: Vec<String> = (0..1 + rng.below(2))
                    .map(|_| {
                        if rng.chance(50) {
                            format!("principal:p{}", rng.below(PRINCIPALS))
                        } else {
                            format!("group:g{}", rng.below(GROUPS))
                        }
                    })
                    .collect();
                readers.sort();
                readers.dedup();
                readers
            })
            .collect();
        World { groups, readers }
    }

    /// Whether principal `who` may read document `doc`, worked out here and not by Basalt.
    fn may_read(&self, who: usize, doc: usize) -> bool {
        let readers = &self.readers[doc];
        readers.is_empty()
            || readers.contains(&format!("principal:p{who}"))
            || self.groups[who]
                .iter()
                .any(|group| readers.contains(&format!("group:{group}")))
    }
}

/// The word only document `doc` holds.
fn token(doc: usize) -> String {
    format!("zq{}secret", char::from(b'a' + doc as u8))
}

/// Builds `world` in a fresh data directory; returns it and each principal's API key.
fn build(world: &World) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().expect("data dir");
    let mut keys = Vec::new();
    Directory::update(dir.path(), |directory| {
        for (who, groups) in world.groups.iter().enumerate() {
            let name = format!("p{who}");
            directory.upsert_principal(&name, PrincipalKind::User, None, groups)?;
            directory.attach("ReadOnlyAccess", &name, false)?;
            let (_, secret) = directory.create_key(&name, None)?;
            keys.push(secret.expose().to_owned());
        }
        Ok(())
    })
    .expect("keys");
    let data = DataDir::new(dir.path());
    let mut settings = KbSettings::new("policies");
    let embedder = BagOfWords::default();
    settings.embedding.dimension = embedder.info().dimension;
    settings.answer.style = Some(AnswerStyle::Generative);
    settings.answer.min_relevance = Some(-1.0);
    settings.answer.passages = Some(10);
    data.create_with(&settings, false).expect("creates");
    let kb = data.open("policies").expect("opens");
    let writes = world
        .readers
        .iter()
        .enumerate()
        .map(|(doc, readers)| {
            let text = format!("Holiday policy budget rules: {}.", token(doc));
            let vector = embedder.embed_query(&text).expect("embeds");
            let mut write = DocumentWrite::one_chunk(&format!("doc{doc}"), &text, vector);
            write.document.readers = readers.clone();
            write
        })
        .collect();
    kb.write(writes).expect("writes");
    (dir, keys)
}

#[tokio::test]
async fn bedrock_routes_show_no_document_outside_its_readers_in_random_worlds() {
    let worlds: u64 = std::env::var("BASALT_ACL_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    let first: u64 = std::env::var("BASALT_ACL_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0x0B5E_55ED);
    let question = "Holiday policy budget rules";
    let kb_id = basalt_kb::bedrock_id("policies");
    let calls = common::bedrock_kb_calls("policies", &kb_id, question);
    let mut shown_to_readers = 0;
    for world_number in 0..worlds {
        let seed = first.wrapping_add(world_number).max(1);
        let mut rng = Rng(seed);
        let world = World::random(&mut rng);
        let (dir, keys) = build(&world);
        let options = ServerOptions::default();
        let state = AppState::new(
            Arc::new(BagOfWords::default()),
            Arc::new(Scripted::echo()),
            DataDir::new(dir.path()),
            &options,
        )
        .expect("state");
        let app = router(state.clone(), &options);
        for (who, key) in keys.iter().enumerate() {
            for (path, body) in &calls {
                let (status, seen) = common::post_text(&app, path, key, body).await;
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "seed {seed}, p{who}, {path}: {seen}"
                );
                for doc in 0..world.readers.len() {
                    let readable = world.may_read(who, doc);
                    let appears = seen.contains(&token(doc));
                    assert!(
                        readable || !appears,
                        "seed {seed}: p{who} (groups {:?}) saw doc{doc} (readers {:?}) through \
                         {path}: {seen}",
                        world.groups[who],
                        world.readers[doc]
                    );
                    if path.ends_with("/retrieve") {
                        assert!(
                            !readable || appears,
                            "seed {seed}: p{who} (groups {:?}) did not find doc{doc} (readers \
                             {:?}) through Retrieve: {seen}",
                            world.groups[who],
                            world.readers[doc]
                        );
                    }
                    shown_to_readers += usize::from(appears);
                }
            }
        }
        // The worker thread lets go of the state; the knowledge base and its threads go with it.
        state.stop_jobs();
        drop(app);
        drop(state);
        drop(dir);
    }
    assert!(shown_to_readers > 0, "no document was ever shown");
}
