//! `tidemark cursor show|init|reset`.

use super::assemble::cursor_store;
use std::path::Path;
use tidemark::config::{Config, CursorConfig};
use tidemark::cursor::CursorStore;
use tidemark::ops::Health;

/// Prints the stored cursor.
pub(crate) async fn show(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    match cursor_store(&config, &Health::new())
        .await?
        .describe()
        .await?
    {
        Some(record) => println!("{}", serde_json::to_string_pretty(&record)?),
        None => println!("no cursor yet for pipeline {}", config.pipeline.name),
    }
    Ok(())
}

/// Forgets the stored position: the next start takes a new snapshot.
pub(crate) async fn reset(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    if cursor_store(&config, &Health::new()).await?.reset().await? {
        println!(
            "cursor of pipeline {} reset: the next start takes a new snapshot",
            config.pipeline.name
        );
    } else {
        println!("no cursor for pipeline {}", config.pipeline.name);
    }
    Ok(())
}

/// Creates the cursor store (the DynamoDB table).
pub(crate) async fn init(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    match cursor_store(&config, &Health::new()).await? {
        CursorStore::Dynamo(store) => {
            let what = if store.init().await? {
                "created"
            } else {
                "already exists"
            };
            if let CursorConfig::Dynamodb { table, .. } = &config.cursor {
                println!("dynamodb table {table} {what}");
            }
        }
        CursorStore::File(_) | CursorStore::Target(_) => {
            println!("file cursors need no set-up")
        }
    }
    Ok(())
}
