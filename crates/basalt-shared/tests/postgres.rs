//! The identity directory, guardrail configurations, audit trail and conversation sessions in
//! PostgreSQL against the conformance
//! suites the data directory's files pass, on a throwaway cluster (scripts/test.sh installs
//! PostgreSQL): each handle on a connection of its own, as replicas are.

use std::sync::Arc;

use basalt_answer::{SessionPolicy, Sessions, Turn};
use basalt_pg::Connection;
use basalt_pg::testing::TempCluster;
use basalt_security::crypto::MasterKey;
use basalt_shared::{
    PgAudit, PgGuardrails, PgIdentities, PgModelRegistry, PgRateLimits, PgSessions,
};

fn connection(cluster: &TempCluster) -> Arc<Connection> {
    Arc::new(Connection::new(cluster.url(), basalt_pg::migrations::check))
}

#[test]
fn the_identity_directory_in_postgres_passes_the_file_suite() {
    let cluster = TempCluster::start_migrated().expect("a PostgreSQL cluster");
    basalt_security::identities_conformance(&|| Box::new(PgIdentities::new(connection(&cluster))));
}

#[test]
fn guardrails_in_postgres_pass_the_file_suite_and_tenants_keep_their_own() {
    let cluster = TempCluster::start_migrated().expect("a PostgreSQL cluster");
    let acme = PgGuardrails::new(connection(&cluster), "acme");
    basalt_guard::guardrail_conformance::guardrail_configs(&acme);
    let config = basalt_guard::GuardrailConfig {
        description: "acme's".into(),
        ..basalt_guard::GuardrailConfig::default()
    };
    acme.save("support", &config).expect("saves");
    let other = PgGuardrails::new(connection(&cluster), "globex");
    use basalt_guard::GuardrailConfigs;
    assert!(other.list().expect("lists").is_empty(), "another tenant's");
    // Saves at once through several connections: every version is kept, numbered once.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let handle = PgGuardrails::new(connection(&cluster), "acme");
                for _ in 0..5 {
                    handle.save("support", &config).expect("saves");
                }
            });
        }
    });
    assert_eq!(acme.load("support", None).expect("loads").version, 21);
}

#[test]
fn the_audit_trail_in_postgres_is_one_chain_and_shows_tampering() {
    let cluster = TempCluster::start_migrated().expect("a PostgreSQL cluster");
    basalt_security::audit::conformance(&|| Box::new(PgAudit::new(connection(&cluster))));
    use basalt_security::audit::AuditTrail;
    let trail = PgAudit::new(connection(&cluster));
    let before = trail.verify().expect("verifies");
    assert_eq!(before.first_bad, None);
    // Someone with the database's password rewrites a record: the chain says where.
    cluster
        .execute(
            "UPDATE basalt.audit SET record = jsonb_set(record, '{principal}', '\"mallory\"') \
             WHERE seq = 5",
        )
        .expect("tampers");
    let after = trail.verify().expect("verifies");
    let bad = after.first_bad.expect("found");
    assert_eq!((bad.line, after.records), (5, 4), "{bad:?}");
    assert!(bad.problem.contains("modified"), "{bad:?}");
}

fn master(digit: &str) -> MasterKey {
    MasterKey::from_hex(&digit.repeat(64)).expect("a master key")
}

fn question(text: &str) -> Turn {
    Turn {
        question: text.into(),
        answer: "Twelve days a year.".into(),
        query: text.into(),
        abstained: false,
        citations: Vec::new(),
        prompt: None,
    }
}

/// Sessions pass the in-memory store's suite in the clear and sealed; two handles (replicas)
/// see each other's sessions at once; a sealed session's words are in none of the cluster's
/// files (while a clear one's are); a replica without the master key, or with another, is
/// refused.
#[test]
fn sessions_in_postgres_pass_the_suite_sealed_or_not_and_replicas_share_them() {
    let cluster = TempCluster::start_migrated().expect("a PostgreSQL cluster");
    let fresh = |policy: SessionPolicy, key: Option<&MasterKey>| -> Box<dyn Sessions> {
        cluster
            .execute("TRUNCATE basalt.sessions")
            .expect("empties");
        let key = key.map(|key| key as &dyn basalt_security::crypto::KeyProvider);
        Box::new(PgSessions::open(connection(&cluster), policy, key).expect("opens"))
    };
    basalt_answer::session_conformance::sessions(&|policy| fresh(policy, None));
    let key = master("1");
    basalt_answer::session_conformance::sessions(&|policy| fresh(policy, Some(&key)));

    // Two replicas with the same master key: a session made through one continues through
    // the other.
    let policy = SessionPolicy::default();
    let a = PgSessions::open(connection(&cluster), policy, Some(&key)).expect("opens");
    let b = PgSessions::open(connection(&cluster), policy, Some(&key)).expect("opens");
    let session = a.create("handbook", "alice").expect("creates");
    assert!(
        a.record(
            &session.id,
            question("How many Zanzibarican leave days are there?")
        )
        .expect("records")
    );
    let seen = b
        .get(&session.id)
        .expect("reads")
        .expect("live on the other replica");
    assert_eq!(seen.turns.len(), 1);
    assert!(
        b.record(&session.id, question("and Quetzalcoatlian ones?"))
            .expect("records")
    );
    assert_eq!(
        a.get(&session.id)
            .expect("reads")
            .expect("live")
            .turns
            .len(),
        2
    );
    let listed = b.list("alice").expect("lists");
    assert_eq!(
        listed[0].title, "How many Zanzibarican leave days are there?",
        "{listed:?}"
    );

    // The same words written in the clear into another database of the cluster.
    cluster.execute("CREATE DATABASE clear").expect("creates");
    let clear_url = cluster.url().replace("dbname=postgres", "dbname=clear");
    basalt_pg::migrations::migrate(
        &mut basalt_pg::migrations::connect(&clear_url).expect("connects"),
    )
    .expect("migrates");
    let clear = PgSessions::open(
        Arc::new(Connection::new(&clear_url, basalt_pg::migrations::check)),
        policy,
        None,
    )
    .expect("opens");
    let plain = clear.create("handbook", "bob").expect("creates");
    assert!(
        clear
            .record(&plain.id, question("Where is the Herringbonian office?"))
            .expect("records")
    );
    cluster.execute("CHECKPOINT").expect("checkpoint");
    let hits = basalt_pg::testing::plaintext_hits(
        cluster.data_dir(),
        &["Zanzibarican", "Quetzalcoatlian", "Twelve days"],
    );
    assert!(
        hits.iter()
            .all(|hit| !hit.contains("Zanzibarican") && !hit.contains("Quetzalcoatlian")),
        "{hits:#?}"
    );
    assert!(
        hits.iter().any(|hit| hit.contains("Twelve days")),
        "the clear database's answer is found, so the check can fail: {hits:#?}"
    );
    assert!(!basalt_pg::testing::plaintext_hits(cluster.data_dir(), &["Herringbonian"]).is_empty());

    // Without the master key, or with another, the sealed sessions are refused.
    let error = PgSessions::open(connection(&cluster), policy, None).expect_err("refused");
    assert!(error.to_string().contains("master key"), "{error}");
    let other = master("2");
    let error = PgSessions::open(connection(&cluster), policy, Some(&other)).expect_err("refused");
    assert!(error.to_string().contains("master key"), "{error}");
}

#[test]
fn the_model_registry_in_postgres_passes_the_file_suite() {
    let cluster = TempCluster::start_migrated().expect("a PostgreSQL cluster");
    basalt_model::registry_conformance(&|| {
        basalt_model::RemoteModels::shared(Arc::new(PgModelRegistry::new(connection(&cluster))))
    });
}

/// One bucket per caller across replicas: a burst of 3 at 2 a second is 3 requests through
/// any mix of replicas, then a refusal with the wait, then one more after half a second.
#[test]
fn rate_limits_in_postgres_hold_across_replicas() {
    let cluster = TempCluster::start_migrated().expect("a PostgreSQL cluster");
    let (a, b) = (
        PgRateLimits::new(connection(&cluster)),
        PgRateLimits::new(connection(&cluster)),
    );
    let take = |limits: &PgRateLimits, caller: &str| {
        limits.take(caller, 2.0, 3.0).expect("the database answers")
    };
    assert_eq!(take(&a, "key-1"), Ok(()));
    assert_eq!(take(&b, "key-1"), Ok(()));
    assert_eq!(take(&a, "key-1"), Ok(()));
    assert_eq!(
        take(&b, "key-1"),
        Err(1),
        "the burst is spent on both replicas together"
    );
    assert_eq!(take(&a, "key-1"), Err(1));
    assert_eq!(take(&b, "key-2"), Ok(()), "another key has its own bucket");
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(take(&b, "key-1"), Ok(()), "refilled at 2 a second");
    assert_eq!(take(&a, "key-1"), Err(1), "and only one");
}
