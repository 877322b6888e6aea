//! The proxy the user's network needs (`proxy.*` settings), and the
//! environment it gives to what the manager starts.
//!
//! Every cluster component is a Go program, and so is containerd: they read
//! the proxy the way Go's `golang.org/x/net/http/httpproxy` does. That reads
//! `HTTP_PROXY` then `http_proxy` (the first one that is not empty wins), the
//! same for `HTTPS_PROXY` and `NO_PROXY`; an `https://` request uses only the
//! HTTPS proxy (there is no fallback to the HTTP one, and no `ALL_PROXY`).
//! `NO_PROXY` is a comma-separated list of host names (matching their
//! subdomains too), `.domain` (subdomains only), IP addresses, CIDRs, and `*`
//! (everything). Both spellings are set here, to the same values, so that
//! tools that read only the lowercase ones (curl) agree with Go.

use std::io;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::field::HIDDEN;

/// `proxy.http`, `proxy.https`, `proxy.noProxy` of the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ProxySettings {
    /// The proxy for `http://` URLs.
    pub http: Option<url::Url>,
    /// The proxy for `https://` URLs.
    pub https: Option<url::Url>,
    /// Hosts, domains (`.example.com`), addresses and CIDRs reached directly,
    /// besides the cluster's own (always added).
    pub no_proxy: Vec<String>,
}

/// The variables this module sets, in the order they are written; what is
/// compared with the environment of a running containerd.
pub const VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The names and ranges of the cluster, always reached directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNetwork {
    pub node_name: String,
    /// The address the API server advertises (the node's address).
    pub node_address: IpAddr,
    pub service_cidr: IpNet,
    pub pod_cidr: IpNet,
    /// `cluster.local` by default.
    pub cluster_domain: String,
}

/// Environment variables, `(name, value)`, in a stable order.
pub type Environment = Vec<(String, String)>;

impl ProxySettings {
    /// No proxy at all: nothing is added to any environment.
    pub fn is_unset(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy as it is shown outside the daemon (the control API, the
    /// page, the CLI): a URL's password is write-only, replaced by
    /// [`HIDDEN`] (`http://me:********@proxy.corp:3128`), which says that one
    /// is set.
    pub fn redacted(&self) -> ProxySettings {
        let mut shown = self.clone();
        for url in [&mut shown.http, &mut shown.https].into_iter().flatten() {
            if url.password().is_some() {
                url.set_password(Some(HIDDEN))
                    .expect("a URL with a password takes another one");
            }
        }
        shown
    }

    /// Makes the passwords of `self` (the settings asked for) write-only
    /// against `current` (the saved ones): a URL whose password is
    /// [`HIDDEN`], or that has none, gets the password saved for the same
    /// user at the same host (the same field's first, then the other's), so
    /// that a document read and sent back keeps it. A password typed
    /// replaces it. [`HIDDEN`] with no such password saved is refused: it is
    /// never saved as a password, and a password never follows a URL to
    /// another host or user.
    pub fn keep_passwords(&mut self, current: &ProxySettings) -> Result<(), String> {
        for (field, url, saved) in [
            (
                "proxy.http",
                &mut self.http,
                [&current.http, &current.https],
            ),
            (
                "proxy.https",
                &mut self.https,
                [&current.https, &current.http],
            ),
        ] {
            let Some(url) = url else { continue };
            let hidden = url.password() == Some(HIDDEN);
            if url.password().is_some() && !hidden {
                continue;
            }
            let same = saved.into_iter().flatten().find(|saved| {
                saved.password().is_some()
                    && saved.host_str() == url.host_str()
                    && saved.username() == url.username()
            });
            match same {
                Some(saved) => url
                    .set_password(saved.password())
                    .expect("a URL with a user takes a password"),
                None if hidden => {
                    return Err(format!(
                        "{field}: {HIDDEN} stands for the password already set, and none is set for \
                         this user at this host: type the password (a password is not carried to \
                         another host or user)"
                    ));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// What a user can get wrong, with the field named. Never repeats a
    /// proxy URL (it may carry a password).
    pub fn validate(&self) -> Result<(), String> {
        for (field, url) in [("proxy.http", &self.http), ("proxy.https", &self.https)] {
            if let Some(url) = url {
                validate_url(url).map_err(|why| format!("{field}: {why}"))?;
            }
        }
        for (i, entry) in self.no_proxy.iter().enumerate() {
            no_proxy_entry(entry).map_err(|why| format!("proxy.noProxy[{i}]: {why}"))?;
        }
        Ok(())
    }

    /// `NO_PROXY`'s entries: the cluster's own, then the user's, each once
    /// (lowercase, addresses and ranges in their canonical form).
    pub fn no_proxy_entries(&self, cluster: &ClusterNetwork) -> Vec<String> {
        let domain = cluster
            .cluster_domain
            .trim_matches('.')
            .to_ascii_lowercase();
        let mut entries = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "kubernetes.docker.internal".to_string(),
            cluster.node_name.to_ascii_lowercase(),
            cluster.node_address.to_string(),
            cluster.service_cidr.trunc().to_string(),
            cluster.pod_cidr.trunc().to_string(),
            ".svc".to_string(),
            format!(".{domain}"),
        ];
        // validate() refused what does not parse; a stray one is left out.
        entries.extend(
            self.no_proxy
                .iter()
                .filter_map(|entry| no_proxy_entry(entry).ok()),
        );
        let mut seen = std::collections::HashSet::new();
        entries.retain(|entry| seen.insert(entry.clone()));
        entries
    }

    /// The environment of every process the manager starts (the cluster's
    /// components) and of containerd: empty when no proxy is set.
    pub fn environment(&self, cluster: &ClusterNetwork) -> Environment {
        if self.is_unset() {
            return Vec::new();
        }
        let mut env = Vec::new();
        let mut both = |upper: &str, value: String| {
            env.push((upper.to_string(), value.clone()));
            env.push((upper.to_ascii_lowercase(), value));
        };
        if let Some(http) = &self.http {
            both("HTTP_PROXY", env_url(http));
        }
        if let Some(https) = &self.https {
            both("HTTPS_PROXY", env_url(https));
        }
        both("NO_PROXY", self.no_proxy_entries(cluster).join(","));
        env
    }
}

fn validate_url(url: &url::Url) -> Result<(), String> {
    let scheme = url.scheme();
    if !matches!(scheme, "http" | "https" | "socks5") {
        return Err(format!(
            "the scheme must be http, https or socks5, not {scheme:?}: write http://HOST:PORT"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("a host is needed: write http://HOST:PORT".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(
            "a proxy is scheme://[USER:PASSWORD@]HOST[:PORT], without a path, query or fragment"
                .into(),
        );
    }
    Ok(())
}

/// The URL as proxy variables carry it: without the `/` the URL type adds.
fn env_url(url: &url::Url) -> String {
    let text = url.as_str();
    text.strip_suffix('/').unwrap_or(text).to_string()
}

/// One `noProxy` entry, checked and in its canonical form.
fn no_proxy_entry(entry: &str) -> Result<String, String> {
    let e = entry.trim();
    if e.is_empty() {
        return Err("an empty entry".into());
    }
    if e == "*" {
        return Ok(e.into());
    }
    let what = "is not a host name, .domain, *, an IP address or a CIDR";
    if e.contains(',') {
        return Err(format!(
            "{entry:?} {what}: give each host as its own entry (no commas)"
        ));
    }
    if e.contains(char::is_whitespace) {
        return Err(format!("{entry:?} {what} (it holds a space)"));
    }
    if e.contains('/') {
        return e
            .parse::<IpNet>()
            .map(|net| net.trunc().to_string())
            .map_err(|_| format!("{entry:?} is not a CIDR (ADDRESS/PREFIX, e.g. 10.0.0.0/8)"));
    }
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    if e.starts_with('[') {
        return Err(format!(
            "{entry:?} {what}: write an IPv6 address without brackets or port"
        ));
    }
    if e.contains(':') {
        return Err(format!(
            "{entry:?} {what}: ports are not supported, write the host alone"
        ));
    }
    if let Some(domain) = e.strip_prefix("*.") {
        return Err(format!(
            "{entry:?} {what}: write .{domain} (it matches every subdomain)"
        ));
    }
    let name = e.strip_prefix('.').unwrap_or(e);
    if is_host_name(name) {
        Ok(e.to_ascii_lowercase())
    } else {
        Err(format!("{entry:?} {what}"))
    }
}

/// A host name as NO_PROXY takes it: any case, `_` allowed.
fn is_host_name(name: &str) -> bool {
    super::names::is_label_chain(name, |b| {
        b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
    })
}

/// The file containerd reads its proxy from (`KEY=VALUE` lines: systemd's
/// `EnvironmentFile=` format, read as plain text by `vm/prepare-vm.sh`).
pub fn env_file_contents(env: &[(String, String)]) -> String {
    let mut text = String::from(
        "# Written by k8s-manager from its proxy settings: containerd's proxy (vm/prepare-vm.sh).\n",
    );
    for (key, value) in env {
        text.push_str(&format!("{key}={value}\n"));
    }
    text
}

/// Writes the file (0600: a proxy URL may hold a password) when its content
/// is not already that, or removes it when no proxy is set. True when it
/// changed.
pub fn write_env_file(path: &Path, env: &[(String, String)]) -> io::Result<bool> {
    if env.is_empty() {
        return match std::fs::symlink_metadata(path) {
            Ok(_) => crate::fsutil::remove_file_durably(path).map(|()| true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        };
    }
    let contents = env_file_contents(env);
    if std::fs::read_to_string(path).ok().as_deref() == Some(contents.as_str()) {
        return Ok(false);
    }
    crate::fsutil::write_atomic(path, contents.as_bytes(), 0o600)?;
    Ok(true)
}

/// The proxy variables of a process environment (`/proc/<pid>/environ`:
/// NUL-separated `KEY=VALUE`), sorted, for comparison.
pub fn proxy_variables(environ: &[u8]) -> Environment {
    let mut found: Environment = environ
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = std::str::from_utf8(entry).ok()?;
            let (key, value) = entry.split_once('=')?;
            VARIABLES
                .contains(&key)
                .then(|| (key.to_string(), value.to_string()))
        })
        .collect();
    found.sort();
    found
}

/// Whether a running containerd has other proxy variables than `env`: None
/// when no containerd process is found (or its environment cannot be read).
pub fn containerd_differs(env: &[(String, String)]) -> Option<bool> {
    let mut want = env.to_vec();
    want.sort();
    let mut any = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != "containerd" {
            continue;
        }
        let Ok(environ) = crate::fsutil::read_bounded(&entry.path().join("environ"), 1 << 20)
        else {
            continue;
        };
        let differs = proxy_variables(&environ) != want;
        any = Some(any.unwrap_or(false) || differs);
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterNetwork {
        ClusterNetwork {
            node_name: "docker-desktop".into(),
            node_address: "192.0.2.10".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn proxy(http: &str) -> ProxySettings {
        ProxySettings {
            http: Some(http.parse().unwrap()),
            ..Default::default()
        }
    }

    fn entries(list: &[&str]) -> ProxySettings {
        ProxySettings {
            no_proxy: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn good_settings_pass() {
        ProxySettings::default().validate().unwrap();
        for url in [
            "http://proxy.corp:3128",
            "http://proxy.corp:3128/",
            "https://user:p%40ss@10.0.0.1:8443",
            "socks5://[fd00::1]:1080",
        ] {
            proxy(url).validate().unwrap();
        }
        entries(&[
            "*",
            "example.com",
            ".corp.example.com",
            "Intranet",
            "my_host",
            "10.1.2.3",
            "fd00::1",
            "10.0.0.0/8",
            "fd00::/8",
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn a_bad_proxy_url_is_named_without_its_password() {
        let err = proxy("ftp://user:secret@proxy:21").validate().unwrap_err();
        assert!(err.starts_with("proxy.http: the scheme must be"), "{err}");
        assert!(err.contains("\"ftp\""), "{err}");
        assert!(!err.contains("secret"), "{err}");
        // What a user gets writing `proxy.corp:3128`: a scheme of its own.
        let err = proxy("proxy.corp:3128").validate().unwrap_err();
        assert!(err.contains("write http://HOST:PORT"), "{err}");

        let settings = ProxySettings {
            https: Some("http://u:secret@proxy:3128/path?q".parse().unwrap()),
            ..Default::default()
        };
        let err = settings.validate().unwrap_err();
        assert!(err.starts_with("proxy.https: "), "{err}");
        assert!(err.contains("without a path"), "{err}");
        assert!(!err.contains("secret"), "{err}");

        let err = proxy("socks5:///").validate().unwrap_err();
        assert_eq!(err, "proxy.http: a host is needed: write http://HOST:PORT");
    }

    #[test]
    fn a_bad_no_proxy_entry_is_named_with_its_index() {
        for (entry, why) in [
            ("", "an empty entry"),
            ("a.com,b.com", "no commas"),
            ("a .com", "space"),
            ("10.0.0.0/33", "not a CIDR"),
            ("example.com/8", "not a CIDR"),
            ("example.com:8080", "ports are not supported"),
            ("10.0.0.1:80", "ports are not supported"),
            ("[fd00::1]", "without brackets"),
            ("*.example.com", "write .example.com"),
            ("-bad.example", "is not a host name"),
            ("bad..example", "is not a host name"),
            ("example.com.", "is not a host name"),
            ("ex@mple", "is not a host name"),
            (".", "is not a host name"),
        ] {
            let err = entries(&["ok.example", entry]).validate().unwrap_err();
            assert!(err.starts_with("proxy.noProxy[1]: "), "{entry}: {err}");
            assert!(err.contains(why), "{entry}: {err}");
        }
    }

    #[test]
    fn no_proxy_covers_the_cluster_then_the_user_s_entries_once() {
        let mut settings = proxy("http://proxy:3128");
        settings.no_proxy = vec![
            "Example.COM".into(),
            "10.0.0.5/8".into(),
            "localhost".into(),
            "10.96.0.0/12".into(),
            "example.com".into(),
            ".svc".into(),
        ];
        assert_eq!(
            settings.no_proxy_entries(&cluster()),
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "kubernetes.docker.internal",
                "docker-desktop",
                "192.0.2.10",
                "10.96.0.0/12",
                "10.244.0.0/16",
                ".svc",
                ".cluster.local",
                "example.com",
                "10.0.0.0/8",
            ]
        );
    }

    #[test]
    fn no_proxy_follows_the_cluster_s_facts() {
        let facts = ClusterNetwork {
            node_name: "Node-1".into(),
            node_address: "fd00::10".parse().unwrap(),
            service_cidr: "10.100.0.1/16".parse().unwrap(),
            pod_cidr: "fd01::/48".parse().unwrap(),
            cluster_domain: "k8s.internal.".into(),
        };
        let entries = proxy("http://proxy:3128").no_proxy_entries(&facts);
        for want in [
            "node-1",
            "fd00::10",
            "10.100.0.0/16",
            "fd01::/48",
            ".k8s.internal",
        ] {
            assert!(entries.iter().any(|e| e == want), "{want}: {entries:?}");
        }
    }

    #[test]
    fn the_environment_sets_both_spellings_and_is_empty_without_a_proxy() {
        let mut settings = entries(&["example.com"]);
        assert!(settings.is_unset());
        assert_eq!(settings.environment(&cluster()), Vec::new());

        settings.http = Some("http://proxy.corp:3128".parse().unwrap());
        settings.https = Some("http://user:p%40ss@proxy.corp:3129/".parse().unwrap());
        let env = settings.environment(&cluster());
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, VARIABLES);
        let value = |key: &str| env.iter().find(|(k, _)| k == key).unwrap().1.clone();
        assert_eq!(value("HTTP_PROXY"), "http://proxy.corp:3128");
        assert_eq!(value("http_proxy"), "http://proxy.corp:3128");
        assert_eq!(value("HTTPS_PROXY"), "http://user:p%40ss@proxy.corp:3129");
        assert_eq!(value("NO_PROXY"), value("no_proxy"));
        assert!(value("NO_PROXY").starts_with("localhost,127.0.0.1,::1,"));
        assert!(value("NO_PROXY").ends_with(",.svc,.cluster.local,example.com"));

        // Only an HTTP proxy: https:// requests go direct, as Go does.
        settings.https = None;
        let env = settings.environment(&cluster());
        assert!(
            !env.iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("HTTPS_PROXY"))
        );
        assert!(env.iter().any(|(k, _)| k == "no_proxy"));
    }

    #[test]
    fn the_env_file_is_written_once_and_removed_without_a_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.env");
        let env = proxy("http://proxy:3128").environment(&cluster());
        assert!(!write_env_file(&path, &[]).unwrap());
        assert!(write_env_file(&path, &env).unwrap());
        assert!(!write_env_file(&path, &env).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# "), "{text}");
        assert!(text.contains("\nHTTP_PROXY=http://proxy:3128\n"), "{text}");
        assert!(text.contains("\nno_proxy=localhost,"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_env_file(&path, &[]).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn proxy_variables_are_read_from_an_environ() {
        let environ = b"PATH=/bin\0no_proxy=a,b\0HTTP_PROXY=http://p:1\0HTTP_PROXY_X=y\0\0";
        assert_eq!(
            proxy_variables(environ),
            vec![
                ("HTTP_PROXY".to_string(), "http://p:1".to_string()),
                ("no_proxy".to_string(), "a,b".to_string()),
            ]
        );
    }

    #[test]
    fn settings_read_from_json_refuse_unknown_fields() {
        let json = r#"{"http":"http://proxy:3128","noProxy":["example.com"]}"#;
        let settings: ProxySettings = serde_json::from_str(json).unwrap();
        assert_eq!(settings.no_proxy, ["example.com"]);
        assert!(serde_json::from_str::<ProxySettings>(r#"{"ftp":"x"}"#).is_err());
    }
}
