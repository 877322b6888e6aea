//! A listening process replaced without a moment when nobody answers its
//! port: the API server, whose restart for a renewed or rotated client
//! certificate would otherwise refuse every call for seconds (a
//! single-node cluster has one).
//!
//! The process runs with `SO_REUSEPORT` on its port (the API server's
//! `--permit-port-sharing`), so a second instance can listen on the same
//! port beside it. The kernel then picks, for each new connection, one
//! socket of the port's group; a classic BPF program attached to the group
//! makes the pick ([`crate::sys::attach_reuseport_filter`]):
//!
//! 1. before the newcomer starts, [`Route::Ipv6ToNewcomer`]: the group's
//!    second socket (the newcomer's, once it listens) gets the IPv6
//!    connections and the incumbent everything else. Every client of the
//!    cluster calls over IPv4 (`127.0.0.1`, the node's address behind the
//!    `kubernetes` Service), so they all stay with the incumbent while the
//!    newcomer starts; the newcomer's calls to itself go to `[::1]` (the API
//!    server's loopback client, on a dual-stack listener) and reach it, and
//!    so does the manager's readiness probe, sent to `[::1]` too. A
//!    newcomer that got its clients' calls before it is ready would answer
//!    403 (its authorizer has not loaded the roles) or 503;
//! 2. once the newcomer answers ready, [`Route::AllToNewcomer`];
//! 3. a second later, the incumbent is stopped: a connection it accepted
//!    just before the switch has sent its request by then, which the stop
//!    drains (a request read once the stop began is refused with 503). A
//!    connection it had not accepted when its listener closed is moved to
//!    the newcomer by the kernel where `net.ipv4.tcp_migrate_req` is 1 (the
//!    preflight sets it), instead of being reset.
//!
//! The program is attached through a copy of the incumbent's listening
//! socket (pidfd_getfd(2)), closed before the incumbent stops: a copy kept
//! open would keep a listener nobody accepts on in the group.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::sys::{self, FilterInsn};

/// Which socket of the port's group gets a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// IPv6 connections to the newcomer (the group's second socket),
    /// everything else to the incumbent (the first).
    Ipv6ToNewcomer,
    /// Every connection to the newcomer.
    AllToNewcomer,
}

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> FilterInsn {
    FilterInsn { code, jt, jf, k }
}

/// The program of `route`: it returns the index of the socket that gets the
/// connection, in the order the group's sockets started listening.
pub fn program(route: Route) -> Vec<FilterInsn> {
    const INCUMBENT: u32 = 0;
    const NEWCOMER: u32 = 1;
    match route {
        // The IP version is the high nibble of the network header's first
        // byte, read at the kernel's network-header offset (SKF_NET_OFF).
        Route::Ipv6ToNewcomer => vec![
            insn(BPF_LD_B_ABS, 0, 0, libc::SKF_NET_OFF as u32),
            insn(BPF_ALU_AND_K, 0, 0, 0xf0),
            insn(BPF_JMP_JEQ_K, 0, 1, 0x60),
            insn(BPF_RET_K, 0, 0, NEWCOMER),
            insn(BPF_RET_K, 0, 0, INCUMBENT),
        ],
        Route::AllToNewcomer => vec![insn(BPF_RET_K, 0, 0, NEWCOMER)],
    }
}

/// The steering of one port's group, through a copy of the incumbent's
/// listening socket. Dropping it closes the copy; the last program stays.
pub struct Steering {
    socket: OwnedFd,
}

impl Steering {
    /// The group of the socket process `pid` listens with on TCP `port`. An
    /// error says why a handover cannot be made (the caller restarts the
    /// process instead): no such socket, no `SO_REUSEPORT`, or an IPv4-only
    /// listener (its own loopback calls would not be told apart).
    pub fn of(pid: u32, port: u16) -> Result<Steering, String> {
        let fd = crate::procnet::listener_fd(Path::new("/proc"), pid, port)
            .ok_or_else(|| format!("process {pid} does not listen on port {port}"))?;
        let socket = sys::fd_of_process(pid, fd)
            .map_err(|e| format!("cannot reach the socket of process {pid}: {e}"))?;
        let (shared, family) = sys::socket_reuseport_and_family(socket.as_fd())
            .map_err(|e| format!("cannot read the socket of process {pid}: {e}"))?;
        if !shared {
            return Err(format!(
                "process {pid} listens on {port} without SO_REUSEPORT"
            ));
        }
        if family != libc::AF_INET6 {
            return Err(format!("process {pid} listens on {port} over IPv4 only"));
        }
        Ok(Steering { socket })
    }

    /// Sends the group's new connections as `route` says.
    pub fn route(&self, route: Route) -> std::io::Result<()> {
        sys::attach_reuseport_filter(self.socket.as_fd(), &program(route))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    fn shared_listener(port: u16) -> TcpListener {
        let socket = TcpSocket::new_v6().unwrap();
        socket.set_reuseport(true).unwrap();
        socket
            .bind(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))
            .unwrap();
        socket.listen(16).unwrap()
    }

    /// Which of the two listeners accepts a connection to `to`.
    async fn who_accepts(to: &str, first: &TcpListener, second: &TcpListener) -> &'static str {
        let _client = TcpStream::connect(to).await.unwrap();
        tokio::select! {
            _ = first.accept() => "incumbent",
            _ = second.accept() => "newcomer",
            _ = tokio::time::sleep(Duration::from_secs(2)) => "nobody",
        }
    }

    /// The kernel runs the programs as meant: real sockets of this process,
    /// a real group, a real attach (no privilege is needed).
    #[tokio::test]
    async fn the_programs_steer_a_real_reuseport_group() {
        let incumbent = shared_listener(0);
        let port = incumbent.local_addr().unwrap().port();
        let steering = Steering::of(std::process::id(), port).unwrap();
        steering.route(Route::Ipv6ToNewcomer).unwrap();
        let newcomer = shared_listener(port);
        let v4 = format!("127.0.0.1:{port}");
        let v6 = format!("[::1]:{port}");
        for _ in 0..8 {
            assert_eq!(who_accepts(&v4, &incumbent, &newcomer).await, "incumbent");
            assert_eq!(who_accepts(&v6, &incumbent, &newcomer).await, "newcomer");
        }
        steering.route(Route::AllToNewcomer).unwrap();
        drop(steering);
        for to in [&v4, &v6, &v4, &v6] {
            assert_eq!(who_accepts(to, &incumbent, &newcomer).await, "newcomer");
        }
        // The incumbent gone, the newcomer alone gets everything (the
        // program's index is past the end: the kernel's choice).
        drop(incumbent);
        for to in [&v4, &v6] {
            let _client = TcpStream::connect(to.as_str()).await.unwrap();
            tokio::time::timeout(Duration::from_secs(2), newcomer.accept())
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[test]
    fn a_listener_without_reuseport_cannot_be_handed_over() {
        let plain = std::net::TcpListener::bind("[::]:0").unwrap();
        let port = plain.local_addr().unwrap().port();
        let err = Steering::of(std::process::id(), port).err().unwrap();
        assert!(err.contains("without SO_REUSEPORT"), "{err}");
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        assert!(Steering::of(std::process::id(), port).is_err());
        assert!(Steering::of(std::process::id(), 1).is_err());
    }
}
