//! Who holds a port: the socket in `/proc/net/{tcp,tcp6,udp,udp6}` bound
//! there (its inode), then the process with that socket among its open
//! files (`/proc/<pid>/fd`), named by its `comm`. What `ss -p` does, in the
//! few lines a Warning Event needs. Best effort: a socket of another
//! network namespace, or a process whose fds we cannot read, leaves the
//! holder unnamed.

use std::net::IpAddr;
use std::path::Path;

use crate::procnet::{SocketLine, TCP_LISTEN, UDP_UNCONNECTED, parse_table};

use super::plan::{Holder, PortKey, Protocol};

/// The inodes of the sockets that keep `key` on `address` from being bound:
/// listening (TCP) or bound (UDP) on that port, at that address or at every
/// address (or any address, when ours is every address).
pub fn blocking_inodes(sockets: &[SocketLine], key: &PortKey, address: IpAddr) -> Vec<u64> {
    let state = match key.protocol {
        Protocol::Tcp => TCP_LISTEN,
        Protocol::Udp => UDP_UNCONNECTED,
    };
    let overlaps = |ip: IpAddr| {
        ip == address
            || ip.is_unspecified()
            || address.is_unspecified()
            || ip.to_canonical() == address.to_canonical()
    };
    sockets
        .iter()
        .filter(|s| s.state == state && s.local.port() == key.port && s.inode != 0)
        .filter(|s| overlaps(s.local.ip()))
        .map(|s| s.inode)
        .collect()
}

/// The process holding `key` on `address`, looked up under `proc` (`/proc`).
pub fn find(proc: &Path, key: &PortKey, address: IpAddr) -> Option<Holder> {
    let tables: &[&str] = match key.protocol {
        Protocol::Tcp => &["net/tcp", "net/tcp6"],
        Protocol::Udp => &["net/udp", "net/udp6"],
    };
    let mut sockets = Vec::new();
    for table in tables {
        if let Ok(text) = std::fs::read_to_string(proc.join(table)) {
            sockets.extend(parse_table(&text));
        }
    }
    let inodes = blocking_inodes(&sockets, key, address);
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if crate::procnet::fd_of(proc, pid, &inodes).is_some() {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(Holder {
                pid,
                comm: comm.trim().to_string(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0
";

    fn tcp(port: u16) -> PortKey {
        PortKey {
            protocol: Protocol::Tcp,
            port,
        }
    }

    #[test]
    fn parses_v4_and_v6_lines() {
        let v4 = parse_table(TCP);
        assert_eq!(v4.len(), 3);
        assert_eq!(v4[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((v4[0].state, v4[0].inode), (TCP_LISTEN, 4242));
        assert_eq!(v4[1].local, "0.0.0.0:80".parse().unwrap());
        let v6 = parse_table(TCP6);
        assert_eq!(v6[0].local, "[::1]:8082".parse().unwrap());
        assert!(parse_table("header\ngarbage line\n").is_empty());
    }

    #[test]
    fn blocking_sockets_listen_on_the_port_at_the_address_or_everywhere() {
        let lines = parse_table(TCP);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(blocking_inodes(&lines, &tcp(8080), lo), [4242]);
        // 0.0.0.0:80 blocks 127.0.0.1:80.
        assert_eq!(blocking_inodes(&lines, &tcp(80), lo), [777]);
        // An established connection's local port does not.
        assert!(blocking_inodes(&lines, &tcp(8081), lo).is_empty());
        // Nor a listener on another address, nor UDP.
        assert!(blocking_inodes(&lines, &tcp(8080), "10.0.0.1".parse().unwrap()).is_empty());
        let udp = PortKey {
            protocol: Protocol::Udp,
            port: 8080,
        };
        assert!(blocking_inodes(&lines, &udp, lo).is_empty());
    }

    #[test]
    fn finds_this_very_process_holding_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lo = "127.0.0.1".parse().unwrap();
        let holder = find(Path::new("/proc"), &tcp(port), lo).expect("found");
        assert_eq!(holder.pid, std::process::id());
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let key = PortKey {
            protocol: Protocol::Udp,
            port: udp.local_addr().unwrap().port(),
        };
        assert_eq!(
            find(Path::new("/proc"), &key, lo).unwrap().pid,
            std::process::id()
        );
    }
}
