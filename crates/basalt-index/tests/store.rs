//! The embedded store against the shared conformance checks, plus what only it promises.

use basalt_index::conformance::{self, DIMENSION};
use std::sync::Arc;

use basalt_index::{
    Filter, IndexError, KnowledgeStore, Sealer, SearchMode, StoreOptions, TantivyStore, VectorIndex,
};

fn options() -> StoreOptions {
    StoreOptions {
        dimension: DIMENSION,
        analyzer: "english".into(),
        vector_index: VectorIndex::Exact,
    }
}

fn run(check: fn(conformance::Opener<'_>)) {
    run_with(check, &options());
    run_sealed(check);
}

fn data_key() -> Arc<dyn Sealer> {
    let master = basalt_security::crypto::MasterKey::from_hex(&"5e".repeat(32)).expect("key");
    let (_, key) = basalt_security::crypto::Envelope::create(&master).expect("data key");
    Arc::new(key)
}

/// The same check on an encrypted store: every behaviour holds, and the files are ciphertext.
fn run_sealed(check: fn(conformance::Opener<'_>)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("index");
    let sealer = data_key();
    let mut open = || -> Box<dyn KnowledgeStore> {
        Box::new(TantivyStore::open_sealed(&path, &options(), sealer.clone()).expect("opens"))
    };
    check(&mut open);
    for entry in std::fs::read_dir(&path).expect("index files") {
        let file = entry.expect("entry").path();
        let bytes = std::fs::read(&file).unwrap_or_default();
        let lock = file.extension().is_some_and(|ext| ext == "lock");
        if file.is_file() && !lock {
            assert!(
                bytes.starts_with(b"BSE1"),
                "{} is not sealed",
                file.display()
            );
        }
    }
}

#[test]
fn a_sealed_index_opens_only_with_its_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sealer = data_key();
    {
        let store =
            TantivyStore::open_sealed(dir.path(), &options(), sealer.clone()).expect("opens");
        store
            .write(vec![conformance::document(
                "a",
                "a.txt",
                &[("alpha granite", [1.0, 0.0, 0.0, 0.0])],
            )])
            .expect("writes");
    }
    let reopened = TantivyStore::open_sealed(dir.path(), &options(), sealer).expect("reopens");
    assert_eq!(reopened.stats().expect("stats").documents, 1);
    let other = TantivyStore::open_sealed(dir.path(), &options(), data_key());
    let error = other.expect_err("another key").to_string();
    assert!(error.contains("decrypt"), "{error}");
    let plain = TantivyStore::open(dir.path(), &options());
    assert!(
        plain.is_err(),
        "an encrypted index is not readable as a plain one"
    );
}

fn run_with(check: fn(conformance::Opener<'_>), options: &StoreOptions) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("index");
    let mut open = || -> Box<dyn KnowledgeStore> {
        Box::new(TantivyStore::open(&path, options).expect("opens"))
    };
    check(&mut open);
}

#[test]
fn search_modes_rank_and_carry_provenance() {
    run(conformance::search_modes_rank_and_carry_provenance);
}

#[test]
fn filters_apply_inside_the_search() {
    run(conformance::filters_apply_inside_the_search);
}

#[test]
fn readers_restrict_inside_the_search() {
    run(conformance::readers_restrict_inside_the_search);
    // The same through graph walks (a graph for every segment, however small).
    let hnsw = StoreOptions {
        vector_index: VectorIndex::Hnsw,
        ..options()
    };
    run_with(conformance::readers_restrict_inside_the_search, &hnsw);
}

#[test]
fn replace_and_delete_are_complete_and_durable() {
    run(conformance::replace_and_delete_are_complete_and_durable);
}

#[test]
fn a_second_writer_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = TantivyStore::open(dir.path(), &options()).expect("opens");
    let second = TantivyStore::open(dir.path(), &options()).expect("readers may open");
    first
        .write(vec![conformance::document(
            "a",
            "a.txt",
            &[("alpha", [1.0, 0.0, 0.0, 0.0])],
        )])
        .expect("first writer writes");
    let error = second
        .write(vec![conformance::document(
            "b",
            "b.txt",
            &[("beta", [0.0, 1.0, 0.0, 0.0])],
        )])
        .expect_err("second writer is refused");
    assert!(matches!(error, IndexError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("another process"), "{error}");
}

#[test]
fn unknown_analyzers_and_wrong_dimensions_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = StoreOptions {
        dimension: DIMENSION,
        analyzer: "klingon".into(),
        vector_index: VectorIndex::Auto,
    };
    let error = TantivyStore::open(dir.path(), &bad).expect_err("unknown analyzer");
    assert!(
        error.to_string().contains("english"),
        "lists the choices: {error}"
    );
    let store = TantivyStore::open(dir.path(), &options()).expect("opens");
    let mut write = conformance::document("a", "a.txt", &[("alpha", [1.0, 0.0, 0.0, 0.0])]);
    write.chunks[0].vector.push(0.0);
    let error = store.write(vec![write]).expect_err("wrong dimension");
    assert!(
        matches!(
            error,
            IndexError::Dimension {
                expected: 4,
                found: 5
            }
        ),
        "{error}"
    );
    assert_eq!(
        store.stats().expect("stats").documents,
        0,
        "nothing half-written"
    );
}

/// Documents `first..first + count`, four chunks each, with seeded unit vectors in clusters and
/// a `group` metadata value (document number mod 4).
fn clustered_documents(first: usize, count: usize) -> Vec<basalt_index::DocumentWrite> {
    let mut state = first as u64 * 7919 + 17;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (first..first + count)
        .map(|number| {
            let mut vectors = Vec::new();
            for chunk in 0..4 {
                let centre = (number * 4 + chunk) % 7;
                let mut vector = [0.0_f32; conformance::DIMENSION];
                for (axis, value) in vector.iter_mut().enumerate() {
                    let pull = if axis == centre % conformance::DIMENSION {
                        1.0
                    } else {
                        0.0
                    };
                    *value = pull + uniform();
                }
                vectors.push((
                    format!("chunk {chunk} of document {number} word{}", number % 50),
                    vector,
                ));
            }
            let chunks: Vec<(&str, [f32; conformance::DIMENSION])> = vectors
                .iter()
                .map(|(text, vector)| (text.as_str(), *vector))
                .collect();
            let mut write = conformance::document(&format!("d{number:04}"), "bulk.jsonl", &chunks);
            write
                .document
                .metadata
                .insert("group".into(), ((number % 4) as i64).into());
            write
        })
        .collect()
}

fn chunk_ids(store: &TantivyStore, request: &basalt_index::SearchRequest<'_>) -> Vec<String> {
    store
        .search(request)
        .expect("searches")
        .into_iter()
        .map(|hit| hit.chunk_id)
        .collect()
}

/// Mean share of the exact top 10 that the approximate search also returns.
fn agreement(store: &TantivyStore, mode: SearchMode, filter: Option<&Filter>) -> f64 {
    let mut total = 0.0;
    let queries = clustered_documents(5000, 40);
    for write in &queries {
        let vector = &write.chunks[0].vector;
        let mut request = conformance::request("word7 document", Some(vector), mode, 10);
        request.filter = filter;
        let approximate = chunk_ids(store, &request);
        request.exact = true;
        let exact = chunk_ids(store, &request);
        assert_eq!(exact.len(), 10);
        total += exact.iter().filter(|id| approximate.contains(id)).count() as f64 / 10.0;
    }
    total / queries.len() as f64
}

#[test]
fn hnsw_graphs_agree_with_exact_search_through_deletes_filters_and_damage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("index");
    let options = StoreOptions {
        vector_index: VectorIndex::Hnsw,
        ..options()
    };
    let store = TantivyStore::open(&path, &options).expect("opens");
    for batch in 0..5 {
        store
            .write(clustered_documents(batch * 150, 150))
            .expect("writes");
    }
    store.finish_writes().expect("builds graphs");
    let graphs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(path.join("ann"))
            .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
            .unwrap_or_default()
    };
    assert!(!graphs().is_empty(), "finish_writes persisted graphs");
    assert!(
        graphs()
            .iter()
            .all(|file| file.extension().is_some_and(|ext| ext == "hnsw"))
    );
    for mode in [SearchMode::Vector, SearchMode::Hybrid] {
        let overlap = agreement(&store, mode, None);
        assert!(overlap >= 0.9, "{mode:?}: {overlap}");
    }
    let filter = Filter::parse("group in (1, 2)").expect("parses");
    let overlap = agreement(&store, SearchMode::Vector, Some(&filter));
    assert!(overlap >= 0.9, "filtered: {overlap}");
    let vector = clustered_documents(5000, 1).remove(0).chunks[0]
        .vector
        .clone();
    let mut request = conformance::request("document", Some(&vector), SearchMode::Vector, 50);
    request.filter = Some(&filter);
    for hit in store.search(&request).expect("searches") {
        let group = hit.metadata.get("group").and_then(|value| value.as_i64());
        assert!(matches!(group, Some(1 | 2)), "{hit:?}");
    }

    // Deleted documents stay in the graphs as waypoints but never come back.
    let doomed: Vec<String> = (0..750)
        .step_by(3)
        .map(|number| format!("d{number:04}"))
        .collect();
    store.delete(&doomed).expect("deletes");
    let request = conformance::request("document", Some(&vector), SearchMode::Vector, 100);
    let hits = chunk_ids(&store, &request);
    assert_eq!(hits.len(), 100);
    assert!(hits.iter().all(|id| {
        !doomed.contains(
            &id.split('#')
                .next()
                .expect("chunk ids are doc#n")
                .to_owned(),
        )
    }));
    store.finish_writes().expect("finishes");
    assert!(agreement(&store, SearchMode::Vector, None) >= 0.9);

    // A damaged graph file is ignored (exact scan) and rebuilt; retired segments lose theirs.
    drop(store);
    let files = graphs();
    for file in &files {
        std::fs::write(file, b"not a graph").expect("damages");
    }
    let store = TantivyStore::open(&path, &options).expect("reopens");
    let mut exact_request = conformance::request("document", Some(&vector), SearchMode::Vector, 10);
    let approximate = chunk_ids(&store, &exact_request);
    exact_request.exact = true;
    assert_eq!(approximate, chunk_ids(&store, &exact_request));
    store.finish_writes().expect("rebuilds");
    for file in graphs() {
        assert!(
            std::fs::metadata(&file).expect("exists").len() > 100,
            "{}",
            file.display()
        );
    }
    assert!(agreement(&store, SearchMode::Vector, None) >= 0.9);
}

#[test]
fn conformance_holds_with_graphs_for_every_segment() {
    for check in [
        conformance::search_modes_rank_and_carry_provenance as fn(conformance::Opener<'_>),
        conformance::filters_apply_inside_the_search,
        conformance::replace_and_delete_are_complete_and_durable,
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("index");
        let mut open = || -> Box<dyn KnowledgeStore> {
            let options = StoreOptions {
                vector_index: VectorIndex::Hnsw,
                ..options()
            };
            let store = TantivyStore::open(&path, &options).expect("opens");
            store.finish_writes().expect("finishes");
            Box::new(store)
        };
        check(&mut open);
    }
}
