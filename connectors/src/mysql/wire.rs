//! Hand decoders for the most common binlog column encodings, written straight
//! into an image's JSON: fixed-width integers, DECIMAL, DATETIME2 and UTF-8
//! VARCHARs.
//!
//! `mysql_common`'s `BinlogValue` decoder builds a `Value` per column (a new
//! vector per string, a `Vec` of base-10⁹ digits per DECIMAL, formatted again
//! through `core::fmt`); at hundreds of thousands of rows a second that was most
//! of the reading thread's time. Each decoder here is checked in the tests
//! against `mysql_common`'s, value for value, and the buffer is left where
//! `mysql_common` would leave it. Anything else goes through `mysql_common`.
//!
//! Two differences, on purpose: a signed MEDIUMINT is sign-extended
//! (`mysql_common` 0.37 reads -1 as 16777215), and a DECIMAL group outside its
//! digits' range is an error instead of garbage digits.

use super::layout::WireColumn;
use super::values::MyKind;
use crate::event::json;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::Value as MyValue;
use mysql_common::binlog::decimal::decimal_bin_size;
use mysql_common::binlog::misc::{datetime_from_packed, my_datetime_packed_from_binary};
use mysql_common::io::ParseBuf;
use std::io;

/// Writes the column's value as JSON when it has one of the encodings above
/// (and returns `true`); otherwise reads nothing and returns `false`.
pub(super) fn write_json(
    buf: &mut ParseBuf<'_>,
    column: &WireColumn,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    use ColumnType::*;
    match column.column_type {
        MYSQL_TYPE_TINY => integer::<1>(buf, column.unsigned, out)?,
        MYSQL_TYPE_SHORT => integer::<2>(buf, column.unsigned, out)?,
        MYSQL_TYPE_INT24 => integer::<3>(buf, column.unsigned, out)?,
        MYSQL_TYPE_LONG => integer::<4>(buf, column.unsigned, out)?,
        MYSQL_TYPE_LONGLONG => integer::<8>(buf, column.unsigned, out)?,
        MYSQL_TYPE_NEWDECIMAL => {
            let (Some(&precision), Some(&scale)) = (column.meta.first(), column.meta.get(1)) else {
                return Err(invalid("DECIMAL column without precision and scale"));
            };
            out.push(b'"');
            decimal(buf, precision as usize, scale as usize, out)?;
            out.push(b'"');
        }
        MYSQL_TYPE_DATETIME2
            if column.kind == MyKind::DateTime && column.meta.first().is_some_and(|f| *f <= 6) =>
        {
            let fsp = column.meta.first().copied().unwrap_or(0);
            let bytes = eat(buf, 5 + (fsp as usize).div_ceil(2), "DATETIME")?;
            let packed = my_datetime_packed_from_binary(bytes, fsp as u32)?;
            let value = datetime_from_packed(packed);
            if !datetime(&value, out) {
                column.kind.write_json(BinlogValue::Value(value), out);
            }
        }
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => match utf8_varchar(buf, column)? {
            Some(text) => json::string(out, text),
            None => return Ok(false),
        },
        _ => return Ok(false),
    }
    Ok(true)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn eat<'a>(buf: &mut ParseBuf<'a>, len: usize, what: &str) -> io::Result<&'a [u8]> {
    buf.checked_eat(len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, format!("truncated {what}")))
}

/// A little-endian integer of `N` bytes, sign-extended unless `unsigned`.
fn integer<const N: usize>(
    buf: &mut ParseBuf<'_>,
    unsigned: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let bytes = eat(buf, N, "integer")?;
    let mut le = [0u8; 8];
    le[..N].copy_from_slice(bytes);
    let raw = u64::from_le_bytes(le);
    if unsigned {
        json::integer(out, raw);
    } else {
        let shift = 64 - 8 * N as u32;
        json::integer(out, ((raw << shift) as i64) >> shift);
    }
    Ok(())
}

/// A DATETIME as `"YYYY-MM-DDTHH:MM:SS.ffffff"` (the form `MyKind::write_json`
/// gives), built in place: `false` (nothing written) for values outside that
/// layout (years past 9999, fractions past six digits), left to `write_json`.
fn datetime(value: &MyValue, out: &mut Vec<u8>) -> bool {
    let &MyValue::Date(year, month, day, hour, minute, second, micros) = value else {
        return false;
    };
    if year > 9999 || micros > 999_999 {
        return false;
    }
    let mut text = *b"\"0000-00-00T00:00:00.000000\"";
    let mut put = |at: usize, mut n: u32, width: usize| {
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(1, year.into(), 4);
    put(6, month.into(), 2);
    put(9, day.into(), 2);
    put(12, hour.into(), 2);
    put(15, minute.into(), 2);
    put(18, second.into(), 2);
    put(21, micros, 6);
    out.extend_from_slice(&text);
    true
}

/// Digits of a base-10⁹ group by its decimal width (0..=9) → bytes on the wire.
const GROUP_BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
const POWERS_OF_10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// A binlog DECIMAL(precision, scale) as its text, the way `mysql_common`'s
/// `Decimal` prints it: `-` for negatives, leading zeros dropped (`0` when the
/// integer part is zero), all `scale` digits after the point.
///
/// On the wire the integer digits come first, then the fraction, in groups of
/// nine digits (four big-endian bytes each) with a shorter group at the outer
/// end of each part. The first bit is flipped, and every bit of a negative
/// number is inverted, so that the bytes sort like the numbers.
fn decimal(
    buf: &mut ParseBuf<'_>,
    precision: usize,
    scale: usize,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    if scale > precision || precision > 65 {
        return Err(invalid(
            "DECIMAL with scale over precision or precision over 65",
        ));
    }
    let bytes = eat(buf, decimal_bin_size(precision, scale), "DECIMAL")?;
    let negative = bytes.first().is_some_and(|b| b & 0x80 == 0);
    let mut at = 0;
    // One group of `digits` decimal digits, sign bit restored and inverted back.
    let mut group = |digits: usize| -> io::Result<u32> {
        let len = GROUP_BYTES[digits];
        let mut value = 0u32;
        for (i, byte) in bytes[at..at + len].iter().enumerate() {
            let byte = if at + i == 0 { byte ^ 0x80 } else { *byte };
            value = value << 8 | u32::from(if negative { !byte } else { byte });
        }
        at += len;
        if value >= POWERS_OF_10[digits] {
            return Err(invalid("DECIMAL group out of range"));
        }
        Ok(value)
    };
    let start = out.len();
    if negative {
        out.push(b'-');
    }
    let integer_digits = precision - scale;
    let mut leading = true;
    let widths = (integer_digits % 9 > 0)
        .then_some(integer_digits % 9)
        .into_iter()
        .chain(std::iter::repeat_n(9, integer_digits / 9));
    for width in widths {
        let value = group(width)?;
        if leading && value == 0 {
            continue;
        }
        push_digits(out, value, if leading { 0 } else { 9 });
        leading = false;
    }
    if leading {
        out.push(b'0');
    }
    if scale > 0 {
        out.push(b'.');
        for _ in 0..scale / 9 {
            push_digits(out, group(9)?, 9);
        }
        if scale % 9 > 0 {
            push_digits(out, group(scale % 9)?, scale % 9);
        }
    } else if leading {
        // All zero, nothing after the point: `mysql_common` prints a bare `0`.
        out.truncate(start);
        out.push(b'0');
    }
    Ok(())
}

/// `value` in decimal, zero-padded to `width` digits.
fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut from = digits.len();
    while value > 0 {
        from -= 1;
        digits[from] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    let from = from.min(digits.len() - width.max(1));
    out.extend_from_slice(&digits[from..]);
}

/// A VARCHAR value of a UTF-8 column, borrowed from the image: its length (one
/// byte, or two when the column can hold more than 255 bytes) then its bytes.
/// `mysql_common` would copy it into a new vector first. `None` (and nothing
/// read) for other columns and for bytes that are not UTF-8.
fn utf8_varchar<'a>(buf: &mut ParseBuf<'a>, column: &WireColumn) -> io::Result<Option<&'a str>> {
    let (MyKind::Text { latin1: false }, [lo, hi, ..]) = (&column.kind, column.meta.as_slice())
    else {
        return Ok(None);
    };
    let prefix = if u16::from_le_bytes([*lo, *hi]) < 256 {
        1
    } else {
        2
    };
    let data: &'a [u8] = buf.0;
    let len = match data.get(..prefix) {
        Some([n]) => *n as usize,
        Some([lo, hi]) => u16::from_le_bytes([*lo, *hi]) as usize,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated VARCHAR length",
            ))
        }
    };
    let Some(bytes) = data.get(prefix..prefix + len) else {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated VARCHAR value",
        ));
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(None);
    };
    buf.0 = &data[prefix + len..];
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::binlog::decimal::Decimal;
    use std::str::FromStr;

    fn column(column_type: ColumnType, meta: &[u8], unsigned: bool, kind: MyKind) -> WireColumn {
        WireColumn {
            column_type,
            meta: meta.to_vec(),
            unsigned,
            kind,
        }
    }

    /// Decodes `image` both ways: the JSON text and where the buffer ends up
    /// must be the same.
    fn assert_same(column: &WireColumn, image: &[u8]) {
        let mut ours = ParseBuf(image);
        let mut json = Vec::new();
        let handled = write_json(&mut ours, column, &mut json).expect("ours");
        assert!(handled, "{column:?} not handled");
        let mut theirs = ParseBuf(image);
        let value: BinlogValue<'_> = theirs
            .parse((column.column_type, &column.meta[..], column.unsigned, false))
            .expect("theirs");
        let mut expected = Vec::new();
        json::value(&mut expected, &column.kind.to_json(value));
        assert_eq!(
            String::from_utf8_lossy(&json),
            String::from_utf8_lossy(&expected),
            "{column:?} {image:?}"
        );
        assert_eq!(ours.0, theirs.0, "{column:?}: buffer left elsewhere");
    }

    fn varchar(max_bytes: u16) -> WireColumn {
        column(
            ColumnType::MYSQL_TYPE_VARCHAR,
            &max_bytes.to_le_bytes(),
            false,
            MyKind::Text { latin1: false },
        )
    }

    #[test]
    fn varchar_reads_match_mysql_common() {
        assert_same(&varchar(40), b"\x05hello+rest");
        assert_same(&varchar(1200), b"\x04\x00\xf0\x9f\x8c\x8a+rest");
        assert_same(&varchar(40), b"\x00+rest");
        // Not UTF-8: left to the decoder, nothing consumed.
        let image = b"\x01\xff".to_vec();
        let mut buf = ParseBuf(&image);
        assert!(!write_json(&mut buf, &varchar(40), &mut Vec::new()).expect("read"));
        assert_eq!(buf.0.len(), 2);
        // Truncated: an error, not a panic.
        assert!(write_json(&mut ParseBuf(b"\x09abc"), &varchar(40), &mut Vec::new()).is_err());
    }

    #[test]
    fn integers_match_mysql_common() {
        use ColumnType::*;
        for (column_type, len) in [
            (MYSQL_TYPE_TINY, 1),
            (MYSQL_TYPE_SHORT, 2),
            (MYSQL_TYPE_INT24, 3),
            (MYSQL_TYPE_LONG, 4),
            (MYSQL_TYPE_LONGLONG, 8),
        ] {
            for unsigned in [false, true] {
                let col = column(column_type, &[], unsigned, MyKind::Integer);
                for pattern in [
                    0u64,
                    1,
                    0x7f,
                    0x80,
                    0xff,
                    0x1234_5678_9abc_def0,
                    u64::MAX,
                    1 << 63,
                ] {
                    let mut image = pattern.to_le_bytes()[..len].to_vec();
                    image.push(0xaa);
                    if column_type == MYSQL_TYPE_INT24 && !unsigned {
                        // mysql_common 0.37 reads a signed MEDIUMINT without
                        // extending its sign (-1 comes out as 16777215).
                        let mut json = Vec::new();
                        write_json(&mut ParseBuf(&image), &col, &mut json).expect("ours");
                        let expected = ((pattern as u32) << 8) as i32 >> 8;
                        assert_eq!(json, expected.to_string().into_bytes());
                    } else {
                        assert_same(&col, &image);
                    }
                }
            }
        }
        assert!(write_json(
            &mut ParseBuf(b"\x01\x02"),
            &column(ColumnType::MYSQL_TYPE_LONG, &[], false, MyKind::Integer),
            &mut Vec::new()
        )
        .is_err());
    }

    /// Wire bytes of a DECIMAL(precision, scale) whose groups take the values
    /// `next()` gives (each kept below its group's limit).
    fn encode_decimal(
        precision: usize,
        scale: usize,
        negative: bool,
        next: &mut impl FnMut() -> u32,
    ) -> Vec<u8> {
        let int_digits = precision - scale;
        let widths = (int_digits % 9 > 0)
            .then_some(int_digits % 9)
            .into_iter()
            .chain(std::iter::repeat_n(9, int_digits / 9 + scale / 9))
            .chain((scale % 9 > 0).then_some(scale % 9));
        let mut bytes = Vec::new();
        for width in widths {
            let value = next() % POWERS_OF_10[width];
            bytes.extend_from_slice(&value.to_be_bytes()[4 - GROUP_BYTES[width]..]);
        }
        bytes[0] ^= 0x80;
        if negative {
            bytes.iter_mut().for_each(|b| *b = !*b);
        }
        bytes
    }

    #[test]
    fn decimals_match_mysql_common() {
        let mut seed = 0x2545_f491u32;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut zero = || 0;
        for (precision, scale) in [
            (1, 0),
            (5, 0),
            (9, 0),
            (10, 0),
            (10, 2),
            (18, 9),
            (19, 10),
            (40, 1),
            (65, 30),
            (30, 30),
            (12, 11),
            (65, 0),
        ] {
            let col = column(
                ColumnType::MYSQL_TYPE_NEWDECIMAL,
                &[precision as u8, scale as u8],
                false,
                MyKind::Decimal,
            );
            for negative in [false, true] {
                let mut images = vec![encode_decimal(precision, scale, negative, &mut zero)];
                for _ in 0..50 {
                    images.push(encode_decimal(precision, scale, negative, &mut random));
                }
                // Small values: leading groups zero.
                let mut small = || random() % 1000;
                images.push(encode_decimal(precision, scale, negative, &mut small));
                for mut image in images {
                    image.push(0xaa);
                    assert_same(&col, &image);
                }
            }
        }
        // The encoder above agrees with mysql_common's on a known value.
        let mut groups = [12u32, 345_678_901, 500_000_000].into_iter();
        let ours = encode_decimal(20, 9, true, &mut || groups.next().unwrap_or(0));
        let mut theirs = Vec::new();
        Decimal::from_str("-12345678901.500000000")
            .expect("decimal")
            .write_bin(&mut theirs)
            .expect("write");
        assert_eq!(ours, theirs);
        let mut text = Vec::new();
        decimal(&mut ParseBuf(&ours), 20, 9, &mut text).expect("decode");
        assert_eq!(text, b"-12345678901.500000000");
        // Out-of-range groups are an error, not digits.
        assert!(decimal(
            &mut ParseBuf(&[0xff, 0xff, 0xff, 0xff, 0xff]),
            10,
            0,
            &mut Vec::new()
        )
        .is_err());
    }

    #[test]
    fn datetimes_match_mysql_common() {
        for fsp in 0..=6u8 {
            let col = column(
                ColumnType::MYSQL_TYPE_DATETIME2,
                &[fsp],
                false,
                MyKind::DateTime,
            );
            for (ymd, hms, frac) in [
                (
                    (2026 * 13 + 11) << 5 | 22,
                    (2 << 12) | (8 << 6) | 39,
                    123_456u32,
                ),
                (0, 0, 0),
                (
                    (9999 * 13 + 12) << 5 | 31,
                    (23 << 12) | (59 << 6) | 59,
                    999_999,
                ),
                ((13 + 1) << 5 | 1, (1 << 12) | (2 << 6) | 3, 4),
                // Past the fixed layout (year 10000): left to the general writer.
                ((10_000 * 13 + 1) << 5 | 2, 0, 50),
            ] {
                let int_part: u64 = ((ymd as u64) << 17 | hms as u64) + 0x80_0000_0000;
                let mut image = int_part.to_be_bytes()[3..].to_vec();
                let frac_bytes = (fsp as usize).div_ceil(2);
                let scaled = match fsp {
                    1 | 2 => frac / 10_000,
                    3 | 4 => frac / 100,
                    _ => frac,
                };
                image.extend_from_slice(&scaled.to_be_bytes()[4 - frac_bytes..]);
                image.push(0xaa);
                assert_same(&col, &image);
            }
        }
    }
}
