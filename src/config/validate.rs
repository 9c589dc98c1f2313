//! Checks serde cannot express: references between sections, names, URLs,
//! expressions. Each error is `(key path, what was expected)`.

use std::collections::HashSet;

use super::*;

type Invalid = (String, String);

/// Paths the server answers itself; a webhook may not take them.
const RESERVED_PREFIXES: &[&str] = &["/2015-03-31/", "/v1/", "/healthz", "/readyz", "/metrics"];

pub fn validate(config: &Config) -> Result<(), Invalid> {
    for (name, function) in &config.functions {
        let at = format!("functions.{name}");
        check_name(&at, name)?;
        validate_function(config, &at, function)?;
    }
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for (i, mapping) in config.mappings.iter().enumerate() {
        let at = format!("mappings[{i}]");
        check_name(&format!("{at}.name"), &mapping.name)?;
        if !names.insert(mapping.name.as_str()) {
            return Err((format!("{at}.name"), format!("duplicate mapping name {:?}", mapping.name)));
        }
        if !config.functions.contains_key(&mapping.function) {
            return Err((format!("{at}.function"), unknown_function(config, &mapping.function)));
        }
        validate_delivery(config, &at, mapping)?;
        validate_shape(config, &at, mapping)?;
        match &mapping.source {
            SourceConfig::Webhook(hook) => {
                let at = format!("{at}.source.webhook");
                if !hook.path.starts_with('/') {
                    return Err((
                        format!("{at}.path"),
                        format!("expected a path starting with /, got {:?}", hook.path),
                    ));
                }
                // Requests are routed by their path as sent, percent-encoded:
                // a path with other characters could never match.
                if let Some(c) = hook.path.chars().find(|c| !is_path_char(*c)) {
                    return Err((
                        format!("{at}.path"),
                        format!(
                            "{:?}: {c:?} cannot appear in a request's path as sent; expected letters, digits and -._~!$&'()*+,;=:@/",
                            hook.path
                        ),
                    ));
                }
                if hook.methods.as_ref().is_some_and(Vec::is_empty) {
                    return Err((
                        format!("{at}.methods"),
                        "expected at least one HTTP method (leave the key out for any method)".into(),
                    ));
                }
                if RESERVED_PREFIXES.iter().any(|p| hook.path.starts_with(p)) {
                    return Err((
                        format!("{at}.path"),
                        format!(
                            "{:?} is served by Switchyard itself; choose a path outside {RESERVED_PREFIXES:?}",
                            hook.path
                        ),
                    ));
                }
                if !paths.insert(hook.path.as_str()) {
                    return Err((format!("{at}.path"), format!("another webhook already uses {:?}", hook.path)));
                }
                for (j, method) in hook.methods.iter().flatten().enumerate() {
                    if http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).is_err() {
                        return Err((format!("{at}.methods[{j}]"), format!("expected an HTTP method, got {method:?}")));
                    }
                }
            }
            #[cfg(feature = "schedule")]
            SourceConfig::Schedule(schedule) => {
                switchyard_schedule::Schedule::parse(&schedule.expression, schedule.timezone.as_deref())
                    .map_err(|e| (format!("{at}.source.schedule.expression"), e.to_string()))?;
            }
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(kafka) => {
                switchyard_kafka::KafkaSource::new(kafka).map_err(|e| (format!("{at}.source.kafka"), e.to_string()))?;
            }
            #[cfg(feature = "sqs")]
            SourceConfig::Sqs(sqs) => {
                switchyard_sqs::SqsSource::new(sqs).map_err(|e| (format!("{at}.source.sqs"), e.to_string()))?;
                // Lambda's rule: more than 10 messages per batch needs a window.
                if let Some(batch) = &mapping.batch
                    && batch.size.get() > 10
                    && batch.window < Duration::from_secs(1)
                {
                    return Err((
                        format!("{at}.batch.window"),
                        "a batch of more than 10 SQS messages needs a window of at least 1s".into(),
                    ));
                }
            }
            #[cfg(feature = "kinesis")]
            SourceConfig::Kinesis(kinesis) => {
                let checkpoints = std::sync::Arc::new(switchyard_kinesis::MemoryCheckpoints::new());
                switchyard_kinesis::KinesisSource::new(kinesis, checkpoints)
                    .map_err(|e| (format!("{at}.source.kinesis"), e.to_string()))?;
                if let Some(batch) = &mapping.batch
                    && batch.size.get() > 10_000
                {
                    return Err((format!("{at}.batch.size"), "expected 1 to 10000 Kinesis records".into()));
                }
            }
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(mqtt) => {
                switchyard_mqtt::MqttSource::new(mqtt).map_err(|e| (format!("{at}.source.mqtt"), e.to_string()))?;
            }
            #[cfg(feature = "nats")]
            SourceConfig::Nats(nats) => {
                switchyard_nats::NatsSource::new(nats).map_err(|e| (format!("{at}.source.nats"), e.to_string()))?;
            }
            #[cfg(feature = "rabbitmq")]
            SourceConfig::Rabbitmq(rabbit) => {
                switchyard_amqp::RabbitMqSource::new(rabbit)
                    .map_err(|e| (format!("{at}.source.rabbitmq"), e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// Batching, retries and `on_failure` belong to sources Switchyard polls;
/// webhooks and schedules go through the function's async settings instead.
fn validate_delivery(config: &Config, at: &str, mapping: &MappingConfig) -> Result<(), Invalid> {
    let polled = mapping.source.is_polled();
    let set = [
        ("batch", mapping.batch.is_some()),
        ("parallelization", mapping.parallelization.get() != 1),
        ("report_batch_item_failures", mapping.report_batch_item_failures),
        ("on_failure", mapping.on_failure.is_some()),
    ];
    if !polled {
        if let Some((key, _)) = set.iter().find(|(_, is_set)| *is_set) {
            return Err((
                format!("{at}.{key}"),
                format!(
                    "only for polled sources (kafka, rabbitmq, sqs, kinesis, mqtt, nats); a {} mapping uses functions.{}.async instead",
                    mapping.source.kind(),
                    mapping.function
                ),
            ));
        }
        return Ok(());
    }
    if mapping.parallelization.get() > 10 {
        return Err((format!("{at}.parallelization"), "expected 1 to 10".into()));
    }
    if mapping.retry.max_attempts < -1 {
        return Err((format!("{at}.retry.max_attempts"), "expected -1 (forever) or 0 and above".into()));
    }
    check_backoff(&format!("{at}.retry.backoff"), &mapping.retry.backoff)?;
    if mapping.retry.max_record_age.is_some_and(|age| age.is_zero()) {
        return Err((
            format!("{at}.retry.max_record_age"),
            "expected a duration above 0 (leave the key out for no limit)".into(),
        ));
    }
    if let Some(batch) = &mapping.batch
        && batch.size.get() > 10_000
    {
        return Err((format!("{at}.batch.size"), "expected 1 to 10000".into()));
    }
    check_destination(config, &format!("{at}.on_failure"), mapping.on_failure.as_ref())
}

/// Filters and transforms compile; CloudEvents binary mode fits the path.
fn validate_shape(config: &Config, at: &str, mapping: &MappingConfig) -> Result<(), Invalid> {
    crate::shape::Shaper::new(mapping).map_err(|(key, message)| (format!("{at}.{key}"), message))?;
    let FormatConfig::CloudEvents(CloudEventsConfig { mode: CloudEventsMode::Binary, .. }) = &mapping.format else {
        return Ok(());
    };
    let at = format!("{at}.format.cloudevents.mode");
    let queued = match &mapping.source {
        SourceConfig::Webhook(hook) => hook.mode == WebhookMode::Async,
        other => !other.is_polled(),
    };
    if queued {
        return Err((
            at,
            "binary mode needs a synchronous path; a queued event keeps its body only: use mode: structured".into(),
        ));
    }
    if config.functions.get(&mapping.function).is_some_and(|f| f.http.is_none()) {
        return Err((at, "binary mode is for HTTP functions: a Lambda function gets the event as JSON".into()));
    }
    if mapping.source.is_polled() && mapping.batch().size.get() != 1 {
        return Err((at, "binary mode carries one record per invocation: set batch.size to 1".into()));
    }
    Ok(())
}

/// A destination's URL, function reference, and connector settings.
fn check_destination(config: &Config, at: &str, destination: Option<&DestinationConfig>) -> Result<(), Invalid> {
    match destination {
        None => Ok(()),
        Some(DestinationConfig::Http(http)) => check_url(&format!("{at}.http.url"), &http.url),
        Some(DestinationConfig::Function(f)) if !config.functions.contains_key(&f.name) => {
            Err((format!("{at}.function.name"), unknown_function(config, &f.name)))
        }
        Some(DestinationConfig::Function(_) | DestinationConfig::Dlq(_)) => Ok(()),
        // Connectors check their own settings (without connecting).
        #[allow(unreachable_patterns)]
        Some(other) => crate::destination::target(other, &reqwest::Client::new())
            .map(|_| ())
            .map_err(|e| (at.to_string(), format!("{e:#}"))),
    }
}

fn validate_function(config: &Config, at: &str, function: &FunctionConfig) -> Result<(), Invalid> {
    match (&function.http, &function.lambda) {
        (Some(_), Some(_)) => {
            return Err((at.to_string(), "expected one function kind: http or lambda, not both".into()));
        }
        (None, None) => return Err((at.to_string(), "expected a function kind: http or lambda".into())),
        (None, Some(lambda)) => validate_lambda(&format!("{at}.lambda"), lambda)?,
        (Some(http), None) => validate_http(&format!("{at}.http"), http)?,
    }
    validate_async(config, at, function)
}

fn validate_lambda(at: &str, lambda: &LambdaFunctionConfig) -> Result<(), Invalid> {
    if lambda.command.first().is_none_or(|c| c.is_empty()) {
        return Err((format!("{at}.command"), "expected the runtime's program and its arguments".into()));
    }
    if lambda.timeout.is_zero() || lambda.timeout > Duration::from_secs(900) {
        return Err((format!("{at}.timeout"), "expected 1ms to 15m".into()));
    }
    if !(128 << 20..=10 << 30).contains(&lambda.memory) {
        return Err((format!("{at}.memory"), "expected 128MB to 10GB".into()));
    }
    if lambda.idle_timeout.is_zero() {
        return Err((format!("{at}.idle_timeout"), "expected a duration above 0".into()));
    }
    if !lambda.dir.is_dir() {
        return Err((
            format!("{at}.dir"),
            format!("{}: expected a directory with the function's code", lambda.dir.display()),
        ));
    }
    Ok(())
}

fn validate_http(at: &str, http: &HttpFunctionConfig) -> Result<(), Invalid> {
    check_url(&format!("{at}.url"), &http.url)?;
    if http.timeout.is_zero() {
        return Err((format!("{at}.timeout"), "expected a duration above 0".into()));
    }
    if let Some(command) = &http.command
        && command.first().is_none_or(|c| c.is_empty())
    {
        return Err((format!("{at}.command"), "expected a program and its arguments, got an empty list".into()));
    }
    Ok(())
}

fn validate_async(config: &Config, at: &str, function: &FunctionConfig) -> Result<(), Invalid> {
    let a = &function.async_;
    if a.max_event_age < Duration::from_secs(1) {
        return Err((format!("{at}.async.max_event_age"), "expected at least 1s".into()));
    }
    check_backoff(&format!("{at}.async.backoff"), &a.backoff)?;
    for (key, destination) in [("on_success", &a.on_success), ("on_failure", &a.on_failure)] {
        let at = format!("{at}.async.{key}");
        check_destination(config, &at, destination.as_ref())?;
    }
    Ok(())
}

/// A backoff that waits at all (zero would retry in a tight loop) and grows
/// from its initial wait.
fn check_backoff(at: &str, backoff: &BackoffConfig) -> Result<(), Invalid> {
    if backoff.initial.is_zero() || backoff.max < backoff.initial {
        return Err((at.to_string(), "expected initial above 0 and max at least initial".into()));
    }
    Ok(())
}

/// A character a URI's path carries as it is (RFC 3986 `pchar` and `/`,
/// without the `%` of an escape).
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c)
}

fn check_name(at: &str, name: &str) -> Result<(), Invalid> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok { Ok(()) } else { Err((at.to_string(), format!("{name:?}: expected 1 to 64 letters, digits, - or _"))) }
}

fn check_url(at: &str, url: &str) -> Result<(), Invalid> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err((
            at.to_string(),
            format!("{url:?}: expected an http or https URL with a host, got scheme {}", u.scheme()),
        )),
        Err(e) => Err((at.to_string(), format!("{url:?}: expected an absolute http(s) URL ({e})"))),
    }
}

fn unknown_function(config: &Config, name: &str) -> String {
    let known: Vec<&str> = config.functions.keys().map(String::as_str).collect();
    format!("unknown function {name:?}, expected one of: {}", known.join(", "))
}
