//! The sockets of the host, as `/proc/net/{tcp,tcp6,udp,udp6}` list them,
//! and the open files of a process that are such sockets: what `ss -p`
//! reads. Used to name the holder of a port (the load-balancer's Warning
//! Events) and to find a process's listening socket (the API server's
//! handover, [`crate::supervisor::handover`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// `TCP_LISTEN` in `/proc/net/tcp`'s `st` column.
pub const TCP_LISTEN: u8 = 0x0A;
/// An unconnected UDP socket shows `TCP_CLOSE`.
pub const UDP_UNCONNECTED: u8 = 0x07;
/// `TCP_ESTABLISHED`.
pub const TCP_ESTABLISHED: u8 = 0x01;

/// One line of a `/proc/net` socket table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketLine {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// The sockets of one table (the header line and any unreadable line are
/// skipped).
pub fn parse_table(text: &str) -> Vec<SocketLine> {
    text.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<SocketLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let address = |field: &str| -> Option<SocketAddr> {
        let (addr, port) = field.split_once(':')?;
        Some(SocketAddr::new(
            parse_addr(addr)?,
            u16::from_str_radix(port, 16).ok()?,
        ))
    };
    let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    Some(SocketLine {
        local: address(fields.get(1)?)?,
        remote: address(fields.get(2)?)?,
        state,
        inode,
    })
}

/// The kernel prints each 32-bit word of the address as a native-endian
/// number: its bytes in memory are the address in network order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let s = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(s, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Every TCP socket of this network namespace, IPv4 and IPv6, read under
/// `proc`. Each read walks the kernel's whole connection hash (milliseconds
/// on a machine with much memory): read once, filter as needed.
pub fn tcp_sockets(proc: &Path) -> Vec<SocketLine> {
    ["net/tcp", "net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(proc.join(table)).ok())
        .flat_map(|text| parse_table(&text))
        .collect()
}

/// The TCP sockets listening on `port` (any address), read under `proc`.
pub fn tcp_listening(proc: &Path, port: u16) -> Vec<SocketLine> {
    tcp_sockets(proc)
        .into_iter()
        .filter(|s| s.state == TCP_LISTEN && s.local.port() == port && s.inode != 0)
        .collect()
}

/// The sockets process `pid` holds open: each descriptor number with the
/// socket's inode, read under `proc`.
fn sockets_of(proc: &Path, pid: u32) -> Vec<(i32, u64)> {
    let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let number = fd.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(fd.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((number, inode))
        })
        .collect()
}

/// The socket inodes process `pid` holds open, read under `proc`.
pub fn socket_inodes(proc: &Path, pid: u32) -> Vec<u64> {
    sockets_of(proc, pid)
        .into_iter()
        .map(|(_, inode)| inode)
        .collect()
}

/// The descriptor number under which process `pid` holds one of the sockets
/// `inodes`, read under `proc`.
pub fn fd_of(proc: &Path, pid: u32, inodes: &[u64]) -> Option<i32> {
    sockets_of(proc, pid)
        .into_iter()
        .find(|(_, inode)| inodes.contains(inode))
        .map(|(fd, _)| fd)
}

/// The descriptor of the socket process `pid` listens with on TCP `port`.
pub fn listener_fd(proc: &Path, pid: u32, port: u16) -> Option<i32> {
    let inodes: Vec<u64> = tcp_listening(proc, port).iter().map(|s| s.inode).collect();
    fd_of(proc, pid, &inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_ends_of_a_connection_and_who_holds_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_served, _) = listener.accept().unwrap();
        let clients: Vec<SocketLine> = tcp_sockets(Path::new("/proc"))
            .into_iter()
            .filter(|s| s.state == TCP_ESTABLISHED && s.remote.port() == port)
            .collect();
        assert_eq!(clients.len(), 1, "{clients:?}");
        assert_eq!(clients[0].local, client.local_addr().unwrap());
        assert_eq!(clients[0].remote.port(), port);
        let ours = socket_inodes(Path::new("/proc"), std::process::id());
        assert!(ours.contains(&clients[0].inode));
        drop(client);
    }

    #[test]
    fn finds_this_process_listening_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fd = listener_fd(Path::new("/proc"), std::process::id(), port);
        assert_eq!(fd, Some(std::os::fd::AsRawFd::as_raw_fd(&listener)));
        // A port nobody listens on, and a process that does not hold it.
        drop(listener);
        assert_eq!(
            listener_fd(Path::new("/proc"), std::process::id(), port),
            None
        );
    }
}
