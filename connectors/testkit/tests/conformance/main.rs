//! The kit against its reference sources, which must pass, and against broken
//! ones, which it must catch.
//!
//! Every test runs on tokio's paused clock: timers fire in virtual time, so the
//! timeouts that expose a broken source elapse at once, and with a fixed seed
//! each run takes the same course.

mod broken;

use std::time::Duration;

use broken::{BrokenLog, BrokenQueue, Failing, LogBug, Misbehaving, QueueBug, Stubborn};
use switchyard_testkit::memory::{MemoryLogFixture, MemoryQueue, MemoryQueueFixture};
use switchyard_testkit::{Conformance, Fixture, Report, Violation};

async fn pass(fixture: &dyn Fixture, conformance: &Conformance) -> Report {
    match conformance.run(fixture).await {
        Ok(report) => report,
        Err(violation) => panic!("a reference source must pass, got: {violation}"),
    }
}

async fn fail(fixture: &dyn Fixture) -> Violation {
    match Conformance::default().run(fixture).await {
        Ok(report) => panic!("a broken source passed: {report:?}"),
        Err(violation) => violation,
    }
}

fn assert_exercised(report: &Report) {
    assert_eq!(report.delivered, report.produced);
    assert_eq!(report.restarts, 2, "{report:?}");
    assert!(report.retries > 0 && report.redeliveries > 0, "{report:?}");
    assert_eq!(report.foreign, 0);
}

#[tokio::test(start_paused = true)]
async fn memory_queue_passes() {
    let fixture = MemoryQueueFixture::new();
    let report = pass(&fixture, &Conformance::default()).await;
    assert_exercised(&report);
    assert!(fixture.queue().is_empty(), "every message was deleted");
    assert_eq!(fixture.queue().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn memory_log_passes() {
    let fixture = MemoryLogFixture::default();
    let report = pass(&fixture, &Conformance::default()).await;
    assert_exercised(&report);
}

#[tokio::test(start_paused = true)]
async fn reference_sources_pass_whatever_the_seed() {
    for seed in 1..=10 {
        let conformance = Conformance { seed, messages: 100, ..Conformance::default() };
        pass(&MemoryQueueFixture::new(), &conformance).await;
        pass(&MemoryLogFixture::new(seed as usize % 4 + 1), &conformance).await;
    }
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_run() {
    let conformance = Conformance::default();
    let first = pass(&MemoryLogFixture::default(), &conformance).await;
    let second = pass(&MemoryLogFixture::default(), &conformance).await;
    assert_eq!(first, second);
}

#[tokio::test(start_paused = true)]
async fn records_left_from_an_earlier_run_are_ignored() {
    let fixture = MemoryQueueFixture::new();
    fixture.queue().send("left over");
    let report = pass(&fixture, &Conformance::default()).await;
    assert_eq!(report.foreign, 1);
}

#[tokio::test(start_paused = true)]
async fn a_queue_that_acks_on_receipt_loses_retried_messages() {
    let violation = fail(&BrokenQueue::new(QueueBug::AckOnReceipt)).await;
    assert!(matches!(&violation, Violation::Lost { missing } if !missing.is_empty()), "{violation}");
}

#[tokio::test(start_paused = true)]
async fn a_queue_that_acks_everything_on_shutdown_loses_the_held_back_messages() {
    let violation = fail(&BrokenQueue::new(QueueBug::AckAllOnShutdown)).await;
    assert!(matches!(&violation, Violation::Lost { missing } if !missing.is_empty()), "{violation}");
}

#[tokio::test(start_paused = true)]
async fn a_log_that_commits_every_delivered_offset_loses_records() {
    let violation = fail(&BrokenLog::new(LogBug::CommitEveryDelivered)).await;
    assert!(matches!(&violation, Violation::Lost { .. } | Violation::OutOfOrder { .. }), "{violation}");
}

#[tokio::test(start_paused = true)]
async fn a_log_that_does_not_rewind_on_retry_breaks_order() {
    let violation = fail(&BrokenLog::new(LogBug::RedeliverLater)).await;
    assert!(matches!(&violation, Violation::OutOfOrder { scope, .. } if scope.starts_with("topic-")), "{violation}");
}

#[tokio::test(start_paused = true)]
async fn a_source_that_ignores_shutdown_is_caught() {
    let fixture = Misbehaving { queue: MemoryQueue::new(), source: || Box::new(Stubborn) };
    let violation = fail(&fixture).await;
    assert_eq!(violation, Violation::ShutdownTimeout { waited: Duration::from_secs(10) });
}

#[tokio::test(start_paused = true)]
async fn a_source_that_fails_is_reported() {
    let fixture = Misbehaving { queue: MemoryQueue::new(), source: || Box::new(Failing) };
    let violation = fail(&fixture).await;
    assert!(matches!(&violation, Violation::SourceFailed(why) if why.contains("unknown queue")), "{violation}");
}
