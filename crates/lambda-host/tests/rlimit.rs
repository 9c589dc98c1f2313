//! The memory fallback for hosts without a writable cgroup: RLIMIT_DATA.
//! The enforcement is chosen once per process, so this test re-runs itself
//! in a child process with the cgroups switched off.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

const FORCE: &str = "SWITCHYARD_LAMBDA_MEMORY";

#[test]
fn without_cgroups_rlimit_data_holds_the_memory_size() {
    if std::env::var_os(FORCE).is_none() {
        let exe = std::env::current_exe().expect("test binary");
        let status = Command::new(exe)
            .args(["--exact", "without_cgroups_rlimit_data_holds_the_memory_size", "--nocapture", "--test-threads=1"])
            .env(FORCE, "rlimit")
            .status()
            .expect("re-run the test");
        assert!(status.success(), "the test under {FORCE}=rlimit failed");
        return;
    }
    let Some(python) = python() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        assert_eq!(switchyard_lambda_host::memory_enforcement(), "rlimit");
        let mut spec = python_spec(&python, "hello", "python-hello", "app.handler");
        spec.memory_mb = 128;
        let host = host(spec);
        // The runtime starts and works under the limit...
        let small = invoke(&host, json!({"action": "alloc", "mb": 20})).await;
        assert_eq!(small.function_error, None, "{}", String::from_utf8_lossy(&small.payload));
        assert!(
            small.max_memory_used_mb.is_some_and(|mb| mb >= 20),
            "VmHWM measures it: {:?}",
            small.max_memory_used_mb
        );
        // ...and an allocation over it fails inside Python, not the process.
        let big = invoke(&host, json!({"action": "alloc", "mb": 400})).await;
        assert_eq!(big.function_error.as_deref(), Some("Unhandled"));
        assert_eq!(big.error_type.as_deref(), Some("MemoryError"), "{}", big.log_tail);
        let again = invoke(&host, json!({"action": "alloc", "mb": 20})).await;
        assert_eq!(again.function_error, None);
        assert_eq!(again.instance_id, small.instance_id, "the instance survived its MemoryError");
        host.shutdown().await;
    });
}
