//! The durable floor: the least an HTTP handler can do to answer 202 only
//! once the body is on disk. It reads the body, hands it to one thread that
//! writes every body waiting at that moment with one `pwrite` and makes them
//! durable with one `fdatasync` (the group commit of Switchyard's accept log,
//! in a file zero-filled up front as the log's segments are), then answers.
//! No event is built, nothing is queued, no CRC: what it costs beyond the
//! bare handler is what durability itself costs on this machine, and what
//! Switchyard costs beyond it is Switchyard's own.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use bytes::Bytes;
use tokio::sync::oneshot;

/// The file is written round and round; its size never changes, so a sync
/// has no file metadata to record.
const FILE_SIZE: u64 = 64 << 20;
/// Bodies folded into one write at most (as the accept log).
const GROUP_MAX: usize = 512;

type Append = (Bytes, oneshot::Sender<()>);

/// Serves the floor handler on `127.0.0.1:port` until the process ends,
/// writing into a file under `dir`.
pub async fn serve(port: u16, dir: &std::path::Path) {
    let file = zero_filled(&dir.join("floor.log"));
    let (tx, rx) = mpsc::channel::<Append>();
    std::thread::Builder::new().name("floor-log".into()).spawn(move || commit_groups(file, rx)).unwrap();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let tx = tx.clone();
        async move {
            let (done, durable) = oneshot::channel();
            tx.send((body, done)).expect("the floor's log thread stopped");
            durable.await.expect("the floor's log thread stopped");
            axum::http::StatusCode::ACCEPTED
        }
    });
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

fn zero_filled(path: &std::path::Path) -> File {
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for at in (0..FILE_SIZE).step_by(zeros.len()) {
        file.write_all_at(&zeros, at).unwrap();
    }
    file.sync_all().unwrap();
    file
}

fn commit_groups(file: File, appends: mpsc::Receiver<Append>) {
    let mut offset = 0u64;
    let mut buffer = Vec::new();
    while let Ok(first) = appends.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match appends.try_recv() {
                Ok(append) => group.push(append),
                Err(_) => break,
            }
        }
        buffer.clear();
        for (body, _) in &group {
            buffer.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buffer.extend_from_slice(body);
        }
        if offset + buffer.len() as u64 > FILE_SIZE {
            offset = 0;
        }
        file.write_all_at(&buffer, offset).unwrap();
        offset += buffer.len() as u64;
        file.sync_data().unwrap();
        for (_, done) in group {
            let _ = done.send(());
        }
    }
}
