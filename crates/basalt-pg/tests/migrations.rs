//! `basalt db migrate`'s engine on a throwaway cluster: a new database is migrated to the
//! latest version once; a second run changes nothing; a database a newer Basalt migrated is
//! refused by both the check and the migration.

use basalt_pg::migrations::{self, check, connect, latest, migrate};
use basalt_pg::testing::TempCluster;

#[test]
fn migrations_apply_once_and_a_newer_schema_is_refused() {
    let cluster = TempCluster::start().expect("a PostgreSQL cluster");
    let mut client = connect(cluster.url()).expect("connects");
    let error = check(&mut client).expect_err("not migrated");
    assert!(error.contains("basalt db migrate"), "{error}");

    let first = migrate(&mut client).expect("migrates");
    assert_eq!((first.from, first.to), (0, latest()));
    assert_eq!(first.applied.len(), migrations::MIGRATIONS.len());
    check(&mut client).expect("current");
    for table in [
        "knowledge_bases",
        "jobs",
        "uploads",
        "identity",
        "guardrails",
    ] {
        let exists: bool = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("basalt.{table}")],
            )
            .expect("asks")
            .get(0);
        assert!(exists, "basalt.{table}");
    }
    let again = migrate(&mut connect(cluster.url()).expect("connects")).expect("migrates");
    assert_eq!((again.from, again.applied.len()), (latest(), 0));

    // Two at once take turns: both succeed, the migrations are recorded once.
    cluster
        .execute("DROP SCHEMA basalt CASCADE")
        .expect("starts over");
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                migrate(&mut connect(cluster.url()).expect("connects")).expect("migrates")
            });
        }
    });
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM basalt.migrations", &[])
        .expect("counts")
        .get(0);
    assert_eq!(recorded, migrations::MIGRATIONS.len() as i64);

    cluster
        .execute(&format!(
            "INSERT INTO basalt.migrations (version, name) VALUES ({}, 'from the future')",
            latest() + 1
        ))
        .expect("a newer Basalt");
    let error = check(&mut client).expect_err("newer");
    assert!(error.contains("newer"), "{error}");
    let error = migrate(&mut client).expect_err("newer");
    assert!(error.contains("newer"), "{error}");
}
