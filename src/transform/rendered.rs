//! Masks and column lists on an image already rendered as a JSON object
//! (binlog rows, see `connectors::mysql::rows`), without building a value
//! per column: the members are read as raw JSON text, a masked one is parsed
//! and replaced, a dropped one is skipped, and every other member's bytes
//! are copied as they are. (Parsing the whole object into values and
//! writing it again cost four times the plain capture rate.)

use super::TableRule;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use tidemark_connectors::event::json;

/// A JSON object's members, in order, as raw text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

/// The image with the rule's masks and column list applied; an error names
/// the column and says why (the value itself is never in it).
pub(super) fn rewrite(
    rule: &TableRule,
    image: &[u8],
    seed: &[u8],
) -> Result<Vec<u8>, (String, &'static str, String)> {
    let members: Members<'_> = serde_json::from_slice(image).map_err(|e| {
        (
            String::new(),
            "read",
            format!("the rendered image is not a JSON object: {e}"),
        )
    })?;
    let mut out = Vec::with_capacity(image.len() + 64);
    out.push(b'{');
    let mut first = true;
    for (name, raw) in members.0 {
        if !rule.keeps(&name) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        json::string(&mut out, &name);
        out.push(b':');
        match rule.masks.get(&*name) {
            None => out.extend_from_slice(raw.get().as_bytes()),
            Some(technique) => {
                let value: serde_json::Value = serde_json::from_str(raw.get())
                    .map_err(|e| (name.to_string(), technique.name(), e.to_string()))?;
                let masked = technique
                    .apply(&value, seed)
                    .map_err(|message| (name.to_string(), technique.name(), message))?;
                json::value(&mut out, &masked);
            }
        }
    }
    out.push(b'}');
    Ok(out)
}
