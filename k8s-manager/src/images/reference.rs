//! Image names as Docker shows them and as Kubernetes resolves them.
//!
//! A pod naming `myapp:dev` makes the kubelet ask containerd's CRI for
//! `docker.io/library/myapp:dev`: that is the name an image of Docker's must
//! have in containerd's `k8s.io` namespace. The rules are those of
//! [`crate::runtime::images::normalize_reference`] (one place decides them);
//! this module adds what the image sync and the image endpoint need on top.

use crate::runtime::images::normalize_reference;

/// The registry Docker and Kubernetes assume for a name without one.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// The name containerd's CRI resolves a Docker tag to, or `None` for what
/// is not a tag (`<none>:<none>`, a digest reference, an empty string).
pub fn k8s_name(docker_tag: &str) -> Option<String> {
    let tag = docker_tag.trim();
    if tag.is_empty() || tag.starts_with("<none>") || tag.contains('@') {
        return None;
    }
    if tag
        .chars()
        .any(|c| c.is_whitespace() || c.is_ascii_uppercase())
    {
        return None;
    }
    Some(normalize_reference(tag))
}

/// The full name a repository of the `docker.io` registry has in
/// containerd (`library/myapp` → `docker.io/library/myapp`), as the image
/// endpoint is asked for it; `None` when it is not a repository path.
pub fn docker_io_repository(path: &str) -> Option<String> {
    let valid = !path.is_empty()
        && path.split('/').all(|part| {
            part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    valid.then(|| format!("{DEFAULT_REGISTRY}/{path}"))
}

/// `repository:tag` → (`repository`, `tag`); the tag is what follows the
/// last `:` after the last `/` (a registry port is not a tag).
pub fn split_tag(name: &str) -> (&str, Option<&str>) {
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].rfind(':') {
        Some(i) => (&name[..last + i], Some(&name[last + i + 1..])),
        None => (name, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_tags_become_the_names_kubernetes_resolves() {
        let cases = [
            ("myapp:dev", "docker.io/library/myapp:dev"),
            ("myapp", "docker.io/library/myapp:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("user/app:1.2", "docker.io/user/app:1.2"),
            ("docker.io/myapp:1", "docker.io/library/myapp:1"),
            ("host:5000/x:y", "host:5000/x:y"),
            ("host:5000/x", "host:5000/x:latest"),
            ("localhost/x:y", "localhost/x:y"),
            (
                "registry.example/team/app:v1",
                "registry.example/team/app:v1",
            ),
        ];
        for (tag, name) in cases {
            assert_eq!(k8s_name(tag).as_deref(), Some(name), "{tag}");
        }
    }

    #[test]
    fn what_is_not_a_tag_has_no_name() {
        for tag in ["", "<none>:<none>", "myapp@sha256:aa", "My App:1", "App:1"] {
            assert_eq!(k8s_name(tag), None, "{tag:?}");
        }
    }

    #[test]
    fn repositories_of_the_endpoint_are_docker_io_paths() {
        assert_eq!(
            docker_io_repository("library/myapp").as_deref(),
            Some("docker.io/library/myapp")
        );
        assert_eq!(
            docker_io_repository("user/app").as_deref(),
            Some("docker.io/user/app")
        );
        for bad in ["", "/x", "x//y", "../x", "X/y", "x y", "a/b%2f"] {
            assert_eq!(docker_io_repository(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_registry_port_is_not_a_tag() {
        assert_eq!(split_tag("host:5000/x:y"), ("host:5000/x", Some("y")));
        assert_eq!(split_tag("host:5000/x"), ("host:5000/x", None));
        assert_eq!(
            split_tag("docker.io/library/a:latest"),
            ("docker.io/library/a", Some("latest"))
        );
    }
}
