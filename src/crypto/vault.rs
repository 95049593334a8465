//! The key vault's cryptography: AES-256-GCM (ring) under one 256-bit master
//! key. Every seal draws a fresh random 96-bit nonce, and binds the
//! ciphertext to where it belongs (tenant and purpose) through the
//! associated data, so a ciphertext copied into another row, another tenant
//! or another provider fails to open instead of decrypting there.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

use super::random_bytes;

/// A master key is 32 bytes, written as 64 hex characters.
pub const MASTER_KEY_HEX_LEN: usize = 64;
const TAG_LEN: usize = 16;
/// The prefix of a sealed value kept in a single column.
const COMPACT_PREFIX: &str = "vault:v1:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("the stored secret is malformed ({0})")]
    Malformed(&'static str),
    /// Authentication failed: the one answer AES-GCM gives for a changed
    /// ciphertext, a changed binding or another key, by design.
    #[error("the stored secret does not open: it was altered, copied from another row or tenant, or sealed under another master key")]
    Rejected,
    #[error("the secret could not be sealed")]
    Seal,
    #[error("a master key is {MASTER_KEY_HEX_LEN} hexadecimal characters (32 bytes)")]
    KeyFormat,
}

/// The 32 key bytes; wiped on drop and never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> MasterKey {
        MasterKey(Zeroizing::new(random_bytes::<32>()))
    }

    /// Parses 64 hex characters (surrounding whitespace, such as the newline
    /// of a key file, is ignored).
    pub fn from_hex(text: &str) -> Result<MasterKey, VaultError> {
        let text = text.trim();
        if text.len() != MASTER_KEY_HEX_LEN {
            return Err(VaultError::KeyFormat);
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, bytes.as_mut_slice()).map_err(|_| VaultError::KeyFormat)?;
        Ok(MasterKey(bytes))
    }

    /// The 64 hex characters, for the key file or for the operator.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_slice()))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// What a ciphertext belongs to. It becomes the associated data: not
/// secret, not stored, but required to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    /// A tenant's secret for one purpose (a provider name, or `telephony`).
    Tenant { user_id: &'a str, purpose: &'a str },
    /// The known marker that proves the master key opens this vault.
    KeyCheck,
}

impl Binding<'_> {
    fn associated_data(&self) -> String {
        match self {
            // User ids are UUIDs and purposes fixed words: neither contains
            // a colon, so no two bindings share one string.
            Binding::Tenant { user_id, purpose } => format!("voxflow:v1:{user_id}:{purpose}"),
            Binding::KeyCheck => "voxflow:v1:key-check".to_string(),
        }
    }
}

/// A sealed value as hex: the three columns of `user_api_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: String,
    pub iv: String,
    pub tag: String,
}

impl Sealed {
    /// One self-describing string, for a column that holds a secret alone
    /// (`telephony_configs.auth_token`, the key check):
    /// `vault:v1:<iv>:<tag>:<ciphertext>`.
    pub fn to_compact(&self) -> String {
        format!(
            "{COMPACT_PREFIX}{}:{}:{}",
            self.iv, self.tag, self.ciphertext
        )
    }

    /// The inverse of `to_compact`; `None` for anything else (such as a
    /// token stored in clear by the first edition).
    pub fn from_compact(text: &str) -> Option<Sealed> {
        let rest = text.strip_prefix(COMPACT_PREFIX)?;
        let mut parts = rest.splitn(3, ':');
        let (iv, tag, ciphertext) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Sealed {
            ciphertext: ciphertext.to_string(),
            iv: iv.to_string(),
            tag: tag.to_string(),
        })
    }
}

/// The master key, ready to seal and open.
pub struct Vault {
    key: LessSafeKey,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault { key: [redacted] }")
    }
}

/// The plaintext marker sealed under `Binding::KeyCheck`.
const KEY_CHECK_PLAINTEXT: &[u8] = b"voxflow vault key check";

impl Vault {
    pub fn new(master: &MasterKey) -> Result<Vault, VaultError> {
        let unbound = UnboundKey::new(&AES_256_GCM, master.0.as_slice())
            .map_err(|_| VaultError::KeyFormat)?;
        Ok(Vault {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `plaintext` under a fresh random nonce. With random 96-bit
    /// nonces one key stays safe for far more seals than a vault of
    /// per-tenant keys will ever make (NIST's bound is 2^32).
    pub fn seal(&self, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Sealed, VaultError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let aad = binding.associated_data();
        let mut buf = plaintext.to_vec();
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| VaultError::Seal)?;
        // `buf` now holds ciphertext only; hex of it reveals nothing.
        Ok(Sealed {
            ciphertext: hex::encode(&buf),
            iv: hex::encode(nonce_bytes),
            tag: hex::encode(tag.as_ref()),
        })
    }

    pub fn open(
        &self,
        binding: &Binding<'_>,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        hex::decode_to_slice(&sealed.iv, &mut nonce)
            .map_err(|_| VaultError::Malformed("iv is not 12 bytes of hex"))?;
        let mut tag = [0u8; TAG_LEN];
        hex::decode_to_slice(&sealed.tag, &mut tag)
            .map_err(|_| VaultError::Malformed("auth tag is not 16 bytes of hex"))?;
        let mut buf = Zeroizing::new(
            hex::decode(&sealed.ciphertext)
                .map_err(|_| VaultError::Malformed("ciphertext is not hex"))?,
        );
        buf.extend_from_slice(&tag);
        let aad = binding.associated_data();
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                buf.as_mut_slice(),
            )
            .map_err(|_| VaultError::Rejected)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens a value that was sealed from UTF-8 text.
    pub fn open_text(
        &self,
        binding: &Binding<'_>,
        sealed: &Sealed,
    ) -> Result<Zeroizing<String>, VaultError> {
        let bytes = self.open(binding, sealed)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultError::Malformed("not UTF-8"))?;
        Ok(Zeroizing::new(text.to_string()))
    }

    /// A fresh key-check value for this key.
    pub fn seal_key_check(&self) -> Result<String, VaultError> {
        Ok(self
            .seal(&Binding::KeyCheck, KEY_CHECK_PLAINTEXT)?
            .to_compact())
    }

    /// Whether `stored` (a compact key-check value) was sealed under this key.
    pub fn opens_key_check(&self, stored: &str) -> bool {
        Sealed::from_compact(stored)
            .and_then(|s| self.open(&Binding::KeyCheck, &s).ok())
            .is_some_and(|p| p.as_slice() == KEY_CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "11111111-1111-4111-8111-111111111111";
    const BOB: &str = "22222222-2222-4222-8222-222222222222";

    fn vault() -> Vault {
        Vault::new(&MasterKey::generate()).unwrap()
    }

    fn groq(user_id: &str) -> Binding<'_> {
        Binding::Tenant {
            user_id,
            purpose: "groq",
        }
    }

    /// Flips one bit of the hex digit at `at`.
    fn flip(hex_text: &str, at: usize) -> String {
        let mut bytes = hex::decode(hex_text).unwrap();
        bytes[at] ^= 0x01;
        hex::encode(bytes)
    }

    #[test]
    fn round_trip() {
        let v = vault();
        let sealed = v.seal(&groq(ALICE), b"gsk_secret_value").unwrap();
        assert_eq!(sealed.iv.len(), 24);
        assert_eq!(sealed.tag.len(), 32);
        assert_ne!(sealed.ciphertext, hex::encode(b"gsk_secret_value"));
        assert_eq!(
            v.open_text(&groq(ALICE), &sealed).unwrap().as_str(),
            "gsk_secret_value"
        );
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let v = vault();
        let a = v.seal(&groq(ALICE), b"same").unwrap();
        let b = v.seal(&groq(ALICE), b"same").unwrap();
        assert_ne!(a.iv, b.iv);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn tampering_with_any_part_is_rejected() {
        let v = vault();
        let sealed = v.seal(&groq(ALICE), b"gsk_secret_value").unwrap();
        for changed in [
            Sealed {
                ciphertext: flip(&sealed.ciphertext, 3),
                ..sealed.clone()
            },
            Sealed {
                iv: flip(&sealed.iv, 0),
                ..sealed.clone()
            },
            Sealed {
                tag: flip(&sealed.tag, 15),
                ..sealed.clone()
            },
        ] {
            assert_eq!(v.open(&groq(ALICE), &changed), Err(VaultError::Rejected));
        }
    }

    #[test]
    fn a_ciphertext_moved_to_another_tenant_or_purpose_is_rejected() {
        let v = vault();
        let sealed = v.seal(&groq(ALICE), b"gsk_secret_value").unwrap();
        assert_eq!(v.open(&groq(BOB), &sealed), Err(VaultError::Rejected));
        let deepgram = Binding::Tenant {
            user_id: ALICE,
            purpose: "deepgram",
        };
        assert_eq!(v.open(&deepgram, &sealed), Err(VaultError::Rejected));
        assert_eq!(
            v.open(&Binding::KeyCheck, &sealed),
            Err(VaultError::Rejected)
        );
    }

    #[test]
    fn another_master_key_is_rejected() {
        let sealed = vault().seal(&groq(ALICE), b"gsk_secret_value").unwrap();
        assert_eq!(
            vault().open(&groq(ALICE), &sealed),
            Err(VaultError::Rejected)
        );
        let check = vault().seal_key_check().unwrap();
        assert!(!vault().opens_key_check(&check));
    }

    #[test]
    fn the_key_check_opens_only_under_its_key() {
        let key = MasterKey::generate();
        let check = Vault::new(&key).unwrap().seal_key_check().unwrap();
        let same = MasterKey::from_hex(&key.to_hex()).unwrap();
        assert!(Vault::new(&same).unwrap().opens_key_check(&check));
        assert!(!Vault::new(&same)
            .unwrap()
            .opens_key_check("vault:v1:00:00:00"));
        assert!(!Vault::new(&same).unwrap().opens_key_check("plain text"));
    }

    #[test]
    fn malformed_columns_are_reported_as_such() {
        let v = vault();
        let mut sealed = v.seal(&groq(ALICE), b"x").unwrap();
        sealed.iv = "zz".into();
        assert!(matches!(
            v.open(&groq(ALICE), &sealed),
            Err(VaultError::Malformed(_))
        ));
    }

    #[test]
    fn compact_form_round_trips_and_refuses_plain_text() {
        let v = vault();
        let sealed = v.seal(&groq(ALICE), b"token").unwrap();
        let compact = sealed.to_compact();
        assert!(compact.starts_with("vault:v1:"));
        assert_eq!(Sealed::from_compact(&compact), Some(sealed));
        assert_eq!(
            Sealed::from_compact("0123456789abcdef0123456789abcdef"),
            None
        );
    }

    #[test]
    fn master_keys_parse_from_64_hex_and_never_print() {
        let key = MasterKey::generate();
        let text = key.to_hex();
        assert_eq!(text.len(), 64);
        assert!(MasterKey::from_hex(&format!("{}\n", text.as_str())).is_ok());
        assert!(MasterKey::from_hex(&text[..63]).is_err());
        assert!(MasterKey::from_hex(&"g".repeat(64)).is_err());
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
        assert!(!format!("{:?}", Vault::new(&key).unwrap()).contains(&text[..8]));
    }
}
