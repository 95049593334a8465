//! PBKDF2-HMAC-SHA256 password hashes in one self-describing string,
//! `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`, so the cost can rise
//! later without invalidating stored hashes.
//!
//! Hashing costs about a third of a second of CPU by design: call these from
//! `tokio::task::spawn_blocking`, never on an async worker thread.

use std::num::NonZeroU32;

use ring::pbkdf2;

use super::random_bytes;

const SCHEME: &str = "pbkdf2-sha256";
/// OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
pub const ITERATIONS: u32 = 600_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

pub fn hash(password: &str) -> String {
    let salt: [u8; SALT_LEN] = random_bytes();
    let mut out = [0u8; HASH_LEN];
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "{SCHEME}${}${}${}",
        iterations,
        hex::encode(salt),
        hex::encode(out)
    )
}

/// Checks `password` against a stored hash in constant time. A malformed
/// stored string never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(iter), Some(salt), Some(expected), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(iterations), Ok(salt), Ok(expected)) = (
        iter.parse::<u32>().ok().and_then(NonZeroU32::new),
        hex::decode(salt),
        hex::decode(expected),
    ) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

/// A hash of a random password, to verify against when an account does not
/// exist, so that an unknown email costs the same time as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&hex::encode(random_bytes::<16>())))
}

/// A random password that meets the policy (lower, upper, digit), for the
/// first admin and for resets without a password given.
pub fn generate() -> String {
    // 20 random bytes over a 64-character alphabet (no modulo bias): 120 bits.
    // A fixed suffix guarantees the three character classes whatever the
    // random part holds.
    let bytes: [u8; 20] = random_bytes();
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b & 63)] as char)
        .collect();
    s.push_str("-Vx7");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_format() {
        let h = hash("Secret123");
        assert!(h.starts_with("pbkdf2-sha256$600000$"));
        assert!(verify("Secret123", &h));
        assert!(!verify("Secret124", &h));
        assert!(!verify("Secret123", "garbage"));
        assert_ne!(h, hash("Secret123"), "salts differ");
    }
}
