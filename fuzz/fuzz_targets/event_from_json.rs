//! `ChangeEvent::from_json`, which `apply` runs on file-sink lines and Kinesis
//! records; what parses must write back out and parse again.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tidemark_connectors::fuzzing::event_from_json(data);
});
