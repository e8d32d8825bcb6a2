//! Entry points for the fuzz targets (`fuzz/`): each feeds untrusted bytes
//! through the decoders the daemon runs on network input, the way it runs
//! them. They return nothing; a panic, overflow or hang is the finding.

use crate::mysql::rows;
use crate::postgres::pgoutput::{self, Message};
use crate::postgres::table::{Column, TableName, TableSchema};
use crate::postgres::values::ValueKind;
use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::events::{FormatDescriptionEvent, TableMapEvent};
use mysql_common::binlog::BinlogCtx;
use mysql_common::io::ParseBuf;
use std::collections::HashMap;
use std::sync::Arc;

/// The binlog row decoder: `[flags][u16 LE length][TABLE_MAP body][rows]`.
/// The TABLE_MAP body (column types, metadata, optional metadata with names,
/// signedness, charsets, ENUM/SET labels) gives the layout; the rest is read
/// as a rows event's images, the before image when flag bit 0 is set and
/// the after image when bit 1 is (both for an update).
pub fn binlog_rows(data: &[u8]) {
    let [flags, a, b, rest @ ..] = data else {
        return;
    };
    let length = u16::from_le_bytes([*a, *b]) as usize;
    let Some((table_map, mut rows_data)) = rest.split_at_checked(length) else {
        return;
    };
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let ctx = BinlogCtx::new(table_map.len(), &fde, EventType::TABLE_MAP_EVENT as u8);
    let Ok(tme) = ParseBuf(table_map).parse::<TableMapEvent<'_>>(ctx) else {
        return;
    };
    let Ok(mut columns) = crate::mysql::from_table_map(&tme) else {
        return;
    };
    if columns.names.len() != columns.wire.len() {
        columns.names = (0..columns.wire.len())
            .map(|i| Arc::from(format!("c{i}")))
            .collect();
    }
    columns.render_names();
    // A column bitmap from the next bytes, as the rows event header sends it.
    let bitmap = |rows_data: &mut &[u8]| -> Option<Vec<bool>> {
        let count = columns.wire.len();
        let (bits, rest) = rows_data.split_at_checked(count.div_ceil(8))?;
        *rows_data = rest;
        Some(
            (0..count)
                .map(|i| bits[i / 8] & (1 << (i % 8)) != 0)
                .collect(),
        )
    };
    let before = if flags & 1 != 0 {
        bitmap(&mut rows_data)
    } else {
        None
    };
    let after = if flags & 2 != 0 || before.is_none() {
        bitmap(&mut rows_data)
    } else {
        None
    };
    let _ = rows::read_rows(rows_data, before.as_deref(), after.as_deref(), &columns);
}

/// pgoutput messages with value parsing: `[u16 LE length][message]...`.
/// Relation messages give the layout (each column's kind from its type
/// OID, as the daemon resolves built-in types); the tuples of Insert, Update
/// and Delete messages are converted to JSON rows.
pub fn pgoutput_messages(mut data: &[u8]) {
    let mut relations: HashMap<u32, TableSchema> = HashMap::new();
    while let [a, b, rest @ ..] = data {
        let length = u16::from_le_bytes([*a, *b]) as usize;
        let Some((message, rest)) = rest.split_at_checked(length) else {
            return;
        };
        data = rest;
        let Ok(message) = pgoutput::decode(bytes::Bytes::copy_from_slice(message)) else {
            continue;
        };
        let row = |relation: u32, values: &[pgoutput::Datum]| {
            if let Some(schema) = relations.get(&relation) {
                let (row, _) = schema.row(values);
                let _ = schema.key_of(&row);
            }
        };
        match message {
            Message::Relation(relation) => {
                let schema = TableSchema {
                    name: TableName::new(&relation.schema, &relation.table),
                    columns: relation
                        .columns
                        .iter()
                        .map(|c| Column {
                            name: c.name.as_str().into(),
                            type_oid: c.type_oid,
                            type_modifier: c.type_modifier,
                            kind: ValueKind::builtin(c.type_oid).unwrap_or(ValueKind::Text),
                        })
                        .collect(),
                    key: relation
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.key)
                        .map(|(i, _)| i)
                        .collect(),
                };
                relations.insert(relation.id, schema);
            }
            Message::Insert { relation, new } => row(relation, &new),
            Message::Update { relation, old, new } => {
                if let Some(pgoutput::OldRow::Full(v) | pgoutput::OldRow::Key(v)) = &old {
                    row(relation, v);
                }
                row(relation, &new);
            }
            Message::Delete { relation, old } => match &old {
                pgoutput::OldRow::Full(v) | pgoutput::OldRow::Key(v) => row(relation, v),
            },
            _ => {}
        }
    }
}

/// One value text through every Postgres value kind (arrays of each too):
/// the snapshot's path, where texts come from `column::text`.
pub fn postgres_value_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for oid in [20, 1700, 700, 16, 17, 1082, 1083, 1114, 1184, 114, 25] {
        if let Some(kind) = ValueKind::builtin(oid) {
            let _ = kind.to_json(&text);
            let _ = ValueKind::Array(Box::new(kind)).to_json(&text);
        }
    }
}

/// `ChangeEvent::from_json` (apply's reader of file-sink lines and Kinesis
/// records); an event it accepts is written back and must parse again with
/// the same rows.
pub fn event_from_json(data: &[u8]) {
    let Ok(parsed) = crate::ChangeEvent::from_json(data) else {
        return;
    };
    let mut out = Vec::new();
    parsed.event.write_json(&mut out);
    match crate::ChangeEvent::from_json(&out) {
        // A schema event's envelope has no row images: an `after` one
        // carries is not kept (nor applied).
        Ok(_) if parsed.event.op == crate::Op::Schema => {}
        Ok(again) => {
            assert_eq!(
                again.event.after, parsed.event.after,
                "after changed on a round trip"
            );
            assert_eq!(
                again.event.key, parsed.event.key,
                "key changed on a round trip"
            );
        }
        Err(e) => panic!(
            "an accepted event wrote {} which does not parse: {e}",
            String::from_utf8_lossy(&out)
        ),
    }
}

#[cfg(test)]
mod tests {
    /// Inputs the fuzzers found (`fuzz/regressions/<target>/`), each once a
    /// hang, crash or panic: they must now return.
    #[test]
    fn fuzz_findings_return() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 3] = [
            ("binlog_rows", super::binlog_rows),
            ("pgoutput", |data| {
                super::pgoutput_messages(data);
                super::postgres_value_text(data);
            }),
            ("event_from_json", super::event_from_json),
        ];
        let mut ran = 0;
        for (target, run) in targets {
            let Ok(entries) = std::fs::read_dir(root.join(target)) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).expect("read a regression input");
                run(&data);
                ran += 1;
            }
        }
        assert!(ran > 0, "no regression inputs under {}", root.display());
    }
}
