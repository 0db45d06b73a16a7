//! Encryption at rest: envelope encryption with AES-256-GCM.
//!
//! Each encrypted knowledge base has its own random 256-bit **data key**, which seals its files
//! ([`DataKey::seal`]). The data key is stored only wrapped (sealed) by the **master key**, in
//! an [`Envelope`] next to the data. The master key comes from a [`KeyProvider`]: a local key
//! file or environment variable today ([`MasterKey`]), an external KMS behind the same trait
//! later. Rotating the master key re-wraps the data keys and leaves the data as it is.
//!
//! Sealed bytes: `BSE1` ‖ 96-bit random nonce ‖ ciphertext ‖ 128-bit tag. The nonce is random
//! per seal: far below the 2³² messages per key where random GCM nonces start to risk repeats.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SecurityError};

const MAGIC: &[u8; 4] = b"BSE1";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Bytes a seal adds to its plaintext.
pub const SEAL_OVERHEAD: usize = MAGIC.len() + NONCE_BYTES + TAG_BYTES;
/// Additional data of a wrapped data key: a data key is never mistaken for a file.
const WRAP_CONTEXT: &[u8] = b"basalt data key v1";
/// What a data key's tag key is derived with.
const TAG_KEY_CONTEXT: &[u8] = b"basalt keyed hash v1";

/// A 256-bit AES-GCM key that seals and opens data. Its bytes never print.
#[derive(Clone)]
pub struct DataKey {
    cipher: Aes256Gcm,
    /// The key of [`DataKey::tag`], derived from the data key (never the key that seals).
    tag_key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    fn from_bytes(bytes: &[u8; 32]) -> Self {
        DataKey {
            cipher: Aes256Gcm::new(bytes.into()),
            tag_key: basalt_core::hex::hmac_sha256(bytes, TAG_KEY_CONTEXT),
        }
    }

    fn random_bytes() -> Result<[u8; 32]> {
        let mut bytes = [0_u8; 32];
        getrandom::fill(&mut bytes).map_err(|error| SecurityError::Random(error.to_string()))?;
        Ok(bytes)
    }

    /// `plaintext`, encrypted and authenticated.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        self.seal_with(plaintext, b"")
    }

    /// The plaintext of [`DataKey::seal`]'s output; an error for another key's output, a
    /// changed or truncated one, or bytes that were never sealed.
    pub fn open(&self, sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.open_with(sealed, b"")
    }

    /// A keyed hash of `data` (HMAC-SHA-256 under a key derived from this one): the same for
    /// the same data, so it can be looked up, and says nothing of the data without the key.
    pub fn tag(&self, data: &[u8]) -> [u8; 32] {
        basalt_core::hex::hmac_sha256(&self.tag_key, data)
    }

    fn seal_with(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0_u8; NONCE_BYTES];
        // The random source failing is not something to write data through.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut nonce).expect("the operating system's random source");
        let payload = Payload {
            msg: plaintext,
            aad: context,
        };
        // AES-GCM encryption fails only for messages over 64 GiB.
        #[allow(clippy::expect_used)]
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("a message under 64 GiB");
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    fn open_with(&self, sealed: &[u8], context: &[u8]) -> std::result::Result<Vec<u8>, String> {
        if sealed.len() < SEAL_OVERHEAD || &sealed[..MAGIC.len()] != MAGIC {
            return Err("not encrypted by Basalt (no BSE1 header)".into());
        }
        let (nonce, ciphertext) = sealed[MAGIC.len()..].split_at(NONCE_BYTES);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| "authentication failed: another key, or changed bytes".into())
    }
}

/// What a store seals and tags with: the inherent methods above.
impl basalt_core::sealer::Sealer for DataKey {
    fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        DataKey::seal(self, plaintext)
    }

    fn open(&self, sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
        DataKey::open(self, sealed)
    }

    fn tag(&self, data: &[u8]) -> [u8; 32] {
        DataKey::tag(self, data)
    }
}

/// Where the master key comes from. The key never leaves the provider: it wraps and unwraps
/// data keys. An external KMS implements this too.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// A public name for the key (stored in envelopes, so an error can say which key a
    /// knowledge base needs). Not secret.
    fn key_id(&self) -> &str;

    /// A data key's bytes, sealed by the master key.
    fn wrap(&self, data_key: &[u8; 32]) -> Result<Vec<u8>>;

    /// The data key inside `wrapped`; an error when this master key did not wrap it.
    fn unwrap(&self, wrapped: &[u8]) -> Result<[u8; 32]>;
}

/// A master key held locally: 32 bytes from a key file or an environment variable, written as
/// 64 hex digits.
#[derive(Clone)]
pub struct MasterKey {
    key: DataKey,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "MasterKey({}, <redacted>)", self.id)
    }
}

impl MasterKey {
    /// A key from 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        let invalid = || {
            SecurityError::Invalid {
            message: "a master key is 64 hex digits (32 bytes); make one with `basalt keys generate-master --out FILE`".into(),
        }
        };
        if text.len() != 64 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut bytes = [0_u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).map_err(|_| invalid())?;
        }
        // The id is a hash of the key: it names the key without revealing it (2²⁵⁶ keys).
        let id = format!(
            "mk-{}",
            &basalt_core::hex::sha256_parts(&[b"basalt master key id", &bytes])[..16]
        );
        Ok(MasterKey {
            key: DataKey::from_bytes(&bytes),
            id,
        })
    }

    /// A key from a file holding 64 hex digits.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| SecurityError::io(path, error))?;
        Self::from_hex(&text).map_err(|error| SecurityError::Invalid {
            message: format!("{}: {error}", path.display()),
        })
    }

    /// A new random key, as 64 hex digits.
    pub fn generate_hex() -> Result<String> {
        crate::random_secret(32)
    }

    /// Writes a new random key to `path` (mode 0600); never replaces an existing file.
    pub fn generate_file(path: &std::path::Path) -> Result<MasterKey> {
        let hex = Self::generate_hex()?;
        let io = |error| SecurityError::io(path, error);
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        // Written whole under a temporary name, then linked into place: a reader never sees a
        // half-written key, and of two processes creating it at once, one key wins.
        let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
        basalt_core::fs::write_private(&temporary, format!("{hex}\n").as_bytes()).map_err(io)?;
        let linked = std::fs::hard_link(&temporary, path);
        let _ = std::fs::remove_file(&temporary);
        linked.map_err(io)?;
        Self::from_hex(&hex)
    }

    /// The key in `path`, created there first when there is none. True when it was created.
    pub fn load_or_create(path: &std::path::Path) -> Result<(MasterKey, bool)> {
        match Self::generate_file(path) {
            Ok(key) => Ok((key, true)),
            Err(SecurityError::Io { error, .. })
                if error.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Ok((Self::from_file(path)?, false))
            }
            Err(error) => Err(error),
        }
    }
}

/// Where the local master key lives unless one is given: `$XDG_CONFIG_HOME/basalt/master.key`,
/// else `~/.config/basalt/master.key` — apart from the data directory, so a copy of the data
/// alone reads nothing.
pub fn default_master_key_path() -> std::path::PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    var("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|home| std::path::Path::new(&home).join(".config")))
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join("basalt")
        .join("master.key")
}

impl KeyProvider for MasterKey {
    fn key_id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, data_key: &[u8; 32]) -> Result<Vec<u8>> {
        Ok(self.key.seal_with(data_key, WRAP_CONTEXT))
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<[u8; 32]> {
        let bytes = self
            .key
            .open_with(wrapped, WRAP_CONTEXT)
            .map_err(|message| SecurityError::Invalid { message })?;
        bytes.try_into().map_err(|_| SecurityError::Invalid {
            message: "a wrapped data key is not 32 bytes".into(),
        })
    }
}

/// A data key wrapped by a master key: what is stored next to encrypted data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub algorithm: String,
    /// The master key that wrapped it ([`KeyProvider::key_id`]).
    pub master_key_id: String,
    /// Hex of the wrapped data key.
    pub wrapped_key: String,
    pub created_at: String,
}

const ALGORITHM: &str = "AES-256-GCM";

impl Envelope {
    /// A new random data key and its envelope.
    pub fn create(provider: &dyn KeyProvider) -> Result<(Envelope, DataKey)> {
        let bytes = DataKey::random_bytes()?;
        let envelope = Envelope {
            algorithm: ALGORITHM.into(),
            master_key_id: provider.key_id().to_owned(),
            wrapped_key: basalt_core::hex::encode(&provider.wrap(&bytes)?),
            created_at: basalt_core::clock::now_rfc3339(),
        };
        Ok((envelope, DataKey::from_bytes(&bytes)))
    }

    /// The data key, unwrapped by `provider`: a clear error when it is not the master key that
    /// wrapped it.
    pub fn open(&self, provider: &dyn KeyProvider) -> Result<DataKey> {
        Ok(DataKey::from_bytes(&self.unwrap(provider)?))
    }

    fn unwrap(&self, provider: &dyn KeyProvider) -> Result<[u8; 32]> {
        if self.algorithm != ALGORITHM {
            return Err(SecurityError::Invalid {
                message: format!("unknown encryption algorithm {:?}", self.algorithm),
            });
        }
        if provider.key_id() != self.master_key_id {
            return Err(SecurityError::WrongMasterKey {
                needed: self.master_key_id.clone(),
                given: provider.key_id().to_owned(),
            });
        }
        let wrapped =
            basalt_core::hex::decode(&self.wrapped_key).ok_or_else(|| SecurityError::Invalid {
                message: "the wrapped data key is not hex".into(),
            })?;
        provider.unwrap(&wrapped)
    }

    /// The same data key wrapped by `new` instead of `old`: the data stays as it is.
    pub fn rewrap(&self, old: &dyn KeyProvider, new: &dyn KeyProvider) -> Result<Envelope> {
        let bytes = self.unwrap(old)?;
        Ok(Envelope {
            algorithm: ALGORITHM.into(),
            master_key_id: new.key_id().to_owned(),
            wrapped_key: basalt_core::hex::encode(&new.wrap(&bytes)?),
            created_at: self.created_at.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(digit: char) -> MasterKey {
        MasterKey::from_hex(&digit.to_string().repeat(64)).expect("a key")
    }

    #[test]
    fn tags_are_stable_per_key_and_differ_between_keys() {
        let master = master('a');
        let (envelope, key) = Envelope::create(&master).expect("creates");
        let (_, other) = Envelope::create(&master).expect("creates");
        let reopened = envelope.open(&master).expect("opens");
        assert_eq!(key.tag(b"term\0zebra"), key.tag(b"term\0zebra"));
        assert_eq!(key.tag(b"term\0zebra"), reopened.tag(b"term\0zebra"));
        assert_ne!(key.tag(b"term\0zebra"), key.tag(b"term\0zebras"));
        assert_ne!(key.tag(b"term\0zebra"), other.tag(b"term\0zebra"));
        // Not a plain hash of the data.
        assert_ne!(
            basalt_core::hex::encode(&key.tag(b"zebra")),
            basalt_core::hex::sha256(b"zebra")
        );
    }

    #[test]
    fn sealed_bytes_open_only_with_their_key_and_unchanged() {
        let (_, key) = Envelope::create(&master('a')).expect("creates");
        let (_, other) = Envelope::create(&master('a')).expect("creates");
        let sealed = key.seal(b"the zebra-quartz bonus pool");
        assert_eq!(
            key.open(&sealed).expect("opens"),
            b"the zebra-quartz bonus pool"
        );
        assert!(
            !sealed.windows(5).any(|window| window == b"zebra"),
            "ciphertext"
        );
        assert_ne!(
            key.seal(b"same"),
            key.seal(b"same"),
            "a fresh nonce each time"
        );
        assert!(other.open(&sealed).is_err(), "another data key");
        for position in [0, 5, 20, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[position] ^= 1;
            assert!(key.open(&changed).is_err(), "byte {position} changed");
        }
        assert!(key.open(&sealed[..sealed.len() - 1]).is_err(), "truncated");
        assert!(key.open(b"plain text, never sealed").is_err());
        assert_eq!(key.open(&key.seal(b"")).expect("empty"), b"");
    }

    #[test]
    fn envelopes_need_the_master_key_that_wrapped_them_and_survive_rotation() {
        let (old, new) = (master('1'), master('2'));
        let (envelope, key) = Envelope::create(&old).expect("creates");
        let sealed = key.seal(b"payroll");
        let error = envelope.open(&new).expect_err("another master key");
        assert!(
            matches!(&error, SecurityError::WrongMasterKey { needed, .. } if needed == old.key_id()),
            "{error}"
        );
        let rotated = envelope.rewrap(&old, &new).expect("rewraps");
        assert_eq!(rotated.master_key_id, new.key_id());
        assert!(rotated.open(&old).is_err());
        let reopened = rotated.open(&new).expect("opens with the new key");
        assert_eq!(reopened.open(&sealed).expect("same data key"), b"payroll");
        // A forged envelope naming the right key id but wrapped by another key fails cleanly.
        let forged = Envelope {
            master_key_id: old.key_id().to_owned(),
            ..rotated.clone()
        };
        assert!(forged.open(&old).is_err());
    }

    #[test]
    fn master_keys_are_64_hex_digits() {
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::from_hex(&format!("  {}\n", "AB".repeat(32))).is_ok());
        for bad in [
            "",
            "abc",
            &"zz".repeat(32),
            &"ab".repeat(31),
            &"ab".repeat(33),
        ] {
            assert!(MasterKey::from_hex(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys/master.key");
        let (created, fresh) = MasterKey::load_or_create(&path).expect("creates");
        let (loaded, again) = MasterKey::load_or_create(&path).expect("loads");
        assert!(fresh && !again);
        assert_eq!(created.key_id(), loaded.key_id(), "never replaced");
        assert!(
            MasterKey::generate_file(&path).is_err(),
            "an existing key is kept"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let generated = MasterKey::generate_hex().expect("random");
        assert_eq!(generated.len(), 64);
        let key = MasterKey::from_hex(&generated).expect("valid");
        assert!(!format!("{key:?}").contains(&generated[..16]), "redacted");
        assert_ne!(key.key_id(), master('1').key_id());
    }
}
