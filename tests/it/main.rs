//! Integration tests against the real PostgreSQL (wal_level=logical on 5432, and a
//! wal_level=replica server on 5433), run by `scripts/test.sh` which sets both up.

mod apply;
mod aws;
mod capture;
mod cli;
mod common;
mod crash;
mod exactly_once;
mod faithful;
mod fault_proxy;
mod fencing;
mod history;
mod masking;
mod memory;
mod migrate;
mod mysql;
mod ops;
mod poll;
mod poll_mysql;
mod reconnect;
mod secrets;
mod snapshot;
mod tls;
mod types_differential;
