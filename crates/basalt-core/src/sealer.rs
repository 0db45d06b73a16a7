//! The seam between what stores data and the keys that encrypt it: a store seals what it writes
//! and tags what it must look up through a [`Sealer`], without knowing the key.

/// Authenticated encryption with the key it holds. Implemented by `basalt-security`'s data
/// keys; the stores only call it.
pub trait Sealer: Send + Sync + std::fmt::Debug {
    /// Ciphertext of `plaintext`, authenticated (a changed byte makes [`Sealer::open`] fail).
    fn seal(&self, plaintext: &[u8]) -> Vec<u8>;

    /// The plaintext of what [`Sealer::seal`] produced with the same key; an error for
    /// anything else (another key, a changed or truncated file, plaintext).
    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String>;

    /// A keyed hash of `data` under a key of its own (not the sealing key): equal data gives an
    /// equal tag, so a store can look up what it holds (a term, a document id) by tag without
    /// holding the data.
    fn tag(&self, data: &[u8]) -> [u8; 32];
}
