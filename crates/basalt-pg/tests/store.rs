//! The PostgreSQL store against the shared conformance checks, on a throwaway cluster with
//! pgvector (scripts/test.sh installs both): the same behaviour as the embedded store.

use basalt_index::conformance::{self, DIMENSION};
use basalt_index::{KnowledgeStore, StoreOptions, VectorIndex};
use basalt_pg::PgStore;
use basalt_pg::testing::TempCluster;

fn options() -> StoreOptions {
    StoreOptions {
        dimension: DIMENSION,
        analyzer: "english".into(),
        vector_index: VectorIndex::Auto,
    }
}

/// Runs `check` against a knowledge base of its own in one cluster.
fn run(cluster: &TempCluster, schema: &str, check: fn(conformance::Opener<'_>)) {
    let url = cluster.url().to_owned();
    let schema = schema.to_owned();
    let mut open = move || -> Box<dyn KnowledgeStore> {
        Box::new(PgStore::open(&url, &schema, &options()).expect("opens"))
    };
    check(&mut open);
}

#[test]
fn the_postgres_store_passes_the_conformance_suite() {
    let cluster = TempCluster::start().expect("a PostgreSQL cluster");
    run(
        &cluster,
        "modes",
        conformance::search_modes_rank_and_carry_provenance,
    );
    run(
        &cluster,
        "filters",
        conformance::filters_apply_inside_the_search,
    );
    run(
        &cluster,
        "readers",
        conformance::readers_restrict_inside_the_search,
    );
    run(
        &cluster,
        "durable",
        conformance::replace_and_delete_are_complete_and_durable,
    );
}

#[test]
fn a_store_refuses_vectors_of_another_dimension() {
    let cluster = TempCluster::start().expect("a PostgreSQL cluster");
    PgStore::open(cluster.url(), "four", &options()).expect("opens");
    let mut wider = options();
    wider.dimension = 8;
    let error = PgStore::open(cluster.url(), "four", &wider).expect_err("another dimension");
    assert!(error.to_string().contains('8'), "{error}");
    let error = PgStore::open(cluster.url(), "Bad-Name", &options()).expect_err("a bad schema");
    assert!(error.to_string().contains("schema"), "{error}");
}
