//! The masking techniques, one function each, applied to one column value.
//! Every technique is deterministic (the same input and key give the same
//! output), so a masked key still sends every change of a row to one
//! partition, in order, and joins on a masked column still match. A NULL
//! stays NULL: it carries no data.
//!
//! | technique | reversible | output |
//! |---|---|---|
//! | `null` | no | NULL |
//! | `hash` | no | HMAC-SHA-256, hex or base64 |
//! | `encrypt` | yes, `tidemark decrypt` | `tmenc:v1:<key id>:<base64url>` (AES-256-GCM) |
//! | `tokenize` | yes, `tidemark detokenize` | same length, digits stay digits, letters stay letters (FF1) |
//! | `substitute` | no | a realistic fake name, email, phone or address |
//! | `age` | no | the date shifted by the row's offset, within ±N days |
//! | `scramble` | no (weak) | the same characters, shuffled |

use super::fake::{self, FakeKind};
use super::keys::{Key, KeyRing, KeyStream};
use super::tokenize;
use aes_gcm::aead::Aead;
use aes_gcm::Nonce;
use base64::Engine as _;
use serde_json::Value;

/// How a hash is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// One column's technique, with its key.
#[derive(Debug, Clone)]
pub enum Technique {
    Null,
    Hash { key: Key, encoding: Encoding },
    Encrypt { key: Key },
    Tokenize { key: Key },
    Substitute { key: Key, kind: FakeKind },
    Age { key: Key, days: u32 },
    Scramble { key: Key },
}

impl Technique {
    /// The name the config uses.
    pub fn name(&self) -> &'static str {
        match self {
            Technique::Null => "null",
            Technique::Hash { .. } => "hash",
            Technique::Encrypt { .. } => "encrypt",
            Technique::Tokenize { .. } => "tokenize",
            Technique::Substitute { .. } => "substitute",
            Technique::Age { .. } => "age",
            Technique::Scramble { .. } => "scramble",
        }
    }

    /// The masked value. `row_seed` identifies the row (its key), for `age`.
    /// An error says what about the value does not fit the technique.
    pub(crate) fn apply(&self, value: &Value, row_seed: &[u8]) -> Result<Value, String> {
        if value.is_null() {
            return Ok(Value::Null);
        }
        Ok(match self {
            Technique::Null => Value::Null,
            Technique::Hash { key, encoding } => Value::String(hash(key, &text(value)?, *encoding)),
            Technique::Encrypt { key } => Value::String(encrypt(key, &text(value)?)?),
            Technique::Tokenize { key } => Value::String(tokenize::encrypt(key, &text(value)?)?),
            Technique::Substitute { key, kind } => {
                Value::String(fake::substitute(key, *kind, &text(value)?))
            }
            Technique::Age { key, days } => Value::String(age(key, *days, row_seed, value)?),
            Technique::Scramble { key } => Value::String(scramble(key, &text(value)?)),
        })
    }
}

/// A scalar's text: a string as it is, a number or a boolean as JSON writes
/// it. Arrays and objects (JSON columns, arrays) are refused.
fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err("the value is a JSON array or object, not a scalar".into()),
    }
}

/// HMAC-SHA-256 of the text.
fn hash(key: &Key, text: &str, encoding: Encoding) -> String {
    let mac = key.mac(&[b"hash", text.as_bytes()]);
    match encoding {
        Encoding::Hex => hex::encode(mac),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(mac),
    }
}

const ENCRYPTED_PREFIX: &str = "tmenc:v1:";

/// AES-256-GCM with a synthetic nonce: the first 12 bytes of an HMAC of the
/// text under the key. The same text so always gives the same ciphertext
/// (deterministic, as a masked key must be), and a nonce repeats only with
/// the same text, which reveals equality and nothing else.
fn encrypt(key: &Key, text: &str) -> Result<String, String> {
    let mac = key.mac(&[b"encrypt-nonce", text.as_bytes()]);
    let nonce = Nonce::from_slice(&mac[..12]);
    // Fails only past GCM's 64 GB limit; never written out as a half value.
    let sealed = key
        .gcm()
        .encrypt(nonce, text.as_bytes())
        .map_err(|_| "AES-256-GCM refused the value (past its size limit)".to_string())?;
    let mut out = mac[..12].to_vec();
    out.extend_from_slice(&sealed);
    Ok(format!(
        "{ENCRYPTED_PREFIX}{}:{}",
        key.id,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    ))
}

/// The text an `encrypt` output holds, with the key its id names.
pub fn decrypt(keys: &KeyRing, encrypted: &str) -> Result<String, String> {
    let rest = encrypted
        .strip_prefix(ENCRYPTED_PREFIX)
        .ok_or("not a tidemark encrypted value (tmenc:v1:<key id>:<data>)")?;
    let (id, data) = rest
        .split_once(':')
        .ok_or("no key id: expected tmenc:v1:<key id>:<data>")?;
    let key = keys.get(id).ok_or_else(|| {
        format!(
            "no key {id:?} in [keys] (keys: {})",
            keys.ids().collect::<Vec<_>>().join(", ")
        )
    })?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|e| format!("the data is not base64url: {e}"))?;
    if bytes.len() < 12 + 16 {
        return Err("the data is too short to be AES-256-GCM output".into());
    }
    let (nonce, sealed) = bytes.split_at(12);
    let plain = key
        .gcm()
        .decrypt(Nonce::from_slice(nonce), sealed)
        .map_err(|_| format!("does not decrypt with key {id:?} (another key, or altered data)"))?;
    String::from_utf8(plain).map_err(|_| "the plaintext is not UTF-8".into())
}

/// Shifts the date at the start of the value (`YYYY-MM-DD`, then anything:
/// a time, a zone) by the row's offset, within ±`days`. Every date of one
/// row moves by the same offset, so their distances are kept.
fn age(key: &Key, days: u32, row_seed: &[u8], value: &Value) -> Result<String, String> {
    let Value::String(text) = value else {
        return Err("age needs a date or timestamp (YYYY-MM-DD...), not a number or JSON".into());
    };
    let (date, rest) = parse_date(text)
        .ok_or("age needs a date or timestamp (YYYY-MM-DD...), and this value is not one")?;
    let span = i64::from(days) * 2 + 1;
    let mac = key.mac(&[b"age", row_seed]);
    let draw = u64::from_be_bytes(mac[..8].try_into().unwrap_or_default());
    let offset = (draw % span as u64) as i64 - i64::from(days);
    let shifted = date
        .checked_add(time::Duration::days(offset))
        .ok_or("the shifted date is outside the years -9999 to 9999")?;
    Ok(format!(
        "{:04}-{:02}-{:02}{rest}",
        shifted.year(),
        u8::from(shifted.month()),
        shifted.day()
    ))
}

fn parse_date(text: &str) -> Option<(time::Date, &str)> {
    let head = text.get(..10)?;
    let mut parts = head.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    if head.as_bytes().get(4) != Some(&b'-') || head.as_bytes().get(7) != Some(&b'-') {
        return None;
    }
    let month = time::Month::try_from(month).ok()?;
    Some((
        time::Date::from_calendar_date(year, month, day).ok()?,
        &text[10..],
    ))
}

/// A keyed Fisher-Yates shuffle of the characters. Weak: it keeps which
/// characters a value has and how many of each, and a short value has few
/// orders; use it to blur, never to protect.
fn scramble(key: &Key, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let mut stream = KeyStream::new(key, text.as_bytes());
    for i in (1..chars.len()).rev() {
        let j = (stream.next_u64() % (i as u64 + 1)) as usize;
        chars.swap(i, j);
    }
    chars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn key(id: &str, byte: u8) -> Key {
        Key::parse(id, &hex::encode([byte; 32])).expect("key")
    }

    #[test]
    fn hash_is_keyed_and_deterministic() {
        let a = Technique::Hash {
            key: key("k", 1),
            encoding: Encoding::Hex,
        };
        let b = Technique::Hash {
            key: key("k", 2),
            encoding: Encoding::Hex,
        };
        let v = json!("alice@example.com");
        assert_eq!(a.apply(&v, b"").unwrap(), a.apply(&v, b"").unwrap());
        assert_ne!(a.apply(&v, b"").unwrap(), b.apply(&v, b"").unwrap());
        assert_eq!(a.apply(&v, b"").unwrap().as_str().map(str::len), Some(64));
        assert_eq!(a.apply(&json!(null), b"").unwrap(), json!(null));
    }

    #[test]
    fn encryption_round_trips_with_the_key_its_id_names_even_after_rotation() {
        let old = key("k2024", 3);
        let new = key("k2025", 4);
        let v = "4111 1111 1111 1111 'quoted' \\ 😀";
        let sealed = encrypt(&old, v).unwrap();
        assert!(sealed.starts_with("tmenc:v1:k2024:") && !sealed.contains("4111"));
        assert_eq!(sealed, encrypt(&old, v).unwrap(), "deterministic");
        let mut ring = BTreeMap::new();
        ring.insert("k2024".to_string(), hex::encode([3u8; 32]));
        ring.insert("k2025".to_string(), hex::encode([4u8; 32]));
        let ring = KeyRing::parse(&ring).unwrap();
        assert_eq!(decrypt(&ring, &sealed).unwrap(), v);
        assert_eq!(decrypt(&ring, &encrypt(&new, v).unwrap()).unwrap(), v);
        let tampered = sealed.replacen("tmenc:v1:k2024", "tmenc:v1:k2025", 1);
        assert!(decrypt(&ring, &tampered).is_err());
    }

    #[test]
    fn age_moves_every_date_of_a_row_by_one_offset_within_the_bound() {
        let k = key("k", 5);
        for row in 0..50u32 {
            let seed = row.to_be_bytes();
            let born = age(&k, 30, &seed, &json!("2000-02-28")).unwrap();
            let hired = age(&k, 30, &seed, &json!("2000-03-30T08:00:00Z")).unwrap();
            let (b, _) = parse_date(&born).unwrap();
            let (h, rest) = parse_date(&hired).unwrap();
            assert_eq!(rest, "T08:00:00Z");
            assert_eq!((h - b).whole_days(), 31, "{born} {hired}");
            let original = parse_date("2000-02-28").unwrap().0;
            assert!((b - original).whole_days().abs() <= 30);
        }
        assert!(age(&k, 30, b"", &json!("not a date")).is_err());
        assert!(age(&k, 30, b"", &json!(12)).is_err());
    }

    #[test]
    fn scramble_keeps_the_characters() {
        let k = key("k", 6);
        let out = scramble(&k, "abcdefghij");
        let mut sorted: Vec<char> = out.chars().collect();
        sorted.sort_unstable();
        assert_eq!(sorted.into_iter().collect::<String>(), "abcdefghij");
        assert_eq!(out, scramble(&k, "abcdefghij"));
    }
}
