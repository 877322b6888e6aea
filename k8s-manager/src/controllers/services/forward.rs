//! The listeners: a real socket bound on the load-balancer address (so
//! WSL 2's localhost forwarding, which follows the VM's listening sockets,
//! carries the port to Windows), forwarding each connection or datagram to
//! the Service's cluster IP.
//!
//! A listener lives as long as its [`Listening`] value: dropping it cancels
//! the accept loop and every connection or session it made, so their
//! sockets close at once and the port is free for anyone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::plan::{PortKey, Protocol};
use crate::controllers::idle::Idle;

/// Each direction of a TCP connection moves up to this much per call (the
/// size of its pipe): fewer, larger moves.
const TCP_BUFFER: usize = 1024 * 1024;
/// How long a connection to the Service may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A UDP session (one client address) ends after this long without a
/// datagram either way, as a NAT forgets a mapping.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// At most this many UDP clients at once per port; past it new clients'
/// datagrams are dropped (each session holds a socket).
const UDP_MAX_SESSIONS: usize = 1024;
/// The largest datagram.
const UDP_BUFFER: usize = 65_535;
/// At most this many TCP connections at once per port; past it a new
/// connection is closed at once, and the cap is told (each connection holds
/// two sockets and two pipes of up to [`TCP_BUFFER`]).
pub const TCP_MAX_CONNECTIONS: usize = 1024;

/// Whom a listener tells: where a TCP port says it is full, and the
/// cluster's use (each connection or datagram is use, and wakes a frozen
/// cluster: [`crate::controllers::idle`]).
#[derive(Clone)]
pub struct Tell {
    pub full: mpsc::UnboundedSender<PortKey>,
    pub idle: Idle,
}

impl From<mpsc::UnboundedSender<PortKey>> for Tell {
    fn from(full: mpsc::UnboundedSender<PortKey>) -> Tell {
        Tell {
            full,
            idle: Idle::default(),
        }
    }
}

/// A listener that serves until dropped.
pub struct Listening {
    target: watch::Sender<SocketAddr>,
    _stop: DropGuard,
}

impl Listening {
    /// Points new connections (and new UDP sessions) at `target`.
    pub fn retarget(&self, target: SocketAddr) {
        self.target.send_if_modified(|t| {
            let changed = *t != target;
            *t = target;
            changed
        });
    }
}

/// Binds `key` on `address` and serves it, forwarding to `target`; a TCP
/// port that reaches [`TCP_MAX_CONNECTIONS`] says so on `full` (once each
/// time it fills up).
pub async fn listen(
    address: std::net::IpAddr,
    key: PortKey,
    target: SocketAddr,
    tell: impl Into<Tell>,
) -> std::io::Result<Listening> {
    listen_with_udp_idle(address, key, target, tell, UDP_IDLE).await
}

/// [`listen`], with UDP sessions that end after `udp_idle` without a
/// datagram (the tests' seconds instead of [`UDP_IDLE`]).
pub async fn listen_with_udp_idle(
    address: std::net::IpAddr,
    key: PortKey,
    target: SocketAddr,
    tell: impl Into<Tell>,
    udp_idle: Duration,
) -> std::io::Result<Listening> {
    let Tell { full, idle } = tell.into();
    let traffic = Traffic {
        idle,
        what: format!(
            "{} traffic to {}",
            key.protocol,
            SocketAddr::new(address, key.port)
        ),
    };
    let at = SocketAddr::new(address, key.port);
    let stop = CancellationToken::new();
    let (tx, rx) = watch::channel(target);
    match key.protocol {
        Protocol::Tcp => {
            // tokio sets SO_REUSEADDR: a port we just closed, with connections
            // in TIME_WAIT, binds again at once.
            let listener = TcpListener::bind(at).await?;
            let cap = Cap {
                key,
                max: TCP_MAX_CONNECTIONS,
                full,
                traffic,
            };
            tokio::spawn(serve_tcp(listener, rx, stop.clone(), cap));
        }
        Protocol::Udp => {
            let socket = UdpSocket::bind(at).await?;
            tokio::spawn(serve_udp(
                Arc::new(socket),
                rx,
                stop.clone(),
                udp_idle,
                traffic,
            ));
        }
    }
    Ok(Listening {
        target: tx,
        _stop: stop.drop_guard(),
    })
}

/// How many TCP connections a port serves at once, and where to say that
/// it is full.
struct Cap {
    key: PortKey,
    max: usize,
    full: mpsc::UnboundedSender<PortKey>,
    traffic: Traffic,
}

/// What a listener tells the cluster's use of each connection or datagram.
struct Traffic {
    idle: Idle,
    /// What this listener is: `TCP traffic to 127.0.0.1:80`.
    what: String,
}

impl Traffic {
    fn seen(&self) {
        self.idle.traffic(&self.what);
    }
}

/// One open connection, counted while it lives.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_tcp(
    listener: TcpListener,
    target: watch::Receiver<SocketAddr>,
    stop: CancellationToken,
    cap: Cap,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut told = false;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let inbound = match accepted {
            Ok((inbound, _)) => {
                cap.traffic.seen();
                inbound
            }
            Err(err) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::debug!("accept: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= cap.max {
            // Closed at once: the client sees the end of the connection
            // rather than waiting in the backlog for a slot.
            drop(inbound);
            if !told {
                told = cap.full.send(cap.key).is_ok();
            }
            continue;
        }
        told = false;
        open.fetch_add(1, Ordering::SeqCst);
        let counted = Counted(open.clone());
        let to = *target.borrow();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _counted = counted;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = pipe(inbound, to) => {}
            }
        });
    }
}

/// Copies both ways until both sides are done, or either fails.
async fn pipe(inbound: TcpStream, to: SocketAddr) {
    let outbound = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await;
    let mut outbound = match outbound {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!("connecting to {to}: {err}");
            return;
        }
        Err(_) => return,
    };
    let mut inbound = inbound;
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let spliced = tokio::try_join!(
        splice_one_way(&inbound, &outbound),
        splice_one_way(&outbound, &inbound)
    );
    if let Err(err) = spliced
        && err.raw_os_error() == Some(libc::EINVAL)
    {
        // A socket splice(2) refuses (none of ours should be): copy instead.
        let _ = tokio::io::copy_bidirectional_with_sizes(
            &mut inbound,
            &mut outbound,
            TCP_BUFFER,
            TCP_BUFFER,
        )
        .await;
    }
}

/// Moves what `from` receives to `to` through a pipe, inside the kernel
/// (splice(2)): no copy through this process, which is what keeps a
/// localhost port close to a direct connection's throughput. At the end of
/// `from`, ends `to`'s sending side.
async fn splice_one_way(from: &TcpStream, to: &TcpStream) -> std::io::Result<()> {
    use std::io::ErrorKind::WouldBlock;
    use std::os::fd::AsFd;
    use tokio::io::Interest;
    let (pipe_out, pipe_in) = crate::sys::splice_pipe(TCP_BUFFER)?;
    loop {
        // The pipe is empty here: WouldBlock can only mean `from` has nothing.
        let moved = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                crate::sys::splice(from.as_fd(), pipe_in.as_fd(), TCP_BUFFER)
            }) {
                Ok(n) => break n,
                Err(err) if err.kind() == WouldBlock => continue,
                Err(err) => return Err(err),
            }
        };
        if moved == 0 {
            return crate::sys::shutdown_write(to.as_fd());
        }
        // Drain the pipe: WouldBlock can only mean `to` is full.
        let mut left = moved;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                crate::sys::splice(pipe_out.as_fd(), to.as_fd(), left)
            }) {
                Ok(n) => left -= n,
                Err(err) if err.kind() == WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

/// One UDP client: its own socket connected to the Service, so that
/// replies come back on it and go to that client.
struct Session {
    upstream: UdpSocket,
    /// Milliseconds since `epoch` at the last datagram either way.
    last: AtomicU64,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<Session>>>>;

async fn serve_udp(
    socket: Arc<UdpSocket>,
    target: watch::Receiver<SocketAddr>,
    stop: CancellationToken,
    idle: Duration,
    traffic: Traffic,
) {
    let sessions: Sessions = Arc::default();
    let epoch = Instant::now();
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let Ok((n, client)) = received else {
            // An ICMP error of an earlier send, reported here: not fatal.
            continue;
        };
        traffic.seen();
        let existing = sessions.lock().expect("sessions").get(&client).cloned();
        let session = match existing {
            Some(session) => session,
            None => {
                if sessions.lock().expect("sessions").len() >= UDP_MAX_SESSIONS {
                    continue;
                }
                let to = *target.borrow();
                let Ok(session) = open_session(to).await else {
                    continue;
                };
                let session = Arc::new(session);
                sessions
                    .lock()
                    .expect("sessions")
                    .insert(client, session.clone());
                tokio::spawn(replies(
                    socket.clone(),
                    client,
                    session.clone(),
                    sessions.clone(),
                    epoch,
                    stop.clone(),
                    idle,
                ));
                session
            }
        };
        session
            .last
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let _ = session.upstream.send(&buf[..n]).await;
    }
}

async fn open_session(to: SocketAddr) -> std::io::Result<Session> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let upstream = UdpSocket::bind(any).await?;
    upstream.connect(to).await?;
    Ok(Session {
        upstream,
        last: AtomicU64::new(0),
    })
}

/// Sends the Service's replies back to `client` until the session has been
/// `idle` (no datagram either way for that long).
async fn replies(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    session: Arc<Session>,
    sessions: Sessions,
    epoch: Instant,
    stop: CancellationToken,
    idle: Duration,
) {
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = tokio::time::timeout(idle, session.upstream.recv(&mut buf)) => received,
        };
        match received {
            Ok(Ok(n)) => {
                session
                    .last
                    .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                let _ = socket.send_to(&buf[..n], client).await;
            }
            // The Service refused (no endpoint yet): the session stays.
            Ok(Err(_)) => {}
            Err(_) => {
                let idle_ms =
                    epoch.elapsed().as_millis() as u64 - session.last.load(Ordering::Relaxed);
                if idle_ms >= idle.as_millis() as u64 {
                    sessions.lock().expect("sessions").remove(&client);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn key(protocol: Protocol) -> PortKey {
        PortKey { protocol, port: 0 }
    }

    /// A port free now (bound, then released) on loopback.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn tcp_is_forwarded_and_dropping_closes_port_and_connections() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let port = free_port();
        let lo = "127.0.0.1".parse().unwrap();
        let listening = listen(
            lo,
            PortKey {
                port,
                ..key(Protocol::Tcp)
            },
            target,
            mpsc::unbounded_channel().0,
        )
        .await
        .unwrap();
        let mut client = TcpStream::connect((lo, port)).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        drop(listening);
        // The open connection ends, and the port binds again.
        let mut rest = Vec::new();
        let ended =
            tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "the connection was not closed");
        let rebound = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if std::net::TcpListener::bind((lo, port)).is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(rebound.is_ok(), "the port was not freed");
    }

    #[tokio::test]
    async fn tcp_carries_megabytes_both_ways_and_half_closes() {
        // The server counts what it reads until the client's end, answers
        // with as many bytes back, and closes.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = server.accept().await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&vec![7u8; got.len()]).await.unwrap();
        });
        let port = free_port();
        let lo = "127.0.0.1".parse().unwrap();
        let _listening = listen(
            lo,
            PortKey {
                port,
                ..key(Protocol::Tcp)
            },
            target,
            mpsc::unbounded_channel().0,
        )
        .await
        .unwrap();
        let mut client = TcpStream::connect((lo, port)).await.unwrap();
        let sent = 3 * 1024 * 1024 + 17;
        client.write_all(&vec![1u8; sent]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut back))
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(back.len(), sent);
        assert!(back.iter().all(|b| *b == 7));
    }

    /// A UDP server that answers each datagram with the address it came
    /// from: the session's own socket, as the Service sees it.
    async fn who_server() -> SocketAddr {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = server.recv_from(&mut buf).await {
                let _ = server.send_to(from.to_string().as_bytes(), from).await;
            }
        });
        target
    }

    /// A UDP session lives while datagrams pass, and ends once it has been
    /// idle: the client's next datagram opens a new one (another socket,
    /// seen by the Service from another port), and the old socket is closed.
    #[tokio::test]
    async fn a_udp_session_ends_after_its_idle_time() {
        let idle = Duration::from_millis(400);
        let target = who_server().await;
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let port = std::net::UdpSocket::bind((lo, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _listening = listen_with_udp_idle(
            lo,
            PortKey {
                port,
                ..key(Protocol::Udp)
            },
            target,
            mpsc::unbounded_channel().0,
            idle,
        )
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect((lo, port)).await.unwrap();
        let session = || async {
            client.send(b"who").await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .expect("a reply")
                .unwrap();
            String::from_utf8_lossy(&buf[..n])
                .parse::<SocketAddr>()
                .unwrap()
        };
        let first = session().await;
        // Traffic more often than `idle`, for longer than `idle`: one session.
        for _ in 0..6 {
            tokio::time::sleep(idle / 4).await;
            assert_eq!(session().await, first, "a session in use ended");
        }
        // Idle for longer: the session ended, its socket closed.
        tokio::time::sleep(idle * 2).await;
        let second = session().await;
        assert_ne!(second, first, "the idle session was kept");
        assert!(
            std::net::UdpSocket::bind(first).is_ok(),
            "the idle session's socket {first} is still open"
        );
    }

    #[tokio::test]
    async fn udp_replies_go_back_to_each_client() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = server.send_to(&reply, from).await;
            }
        });
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let port = std::net::UdpSocket::bind((lo, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _listening = listen(
            lo,
            PortKey {
                port,
                ..key(Protocol::Udp)
            },
            target,
            mpsc::unbounded_channel().0,
        )
        .await
        .unwrap();
        for word in ["a", "b"] {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.connect((lo, port)).await.unwrap();
            client.send(word.as_bytes()).await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .expect("a reply")
                .unwrap();
            assert_eq!(&buf[..n], format!("echo:{word}").as_bytes());
        }
    }

    #[tokio::test]
    async fn a_port_at_its_cap_closes_new_connections_and_says_so_once() {
        // A server that holds each connection open until its client leaves.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut rest = Vec::new();
                    let _ = conn.read_to_end(&mut rest).await;
                });
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let (full, mut told) = mpsc::unbounded_channel();
        let cap = Cap {
            key: key(Protocol::Tcp),
            max: 2,
            full,
            traffic: Traffic {
                idle: Idle::default(),
                what: "TCP traffic".into(),
            },
        };
        let stop = CancellationToken::new();
        let (_target, rx) = watch::channel(target);
        tokio::spawn(serve_tcp(listener, rx, stop.clone(), cap));
        let mut open = Vec::new();
        for _ in 0..2 {
            let mut client = TcpStream::connect(at).await.unwrap();
            client.write_all(b"hi").await.unwrap();
            open.push(client);
        }
        // The third and fourth: closed at once, the cap told once.
        for _ in 0..2 {
            let mut client = TcpStream::connect(at).await.unwrap();
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest));
            assert!(
                matches!(read.await, Ok(Ok(0))),
                "the connection over the cap was not closed"
            );
        }
        assert_eq!(told.recv().await, Some(key(Protocol::Tcp)));
        assert!(told.try_recv().is_err(), "told once");
        // A slot freed serves again.
        drop(open.pop());
        let served = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut client = TcpStream::connect(at).await.unwrap();
                let mut byte = [0u8; 1];
                let read = tokio::time::timeout(Duration::from_millis(200), client.read(&mut byte));
                // Still open after a while: it was forwarded, not closed.
                if read.await.is_err() {
                    return;
                }
            }
        });
        assert!(served.await.is_ok(), "a freed slot serves again");
        stop.cancel();
    }
}
