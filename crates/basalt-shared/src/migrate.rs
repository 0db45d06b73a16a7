//! Moving up from one process to replicas (`basalt migrate --to postgres://…`): everything an
//! embedded data directory holds that replicas share, copied into the database — the identity
//! directory (principals, groups, policies, API keys and AWS access keys, their secrets still
//! sealed by the same master key), the registry of remote models, every tenant's guardrail
//! configurations (each version under its number), every tenant's knowledge bases (documents,
//! chunks and vectors as they are, nothing embedded again; [`basalt_kb::migrate`]) and the
//! audit trail (its records as they are, so the chain still verifies).
//!
//! It is safe to run again: what an earlier run copied is found there and kept, what changed
//! in the data directory since is copied again, and anything in the database that did not come
//! from this data directory stops it with an error that says what, before it is touched.

use std::sync::Arc;

use basalt_guard::{GuardrailConfigs, GuardrailStore, StoreError};
use basalt_kb::migrate::KbCopy;
use basalt_kb::{DEFAULT_TENANT, DataDir, FileJobQueue, JobQueue, KbError};
use basalt_model::{ModelError, RemoteModels};
use basalt_security::audit::{AuditLog, AuditTrail, Event, Outcome};
use basalt_security::{Directory, DirectoryFile, Identities, SecurityError};
use serde::Serialize;

use crate::{PgAudit, PgGuardrails, PgIdentities, PgModelRegistry};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The data directory or the database is not in a state a copy can start from.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Kb(#[from] KbError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Guardrails(#[from] StoreError),
    #[error(transparent)]
    Models(#[from] ModelError),
}

/// What a migration copied.
#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub tenants: Vec<String>,
    pub principals: usize,
    /// API keys and AWS access keys.
    pub keys: usize,
    pub models: usize,
    /// Guardrail configuration versions in the data directory, and how many this run added.
    pub guardrail_versions: usize,
    pub guardrail_versions_added: usize,
    /// Audit records in the data directory, and how many this run added.
    pub audit_records: usize,
    pub audit_records_added: usize,
    pub knowledge_bases: Vec<KbCopy>,
}

/// Where a migration is, for a progress line.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Copying a knowledge base: documents done of all.
    Documents {
        tenant: &'a str,
        kb: &'a str,
        done: usize,
        total: usize,
    },
    /// Comparing searches on a copied knowledge base.
    Comparing { tenant: &'a str, kb: &'a str },
}

/// Copies the embedded data directory `from` into the database of `to` (a data directory
/// with `--database`, the same master key), for `principal` (who runs it, as the audit trail
/// names them). Refuses, before copying anything, while `from` has ingestion jobs queued or
/// running, or when its audit trail does not verify.
///
/// The migration is recorded (`admin:Migrate`) in the data directory's trail just before the
/// trail is copied, so it is the last record both share: another run later (the data
/// directory served on) copies what was added since, and one after replicas have appended to
/// the database's trail is refused, the two histories having parted.
pub fn migrate(
    from: &DataDir,
    to: &DataDir,
    principal: &str,
    observe: &mut dyn FnMut(Progress<'_>),
) -> Result<Migration, MigrateError> {
    if from.has_database() {
        return Err(MigrateError::Refused(
            "the data directory to copy is read without --database; name the database to copy \
             into with --to"
                .into(),
        ));
    }
    let connection = to.database_connection().ok_or_else(|| {
        MigrateError::Refused("nothing to copy into: give --to postgres://…".into())
    })?;
    let directory = DirectoryFile::new(from.root()).current()?;
    let tenants = tenants(from, &directory)?;

    // Before anything is written: nothing in flight, and a trail that verifies.
    let jobs = FileJobQueue::open(from)?;
    for tenant in &tenants {
        if let Some(job) = jobs
            .list(tenant, None)?
            .into_iter()
            .find(|job| job.status.is_active())
        {
            return Err(MigrateError::Refused(format!(
                "ingestion job {} for knowledge base {:?} (tenant {tenant:?}) is still {}: let \
                 `basalt serve` finish it on this data directory, then migrate",
                job.id,
                job.kb,
                format!("{:?}", job.status).to_lowercase()
            )));
        }
    }
    let trail = AuditLog::open(from.root());
    let verified = trail.verify()?;
    if let Some(bad) = verified.first_bad {
        return Err(MigrateError::Refused(format!(
            "the data directory's audit trail does not verify (record {}: {}); a copy would \
             carry the break into the database — see `basalt audit verify`",
            bad.line, bad.problem
        )));
    }

    if !PgAudit::new(connection.clone()).precedes(&trail.records()?)? {
        return Err(crate::parted().into());
    }

    let identities = PgIdentities::new(connection.clone());
    identities.change(&mut |there: &mut Directory| {
        let entries = |directory: &Directory| {
            (
                directory.principals.clone(),
                directory.groups.clone(),
                directory.policies.clone(),
                directory.keys.clone(),
            )
        };
        if entries(there) != entries(&Directory::default()) && entries(there) != entries(&directory)
        {
            return Err(SecurityError::Invalid {
                message: "the database's identity directory holds principals, policies or keys \
                          that are not this data directory's: migrate into a database that \
                          has none"
                    .into(),
            });
        }
        *there = (*directory).clone();
        Ok(())
    })?;

    let models = RemoteModels::new(from.root()).list()?;
    let shared = RemoteModels::shared(Arc::new(PgModelRegistry::new(connection.clone())));
    for model in &models {
        shared.add(model)?;
    }

    let (mut versions, mut added) = (0, 0);
    for tenant in &tenants {
        let source = from.for_tenant(tenant)?;
        let store = GuardrailStore::new(&source.tenant_dir());
        let target = PgGuardrails::new(connection.clone(), tenant);
        for summary in store.list()? {
            for version in 1..=summary.latest_version {
                let stored = match store.load(&summary.name, Some(version)) {
                    Ok(stored) => stored,
                    Err(StoreError::NoVersion { .. }) => continue,
                    Err(error) => return Err(error.into()),
                };
                versions += 1;
                added += usize::from(target.import(&summary.name, version, &stored.config)?);
            }
        }
    }

    let mut knowledge_bases = Vec::new();
    for tenant in &tenants {
        let (source, target) = (from.for_tenant(tenant)?, to.for_tenant(tenant)?);
        for settings in source.list()? {
            let name = settings.name.as_str();
            let copy = basalt_kb::migrate::copy_kb(&source, &target, name, &mut |done, total| {
                observe(Progress::Documents {
                    tenant,
                    kb: name,
                    done,
                    total,
                });
                if done == total {
                    observe(Progress::Comparing { tenant, kb: name });
                }
            })?;
            knowledge_bases.push(copy);
        }
    }

    // Last, so that a run that failed above has left no record of itself in either trail.
    let copied: usize = knowledge_bases.iter().map(|kb| kb.copied).sum();
    trail.append(Event {
        request_id: basalt_core::id::new_id("cli-", 8),
        principal: Some(principal.to_owned()),
        key_id: None,
        action: "admin:Migrate".into(),
        resource: "database".into(),
        outcome: Some(Outcome::Allowed),
        status: None,
        detail: Some(format!(
            "to {}: {} knowledge bases ({copied} documents copied), {} keys, {} guardrail \
             versions",
            redact(to.database_url().unwrap_or_default()),
            knowledge_bases.len(),
            directory.keys.len(),
            versions
        )),
    })?;
    let records = trail.records()?;
    let audit_added = PgAudit::new(connection).import(&records)?;

    Ok(Migration {
        principals: directory.principals.len(),
        keys: directory.keys.len(),
        tenants,
        models: models.len(),
        guardrail_versions: versions,
        guardrail_versions_added: added,
        audit_records: records.len(),
        audit_records_added: audit_added,
        knowledge_bases,
    })
}

/// Every tenant of the data directory: the default one, those its principals are in, and
/// those with a directory of their own (knowledge bases, guardrails), by name.
fn tenants(data: &DataDir, directory: &Directory) -> Result<Vec<String>, MigrateError> {
    let mut tenants = std::collections::BTreeSet::from([DEFAULT_TENANT.to_owned()]);
    tenants.extend(
        directory
            .principals
            .values()
            .map(|principal| principal.tenant.clone()),
    );
    let dir = data.root().join("tenants");
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|error| io_error(&dir, &error))?;
                if let Some(name) = entry.file_name().to_str()
                    && basalt_security::validate_tenant_name(name).is_ok()
                {
                    tenants.insert(name.to_owned());
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(&dir, &error)),
    }
    Ok(tenants.into_iter().collect())
}

fn io_error(path: &std::path::Path, error: &std::io::Error) -> MigrateError {
    MigrateError::Refused(format!("{}: {error}", path.display()))
}

/// A database URL without its password, for printing and records: `postgres://user:…@host/db`,
/// or `password=…` in the `key=value` form.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:…{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url
            .split_whitespace()
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=…",
                _ => pair,
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::redact("postgres://basalt:s3cret@db:5432/basalt"),
            "postgres://basalt:…@db:5432/basalt"
        );
        assert_eq!(
            super::redact("postgres://basalt@db/basalt"),
            "postgres://basalt@db/basalt"
        );
        assert_eq!(
            super::redact("host=/tmp dbname=basalt password=s3cret"),
            "host=/tmp dbname=basalt password=…"
        );
    }
}
