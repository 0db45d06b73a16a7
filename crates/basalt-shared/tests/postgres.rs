//! The identity directory and guardrail configurations in PostgreSQL against the conformance
//! suites the data directory's files pass, on a throwaway cluster (scripts/test.sh installs
//! PostgreSQL): each handle on a connection of its own, as replicas are.

use std::sync::Arc;

use basalt_pg::Connection;
use basalt_pg::testing::TempCluster;
use basalt_shared::{PgAudit, PgGuardrails, PgIdentities};

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
