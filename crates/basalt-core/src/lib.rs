//! What every layer shares, written once: identifiers from the operating system's random
//! source ([`id`]), the clock ([`clock`]), hex and SHA-256 ([`hex`]), files replaced
//! atomically ([`fs`]), the seam of encryption at rest ([`sealer`]), and who may read what and how identities are named ([`access`]). No
//! I/O beyond that, and no other Basalt crate below it.

pub mod access;
pub mod clock;
pub mod fs;
pub mod hex;
pub mod id;
pub mod sealer;
pub mod sigv4;
