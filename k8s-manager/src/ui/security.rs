//! Who may use the settings page, decided from a request's headers alone
//! (pure: the server asks, unit tests pin every rule).
//!
//! The page listens on loopback, and loopback is not private: every web site
//! the user visits can make the browser send requests to it, and every local
//! user of the VM can connect to it. The unix socket of the control API is
//! guarded by its mode (0660); here the same people are let in by a token
//! that only they can read (`<state-dir>/ui.token`, mode 0600, made anew at
//! each daemon start) and that reaches the page in the URL's fragment, which
//! browsers never send to a server nor put in a `Referer`.
//!
//! - **DNS rebinding**: a site whose name is made to resolve to 127.0.0.1
//!   sends its own name in `Host`. Every request whose `Host` is not
//!   `127.0.0.1:<port>` or `localhost:<port>` is refused, assets included.
//! - **Reading**: the page's data (`/api/...`, GETs included) needs the token
//!   header. A browser refuses another origin's script the answer anyway (no
//!   CORS header is ever sent), but a local process is no browser: the token
//!   keeps the page's data to those who may read the state folder, as the
//!   socket does. The header also makes a cross-origin fetch "non-simple",
//!   so the browser asks first (a preflight, which is refused) and never sends
//!   the request itself.
//! - **CSRF**: a state-changing request (any method but GET and HEAD) also
//!   needs an `Origin` of the page's own, and a `Sec-Fetch-Site`, when the
//!   browser sends one, of `same-origin`.
//! - The static files (HTML, CSS, JS) hold no secret and are served with the
//!   right `Host` alone: the token is never in them.

use hyper::{Method, StatusCode};

/// The header that carries the token.
pub const TOKEN_HEADER: &str = "x-k8s-manager-token";

/// Bytes of randomness in a token (hex-encoded: twice as many characters).
const TOKEN_BYTES: usize = 32;

/// A new random token, from the process's one crypto library.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the gate reads of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHeaders<'a> {
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub token: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
}

/// Why a request was refused: its status, a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The page's port and token: what every request is judged against.
#[derive(Debug, Clone)]
pub struct Gate {
    port: u16,
    token: String,
}

impl Gate {
    pub fn new(port: u16, token: String) -> Gate {
        Gate { port, token }
    }

    /// The page's address, with the token in its fragment.
    pub fn url(port: u16, token: &str) -> String {
        format!("http://127.0.0.1:{port}/#token={token}")
    }

    /// The origins the page is served from (both names of loopback).
    fn own_origins(&self) -> [String; 2] {
        [
            format!("http://127.0.0.1:{}", self.port),
            format!("http://localhost:{}", self.port),
        ]
    }

    fn is_own_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        [
            format!("127.0.0.1:{}", self.port),
            format!("localhost:{}", self.port),
        ]
        .contains(&host)
    }

    /// Lets the request through, or says why not. `api`: the path is the
    /// page's data or the control API (`/api/...`), not a static file.
    pub fn check(
        &self,
        method: &Method,
        api: bool,
        headers: &RequestHeaders<'_>,
    ) -> Result<(), Refused> {
        let refuse = |status, code, message: &str| {
            Err(Refused {
                status,
                code,
                message: message.to_string(),
            })
        };
        if !headers.host.is_some_and(|h| self.is_own_host(h)) {
            return refuse(
                StatusCode::FORBIDDEN,
                "ForeignHost",
                "this page answers only to the names 127.0.0.1 and localhost",
            );
        }
        let reads = matches!(*method, Method::GET | Method::HEAD);
        if !api {
            return match reads {
                true => Ok(()),
                false => refuse(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "the page's files are only read",
                ),
            };
        }
        // `none`: typed in the address bar. Anything else came from a page
        // of another origin (another port of localhost is `same-site`).
        if headers
            .sec_fetch_site
            .is_some_and(|site| !matches!(site, "same-origin" | "none"))
        {
            return refuse(
                StatusCode::FORBIDDEN,
                "CrossOrigin",
                "requests from other sites are refused",
            );
        }
        if !headers.token.is_some_and(|t| same_secret(t, &self.token)) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "TokenRequired",
                "open the page from the address `k8s-manager ui --url` prints: it carries the page's token",
            );
        }
        if !reads {
            let own = headers
                .origin
                .is_some_and(|o| self.own_origins().iter().any(|own| own == o));
            if !own {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "CrossOrigin",
                    "a change must come from the page itself (its Origin)",
                );
            }
        }
        Ok(())
    }
}

/// Compares in a time that does not depend on where the two differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate::new(47020, "t0ken".into())
    }

    fn page(token: Option<&'static str>) -> RequestHeaders<'static> {
        RequestHeaders {
            host: Some("127.0.0.1:47020"),
            origin: Some("http://127.0.0.1:47020"),
            token,
            sec_fetch_site: Some("same-origin"),
        }
    }

    fn code(result: Result<(), Refused>) -> &'static str {
        result.err().map_or("ok", |r| r.code)
    }

    #[test]
    fn only_the_pages_own_host_is_answered() {
        let g = gate();
        for host in ["127.0.0.1:47020", "localhost:47020", "LOCALHOST:47020"] {
            let h = RequestHeaders {
                host: Some(host),
                ..page(None)
            };
            assert_eq!(code(g.check(&Method::GET, false, &h)), "ok", "{host}");
        }
        for host in [
            None,
            Some("evil.test:47020"),
            Some("127.0.0.1"),
            Some("localhost:80"),
            Some("127.0.0.1:47020.evil.test"),
            Some("[::1]:47020"),
        ] {
            let h = RequestHeaders { host, ..page(None) };
            assert_eq!(
                code(g.check(&Method::GET, false, &h)),
                "ForeignHost",
                "{host:?}"
            );
            // The token does not make a foreign name acceptable.
            let h = RequestHeaders {
                host,
                ..page(Some("t0ken"))
            };
            assert_eq!(code(g.check(&Method::GET, true, &h)), "ForeignHost");
        }
    }

    #[test]
    fn the_data_needs_the_token_and_changes_need_the_pages_origin() {
        let g = gate();
        assert_eq!(
            code(g.check(&Method::GET, true, &page(Some("t0ken")))),
            "ok"
        );
        assert_eq!(
            code(g.check(&Method::PUT, true, &page(Some("t0ken")))),
            "ok"
        );
        assert_eq!(
            code(g.check(&Method::GET, true, &page(None))),
            "TokenRequired"
        );
        assert_eq!(
            code(g.check(&Method::POST, true, &page(Some("t0ken!")))),
            "TokenRequired"
        );
        assert_eq!(
            code(g.check(&Method::POST, true, &page(Some("t0ke")))),
            "TokenRequired"
        );
        for origin in [
            None,
            Some("http://evil.test"),
            Some("http://localhost:8080"),
            Some("null"),
            Some("https://127.0.0.1:47020"),
        ] {
            let h = RequestHeaders {
                origin,
                ..page(Some("t0ken"))
            };
            assert_eq!(
                code(g.check(&Method::POST, true, &h)),
                "CrossOrigin",
                "{origin:?}"
            );
            // Reading needs no Origin (browsers send none on same-origin GETs).
            assert_eq!(code(g.check(&Method::GET, true, &h)), "ok");
        }
        for site in ["cross-site", "same-site"] {
            let h = RequestHeaders {
                sec_fetch_site: Some(site),
                ..page(Some("t0ken"))
            };
            assert_eq!(code(g.check(&Method::GET, true, &h)), "CrossOrigin");
        }
    }

    #[test]
    fn files_are_only_read() {
        let g = gate();
        assert_eq!(
            code(g.check(&Method::POST, false, &page(Some("t0ken")))),
            "MethodNotAllowed"
        );
    }

    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(Gate::url(47020, "ab"), "http://127.0.0.1:47020/#token=ab");
    }
}
