//! pgoutput messages decoded and their tuples turned into JSON rows, and the
//! same bytes as a value text through every Postgres value kind.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tidemark_connectors::fuzzing::pgoutput_messages(data);
    tidemark_connectors::fuzzing::postgres_value_text(data);
});
