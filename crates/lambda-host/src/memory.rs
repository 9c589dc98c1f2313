//! Holds an instance to its memory size, as Lambda does, and measures what
//! it used for the REPORT line's "Max Memory Used".
//!
//! In order of preference:
//!
//! 1. **cgroup v2**: a child cgroup per instance under Switchyard's own
//!    cgroup, with `memory.max` = the memory size, no swap, and
//!    `memory.oom.group` so the whole instance dies together. Peak from
//!    `memory.peak`, OOM kills from `memory.events`. Used when Switchyard's
//!    cgroup delegates the memory controller to its children (its
//!    `cgroup.subtree_control` lists `memory`, or accepts `+memory`).
//! 2. **cgroup v1** (hybrid hierarchies): the same with the v1 memory
//!    controller: `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`
//!    where swap accounting exists), `memory.max_usage_in_bytes`,
//!    `memory.oom_control`'s `oom_kill` count.
//! 3. **`RLIMIT_DATA`** at the memory size plus an allowance for thread
//!    stacks, when no cgroup is writable. Not `RLIMIT_AS`: runtimes such as
//!    Node.js, the JVM and Go reserve gigabytes of address space they never
//!    touch and fail at start under an address-space limit. `RLIMIT_DATA`
//!    counts only private writable mappings (heap and anonymous memory, the
//!    memory a runtime actually commits), so it lets those reservations be.
//!    It is a weaker stand-in: an allocation over the limit fails inside
//!    the runtime (a `MemoryError`, a V8 heap error) instead of the kernel
//!    killing the process, so such failures surface as the runtime reports
//!    them, not as `Runtime.OutOfMemory`, and "Max Memory Used" is the
//!    runtime process's own peak resident size (`VmHWM`).
//!
//! The choice is made once per process and logged. `SWITCHYARD_LAMBDA_MEMORY=rlimit`
//! in Switchyard's environment skips the cgroups (for hosts whose cgroup
//! setup should not be touched, and to test the fallback).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Room for thread stacks under `RLIMIT_DATA`: each thread's stack is a
/// private writable mapping (8 MiB by default) counted in full although
/// barely touched; a runtime's handful of threads must not eat the budget.
const RLIMIT_THREAD_ALLOWANCE: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Enforcement {
    CgroupV2 { parent: PathBuf },
    CgroupV1 { parent: PathBuf },
    Rlimit,
}

impl Enforcement {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Enforcement::CgroupV2 { .. } => "cgroup v2",
            Enforcement::CgroupV1 { .. } => "cgroup v1",
            Enforcement::Rlimit => "rlimit",
        }
    }
}

/// The enforcement this process uses, found on first use.
pub(crate) fn enforcement() -> &'static Enforcement {
    static DETECTED: OnceLock<Enforcement> = OnceLock::new();
    DETECTED.get_or_init(|| {
        let found = detect();
        match &found {
            Enforcement::CgroupV2 { parent } | Enforcement::CgroupV1 { parent } => {
                tracing::info!(method = found.name(), parent = %parent.display(), "lambda memory sizes enforced by cgroup")
            }
            Enforcement::Rlimit => tracing::info!(
                "no writable cgroup with a memory controller; lambda memory sizes enforced by RLIMIT_DATA \
                 (over-limit allocations fail inside the runtime instead of killing it)"
            ),
        }
        found
    })
}

fn detect() -> Enforcement {
    if std::env::var("SWITCHYARD_LAMBDA_MEMORY").is_ok_and(|v| v == "rlimit") {
        return Enforcement::Rlimit;
    }
    let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(parent) = v2_parent(&cgroups, &mounts) {
        return Enforcement::CgroupV2 { parent };
    }
    if let Some(parent) = v1_parent(&cgroups, &mounts) {
        return Enforcement::CgroupV1 { parent };
    }
    Enforcement::Rlimit
}

/// Our own v2 cgroup, when its children get the memory controller.
fn v2_parent(cgroups: &str, mounts: &str) -> Option<PathBuf> {
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = mounted_path(mounts, |fstype, _| fstype == "cgroup2", path)?;
    let controllers = fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return None;
    }
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&subtree).ok()?.split_whitespace().any(|c| c == "memory");
    // Enabling it fails (EBUSY) where our cgroup holds processes and is not
    // the root: cgroup v2 has no controllers for cgroups with members and
    // children both. Then the operator has to delegate (see the module doc).
    if !enabled && fs::write(&subtree, "+memory").is_err() {
        return None;
    }
    probe(&dir, "memory.max").then_some(dir)
}

/// Our own cgroup in the v1 memory hierarchy.
fn v1_parent(cgroups: &str, mounts: &str) -> Option<PathBuf> {
    let path = cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers.split(',').any(|c| c == "memory").then_some(path)
    })?;
    let is_memory = |fstype: &str, options: &str| fstype == "cgroup" && options.split(',').any(|o| o == "memory");
    let dir = mounted_path(mounts, is_memory, path)?;
    probe(&dir, "memory.limit_in_bytes").then_some(dir)
}

/// Where cgroup `path` is in the file system, from /proc/self/mountinfo
/// (`id parent dev root mountpoint options ... - fstype source superoptions`).
fn mounted_path(mounts: &str, wanted: impl Fn(&str, &str) -> bool, path: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        let (root, mount_point) = (*left.get(3)?, *left.get(4)?);
        let (fstype, options) = (*right.first()?, right.get(2).copied().unwrap_or(""));
        if !wanted(fstype, options) {
            return None;
        }
        // The mount may show only a subtree (root other than "/"); our path
        // must then lie inside it.
        let relative = if root == "/" { path } else { path.strip_prefix(root)? };
        let dir = Path::new(mount_point).join(relative.trim_start_matches('/'));
        dir.is_dir().then_some(dir)
    })
}

/// Whether we can create a child cgroup under `dir` that has `file`.
fn probe(dir: &Path, file: &str) -> bool {
    let child = dir.join(format!("switchyard-probe-{}", std::process::id()));
    if fs::create_dir(&child).is_err() {
        return false;
    }
    let usable = child.join(file).exists();
    let _ = fs::remove_dir(&child);
    usable
}

/// How one instance's memory is held.
pub(crate) enum Limit {
    Cgroup(Cgroup),
    Rlimit(u64),
    None,
}

impl Limit {
    /// Prepares the limit for a new instance. A cgroup that cannot be set up
    /// falls back to the rlimit: an instance with a weaker limit beats no
    /// instance.
    pub(crate) fn prepare(instance: &str, memory_mb: u64) -> Limit {
        if memory_mb == 0 {
            return Limit::None;
        }
        let bytes = memory_mb.saturating_mul(1024 * 1024);
        let result = match enforcement() {
            Enforcement::CgroupV2 { parent } => Cgroup::create(parent, instance, bytes, true),
            Enforcement::CgroupV1 { parent } => Cgroup::create(parent, instance, bytes, false),
            Enforcement::Rlimit => return Limit::Rlimit(bytes.saturating_add(RLIMIT_THREAD_ALLOWANCE)),
        };
        match result {
            Ok(cgroup) => Limit::Cgroup(cgroup),
            Err(error) => {
                tracing::warn!(instance, %error, "cannot create the instance's cgroup; using RLIMIT_DATA");
                Limit::Rlimit(bytes.saturating_add(RLIMIT_THREAD_ALLOWANCE))
            }
        }
    }

    /// What the child does between fork and exec: join the cgroup or set the
    /// rlimit. Only async-signal-safe calls: the child of a threaded process
    /// may not allocate or take locks.
    pub(crate) fn pre_exec(&self) -> impl Fn() -> io::Result<()> + Send + Sync + 'static {
        let procs_fd = match self {
            Limit::Cgroup(cgroup) => cgroup.procs.as_ref().map(|f| f.as_raw_fd()),
            _ => None,
        };
        let rlimit = match self {
            Limit::Rlimit(bytes) => Some(*bytes),
            _ => None,
        };
        move || {
            if let Some(fd) = procs_fd {
                // "0" moves the writing process: the child itself, before it
                // runs anything of the function.
                // SAFETY: write(2) on an fd the parent opened and keeps open
                // until spawn returns.
                if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(bytes) = rlimit {
                let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
                // SAFETY: setrlimit(2) is async-signal-safe.
                if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        }
    }

    /// Closes what only the spawn needed.
    pub(crate) fn spawned(&mut self) {
        if let Limit::Cgroup(cgroup) = self {
            cgroup.procs = None;
        }
    }
}

/// One instance's cgroup. The instance's exit watcher removes it; dropping
/// it removes it too, for the paths where that watcher never finishes (the
/// Tokio runtime shutting down).
pub(crate) struct Cgroup {
    dir: PathBuf,
    v2: bool,
    procs: Option<File>,
    removed: AtomicBool,
}

impl Cgroup {
    fn create(parent: &Path, instance: &str, bytes: u64, v2: bool) -> io::Result<Cgroup> {
        let dir = parent.join(format!("switchyard-lambda-{instance}"));
        fs::create_dir(&dir)?;
        // From here on, dropping removes the directory.
        let mut cgroup = Cgroup { dir, v2, procs: None, removed: AtomicBool::new(false) };
        if v2 {
            cgroup.write("memory.max", &bytes.to_string())?;
            // Lambda has no swap: an instance over its size is killed, not
            // slowed down. The whole cgroup goes, like a Lambda sandbox.
            cgroup.write("memory.swap.max", "0").ok();
            cgroup.write("memory.oom.group", "1").ok();
        } else {
            cgroup.write("memory.limit_in_bytes", &bytes.to_string())?;
            // Only with swap accounting; must not be below the memory limit.
            cgroup.write("memory.memsw.limit_in_bytes", &bytes.to_string()).ok();
        }
        cgroup.procs = Some(fs::OpenOptions::new().write(true).open(cgroup.dir.join("cgroup.procs"))?);
        Ok(cgroup)
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        fs::OpenOptions::new().write(true).open(self.dir.join(file))?.write_all(value.as_bytes())
    }

    fn read(&self, file: &str) -> Option<String> {
        fs::read_to_string(self.dir.join(file)).ok()
    }

    /// The most memory the instance has used, in bytes.
    pub(crate) fn peak_bytes(&self) -> Option<u64> {
        let file = if self.v2 { "memory.peak" } else { "memory.max_usage_in_bytes" };
        self.read(file)?.trim().parse().ok()
    }

    /// Whether the kernel killed a process here for going over the limit.
    pub(crate) fn oom_killed(&self) -> bool {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        self.read(file).is_some_and(|text| {
            text.lines()
                .any(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0) > 0)
        })
    }

    /// Kills every process in the cgroup, wherever it moved in its process
    /// tree.
    pub(crate) fn kill_all(&self) {
        if self.v2 && self.write("cgroup.kill", "1").is_ok() {
            return;
        }
        for pid in self.read("cgroup.procs").unwrap_or_default().lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: plain kill(2); the pid is a member of our instance's
            // cgroup, which only the instance's processes join.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Kills what is left in the cgroup and removes it once its processes
    /// are gone (they leave it as they exit, a moment after SIGKILL). Blocks
    /// for up to half a second: call it off the async threads.
    pub(crate) fn remove(&self) -> io::Result<()> {
        if self.removed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => {
                    self.removed.store(true, Ordering::Release);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.removed.store(true, Ordering::Release);
                    return Ok(());
                }
                Err(e) if attempt >= 50 => return Err(e),
                Err(_) => {
                    self.kill_all();
                    std::thread::sleep(Duration::from_millis(10));
                    attempt += 1;
                }
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(error) = self.remove() {
            tracing::warn!(cgroup = %self.dir.display(), %error, "cannot remove an instance's cgroup");
        }
    }
}

/// The peak resident size of one process, where no cgroup measures it.
pub(crate) fn process_peak_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup_mounts() {
        let tmp = std::env::temp_dir();
        let tmp = tmp.to_str().expect("utf-8 temp dir");
        let mounts = format!(
            "30 25 0:26 / {tmp} rw,nosuid shared:4 - cgroup cgroup rw,memory\n\
             31 25 0:27 / /nonexistent rw shared:5 - cgroup2 cgroup2 rw\n"
        );
        assert_eq!(mounted_path(&mounts, |t, o| t == "cgroup" && o.contains("memory"), "/"), Some(PathBuf::from(tmp)));
        assert_eq!(mounted_path(&mounts, |t, _| t == "cgroup2", "/"), None, "mount point missing");
        let subtree = format!("30 25 0:26 /docker/x {tmp} rw - cgroup cgroup rw,memory\n");
        assert_eq!(mounted_path(&subtree, |t, _| t == "cgroup", "/docker/x"), Some(PathBuf::from(tmp)));
        assert_eq!(mounted_path(&subtree, |t, _| t == "cgroup", "/elsewhere"), None);
    }

    #[test]
    fn reads_own_peak_rss() {
        assert!(process_peak_bytes(std::process::id()).is_some_and(|b| b > 0));
    }
}
