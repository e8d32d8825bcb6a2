//! Decoding of `pgoutput` (protocol version 1) row messages.
//!
//! The replication client hands us each message as raw bytes; Begin and Commit are
//! already parsed by it. This module turns Relation, Type, Origin, Insert, Update,
//! Delete and Truncate messages into plain structs, keeping what the wire says
//! exactly: a column value is text, NULL, or "unchanged TOAST" (not sent), and an
//! update's old row is absent, key-only (`K`) or full (`O`).

use bytes::{Buf, Bytes};

/// A column value as pgoutput sends it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Datum {
    Null,
    /// An unchanged TOASTed value the server did not send.
    Unchanged,
    /// The value's text form (or binary form, when binary mode is on).
    Text(Bytes),
}

/// One column of a relation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RelationColumn {
    /// Part of the replica identity key.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Relation {
    pub id: u32,
    pub schema: String,
    pub table: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// The old row carried by an update or delete.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OldRow {
    /// Replica identity key columns only; other columns are NULL placeholders.
    Key(Vec<Datum>),
    /// The whole old row (REPLICA IDENTITY FULL).
    Full(Vec<Datum>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    Relation(Relation),
    /// A user-defined type's name; values are decoded by OID through the catalog.
    Type,
    Origin,
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        old: Option<OldRow>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: OldRow,
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
}

/// What went wrong decoding one message.
#[derive(Debug, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub(crate) struct DecodeError(pub String);

fn need(buf: &Bytes, n: usize, what: &str) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        return Err(DecodeError(format!("truncated {what}")));
    }
    Ok(())
}

fn u8_(buf: &mut Bytes, what: &str) -> Result<u8, DecodeError> {
    need(buf, 1, what)?;
    Ok(buf.get_u8())
}

fn u16_(buf: &mut Bytes, what: &str) -> Result<u16, DecodeError> {
    need(buf, 2, what)?;
    Ok(buf.get_u16())
}

fn u32_(buf: &mut Bytes, what: &str) -> Result<u32, DecodeError> {
    need(buf, 4, what)?;
    Ok(buf.get_u32())
}

fn cstring(buf: &mut Bytes, what: &str) -> Result<String, DecodeError> {
    let end = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| DecodeError(format!("unterminated {what}")))?;
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.advance(end + 1);
    Ok(text)
}

fn tuple(buf: &mut Bytes) -> Result<Vec<Datum>, DecodeError> {
    let n = u16_(buf, "tuple column count")?;
    let mut values = Vec::with_capacity(n as usize);
    for _ in 0..n {
        values.push(match u8_(buf, "tuple value kind")? {
            b'n' => Datum::Null,
            b'u' => Datum::Unchanged,
            b't' | b'b' => {
                let len = u32_(buf, "value length")? as usize;
                need(buf, len, "value")?;
                Datum::Text(buf.split_to(len))
            }
            other => return Err(DecodeError(format!("unknown tuple value kind {other:#x}"))),
        });
    }
    Ok(values)
}

fn old_row(kind: u8, buf: &mut Bytes) -> Result<OldRow, DecodeError> {
    match kind {
        b'K' => Ok(OldRow::Key(tuple(buf)?)),
        b'O' => Ok(OldRow::Full(tuple(buf)?)),
        other => Err(DecodeError(format!("unknown old-row marker {other:#x}"))),
    }
}

/// Decodes one pgoutput message. Begin, Commit and logical messages are handled by
/// the replication client and never reach here; any other tag is an error.
pub(crate) fn decode(mut buf: Bytes) -> Result<Message, DecodeError> {
    let tag = u8_(&mut buf, "message tag")?;
    match tag {
        b'R' => Ok(Message::Relation(relation(&mut buf)?)),
        b'Y' => Ok(Message::Type),
        b'O' => Ok(Message::Origin),
        b'I' => {
            let relation = u32_(&mut buf, "relation id")?;
            match u8_(&mut buf, "new-row marker")? {
                b'N' => Ok(Message::Insert {
                    relation,
                    new: tuple(&mut buf)?,
                }),
                other => Err(DecodeError(format!("insert without new row ({other:#x})"))),
            }
        }
        b'U' => update(&mut buf),
        b'D' => {
            let relation = u32_(&mut buf, "relation id")?;
            let kind = u8_(&mut buf, "old-row marker")?;
            Ok(Message::Delete {
                relation,
                old: old_row(kind, &mut buf)?,
            })
        }
        b'T' => truncate(&mut buf),
        other => Err(DecodeError(format!(
            "unexpected message tag {:?}",
            other as char
        ))),
    }
}

/// The body of a Relation message (`R`): the relation's id, name, replica
/// identity and columns.
fn relation(buf: &mut Bytes) -> Result<Relation, DecodeError> {
    let id = u32_(buf, "relation id")?;
    let schema = cstring(buf, "schema name")?;
    let table = cstring(buf, "table name")?;
    let replica_identity = u8_(buf, "replica identity")?;
    let n = u16_(buf, "column count")?;
    let mut columns = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let flags = u8_(buf, "column flags")?;
        let name = cstring(buf, "column name")?;
        let type_oid = u32_(buf, "column type")?;
        let type_modifier = u32_(buf, "column type modifier")? as i32;
        columns.push(RelationColumn {
            key: flags & 1 == 1,
            name,
            type_oid,
            type_modifier,
        });
    }
    Ok(Relation {
        id,
        schema,
        table,
        replica_identity,
        columns,
    })
}

/// The body of an Update message (`U`): the old row comes first when the
/// server sends one (`K` or `O`), then the new row (`N`).
fn update(buf: &mut Bytes) -> Result<Message, DecodeError> {
    let relation = u32_(buf, "relation id")?;
    let mut marker = u8_(buf, "update marker")?;
    let old = if marker == b'K' || marker == b'O' {
        let old = old_row(marker, buf)?;
        marker = u8_(buf, "new-row marker")?;
        Some(old)
    } else {
        None
    };
    if marker != b'N' {
        return Err(DecodeError(format!("update without new row ({marker:#x})")));
    }
    Ok(Message::Update {
        relation,
        old,
        new: tuple(buf)?,
    })
}

/// The body of a Truncate message (`T`): the relations and the options.
fn truncate(buf: &mut Bytes) -> Result<Message, DecodeError> {
    let n = u32_(buf, "relation count")?;
    let options = u8_(buf, "truncate options")?;
    let relations = (0..n)
        .map(|_| u32_(buf, "relation id"))
        .collect::<Result<_, _>>()?;
    Ok(Message::Truncate {
        relations,
        cascade: options & 1 != 0,
        restart_identity: options & 2 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> Vec<u8> {
        let mut out = vec![b't'];
        out.extend((v.len() as u32).to_be_bytes());
        out.extend(v.as_bytes());
        out
    }

    #[test]
    fn decodes_update_with_key_and_unchanged_toast() {
        let mut msg = vec![b'U'];
        msg.extend(16384u32.to_be_bytes());
        msg.push(b'K');
        msg.extend(2u16.to_be_bytes());
        msg.extend(text("7"));
        msg.push(b'n');
        msg.push(b'N');
        msg.extend(2u16.to_be_bytes());
        msg.extend(text("8"));
        msg.push(b'u');
        let decoded = decode(Bytes::from(msg)).expect("decodes");
        assert_eq!(
            decoded,
            Message::Update {
                relation: 16384,
                old: Some(OldRow::Key(vec![
                    Datum::Text(Bytes::from_static(b"7")),
                    Datum::Null
                ])),
                new: vec![Datum::Text(Bytes::from_static(b"8")), Datum::Unchanged],
            }
        );
    }

    #[test]
    fn truncated_message_is_an_error_not_a_panic() {
        let msg = vec![b'I', 0, 0, 0x40, 0, b'N', 0, 1, b't', 0, 0, 0, 9, b'x'];
        assert!(decode(Bytes::from(msg)).is_err());
    }
}
