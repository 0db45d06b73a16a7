//! `basalt migrate --to postgres://… [--objects s3://…]`: an embedded data directory copied
//! into the scale-out backends (`basalt_shared::migrate`), the knowledge bases checked by
//! comparing searches, the result printed.

use std::process::ExitCode;

use anyhow::Context;
use basalt_shared::migrate::{Migration, Progress};

use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  basalt migrate --to postgres://basalt@db/basalt --objects s3://basalt-store/prod
  basalt --data-dir /srv/basalt migrate --to \"$BASALT_DATABASE_URL\" --json

The data directory (--data-dir) is the source; the master key (--master-key-file) must be the
one its encrypted knowledge bases were made with, and is the one the replicas will need.")]
pub(crate) struct MigrateArgs {
    /// The PostgreSQL database (with pgvector) to copy into: `postgres://user:password@host/db`.
    /// Its schema is made or brought up to date first (`basalt db migrate`)
    #[arg(long, value_name = "URL")]
    to: String,

    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &MigrateArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    if settings.data_dir.has_database() {
        anyhow::bail!(
            "the data directory is what `basalt migrate` copies: give the database to copy into \
             with --to, not --database (or BASALT_DATABASE_URL)"
        );
    }
    let from = settings.data_dir.for_tenant(basalt_kb::DEFAULT_TENANT)?;
    // The object store's uploads start empty: nothing waits in the data directory (a migration
    // refuses while jobs are queued), and it keeps no originals. Check that it answers now
    // rather than at the first upload.
    if let Some(objects) = from.objects() {
        objects
            .check()
            .with_context(|| format!("--objects {}", objects.url().to_url()))?;
    }
    let mut client = basalt_pg::migrations::connect(&args.to).map_err(anyhow::Error::msg)?;
    basalt_pg::migrations::migrate(&mut client).map_err(anyhow::Error::msg)?;
    drop(client);
    let to = from.clone().with_database(&args.to);

    let bar = indicatif::ProgressBar::with_draw_target(
        Some(0),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} documents")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let principal = super::security::cli_principal();
    let migration =
        basalt_shared::migrate::migrate(&from, &to, &principal, &mut |progress| match progress {
            Progress::Documents {
                tenant,
                kb,
                done,
                total,
            } => {
                bar.set_message(format!("copying {tenant}/{kb}"));
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            Progress::Comparing { tenant, kb } => {
                bar.set_message(format!("comparing searches on {tenant}/{kb}"));
            }
        });
    bar.finish_and_clear();
    let migration = migration?;

    if args.json {
        print_line(&serde_json::to_string_pretty(&migration)?)?;
    } else {
        print_report(
            &migration,
            &args.to,
            from.objects().map(|objects| objects.url().to_url()),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(migration: &Migration, to: &str, objects: Option<String>) -> anyhow::Result<()> {
    print_line(&format!(
        "copied into {}: {} tenants, {} principals, {} keys, {} remote models, {} guardrail \
         versions ({} new), {} audit records ({} new)",
        basalt_shared::migrate::redact(to),
        migration.tenants.len(),
        migration.principals,
        migration.keys,
        migration.models,
        migration.guardrail_versions,
        migration.guardrail_versions_added,
        migration.audit_records,
        migration.audit_records_added
    ))?;
    for kb in &migration.knowledge_bases {
        let agreement: Vec<String> = kb
            .comparison
            .modes
            .iter()
            .map(|mode| format!("{} {:.3}", mode.mode.as_str(), mode.overlap))
            .collect();
        print_line(&format!(
            "  {}/{}{}: {} documents, {} chunks ({} copied, {} unchanged, {} removed); the same \
             {} searches agree on the top {}: {}",
            kb.tenant,
            kb.name,
            if kb.encrypted { " (encrypted)" } else { "" },
            kb.documents,
            kb.chunks,
            kb.copied,
            kb.unchanged,
            kb.removed,
            kb.comparison.queries,
            kb.comparison.k,
            agreement.join(", ")
        ))?;
    }
    let objects = objects.map_or_else(String::new, |url| format!(" --objects {url}"));
    print_line(&format!(
        "serve it: basalt serve --database URL{objects} with the same master key (docs/deployment.md)"
    ))
}
