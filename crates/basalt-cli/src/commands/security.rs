//! `basalt keys`, `basalt policy` and `basalt audit`: API keys and the principals they name,
//! IAM-style policies and their simulation, and the audit trail.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use basalt_kb::DataDir;
use basalt_security::audit::{AuditLog, Event, Outcome};
use basalt_security::{PolicyDocument, PrincipalKind};

use super::print_line;
use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key (and its principal, if new); the key is printed once
    #[command(after_help = "Examples:\n  \
        basalt keys create --principal admin --policy AdministratorAccess\n  \
        basalt keys create --principal alice --groups eng,hr\n  \
        basalt keys create --principal indexer --service --policy ingest-only --expires-in-days 90\n  \
        basalt keys create --aws --principal app --policy ReadOnlyAccess   # for boto3 and the AWS CLI")]
    Create(CreateKeyArgs),
    /// List keys (ids, principals, state; never secrets)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id: it stops working at once
    Revoke { id: String },
    /// Write a new random master key (64 hex digits, mode 0600) for encryption at rest
    #[command(after_help = "Example:\n  \
        basalt keys generate-master                  # ~/.config/basalt/master.key, used by default\n  \
        basalt keys generate-master --out /etc/basalt/master.key\n  \
        export BASALT_MASTER_KEY_FILE=/etc/basalt/master.key\n\n\
        Keep the key outside the data directory and back it up: without it, encrypted knowledge\n\
        bases cannot be read.")]
    GenerateMaster {
        /// Where to write the key; an existing file is never overwritten [default:
        /// ~/.config/basalt/master.key, the key used when none is given]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Re-wrap every encrypted knowledge base's data key (every tenant) with a new master key;
    /// the data is not rewritten. The current key comes from BASALT_MASTER_KEY_FILE
    #[command(
        name = "rotate-master",
        after_help = "Example:\n  \
        basalt keys generate-master --out new.key\n  \
        BASALT_MASTER_KEY_FILE=old.key basalt keys rotate-master --new-key-file new.key\n  \
        export BASALT_MASTER_KEY_FILE=new.key\n\n\
        Each knowledge base's key file is replaced atomically; if a rotation is interrupted, run\n\
        it again with the same keys to finish it."
    )]
    RotateMaster {
        /// The new master key
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateKeyArgs {
    /// The principal the key acts as
    #[arg(long)]
    principal: String,
    /// Groups the principal belongs to (added to existing ones), comma-separated
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// The principal's tenant, when it is new [default: default]
    #[arg(long)]
    tenant: Option<String>,
    /// The principal is a service, not a person
    #[arg(long)]
    service: bool,
    /// Policies to attach to the principal (repeatable): stored ones or the built-in
    /// AdministratorAccess and ReadOnlyAccess
    #[arg(long = "policy", value_name = "NAME")]
    policies: Vec<String>,
    /// Days until the key stops working [default: never]
    #[arg(long, value_name = "DAYS")]
    expires_in_days: Option<u32>,
    /// Bind the key to a guardrail of its principal's tenant (NAME or NAME:VERSION): every
    /// chat completion and answer made with it passes that guardrail, and cannot choose another
    #[arg(long, value_name = "NAME[:VERSION]")]
    guardrail: Option<String>,
    /// The chat model answers made with this key are written by when a request names none (a
    /// model registered with `basalt models add`, or the embedded one's name); a request may
    /// still name another
    #[arg(long, value_name = "NAME")]
    model: Option<String>,
    /// Make an AWS access key (an access key id and a secret access key) for boto3, the AWS
    /// CLI and the AWS SDKs, which sign requests with SigV4 (service `bedrock`, any region).
    /// The secret is stored sealed with the master key, because checking a signature needs it
    #[arg(long)]
    aws: bool,
    /// Print JSON (with the key) instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum PolicyCommand {
    /// Store (or replace) a policy document from a file (`-` reads standard input)
    #[command(after_help = "Example policy:\n  \
        {\"Statement\": [{\"Sid\": \"Handbook\", \"Effect\": \"Allow\",\n                  \
        \"Action\": [\"kb:Search\", \"kb:Answer\"], \"Resource\": \"basalt:*:kb/handbook\"}]}")]
    Put { name: String, file: PathBuf },
    /// List stored and built-in policies and what they are attached to
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a policy document
    Show { name: String },
    /// Attach a policy to a principal or a group
    Attach(AttachArgs),
    /// Detach a policy from a principal or a group
    Detach(AttachArgs),
    /// Explain whether a principal may do an action on a resource, and which statement decided
    #[command(after_help = "Example:\n  \
        basalt policy simulate --principal alice --action kb:Ingest --resource basalt:default:kb/handbook")]
    Simulate {
        #[arg(long)]
        principal: String,
        #[arg(long)]
        action: String,
        #[arg(long)]
        resource: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct AttachArgs {
    name: String,
    #[arg(long, conflicts_with = "group", required_unless_present = "group")]
    principal: Option<String>,
    #[arg(long)]
    group: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the hash chain of the whole log; names the first bad record
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Print the last records
    Tail {
        /// How many
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Print the records that match every given condition
    Search {
        #[arg(long)]
        principal: Option<String>,
        /// An action or a pattern like `kb:*`
        #[arg(long)]
        action: Option<String>,
        /// allowed, denied, unauthenticated or blocked (by a guardrail)
        #[arg(long)]
        outcome: Option<String>,
        /// Records at or after this RFC 3339 time (2026-11-30T08:00:00Z)
        #[arg(long)]
        since: Option<String>,
        /// At most this many (the newest)
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
}

/// Who the audit trail says acted from the command line: `cli:` and the user's login name.
pub(crate) fn cli_principal() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Records an administrative action taken from the command line.
pub(crate) fn audit(
    settings: &Settings,
    action: &str,
    resource: &str,
    detail: String,
) -> anyhow::Result<()> {
    let log = super::audit_trail(settings);
    log.append(Event {
        request_id: basalt_core::id::new_id("cli-", 8),
        principal: Some(cli_principal()),
        key_id: None,
        action: action.into(),
        resource: resource.into(),
        outcome: Some(Outcome::Allowed),
        status: None,
        detail: Some(detail),
    })
    .context("while writing the audit log")?;
    Ok(())
}

pub(crate) fn run_keys(command: KeysCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(args) => {
            if let Some(reference) = &args.guardrail {
                // The guardrail must exist in the tenant the key's principal is (or will be) in.
                let existing = super::identities(settings)
                    .current()?
                    .principals
                    .get(&args.principal)
                    .map(|principal| principal.tenant.clone());
                let tenant = existing
                    .or_else(|| args.tenant.clone())
                    .unwrap_or_else(|| basalt_kb::DEFAULT_TENANT.to_owned());
                let store = super::guardrails(&settings.data_dir.for_tenant(&tenant)?);
                super::guard::load(store.as_ref(), reference, settings, None).with_context(
                    || format!("--guardrail {reference}: not a guardrail of tenant {tenant:?}"),
                )?;
            }
            let expires_at = args
                .expires_in_days
                .map(|days| {
                    let at = time::OffsetDateTime::now_utc() + time::Duration::days(days.into());
                    at.format(time::macros::format_description!(
                        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
                    ))
                })
                .transpose()?;
            let kind = if args.service {
                PrincipalKind::Service
            } else {
                PrincipalKind::User
            };
            if let Some(model) = &args.model
                && basalt_shared::remote_models(&settings.data_dir)
                    .resolve(model)?
                    .is_none()
            {
                anyhow::bail!(
                    "--model {model}: no model of that name; register it with `basalt models add \
                     {model} …` or use {}",
                    basalt_model::DEFAULT_GENERATION_MODEL
                );
            }
            // An AWS key's secret is sealed by the master key (made now if there is none).
            let keyed = args.aws.then(|| settings.data_dir_with_key()).transpose()?;
            let master = keyed.as_ref().and_then(DataDir::master_key);
            let (record, secret) = basalt_security::update_identities(
                super::identities(settings).as_ref(),
                |directory| {
                    directory.upsert_principal(
                        &args.principal,
                        kind,
                        args.tenant.as_deref(),
                        &args.groups,
                    )?;
                    for policy in &args.policies {
                        directory.attach(policy, &args.principal, false)?;
                    }
                    let (record, secret) = match &master {
                        Some(master) => directory.create_aws_key(
                            &args.principal,
                            expires_at.clone(),
                            *master,
                        )?,
                        None => directory.create_key(&args.principal, expires_at.clone())?,
                    };
                    if let Some(guardrail) = &args.guardrail {
                        directory.bind_guardrail(&record.id, guardrail);
                    }
                    if let Some(model) = &args.model {
                        directory.set_model(&record.id, model);
                    }
                    Ok((record, secret))
                },
            )?;
            audit(
                settings,
                "admin:CreateKey",
                &format!("key/{}", record.id),
                format!("principal {}", record.principal),
            )?;
            if args.aws {
                let access = serde_json::json!({
                    "id": record.id,
                    "principal": record.principal,
                    "expires_at": record.expires_at,
                    "guardrail": args.guardrail,
                    "model": args.model,
                    "aws_access_key_id": record.id,
                    "aws_secret_access_key": secret.expose(),
                });
                if args.json {
                    print_line(&serde_json::to_string_pretty(&access)?)?;
                } else {
                    print_line(&format!("AWS_ACCESS_KEY_ID={}", record.id))?;
                    print_line(&format!("AWS_SECRET_ACCESS_KEY={}", secret.expose()))?;
                    eprintln!(
                        "created AWS access key {} for {} — store the secret now: it is not shown \
                         again. Point boto3 at this server with endpoint_url (service bedrock, any region)",
                        record.id, record.principal
                    );
                }
            } else if args.json {
                print_line(&serde_json::to_string_pretty(&serde_json::json!({
                    "id": record.id,
                    "principal": record.principal,
                    "expires_at": record.expires_at,
                    "guardrail": args.guardrail,
                    "model": args.model,
                    "key": secret.expose(),
                }))?)?;
            } else {
                print_line(secret.expose())?;
                eprintln!(
                    "created key {} for {}{} — store it now: it is not shown again",
                    record.id,
                    record.principal,
                    record
                        .expires_at
                        .map(|at| format!(", expires {at}"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { json } => {
            let directory = super::identities(settings).current()?;
            if json {
                let keys: Vec<serde_json::Value> = directory
                    .keys
                    .iter()
                    .map(|key| {
                        serde_json::json!({
                            "id": key.id, "principal": key.principal,
                            "created_at": key.created_at, "expires_at": key.expires_at,
                            "revoked_at": key.revoked_at, "guardrail": key.guardrail,
                            "kind": if key.is_aws() { "aws" } else { "api" },
                            "model": key.model,
                        })
                    })
                    .collect();
                print_line(&serde_json::to_string_pretty(&keys)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            print_line(&format!(
                "{:<20} {:<20} {:<10} {:<21} expires",
                "id", "principal", "state", "created"
            ))?;
            let now = basalt_core::clock::now_rfc3339();
            for key in &directory.keys {
                let state = if key.revoked_at.is_some() {
                    "revoked"
                } else if key
                    .expires_at
                    .as_deref()
                    .is_some_and(|at| at <= now.as_str())
                {
                    "expired"
                } else {
                    "active"
                };
                print_line(&format!(
                    "{:<20} {:<20} {:<10} {:<21} {}",
                    key.id,
                    key.principal,
                    state,
                    key.created_at,
                    key.expires_at.as_deref().unwrap_or("never")
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id } => {
            let revoked = basalt_security::update_identities(
                super::identities(settings).as_ref(),
                |directory| Ok(directory.revoke_key(&id)),
            )?;
            if !revoked {
                anyhow::bail!("no key with id {id:?}; see `basalt keys list`");
            }
            audit(
                settings,
                "admin:RevokeKey",
                &format!("key/{id}"),
                "revoked".into(),
            )?;
            print_line(&format!("revoked key {id}"))?;
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::GenerateMaster { out } => {
            let out = out.unwrap_or_else(basalt_security::crypto::default_master_key_path);
            let key = basalt_security::crypto::MasterKey::generate_file(&out)?;
            use basalt_security::crypto::KeyProvider;
            let usage = if out == basalt_security::crypto::default_master_key_path() {
                "it is used whenever no other key is given"
            } else {
                "set BASALT_MASTER_KEY_FILE to use it"
            };
            print_line(&format!(
                "wrote master key {} to {} (mode 0600); {usage}. Back it up: without it, the knowledge bases encrypted with it cannot be read",
                key.key_id(),
                out.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::RotateMaster { new_key_file, json } => {
            let old = settings.data_dir.master_key().ok_or_else(|| {
                anyhow::anyhow!(
                    "set BASALT_MASTER_KEY_FILE (or --master-key-file) to the current master key"
                )
            })?;
            let new = basalt_security::crypto::MasterKey::from_file(&new_key_file)?;
            // AWS access keys' secrets are sealed by the master key too: re-sealed first, so a
            // failure leaves everything under the old key.
            let (resealed, damaged) = basalt_security::update_identities(
                super::identities(settings).as_ref(),
                |directory| directory.reseal_aws_keys(old, &new),
            )?;
            if !damaged.is_empty() {
                eprintln!(
                    "warning: the sealed secret of AWS key(s) {} cannot be opened with the current \
                     master key; they stay as they are (revoke them with `basalt keys revoke ID`)",
                    damaged.join(", ")
                );
            }
            let rotation = settings.data_dir.rotate_master(old, &new)?;
            use basalt_security::crypto::KeyProvider;
            audit(
                settings,
                "admin:RotateMasterKey",
                "master-key",
                format!(
                    "{} -> {}: {} rotated, {} already, {resealed} AWS key(s) re-sealed",
                    old.key_id(),
                    new.key_id(),
                    rotation.rotated.len(),
                    rotation.already.len()
                ),
            )?;
            if json {
                print_line(&serde_json::to_string_pretty(&rotation)?)?;
            } else {
                print_line(&format!(
                    "re-wrapped {} knowledge base key(s) with master key {} ({} already were, {} not encrypted) and re-sealed {resealed} AWS access key(s); now set BASALT_MASTER_KEY_FILE={}",
                    rotation.rotated.len(),
                    new.key_id(),
                    rotation.already.len(),
                    rotation.unencrypted.len(),
                    new_key_file.display()
                ))?;
                if !rotation.other_key.is_empty() {
                    let paths: Vec<String> = rotation
                        .other_key
                        .iter()
                        .map(|path| path.display().to_string())
                        .collect();
                    print_line(&format!(
                        "left {} knowledge base(s) under another master key (neither the current nor the new one): {}",
                        paths.len(),
                        paths.join(", ")
                    ))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn run_policy(command: PolicyCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Put { name, file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let document = PolicyDocument::parse(&text)?;
            basalt_security::update_identities(
                super::identities(settings).as_ref(),
                |directory| directory.put_policy(&name, document),
            )?;
            audit(
                settings,
                "admin:PutPolicy",
                &format!("policy/{name}"),
                "stored".into(),
            )?;
            print_line(&format!("stored policy {name}"))?;
        }
        PolicyCommand::List { json } => {
            let directory = super::identities(settings).current()?;
            let mut names: Vec<String> = vec![
                basalt_security::ADMINISTRATOR_ACCESS.into(),
                basalt_security::READ_ONLY_ACCESS.into(),
            ];
            names.extend(directory.policies.keys().cloned());
            let rows: Vec<serde_json::Value> = names
                .iter()
                .map(|name| {
                    let principals: Vec<&String> = directory
                        .principals
                        .iter()
                        .filter(|(_, principal)| principal.policies.contains(name))
                        .map(|(principal, _)| principal)
                        .collect();
                    let groups: Vec<&String> = directory
                        .groups
                        .iter()
                        .filter(|(_, group)| group.policies.contains(name))
                        .map(|(group, _)| group)
                        .collect();
                    serde_json::json!({"name": name, "principals": principals, "groups": groups})
                })
                .collect();
            if json {
                print_line(&serde_json::to_string_pretty(&rows)?)?;
            } else {
                for row in rows {
                    print_line(&format!(
                        "{:<24} principals: {}  groups: {}",
                        row["name"].as_str().unwrap_or_default(),
                        row["principals"],
                        row["groups"]
                    ))?;
                }
            }
        }
        PolicyCommand::Show { name } => {
            let directory = super::identities(settings).current()?;
            let policy = directory
                .policy(&name)
                .with_context(|| format!("no policy named {name:?}; see `basalt policy list`"))?;
            print_line(&serde_json::to_string_pretty(&policy)?)?;
        }
        PolicyCommand::Attach(args) => {
            let (target, group) = target(&args);
            basalt_security::update_identities(
                super::identities(settings).as_ref(),
                |directory| directory.attach(&args.name, target, group),
            )?;
            audit(
                settings,
                "admin:AttachPolicy",
                &format!("policy/{}", args.name),
                format!("to {target}"),
            )?;
            print_line(&format!("attached {} to {target}", args.name))?;
        }
        PolicyCommand::Detach(args) => {
            let (target, group) = target(&args);
            let detached = basalt_security::update_identities(
                super::identities(settings).as_ref(),
                |directory| directory.detach(&args.name, target, group),
            )?;
            if !detached {
                anyhow::bail!("{} is not attached to {target}", args.name);
            }
            audit(
                settings,
                "admin:DetachPolicy",
                &format!("policy/{}", args.name),
                format!("from {target}"),
            )?;
            print_line(&format!("detached {} from {target}", args.name))?;
        }
        PolicyCommand::Simulate {
            principal,
            action,
            resource,
            json,
        } => {
            let directory = super::identities(settings).current()?;
            if !directory.principals.contains_key(&principal) {
                anyhow::bail!("no principal named {principal:?}; see `basalt keys list`");
            }
            let decision = directory.authorize(&principal, &action, &resource);
            if json {
                print_line(&serde_json::to_string_pretty(&decision)?)?;
            } else {
                print_line(&format!(
                    "{}: {principal} {action} {resource}\n{}",
                    if decision.allowed { "ALLOW" } else { "DENY" },
                    decision.explain()
                ))?;
            }
            return Ok(if decision.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn target(args: &AttachArgs) -> (&str, bool) {
    match (&args.principal, &args.group) {
        (Some(principal), _) => (principal, false),
        (None, Some(group)) => (group, true),
        (None, None) => ("", false),
    }
}

pub(crate) fn run_audit(command: AuditCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let trail = super::audit_trail(settings);
    // Where a bad record is: a line of the file, or a row of the database's table.
    let (unit, place) = match settings.data_dir.has_database() {
        true => ("record", "basalt.audit (--database)".to_owned()),
        false => (
            "line",
            AuditLog::path(settings.data_dir.root())
                .display()
                .to_string(),
        ),
    };
    match command {
        AuditCommand::Verify { json } => {
            let verification = trail.verify()?;
            if json {
                print_line(&serde_json::to_string_pretty(&verification)?)?;
            } else if let Some(bad) = &verification.first_bad {
                print_line(&format!(
                    "TAMPERED: {unit} {} of {place}: {}\n{} records before it verify.",
                    bad.line, bad.problem, verification.records
                ))?;
            } else {
                print_line(&format!(
                    "ok: {} records, chain intact; last hash {} (keep it elsewhere to detect a truncated log)",
                    verification.records, verification.last_hash
                ))?;
            }
            Ok(if verification.first_bad.is_some() {
                ExitCode::from(4)
            } else {
                ExitCode::SUCCESS
            })
        }
        AuditCommand::Tail { lines } => {
            let records = trail.records()?;
            for record in records.iter().skip(records.len().saturating_sub(lines)) {
                print_line(&serde_json::to_string(record)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Search {
            principal,
            action,
            outcome,
            since,
            lines,
        } => {
            // An outcome that is none of the three matches no record.
            let parsed_outcome = match outcome.as_deref().map(|outcome| {
                serde_json::from_value::<Outcome>(serde_json::Value::String(outcome.into()))
            }) {
                None => None,
                Some(Ok(outcome)) => Some(outcome),
                Some(Err(_)) => return Ok(ExitCode::SUCCESS),
            };
            let query = basalt_security::audit::Query {
                principal,
                action,
                outcome: parsed_outcome,
                since,
                ..basalt_security::audit::Query::default()
            };
            for record in trail.search(&query, lines)? {
                print_line(&serde_json::to_string(&record)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
