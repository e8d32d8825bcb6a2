//! No password, connection string or substituted `${VAR}` value appears in
//! anything tidemark prints: `check`, `run`, `apply` and `migrate` are run
//! with a known password in every URL form, against servers that refuse
//! them, and every line of their output is searched for it.

use crate::common::*;
use std::path::Path;

const PASSWORD: &str = "Tm-S3cret-pw-9";

/// Runs `args` with `env`; returns exit code and both outputs together.
fn run_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut command = tidemark();
    command.args(args).current_dir(scratch.path());
    for (name, value) in env {
        command.env(name, value);
    }
    let out = bounded_output(&mut command);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn write_config(dir: &Path, name: &str, source: &str, target: &str) -> String {
    let events = dir.join(format!("{name}-events"));
    std::fs::create_dir_all(&events).expect("events");
    let (kind, extra) = if source.starts_with("mysql") {
        ("mysql", "server_id = 4999\n")
    } else {
        (
            "postgres",
            "slot = \"tm_secrets\"\npublication = \"tm_secrets\"\n",
        )
    };
    let target_kind = if target.starts_with("mysql") {
        "mysql"
    } else {
        "postgres"
    };
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nname = \"tm_secrets\"\n[source]\ntype = \"{kind}\"\nurl = \"{source}\"\ntables = [\"public.t\"]\n{extra}[sink]\ntype = \"file\"\npath = \"{}\"\n[cursor]\ntype = \"file\"\npath = \"{}/{name}-cursor.json\"\n[target]\ntype = \"{target_kind}\"\nurl = \"{target}\"\n[apply]\ninput = \"sink\"\n",
            events.display(),
            dir.display()
        ),
    )
    .expect("config");
    path.to_str().expect("path").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_in_any_output_of_any_command() {
    let db = TestDb::new("tm_secrets").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .expect("table");
    let good_source = db.url();
    let failing = [
        format!("postgres://tm_user:{PASSWORD}@127.0.0.1:1/tm_secrets"),
        format!("postgresql://tm_user:{PASSWORD}@127.0.0.1:5432/tm_no_such_db?sslmode=disable"),
        format!("postgres://tm_user:{PASSWORD}@127.0.0.1:5432/tm_secrets?sslmode=nonsense"),
        format!("host=127.0.0.1 port=1 user=tm_user password={PASSWORD} dbname=tm_secrets"),
        format!("host=127.0.0.1 port=1 user=tm_user password={PASSWORD} sslmode=require"),
        format!("mysql://tm_user:{PASSWORD}@127.0.0.1:1/tm_secrets"),
        format!("mysql://root:{PASSWORD}@127.0.0.1:3306/test"),
        format!("mysql://root:{PASSWORD}@127.0.0.1:3306/test?ssl-mode=sometimes"),
        format!("mysql://root:{PASSWORD}@127.0.0.1:3306/test?stmt_cache_size=x{PASSWORD}"),
        format!("nosuch://root:{PASSWORD}@127.0.0.1/test"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut runs = 0;
    for (i, url) in failing.iter().enumerate() {
        // As the source (check, run, migrate), then as the target (apply,
        // migrate) behind a source that works.
        let as_source = write_config(dir.path(), &format!("s{i}"), url, &good_source);
        let as_target = write_config(dir.path(), &format!("t{i}"), &good_source, url);
        for (args, env) in [
            (vec!["check", "--config", &as_source], vec![]),
            (vec!["run", "--config", &as_source], vec![]),
            (vec!["migrate", "run", "--config", &as_source], vec![]),
            (
                vec!["apply", "--config", &as_target, "--until-idle"],
                vec![],
            ),
            (vec!["migrate", "run", "--config", &as_target], vec![]),
            (
                vec!["--log-format", "json", "run", "--config", &as_source],
                vec![],
            ),
        ] {
            let (code, output) = run_with(&args, &env);
            runs += 1;
            assert_ne!(code, 0, "{args:?} with {url}: {output}");
            assert!(
                !output.contains(PASSWORD),
                "{args:?} printed the password:\n{output}"
            );
        }
    }
    // Substituted values: a secret in an enum field and in a URL.
    let config = dir.path().join("env.toml");
    std::fs::write(
        &config,
        "[pipeline]\nname = \"tm_secrets\"\n[source]\ntype = \"${TM_SECRET}\"\nurl = \"postgres://x@127.0.0.1:1/x\"\ntables = [\"public.t\"]\n",
    )
    .expect("config");
    let config_url = dir.path().join("env-url.toml");
    std::fs::write(
        &config_url,
        "[pipeline]\nname = \"tm_secrets\"\n[source]\ntype = \"postgres\"\nurl = \"${TM_SECRET_URL}\"\ntables = [\"public.t\"]\nslot = \"tm_secrets\"\npublication = \"tm_secrets\"\n",
    )
    .expect("config");
    let secret_url = format!("postgres://tm_user:{PASSWORD}@127.0.0.1:1/x");
    for (command, config) in [
        ("check", &config),
        ("run", &config),
        ("check", &config_url),
        ("run", &config_url),
    ] {
        let (code, output) = run_with(
            &[command, "--config", config.to_str().expect("path")],
            &[("TM_SECRET", PASSWORD), ("TM_SECRET_URL", &secret_url)],
        );
        runs += 1;
        assert_ne!(code, 0, "{output}");
        assert!(
            !output.contains(PASSWORD),
            "{command} printed the password:\n{output}"
        );
    }
    assert_eq!(runs, failing.len() * 6 + 4);
}
