use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{Cli, Command, LogFormat, PatternCommand};
use switchyard::config::Config;

// Many small allocations per event (HTTP, JSON) across worker threads: mimalloc
// keeps them cheap and returns memory to the OS promptly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` (the same position in the option enums of
/// mimalloc 2 and 3).
#[cfg(target_os = "linux")]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// By default mimalloc commits its arenas up front on systems that
/// overcommit memory, Linux's default. Committing pages as they are used
/// halved the peak RSS of the RabbitMQ benchmark (61-65 MB to 31 MB) at the
/// same throughput. The option is read when the first arena is made, at the
/// first allocation, which comes before `main`; so it is set from the
/// executable's initializers, which run before anything allocates.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ON_DEMAND: extern "C" fn() = commit_on_demand;

#[cfg(target_os = "linux")]
extern "C" fn commit_on_demand() {
    // An explicit MIMALLOC_ARENA_EAGER_COMMIT in the environment still wins.
    // SAFETY: getenv reads the environment, which nothing changes this early
    // (and it allocates nothing); mi_option_set stores one value in
    // mimalloc's option table.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => {
                let config = Config::load(&args.config)?;
                switchyard::engine::run(config).await?;
            }
            Command::Validate(args) => {
                Config::load(&args.config)?;
                println!("{}: valid", args.config.display());
            }
            Command::Invoke(args) => switchyard::cli::invoke(args).await?,
            Command::Dlq(command) => switchyard::cli::dlq(command).await?,
            // Answers with its exit code, as EventBridge's TestEventPattern
            // answers true or false.
            Command::Pattern(PatternCommand::Test { pattern, event }) => {
                return match switchyard::cli::pattern_test(&pattern, &event) {
                    Ok(matched) => {
                        println!("{matched}");
                        Ok(ExitCode::from(if matched { 0 } else { 1 }))
                    }
                    Err(error) => {
                        eprintln!("error: {error:#}");
                        Ok(ExitCode::from(2))
                    }
                };
            }
        }
        anyhow::Ok(ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
