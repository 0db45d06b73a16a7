//! The PostgreSQL store against the shared conformance checks, on a throwaway cluster with
//! pgvector (scripts/test.sh installs both): the same behaviour as the embedded store, sealed
//! or not; and a sealed store leaves no word of a document in the database's files.

use std::sync::Arc;

use basalt_index::conformance::{self, DIMENSION};
use basalt_index::{DocumentWrite, KnowledgeStore, Sealer, SearchMode, StoreOptions, VectorIndex};
use basalt_pg::PgStore;
use basalt_pg::testing::TempCluster;

fn options() -> StoreOptions {
    StoreOptions {
        dimension: DIMENSION,
        analyzer: "english".into(),
        vector_index: VectorIndex::Auto,
    }
}

/// A fresh data key, as an encrypted knowledge base has.
fn data_key() -> Arc<dyn Sealer> {
    let master = basalt_security::crypto::MasterKey::from_hex(&"5e".repeat(32)).expect("key");
    let (_, key) = basalt_security::crypto::Envelope::create(&master).expect("data key");
    Arc::new(key)
}

fn open(url: &str, schema: &str, sealer: Option<&Arc<dyn Sealer>>) -> PgStore {
    match sealer {
        None => PgStore::open(url, schema, &options()),
        Some(sealer) => PgStore::open_sealed(url, schema, &options(), sealer.clone()),
    }
    .expect("opens")
}

/// One of the conformance checks.
type Check = fn(conformance::Opener<'_>);

/// Runs `check` against a knowledge base of its own in one cluster, sealed or not.
fn run(cluster: &TempCluster, schema: &str, sealer: Option<Arc<dyn Sealer>>, check: Check) {
    let url = cluster.url().to_owned();
    let schema = schema.to_owned();
    let mut open =
        move || -> Box<dyn KnowledgeStore> { Box::new(open(&url, &schema, sealer.as_ref())) };
    check(&mut open);
}

#[test]
fn the_postgres_store_passes_the_conformance_suite_sealed_or_not() {
    let cluster = TempCluster::start().expect("a PostgreSQL cluster");
    let checks: [(&str, Check); 4] = [
        ("modes", conformance::search_modes_rank_and_carry_provenance),
        ("filters", conformance::filters_apply_inside_the_search),
        ("readers", conformance::readers_restrict_inside_the_search),
        (
            "durable",
            conformance::replace_and_delete_are_complete_and_durable,
        ),
    ];
    for (name, check) in checks {
        run(&cluster, name, None, check);
        run(&cluster, &format!("sealed_{name}"), Some(data_key()), check);
    }
}

/// A document whose id, title, metadata, text and headings are all words found nowhere else.
fn secret_document(id: &str, words: [&str; 5]) -> DocumentWrite {
    let text = format!("The {} ledger lists {} shipments.", words[2], words[3]);
    let mut write = DocumentWrite::one_chunk(id, &text, vec![0.5, 0.5, 0.5, 0.5]);
    write.document.title = Some(format!("{} handbook", words[0]));
    write
        .document
        .metadata
        .insert("owner".into(), words[1].into());
    write.chunks[0].heading_path = vec![format!("{} section", words[4])];
    write
}

/// Encryption at rest in PostgreSQL: with a data key, the database's files (tables, indexes,
/// WAL) hold no document id, title, metadata value, heading or word of text — while the same
/// check finds them in a store written in the clear. The sealed store still searches by those
/// words, and opens only with its key.
#[test]
fn a_sealed_store_leaves_no_word_of_a_document_in_the_database() {
    let cluster = TempCluster::start().expect("a PostgreSQL cluster");
    let key = data_key();
    let sealed_words = [
        "Quetzalcoatlus",
        "Throckmortonia",
        "Ouagadougouan",
        "chrysanthemumish",
        "Zanzibarican",
    ];
    let plain_words = [
        "Pemberton",
        "Featherstone",
        "Marchetti",
        "Kowalczyk",
        "Vandersloot",
    ];
    let sealed = open(cluster.url(), "vault", Some(&key));
    sealed
        .write(vec![secret_document("Bartholomew-payroll", sealed_words)])
        .expect("writes");
    let plain = open(cluster.url(), "open_book", None);
    plain
        .write(vec![secret_document("Herringbone-memo", plain_words)])
        .expect("writes");
    cluster.execute("CHECKPOINT").expect("checkpoint");

    // As written, and as the index's terms are (lower case, stemmed: their first 8 letters).
    let mut secrets: Vec<String> = sealed_words.iter().map(|word| (*word).to_owned()).collect();
    secrets.extend(
        sealed_words
            .iter()
            .map(|word| word.to_lowercase()[..8].to_owned()),
    );
    secrets.extend(["Bartholomew".to_owned(), "bartholo".to_owned()]);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let hits = basalt_pg::testing::plaintext_hits(cluster.data_dir(), &secrets);
    assert!(hits.is_empty(), "plaintext in the database: {hits:#?}");
    let mut clear = plain_words.to_vec();
    clear.push("Herringbone");
    let found = basalt_pg::testing::plaintext_hits(cluster.data_dir(), &clear);
    for word in clear {
        assert!(
            found.iter().any(|hit| hit.contains(word)),
            "the check finds {word:?} written in the clear: {found:#?}"
        );
    }

    // Sealed, it still finds a document by every kind of word, and reads it back whole.
    let vector = [0.5, 0.5, 0.5, 0.5];
    for word in sealed_words
        .iter()
        .filter(|word| **word != "Throckmortonia")
    {
        let hits = sealed
            .search(&conformance::request(
                word,
                Some(&vector),
                SearchMode::Bm25,
                3,
            ))
            .expect("searches");
        assert_eq!(hits.len(), 1, "{word}: {hits:?}");
        assert_eq!(hits[0].doc_id, "Bartholomew-payroll");
    }
    let record = sealed
        .document("Bartholomew-payroll")
        .expect("reads")
        .expect("there");
    assert_eq!(record.metadata["owner"], "Throckmortonia");
    assert_eq!(
        sealed.chunks("Bartholomew-payroll").expect("chunks").len(),
        1
    );

    // Without its key, or with another, it does not open or read.
    let error = PgStore::open(cluster.url(), "vault", &options()).expect_err("no key");
    assert!(error.to_string().contains("encrypted"), "{error}");
    let error = PgStore::open_sealed(cluster.url(), "open_book", &options(), key.clone())
        .expect_err("written in the clear");
    assert!(error.to_string().contains("unencrypted"), "{error}");
    let stranger = open(cluster.url(), "vault", Some(&data_key()));
    assert_eq!(
        stranger.document("Bartholomew-payroll").expect("reads"),
        None
    );
    let error = stranger.documents().expect_err("another key");
    assert!(error.to_string().contains("this key"), "{error}");
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
