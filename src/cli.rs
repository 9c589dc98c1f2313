//! The command line.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::config::Config;
use crate::queue::{Selection, Store, now_ms, record};

#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about = "Self-hosted event-source router and integration gateway")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text", env = "SWITCHYARD_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the mappings and functions of a config file.
    Run(ConfigArg),
    /// Check a config file and exit: 0 when valid, 1 with the error otherwise.
    Validate(ConfigArg),
    /// Invoke a function through a running Switchyard's Invoke API.
    Invoke(InvokeArgs),
    /// Inspect and replay the dead-letter store.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Work with event patterns (the language of `filters`).
    #[command(subcommand)]
    Pattern(PatternCommand),
}

#[derive(Debug, Subcommand)]
pub enum PatternCommand {
    /// Does the event match the pattern? Prints true (exit 0) or false
    /// (exit 1); a bad pattern or event exits 2 with the reason.
    Test {
        /// The pattern: JSON text, or @FILE.
        #[arg(long)]
        pattern: String,
        /// The event: JSON text, or @FILE, or - for standard input.
        #[arg(long)]
        event: String,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The YAML config file.
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function's name.
    pub function: String,
    /// The event: JSON text, or @FILE, or - for standard input.
    #[arg(long, short, default_value = "{}")]
    pub payload: String,
    /// Queue the event (an `Event` invocation) instead of waiting for the result.
    #[arg(long = "async")]
    pub async_: bool,
    /// Where Switchyard listens.
    #[arg(long, default_value = "http://127.0.0.1:9000", env = "SWITCHYARD_URL")]
    pub url: String,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        function: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only entries with an id above this one (the next page after it).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Show one dead letter with its event and destination record.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        id: i64,
    },
    /// Queue dead letters for a new attempt; each leaves the store once its new
    /// attempt is durably queued.
    Replay(DlqSelection),
    /// Delete dead letters.
    Purge(DlqSelection),
}

#[derive(Debug, Args)]
pub struct DlqSelection {
    #[command(flatten)]
    config: ConfigArg,
    /// Entry ids.
    ids: Vec<i64>,
    /// Every entry (of --function, when given).
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    #[arg(long, requires = "all")]
    function: Option<String>,
}

impl DlqSelection {
    fn selection(&self) -> anyhow::Result<Selection> {
        if self.all {
            Ok(Selection::All { function: self.function.clone() })
        } else if self.ids.is_empty() {
            anyhow::bail!("name the entries to take (IDS...) or pass --all")
        } else {
            Ok(Selection::Ids(self.ids.clone()))
        }
    }
}

/// Runs a subcommand other than `run` and `validate`.
pub async fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    let open = |c: &ConfigArg| -> anyhow::Result<Store> {
        let config = Config::load(&c.config)?;
        Ok(Store::open(&config.state.dir)?)
    };
    match command {
        DlqCommand::List { config, function, json, limit, after } => {
            let entries = open(&config)?.dlq_list(function, after, limit).await?;
            if json {
                let list: Vec<Value> = entries.iter().map(crate::server::dead_letter_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<6} {:<16} {:<18} {:<8} {:<24} ERROR",
                    "ID", "FUNCTION", "CONDITION", "ATTEMPTS", "FAILED AT"
                );
                for d in &entries {
                    println!(
                        "{:<6} {:<16} {:<18} {:<8} {:<24} {}: {}",
                        d.id,
                        d.function,
                        d.condition,
                        d.attempts,
                        record::rfc3339_ms(d.failed_at),
                        d.error_type.as_deref().unwrap_or("-"),
                        d.error_message.as_deref().unwrap_or("-"),
                    );
                }
            }
        }
        DlqCommand::Show { config, id } => {
            let d = open(&config)?.dlq_get(id).await?.with_context(|| format!("no dead letter with id {id}"))?;
            let mut v = crate::server::dead_letter_json(&d);
            v["record"] = d.record.as_deref().map(record::payload_value).unwrap_or(Value::Null);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DlqCommand::Replay(sel) => {
            let config = Config::load(&sel.config.config)?;
            let functions = config.functions.keys().cloned().collect();
            let replayed = Store::open(&config.state.dir)?.dlq_replay(sel.selection()?, functions, now_ms()).await?;
            let ids = &replayed.ids;
            println!("replayed {} dead letter(s): {ids:?}", ids.len());
            for (id, function) in &replayed.unknown {
                eprintln!(
                    "dead letter {id} not replayed: its function `{function}` is not in {}; it stays in the dead-letter store",
                    sel.config.config.display()
                );
            }
            if !replayed.unknown.is_empty() {
                anyhow::bail!("{} dead letter(s) were not replayed", replayed.unknown.len());
            }
            if !sel.all && ids.len() < sel.ids.len() {
                anyhow::bail!("some ids were not found in the dead-letter store");
            }
        }
        DlqCommand::Purge(sel) => {
            let ids = open(&sel.config)?.dlq_purge(sel.selection()?).await?;
            println!("purged {} dead letter(s): {ids:?}", ids.len());
            if !sel.all && ids.len() < sel.ids.len() {
                anyhow::bail!("some ids were not found in the dead-letter store");
            }
        }
    }
    Ok(())
}

/// Text given on the command line, or `@FILE`, or `-` for standard input.
fn text_argument(arg: &str) -> anyhow::Result<String> {
    Ok(match arg {
        "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
        p if p.starts_with('@') => {
            std::fs::read_to_string(&p[1..]).with_context(|| format!("cannot read {}", &p[1..]))?
        }
        p => p.to_string(),
    })
}

/// `switchyard pattern test`, like EventBridge's TestEventPattern: `Ok(true)`
/// when the event matches; an error when the pattern or event is not valid.
pub fn pattern_test(pattern: &str, event: &str) -> anyhow::Result<bool> {
    let pattern = switchyard_pattern::Pattern::parse(&text_argument(pattern)?)
        .map_err(|e| anyhow::anyhow!("invalid pattern: {e}"))?;
    let event: Value = serde_json::from_str(&text_argument(event)?)
        .map_err(|e| anyhow::anyhow!("invalid event: expected JSON: {e}"))?;
    Ok(pattern.matches(&event))
}

/// `switchyard invoke`: prints the result; fails when the function failed.
pub async fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    let payload = text_argument(&args.payload)?;
    let url = format!("{}/2015-03-31/functions/{}/invocations", args.url.trim_end_matches('/'), args.function);
    let response = reqwest::Client::new()
        .post(&url)
        .header("x-amz-invocation-type", if args.async_ { "Event" } else { "RequestResponse" })
        .body(payload)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let function_error = response.headers().get("x-amz-function-error").is_some();
    let error_type = response.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).map(str::to_string);
    let request_id = response.headers().get("x-amzn-requestid").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = response.text().await?;
    if let Some(error_type) = error_type {
        anyhow::bail!("{status} {error_type}: {body}");
    }
    // Not Switchyard's Invoke API (a wrong --url, a proxy in the way): its
    // error carries no error type, and is an error all the same.
    if !status.is_success() {
        anyhow::bail!("{status} from {url}: {body}");
    }
    if args.async_ {
        println!("queued, request id {request_id}");
        return Ok(());
    }
    println!("{body}");
    if function_error {
        anyhow::bail!("the function failed (request id {request_id})");
    }
    Ok(())
}
