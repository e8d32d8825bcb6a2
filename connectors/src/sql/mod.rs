//! The SQL text tidemark writes itself, one module per dialect: identifier
//! quoting, string literals and a server error in one line. Both crates use
//! these (the sources and poll queries here; the target writers, `check` and
//! `migrate` in the daemon), so each dialect is quoted in exactly one place.
//! Values travel as bound parameters wherever the protocol allows; these are
//! for names, and for the few statements that cannot take parameters.

pub mod mysql;
pub mod postgres;
