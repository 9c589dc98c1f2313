//! Connecting to NATS the same way for the source and the destination.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc;

use crate::config::{Auth, Servers};

/// How long one TCP (and TLS) connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pings find a connection that died without a TCP reset; async-nats's
/// default of a minute leaves a dead source looking healthy for two.
const PING_INTERVAL: Duration = Duration::from_secs(20);

/// Connects once; after that async-nats reconnects by itself, forever.
/// Connection events go to `events` when given.
pub(crate) async fn connect(
    servers: &Servers,
    name: &str,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        .max_reconnects(None);
    options = match &servers.auth {
        Auth::None => options,
        Auth::UserPassword(user, password) => options.user_and_password(user.clone(), password.clone()),
        Auth::Token(token) => options.token(token.clone()),
    };
    if let Some(events) = events {
        options = options.event_callback(move |event| {
            // The receiver is gone once the source stopped; nothing listens then.
            let _ = events.send(event);
            async {}
        });
    }
    options.connect(servers.addrs.clone()).await.map_err(|e| describe_connect(&e.to_string(), servers))
}

/// A sentence naming the servers (without secrets) and what went wrong.
fn describe_connect(error: &str, servers: &Servers) -> String {
    let lower = error.to_ascii_lowercase();
    if lower.contains("authorization") || lower.contains("authentication") {
        format!("NATS at {servers} refused the credentials: {error}")
    } else {
        format!("cannot reach NATS at {servers}: {error}")
    }
}
