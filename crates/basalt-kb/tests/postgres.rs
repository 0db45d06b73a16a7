//! Knowledge bases whose catalog and index are in PostgreSQL (`DataDir::with_database`), on a
//! throwaway cluster with pgvector (scripts/test.sh installs both): created, written,
//! searched, re-embedded and deleted through the same verbs as embedded ones, encrypted or
//! not; the catalog and the job queue pass the suites the embedded ones pass, seen from two
//! processes.

use basalt_index::{DocumentWrite, SearchMode};
use basalt_kb::{Backend, DataDir, KbCatalog, KbSettings, PgJobQueue, SearchOptions};
use basalt_model::testing::Letters;
use basalt_pg::testing::TempCluster;

fn document(id: &str, text: &str, readers: &[&str], embedder: &Letters) -> DocumentWrite {
    let mut write = DocumentWrite::one_chunk(id, text, embedder.vector(text));
    write.document.readers = readers.iter().map(|reader| (*reader).to_owned()).collect();
    write
}

fn top(
    kb: &basalt_kb::KnowledgeBase,
    embedder: &Letters,
    mode: SearchMode,
    query: &str,
) -> Vec<String> {
    let options = SearchOptions {
        mode: Some(mode),
        k: 3,
        ..SearchOptions::default()
    };
    kb.search(Some(embedder), query, &options)
        .expect("searches")
        .hits
        .into_iter()
        .map(|hit| hit.doc_id)
        .collect()
}

#[test]
fn a_knowledge_base_lives_in_postgres_through_the_same_verbs() {
    let cluster = TempCluster::start_migrated().expect("a PostgreSQL cluster");
    let dir = tempfile::tempdir().expect("data dir");
    let data = DataDir::new(dir.path()).with_database(cluster.url());
    let small = Letters::new(8);
    let mut settings = KbSettings::new("handbook");
    settings.embedding.model = "letters-8".into();
    settings.embedding.dimension = 8;
    data.create_with(&settings, false).expect("creates");
    assert_eq!(
        data.settings("handbook").expect("settings").backend,
        Backend::Postgres
    );
    // Nothing of it is in the data directory: the catalog is the database's.
    assert!(!data.kb_path("handbook").exists());

    let kb = data.open("handbook").expect("opens");
    kb.write(vec![
        document("leave", "Parental leave is sixteen weeks.", &[], &small),
        document(
            "pay",
            "Salaries are paid monthly by transfer.",
            &["group:hr"],
            &small,
        ),
    ])
    .expect("writes");
    assert_eq!(
        top(&kb, &small, SearchMode::Bm25, "parental leave"),
        ["leave"]
    );
    assert_eq!(
        top(&kb, &small, SearchMode::Hybrid, "salaries paid monthly")[0],
        "pay"
    );
    // Another process (a replica, with a data directory of its own) sees what this one wrote.
    let elsewhere = tempfile::tempdir().expect("data dir");
    let other = DataDir::new(elsewhere.path()).with_database(cluster.url());
    assert_eq!(
        other
            .open("handbook")
            .expect("opens")
            .stats()
            .expect("stats")
            .documents,
        2
    );
    drop(kb);

    // Without the database, the data directory's own catalog is another one.
    let error = DataDir::new(dir.path())
        .open("handbook")
        .expect_err("no database");
    assert!(error.to_string().contains("no knowledge base"), "{error}");

    let large = Letters::new(26);
    let report = data
        .reembed("handbook", "letters-26", &large, &mut |_| {})
        .expect("re-embeds");
    assert_eq!(
        (report.documents, report.chunks, report.to_dimension),
        (2, 2, 26)
    );
    let kb = data.open("handbook").expect("opens");
    assert_eq!(
        top(
            &kb,
            &large,
            SearchMode::Vector,
            "salaries paid monthly by transfer"
        )[0],
        "pay"
    );
    assert_eq!(
        kb.document("pay").expect("reads").expect("there").readers,
        ["group:hr"]
    );
    drop(kb);

    // An encrypted knowledge base in PostgreSQL is sealed with its own data key (basalt-pg's
    // tests grep the database's files), and needs the master key to open.
    let master = basalt_security::crypto::MasterKey::from_hex(&"5e".repeat(32)).expect("key");
    let keyed = DataDir::new(dir.path())
        .with_database(cluster.url())
        .with_master_key(std::sync::Arc::new(master));
    let mut secret = KbSettings::new("secret");
    secret.embedding.model = "letters-8".into();
    secret.embedding.dimension = 8;
    keyed.create_with(&secret, true).expect("creates encrypted");
    assert!(keyed.is_encrypted("secret"));
    let kb = keyed.open("secret").expect("opens");
    kb.write(vec![document(
        "memo",
        "The vault code changes every Tuesday.",
        &[],
        &small,
    )])
    .expect("writes");
    assert_eq!(
        top(&kb, &small, SearchMode::Hybrid, "vault code")[0],
        "memo"
    );
    drop(kb);
    let error = data.open("secret").expect_err("no master key");
    assert!(error.to_string().contains("master key"), "{error}");
    keyed.delete("secret").expect("deletes");

    data.delete("handbook").expect("deletes");
    let error = data.open("handbook").expect_err("gone");
    assert!(error.to_string().contains("no knowledge base"), "{error}");
}

#[test]
fn the_database_catalog_and_job_queue_pass_the_embedded_suites() {
    let cluster = TempCluster::start_migrated().expect("a PostgreSQL cluster");
    // Each handle has a data directory of its own: what they share is the database.
    let dirs: Vec<tempfile::TempDir> = (0..8)
        .map(|_| tempfile::tempdir().expect("data dir"))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let handle = || {
        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % dirs.len();
        DataDir::new(dirs[index].path()).with_database(cluster.url())
    };
    basalt_kb::catalog_conformance(&|| Box::new(handle()));
    let acme: Box<dyn KbCatalog> = Box::new(handle().for_tenant("acme").expect("tenant"));
    assert!(
        acme.list().expect("lists").is_empty(),
        "a tenant's catalog is its own"
    );
    basalt_kb::job_queue_conformance(&|| Box::new(PgJobQueue::open(&handle()).expect("opens")));

    // An upload kept by one replica is fetched by another into its own spool.
    basalt_kb::jobs::shared_upload_conformance(
        &PgJobQueue::open(&handle()).expect("opens"),
        &PgJobQueue::open(&handle()).expect("opens"),
    );

    // A database nobody migrated says what to run.
    let bare = TempCluster::start().expect("a PostgreSQL cluster");
    let error = DataDir::new(dirs[0].path())
        .with_database(bare.url())
        .list()
        .expect_err("not migrated");
    assert!(error.to_string().contains("basalt db migrate"), "{error}");
}
