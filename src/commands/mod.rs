//! The subcommands, one module each, and what they share: `assemble` builds
//! a sink, cursor store and source from the config, `reconnect` runs a
//! session again after a failure a new one may cure. This is the only layer
//! that reads the config's sections and turns them into the library's parts.

pub(crate) mod apply;
pub(crate) mod assemble;
pub(crate) mod check;
pub(crate) mod cursor;
pub(crate) mod history;
pub(crate) mod migrate;
pub(crate) mod reconnect;
pub(crate) mod run;
pub(crate) mod signals;
pub(crate) mod unmask;
