//! Readiness probes: an HTTP(S) GET that must answer 200 (and, optionally,
//! contain a string), with the TLS each component's endpoint needs.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTls {
    /// Plain HTTP.
    None,
    /// HTTPS against a component's self-signed serving certificate.
    Insecure,
    /// HTTPS verified against `ca`, authenticated with a client certificate.
    ClientCert {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub url: String,
    pub tls: ProbeTls,
    pub expect_body: Option<String>,
    /// Where to connect instead of the URL's host, whose name TLS still
    /// verifies (the handover's probe of a newcomer, at `[::1]`).
    pub connect_to: Option<std::net::SocketAddr>,
}

impl Probe {
    pub fn http(url: String) -> Probe {
        Probe {
            url,
            tls: ProbeTls::None,
            expect_body: None,
            connect_to: None,
        }
    }

    /// Connects to `address` rather than to the URL's host (a name).
    pub fn connect_to(mut self, address: std::net::SocketAddr) -> Probe {
        self.connect_to = Some(address);
        self
    }

    pub fn insecure(mut self) -> Probe {
        self.tls = ProbeTls::Insecure;
        self
    }

    pub fn client_cert(mut self, ca: PathBuf, cert: PathBuf, key: PathBuf) -> Probe {
        self.tls = ProbeTls::ClientCert { ca, cert, key };
        self
    }

    pub fn expect_body(mut self, text: &str) -> Probe {
        self.expect_body = Some(text.to_string());
        self
    }

    /// The files the client reads (CA, certificate, key).
    pub fn files(&self) -> Vec<&std::path::Path> {
        match &self.tls {
            ProbeTls::ClientCert { ca, cert, key } => vec![ca, cert, key],
            ProbeTls::None | ProbeTls::Insecure => Vec::new(),
        }
    }

    /// A client for this probe. Built once per wait: the certificates are
    /// read when it is made.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(1))
            .no_proxy();
        match &self.tls {
            ProbeTls::None => {}
            ProbeTls::Insecure => builder = builder.tls_danger_accept_invalid_certs(true),
            ProbeTls::ClientCert { ca, cert, key } => {
                let read =
                    |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
                let ca = reqwest::Certificate::from_pem(&read(ca)?).map_err(|e| e.to_string())?;
                let mut identity = read(cert)?;
                identity.extend_from_slice(&read(key)?);
                let identity = reqwest::Identity::from_pem(&identity).map_err(|e| e.to_string())?;
                builder = builder.tls_certs_only([ca]).identity(identity);
            }
        }
        if let Some(address) = self.connect_to {
            let url = reqwest::Url::parse(&self.url).map_err(|e| format!("{}: {e}", self.url))?;
            let host = url.host_str().unwrap_or_default().to_string();
            builder = builder.resolve(&host, address);
        }
        builder.build().map_err(|e| e.to_string())
    }

    /// One attempt: Ok when ready, else what was seen.
    pub async fn check(&self, client: &reqwest::Client) -> Result<(), String> {
        let resp = client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("{}: {}", self.url, error_chain(&e)))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{} answered {status}: {}", self.url, body.trim()));
        }
        if let Some(expect) = &self.expect_body
            && !body.contains(expect.as_str())
        {
            return Err(format!("{} answered {:?}", self.url, body.trim()));
        }
        Ok(())
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve_once(body: &'static str, status: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(reply.as_bytes()).await.unwrap();
        });
        format!("http://{addr}/health")
    }

    #[tokio::test]
    async fn a_probe_connects_where_it_is_told_with_the_urls_name() {
        let url = serve_once("ok", "200 OK").await;
        let address: std::net::SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches("/health")
            .parse()
            .unwrap();
        let named = format!("http://probe.test:{}/health", address.port());
        let probe = Probe::http(named).connect_to(address);
        probe.check(&probe.client().unwrap()).await.unwrap();
    }

    #[tokio::test]
    async fn probe_checks_status_and_body() {
        let url = serve_once("{\"health\":\"true\"}", "200 OK").await;
        let probe = Probe::http(url).expect_body("\"health\":\"true\"");
        probe.check(&probe.client().unwrap()).await.unwrap();

        let url = serve_once("{\"health\":\"false\"}", "200 OK").await;
        let probe = Probe::http(url).expect_body("\"health\":\"true\"");
        assert!(
            probe
                .check(&probe.client().unwrap())
                .await
                .unwrap_err()
                .contains("false")
        );

        let url = serve_once("[-]etcd failed", "500 Internal Server Error").await;
        let probe = Probe::http(url);
        assert!(
            probe
                .check(&probe.client().unwrap())
                .await
                .unwrap_err()
                .contains("500")
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_a_readable_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        drop(listener);
        let probe = Probe::http(url.clone());
        let err = probe.check(&probe.client().unwrap()).await.unwrap_err();
        assert!(err.starts_with(&url), "{err}");
    }
}
