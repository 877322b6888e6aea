//! The host, through the C library: every `unsafe` block and raw `libc`
//! call of the manager lives here, behind safe functions (youki's `Syscall`
//! idea, as one small module). The rest of the crate asks these questions
//! and never touches a pointer.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a process still runs. A zombie whose threads have all exited
/// counts as gone; a zombie leader with live threads does not (its other
/// threads still hold its sockets, e.g. a listening port). Pid 0 is none.
pub fn process_alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists() && !fully_exited(pid)
}

fn fully_exited(pid: u32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    zombie && threads <= 1
}

/// Sends `signal` to one process. Pid 0 and pids past `i32::MAX` (which
/// kill(2) reads as process groups) are never signalled.
pub fn signal(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 0 {
        return;
    }
    // SAFETY: plain kill(2) of one process; a pid that is gone is no harm.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Sends `signal` to the process group led by `leader` (a child started
/// with `process_group(0)`).
pub fn signal_group(leader: u32, signal: i32) {
    let Ok(pid) = i32::try_from(leader) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals that process group.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Makes the child of `cmd` start a new session: no controlling terminal,
/// so that it outlives the command and the terminal that started it.
pub fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe and runs in the forked child
    // before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Keeps descriptor `fd` open across the child's `exec` (clears its
/// close-on-exec flag in the child only).
pub fn keep_open_across_exec(cmd: &mut Command, fd: RawFd) {
    // SAFETY: runs in the forked child before exec; fcntl is
    // async-signal-safe and touches only the child's descriptor table.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes the child of `cmd` join the cgroups whose `cgroup.procs` files
/// are `procs` before it runs anything: whatever it starts is in them too.
/// A cgroup it cannot join fails its start.
pub fn join_cgroups_at_exec(cmd: &mut Command, procs: &[std::path::PathBuf]) -> io::Result<()> {
    let files = procs
        .iter()
        .map(|p| {
            std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a cgroup path")
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    // SAFETY: runs in the forked child before exec; open, write and close
    // are async-signal-safe, and the paths were made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for file in &files {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // "0": the writing process itself.
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(err);
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Detaches the mount at `path` (`umount2(MNT_DETACH)`).
pub fn unmount_detached(path: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a mount path"))?;
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The IPv4 address of network interface `name`, if it has one.
pub fn interface_ipv4(name: &str) -> Option<IpAddr> {
    // SAFETY: getifaddrs fills a linked list we free with freeifaddrs; we only
    // read entries while the list is alive.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = list;
        while !cur.is_null() {
            let entry = &*cur;
            if !entry.ifa_addr.is_null() && i32::from((*entry.ifa_addr).sa_family) == libc::AF_INET
            {
                let entry_name = CStr::from_ptr(entry.ifa_name).to_string_lossy();
                if entry_name == name {
                    let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    found = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                    break;
                }
            }
            cur = entry.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

/// Raises this process's soft limit of open files to its hard limit, and
/// returns it. Children started afterwards inherit it.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// The time now, as Kubernetes writes it (RFC 3339, UTC).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a current UTC time always formats as RFC 3339")
}

/// A pipe whose ends never block, for [`splice`]; its buffer grown to
/// `size` bytes where the kernel allows (else it keeps its 64 KiB).
pub fn splice_pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made, and nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_SETPIPE_SZ on a pipe this function owns; a refusal leaves
    // the default size, which only costs more calls.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    Ok((read, write))
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel (splice(2),
/// one of them a pipe), without waiting: `Ok(0)` is the end of `from`,
/// `WouldBlock` that nothing can move now.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so open; null offsets, as a
    // pipe and a socket have none.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Ends the sending side of a socket (the peer reads its end), leaving
/// its receiving side open.
pub fn shutdown_write(socket: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown on a borrowed, so open, descriptor.
    if unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_WR) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One instruction of a classic BPF program (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic; the libc crate lists it for
/// Android only).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// A copy of descriptor `fd` of process `pid` (pidfd_getfd(2), Linux 5.6;
/// it needs the right to ptrace `pid`, which root has). The copy refers to
/// the same open file: a socket stays open while either is.
pub fn fd_of_process(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd with an open pidfd, a descriptor number and no
    // flags; it returns a new descriptor (close-on-exec) or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

/// A descriptor of ours, registered with the async runtime to be awaited
/// readable (or writable): a listening socket taken from another process.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` is open, owned by the `AsyncFd` from here on,
    // and its `as_raw_fd` is the same number for its whole life.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Whether `socket` has `SO_REUSEPORT` set, and its address family
/// (`libc::AF_INET`, `libc::AF_INET6`).
pub fn socket_reuseport_and_family(socket: BorrowedFd<'_>) -> io::Result<(bool, i32)> {
    let reuse = socket_option(socket, libc::SO_REUSEPORT)?;
    Ok((reuse != 0, socket_option(socket, libc::SO_DOMAIN)?))
}

/// An integer socket option of level `SOL_SOCKET`.
fn socket_option(socket: BorrowedFd<'_>, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, an int.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Attaches a classic BPF program to the `SO_REUSEPORT` group of `socket`:
/// for each new connection it returns the index, in the order they started
/// listening, of the group's socket that gets it (an index past the end
/// leaves the choice to the kernel's hash). It replaces the group's
/// program, and stays with the group after `socket` is closed.
pub fn attach_reuseport_filter(socket: BorrowedFd<'_>, program: &[FilterInsn]) -> io::Result<()> {
    let mut insns: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(insns.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program too long"))?,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: the kernel copies the program from `prog`, which points into
    // `insns`, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_alive_and_gone() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX - 3));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // A zombie (exited, not yet reaped) counts as gone.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!process_alive(pid));
        child.wait().unwrap();
    }

    #[test]
    fn no_signal_reaches_a_process_group_by_mistake() {
        // Would be kill(0) / kill(-1): every process of the group / the user.
        signal(0, libc::SIGTERM);
        signal(u32::MAX, libc::SIGTERM);
        signal_group(0, libc::SIGTERM);
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn the_loopback_has_its_address() {
        assert_eq!(interface_ipv4("lo"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(interface_ipv4("no-such-interface"), None);
    }
}
