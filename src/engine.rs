//! Builds everything a config describes, runs it, and shuts it down in order:
//! stop intake, finish in-flight work, then stop the function processes.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use switchyard_sdk::SourceState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, SourceConfig};
use crate::function::{Function, process};
use crate::pipeline;
use crate::queue::{AsyncQueue, Store};
use crate::server::{self, AppState, MappingInfo, WebhookRoute};
use crate::shape::Shaper;

/// How long start-up waits for supervised function processes to listen
/// (the first start may include building the function).
const FUNCTION_START_LIMIT: Duration = Duration::from_secs(180);
const METRICS_REFRESH: Duration = Duration::from_secs(2);

pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    ];
    // A sync of the accept log takes tens of microseconds on a fast disk.
    let sync_buckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
    let group_buckets = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), &buckets)?
        .set_buckets_for_metric(Matcher::Full("switchyard_accept_log_sync_seconds".into()), &sync_buckets)?
        .set_buckets_for_metric(Matcher::Full("switchyard_accept_log_group_events".into()), &group_buckets)?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// Only one Switchyard may own a state directory: two writers would each
/// believe they own the queue.
fn lock_state_dir(dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create state.dir {}", dir.display()))?;
    let path = dir.join("switchyard.lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!(
            "state.dir {}: another switchyard process is using it (lock {} is held)",
            dir.display(),
            path.display()
        );
    }
    Ok(file)
}

/// A mapping's source waiting to be started once the functions are up.
struct PendingSource {
    mapping: String,
    source: Box<dyn switchyard_sdk::Source>,
    function: Arc<Function>,
    state: watch::Sender<SourceState>,
    delivery: Delivery,
}

/// How a source's records reach the function.
enum Delivery {
    /// Into the function's durable async queue (schedules).
    Async(Arc<Shaper>),
    /// In batches, synchronously, with retries and `on_failure` (brokers).
    Polled(pipeline::Settings, Option<crate::destination::Target>, bool),
}

/// What the mappings of a config turn into.
struct Mappings {
    webhooks: HashMap<String, WebhookRoute>,
    info: Vec<MappingInfo>,
    sources: Vec<PendingSource>,
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let _lock = lock_state_dir(&config.state.dir)?;
    let metrics = install_metrics()?;
    let store = Store::open(&config.state.dir)?;
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;

    let mut functions = HashMap::new();
    for (name, fc) in &config.functions {
        functions.insert(name.clone(), Arc::new(Function::new(name, fc, client.clone())?));
    }
    let function_list: Vec<Arc<Function>> = functions.values().cloned().collect();
    let checkpoints = store.clone();
    let queue = Arc::new(
        AsyncQueue::new(store, &config.state.dir, config.state.max_queued_events.get(), &function_list).await?,
    );

    // Supervised function processes live until everything else has stopped.
    let processes_stop = CancellationToken::new();
    let processes = TaskTracker::new();
    let supervised = start_processes(&config, &functions, &processes, &processes_stop);
    let mappings = build_mappings(&config, &functions, &client, &checkpoints)?;
    let mapping_count = mappings.info.len();

    let app = Arc::new(AppState::new(
        functions.clone(),
        mappings.webhooks,
        queue.clone(),
        mappings.info,
        metrics,
        config.server.read_timeout,
    ));
    let server_stop = CancellationToken::new();
    let server = serve(&config, app.clone(), server_stop.clone()).await?;

    let signals = shutdown_signal();
    tokio::pin!(signals);
    // Sources start once supervised functions listen, so a first tick does
    // not race the function's start.
    let interrupted = tokio::select! {
        _ = wait_for_functions(&supervised, &processes_stop) => false,
        _ = &mut signals => true,
    };

    let sources_stop = CancellationToken::new();
    let sources = TaskTracker::new();
    let async_stop = CancellationToken::new();
    let workers = TaskTracker::new();
    if !interrupted {
        queue.start(&functions, &client, async_stop.clone(), &workers)?;
        for p in mappings.sources {
            match p.delivery {
                Delivery::Async(shaper) => crate::sources::spawn_async_mapping(
                    &p.mapping,
                    p.source,
                    crate::sources::AsyncTarget { function: p.function, shaper, queue: queue.clone() },
                    p.state,
                    sources_stop.child_token(),
                    &sources,
                ),
                Delivery::Polled(settings, on_failure, broker_dead_letters) => pipeline::spawn(
                    settings,
                    p.source,
                    p.function,
                    pipeline::failure_route(on_failure, queue.clone(), broker_dead_letters),
                    p.state,
                    sources_stop.child_token(),
                    &sources,
                ),
            }
        }
        workers.spawn(refresh_metrics(queue.clone(), function_list, app.metrics.clone(), async_stop.clone()));
        app.ready.store(true, Ordering::Release);
        tracing::info!(
            functions = functions.len(),
            mappings = mapping_count,
            startup_ms = started.elapsed().as_millis() as u64,
            "switchyard is ready"
        );
        signals.await;
    }

    // Shutdown, in order: readiness fails first (for drain_delay everything
    // is still served, so a load balancer can stop sending), then within the
    // grace period: stop intake, let in-flight work finish, stop the server,
    // then the function processes.
    app.ready.store(false, Ordering::Release);
    if !config.server.drain_delay.is_zero() {
        tracing::info!(delay = ?config.server.drain_delay, "shutting down: not ready; still serving for the drain delay");
        tokio::time::sleep(config.server.drain_delay).await;
    }
    let deadline = tokio::time::Instant::now() + config.server.shutdown_grace;
    tracing::info!(grace = ?config.server.shutdown_grace, "shutting down: intake stopped");
    app.draining.store(true, Ordering::Release);
    sources_stop.cancel();
    // The async dispatchers take no new event from here on (what is queued
    // stays queued for the next start); their invocations in flight finish.
    async_stop.cancel();
    sources.close();
    let _ = tokio::time::timeout_at(deadline, sources.wait()).await;
    while app.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workers.close();
    if tokio::time::timeout_at(deadline, workers.wait()).await.is_err() {
        tracing::warn!("grace period over with async invocations in flight; they stay queued and run at next start");
    }
    if app.in_flight() > 0 {
        tracing::warn!(in_flight = app.in_flight(), "grace period over with requests in flight");
    }
    server_stop.cancel();
    let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), server).await;
    processes_stop.cancel();
    processes.close();
    processes.wait().await;
    for function in functions.values() {
        function.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts the processes behind functions with `http.command`; returns those functions.
fn start_processes(
    config: &Config,
    functions: &HashMap<String, Arc<Function>>,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> Vec<Arc<Function>> {
    let mut supervised = Vec::new();
    for (name, fc) in &config.functions {
        if let Some(http) = &fc.http
            && let Some(command) = &http.command
        {
            let spec = process::ProcessSpec {
                function: name.clone(),
                command: command.clone(),
                env: http.env.clone(),
                dir: http.dir.clone(),
            };
            tracker.spawn(process::supervise(spec, stop.child_token()));
            supervised.push(functions[name].clone());
        }
    }
    supervised
}

async fn wait_for_functions(supervised: &[Arc<Function>], stop: &CancellationToken) {
    for f in supervised {
        if let Some(endpoint) = f.endpoint() {
            if process::wait_listening(endpoint, FUNCTION_START_LIMIT, stop).await {
                tracing::info!(function = %f.name, %endpoint, "function is listening");
            } else {
                tracing::warn!(function = %f.name, %endpoint, "function is not listening yet; starting anyway");
            }
        }
    }
}

#[cfg_attr(
    not(any(feature = "kafka", feature = "rabbitmq", feature = "sqs", feature = "kinesis", feature = "mqtt")),
    allow(unused_variables)
)]
fn build_mappings(
    config: &Config,
    functions: &HashMap<String, Arc<Function>>,
    client: &reqwest::Client,
    store: &Store,
) -> anyhow::Result<Mappings> {
    let mut out = Mappings { webhooks: HashMap::new(), info: Vec::new(), sources: Vec::new() };
    for mapping in &config.mappings {
        let function = functions[&mapping.function].clone();
        let shaper = Arc::new(
            Shaper::new(mapping)
                .map_err(|(key, message)| anyhow::anyhow!("mapping {}: {key}: {message}", mapping.name))?,
        );
        let (state, state_rx) = watch::channel(SourceState::Starting);
        // A broker or schedule source, with how its records reach the function;
        // a webhook has no task of its own: it lives in the server.
        let (kind, detail, task): (_, _, Option<(Box<dyn switchyard_sdk::Source>, Delivery)>) = match &mapping.source {
            SourceConfig::Webhook(hook) => {
                state.send_replace(SourceState::Running);
                out.webhooks.insert(
                    hook.path.clone(),
                    WebhookRoute::new(
                        &mapping.name,
                        function.clone(),
                        hook.mode,
                        hook.methods.as_ref().map(|m| m.iter().map(|s| s.to_ascii_uppercase()).collect()),
                        shaper.clone(),
                    ),
                );
                ("webhook", json!({ "path": hook.path, "mode": format!("{:?}", hook.mode).to_lowercase() }), None)
            }
            #[cfg(feature = "schedule")]
            SourceConfig::Schedule(schedule) => {
                let source = switchyard_schedule::ScheduleSource::new(&mapping.name, schedule)
                    .with_context(|| format!("mapping {}", mapping.name))?;
                let detail = json!({ "expression": schedule.expression, "timezone": schedule.timezone });
                (
                    "schedule",
                    detail,
                    Some((Box::new(source) as Box<dyn switchyard_sdk::Source>, Delivery::Async(shaper))),
                )
            }
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(kafka) => {
                let source =
                    switchyard_kafka::KafkaSource::new(kafka).with_context(|| format!("mapping {}", mapping.name))?;
                let detail = json!({ "brokers": kafka.brokers, "topics": kafka.topics, "group_id": kafka.group_id });
                (
                    "kafka",
                    detail,
                    Some((Box::new(source) as Box<dyn switchyard_sdk::Source>, polled(mapping, client, shaper)?)),
                )
            }
            #[cfg(feature = "sqs")]
            SourceConfig::Sqs(sqs) => {
                let batch = mapping.batch().size.get();
                // Room for a full batch while the previous one is in flight.
                let in_flight = (batch * 2).max(usize::from(sqs.max_concurrency) * 20);
                let source = switchyard_sqs::SqsSource::new(sqs)
                    .with_context(|| format!("mapping {}", mapping.name))?
                    .with_max_in_flight(in_flight);
                let detail = json!({ "queue_url": sqs.queue_url, "max_concurrency": sqs.max_concurrency });
                (
                    "sqs",
                    detail,
                    Some((Box::new(source) as Box<dyn switchyard_sdk::Source>, polled(mapping, client, shaper)?)),
                )
            }
            #[cfg(feature = "kinesis")]
            SourceConfig::Kinesis(kinesis) => {
                // Shard checkpoints live in the embedded state, with the async queue.
                let checkpoints = Arc::new(crate::queue::checkpoints::StoredCheckpoints::new(store.clone()));
                // Per shard: the batches `parallelization` keeps in flight and
                // the next one, so memory follows the config, not the backlog.
                let in_flight = (mapping.batch().size.get() * (mapping.parallelization.get() + 1)).max(100);
                let source = switchyard_kinesis::KinesisSource::new(kinesis, checkpoints)
                    .with_context(|| format!("mapping {}", mapping.name))?
                    .with_max_in_flight(in_flight);
                use switchyard_kinesis::StartingPosition;
                let starting_position = match kinesis.starting_position {
                    StartingPosition::TrimHorizon => "trim_horizon".to_string(),
                    StartingPosition::Latest => "latest".to_string(),
                    StartingPosition::AtTimestamp(at) => at.to_rfc3339(),
                };
                let detail = json!({ "stream": source.stream_name(), "starting_position": starting_position });
                (
                    "kinesis",
                    detail,
                    Some((Box::new(source) as Box<dyn switchyard_sdk::Source>, polled(mapping, client, shaper)?)),
                )
            }
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(mqtt) => {
                let batch = mapping.batch().size.get();
                // A batch of one is the payload itself, as AWS IoT rules deliver it.
                let source = switchyard_mqtt::MqttSource::new(mqtt)
                    .with_context(|| format!("mapping {}", mapping.name))?
                    .with_batch_size(batch);
                let detail = json!({ "url": mqtt.url, "topics": mqtt.topics, "qos": mqtt.qos });
                (
                    "mqtt",
                    detail,
                    Some((Box::new(source) as Box<dyn switchyard_sdk::Source>, polled(mapping, client, shaper)?)),
                )
            }
            #[cfg(feature = "nats")]
            SourceConfig::Nats(nats) => {
                let source =
                    switchyard_nats::NatsSource::new(nats).with_context(|| format!("mapping {}", mapping.name))?;
                let detail = json!({ "stream": nats.stream, "consumer": nats.consumer, "subjects": nats.subjects, "ordered": nats.ordered });
                (
                    "nats",
                    detail,
                    Some((Box::new(source) as Box<dyn switchyard_sdk::Source>, polled(mapping, client, shaper)?)),
                )
            }
            #[cfg(feature = "rabbitmq")]
            SourceConfig::Rabbitmq(rabbit) => {
                let source = switchyard_amqp::RabbitMqSource::new(rabbit)
                    .with_context(|| format!("mapping {}", mapping.name))?;
                let detail = json!({ "queue": rabbit.queue, "prefetch": rabbit.prefetch });
                (
                    "rabbitmq",
                    detail,
                    Some((Box::new(source) as Box<dyn switchyard_sdk::Source>, polled(mapping, client, shaper)?)),
                )
            }
        };
        if let Some((source, delivery)) = task {
            out.sources.push(PendingSource { mapping: mapping.name.clone(), source, function, state, delivery });
        }
        out.info.push(MappingInfo {
            name: mapping.name.clone(),
            source: kind,
            function: mapping.function.clone(),
            detail,
            state: state_rx,
        });
    }
    Ok(out)
}

/// The delivery settings of a polled mapping.
#[cfg_attr(
    not(any(
        feature = "kafka",
        feature = "rabbitmq",
        feature = "sqs",
        feature = "kinesis",
        feature = "mqtt",
        feature = "nats"
    )),
    allow(dead_code)
)]
fn polled(
    mapping: &crate::config::MappingConfig,
    client: &reqwest::Client,
    shaper: Arc<Shaper>,
) -> anyhow::Result<Delivery> {
    let settings = pipeline::Settings {
        mapping: Arc::from(mapping.name.as_str()),
        batch: mapping.batch(),
        parallelization: mapping.parallelization.get(),
        retry: mapping.retry.clone(),
        report_batch_item_failures: mapping.report_batch_item_failures,
        shaper,
    };
    let on_failure = mapping
        .on_failure
        .as_ref()
        .map(|d| crate::destination::target(d, client))
        .transpose()
        .with_context(|| format!("mapping {}: on_failure", mapping.name))?;
    Ok(Delivery::Polled(settings, on_failure, mapping.source.broker_dead_letters()))
}

/// Binds `server.listen` and serves until `stop` is cancelled.
async fn serve(
    config: &Config,
    app: Arc<AppState>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("server.listen {}: cannot listen", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let router = server::router(app);
    Ok(tokio::spawn(accept(listener, router, config.server.read_timeout, stop)))
}

/// Serves each connection accepted on `listener` until `stop`; then closes
/// the listener and waits for the open connections, which finish the
/// request in hand and close. A request's head must arrive within
/// `read_timeout`: without it a client that sends its headers a byte at a
/// time (slowloris) holds its connection for good, and enough of them take
/// every file descriptor. (hyper applies its header timeout only when given
/// a timer, which `axum::serve` does not give it.)
async fn accept(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    read_timeout: Duration,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower_service::Service as _;

    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: the listener itself is fine.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let mut router = router.clone();
            async move { router.call(request).await }
        });
        let connection =
            graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn refresh_metrics(
    queue: Arc<AsyncQueue>,
    functions: Vec<Arc<Function>>,
    metrics: PrometheusHandle,
    stop: CancellationToken,
) {
    loop {
        queue.refresh_metrics(&functions).await;
        // Folds recorded histogram samples into their buckets; without it they
        // pile up in memory until the next scrape of /metrics.
        metrics.run_upkeep();
        tokio::select! {
            _ = tokio::time::sleep(METRICS_REFRESH) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
