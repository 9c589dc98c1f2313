use super::*;

const ISSUE_EXAMPLE: &str = r#"
server:
  listen: 127.0.0.1:9000
state:
  dir: ./switchyard-data
functions:
  hello:
    http:
      url: http://127.0.0.1:7000/
      timeout: 10s
    concurrency: 8
mappings:
  - name: orders
    source:
      webhook:
        path: /hooks/orders
        mode: sync
    function: hello
  - name: tick
    source:
      schedule:
        expression: rate(5 seconds)
    function: hello
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse("test.yaml", text, |name| match name {
        "PORT" => Some("7001".into()),
        _ => None,
    })
}

fn error(text: &str) -> String {
    parse(text).expect_err("expected a config error").to_string()
}

#[test]
fn example_config_is_valid() {
    let config = parse(ISSUE_EXAMPLE).unwrap();
    assert_eq!(config.functions["hello"].concurrency.get(), 8);
    assert_eq!(config.functions["hello"].http.as_ref().unwrap().timeout, Duration::from_secs(10));
    assert_eq!(config.mappings.len(), 2);
    assert_eq!(config.functions["hello"].async_.max_retry_attempts, 2, "Lambda's default");
    assert_eq!(config.functions["hello"].async_.max_event_age, Duration::from_secs(6 * 3600));
}

#[test]
fn wrong_enum_value_names_key_path_and_choices() {
    let e = error(&ISSUE_EXAMPLE.replace("mode: sync", "mode: later"));
    assert!(e.starts_with("test.yaml: mappings[0].source.webhook.mode: "), "{e}");
    assert!(e.contains("sync") && e.contains("async"), "{e}");
}

#[test]
fn unknown_key_is_rejected() {
    let e = error(&ISSUE_EXAMPLE.replace("concurrency: 8", "concurrency: 8\n    colour: blue"));
    assert!(e.contains("functions.hello") && e.contains("colour"), "{e}");
}

#[test]
fn wrong_type_is_rejected() {
    let e = error(&ISSUE_EXAMPLE.replace("concurrency: 8", "concurrency: many"));
    assert!(e.contains("functions.hello.concurrency"), "{e}");
    let e = error(&ISSUE_EXAMPLE.replace("concurrency: 8", "concurrency: 0"));
    assert!(e.contains("functions.hello.concurrency"), "{e}");
    let e = error(&ISSUE_EXAMPLE.replace("timeout: 10s", "timeout: ten"));
    assert!(e.contains("functions.hello.http.timeout"), "{e}");
}

#[test]
fn references_are_checked() {
    let e = error(&ISSUE_EXAMPLE.replace("    function: hello\n  - name: tick", "    function: nope\n  - name: tick"));
    assert!(e.contains("mappings[0].function") && e.contains("nope"), "{e}");
    let e = error(&ISSUE_EXAMPLE.replace("rate(5 seconds)", "rate(5 fortnights)"));
    assert!(e.contains("mappings[1].source.schedule.expression"), "{e}");
    let e = error(&ISSUE_EXAMPLE.replace("/hooks/orders", "hooks/orders"));
    assert!(e.contains("mappings[0].source.webhook.path"), "{e}");
    let e = error(&ISSUE_EXAMPLE.replace("/hooks/orders", "/v1/mappings"));
    assert!(e.contains("served by Switchyard"), "{e}");
    let e = error(&ISSUE_EXAMPLE.replace("name: tick", "name: orders"));
    assert!(e.contains("duplicate mapping name"), "{e}");
    let e = error(&ISSUE_EXAMPLE.replace("http://127.0.0.1:7000/", "127.0.0.1:7000"));
    assert!(e.contains("functions.hello.http.url"), "{e}");
}

#[test]
fn destinations_are_checked() {
    let text = ISSUE_EXAMPLE
        .replace("concurrency: 8", "concurrency: 8\n    async:\n      on_failure: { function: { name: ghost } }");
    let e = error(&text);
    assert!(e.contains("functions.hello.async.on_failure.function.name"), "{e}");
    let text = ISSUE_EXAMPLE.replace("concurrency: 8", "concurrency: 8\n    async:\n      on_failure: { sqs: {} }");
    let e = error(&text);
    assert!(e.contains("functions.hello.async.on_failure"), "{e}");
}

#[test]
fn environment_is_interpolated() {
    let config = parse(&ISSUE_EXAMPLE.replace("7000", "${PORT}").replace("10s", "${TIMEOUT:-2s}")).unwrap();
    let http = config.functions["hello"].http.as_ref().unwrap();
    assert_eq!(http.url, "http://127.0.0.1:7001/");
    assert_eq!(http.timeout, Duration::from_secs(2));
    let e = error(&ISSUE_EXAMPLE.replace("7000", "${UNSET_PORT}"));
    assert!(e.contains("UNSET_PORT"), "{e}");
}

#[test]
fn shipped_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen > 0, "no config files in {}", dir.display());
}

#[test]
fn delivery_settings_belong_to_polled_sources() {
    let e = error(&ISSUE_EXAMPLE.replace(
        "        mode: sync\n    function: hello",
        "        mode: sync\n    function: hello\n    batch: { size: 10 }",
    ));
    assert!(e.contains("mappings[0].batch") && e.contains("polled"), "{e}");
}

#[cfg(feature = "rabbitmq")]
#[test]
fn connector_destinations_are_checked_at_load() {
    let text = format!(
        "{ISSUE_EXAMPLE}  - name: q\n    source: {{ rabbitmq: {{ url: \"amqp://guest:guest@127.0.0.1:5672/%2f\", queue: q }} }}\n    function: hello\n    batch: {{ size: 10, max_bytes: 256KB }}\n    on_failure: {{ rabbitmq: {{ url: \"not a url\", routing_key: x }} }}\n"
    );
    let e = error(&text);
    assert!(e.contains("mappings[2].on_failure"), "{e}");
    let ok = parse(&text.replace("not a url", "amqp://guest:guest@127.0.0.1:5672/%2f")).unwrap();
    assert_eq!(ok.mappings[2].batch.unwrap().max_bytes, 256 * 1024);
    let e = error(&text.replace("256KB", "lots"));
    assert!(e.contains("mappings[2].batch.max_bytes"), "{e}");
}

#[test]
fn lambda_functions_are_checked() {
    let lambda = |body: &str| format!("functions:\n  resize:\n    lambda:\n{body}\n    concurrency: 4\nmappings: []\n");
    let ok = lambda(
        "      command: [python3, -m, awslambdaric]\n      handler: app.handler\n      dir: examples/functions/python-hello\n      memory: 256MB\n      timeout: 30s",
    );
    let config = parse(&ok).unwrap();
    let f = config.functions["resize"].lambda.as_ref().unwrap();
    assert_eq!((f.memory, f.timeout, f.idle_timeout), (256 << 20, Duration::from_secs(30), Duration::from_secs(300)));
    for (change, key) in [
        (("timeout: 30s", "timeout: 16m"), "functions.resize.lambda.timeout"),
        (("memory: 256MB", "memory: 64MB"), "functions.resize.lambda.memory"),
        (("[python3, -m, awslambdaric]", "[]"), "functions.resize.lambda.command"),
        (("examples/functions/python-hello", "examples/functions/missing"), "functions.resize.lambda.dir"),
        (("handler: app.handler", "handlr: app.handler"), "functions.resize.lambda"),
    ] {
        let e = error(&ok.replace(change.0, change.1));
        assert!(e.contains(key), "{change:?}: {e}");
    }
    let both = ok.replace("    lambda:\n", "    http: { url: http://127.0.0.1:7000/ }\n    lambda:\n");
    assert!(error(&both).contains("expected one function kind"));
    let none = "functions:\n  f:\n    concurrency: 1\n";
    assert!(error(none).contains("functions.f: expected a function kind: http or lambda"));
}

#[test]
fn webhook_paths_and_methods_that_could_never_match_are_refused() {
    for (path, bad) in [("/hooks/a b", "' '"), ("/hooks/%20", "'%'"), ("/hooks/a?x=1", "'?'"), ("/hooks/café", "'é'")]
    {
        let e = error(&ISSUE_EXAMPLE.replace("path: /hooks/orders", &format!("path: \"{path}\"")));
        assert!(e.contains("mappings[0].source.webhook.path") && e.contains(bad), "{path}: {e}");
    }
    let e = error(&ISSUE_EXAMPLE.replace("        mode: sync", "        mode: sync\n        methods: []"));
    assert!(e.contains("mappings[0].source.webhook.methods") && e.contains("at least one"), "{e}");
    parse(&ISSUE_EXAMPLE.replace("path: /hooks/orders", "path: /hooks/orders-v1.2/@team~x"))
        .expect("a path of plain characters");
}

#[cfg(feature = "kafka")]
#[test]
fn retry_settings_that_would_spin_or_skip_every_record_are_refused() {
    let kafka = ISSUE_EXAMPLE.replace(
        "    source:\n      webhook:\n        path: /hooks/orders\n        mode: sync\n    function: hello",
        "    source: { kafka: { brokers: 127.0.0.1:9092, topics: [t], group_id: g } }\n    function: hello\n    retry: RETRY",
    );
    parse(&kafka.replace("RETRY", "{ backoff: { initial: 1s, max: 1m }, max_record_age: 1h }"))
        .expect("sensible retries");
    let e = error(&kafka.replace("RETRY", "{ backoff: { initial: 0s, max: 1m } }"));
    assert!(e.contains("mappings[0].retry.backoff") && e.contains("initial above 0"), "{e}");
    let e = error(&kafka.replace("RETRY", "{ backoff: { initial: 2s, max: 1s } }"));
    assert!(e.contains("mappings[0].retry.backoff"), "{e}");
    let e = error(&kafka.replace("RETRY", "{ max_record_age: 0s }"));
    assert!(e.contains("mappings[0].retry.max_record_age") && e.contains("above 0"), "{e}");
}

#[test]
fn a_key_given_twice_is_refused_not_replaced() {
    let twice = ISSUE_EXAMPLE
        .replace("functions:\n  hello:\n", "functions:\n  hello:\n    http: { url: http://127.0.0.1:1/ }\n  hello:\n");
    let e = error(&twice);
    assert!(e.contains("duplicate") && e.contains("hello"), "{e}");
    let e = error(&format!("{ISSUE_EXAMPLE}functions: {{}}\n"));
    assert!(e.contains("duplicate") && e.contains("functions"), "{e}");
}
