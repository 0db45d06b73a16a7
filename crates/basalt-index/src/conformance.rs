//! The behaviour every [`KnowledgeStore`] must show, as functions a backend's tests call with a
//! way to open its store. The embedded store runs them in `tests/store.rs`; a PostgreSQL
//! backend runs the same ones.
//!
//! Vectors here have 4 dimensions; open the store with that dimension.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use crate::KnowledgeStore;
use crate::filter::Filter;
use crate::types::{
    Bm25Params, ChunkRecord, DocumentRecord, DocumentWrite, Fusion, Hit, Reader, SearchMode,
    SearchRequest,
};

/// Dimension of the vectors these checks write.
pub const DIMENSION: usize = 4;

/// Opens (or reopens) the store under test, always the same one.
pub type Opener<'a> = &'a mut dyn FnMut() -> Box<dyn KnowledgeStore>;

fn unit(values: [f32; DIMENSION]) -> Vec<f32> {
    let norm = values.iter().map(|value| value * value).sum::<f32>().sqrt();
    values.iter().map(|value| value / norm).collect()
}

/// A document whose chunks have the given texts and vectors.
pub fn document(doc_id: &str, source: &str, chunks: &[(&str, [f32; DIMENSION])]) -> DocumentWrite {
    DocumentWrite {
        document: DocumentRecord {
            doc_id: doc_id.into(),
            source: source.into(),
            title: Some(format!("Title of {doc_id}")),
            format: "text".into(),
            content_hash: format!("sha256:{doc_id}"),
            ingested_at: "2026-11-29T00:00:00Z".into(),
            text_chars: chunks
                .iter()
                .map(|(text, _)| text.chars().count() as u64)
                .sum(),
            pages: None,
            chunk_count: chunks.len() as u32,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            readers: Vec::new(),
        },
        chunks: chunks
            .iter()
            .enumerate()
            .map(|(ordinal, (text, vector))| ChunkRecord {
                ordinal: ordinal as u32,
                text: (*text).into(),
                heading_path: vec!["Intro".into()],
                page: Some(ordinal as u32 + 1),
                char_start: 0,
                char_end: text.chars().count() as u64,
                vector: unit(*vector),
            })
            .collect(),
    }
}

/// A request with the defaults a caller would use.
pub fn request<'a>(
    text: &'a str,
    vector: Option<&'a [f32]>,
    mode: SearchMode,
    k: usize,
) -> SearchRequest<'a> {
    SearchRequest {
        text,
        query_vector: vector,
        mode,
        k,
        filter: None,
        reader: None,
        fusion: Fusion::default(),
        bm25: Bm25Params::default(),
        exact: false,
    }
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|hit| hit.chunk_id.as_str()).collect()
}

fn corpus() -> Vec<DocumentWrite> {
    vec![
        document(
            "granite",
            "rocks/granite.txt",
            &[
                (
                    "Granite is an intrusive igneous rock with quartz and feldspar.",
                    [1.0, 0.1, 0.0, 0.0],
                ),
                (
                    "Granite countertops are polished slabs.",
                    [0.7, 0.7, 0.0, 0.0],
                ),
            ],
        ),
        document(
            "basalt",
            "rocks/basalt.txt",
            &[(
                "Basalt is an extrusive igneous rock formed from lava.",
                [0.0, 1.0, 0.1, 0.0],
            )],
        ),
        document(
            "kitchen",
            "home/kitchen.md",
            &[(
                "Cooking pasta needs salted boiling water.",
                [0.0, 0.0, 1.0, 0.0],
            )],
        ),
    ]
}

/// Each mode finds what it should, with provenance, best first.
pub fn search_modes_rank_and_carry_provenance(open: Opener<'_>) {
    let store = open();
    store.write(corpus()).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!((stats.documents, stats.chunks), (3, 4));
    assert!(
        store.size_bytes().unwrap() > 0,
        "an index with chunks takes room"
    );
    let chunks = store.chunks("granite").unwrap();
    let texts: Vec<&str> = chunks.iter().map(|chunk| chunk.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Granite is an intrusive igneous rock with quartz and feldspar.",
            "Granite countertops are polished slabs."
        ]
    );
    assert_eq!(chunks[1].ordinal, 1);
    let written = corpus()
        .into_iter()
        .find(|write| write.document.doc_id == "granite")
        .unwrap();
    assert_eq!(
        chunks[1].vector, written.chunks[1].vector,
        "a chunk comes back with its vector, exactly"
    );
    assert!(store.chunks("nothing").unwrap().is_empty());

    let hits = store
        .search(&request("igneous rocks", None, SearchMode::Bm25, 10))
        .unwrap();
    let mut found = ids(&hits);
    found.sort_unstable();
    assert_eq!(
        found,
        ["basalt#0", "granite#0"],
        "BM25 matches stems, nothing else"
    );
    let hit = &hits[0];
    assert_eq!(
        hit.title.as_deref(),
        Some(&*format!("Title of {}", hit.doc_id))
    );
    assert_eq!(hit.heading_path, ["Intro"]);
    assert_eq!(hit.page, Some(1));
    assert!(hit.source.starts_with("rocks/"));

    let query = unit([0.0, 0.0, 1.0, 0.1]);
    let hits = store
        .search(&request("", Some(&query), SearchMode::Vector, 2))
        .unwrap();
    assert_eq!(ids(&hits)[0], "kitchen#0");
    assert_eq!(hits.len(), 2);
    assert!(hits[0].score >= hits[1].score);

    let query = unit([0.0, 1.0, 0.0, 0.0]);
    for fusion in [
        Fusion::Rrf { k: 60.0 },
        Fusion::Weighted { bm25_weight: 0.3 },
    ] {
        let mut hybrid = request("lava", Some(&query), SearchMode::Hybrid, 3);
        hybrid.fusion = fusion;
        let hits = store.search(&hybrid).unwrap();
        assert_eq!(ids(&hits)[0], "basalt#0", "{fusion:?}");
        assert_eq!(hits.len(), 3);
    }

    let missing = store.search(&request("", None, SearchMode::Vector, 3));
    assert!(
        missing.is_err(),
        "vector search without a vector is an error"
    );
    let wrong = [1.0_f32; DIMENSION + 1];
    assert!(
        store
            .search(&request("", Some(&wrong), SearchMode::Vector, 3))
            .is_err()
    );
    assert!(
        store
            .search(&request("zzzz", None, SearchMode::Bm25, 3))
            .unwrap()
            .is_empty()
    );
}

/// Filters apply before the top k: k matching chunks come back even when better
/// non-matching ones exist.
pub fn filters_apply_inside_the_search(open: Opener<'_>) {
    let store = open();
    let mut writes = corpus();
    writes[0].document.tags = vec!["hard".into()];
    writes[1]
        .document
        .metadata
        .insert("year".into(), 2019.into());
    writes[2]
        .document
        .metadata
        .insert("year".into(), 2024.into());
    store.write(writes).unwrap();
    let query = unit([1.0, 0.0, 0.0, 0.0]);
    let check = |expression: &str, mode: SearchMode, k: usize| -> Vec<String> {
        let filter = Filter::parse(expression).unwrap();
        let mut search = request("rock water", Some(&query), mode, k);
        search.filter = Some(&filter);
        store
            .search(&search)
            .unwrap()
            .into_iter()
            .map(|hit| hit.chunk_id)
            .collect()
    };
    // Granite is the nearest vector, but the filter excludes it; k=1 still returns a hit.
    assert_eq!(check("year >= 2020", SearchMode::Vector, 1), ["kitchen#0"]);
    assert_eq!(check("year >= 2020", SearchMode::Bm25, 5), ["kitchen#0"]);
    assert_eq!(
        check("tag = hard and page = 2", SearchMode::Hybrid, 5),
        ["granite#1"]
    );
    assert_eq!(
        check(
            "source prefix \"rocks/\" and not tag = hard",
            SearchMode::Hybrid,
            5
        ),
        ["basalt#0"]
    );
    assert!(check("year > 3000", SearchMode::Hybrid, 5).is_empty());
}

/// A reader sees only the documents it may read, and the restriction applies before the top
/// k: a reader gets k readable chunks whenever k exist, in every mode, with or without a
/// filter.
pub fn readers_restrict_inside_the_search(open: Opener<'_>) {
    let store = open();
    let mut writes = corpus();
    writes[0].document.readers = vec!["group:geology".into()];
    writes[1].document.readers = vec!["principal:bob".into(), "group:lava".into()];
    store.write(writes).unwrap();
    store.finish_writes().unwrap();
    let alice = Reader::new("alice", ["geology"]);
    let bob = Reader::new("bob", []);
    let carol = Reader::new("carol", ["cooks"]);
    let granite_like = unit([1.0, 0.1, 0.0, 0.0]);
    let search = |reader: &Reader, text: &str, mode: SearchMode, k: usize| -> Vec<String> {
        let mut search = request(text, Some(&granite_like), mode, k);
        search.reader = Some(reader);
        let mut found: Vec<String> = store
            .search(&search)
            .unwrap()
            .into_iter()
            .map(|hit| hit.chunk_id)
            .collect();
        found.sort_unstable();
        found
    };
    for mode in SearchMode::ALL {
        let k = if mode == SearchMode::Bm25 { 10 } else { 1 };
        let text = "granite basalt pasta igneous";
        // The nearest chunks are granite's; carol may read only the kitchen document.
        assert_eq!(search(&carol, text, mode, k), ["kitchen#0"], "{mode:?}");
        assert!(
            search(&bob, text, mode, 10)
                .iter()
                .all(|id| !id.starts_with("granite")),
            "{mode:?}"
        );
    }
    assert_eq!(
        search(&alice, "", SearchMode::Vector, 2),
        ["granite#0", "granite#1"]
    );
    assert_eq!(
        search(&bob, "", SearchMode::Vector, 10),
        ["basalt#0", "kitchen#0"]
    );
    // With a filter too: both must hold.
    let filter = Filter::parse("source prefix \"rocks/\"").unwrap();
    let mut filtered = request("rock", Some(&granite_like), SearchMode::Hybrid, 10);
    filtered.filter = Some(&filter);
    filtered.reader = Some(&bob);
    assert_eq!(ids(&store.search(&filtered).unwrap()), ["basalt#0"]);
    filtered.reader = Some(&carol);
    assert!(store.search(&filtered).unwrap().is_empty());
    // Without a reader (the data directory's owner), everything.
    assert_eq!(
        store
            .search(&request("", Some(&granite_like), SearchMode::Vector, 10))
            .unwrap()
            .len(),
        4
    );
}

/// Writing a document again replaces all its chunks; deleting removes it everywhere; both
/// persist across a reopen.
pub fn replace_and_delete_are_complete_and_durable(open: Opener<'_>) {
    {
        let store = open();
        store.write(corpus()).unwrap();
        let replacement = document(
            "granite",
            "rocks/granite.txt",
            &[("Granite, revised: a plutonic rock.", [1.0, 0.0, 0.0, 0.0])],
        );
        store.write(vec![replacement]).unwrap();
        let hits = store
            .search(&request("countertops", None, SearchMode::Bm25, 10))
            .unwrap();
        assert!(
            hits.is_empty(),
            "the old version's chunks are gone: {hits:?}"
        );
        let hits = store
            .search(&request("plutonic", None, SearchMode::Bm25, 10))
            .unwrap();
        assert_eq!(ids(&hits), ["granite#0"]);
        assert_eq!(store.document("granite").unwrap().unwrap().chunk_count, 1);
        assert_eq!(store.delete(&["kitchen".into(), "nope".into()]).unwrap(), 1);
        assert_eq!(store.delete(&["kitchen".into()]).unwrap(), 0);
    }
    let store = open();
    let documents: Vec<String> = store
        .documents()
        .unwrap()
        .into_iter()
        .map(|record| record.doc_id)
        .collect();
    assert_eq!(documents, ["basalt", "granite"]);
    let query = unit([0.0, 0.0, 1.0, 0.0]);
    let hits = store
        .search(&request("pasta", Some(&query), SearchMode::Hybrid, 10))
        .unwrap();
    assert!(
        hits.iter().all(|hit| hit.doc_id != "kitchen"),
        "deleted document still found: {hits:?}"
    );
    assert_eq!(hits.len(), 2, "the rest is still searchable by vector");
    let stats = store.stats().unwrap();
    assert_eq!((stats.documents, stats.chunks), (2, 2));
}
