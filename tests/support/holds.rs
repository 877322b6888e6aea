//! Holding an enable in one of its phases from outside, so that what a test
//! does "in phase X" (a `kill -9`, a cancel) lands in X every time, however
//! short X is, with nothing in the manager made for tests:
//! - a component stopped (SIGSTOP) answers no probe: the phase that waits
//!   for it waits ([`Stopped`]);
//! - the user's kubeconfig locked as kubectl locks it: the export waits for
//!   the lock ([`KubectlLock`]);
//! - the opening of a file held: the phase that opens it waits in open(2)
//!   until the hold lets it go ([`OpenHold`], fanotify's permission events).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The pid of the process of `component` (as its marker names it) of the
/// cluster of `state`, if one runs: the component itself, not one of its
/// children (kube-proxy's iptables, the kubelet's mounts), which inherit its
/// marker.
pub fn component_pid(state: &Path, component: &str) -> Option<u32> {
    let instance = format!("K8S_MANAGER_INSTANCE={}", state.display());
    let name = format!("K8S_MANAGER_COMPONENT={component}");
    let marked = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
            let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
            vars.contains(&instance.as_bytes()) && vars.contains(&name.as_bytes())
        })
    };
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if marked(pid) && alive(pid) && !parent_of(pid).is_some_and(marked) {
            return Some(pid);
        }
    }
    None
}

/// The parent of `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `pid` runs: until the last of its threads has exited. A process
/// killed with SIGKILL shows its leader as a zombie at once while its other
/// threads may still be leaving (one in a disk write, under load, for a
/// while): it is not gone yet, and the manager's `status` (which reads the
/// same /proc) still counts it as running. So a zombie counts as gone only
/// with no thread but its leader left.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, s)| s.starts_with(" Z"));
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    !(zombie && threads <= 1)
}

pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a process this test started or its cluster's.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// A process stopped by SIGSTOP, continued (SIGCONT) when dropped.
pub struct Stopped {
    pub pid: u32,
    pub component: String,
}

impl Stopped {
    /// Stops `component` of the cluster of `state` the moment it runs (it
    /// is looked for every millisecond); None if `give_up` says so first.
    pub fn when_started(
        state: &Path,
        component: &str,
        mut give_up: impl FnMut() -> bool,
    ) -> Option<Stopped> {
        loop {
            if let Some(pid) = component_pid(state, component) {
                signal(pid, libc::SIGSTOP);
                return Some(Stopped {
                    pid,
                    component: component.to_string(),
                });
            }
            if give_up() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.pid, libc::SIGCONT);
    }
}

/// `<file>.lock` taken as kubectl takes it (created empty, exclusively): a
/// merge waits for it. Removed when dropped.
pub struct KubectlLock(PathBuf);

impl KubectlLock {
    pub fn take(file: &Path) -> KubectlLock {
        let mut name = file.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
            .unwrap_or_else(|err| panic!("{}: {err}", lock.display()));
        KubectlLock(lock)
    }
}

impl Drop for KubectlLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An open(2) held by an [`OpenHold`]: which process, which file.
#[derive(Debug)]
pub struct HeldOpen {
    pub pid: u32,
    pub path: PathBuf,
    /// The event's descriptor: the open goes on once it is answered.
    fd: RawFd,
}

/// Where an [`OpenHold`] looks.
pub enum Watch<'a> {
    /// Every file opened through the mount at this path.
    Mount(&'a Path),
    /// The files of this folder (not of its subfolders).
    Children(&'a Path),
    /// This executable, when a process executes it.
    Exec(&'a Path),
}

/// Holds the opening of files: each open(2) of a watched file by a process
/// that `hold` picks waits, inside the kernel, until the test lets it go
/// ([`OpenHold::let_go`], or the hold dropped); every other open is let
/// through at once. The test sees each held open, in order, and none goes
/// on unseen: a process all of whose opens are held stands still at the
/// first one until the test has looked and decided.
///
/// fanotify's permission events: every open of a watched file waits for
/// this process's answer, so what is watched is kept small (a mount of the
/// test's own, a folder, a file).
pub struct OpenHold {
    group: Arc<OwnedFd>,
    held: mpsc::Receiver<HeldOpen>,
    waiting: Arc<Mutex<Vec<RawFd>>>,
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
}

impl OpenHold {
    /// Watches `watches`; `hold(pid, path)` picks the opens to hold. It runs
    /// on the listener's thread, which answers every open: it must not open
    /// a watched file itself.
    pub fn new(
        watches: &[Watch<'_>],
        hold: impl Fn(u32, &Path) -> bool + Send + 'static,
    ) -> OpenHold {
        // SAFETY: fanotify_init(2) with constant flags; the result is checked.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                libc::O_RDONLY as libc::c_uint,
            )
        };
        assert!(
            fd >= 0,
            "fanotify_init: {} (needs root and a kernel with fanotify permission events)",
            std::io::Error::last_os_error()
        );
        // SAFETY: a descriptor just returned to us, owned from here on.
        let group = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        for watch in watches {
            let (flags, mask, path) = match watch {
                Watch::Mount(path) => (libc::FAN_MARK_MOUNT, libc::FAN_OPEN_PERM, path),
                Watch::Children(path) => (0, libc::FAN_OPEN_PERM | libc::FAN_EVENT_ON_CHILD, path),
                Watch::Exec(path) => (0, libc::FAN_OPEN_EXEC_PERM, path),
            };
            let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid group descriptor and a NUL-terminated path.
            let marked = unsafe {
                libc::fanotify_mark(
                    fd,
                    libc::FAN_MARK_ADD | flags,
                    mask,
                    libc::AT_FDCWD,
                    c_path.as_ptr(),
                )
            };
            assert_eq!(
                marked,
                0,
                "fanotify_mark {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        let (tell, held) = mpsc::channel();
        let waiting = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let listener = std::thread::spawn({
            let (group, waiting, stop) = (group.clone(), waiting.clone(), stop.clone());
            move || listen(&group, &hold, &tell, &waiting, &stop)
        });
        OpenHold {
            group,
            held,
            waiting,
            stop,
            listener: Some(listener),
        }
    }

    /// The next open held, in the order they came, waiting at most `limit`.
    pub fn next_held(&self, limit: Duration) -> Option<HeldOpen> {
        self.held.recv_timeout(limit).ok()
    }

    /// Lets `open` go on.
    pub fn let_go(&self, open: HeldOpen) {
        self.waiting.lock().unwrap().retain(|fd| *fd != open.fd);
        answer(&self.group, open.fd);
    }
}

impl Drop for OpenHold {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
        for fd in self.waiting.lock().unwrap().drain(..) {
            answer(&self.group, fd);
        }
        // Closing the group lets any open still waiting go on.
    }
}

/// Allows the open of event `fd`, and closes `fd`.
fn answer(group: &OwnedFd, fd: RawFd) {
    let response = libc::fanotify_response {
        fd,
        response: libc::FAN_ALLOW,
    };
    // SAFETY: writes one response struct to the group; `fd` is the event's
    // descriptor, ours to close. An answer for a process that died since is
    // refused (ENOENT), which is fine.
    unsafe {
        libc::write(
            group.as_raw_fd(),
            (&response as *const libc::fanotify_response).cast(),
            std::mem::size_of::<libc::fanotify_response>(),
        );
        libc::close(fd);
    }
}

fn listen(
    group: &OwnedFd,
    hold: &dyn Fn(u32, &Path) -> bool,
    tell: &mpsc::Sender<HeldOpen>,
    waiting: &Mutex<Vec<RawFd>>,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let size = std::mem::size_of::<libc::fanotify_event_metadata>();
    while !stop.load(Ordering::SeqCst) {
        let mut poll = libc::pollfd {
            fd: group.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, 20) } <= 0 {
            continue;
        }
        // SAFETY: reads into a buffer of the given length.
        let n = unsafe { libc::read(group.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let mut at = 0;
        while at + size <= n as usize {
            // SAFETY: the kernel wrote whole event structs; read unaligned.
            let event: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            at += event.event_len as usize;
            if event.fd < 0 {
                continue;
            }
            let path =
                std::fs::read_link(format!("/proc/self/fd/{}", event.fd)).unwrap_or_default();
            let pid = event.pid as u32;
            if hold(pid, &path) {
                waiting.lock().unwrap().push(event.fd);
                let _ = tell.send(HeldOpen {
                    pid,
                    path,
                    fd: event.fd,
                });
            } else {
                answer(group, event.fd);
            }
        }
    }
}

/// A process frozen (the cgroup v1 freezer) until dropped. Unlike one
/// stopped by SIGSTOP, a frozen process is not stopped as job control
/// means it: when its parent dies, the kernel does not send its orphaned
/// process group SIGHUP (which ends a stopped API server).
pub struct Frozen {
    pid: u32,
    cgroup: PathBuf,
}

impl Frozen {
    pub fn new(pid: u32) -> Frozen {
        let cgroup = PathBuf::from(format!(
            "/sys/fs/cgroup/freezer/k8sm-test-{}-{pid}",
            std::process::id()
        ));
        std::fs::create_dir(&cgroup)
            .unwrap_or_else(|e| panic!("{}: {e} (needs the cgroup v1 freezer)", cgroup.display()));
        let frozen = Frozen { pid, cgroup };
        std::fs::write(frozen.cgroup.join("cgroup.procs"), pid.to_string()).unwrap();
        std::fs::write(frozen.cgroup.join("freezer.state"), "FROZEN").unwrap();
        let done = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(frozen.cgroup.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN")
        });
        assert!(done, "{pid} not frozen within 10 s");
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::fs::write(self.cgroup.join("freezer.state"), "THAWED");
        let _ = std::fs::write("/sys/fs/cgroup/freezer/cgroup.procs", self.pid.to_string());
        wait_for(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.cgroup).is_ok()
        });
    }
}

/// Whether `pid` is a k8s-manager daemon of the state folder `state`.
pub fn is_daemon_of(pid: u32, state: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&&b"daemon"[..])
        && args
            .windows(2)
            .any(|w| w[0] == b"--state-dir" && w[1] == state.as_os_str().as_encoded_bytes())
}

/// Waits until `done`, polling every millisecond, at most `limit`.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}
