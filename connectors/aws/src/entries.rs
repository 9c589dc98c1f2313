//! Batch calls that answer per entry (SQS's SendMessageBatch, Kinesis's
//! PutRecords): entries the service failed on its side are sent again, and
//! only those.

use std::future::Future;
use std::time::Duration;

use switchyard_sdk::ConnectorError;

/// Waits before sending failed entries again; one try more than there are
/// waits.
pub const RETRY_WAITS: [Duration; 3] =
    [Duration::from_millis(100), Duration::from_millis(400), Duration::from_millis(1600)];
/// Failed entries named in an error at most.
const NAMED_FAILURES: usize = 3;

/// One entry a batch call did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEntry {
    /// The entry's index in the records being sent.
    pub index: usize,
    /// The fault is the sender's (a malformed entry): sending it again
    /// cannot help.
    pub sender_fault: bool,
    pub code: String,
    pub message: String,
}

/// What is being sent where, for logs and errors: `("SQS", "messages",
/// "queue https://...")`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub service: &'a str,
    pub unit: &'a str,
    pub name: &'a str,
}

/// Sends `indexes` with `call`, then again only the entries that failed on
/// the service's side, after each of `waits`. Fails when a call fails, when
/// an entry was refused (`Refused`), or when entries still fail after the
/// last try (`Unavailable`: retriable).
pub async fn send_entries<F, Fut>(
    target: Target<'_>,
    indexes: Vec<usize>,
    waits: &[Duration],
    mut call: F,
) -> Result<(), ConnectorError>
where
    F: FnMut(Vec<usize>) -> Fut,
    Fut: Future<Output = Result<Vec<FailedEntry>, ConnectorError>>,
{
    let total = indexes.len();
    let mut remaining = indexes;
    let mut refused: Vec<FailedEntry> = Vec::new();
    let mut unsent: Vec<FailedEntry> = Vec::new();
    for attempt in 0..=waits.len() {
        if attempt > 0 {
            tokio::time::sleep(waits[attempt - 1]).await;
        }
        let failed = call(remaining.clone()).await?;
        unsent.clear();
        for failure in failed.into_iter().filter(|f| remaining.contains(&f.index)) {
            if failure.sender_fault { refused.push(failure) } else { unsent.push(failure) }
        }
        remaining = unsent.iter().map(|f| f.index).collect();
        if remaining.is_empty() {
            break;
        }
        tracing::debug!(
            service = target.service,
            target = target.name,
            failed = remaining.len(),
            attempt,
            "some entries failed; sending them again"
        );
    }
    if refused.is_empty() && unsent.is_empty() {
        return Ok(());
    }
    let failures: Vec<&FailedEntry> = refused.iter().chain(&unsent).collect();
    let named: Vec<String> = failures
        .iter()
        .take(NAMED_FAILURES)
        .map(|f| format!("record {}: {}: {}", f.index, f.code, f.message))
        .collect();
    let more = failures.len().saturating_sub(NAMED_FAILURES);
    let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
    let text = format!(
        "{} did not take {} of {total} {} for {}: {}{more}",
        target.service,
        failures.len(),
        target.unit,
        target.name,
        named.join("; ")
    );
    Err(if refused.is_empty() { ConnectorError::Unavailable(text) } else { ConnectorError::Refused(text) })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const QUEUE: Target = Target { service: "SQS", unit: "messages", name: "queue q" };

    fn failed(index: usize, sender_fault: bool) -> FailedEntry {
        FailedEntry { index, sender_fault, code: "InternalError".into(), message: "try again".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn only_failed_entries_are_sent_again() {
        let calls = Mutex::new(Vec::new());
        let result = send_entries(QUEUE, (0..5).collect(), &RETRY_WAITS, |indexes: Vec<usize>| {
            calls.lock().expect("not poisoned").push(indexes.clone());
            let attempt = calls.lock().expect("not poisoned").len();
            async move {
                // 1 and 3 fail once, 3 fails twice.
                Ok(match attempt {
                    1 => vec![failed(1, false), failed(3, false)],
                    2 => vec![failed(3, false)],
                    _ => vec![],
                })
            }
        })
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(*calls.lock().expect("not poisoned"), [vec![0, 1, 2, 3, 4], vec![1, 3], vec![3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_failing_every_try_fail_the_send() {
        let mut tries = 0;
        let result = send_entries(QUEUE, vec![0, 1], &RETRY_WAITS, |_| {
            tries += 1;
            async { Ok(vec![failed(1, false)]) }
        })
        .await;
        assert_eq!(tries, RETRY_WAITS.len() + 1);
        let error = result.expect_err("entry 1 never made it");
        assert!(error.is_retriable(), "{error:?}");
        assert!(
            error.to_string().contains("SQS did not take 1 of 2 messages for queue q: record 1: InternalError"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refused_entries_are_not_sent_again() {
        let calls = Mutex::new(Vec::new());
        let result = send_entries(QUEUE, vec![0, 1, 2], &RETRY_WAITS, |indexes: Vec<usize>| {
            calls.lock().expect("not poisoned").push(indexes);
            async { Ok(vec![failed(0, true)]) }
        })
        .await;
        let error = result.expect_err("entry 0 was refused");
        assert!(matches!(error, ConnectorError::Refused(_)), "{error:?}");
        assert_eq!(calls.lock().expect("not poisoned").len(), 1, "nothing retriable was left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_call_fails_the_send() {
        let result = send_entries(QUEUE, vec![0], &RETRY_WAITS, |_| async {
            Err(ConnectorError::Connection("unreachable".into()))
        })
        .await;
        assert!(matches!(result, Err(ConnectorError::Connection(_))), "{result:?}");
    }
}
