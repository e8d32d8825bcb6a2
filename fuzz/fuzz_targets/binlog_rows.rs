//! The binlog row decoder: a TABLE_MAP (types, metadata, optional metadata)
//! then rows-event images read with its layout.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tidemark_connectors::fuzzing::binlog_rows(data);
});
