//! The identity directory: principals (users and services) in tenants, groups, stored
//! policies, and API keys — one JSON file, `<data dir>/security/iam.json`, written atomically.
//!
//! An API key is `bsk_<id>_<secret>`: a 48-bit public id (safe to log, names the key in lists
//! and audit records) and a 256-bit random secret, shown once at creation. Only a salted
//! SHA-256 of the secret is stored. (A slow password hash would add nothing: 256 random bits
//! cannot be guessed, and verification stays fast on every request.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SecurityError};
use crate::policy::{Decision, PolicyDocument, Request, evaluate};
use crate::secret::Secret;

/// The tenant of principals created without one.
pub const DEFAULT_TENANT: &str = "default";

/// Policies every directory has; they cannot be changed or removed.
pub const ADMINISTRATOR_ACCESS: &str = "AdministratorAccess";
pub const READ_ONLY_ACCESS: &str = "ReadOnlyAccess";

/// Actions [`READ_ONLY_ACCESS`] allows: read and ask, never change.
const READ_ONLY_ACTIONS: &[&str] = &[
    "kb:List",
    "kb:Get",
    "kb:Search",
    "kb:Answer",
    "kb:ListDocuments",
    "kb:GetDocument",
    "model:*",
    "session:*",
    "guardrail:List",
    "guardrail:Get",
    "guardrail:Apply",
];

const DIRECTORY_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    User,
    Service,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub tenant: String,
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Policies attached to the principal itself.
    #[serde(default)]
    pub policies: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    #[serde(default)]
    pub policies: BTreeSet<String>,
}

/// A stored API key: never the secret, only its salted hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub principal: String,
    salt: String,
    hash: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// The guardrail (`NAME` or `NAME:VERSION`, in the principal's tenant) every model request
    /// made with this key passes; requests cannot choose another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<String>,
    /// The chat model (a registered name, or the embedded one's) that writes answers for
    /// requests made with this key that name none; a request may still name another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// For an AWS access key (`keys create --aws`): the secret access key, sealed by the master
    /// key (hex), because SigV4 needs the secret itself to check a signature. Such a key has no
    /// `bsk_` form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_secret: Option<SealedSecret>,
}

/// An AWS secret access key as stored: sealed by the master key named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SealedSecret {
    master_key_id: String,
    sealed: String,
}

impl KeyRecord {
    /// True for an AWS access key (`keys create --aws`), which signs requests with SigV4.
    pub fn is_aws(&self) -> bool {
        self.sealed_secret.is_some()
    }
}

/// The directory's file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    pub principals: BTreeMap<String, Principal>,
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyDocument>,
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
}

/// Who a request is, once its key checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: String,
    pub tenant: String,
    pub groups: BTreeSet<String>,
    /// The key that authenticated (its public id).
    pub key_id: String,
    /// The guardrail the key is bound to.
    pub guardrail: Option<String>,
    /// The chat model the key writes answers with by default.
    pub model: Option<String>,
}

/// Why a key was refused (for the audit log; the client only hears "invalid key").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Malformed,
    Unknown,
    WrongSecret,
    Revoked,
    Expired,
    PrincipalGone,
    /// An AWS key whose secret this server's master key cannot unseal.
    SealedElsewhere,
}

impl KeyRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRefusal::Malformed => "malformed_key",
            KeyRefusal::Unknown => "unknown_key",
            KeyRefusal::WrongSecret => "wrong_secret",
            KeyRefusal::Revoked => "revoked_key",
            KeyRefusal::Expired => "expired_key",
            KeyRefusal::PrincipalGone => "principal_deleted",
            KeyRefusal::SealedElsewhere => "secret_sealed_by_another_master_key",
        }
    }
}

/// A resource name: `basalt:<tenant>:<path>`, like `basalt:acme:kb/handbook`.
pub fn resource_name(tenant: &str, path: &str) -> String {
    format!("basalt:{tenant}:{path}")
}

fn built_in(name: &str) -> Option<PolicyDocument> {
    let json = match name {
        ADMINISTRATOR_ACCESS => serde_json::json!({"Statement": [
            {"Sid": "Everything", "Effect": "Allow", "Action": "*", "Resource": "*"}]}),
        READ_ONLY_ACCESS => serde_json::json!({"Statement": [
            {"Sid": "ReadAndAsk", "Effect": "Allow", "Action": READ_ONLY_ACTIONS, "Resource": "*"}]}),
        _ => return None,
    };
    serde_json::from_value(json).ok()
}

impl Directory {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("security").join("iam.json")
    }

    /// Reads the directory (an absent file is an empty directory).
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = Self::path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Directory::default());
            }
            Err(error) => return Err(SecurityError::io(&path, error)),
        };
        Self::from_json(&bytes, &path)
    }

    /// The directory from its JSON, as a file or a database row holds it (`place` says which
    /// in an error); refused when a newer Basalt wrote it.
    pub fn from_json(json: &[u8], place: &Path) -> Result<Self> {
        let directory: Directory =
            serde_json::from_slice(json).map_err(|error| SecurityError::Corrupt {
                path: place.to_owned(),
                message: error.to_string(),
            })?;
        if directory.version > DIRECTORY_VERSION {
            return Err(SecurityError::Corrupt {
                path: place.to_owned(),
                message: format!(
                    "format version {} is newer than this basalt understands ({DIRECTORY_VERSION}); upgrade basalt",
                    directory.version
                ),
            });
        }
        Ok(directory)
    }

    /// The directory's JSON, stamped with this Basalt's format version.
    pub fn to_json(&mut self) -> Result<Vec<u8>> {
        self.version = DIRECTORY_VERSION;
        serde_json::to_vec_pretty(self).map_err(|error| SecurityError::Invalid {
            message: error.to_string(),
        })
    }

    /// Changes the directory under an exclusive lock (read, change, write), so two commands
    /// changing it at once never lose each other's change. Returns what `change` returned.
    pub fn update<T>(
        data_dir: &Path,
        change: impl FnOnce(&mut Directory) -> Result<T>,
    ) -> Result<T> {
        let lock_path = data_dir.join("security").join("iam.lock");
        if let Some(parent) = lock_path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| SecurityError::io(parent, error))?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| SecurityError::io(&lock_path, error))?;
        lock.lock()
            .map_err(|error| SecurityError::io(&lock_path, error))?;
        let mut directory = Directory::load(data_dir)?;
        let value = change(&mut directory)?;
        directory.save(data_dir)?;
        Ok(value)
    }

    pub fn save(&mut self, data_dir: &Path) -> Result<()> {
        let path = Self::path(data_dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| SecurityError::io(parent, error))?;
        }
        let bytes = self.to_json()?;
        basalt_core::fs::write_private(&path, &bytes)
            .map_err(|error| SecurityError::io(&path, error))
    }

    /// Creates a principal, or adds groups to an existing one (its tenant cannot change).
    pub fn upsert_principal(
        &mut self,
        name: &str,
        kind: PrincipalKind,
        tenant: Option<&str>,
        groups: &[String],
    ) -> Result<()> {
        validate_name("principal", name)?;
        for group in groups {
            validate_name("group", group)?;
        }
        if let Some(tenant) = tenant {
            validate_name("tenant", tenant)?;
        }
        match self.principals.get_mut(name) {
            Some(existing) => {
                if let Some(tenant) = tenant
                    && tenant != existing.tenant
                {
                    return Err(SecurityError::Invalid {
                        message: format!(
                            "principal {name:?} belongs to tenant {:?}; a principal cannot move to {tenant:?}",
                            existing.tenant
                        ),
                    });
                }
                existing.groups.extend(groups.iter().cloned());
            }
            None => {
                self.principals.insert(
                    name.to_owned(),
                    Principal {
                        kind,
                        tenant: tenant.unwrap_or(DEFAULT_TENANT).to_owned(),
                        groups: groups.iter().cloned().collect(),
                        policies: BTreeSet::new(),
                    },
                );
            }
        }
        for group in groups {
            self.groups.entry(group.clone()).or_default();
        }
        Ok(())
    }

    /// Stores (or replaces) a policy; built-in names are reserved.
    pub fn put_policy(&mut self, name: &str, document: PolicyDocument) -> Result<()> {
        validate_name("policy", name)?;
        if built_in(name).is_some() {
            return Err(SecurityError::Invalid {
                message: format!("{name:?} is a built-in policy and cannot be replaced"),
            });
        }
        document.validate()?;
        self.policies.insert(name.to_owned(), document);
        Ok(())
    }

    /// A stored or built-in policy.
    pub fn policy(&self, name: &str) -> Option<PolicyDocument> {
        built_in(name).or_else(|| self.policies.get(name).cloned())
    }

    /// Attaches a policy to a principal (`group: false`) or a group.
    pub fn attach(&mut self, policy: &str, target: &str, group: bool) -> Result<()> {
        if self.policy(policy).is_none() {
            return Err(SecurityError::NotFound {
                what: "policy",
                name: policy.to_owned(),
            });
        }
        let policies = if group {
            &mut self
                .groups
                .get_mut(target)
                .ok_or_else(|| SecurityError::NotFound {
                    what: "group",
                    name: target.to_owned(),
                })?
                .policies
        } else {
            &mut self
                .principals
                .get_mut(target)
                .ok_or_else(|| SecurityError::NotFound {
                    what: "principal",
                    name: target.to_owned(),
                })?
                .policies
        };
        policies.insert(policy.to_owned());
        Ok(())
    }

    pub fn detach(&mut self, policy: &str, target: &str, group: bool) -> Result<bool> {
        let policies = if group {
            self.groups.get_mut(target).map(|group| &mut group.policies)
        } else {
            self.principals
                .get_mut(target)
                .map(|principal| &mut principal.policies)
        };
        Ok(policies.is_some_and(|policies| policies.remove(policy)))
    }

    /// Creates a key for an existing principal; returns the record and the secret key text,
    /// which is never stored and cannot be shown again.
    pub fn create_key(
        &mut self,
        principal: &str,
        expires_at: Option<String>,
    ) -> Result<(KeyRecord, Secret)> {
        if !self.principals.contains_key(principal) {
            return Err(SecurityError::NotFound {
                what: "principal",
                name: principal.to_owned(),
            });
        }
        let id = crate::random_secret(6)?;
        let secret = crate::random_secret(32)?;
        let salt = crate::random_secret(16)?;
        let record = KeyRecord {
            id: id.clone(),
            principal: principal.to_owned(),
            hash: salted_hash(&salt, &secret),
            salt,
            created_at: basalt_core::clock::now_rfc3339(),
            expires_at,
            revoked_at: None,
            guardrail: None,
            model: None,
            sealed_secret: None,
        };
        self.keys.push(record.clone());
        Ok((record, Secret::new(format!("bsk_{id}_{secret}"))))
    }

    /// Creates an AWS access key for an existing principal: an access key id (`BSKA` and 16
    /// capitals or digits, the shape AWS tools expect) and a secret access key, which is stored
    /// sealed by `master` (SigV4 needs it to check signatures) and returned once.
    pub fn create_aws_key(
        &mut self,
        principal: &str,
        expires_at: Option<String>,
        master: &dyn crate::crypto::KeyProvider,
    ) -> Result<(KeyRecord, Secret)> {
        if !self.principals.contains_key(principal) {
            return Err(SecurityError::NotFound {
                what: "principal",
                name: principal.to_owned(),
            });
        }
        let id = format!("BSKA{}", crate::random_secret(8)?.to_ascii_uppercase());
        let secret = crate::random_secret(32)?;
        let bytes: [u8; 32] = basalt_core::hex::decode(&secret)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| SecurityError::Random("a secret of the wrong length".into()))?;
        let record = KeyRecord {
            id,
            principal: principal.to_owned(),
            salt: String::new(),
            hash: String::new(),
            created_at: basalt_core::clock::now_rfc3339(),
            expires_at,
            revoked_at: None,
            guardrail: None,
            model: None,
            sealed_secret: Some(SealedSecret {
                master_key_id: master.key_id().to_owned(),
                sealed: basalt_core::hex::encode(&master.wrap(&bytes)?),
            }),
        };
        self.keys.push(record.clone());
        Ok((record, Secret::new(secret)))
    }

    /// The identity of AWS access key `access_key_id` and its secret (to check the request's
    /// signature with), unsealed by `master`. Refused like [`Directory::authenticate`]; a key
    /// sealed by another master key is refused as unknown, with the reason in the audit detail.
    pub fn authenticate_aws(
        &self,
        access_key_id: &str,
        now_rfc3339: &str,
        master: Option<&dyn crate::crypto::KeyProvider>,
    ) -> std::result::Result<(Identity, Secret), (KeyRefusal, Option<String>)> {
        let Some((record, sealed)) = self.keys.iter().find_map(|key| {
            (key.id == access_key_id)
                .then_some(key.sealed_secret.as_ref().map(|sealed| (key, sealed)))
                .flatten()
        }) else {
            return Err((KeyRefusal::Unknown, Some(access_key_id.to_owned())));
        };
        let secret = master
            .filter(|master| master.key_id() == sealed.master_key_id)
            .and_then(|master| {
                master
                    .unwrap(&basalt_core::hex::decode(&sealed.sealed)?)
                    .ok()
            })
            .ok_or((KeyRefusal::SealedElsewhere, Some(record.id.clone())))?;
        let identity = self.admit(record, now_rfc3339)?;
        Ok((identity, Secret::new(basalt_core::hex::encode(&secret))))
    }

    /// Re-seals with `new` every AWS secret access key `old` sealed (a master-key rotation);
    /// returns how many, and the ids of keys whose sealed secret `old` could not open (damaged:
    /// left as they are, to be revoked). Keys sealed by another master key are left alone.
    pub fn reseal_aws_keys(
        &mut self,
        old: &dyn crate::crypto::KeyProvider,
        new: &dyn crate::crypto::KeyProvider,
    ) -> Result<(usize, Vec<String>)> {
        let (mut resealed, mut damaged) = (0, Vec::new());
        for key in &mut self.keys {
            let Some(sealed) = key.sealed_secret.as_mut() else {
                continue;
            };
            if sealed.master_key_id != old.key_id() {
                continue;
            }
            let opened =
                basalt_core::hex::decode(&sealed.sealed).and_then(|bytes| old.unwrap(&bytes).ok());
            let Some(secret) = opened else {
                damaged.push(key.id.clone());
                continue;
            };
            *sealed = SealedSecret {
                master_key_id: new.key_id().to_owned(),
                sealed: basalt_core::hex::encode(&new.wrap(&secret)?),
            };
            resealed += 1;
        }
        Ok((resealed, damaged))
    }

    /// Makes `model` the chat model of key `id`'s answers when a request names none; false
    /// when there is no such key.
    pub fn set_model(&mut self, id: &str, model: &str) -> bool {
        self.change_key(id, |key| key.model = Some(model.to_owned()))
    }

    /// Binds key `id` to a guardrail; false when there is no such key.
    pub fn bind_guardrail(&mut self, id: &str, guardrail: &str) -> bool {
        self.change_key(id, |key| key.guardrail = Some(guardrail.to_owned()))
    }

    /// Changes key `id`; false when there is no such key.
    fn change_key(&mut self, id: &str, change: impl FnOnce(&mut KeyRecord)) -> bool {
        self.keys
            .iter_mut()
            .find(|key| key.id == id)
            .map(change)
            .is_some()
    }

    /// Revokes a key by id; false when there is no such key.
    pub fn revoke_key(&mut self, id: &str) -> bool {
        self.change_key(id, |key| {
            key.revoked_at
                .get_or_insert_with(basalt_core::clock::now_rfc3339);
        })
    }

    /// Checks a presented key. The secret is compared in constant time.
    pub fn authenticate(
        &self,
        presented: &str,
        now_rfc3339: &str,
    ) -> std::result::Result<Identity, (KeyRefusal, Option<String>)> {
        let Some((id, secret)) = presented
            .strip_prefix("bsk_")
            .and_then(|rest| rest.split_once('_'))
        else {
            return Err((KeyRefusal::Malformed, None));
        };
        let Some(record) = self.keys.iter().find(|key| key.id == id && !key.is_aws()) else {
            return Err((KeyRefusal::Unknown, Some(id.to_owned())));
        };
        let expected = salted_hash(&record.salt, secret);
        if !crate::sigv4::constant_time_eq(expected.as_bytes(), record.hash.as_bytes()) {
            return Err((KeyRefusal::WrongSecret, Some(record.id.clone())));
        }
        self.admit(record, now_rfc3339)
    }

    /// The identity of a key whose secret checked out, unless it is revoked, expired or its
    /// principal is gone.
    fn admit(
        &self,
        record: &KeyRecord,
        now_rfc3339: &str,
    ) -> std::result::Result<Identity, (KeyRefusal, Option<String>)> {
        let refuse = |reason| Err((reason, Some(record.id.clone())));
        if record.revoked_at.is_some() {
            return refuse(KeyRefusal::Revoked);
        }
        // RFC 3339 UTC timestamps of one format order as strings.
        if record
            .expires_at
            .as_deref()
            .is_some_and(|expires| expires <= now_rfc3339)
        {
            return refuse(KeyRefusal::Expired);
        }
        let Some(principal) = self.principals.get(&record.principal) else {
            return refuse(KeyRefusal::PrincipalGone);
        };
        Ok(Identity {
            principal: record.principal.clone(),
            tenant: principal.tenant.clone(),
            groups: principal.groups.clone(),
            key_id: record.id.clone(),
            guardrail: record.guardrail.clone(),
            model: record.model.clone(),
        })
    }

    /// Every policy that applies to a principal (its own, then its groups'), by name.
    fn policies_of(&self, principal: &str) -> Vec<(String, PolicyDocument)> {
        let Some(found) = self.principals.get(principal) else {
            return Vec::new();
        };
        let mut names: Vec<&String> = found.policies.iter().collect();
        for group in &found.groups {
            if let Some(group) = self.groups.get(group) {
                names.extend(group.policies.iter());
            }
        }
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| self.policy(name).map(|policy| (name.clone(), policy)))
            .collect()
    }

    /// Decides whether `principal` may do `action` on `resource`.
    pub fn authorize(&self, principal: &str, action: &str, resource: &str) -> Decision {
        let policies = self.policies_of(principal);
        let tenant = self
            .principals
            .get(principal)
            .map(|found| found.tenant.clone())
            .unwrap_or_default();
        let context = BTreeMap::from([
            ("basalt:PrincipalName".to_owned(), principal.to_owned()),
            ("basalt:Tenant".to_owned(), tenant),
        ]);
        evaluate(
            policies
                .iter()
                .map(|(name, policy)| (name.as_str(), policy)),
            &Request {
                action,
                resource,
                context: &context,
            },
        )
    }
}

fn salted_hash(salt: &str, secret: &str) -> String {
    basalt_core::hex::sha256_parts(&[salt.as_bytes(), b":", secret.as_bytes()])
}

/// Checks a tenant name (the rule of every identity-directory name).
pub fn validate_tenant_name(tenant: &str) -> Result<()> {
    validate_name("tenant", tenant)
}

/// Names of principals, groups, tenants and policies (`basalt_core::access`).
fn validate_name(what: &'static str, name: &str) -> Result<()> {
    basalt_core::access::check_identity_name(what, name)
        .map_err(|message| SecurityError::Invalid { message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_keys_are_sealed_unsealed_only_by_their_master_key_and_resealed_on_rotation() {
        let master =
            |digit: &str| crate::crypto::MasterKey::from_hex(&digit.repeat(64)).expect("a key");
        let (first, second) = (master("1"), master("2"));
        let mut directory = directory();
        let now = "2026-12-07T00:00:00Z";
        let (record, secret) = directory
            .create_aws_key("alice", None, &first)
            .expect("created");
        assert!(record.is_aws() && record.id.starts_with("BSKA") && record.id.len() == 20);
        let stored = serde_json::to_string(&directory).expect("json");
        assert!(
            !stored.contains(secret.expose()),
            "the secret is stored sealed"
        );
        let (identity, unsealed) = directory
            .authenticate_aws(&record.id, now, Some(&first))
            .expect("authenticates");
        assert_eq!(
            (identity.principal.as_str(), identity.tenant.as_str()),
            ("alice", "acme")
        );
        assert_eq!(unsealed.expose(), secret.expose());
        let refusal = |result: std::result::Result<
            (Identity, Secret),
            (KeyRefusal, Option<String>),
        >| { result.map(|_| ()).map_err(|(reason, _)| reason) };
        assert_eq!(
            refusal(directory.authenticate_aws(&record.id, now, Some(&second))),
            Err(KeyRefusal::SealedElsewhere)
        );
        assert_eq!(
            refusal(directory.authenticate_aws(&record.id, now, None)),
            Err(KeyRefusal::SealedElsewhere)
        );
        assert_eq!(
            refusal(directory.authenticate_aws("BSKA0000000000000000", now, Some(&first))),
            Err(KeyRefusal::Unknown)
        );
        // An AWS key has no `bsk_` form, and a `bsk_` key is no AWS key.
        assert!(matches!(
            directory.authenticate(&format!("bsk_{}_{}", record.id, secret.expose()), now),
            Err((KeyRefusal::Unknown, _))
        ));
        let (api, _) = directory.create_key("alice", None).expect("an API key");
        assert_eq!(
            refusal(directory.authenticate_aws(&api.id, now, Some(&first))),
            Err(KeyRefusal::Unknown)
        );

        assert_eq!(
            directory
                .reseal_aws_keys(&first, &second)
                .expect("resealed"),
            (1, Vec::new())
        );
        assert_eq!(
            directory
                .reseal_aws_keys(&first, &second)
                .expect("none left"),
            (0, Vec::new())
        );
        let (_, unsealed) = directory
            .authenticate_aws(&record.id, now, Some(&second))
            .expect("the new master key unseals it");
        assert_eq!(unsealed.expose(), secret.expose());
        assert_eq!(
            refusal(directory.authenticate_aws(&record.id, now, Some(&first))),
            Err(KeyRefusal::SealedElsewhere)
        );
        directory.revoke_key(&record.id);
        assert_eq!(
            refusal(directory.authenticate_aws(&record.id, now, Some(&second))),
            Err(KeyRefusal::Revoked)
        );
    }

    fn directory() -> Directory {
        let mut directory = Directory::default();
        directory
            .upsert_principal("alice", PrincipalKind::User, Some("acme"), &["eng".into()])
            .expect("alice");
        directory
            .upsert_principal("bot", PrincipalKind::Service, None, &[])
            .expect("bot");
        directory
    }

    #[test]
    fn keys_authenticate_until_revoked_or_expired() {
        let mut directory = directory();
        let (record, secret) = directory.create_key("alice", None).expect("key");
        let now = "2026-11-30T00:00:00Z";
        let identity = directory
            .authenticate(secret.expose(), now)
            .expect("valid key");
        assert_eq!(identity.principal, "alice");
        assert_eq!(identity.tenant, "acme");
        assert_eq!(identity.key_id, record.id);
        assert!(secret.expose().len() > 64, "256-bit secret in hex");
        assert!(
            !serde_json::to_string(&directory)
                .expect("json")
                .contains(secret.expose().split('_').nth(2).expect("secret part"))
        );

        let mut wrong = secret.expose().to_owned();
        wrong.pop();
        wrong.push('0');
        for (presented, reason) in [
            ("", KeyRefusal::Malformed),
            ("Bearer x", KeyRefusal::Malformed),
            ("bsk_000000000000_abc", KeyRefusal::Unknown),
        ] {
            assert_eq!(
                directory
                    .authenticate(presented, now)
                    .expect_err("refused")
                    .0,
                reason
            );
        }
        if wrong != secret.expose() {
            assert_eq!(
                directory.authenticate(&wrong, now).expect_err("refused").0,
                KeyRefusal::WrongSecret
            );
        }

        let (expiring, expiring_secret) = directory
            .create_key("bot", Some("2026-12-01T00:00:00Z".into()))
            .expect("key");
        assert!(
            directory
                .authenticate(expiring_secret.expose(), now)
                .is_ok()
        );
        assert_eq!(
            directory
                .authenticate(expiring_secret.expose(), "2026-12-01T00:00:00Z")
                .expect_err("expired")
                .0,
            KeyRefusal::Expired
        );
        assert!(directory.revoke_key(&record.id));
        assert!(!directory.revoke_key("nope"));
        assert_eq!(
            directory
                .authenticate(secret.expose(), now)
                .expect_err("revoked")
                .0,
            KeyRefusal::Revoked
        );
        assert_ne!(expiring.id, record.id);
    }

    #[test]
    fn policies_attach_to_principals_and_groups() {
        let mut directory = directory();
        let resource = resource_name("acme", "kb/handbook");
        assert!(!directory.authorize("alice", "kb:Search", &resource).allowed);
        directory
            .attach(READ_ONLY_ACCESS, "eng", true)
            .expect("attach to group");
        assert!(directory.authorize("alice", "kb:Search", &resource).allowed);
        assert!(!directory.authorize("alice", "kb:Ingest", &resource).allowed);
        assert!(!directory.authorize("bot", "kb:Search", &resource).allowed);
        directory
            .put_policy(
                "no-payroll",
                PolicyDocument::parse(
                    r#"{"Statement": {"Effect": "Deny", "Action": "*", "Resource": "basalt:*:kb/payroll*"}}"#,
                )
                .expect("policy"),
            )
            .expect("put");
        directory
            .attach(ADMINISTRATOR_ACCESS, "alice", false)
            .expect("attach");
        directory
            .attach("no-payroll", "alice", false)
            .expect("attach");
        assert!(directory.authorize("alice", "kb:Ingest", &resource).allowed);
        let denied = directory.authorize("alice", "kb:Search", "basalt:acme:kb/payroll");
        assert_eq!(denied.explain(), "denied explicitly by no-payroll/#0");
        assert!(
            directory
                .put_policy(
                    ADMINISTRATOR_ACCESS,
                    directory.policy(READ_ONLY_ACCESS).expect("built in")
                )
                .is_err()
        );
        assert!(directory.attach("missing", "alice", false).is_err());
        assert!(
            directory
                .detach("no-payroll", "alice", false)
                .expect("detach")
        );
        assert!(
            directory
                .upsert_principal("alice", PrincipalKind::User, Some("other"), &[])
                .is_err()
        );
    }

    #[test]
    fn the_directory_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            Directory::load(dir.path()).expect("empty"),
            Directory::default()
        );
        let mut directory = directory();
        directory.create_key("alice", None).expect("key");
        directory.save(dir.path()).expect("save");
        let loaded = Directory::load(dir.path()).expect("load");
        assert_eq!(loaded.principals, directory.principals);
        assert_eq!(loaded.keys, directory.keys);
        std::fs::write(Directory::path(dir.path()), b"{not json").expect("corrupt");
        let error = Directory::load(dir.path()).expect_err("corrupt");
        assert!(error.to_string().contains("iam.json"), "{error}");
    }
}
