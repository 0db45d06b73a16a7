//! Document-level access control, end to end through a real index on disk: in random worlds
//! of tenants, principals, groups and documents with random readers, no search hit, answer
//! source, citation or streamed answer text ever holds content the caller may not read, and a
//! search returns as many hits as the readable documents allow.
//!
//! The models are test doubles, on purpose: the embedder hashes words (so a run of thousands of
//! worlds takes seconds), and the generator is the worst possible model — it repeats every
//! word of its prompt — so anything that reaches the prompt reaches the streamed answer. Every
//! other question is answered through the remote-model path instead: the same echo served over
//! HTTP as an OpenAI-compatible streaming server, called by the real `RemoteGenerator`.
//!
//! `BASALT_ACL_CASES` sets the number of worlds (default 2,000), e.g. `BASALT_ACL_CASES=20000`.

use std::collections::BTreeSet;

use basalt_answer::{AnswerEvent, AnswerOptions, Engines};
use basalt_index::{ChunkRecord, DocumentRecord, DocumentWrite, Reader, SearchMode};
use basalt_kb::{DataDir, KbSettings, KnowledgeBase, SearchOptions};
use basalt_model::testing::Scripted;
use basalt_model::{ChatRole, Embedder, EmbedderInfo, ModelError, Prompt};
use proptest::prelude::*;

const DIMENSION: usize = 32;
const TENANTS: [&str; 2] = ["default", "acme"];
const WORDS: [&str; 12] = [
    "granite", "basalt", "travel", "policy", "salary", "budget", "river", "lava", "quartz",
    "holiday", "pension", "contract",
];

/// Bag-of-words vectors: each word adds to one hashed dimension.
#[derive(Debug)]
struct HashEmbedder(EmbedderInfo);

impl HashEmbedder {
    fn new() -> Self {
        HashEmbedder(EmbedderInfo {
            model_name: "hash-words".into(),
            dimension: DIMENSION,
            max_tokens: 256,
        })
    }

    fn vector(text: &str) -> Vec<f32> {
        let mut vector = [0.0_f32; DIMENSION];
        vector[0] = 0.01;
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let hash = word
                .to_lowercase()
                .bytes()
                .fold(2166136261_u32, |hash, byte| {
                    (hash ^ u32::from(byte)).wrapping_mul(16777619)
                });
            vector[hash as usize % DIMENSION] += 1.0;
        }
        let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
        vector.iter().map(|value| value / norm).collect()
    }
}

impl Embedder for HashEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.0
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(texts.iter().map(|text| Self::vector(text)).collect())
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, ModelError> {
        Ok(Self::vector(text))
    }

    fn count_tokens(&self, text: &str) -> Result<usize, ModelError> {
        Ok(text.split_whitespace().count() + 2)
    }
}

/// The leakiest model there is: it says back every word of the user's message (the sources,
/// with their numbers, and the question) but the template's labels (`Sources:`, `Question:`, a
/// title), and cites source 1 — text the answer's check against the passages lets through, so
/// whatever the prompt held reaches the stream.
fn echo_generator() -> Scripted {
    Scripted::new(|prompt| {
        let said = match prompt {
            Prompt::Chat(messages) => messages
                .iter()
                .filter(|message| message.role == ChatRole::User)
                .map(|message| message.content.clone())
                .collect::<Vec<_>>()
                .join(" "),
            Prompt::Raw(text) => text.clone(),
            Prompt::Tokens(_) => String::new(),
        };
        echo(&said)
    })
    .with_context_window(1 << 16)
}

/// What the echoing model says to the user messages `said`.
fn echo(said: &str) -> String {
    let words: Vec<&str> = said
        .split_whitespace()
        .filter(|word| !word.ends_with(':'))
        .collect();
    format!("{} [1].", words.join(" "))
}

/// The echo served over HTTP: an OpenAI-compatible `POST /v1/chat/completions` that streams
/// [`echo`] of the request's user messages word by word. Started once; returns its port.
fn echo_server() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve_echo(stream);
            }
        });
        port
    })
}

fn serve_echo(stream: std::net::TcpStream) -> std::io::Result<()> {
    use std::io::{BufRead, Read, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let said: Vec<&str> = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|message| message["role"] == "user")
        .filter_map(|message| message["content"].as_str())
        .collect();
    let mut out = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
    );
    for (index, word) in echo(&said.join(" ")).split(' ').enumerate() {
        let text = if index == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        };
        let chunk = serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    out.push_str(
        "data: {\"choices\": [{\"index\": 0, \"delta\": {}, \"finish_reason\": \"stop\"}]}\n\n",
    );
    out.push_str("data: [DONE]\n\n");
    let mut stream = stream;
    stream.write_all(out.as_bytes())
}

/// The remote-model path to the echo: the real client of an OpenAI-compatible server.
fn remote_echo() -> basalt_model::RemoteGenerator {
    let url = format!("http://127.0.0.1:{}/v1", echo_server());
    let mut options = basalt_model::RemoteChatOptions::new("remote-echo", &url, "echo");
    options.context_window = 1 << 16;
    options.retries = 0;
    basalt_model::RemoteGenerator::new(options).expect("a client")
}

#[derive(Debug, Clone)]
struct Principal {
    tenant: usize,
    groups: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Document {
    tenant: usize,
    /// Principal and group numbers allowed to read; both empty: shared.
    principals: Vec<usize>,
    groups: Vec<usize>,
    /// Words of each chunk (a secret word is added per chunk).
    chunks: Vec<Vec<usize>>,
}

#[derive(Debug, Clone)]
struct World {
    principals: Vec<Principal>,
    documents: Vec<Document>,
    /// (principal, query words, k)
    queries: Vec<(usize, Vec<usize>, usize)>,
}

const GROUPS: usize = 3;

fn world() -> impl Strategy<Value = World> {
    let principal = (0..TENANTS.len(), proptest::collection::vec(0..GROUPS, 0..3))
        .prop_map(|(tenant, groups)| Principal { tenant, groups });
    proptest::collection::vec(principal, 1..5).prop_flat_map(|principals| {
        let count = principals.len();
        let document = (
            0..TENANTS.len(),
            // Mostly private: a third shared, the rest readable by a few.
            prop_oneof![
                1 => Just((Vec::new(), Vec::new())),
                2 => (
                    proptest::collection::vec(0..count, 0..3),
                    proptest::collection::vec(0..GROUPS, 0..2),
                ),
            ],
            proptest::collection::vec(proptest::collection::vec(0..WORDS.len(), 1..6), 1..4),
        )
            .prop_map(|(tenant, (principals, groups), chunks)| Document {
                tenant,
                principals,
                groups,
                chunks,
            });
        let query = (
            0..count,
            proptest::collection::vec(0..WORDS.len(), 1..4),
            1..8_usize,
        );
        (
            Just(principals),
            proptest::collection::vec(document, 1..10),
            proptest::collection::vec(query, 1..4),
        )
            .prop_map(|(principals, documents, queries)| World {
                principals,
                documents,
                queries,
            })
    })
}

fn principal_name(number: usize) -> String {
    format!("p{number}")
}

fn group_name(number: usize) -> String {
    format!("g{number}")
}

/// The distinctive word of one chunk: nothing else contains it.
fn secret(document: usize, chunk: usize) -> String {
    format!("zq{document}k{chunk}x")
}

impl World {
    /// The rule, written out independently of `Reader`.
    fn may_read(&self, principal: usize, document: usize) -> bool {
        let (who, doc) = (&self.principals[principal], &self.documents[document]);
        who.tenant == doc.tenant
            && ((doc.principals.is_empty() && doc.groups.is_empty())
                || doc.principals.contains(&principal)
                || doc.groups.iter().any(|group| who.groups.contains(group)))
    }

    fn reader(&self, principal: usize) -> Reader {
        let groups: Vec<String> = self.principals[principal]
            .groups
            .iter()
            .map(|group| group_name(*group))
            .collect();
        Reader::new(
            &principal_name(principal),
            groups.iter().map(String::as_str),
        )
    }

    /// One knowledge base named `kb` per tenant, written straight to the index.
    fn build(&self, data: &DataDir) -> Vec<KnowledgeBase> {
        TENANTS
            .iter()
            .enumerate()
            .map(|(tenant_number, tenant)| {
                let data = data.for_tenant(tenant).expect("tenant");
                let mut settings = KbSettings::new("kb");
                settings.embedding.model = "hash-words".into();
                settings.embedding.dimension = DIMENSION;
                data.create(&settings).expect("creates");
                let kb = data.open("kb").expect("opens");
                let writes: Vec<DocumentWrite> = self
                    .documents
                    .iter()
                    .enumerate()
                    .filter(|(_, doc)| doc.tenant == tenant_number)
                    .map(|(number, doc)| self.write(number, doc))
                    .collect();
                kb.write(writes).expect("writes");
                kb
            })
            .collect()
    }

    fn write(&self, number: usize, doc: &Document) -> DocumentWrite {
        let mut readers: Vec<String> = doc
            .principals
            .iter()
            .map(|p| format!("principal:{}", principal_name(*p)))
            .chain(
                doc.groups
                    .iter()
                    .map(|g| format!("group:{}", group_name(*g))),
            )
            .collect();
        readers.sort();
        readers.dedup();
        let texts: Vec<String> = doc
            .chunks
            .iter()
            .enumerate()
            .map(|(chunk, words)| {
                let words: Vec<&str> = words.iter().map(|word| WORDS[*word]).collect();
                format!("{} {}.", words.join(" "), secret(number, chunk))
            })
            .collect();
        DocumentWrite {
            document: DocumentRecord {
                doc_id: format!("d{number}"),
                source: format!("docs/d{number}.txt"),
                title: None,
                format: "text".into(),
                content_hash: format!("sha256:{number}"),
                ingested_at: "2026-11-30T00:00:00Z".into(),
                text_chars: 0,
                pages: None,
                chunk_count: texts.len() as u32,
                tags: Vec::new(),
                metadata: Default::default(),
                readers,
            },
            chunks: texts
                .iter()
                .enumerate()
                .map(|(ordinal, text)| ChunkRecord {
                    ordinal: ordinal as u32,
                    text: text.clone(),
                    heading_path: Vec::new(),
                    page: None,
                    char_start: 0,
                    char_end: text.chars().count() as u64,
                    vector: HashEmbedder::vector(text),
                })
                .collect(),
        }
    }

    /// Every secret of a document `principal` may not read.
    fn forbidden(&self, principal: usize) -> Vec<String> {
        (0..self.documents.len())
            .filter(|&document| !self.may_read(principal, document))
            .flat_map(|document| {
                (0..self.documents[document].chunks.len()).map(move |chunk| secret(document, chunk))
            })
            .collect()
    }

    fn readable_chunks(&self, principal: usize) -> usize {
        (0..self.documents.len())
            .filter(|&document| self.may_read(principal, document))
            .map(|document| self.documents[document].chunks.len())
            .sum()
    }
}

fn doc_number(doc_id: &str) -> usize {
    doc_id
        .strip_prefix('d')
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("unexpected document id {doc_id}"))
}

/// Asks every query of the world as its principal and checks what comes back; the knowledge
/// bases' indexes are in the PostgreSQL `database` when given (dropped at the end).
fn check_world(world: &World, database: Option<&str>) -> Result<(), TestCaseError> {
    // Memory-backed when the machine has it: thousands of worlds, each a few index commits.
    let dir = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm),
        _ => tempfile::tempdir(),
    }
    .expect("temp dir");
    let data = match database {
        Some(url) => DataDir::new(dir.path()).with_database(url),
        None => DataDir::new(dir.path()),
    };
    let kbs = world.build(&data);
    let checked = ask_world(world, &kbs);
    if database.is_some() {
        drop(kbs);
        for tenant in TENANTS {
            data.for_tenant(tenant)
                .and_then(|data| data.delete("kb"))
                .expect("drops the tables");
        }
    }
    checked
}

/// Asks every query of the world as its principal over `kbs` (one per tenant).
fn ask_world(world: &World, kbs: &[KnowledgeBase]) -> Result<(), TestCaseError> {
    let embedder = HashEmbedder::new();
    let (local, remote) = (echo_generator(), remote_echo());
    for (index, (principal, words, k)) in world.queries.iter().enumerate() {
        let generator: &dyn basalt_model::Generator = if index % 2 == 0 { &local } else { &remote };
        let (principal, k) = (*principal, *k);
        let kb = &kbs[world.principals[principal].tenant];
        let query: Vec<&str> = words.iter().map(|word| WORDS[*word]).collect();
        let query = query.join(" ");
        let reader = world.reader(principal);
        let forbidden = world.forbidden(principal);
        let leaks = |text: &str| -> Option<String> {
            forbidden
                .iter()
                .find(|secret| text.contains(secret.as_str()))
                .cloned()
        };

        for mode in [SearchMode::Hybrid, SearchMode::Vector, SearchMode::Bm25] {
            let options = SearchOptions {
                mode: Some(mode),
                k,
                reader: Some(reader.clone()),
                ..SearchOptions::default()
            };
            let hits = kb
                .search(Some(&embedder), &query, &options)
                .expect("searches")
                .hits;
            for hit in &hits {
                prop_assert!(
                    world.may_read(principal, doc_number(&hit.doc_id)),
                    "{mode:?} search by p{principal} returned {}",
                    hit.doc_id
                );
                prop_assert_eq!(leaks(&hit.text), None);
            }
            if mode != SearchMode::Bm25 {
                // Every readable chunk has a vector score: the top k are as full as allowed.
                prop_assert_eq!(
                    hits.len(),
                    k.min(world.readable_chunks(principal)),
                    "{:?} search by p{} for k={}",
                    mode,
                    principal,
                    k
                );
            }
        }

        let options = AnswerOptions {
            reader: Some(reader.clone()),
            min_relevance: Some(-1.0),
            passages: Some(k),
            ..AnswerOptions::default()
        };
        let mut streamed = String::new();
        let mut shown_sources = Vec::new();
        let engines = Engines {
            embedder: &embedder,
            generator,
        };
        let answer =
            basalt_answer::answer(
                kb,
                engines,
                &query,
                &[],
                &options,
                &mut |event| match event {
                    AnswerEvent::Sources(sources) => shown_sources.extend(sources.iter().cloned()),
                    AnswerEvent::Delta(text) => streamed.push_str(text),
                },
            )
            .expect("answers");
        prop_assert_eq!(leaks(&streamed), None, "streamed: {}", streamed);
        prop_assert_eq!(leaks(&answer.answer), None);
        let references = answer
            .sources
            .iter()
            .chain(&shown_sources)
            .chain(answer.citations.iter().flat_map(|c| c.references.iter()));
        for reference in references {
            prop_assert!(
                world.may_read(principal, doc_number(&reference.doc_id)),
                "answer for p{principal} cites {}",
                reference.doc_id
            );
            prop_assert_eq!(leaks(&reference.text), None);
        }
        if world.readable_chunks(principal) > 0 {
            // The echo reached the stream: the check above had something to look at.
            prop_assert!(!answer.sources.is_empty(), "readable passages exist");
            prop_assert!(streamed.contains("zq"), "streamed: {}", streamed);
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("BASALT_ACL_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn no_caller_ever_sees_what_it_may_not_read(world in world()) {
        check_world(&world, None)?;
    }
}

/// The same property with the knowledge bases' indexes in PostgreSQL (a throwaway cluster with
/// pgvector, which scripts/test.sh installs): the filter and the reader restrict the search
/// inside SQL. `BASALT_ACL_PG_CASES` sets the number of worlds (default 60).
#[test]
fn no_caller_ever_sees_what_it_may_not_read_on_postgres() {
    let cluster = basalt_pg::testing::TempCluster::start_migrated().expect("a PostgreSQL cluster");
    let cases = std::env::var("BASALT_ACL_PG_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(60);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let outcome = runner.run(&world(), |world| check_world(&world, Some(cluster.url())));
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// The property above can fail: without a reader the same echoing model — local, or served over
/// HTTP — repeats a private document's secret, and a reader outside its list gets nothing of it.
#[test]
fn the_echo_model_would_leak_without_the_reader() {
    let world = World {
        principals: vec![
            Principal {
                tenant: 0,
                groups: vec![0],
            },
            Principal {
                tenant: 0,
                groups: vec![],
            },
        ],
        documents: vec![Document {
            tenant: 0,
            principals: vec![],
            groups: vec![0],
            chunks: vec![vec![0, 1]],
        }],
        queries: vec![],
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let kbs = world.build(&DataDir::new(dir.path()));
    let embedder = HashEmbedder::new();
    let (local, remote) = (echo_generator(), remote_echo());
    for generator in [&local as &dyn basalt_model::Generator, &remote] {
        let engines = Engines {
            embedder: &embedder,
            generator,
        };
        let ask = |reader: Option<Reader>| {
            let options = AnswerOptions {
                reader,
                min_relevance: Some(-1.0),
                ..AnswerOptions::default()
            };
            let mut streamed = String::new();
            let answer = basalt_answer::answer(
                &kbs[0],
                engines,
                "granite basalt",
                &[],
                &options,
                &mut |event| {
                    if let AnswerEvent::Delta(text) = event {
                        streamed.push_str(text);
                    }
                },
            )
            .expect("answers");
            (streamed, answer)
        };
        let (streamed, _) = ask(None);
        assert!(streamed.contains(&secret(0, 0)), "{streamed}");
        let (streamed, _) = ask(Some(world.reader(0)));
        assert!(
            streamed.contains(&secret(0, 0)),
            "a group member reads it: {streamed}"
        );
        let (streamed, answer) = ask(Some(world.reader(1)));
        assert!(!streamed.contains(&secret(0, 0)), "{streamed}");
        assert!(answer.abstained && answer.sources.is_empty());
    }
    let seen: BTreeSet<usize> = (0..world.documents.len())
        .filter(|&document| world.may_read(1, document))
        .collect();
    assert!(seen.is_empty());
}
