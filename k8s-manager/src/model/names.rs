//! Names as Kubernetes and DNS take them: checked by the settings (a node
//! name, a domain) and by the proxy's NO_PROXY entries.

/// A lowercase DNS name: what Kubernetes takes for a node or a domain.
pub(crate) fn is_dns_label_chain(name: &str) -> bool {
    is_label_chain(name, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
    })
}

/// Dot-separated labels of 1 to 63 bytes each allowed by `byte`, none
/// starting or ending with `-`, 253 bytes at most in all.
pub(crate) fn is_label_chain(name: &str, byte: impl Fn(u8) -> bool) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(&byte)
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
