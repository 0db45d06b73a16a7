//! What every layer shares, written once: identifiers from the operating system's random
//! source ([`id`]), the clock ([`clock`]), hex and SHA-256 ([`hex`]), and files replaced
//! atomically ([`fs`]). No I/O beyond that, and no other Basalt crate below it.

pub mod clock;
pub mod fs;
pub mod hex;
pub mod id;
