//! Masking keys: 32 bytes each, given in the config as 64 hex digits or as
//! base64 (normally through `${VAR}`, so the config file holds no secret),
//! and named by an id, so that a key can be rotated while the old one still
//! decrypts and detokenizes. Keys never appear in `Debug`, logs or errors.

use super::TransformError;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One key, with its ciphers keyed once (a key schedule per value would
/// cost more than the masking itself). Clones share them.
#[derive(Clone)]
pub struct Key {
    pub(crate) id: Arc<str>,
    ciphers: Arc<Ciphers>,
}

/// What a key is used through.
struct Ciphers {
    /// Keyed once; each MAC starts from a clone.
    hmac: HmacSha256,
    pub(crate) gcm: aes_gcm::Aes256Gcm,
    /// FF1 for digits (radix 10) and for letters (radix 26).
    ff1_digits: fpe::ff1::FF1<aes::Aes256>,
    ff1_letters: fpe::ff1::FF1<aes::Aes256>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}: <redacted>)", self.id)
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl Key {
    /// Reads `text` (64 hex digits, or base64 of 32 bytes). The error names
    /// the key id, never the text.
    pub fn parse(id: &str, text: &str) -> Result<Key, TransformError> {
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .or_else(|| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(text)
                        .ok()
                })
        };
        let bytes: [u8; 32] =
            decoded
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| TransformError::Key {
                    id: id.to_string(),
                    message:
                        "must be 32 bytes, as 64 hex digits or base64 (e.g. `openssl rand -hex 32`)"
                            .into(),
                })?;
        let ff1 = |radix| {
            fpe::ff1::FF1::<aes::Aes256>::new(&bytes, radix).map_err(|e| TransformError::Key {
                id: id.to_string(),
                message: format!("FF1: {e:?}"),
            })
        };
        let ciphers = Ciphers {
            hmac: <HmacSha256 as KeyInit>::new_from_slice(&bytes).map_err(|_| {
                TransformError::Key {
                    id: id.to_string(),
                    message: "HMAC refused the key".into(),
                }
            })?,
            gcm: <aes_gcm::Aes256Gcm as aes_gcm::KeyInit>::new((&bytes).into()),
            ff1_digits: ff1(10)?,
            ff1_letters: ff1(26)?,
        };
        Ok(Key {
            id: id.into(),
            ciphers: Arc::new(ciphers),
        })
    }

    pub(crate) fn gcm(&self) -> &aes_gcm::Aes256Gcm {
        &self.ciphers.gcm
    }

    /// FF1 under this key, for radix 10 or 26.
    pub(crate) fn ff1(&self, radix: u32) -> &fpe::ff1::FF1<aes::Aes256> {
        if radix == 10 {
            &self.ciphers.ff1_digits
        } else {
            &self.ciphers.ff1_letters
        }
    }

    /// HMAC-SHA-256 of `parts` (each length-prefixed, so that no two
    /// different part lists give the same input).
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.ciphers.hmac.clone();
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The configured keys, by id.
#[derive(Clone, Default)]
pub struct KeyRing(BTreeMap<String, Key>);

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl KeyRing {
    /// Parses every `id = "key text"` pair.
    pub fn parse(entries: &BTreeMap<String, String>) -> Result<KeyRing, TransformError> {
        let mut ring = BTreeMap::new();
        for (id, text) in entries {
            ring.insert(id.clone(), Key::parse(id, text)?);
        }
        Ok(KeyRing(ring))
    }

    pub fn get(&self, id: &str) -> Option<&Key> {
        self.0.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Pseudo-random numbers from HMAC(key, seed, counter): deterministic per
/// (key, seed).
pub(crate) struct KeyStream<'a> {
    key: &'a Key,
    seed: &'a [u8],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl<'a> KeyStream<'a> {
    pub(crate) fn new(key: &'a Key, seed: &'a [u8]) -> Self {
        KeyStream {
            key,
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        if self.used + 8 > 32 {
            self.block = self
                .key
                .mac(&[b"stream", self.seed, &self.counter.to_be_bytes()]);
            self.counter += 1;
            self.used = 0;
        }
        let bytes: [u8; 8] = self.block[self.used..self.used + 8]
            .try_into()
            .unwrap_or_default();
        self.used += 8;
        u64::from_be_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_or_base64_of_32_bytes_and_never_shown() {
        let hex_text = "00".repeat(31) + "ff";
        let key = Key::parse("k1", &hex_text).expect("hex");
        let mut bytes = [0u8; 32];
        bytes[31] = 0xff;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let same = Key::parse("k2", &b64).expect("base64");
        assert_eq!(
            key.mac(&[b"x"]),
            same.mac(&[b"x"]),
            "one key, two spellings"
        );
        assert_ne!(
            key.mac(&[b"x"]),
            Key::parse("k3", &"11".repeat(32))
                .expect("hex")
                .mac(&[b"x"])
        );
        let error = Key::parse("k3", "c2hvcnQ=").expect_err("short").to_string();
        assert!(
            error.contains("k3") && !error.contains("c2hvcnQ="),
            "{error}"
        );
        assert!(!format!("{key:?}").contains("ff"), "{key:?}");
    }
}
