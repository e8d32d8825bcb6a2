//! What `tidemark check` asks of a `[target]`, without writing to it: that it
//! answers, that the URL names a database, and that the user may create
//! tidemark's bookkeeping table (unless it exists) and write rows.

use crate::config::TargetConfig;
use crate::target::{mysql, postgres, types, TargetError};
use tidemark_connectors::mysql::{text_rows, text_value};

/// Problems found, one line each (empty: the target is ready).
pub async fn problems(config: &TargetConfig) -> Result<Vec<String>, TargetError> {
    match config.engine.engine() {
        types::Engine::Postgres => postgres_problems(config.url.expose()).await,
        types::Engine::Mysql => mysql_problems(config.url.expose()).await,
    }
}

async fn postgres_problems(url: &str) -> Result<Vec<String>, TargetError> {
    let client = postgres::connect(url).await?;
    let row = client
        .query_one(
            "SELECT current_user::text, current_schema()::text,
                    to_regclass('tidemark_applied') IS NOT NULL,
                    COALESCE(has_schema_privilege(current_schema(), 'CREATE'), false)",
            &[],
        )
        .await
        .map_err(|e| TargetError::Database {
            what: "read the target's privileges".into(),
            detail: e.to_string(),
        })?;
    let read = |i: usize| {
        row.try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    let flag = |i: usize| row.try_get::<_, bool>(i).unwrap_or(false);
    let (user, schema) = (read(0), read(1));
    let mut problems = Vec::new();
    if schema.is_empty() {
        problems.push(format!(
            "target: user {user} has no schema to write in (its search_path names none it can use)"
        ));
    } else if !flag(2) && !flag(3) {
        problems.push(format!(
            "target: user {user} cannot create tidemark's table tidemark_applied in schema {schema} (GRANT CREATE ON SCHEMA {schema} TO {user}, or create it as its owner)"
        ));
    }
    Ok(problems)
}

async fn mysql_problems(url: &str) -> Result<Vec<String>, TargetError> {
    let fail = |what: &'static str| {
        move |e: mysql_async::Error| TargetError::Database {
            what: what.into(),
            detail: e.to_string(),
        }
    };
    let mut conn = mysql::connect(url).await?;
    let Some(db) = text_value(&mut conn, "SELECT DATABASE()")
        .await
        .map_err(fail("read the target database"))?
    else {
        return Ok(vec![
            "target.url: name the target database (mysql://user@host:3306/DB)".into(),
        ]);
    };
    let user = text_value(&mut conn, "SELECT CURRENT_USER()")
        .await
        .map_err(fail("read the target user"))?
        .unwrap_or_default();
    // Privileges held on every database or on this one; table-level grants
    // are left to the first write to judge.
    let granted: Vec<String> = text_rows(
        &mut conn,
        "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES
         UNION SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE TABLE_SCHEMA = ?",
        (db.as_str(),),
    )
    .await
    .map_err(fail("read the target's privileges"))?
    .into_iter()
    .filter_map(|row| row.into_iter().next().flatten())
    .collect();
    let exists = !text_rows(
        &mut conn,
        "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'tidemark_applied'",
        (db.as_str(),),
    )
    .await
    .map_err(fail("look for tidemark_applied"))?
    .is_empty();
    let mut needed = vec!["INSERT", "UPDATE", "DELETE"];
    if !exists {
        needed.push("CREATE");
    }
    let missing: Vec<&str> = needed
        .into_iter()
        .filter(|p| !granted.iter().any(|g| g == p))
        .collect();
    Ok(if missing.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "target: user {user} lacks {} on database {db} (GRANT {} ON `{db}`.* TO ...)",
            missing.join(", "),
            missing.join(", ")
        )]
    })
}
