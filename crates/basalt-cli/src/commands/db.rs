//! `basalt db migrate|status`: the versioned schema of what replicas share in PostgreSQL
//! (`--database`), from `crates/basalt-pg/migrations/`.

use std::process::ExitCode;

use basalt_pg::migrations;
use serde::Serialize;

use super::print_line;
use crate::settings::Settings;

#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub(crate) enum DbCommand {
    /// Bring the database's Basalt schema to this version (creates it in a new database);
    /// run before the first `serve --database`, and after an upgrade. Safe to run again, and
    /// from two places at once
    Migrate {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show the database's schema version and the one this Basalt needs (exit code 1 when
    /// they differ)
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize)]
struct Status {
    version: i32,
    needed: i32,
    current: bool,
}

pub(crate) fn run(command: DbCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let url = settings.data_dir.database_url().ok_or_else(|| {
        anyhow::anyhow!(
            "no database: give it with --database URL or BASALT_DATABASE_URL \
             (postgres://user:password@host/dbname)"
        )
    })?;
    let mut client = migrations::connect(url).map_err(anyhow::Error::msg)?;
    match command {
        DbCommand::Migrate { json } => {
            let migrated = migrations::migrate(&mut client).map_err(anyhow::Error::msg)?;
            if json {
                print_line(&serde_json::to_string_pretty(&serde_json::json!({
                    "from": migrated.from,
                    "to": migrated.to,
                    "applied": migrated.applied,
                }))?)?;
            } else if migrated.applied.is_empty() {
                print_line(&format!(
                    "the database is at schema version {}: nothing to do",
                    migrated.to
                ))?;
            } else {
                print_line(&format!(
                    "migrated the database from schema version {} to {} ({})",
                    migrated.from,
                    migrated.to,
                    migrated.applied.join(", ")
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Status { json } => {
            let version = migrations::current(&mut client).map_err(anyhow::Error::msg)?;
            let status = Status {
                version,
                needed: migrations::latest(),
                current: version == migrations::latest(),
            };
            if json {
                print_line(&serde_json::to_string_pretty(&status)?)?;
            } else {
                let verdict = match migrations::check(&mut client) {
                    Ok(()) => "current".to_owned(),
                    Err(error) => error,
                };
                print_line(&format!(
                    "schema version {} (this Basalt needs {}): {verdict}",
                    status.version, status.needed
                ))?;
            }
            Ok(if status.current {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
