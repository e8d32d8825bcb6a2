//! The `tidemark` command: the command line, and each subcommand handed to
//! its module under `commands/`. Errors are reported as one line each, with a
//! non-zero exit code.

mod commands;

use clap::{Parser, Subcommand};
use commands::assemble::Mode;
use std::path::PathBuf;
use tidemark::ops::logging::{self, LogFormat};
use tidemark_connectors::event::parse_lsn;

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
    /// Print the plaintext of `encrypt`-masked values (tmenc:v1:...), with
    /// the config's [keys] (taken from the environment through ${VAR}).
    Decrypt {
        #[arg(long)]
        config: PathBuf,
        /// The masked values; one plaintext per line, in order.
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// Print the original of `tokenize`-masked values, with the named key.
    Detokenize {
        #[arg(long)]
        config: PathBuf,
        /// The [keys] id the tokens were made with.
        #[arg(long)]
        key: String,
        #[arg(required = true)]
        values: Vec<String>,
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
        } => commands::run::run(&config, stop_at_lsn, stop_at_binlog, Mode::Capture).await,
        Command::Apply { config, until_idle } => commands::apply::apply(&config, until_idle).await,
        Command::Migrate { command } => match command {
            MigrateCommand::Run { config } => commands::migrate::run(&config).await,
            MigrateCommand::Status { config } => commands::migrate::status(&config).await,
            MigrateCommand::Cutover {
                config,
                max_lag,
                fence,
                postpone_flag,
                timeout,
            } => {
                commands::migrate::cutover(&config, &max_lag, fence, postpone_flag, &timeout).await
            }
            MigrateCommand::Verify { config } => commands::migrate::verify(&config).await,
        },
        Command::Check { config } => commands::check::check(&config).await,
        Command::Cursor { command } => match command {
            CursorCommand::Show { config } => commands::cursor::show(&config).await,
            CursorCommand::Reset { config } => commands::cursor::reset(&config).await,
            CursorCommand::Init { config } => commands::cursor::init(&config).await,
        },
        Command::Decrypt { config, values } => commands::unmask::decrypt(&config, &values),
        Command::Detokenize {
            config,
            key,
            values,
        } => commands::unmask::detokenize(&config, &key, &values),
    }
}
