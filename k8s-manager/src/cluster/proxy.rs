//! The proxy the user's network needs (`proxy.*` settings), and the
//! environment it gives to what the manager starts.

use serde::{Deserialize, Serialize};

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
