//! Random identifiers and secrets, from the operating system's random source (`getrandom`).

/// The operating system's random source failed (it does not, on a booted Linux system).
#[derive(Debug, Clone)]
pub struct RandomError(pub String);

impl std::fmt::Display for RandomError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "the operating system's random source failed: {}",
            self.0
        )
    }
}

impl std::error::Error for RandomError {}

/// `bytes` bytes from the operating system's random source, as hex: what secrets (API keys,
/// salts, master keys) are made of.
pub fn random_hex(bytes: usize) -> Result<String, RandomError> {
    let mut buffer = vec![0_u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| RandomError(error.to_string()))?;
    Ok(crate::hex::encode(&buffer))
}

/// An identifier that is not a secret (a request, job, completion or session id): `prefix`
/// and `bytes` random bytes in hex. Should the random source fail, the bytes come from the
/// clock, the process id and a counter instead: still unique, no longer unpredictable, and no
/// request fails for want of an id.
pub fn new_id(prefix: &str, bytes: usize) -> String {
    let random = random_hex(bytes).unwrap_or_else(|_| {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let seed = format!(
            "{nanos}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut digest = crate::hex::sha256(seed.as_bytes());
        digest.truncate(bytes * 2);
        digest
    });
    format!("{prefix}{random}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_length_and_differ() {
        let (a, b) = (new_id("job-", 12), new_id("job-", 12));
        assert_eq!(a.len(), 4 + 24);
        assert!(a.starts_with("job-") && a != b);
        let secret = random_hex(32).expect("random");
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|byte| byte.is_ascii_hexdigit()));
    }
}
