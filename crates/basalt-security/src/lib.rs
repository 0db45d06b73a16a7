//! Security: who is calling ([`Directory`]: principals in tenants, groups, API keys), what they
//! may do ([`policy`]: IAM-style documents, default deny, explicit deny wins), and what they did
//! ([`audit`]: a hash-chained, append-only trail), and the keys that keep data unreadable on disk
//! ([`crypto`]: envelope encryption with AES-256-GCM). No HTTP here: the server maps requests to
//! actions and resources and asks.

pub mod audit;
pub mod crypto;
mod directory;
mod error;
mod identities;
pub mod policy;
mod secret;
pub use basalt_core::sigv4;

pub use directory::{
    ADMINISTRATOR_ACCESS, DEFAULT_TENANT, Directory, Group, Identity, KeyRecord, KeyRefusal,
    Principal, PrincipalKind, READ_ONLY_ACCESS, resource_name, validate_tenant_name,
};
pub use error::{Result, SecurityError};
pub use identities::conformance as identities_conformance;
pub use identities::{DirectoryFile, Identities, update as update_identities};
pub use policy::{Decision, PolicyDocument};
pub use secret::Secret;

/// `bytes` bytes of a secret (a key, a salt) from the operating system's random source, as hex.
pub(crate) fn random_secret(bytes: usize) -> Result<String> {
    basalt_core::id::random_hex(bytes).map_err(|error| SecurityError::Random(error.to_string()))
}
