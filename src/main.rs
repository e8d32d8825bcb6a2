//! The `tidemark` command: `run`, `check` and `cursor show|init|reset`.
//! Errors are reported as one line each, with a non-zero exit code.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use tidemark::apply::inputs::{files, kinesis};
use tidemark::apply::sink::{TargetCursor, TargetSink};
use tidemark::apply::Target;
use tidemark::config::{
    parse_duration, ApplyInput, Config, CursorConfig, OversizedPolicy, SinkConfig, SourceConfig,
};
use tidemark::cursor::lease::LeaseTable;
use tidemark::cursor::{CursorStore, DynamoCursor, FileCursor};
use tidemark::migrate;
use tidemark::ops::logging::{self, LogFormat};
use tidemark::ops::retention::Watch;
use tidemark::ops::{self, health, Phase};
use tidemark::pipeline::{self, AnySource};
use tidemark::sinks::{AnySink, FileSink, KinesisSink, Oversized, StdoutSink};
use tidemark_connectors::event::{lsn_text, parse_lsn};
use tidemark_connectors::mysql::{self, MysqlSource};
use tidemark_connectors::poll::PollSource;
use tidemark_connectors::postgres::{self, PostgresSource};
use tokio::signal::unix::{signal, SignalKind};

/// Events are allocated on the reader task and freed on the writer: mimalloc
/// handles that cross-thread traffic without the lock contention glibc's
/// allocator showed in the benchmarks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Change-data capture: database logs to durable sinks"
)]
struct Cli {
    /// Log lines as text (the default, for journald) or JSON (for log shippers).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture changes until SIGTERM/SIGINT.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Stop after the first transaction that ends at or past this LSN (e.g. 0/16B3748).
        #[arg(long, value_parser = parse_lsn_arg)]
        stop_at_lsn: Option<u64>,
        /// MySQL: stop after the first transaction that ends at or past FILE:OFFSET.
        #[arg(long, value_parser = parse_binlog_arg)]
        stop_at_binlog: Option<(String, u64)>,
    },
    /// Apply change events to the `[target]` database until SIGTERM/SIGINT.
    Apply {
        #[arg(long)]
        config: PathBuf,
        /// With `[apply] input = "sink"`: stop once everything written so far is applied.
        #[arg(long)]
        until_idle: bool,
    },
    /// Migrate a database: copy, catch up, cut over, verify.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Validate the config and check the source without changing anything.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Cursor operations.
    Cursor {
        #[command(subcommand)]
        command: CursorCommand,
    },
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Start or resume the migration: create tables, record the start position,
    /// copy, then apply changes until cut over (or SIGTERM).
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the stage, copy progress, lag and the recorded start position.
    Status {
        #[arg(long)]
        config: PathBuf,
    },
    /// Cut over the running migration; exits 0 only when verified.
    Cutover {
        #[arg(long)]
        config: PathBuf,
        /// Wait until the migration is at most this far behind (e.g. 5s).
        #[arg(long, default_value = "5s")]
        max_lag: String,
        /// Fence writes on the source first (MySQL read_only; Postgres read-only
        /// default and open sessions ended). Without it, stop the application first.
        #[arg(long)]
        fence: bool,
        /// Hold the cutover while this file exists.
        #[arg(long)]
        postpone_flag: Option<PathBuf>,
        /// Give up a wait (for the lag, for the drain) after this long.
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
    /// Compare counts and chunked checksums of every table; non-zero exit on a difference.
    Verify {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum CursorCommand {
    /// Print the stored cursor.
    Show {
        #[arg(long)]
        config: PathBuf,
    },
    /// Create the cursor store (the DynamoDB table); nothing to do for a file.
    Init {
        #[arg(long)]
        config: PathBuf,
    },
    /// Forget the stored position (the pipeline must be stopped): the next start
    /// takes a new snapshot. The way back after a lost slot or a purged binlog.
    Reset {
        #[arg(long)]
        config: PathBuf,
    },
}

fn parse_lsn_arg(text: &str) -> Result<u64, String> {
    parse_lsn(text).ok_or_else(|| format!("{text:?} is not an LSN like 0/16B3748"))
}

fn parse_binlog_arg(text: &str) -> Result<(String, u64), String> {
    let (file, pos) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not FILE:OFFSET"))?;
    let pos = pos
        .parse()
        .map_err(|_| format!("{pos:?} is not a binlog offset"))?;
    Ok((file.to_string(), pos))
}

/// Turns transparent huge pages off for this process. mimalloc asks for them on
/// its arenas; each first touch of one then clears 2 MB and counts 2 MB in the
/// RSS. The daemon's live data is a few batches, so 4 KB pages halve its RSS
/// and make page faults cheap (benches/mysql_binlog.sh: 51 MB → 25 MB).
fn disable_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integers only and changes nothing
    // but this process's huge-page policy.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "warning: cannot turn transparent huge pages off: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn main() -> std::process::ExitCode {
    disable_huge_pages();
    tidemark_connectors::postgres::tls::install_default_provider();
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::fatal(cli.log_format, &format!("cannot start the runtime: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line per problem; a cause chain is joined on one line.
            let text = format!("{e:#}");
            for line in text.lines() {
                logging::fatal(cli.log_format, line);
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            config,
            stop_at_lsn,
            stop_at_binlog,
        } => run(&config, stop_at_lsn, stop_at_binlog, Mode::Capture).await,
        Command::Apply { config, until_idle } => apply(&config, until_idle).await,
        Command::Migrate { command } => migrate(command).await,
        Command::Check { config } => check(&config).await,
        Command::Cursor {
            command: CursorCommand::Show { config },
        } => {
            let config = Config::load(&config)?;
            match cursor_store(&config).await?.describe().await? {
                Some(record) => println!("{}", serde_json::to_string_pretty(&record)?),
                None => println!("no cursor yet for pipeline {}", config.pipeline.name),
            }
            Ok(())
        }
        Command::Cursor {
            command: CursorCommand::Reset { config },
        } => {
            let config = Config::load(&config)?;
            if cursor_store(&config).await?.reset().await? {
                println!(
                    "cursor of pipeline {} reset: the next start takes a new snapshot",
                    config.pipeline.name
                );
            } else {
                println!("no cursor for pipeline {}", config.pipeline.name);
            }
            Ok(())
        }
        Command::Cursor {
            command: CursorCommand::Init { config },
        } => {
            let config = Config::load(&config)?;
            match cursor_store(&config).await? {
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
    }
}

/// The AWS settings of the standard chain, with a region set in the config
/// taking precedence; a missing region is an error naming the key.
async fn aws(region: &Option<String>, key: &str) -> anyhow::Result<aws_config::SdkConfig> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        bail!("{key}: no AWS region (set {key} or AWS_REGION)");
    }
    Ok(sdk)
}

/// A DynamoDB client (`cursor.region`, `cursor.endpoint`).
async fn dynamodb_client(
    region: &Option<String>,
    endpoint: &Option<String>,
) -> anyhow::Result<aws_sdk_dynamodb::Client> {
    let sdk = aws(region, "cursor.region").await?;
    // A hung call must not outlive a lease: each attempt is cut at 5 s, the
    // call (with the SDK's retries) at 15 s.
    let mut builder = aws_sdk_dynamodb::config::Builder::from(&sdk).timeout_config(
        aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(std::time::Duration::from_secs(5))
            .operation_timeout(std::time::Duration::from_secs(15))
            .build(),
    );
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(aws_sdk_dynamodb::Client::from_conf(builder.build()))
}

/// A Kinesis client (`sink.region`, `sink.endpoint`). Its users retry on their
/// own, with backoff and without a time limit, so SDK retries are off (they
/// would hide throttling from the log and metrics); a call that hangs is
/// given up after 30 s and retried like a 5xx.
async fn kinesis_client(
    region: &Option<String>,
    endpoint: &Option<String>,
) -> anyhow::Result<aws_sdk_kinesis::Client> {
    let sdk = aws(region, "sink.region").await?;
    let mut builder = aws_sdk_kinesis::config::Builder::from(&sdk)
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(std::time::Duration::from_secs(30))
                .build(),
        );
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(aws_sdk_kinesis::Client::from_conf(builder.build()))
}

/// What the retention watch looks at, for log-based sources.
fn retention_watch(config: &Config) -> Option<Watch> {
    let warn_before_purge = parse_duration(&config.retention.warn_before_purge).unwrap_or_default();
    match &config.source {
        SourceConfig::Postgres(pg) => Some(Watch::Postgres {
            url: pg.url.clone(),
            slot: pg.slot.clone(),
            max_retained_bytes: config.retention.max_retained_bytes,
        }),
        SourceConfig::Mysql(my) => Some(Watch::Mysql {
            url: my.url.clone(),
            warn_before_purge,
        }),
        SourceConfig::Poll(_) => None,
    }
}

async fn cursor_store(config: &Config) -> anyhow::Result<CursorStore> {
    Ok(match &config.cursor {
        CursorConfig::File { path } => {
            CursorStore::File(FileCursor::new(path, &config.pipeline.name))
        }
        CursorConfig::Dynamodb {
            table,
            lease_duration,
            region,
            endpoint,
        } => {
            let lease =
                parse_duration(lease_duration).context("cursor.lease_duration: not a duration")?;
            CursorStore::Dynamo(Box::new(DynamoCursor::new(
                dynamodb_client(region, endpoint).await?,
                table,
                &config.pipeline.name,
                lease,
            )))
        }
    })
}

/// Which source the config names (see `CursorStore::bind_source`).
async fn source_identity(
    config: &Config,
    stop_at_lsn: Option<u64>,
    stop_at_binlog: &Option<(String, u64)>,
) -> anyhow::Result<String> {
    Ok(
        match (
            config.postgres(stop_at_lsn),
            config.mysql(stop_at_binlog.clone()),
            config.poll(),
        ) {
            (Some(pg), _, _) => tidemark_connectors::postgres::source_identity(&pg).await?,
            (_, Some(my), _) => tidemark_connectors::mysql::source_identity(&my).await?,
            (_, _, Some(poll)) => tidemark_connectors::poll::source_identity(&poll),
            _ => bail!("source: no source configured"),
        },
    )
}

/// Opens the configured sink; `writer` names the source and cursor lineage
/// the file sink records beside its files.
async fn open_sink(config: &Config, writer: &str) -> anyhow::Result<AnySink> {
    Ok(match &config.sink {
        SinkConfig::File {
            path,
            max_file_bytes,
        } => AnySink::File(FileSink::open(path, *max_file_bytes, writer)?),
        SinkConfig::Stdout => AnySink::Stdout(StdoutSink::new()),
        SinkConfig::Kinesis {
            stream,
            region,
            endpoint,
            max_record_bytes,
            oversized,
            aggregate,
        } => {
            let sink = KinesisSink::new(
                kinesis_client(region, endpoint).await?,
                stream,
                *max_record_bytes,
                match oversized {
                    OversizedPolicy::Fail => Oversized::Fail,
                    OversizedPolicy::SkipAndCount => Oversized::SkipAndCount,
                },
                *aggregate,
            );
            sink.check().await?;
            AnySink::Kinesis(Box::new(sink))
        }
    })
}

async fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    // Links that cross the network without the server's identity checked.
    let mut urls: Vec<(&str, &str)> = Vec::new();
    if let Some(url) = config.source_url() {
        urls.push(("source.url", url));
    }
    if let Some(target) = &config.target {
        urls.push(("target.url", &target.url));
    }
    for (key, url) in urls {
        let warning = if url.starts_with("mysql://") {
            tidemark_connectors::mysql::tls::parse(url)
                .ok()
                .and_then(|u| u.identity_unchecked())
        } else {
            postgres::tls::parse(url)
                .ok()
                .and_then(|u| u.identity_unchecked())
        };
        if let Some(warning) = warning {
            tracing::warn!("{key}: {warning}");
        }
    }
    let problems = match (config.postgres(None), config.mysql(None), config.poll()) {
        (Some(pg), _, _) => postgres::check(&pg).await?,
        (_, Some(my), _) => mysql::check(&my).await?,
        // Opening a poll source checks every table and column without writing.
        (_, _, Some(poll)) => {
            let (_handle, control) = tidemark_connectors::control();
            PollSource::open(poll, None, None, control).await?;
            Vec::new()
        }
        _ => Vec::new(),
    };
    let mut problems = problems;
    // The sink and the cursor store must be usable (a Kinesis stream must
    // exist, a sink folder be writable), the cursor be of this source's kind,
    // and a [target] answer and let the user write.
    match &config.sink {
        SinkConfig::Kinesis { .. } => {
            open_sink(&config, "check").await?;
        }
        SinkConfig::File { path, .. } => {
            if let Err(problem) = tidemark::sinks::probe_folder(path) {
                problems.push(problem);
            }
        }
        _ => {}
    }
    if let Some(stored) = cursor_store(&config).await?.describe().await? {
        let kind = stored["position"]
            .as_object()
            .and_then(|p| p.keys().next().cloned());
        let expected = config.source_kind();
        if let Some(kind) = kind.filter(|k| k != expected) {
            problems.push(format!(
                "cursor: it holds a {kind} position, but the source is {expected}: point the config at the cursor's source, or start over with `tidemark cursor reset`"
            ));
        }
    }
    if let Some(target) = &config.target {
        problems.extend(tidemark::apply::check::problems(target).await?);
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    println!("ok: {} is ready for capture", config.pipeline.name);
    Ok(())
}

/// Where a pipeline writes: the configured sink and cursor store (`run`), or
/// the target database for both (`apply` with `input = "source"`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Capture,
    Apply,
}

/// The configured target, connected.
async fn connect_target(config: &Config) -> anyhow::Result<Target> {
    let Some(target) = &config.target else {
        bail!("target: the config has no [target] section");
    };
    Ok(Target::open(target).await?)
}

/// A watch that turns true on SIGTERM or SIGINT.
fn stop_on_signals() -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: finishing the current batch");
        stop_tx.send_replace(true);
    });
    Ok(stop)
}

async fn migrate(command: MigrateCommand) -> anyhow::Result<()> {
    match command {
        MigrateCommand::Run { config } => {
            let config = Config::load(&config)?;
            let stop = stop_on_signals()?;
            let name = config.pipeline.name.clone();
            // Both ends must answer once; after that a lost source or target
            // is reconnected, and the migration resumes from its recorded
            // stage, as a restart would.
            let plan = migrate::Plan::from_config(&config)?;
            migrate::db::Db::connect(&plan.source_url)
                .await
                .with_context(|| format!("migration {name}: source"))?;
            migrate::db::Db::connect(&plan.target_url)
                .await
                .with_context(|| format!("migration {name}: target"))?;
            keep_trying(&stop, |stop| {
                let (config, name) = (&config, &name);
                async move {
                    migrate::run(config, stop)
                        .await
                        .with_context(|| format!("migration {name}"))
                }
            })
            .await?;
            Ok(())
        }
        MigrateCommand::Status { config } => {
            let config = Config::load(&config)?;
            print!("{}", migrate::status(&config).await?);
            Ok(())
        }
        MigrateCommand::Cutover {
            config,
            max_lag,
            fence,
            postpone_flag,
            timeout,
        } => {
            let config = Config::load(&config)?;
            let options = migrate::cutover::Options {
                max_lag: parse_duration(&max_lag).context("--max-lag: not a duration like 5s")?,
                fence,
                postpone_flag,
                timeout: parse_duration(&timeout).context("--timeout: not a duration like 10m")?,
            };
            let (record, verified) = migrate::cutover::cutover(&config, &options).await?;
            println!("{}", serde_json::to_string_pretty(&record)?);
            if !verified {
                bail!("cut over at {}, but verification found differences (see the record above and `tidemark migrate verify`)", record["final_position"]);
            }
            Ok(())
        }
        MigrateCommand::Verify { config } => {
            let config = Config::load(&config)?;
            let plan = migrate::Plan::from_config(&config)?;
            let reports = migrate::verify::verify(&plan).await?;
            for report in &reports {
                println!("{}", report.line());
            }
            let bad: Vec<String> = reports
                .iter()
                .filter(|r| !r.equal())
                .map(|r| r.source.clone())
                .collect();
            if !bad.is_empty() {
                bail!("verify: {} differ: {}", bad.len(), bad.join(", "));
            }
            Ok(())
        }
    }
}

/// `tidemark apply`: from a capture in this process, or from what the sink holds.
async fn apply(path: &Path, until_idle: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    connect_target(&config).await?;
    if config.apply.input == ApplyInput::Source {
        return run(path, None, None, Mode::Apply).await;
    }
    let stop = stop_on_signals()?;
    // Health and metrics as for `run`: the input loops tick, Prometheus
    // shows the shards held and how far behind each is.
    ops::metrics::install();
    if let Some(address) = config.http.address()? {
        ops::http::serve(address).await?;
    }
    health().set_phase(Phase::Streaming);
    match &config.sink {
        // A lost target is reconnected (the target was reached above): the
        // files are read again from the position the target holds.
        SinkConfig::File { path: dir, .. } => {
            let config = &config;
            let attempt = |stop| async move {
                let target = connect_target(config).await?;
                let mut sink = TargetSink::open(target, &config.pipeline.name).await?;
                let lines = files::follow(
                    dir,
                    &mut sink,
                    stop,
                    until_idle,
                    config.pipeline.max_batch_events,
                )
                .await
                .with_context(|| format!("apply from {}", dir.display()))?;
                Ok::<_, anyhow::Error>((lines, sink))
            };
            if let Some((lines, sink)) = keep_trying(&stop, attempt).await? {
                tracing::info!(
                    "stopped: {lines} events read, {} applied ({} row writes), {} skipped as already applied; applied position {}",
                    sink.events,
                    sink.rows,
                    sink.skipped,
                    sink.applied().unwrap_or("(none)")
                );
            }
            Ok(())
        }
        SinkConfig::Kinesis {
            stream,
            region,
            endpoint,
            ..
        } => {
            if until_idle {
                bail!("--until-idle reads the file sink only: a Kinesis stream has no end (stop with SIGTERM)");
            }
            let CursorConfig::Dynamodb {
                table,
                lease_duration,
                region: dynamo_region,
                endpoint: dynamo_endpoint,
            } = &config.cursor
            else {
                bail!("apply from Kinesis keeps its shard leases in DynamoDB: set [cursor] type = \"dynamodb\"");
            };
            let Some(target) = config.target.clone() else {
                bail!("target: the config has no [target] section");
            };
            let kinesis = kinesis_client(region, endpoint).await?;
            let leases = LeaseTable {
                client: dynamodb_client(dynamo_region, dynamo_endpoint).await?,
                table: table.clone(),
            };
            let lease_duration =
                parse_duration(lease_duration).context("cursor.lease_duration: not a duration")?;
            // The lease table must answer once (the target did above).
            leases
                .get(&config.pipeline.name)
                .await
                .map_err(|e| anyhow::anyhow!("cursor: {e}"))?;
            // A lost target or lease table is reconnected: the shards are
            // taken again and read from their checkpoints (the target drops
            // what it applied already).
            let attempt = |stop| {
                let input = kinesis::Input {
                    kinesis: kinesis.clone(),
                    stream: stream.clone(),
                    leases: leases.clone(),
                    pipeline: config.pipeline.name.clone(),
                    lease_duration,
                    batch_events: config.pipeline.max_batch_events,
                    target: target.clone(),
                };
                async move {
                    kinesis::follow(input, stop)
                        .await
                        .with_context(|| format!("apply from kinesis stream {stream}"))
                }
            };
            let Some(totals) = keep_trying(&stop, attempt).await? else {
                return Ok(());
            };
            tracing::info!(
                "stopped: {} events read, {} applied ({} row writes), {} skipped as already applied, {} shards finished",
                totals.events,
                totals.applied,
                totals.rows,
                totals.skipped,
                totals.shards_finished
            );
            Ok(())
        }
        SinkConfig::Stdout => {
            bail!("apply.input = \"sink\" reads a file or kinesis [sink], not stdout")
        }
    }
}

/// Runs the pipeline; an error names the pipeline and its cursor position.
async fn run(
    path: &Path,
    stop_at_lsn: Option<u64>,
    stop_at_binlog: Option<(String, u64)>,
    mode: Mode,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let name = config.pipeline.name.clone();
    run_pipeline(path, config, stop_at_lsn, stop_at_binlog, mode)
        .await
        .map_err(|e| {
            let position = health().position();
            let at = if position.is_empty() {
                "no cursor yet".to_string()
            } else {
                format!("cursor at {position}")
            };
            e.context(format!("pipeline {name} ({at})"))
        })
}

async fn run_pipeline(
    path: &Path,
    config: Config,
    stop_at_lsn: Option<u64>,
    stop_at_binlog: Option<(String, u64)>,
    mode: Mode,
) -> anyhow::Result<()> {
    if let Err(e) = logging::set_level(&config.log.level) {
        bail!("{e}");
    }
    ops::metrics::install();
    if let Some(address) = config.http.address()? {
        ops::http::serve(address).await?;
    }
    tick_while_starting();
    let (handle, control) = tidemark_connectors::control();
    // Signals first: a standby may wait for its lease for a long time.
    let stop = handle.stop.clone();
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: finishing the current batch");
        ops::health::notify_stopping();
        stop.send_replace(true);
    });
    let config_path = path.to_path_buf();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // Only the log level is re-read; the pipeline keeps running as it is.
            match Config::load(&config_path)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    logging::set_level(&c.log.level)?;
                    Ok(c.log.level)
                }) {
                Ok(level) => tracing::info!("SIGHUP: log level is now {level}"),
                Err(e) => tracing::warn!("SIGHUP: kept the log level: {e}"),
            }
        }
    });
    // A lost source, target or cursor store is reconnected in process: the
    // session (cursor, sink, source, stream) starts over from the committed
    // position, after a wait that grows to 30 s; only what a new session
    // cannot cure ends the process. Before the first session streams, any
    // failure ends it at once: a wrong host reads like a server that is
    // down, and a start is retried by the service manager (the unit's
    // Restart=), not by a loop a person at a terminal has to interrupt.
    let mut retry = ops::reconnect::Retry::default();
    let mut session = Session {
        path,
        config: &config,
        stop_at_lsn,
        stop_at_binlog,
        mode,
        handle: &handle,
        control,
        held: None,
        streamed: false,
        retention_started: false,
    };
    loop {
        let error = match session.run(&mut retry).await {
            Ok(()) => {
                session.release().await;
                return Ok(());
            }
            Err(error) => error,
        };
        let stopping = *handle.stop.borrow();
        if stopping || !session.streamed || !ops::reconnect::transient(error.chain()) {
            session.release().await;
            return Err(error);
        }
        if !wait_to_reconnect(&mut retry, &error, handle.stop.subscribe()).await {
            session.release().await;
            return Ok(());
        }
    }
}

/// Until the pipeline loop runs, keeps health and the watchdog alive: a
/// standby may wait for its lease for a long time, and a reconnect for as
/// long as an outage lasts (the process is not stuck; `/readyz` says what
/// it waits for). One ticker at a time.
fn tick_while_starting() {
    static TICKING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TICKING.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let starting = || matches!(health().phase(), Phase::Starting | Phase::Standby);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(ops::health::tick_every());
        loop {
            while starting() {
                health().tick();
                ticker.tick().await;
            }
            TICKING.store(false, std::sync::atomic::Ordering::SeqCst);
            // A reconnect may have begun between the check and the store.
            if !starting() || TICKING.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return;
            }
        }
    });
}

/// How long an attempt runs before it counts as connected (the backoff
/// starts over, `/readyz` forgets the reconnect).
const CONNECTED_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `attempt` (given the stop signal) again after each failure a new
/// attempt may cure, waiting as [`wait_to_reconnect`] says, until it
/// succeeds, fails for good, or the process is told to stop (`None`).
/// Callers reach every server once before, so that a wrong host or a server
/// that is down at start ends the process at once, as `run` does.
async fn keep_trying<T, F, Fut>(
    stop: &tokio::sync::watch::Receiver<bool>,
    mut attempt: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut retry = ops::reconnect::Retry::default();
    loop {
        let running = attempt(stop.clone());
        tokio::pin!(running);
        let result = tokio::select! {
            result = &mut running => result,
            _ = tokio::time::sleep(CONNECTED_AFTER) => {
                if retry.attempts > 0 {
                    health().set_phase(Phase::Streaming);
                    health().set_problem("source", None);
                    tracing::info!("reconnected after {} attempts", retry.attempts);
                }
                retry.succeeded();
                running.await
            }
        };
        let error = match result {
            Ok(value) => return Ok(Some(value)),
            Err(error) => error,
        };
        if *stop.borrow() || !ops::reconnect::transient(error.chain()) {
            return Err(error);
        }
        if !wait_to_reconnect(&mut retry, &error, stop.clone()).await {
            return Ok(None);
        }
    }
}

/// Between two sessions: counts the reconnect, says what failed and for how
/// long (log, `/readyz`), and waits; false when the daemon is told to stop
/// meanwhile.
async fn wait_to_reconnect(
    retry: &mut ops::reconnect::Retry,
    error: &anyhow::Error,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let (wait, failing) = retry.failed();
    ::metrics::counter!("tidemark_reconnects_total").increment(1);
    health().set_phase(Phase::Starting);
    tick_while_starting();
    health().set_problem(
        "source",
        Some(format!(
            "reconnecting (attempt {}, failing for {:.0?}): {error:#}",
            retry.attempts, failing
        )),
    );
    tracing::warn!(
        "{error:#}; reconnecting in {wait:.1?} (attempt {}, failing for {failing:.0?})",
        retry.attempts
    );
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stopped.wait_for(|stop| *stop) => {
            tracing::info!("stopped while reconnecting");
            false
        }
    }
}

/// One session of `run` (or `apply` with `input = "source"`): what a process
/// start does, from holding the cursor to the end of the stream. A capture
/// session keeps the cursor store it held across reconnects (its lease, its
/// lock), and resumes from what it committed.
struct Session<'a> {
    path: &'a Path,
    config: &'a Config,
    stop_at_lsn: Option<u64>,
    stop_at_binlog: Option<(String, u64)>,
    mode: Mode,
    handle: &'a tidemark_connectors::SourceHandle,
    control: tidemark_connectors::SourceControl,
    /// Capture: the cursor store, once held, and the position it was loaded at.
    held: Option<(CursorStore, Option<tidemark_connectors::Position>)>,
    /// A session got as far as streaming (later failures are reconnected).
    streamed: bool,
    retention_started: bool,
}

impl Session<'_> {
    /// On the way out: lets a standby take over at once.
    async fn release(&mut self) {
        if let Some((cursor, _)) = self.held.as_mut() {
            cursor.release().await;
        }
    }

    async fn run(&mut self, retry: &mut ops::reconnect::Retry) -> anyhow::Result<()> {
        let config = self.config;
        let handle = self.handle;
        let mut stopped = self.control.stop.clone();
        // The capture sink opens once the cursor is held: it needs to know whose
        // lines it may take as already written (`CursorStore::bind_source`).
        let (target_sink, mut target_cursor) = match self.mode {
            Mode::Capture => {
                if self.held.is_none() {
                    let mut cursor = cursor_store(config).await?;
                    cursor.stop_on_lease_loss(handle.stop.clone());
                    let loaded = tokio::select! {
                        loaded = cursor.load() => loaded?,
                        _ = stopped.wait_for(|stop| *stop) => {
                            tracing::info!("stopped before holding the cursor");
                            return Ok(());
                        }
                    };
                    self.held = Some((cursor, loaded));
                }
                (None, None)
            }
            Mode::Apply => {
                let scope = config.pipeline.name.clone();
                let sink = TargetSink::open(connect_target(config).await?, &scope).await?;
                let target = connect_target(config).await?;
                (
                    Some(AnySink::Target(Box::new(sink))),
                    Some(CursorStore::Target(Box::new(TargetCursor {
                        target,
                        scope,
                    }))),
                )
            }
        };
        let (cursor, loaded) = match (&mut target_cursor, &mut self.held) {
            (Some(cursor), _) => {
                let loaded = tokio::select! {
                    loaded = cursor.load() => loaded?,
                    _ = stopped.wait_for(|stop| *stop) => return Ok(()),
                };
                (cursor, loaded)
            }
            (None, Some((cursor, loaded))) => (cursor, loaded.clone()),
            (None, None) => bail!("cursor: no cursor store"),
        };
        // After a reconnect: from what this process committed since.
        let resume = handle.durable.borrow().clone().or(loaded);
        if let Some(position) = &resume {
            health().resumed_at(position.to_string());
        }
        let resume_at = resume.clone();
        let source_id = source_identity(config, self.stop_at_lsn, &self.stop_at_binlog).await?;
        let lineage = cursor.bind_source(&source_id, resume.is_some())?;
        let mut sink = match target_sink {
            Some(sink) => sink,
            None => open_sink(config, &format!("{source_id}, cursor lineage {lineage}")).await?,
        };
        let control = self.control.clone();
        let source = match (
            config.postgres(self.stop_at_lsn),
            config.mysql(self.stop_at_binlog.clone()),
            config.poll(),
        ) {
            (Some(pg), _, _) => {
                AnySource::Postgres(Box::new(PostgresSource::open(pg, resume, control).await?))
            }
            (_, Some(my), _) => {
                AnySource::Mysql(Box::new(MysqlSource::open(my, resume, control).await?))
            }
            (_, _, Some(poll)) => AnySource::Poll(Box::new(
                PollSource::open(
                    poll,
                    resume,
                    sink.last_position().filter(|_| resume_at.is_some()),
                    control,
                )
                .await?,
            )),
            _ => bail!("source: no source configured"),
        };
        if let Some(start) =
            pipeline::commit_fresh_start(&source, &mut sink, cursor, &handle.durable).await?
        {
            tracing::info!("no cursor: the start {start} is the cursor now");
        }
        health().set_phase(Phase::Streaming);
        health().set_problem("source", None);
        self.streamed = true;
        ops::health::notify_ready();
        if retry.attempts > 0 {
            tracing::info!("reconnected after {} attempts", retry.attempts);
        }
        retry.succeeded();
        tracing::info!("pipeline {} running", config.pipeline.name);
        if let (Some(watch), false) = (retention_watch(config), self.retention_started) {
            self.retention_started = true;
            let every = parse_duration(&config.retention.check_interval).unwrap_or_default();
            let recovery = format!("tidemark cursor reset --config {}", self.path.display());
            tokio::spawn(ops::retention::run(
                watch,
                every,
                handle.durable.subscribe(),
                handle.stop.clone(),
                recovery,
            ));
        }

        let summary = pipeline::run(
            source,
            &handle.durable,
            &mut sink,
            cursor,
            resume_at.as_ref(),
            config.pipeline.commit_every(),
        )
        .await;
        if let Some(fatal) = health().take_fatal() {
            bail!("{fatal}");
        }
        if let Some(report) = sink.report() {
            tracing::info!("{report}");
        }
        let summary = summary?;
        tracing::info!(
            "stopped: {} events in {} batches; cursor at {}{}",
            summary.events,
            summary.batches,
            summary
                .cursor
                .as_ref()
                .map_or("(unchanged)".into(), |p| p.to_string()),
            match &summary.cursor {
                Some(tidemark_connectors::Position::Postgres { lsn, .. }) =>
                    format!(" (LSN {})", lsn_text(*lsn)),
                _ => String::new(),
            }
        );
        Ok(())
    }
}
