//! The embedded store against the shared conformance checks, plus what only it promises.

use basalt_index::conformance::{self, DIMENSION};
use basalt_index::{IndexError, KnowledgeStore, StoreOptions, TantivyStore};

fn options() -> StoreOptions {
    StoreOptions {
        dimension: DIMENSION,
        analyzer: "english".into(),
    }
}

fn run(check: fn(conformance::Opener<'_>)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("index");
    let mut open = || -> Box<dyn KnowledgeStore> {
        Box::new(TantivyStore::open(&path, &options()).expect("opens"))
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
