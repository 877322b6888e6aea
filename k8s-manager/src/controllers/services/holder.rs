//! Who holds a port: the socket in `/proc/net/{tcp,tcp6,udp,udp6}` bound
//! there (its inode), then the process with that socket among its open
//! files (`/proc/<pid>/fd`), named by its `comm`. What `ss -p` does, in the
//! few lines a Warning Event needs. Best effort: a socket of another
//! network namespace, or a process whose fds we cannot read, leaves the
//! holder unnamed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::plan::{Holder, PortKey, Protocol};

/// `TCP_LISTEN` in `/proc/net/tcp`'s `st` column.
const TCP_LISTEN: u8 = 0x0A;
/// An unconnected UDP socket shows `TCP_CLOSE`.
const UDP_UNCONNECTED: u8 = 0x07;

/// One line of a `/proc/net` socket table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketLine {
    pub local: SocketAddr,
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
    let (addr, port) = fields.get(1)?.split_once(':')?;
    let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketLine {
        local: SocketAddr::new(parse_addr(addr)?, port),
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
    let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| links.iter().any(|l| target.as_os_str() == l.as_str()))
        });
        if holds {
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
