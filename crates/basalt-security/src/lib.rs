//! Security: who is calling ([`Directory`]: principals in tenants, groups, API keys), what they
//! may do ([`policy`]: IAM-style documents, default deny, explicit deny wins), and what they did
//! ([`audit`]: a hash-chained, append-only trail), and the keys that keep data unreadable on disk
//! ([`crypto`]: envelope encryption with AES-256-GCM). No HTTP here: the server maps requests to
//! actions and resources and asks.

pub mod audit;
pub mod crypto;
mod directory;
mod error;
pub mod policy;
mod secret;

pub use directory::{
    ADMINISTRATOR_ACCESS, DEFAULT_TENANT, Directory, Group, Identity, KeyRecord, KeyRefusal,
    Principal, PrincipalKind, READ_ONLY_ACCESS, resource_name, validate_tenant_name,
};
pub use error::{Result, SecurityError};
pub use policy::{Decision, PolicyDocument};
pub use secret::Secret;

/// `bytes` bytes from the operating system's random source, as hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buffer = vec![0_u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| SecurityError::Random(error.to_string()))?;
    Ok(crypto::hex(&buffer))
}

/// Lower-case hex SHA-256 of the parts, concatenated.
pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    crypto::hex(&hasher.finalize())
}

/// The current time as RFC 3339 UTC, to the second.
pub fn now_rfc3339() -> String {
    format_now(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
}

/// The current time as RFC 3339 UTC, to the millisecond (audit records).
pub fn now_rfc3339_millis() -> String {
    format_now(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
}

fn format_now(format: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(format)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// Writes a file readable by its owner only, complete or absent after a crash.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, Some(0o600))
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content, never a mix:
/// a temporary file is written and synced, renamed over `path`, and the directory synced.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, None)
}

fn write_replacing(
    path: &std::path::Path,
    bytes: &[u8],
    #[cfg_attr(not(unix), allow(unused_variables))] mode: Option<u32>,
) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    // A bare file name's parent is "", which is the working directory.
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()?;
    Ok(())
}
