//! A minimal DNS client (RFC 1035, one question over UDP), enough to ask
//! CoreDNS for a name. An answer proves CoreDNS serves now, which a Ready
//! condition cannot: one left in the API by an earlier kubelet looks the same.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const HEADER: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{0}")]
    Io(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    #[error("the server answered {0}")]
    Rcode(&'static str),
    #[error("{0:?} is not a DNS name")]
    BadName(String),
}

/// The query for `name` (A, or AAAA when `v6`), with the recursion-desired bit.
pub fn query(id: u16, name: &str, v6: bool) -> Result<Vec<u8>, DnsError> {
    let mut packet = Vec::with_capacity(HEADER + name.len() + 6);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    packet.extend_from_slice(&1u16.to_be_bytes()); // one question
    packet.extend_from_slice(&[0; 6]);
    let bad = || DnsError::BadName(name.to_string());
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(bad());
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 || !label.is_ascii() {
            return Err(bad());
        }
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    let qtype = if v6 { TYPE_AAAA } else { TYPE_A };
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(packet)
}

/// The addresses in an answer to the query `id`, or why there are none.
pub fn parse_answer(id: u16, packet: &[u8]) -> Result<Vec<IpAddr>, DnsError> {
    if packet.len() < HEADER {
        return Err(DnsError::Malformed("shorter than a header"));
    }
    let u16_at = |at: usize| -> Result<u16, DnsError> {
        packet
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(DnsError::Malformed("cut short"))
    };
    if u16_at(0)? != id {
        return Err(DnsError::Malformed("answer to another query"));
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::Malformed("not a response"));
    }
    if flags & 0x0200 != 0 {
        return Err(DnsError::Malformed("truncated"));
    }
    match flags & 0x000f {
        0 => {}
        1 => return Err(DnsError::Rcode("FORMERR")),
        2 => return Err(DnsError::Rcode("SERVFAIL")),
        3 => return Err(DnsError::Rcode("NXDOMAIN")),
        4 => return Err(DnsError::Rcode("NOTIMP")),
        5 => return Err(DnsError::Rcode("REFUSED")),
        _ => return Err(DnsError::Rcode("an unknown error code")),
    }
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = HEADER;
    for _ in 0..questions {
        at = skip_name(packet, at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(packet, at)?;
        let rtype = u16_at(at)?;
        let class = u16_at(at + 2)?;
        let len = usize::from(u16_at(at + 8)?);
        let data = packet
            .get(at + 10..at + 10 + len)
            .ok_or(DnsError::Malformed("record data cut short"))?;
        match (rtype, class, len) {
            (TYPE_A, CLASS_IN, 4) => found.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (TYPE_AAAA, CLASS_IN, 16) => {
                let octets: [u8; 16] = data.try_into().expect("length checked");
                found.push(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            (TYPE_A | TYPE_AAAA, CLASS_IN, _) => {
                return Err(DnsError::Malformed("address of the wrong length"));
            }
            _ => {} // CNAMEs and others: the addresses follow
        }
        at += 10 + len;
    }
    Ok(found)
}

/// The offset after the (possibly compressed) name that starts at `at`.
fn skip_name(packet: &[u8], mut at: usize) -> Result<usize, DnsError> {
    loop {
        let len = *packet
            .get(at)
            .ok_or(DnsError::Malformed("name cut short"))?;
        match len {
            0 => return Ok(at + 1),
            // A pointer ends the name where it stands.
            l if l & 0xc0 == 0xc0 => {
                packet
                    .get(at + 1)
                    .ok_or(DnsError::Malformed("pointer cut short"))?;
                return Ok(at + 2);
            }
            l if l & 0xc0 != 0 => return Err(DnsError::Malformed("unknown label type")),
            l => at += 1 + usize::from(l),
        }
    }
}

/// Asks `server` for `name`'s addresses over UDP, once, within `timeout`.
pub async fn resolve(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<IpAddr>, DnsError> {
    let id = query_id();
    let question = query(id, name, server.is_ipv6())?;
    let bind: SocketAddr = if server.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let io = |e: std::io::Error| DnsError::Io(format!("{server}: {e}"));
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    socket.send(&question).await.map_err(io)?;
    let mut buf = [0u8; 1232];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| DnsError::Timeout(timeout))?
            .map_err(io)?;
        match parse_answer(id, &buf[..n]) {
            // A late answer to an earlier query on a reused port: keep waiting.
            Err(DnsError::Malformed("answer to another query")) => continue,
            other => return other,
        }
    }
}

/// A random query id (RFC 5452: an answer must match it).
fn query_id() -> u16 {
    let mut id = [0u8; 2];
    // The system's random source does not fail on Linux; a fixed id would
    // still work, only less strictly matched.
    let _ = aws_lc_rs::rand::fill(&mut id);
    u16::from_be_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a server writes it: the question echoed, then records
    /// whose owner names point back at the question (compression).
    fn answer(id: u16, rcode: u16, records: &[(u16, &[u8])]) -> Vec<u8> {
        answer_to(id, "kubernetes.default.svc.cluster.local", rcode, records)
    }

    fn answer_to(id: u16, name: &str, rcode: u16, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut p = query(id, name, false).unwrap();
        p[2..4].copy_from_slice(&(0x8180u16 | rcode).to_be_bytes());
        p[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (rtype, data) in records {
            p.extend_from_slice(&[0xc0, 0x0c]);
            p.extend_from_slice(&rtype.to_be_bytes());
            p.extend_from_slice(&CLASS_IN.to_be_bytes());
            p.extend_from_slice(&30u32.to_be_bytes());
            p.extend_from_slice(&(data.len() as u16).to_be_bytes());
            p.extend_from_slice(data);
        }
        p
    }

    #[test]
    fn a_query_is_laid_out_as_rfc_1035_says() {
        let q = query(0xbeef, "a.bc.", false).unwrap();
        assert_eq!(
            q,
            [
                0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 1, 0,
                1
            ]
        );
        assert_eq!(&query(1, "a", true).unwrap()[15..17], &[0, 28]);
    }

    #[test]
    fn names_that_cannot_be_asked_are_refused() {
        for name in [
            "",
            ".",
            "a..b",
            &"x".repeat(64),
            "é.local",
            &"a.".repeat(130),
        ] {
            assert!(
                matches!(query(1, name, false), Err(DnsError::BadName(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn addresses_are_read_past_other_records() {
        let cname = [3, b'f', b'o', b'o', 0xc0, 0x0c];
        let v6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let p = answer(7, 0, &[(5, &cname), (1, &[10, 96, 0, 1]), (28, &v6)]);
        assert_eq!(
            parse_answer(7, &p).unwrap(),
            vec![
                "10.96.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn errors_and_damage_are_told_apart() {
        assert_eq!(
            parse_answer(7, &answer(7, 3, &[])),
            Err(DnsError::Rcode("NXDOMAIN"))
        );
        assert_eq!(
            parse_answer(7, &answer(7, 2, &[])),
            Err(DnsError::Rcode("SERVFAIL"))
        );
        assert_eq!(parse_answer(7, &answer(7, 0, &[])), Ok(vec![]));
        assert_eq!(
            parse_answer(8, &answer(7, 0, &[])),
            Err(DnsError::Malformed("answer to another query"))
        );
        let full = answer(7, 0, &[(1, &[10, 96, 0, 1])]);
        // Every cut of a valid answer is an error, never a panic or a wrong address.
        for cut in 0..full.len() {
            assert!(parse_answer(7, &full[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_length = answer(7, 0, &[(1, &[10, 96, 0])]);
        assert_eq!(
            parse_answer(7, &wrong_length),
            Err(DnsError::Malformed("address of the wrong length"))
        );
        wrong_length[2] &= 0x7f;
        assert_eq!(
            parse_answer(7, &wrong_length),
            Err(DnsError::Malformed("not a response"))
        );
        let mut truncated = full.clone();
        truncated[2] |= 0x02;
        assert_eq!(
            parse_answer(7, &truncated),
            Err(DnsError::Malformed("truncated"))
        );
    }

    #[tokio::test]
    async fn resolve_asks_over_udp_and_waits_for_its_own_answer() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert_eq!(
                &buf[12..n - 4],
                &query(id, "x.y", false).unwrap()[12..n - 4]
            );
            // A stray answer to some other query first, then the real one.
            let stray = answer(id.wrapping_add(1), 0, &[(1, &[1, 1, 1, 1])]);
            server.send_to(&stray, peer).await.unwrap();
            let real = answer_to(id, "x.y", 0, &[(1, &[10, 96, 0, 1])]);
            server.send_to(&real, peer).await.unwrap();
        });
        let got = resolve(addr, "x.y", Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, vec!["10.96.0.1".parse::<IpAddr>().unwrap()]);
        serve.await.unwrap();
        // Nobody answers: a timeout, not a hang.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let err = resolve(
            silent.local_addr().unwrap(),
            "x.y",
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert_eq!(err, DnsError::Timeout(Duration::from_millis(100)));
    }
}
