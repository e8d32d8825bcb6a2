//! `substitute`: a realistic fake value of a kind, picked by the keyed hash
//! of the original, so the same input always gets the same substitute. The
//! word lists are small and made up here; phone numbers use the 555-01xx
//! range reserved for fiction, emails the reserved `example.com` domain.

use super::keys::{Key, KeyStream};

/// The kinds of fake values `substitute` draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FakeKind {
    Name,
    Email,
    Phone,
    Address,
}

const FIRST: &[&str] = &[
    "Ada", "Ben", "Cleo", "Dario", "Elif", "Farah", "Goran", "Hana", "Ivo", "Jana", "Kofi", "Lena",
    "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wen",
    "Ximena", "Yusuf", "Zoe",
];

const LAST: &[&str] = &[
    "Abara",
    "Berg",
    "Castillo",
    "Dietz",
    "Eklund",
    "Fontaine",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Okafor",
    "Petrov",
    "Quist",
    "Rossi",
    "Sato",
    "Tanaka",
    "Urban",
    "Vogel",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zeller",
];

const STREETS: &[&str] = &[
    "Maple", "Harbor", "Linden", "Station", "Mill", "Orchard", "Quarry", "River", "Chapel", "Elm",
    "Meadow", "Bridge",
];

const SUFFIXES: &[&str] = &["Street", "Road", "Lane", "Avenue", "Way", "Close"];

const CITIES: &[&str] = &[
    "Springfield",
    "Riverton",
    "Lakeside",
    "Fairview",
    "Greenville",
    "Kingsport",
    "Milford",
    "Ashford",
];

/// The substitute of `original`.
pub(crate) fn substitute(key: &Key, kind: FakeKind, original: &str) -> String {
    let mut draw = KeyStream::new(key, original.as_bytes());
    let draw = &mut draw;
    match kind {
        FakeKind::Name => format!("{} {}", pick(draw, FIRST), pick(draw, LAST)),
        FakeKind::Email => {
            let (first, last) = (pick(draw, FIRST), pick(draw, LAST));
            let n = draw.next_u64() % 1000;
            format!(
                "{}.{}{n}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            )
        }
        FakeKind::Phone => {
            let area = 200 + draw.next_u64() % 800;
            format!("+1-{area}-555-01{:02}", draw.next_u64() % 100)
        }
        FakeKind::Address => {
            let (street, suffix, city) = (
                pick(draw, STREETS),
                pick(draw, SUFFIXES),
                pick(draw, CITIES),
            );
            format!("{} {street} {suffix}, {city}", 1 + draw.next_u64() % 999)
        }
    }
}

fn pick(draw: &mut KeyStream<'_>, list: &[&'static str]) -> &'static str {
    list[(draw.next_u64() % list.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_are_deterministic_and_of_their_kind() {
        let key = Key::parse("k", &hex::encode([2u8; 32])).expect("key");
        let email = substitute(&key, FakeKind::Email, "alice@corp.test");
        assert_eq!(email, substitute(&key, FakeKind::Email, "alice@corp.test"));
        assert!(email.ends_with("@example.com"), "{email}");
        let phone = substitute(&key, FakeKind::Phone, "+49 30 1234567");
        assert!(
            phone.starts_with("+1-") && phone.contains("-555-01"),
            "{phone}"
        );
        assert!(substitute(&key, FakeKind::Name, "Alice").contains(' '));
        assert!(substitute(&key, FakeKind::Address, "1 Main St").contains(", "));
    }
}
