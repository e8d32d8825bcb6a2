//! Format-preserving tokenization with NIST FF1 (SP 800-38G, the `fpe`
//! crate) under AES-256: the digits of a value are enciphered as one numeral
//! string in radix 10, its ASCII letters as one in radix 26 (each keeping
//! its case), and everything else (separators, spaces, other characters)
//! stays where it is. So a value keeps its length, its separators and the
//! kind of every character, and `detokenize` with the same key gives it back.
//!
//! FF1 needs a domain of at least a million values: a class of characters
//! must be empty or hold at least 6 digits, or 5 letters. A shorter one is
//! refused (tokenizing it would protect little), with one line naming the
//! table and column.

use super::keys::Key;
use fpe::ff1::FlexibleNumeralString;

/// The fewest digits and letters FF1 takes (radix^n ≥ 1,000,000).
const MIN_DIGITS: usize = 6;
const MIN_LETTERS: usize = 5;

/// Tokenizes `text`.
pub(crate) fn encrypt(key: &Key, text: &str) -> Result<String, String> {
    run(key, text, Direction::Encrypt)
}

/// The text a token stands for.
pub fn decrypt(key: &Key, token: &str) -> Result<String, String> {
    run(key, token, Direction::Decrypt)
}

#[derive(Clone, Copy)]
enum Direction {
    Encrypt,
    Decrypt,
}

/// One class of characters: which it holds, its radix and the fewest FF1
/// takes, and how a character maps to a numeral and back (keeping case).
struct Class {
    name: &'static str,
    radix: u32,
    min: usize,
    holds: fn(&char) -> bool,
    numeral: fn(char) -> u16,
    character: fn(u16, char) -> char,
}

const DIGITS: Class = Class {
    name: "digits",
    radix: 10,
    min: MIN_DIGITS,
    holds: char::is_ascii_digit,
    numeral: |c| c as u16 - u16::from(b'0'),
    character: |n, _| char::from(b'0' + n as u8),
};

const LETTERS: Class = Class {
    name: "letters",
    radix: 26,
    min: MIN_LETTERS,
    holds: char::is_ascii_alphabetic,
    numeral: |c| c.to_ascii_lowercase() as u16 - u16::from(b'a'),
    character: |n, was| {
        let lower = char::from(b'a' + n as u8);
        if was.is_ascii_uppercase() {
            lower.to_ascii_uppercase()
        } else {
            lower
        }
    },
};

fn run(key: &Key, text: &str, direction: Direction) -> Result<String, String> {
    let mut chars: Vec<char> = text.chars().collect();
    if !chars.iter().any(|c| c.is_ascii_alphanumeric()) {
        return Err("tokenize needs digits or letters, and the value has none".into());
    }
    for class in [DIGITS, LETTERS] {
        let places = positions(&chars, class.holds);
        if places.is_empty() {
            continue;
        }
        if places.len() < class.min {
            return Err(format!(
                "tokenize needs at least {} {} or none (FF1's minimum domain), and the value has {}",
                class.min,
                class.name,
                places.len()
            ));
        }
        let numerals: Vec<u16> = places.iter().map(|&i| (class.numeral)(chars[i])).collect();
        let out = cipher(key, class.radix, numerals, direction)?;
        for (&i, n) in places.iter().zip(out) {
            chars[i] = (class.character)(n, chars[i]);
        }
    }
    Ok(chars.into_iter().collect())
}

fn positions(chars: &[char], class: fn(&char) -> bool) -> Vec<usize> {
    chars
        .iter()
        .enumerate()
        .filter(|(_, c)| class(c))
        .map(|(i, _)| i)
        .collect()
}

fn cipher(
    key: &Key,
    radix: u32,
    numerals: Vec<u16>,
    direction: Direction,
) -> Result<Vec<u16>, String> {
    let ff1 = key.ff1(radix);
    let input = FlexibleNumeralString::from(numerals);
    let out = match direction {
        Direction::Encrypt => ff1.encrypt(&[], &input),
        Direction::Decrypt => ff1.decrypt(&[], &input),
    }
    .map_err(|e| format!("FF1: {e:?}"))?;
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::parse("k", &hex::encode([9u8; 32])).expect("key")
    }

    #[test]
    fn tokens_keep_the_format_and_come_back() {
        for value in [
            "4111-1111-1111-1111",
            "078-05-1120",
            "Alice Smith",
            "ABCDE-123456-fghij",
            "Ünïcode ok 123456",
        ] {
            let token = encrypt(&key(), value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_ne!(token, value);
            assert_eq!(token.chars().count(), value.chars().count());
            for (a, b) in value.chars().zip(token.chars()) {
                assert_eq!(a.is_ascii_digit(), b.is_ascii_digit(), "{value} → {token}");
                assert_eq!(
                    a.is_ascii_uppercase(),
                    b.is_ascii_uppercase(),
                    "{value} → {token}"
                );
                assert_eq!(
                    a.is_ascii_lowercase(),
                    b.is_ascii_lowercase(),
                    "{value} → {token}"
                );
                if !a.is_ascii_alphanumeric() {
                    assert_eq!(a, b, "separators stay");
                }
            }
            assert_eq!(encrypt(&key(), value).unwrap(), token, "deterministic");
            assert_eq!(decrypt(&key(), &token).unwrap(), value);
        }
    }

    #[test]
    fn values_too_short_for_ff1_are_refused() {
        assert!(encrypt(&key(), "12345")
            .unwrap_err()
            .contains("at least 6 digits"));
        assert!(encrypt(&key(), "abcd 123456")
            .unwrap_err()
            .contains("at least 5 letters"));
        assert!(encrypt(&key(), "--").is_err());
    }

    /// A second opinion on the cipher: NIST SP 800-38G's FF1 sample 7
    /// (AES-256, radix 10, empty tweak), through tidemark's own key and
    /// digit mapping.
    #[test]
    fn digits_match_the_nist_ff1_sample() {
        let nist = Key::parse(
            "nist",
            "2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94",
        )
        .expect("key");
        assert_eq!(encrypt(&nist, "0123456789").unwrap(), "6657667009");
        assert_eq!(decrypt(&nist, "6657667009").unwrap(), "0123456789");
    }
}
