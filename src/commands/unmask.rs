//! `tidemark decrypt` and `tidemark detokenize`: the reversible masks,
//! reversed with the config's keys. Nothing is logged; the values go to
//! stdout, one per line, and a value that does not reverse fails the command
//! naming its place in the list (never the value).

use anyhow::{bail, Context};
use std::path::Path;
use tidemark::config::Config;
use tidemark::transform::{mask, tokenize};

pub(crate) fn decrypt(config: &Path, values: &[String]) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    for (i, value) in values.iter().enumerate() {
        let plain = mask::decrypt(&config.keys, value)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("value {}", i + 1))?;
        println!("{plain}");
    }
    Ok(())
}

pub(crate) fn detokenize(config: &Path, key: &str, values: &[String]) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let Some(key) = config.keys.get(key) else {
        bail!(
            "--key: no key {key:?} in [keys] (keys: {})",
            config.keys.ids().collect::<Vec<_>>().join(", ")
        );
    };
    for (i, value) in values.iter().enumerate() {
        let original = tokenize::decrypt(key, value)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("value {}", i + 1))?;
        println!("{original}");
    }
    Ok(())
}
