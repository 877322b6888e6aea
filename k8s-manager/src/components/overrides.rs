//! The user's overrides of a component (`components.<name>.extraArgs` and
//! `.env`, see [`crate::model::overrides`]) against what the manager wires.
//!
//! What the manager owns is read from the components themselves, never
//! listed twice: every flag a component's [`Component::spec`] passes (but
//! those it declares defaults, [`Component::defaults`]), every flag that
//! would override its configuration file ([`Component::config_flags`]), and
//! every variable its spec sets, with the proxy's (from `proxy.*`) and the
//! supervisor's markers. A flag added to a spec is owned from then on.
//!
//! A change that sets one of these is refused naming the field and why. What
//! is accepted is appended to the command line (after the manager's flags,
//! so that for a default of ours the user's value wins) and to the
//! environment by [`with_overrides`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{ALL, Cgroups, Component, Context};
use crate::model::config::{ClusterConfig, DEFAULT_STATE_DIR};
use crate::model::overrides::{ComponentOverrides, Overrides, flag_name, normalized_flag};
use crate::model::settings::SettingsError;
use crate::supervisor::ProcessSpec;

/// The component of a name (`kube-apiserver`).
pub fn component(name: &str) -> Option<&'static dyn Component> {
    ALL.into_iter().find(|c| c.name() == name)
}

/// A context with the default paths and placeholder addresses: what a
/// component's flag names and variable names are read from (they do not
/// depend on the values).
fn placeholder_context() -> Context {
    let config = ClusterConfig::new(DEFAULT_STATE_DIR.into(), "/bundle".into());
    Context {
        paths: config.paths(),
        config,
        bin: PathBuf::from("/bundle/bin"),
        checked: BTreeMap::new(),
        kubernetes_version: String::new(),
        advertise_address: std::net::Ipv4Addr::LOCALHOST.into(),
        cgroup: Cgroups {
            v2: true,
            systemd: false,
        },
        resolv_conf: PathBuf::from("/etc/resolv.conf"),
        proxy_env: Vec::new(),
        api_bootstrapped: false,
    }
}

/// Where a flag of the manager's comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagSource {
    /// The component's command line.
    CommandLine,
    /// Its configuration file, which a flag would override.
    ConfigFile,
}

/// The flags `component` is wired with, by name (`anonymous-auth`), with
/// where each comes from.
fn owned_flags(component: &dyn Component) -> BTreeMap<String, FlagSource> {
    let spec = component.spec(&placeholder_context());
    let mut owned = BTreeMap::new();
    for arg in &spec.args {
        if let Ok(name) = flag_name(arg)
            && !component.defaults().contains(&name)
        {
            owned.insert(normalized_flag(name), FlagSource::CommandLine);
        }
    }
    for name in component.config_flags() {
        owned
            .entry(normalized_flag(name))
            .or_insert(FlagSource::ConfigFile);
    }
    owned
}

/// The variables of `component`'s environment that are the manager's, with why.
fn owned_variables(component: &dyn Component) -> BTreeMap<String, String> {
    let mut owned = BTreeMap::new();
    let spec = component.spec(&placeholder_context());
    for (name, value) in &spec.env {
        owned.insert(
            name.clone(),
            format!(
                "is the manager's: it starts {} with {name}={value}",
                component.name()
            ),
        );
    }
    for name in crate::model::proxy::VARIABLES {
        owned.insert(
            name.to_string(),
            "comes from the proxy settings (proxy.http, proxy.https, proxy.noProxy): set those instead"
                .into(),
        );
    }
    for name in [
        crate::supervisor::INSTANCE_ENV,
        crate::supervisor::COMPONENT_ENV,
    ] {
        owned.insert(
            name.to_string(),
            "is the manager's: it marks the processes it started".into(),
        );
    }
    owned
}

/// Why the override `arg` of `component` is refused, if it is.
fn refused_flag(component: &dyn Component, arg: &str) -> Option<String> {
    let name = match flag_name(arg) {
        Ok(name) => name,
        Err(why) => return Some(why),
    };
    let normalized = normalized_flag(name);
    let component_name = component.name();
    owned_flags(component)
        .get(&normalized)
        .map(|source| match source {
            FlagSource::CommandLine => format!(
                "--{name} is the manager's: it starts {component_name} with its own --{normalized} \
             (the certificates, addresses, ports and security settings it wires are not overridden)"
            ),
            FlagSource::ConfigFile => format!(
                "--{name} is the manager's: {component_name}'s configuration file sets it, \
             and a flag would override that"
            ),
        })
}

/// Checks the overrides of each component whose overrides differ from
/// `current`'s (all of them without `current`): the first flag or variable
/// the manager owns is refused, naming its field and why. A component left
/// as it was is not judged again: a flag a later manager came to own does
/// not block every other change (it is left out at start, see
/// [`with_overrides`]).
pub fn check(
    overrides: &ComponentOverrides,
    current: Option<&ComponentOverrides>,
) -> Result<(), SettingsError> {
    for (name, wanted) in overrides.iter() {
        if current.and_then(|c| c.get(name)) == Some(wanted) {
            continue;
        }
        let component = component(name).expect("the model's names are the components'");
        for (i, arg) in wanted.extra_args.iter().enumerate() {
            if let Some(why) = refused_flag(component, arg) {
                return Err(SettingsError::new(
                    format!("components.{name}.extraArgs[{i}]"),
                    why,
                ));
            }
        }
        let owned = owned_variables(component);
        for variable in wanted.env.keys() {
            if let Some(why) = owned.get(variable) {
                return Err(SettingsError::new(
                    format!("components.{name}.env.{variable}"),
                    why.clone(),
                ));
            }
        }
    }
    Ok(())
}

/// The overrides of `overrides` that the manager would leave out, each said
/// with its field and why (none, but for one saved by an earlier manager
/// that owned less).
pub fn refused(overrides: &ComponentOverrides) -> Vec<String> {
    let mut refused = Vec::new();
    for (name, wanted) in overrides.iter() {
        let component = component(name).expect("the model's names are the components'");
        let (_, _, left_out) = accepted(component, wanted);
        refused.extend(
            left_out
                .into_iter()
                .map(|why| format!("components.{name}.{why}")),
        );
    }
    refused
}

/// The flags and variables of `wanted` that `component` takes, and what is
/// left out (`extraArgs[0]: why`).
fn accepted(
    component: &dyn Component,
    wanted: &Overrides,
) -> (Vec<String>, Vec<(String, String)>, Vec<String>) {
    let mut left_out = Vec::new();
    let mut args = Vec::new();
    for (i, arg) in wanted.extra_args.iter().enumerate() {
        match refused_flag(component, arg) {
            Some(why) => left_out.push(format!("extraArgs[{i}]: {why}")),
            None => args.push(arg.clone()),
        }
    }
    let owned = owned_variables(component);
    let mut env = Vec::new();
    for (variable, value) in &wanted.env {
        match owned.get(variable) {
            Some(why) => left_out.push(format!("env.{variable}: {why}")),
            None => env.push((variable.clone(), value.clone())),
        }
    }
    (args, env, left_out)
}

/// `component`'s spec with the user's overrides of `ctx` added: flags after
/// the manager's, variables after its. A spec that differs from the running
/// one restarts that component, and only it.
pub fn with_overrides(component: &dyn Component, ctx: &Context) -> ProcessSpec {
    let mut spec = component.spec(ctx);
    let Some(wanted) = ctx.config.components.get(component.name()) else {
        return spec;
    };
    if wanted.is_empty() {
        return spec;
    }
    let (args, env, left_out) = accepted(component, wanted);
    for why in left_out {
        tracing::warn!(
            "components.{}.{why}: left out of its command line",
            component.name()
        );
    }
    spec.args.extend(args);
    spec.env.extend(env);
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::{ApiServer, Etcd, KubeProxy, Kubelet, test_support};
    use crate::model::overrides::NAMES;

    #[test]
    fn the_models_names_are_the_components() {
        let names: Vec<&str> = ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, NAMES);
    }

    #[test]
    fn every_default_is_a_flag_of_the_spec() {
        let ctx = placeholder_context();
        for component in ALL {
            let spec = component.spec(&ctx);
            for name in component.defaults() {
                assert!(
                    spec.args.iter().any(|a| flag_name(a) == Ok(name)),
                    "{}: --{name} is no flag of its spec",
                    component.name()
                );
            }
        }
    }

    fn refused(name: &str, arg: &str) -> Option<String> {
        refused_flag(component(name).unwrap(), arg)
    }

    #[test]
    fn the_flags_the_manager_wires_are_refused_with_why() {
        for (name, arg) in [
            ("kube-apiserver", "--anonymous-auth=true"),
            ("kube-apiserver", "--anonymous_auth=true"),
            ("kube-apiserver", "--anonymous-auth"),
            ("kube-apiserver", "--authorization-mode=AlwaysAllow"),
            ("kube-apiserver", "--tls-cert-file=/tmp/x.crt"),
            ("kube-apiserver", "--etcd-servers=http://127.0.0.1:2379"),
            ("kube-apiserver", "--secure-port=7443"),
            ("kube-apiserver", "--service-cluster-ip-range=10.0.0.0/16"),
            ("kube-controller-manager", "--kubeconfig=/tmp/k"),
            ("kube-controller-manager", "--cluster-signing-key-file=/k"),
            ("kube-scheduler", "--bind-address=0.0.0.0"),
            ("etcd", "--data-dir=/tmp/etcd"),
            ("etcd", "--listen-client-urls=http://0.0.0.0:2379"),
            ("kubelet", "--kubeconfig=/tmp/k"),
            ("kube-proxy", "--config=/tmp/c"),
        ] {
            let why = refused(name, arg).unwrap_or_else(|| panic!("{name} {arg} taken"));
            assert!(why.contains("is the manager's"), "{why}");
            assert!(why.contains(name), "{why}");
        }
    }

    #[test]
    fn what_a_configuration_file_sets_is_owned_too() {
        for (name, arg) in [
            ("kubelet", "--anonymous-auth=true"),
            ("kubelet", "--authorization-mode=AlwaysAllow"),
            ("kubelet", "--read-only-port=10255"),
            ("kubelet", "--client-ca-file=/x"),
            ("kubelet", "--container-runtime-endpoint=unix:///x"),
            ("kube-proxy", "--kubeconfig=/x"),
            ("kube-proxy", "--proxy-mode=ipvs"),
            ("kube-proxy", "--healthz-bind-address=0.0.0.0:10256"),
        ] {
            let why = refused(name, arg).unwrap_or_else(|| panic!("{name} {arg} taken"));
            assert!(why.contains("configuration file"), "{why}");
        }
    }

    #[test]
    fn defaults_and_other_flags_are_the_users() {
        for (name, arg) in [
            ("kube-apiserver", "--v=4"),
            ("kube-apiserver", "--audit-log-maxage=5"),
            ("kube-apiserver", "--feature-gates=A=true"),
            // Ours is a default (--v=1): the user's comes after and wins.
            ("kubelet", "--v=4"),
            ("kubelet", "--eviction-hard=memory.available<50Mi"),
            ("kube-controller-manager", "--kube-api-qps=50"),
            ("etcd", "--snapshot-count=5000"),
            ("etcd", "--log-level=debug"),
            ("kube-proxy", "--v=2"),
            ("kube-scheduler", "--v=3"),
        ] {
            assert_eq!(refused(name, arg), None, "{name} {arg}");
        }
        // A malformed flag, whatever its name.
        assert!(refused("kubelet", "-v=4").unwrap().contains("--name=value"));
    }

    #[test]
    fn check_names_the_field_and_judges_only_what_changed() {
        let mut wanted = ComponentOverrides::default();
        wanted.kube_apiserver.extra_args = vec!["--v=4".into(), "--anonymous-auth=true".into()];
        let err = check(&wanted, None).unwrap_err();
        assert_eq!(err.field, "components.kube-apiserver.extraArgs[1]");
        assert!(err.message.contains("--anonymous-auth"), "{err}");
        // Saved already (by a manager that owned less): not judged again.
        check(&wanted, Some(&wanted.clone())).unwrap();
        let mut more = wanted.clone();
        more.kubelet.env.insert("GOGC".into(), "50".into());
        check(&more, Some(&wanted)).unwrap();

        for (component, variable, why) in [
            ("kube-apiserver", "GODEBUG", "multipathtcp=0"),
            ("kubelet", "HTTPS_PROXY", "proxy.https"),
            ("etcd", "no_proxy", "proxy.noProxy"),
            ("kube-proxy", "K8S_MANAGER_INSTANCE", "marks the processes"),
            (
                "kube-scheduler",
                "K8S_MANAGER_COMPONENT",
                "marks the processes",
            ),
        ] {
            let mut wanted = ComponentOverrides::default();
            let overrides = match component {
                "kube-apiserver" => &mut wanted.kube_apiserver,
                "kubelet" => &mut wanted.kubelet,
                "etcd" => &mut wanted.etcd,
                "kube-proxy" => &mut wanted.kube_proxy,
                _ => &mut wanted.kube_scheduler,
            };
            overrides.env.insert(variable.into(), "x".into());
            let err = check(&wanted, None).unwrap_err();
            assert_eq!(err.field, format!("components.{component}.env.{variable}"));
            assert!(err.message.contains(why), "{err}");
        }
        // GODEBUG is the API server's only.
        let mut wanted = ComponentOverrides::default();
        wanted.etcd.env.insert("GODEBUG".into(), "x=1".into());
        check(&wanted, None).unwrap();
    }

    #[test]
    fn overrides_come_after_the_managers_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = test_support::context(dir.path());
        let plain = with_overrides(&ApiServer, &ctx);
        assert_eq!(plain, ApiServer.spec(&ctx));
        ctx.config.components.kube_apiserver.extra_args = vec!["--v=3".into()];
        ctx.config
            .components
            .kube_apiserver
            .env
            .insert("GOGC".into(), "50".into());
        let spec = with_overrides(&ApiServer, &ctx);
        assert_eq!(spec.args.last().unwrap(), "--v=3");
        assert_eq!(spec.args[..spec.args.len() - 1], plain.args[..]);
        assert_eq!(spec.env.last().unwrap(), &("GOGC".into(), "50".into()));
        // The other components' specs are as they were: only this one restarts.
        for other in [&Etcd as &dyn Component, &Kubelet, &KubeProxy] {
            assert_eq!(with_overrides(other, &ctx), other.spec(&ctx));
        }
        // One the manager owns (saved by an earlier manager) is left out.
        ctx.config
            .components
            .kube_apiserver
            .extra_args
            .push("--anonymous-auth=true".into());
        let spec = with_overrides(&ApiServer, &ctx);
        assert!(!spec.args.contains(&"--anonymous-auth=true".to_string()));
        let said = super::refused(&ctx.config.components);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("components.kube-apiserver.extraArgs[1]: --anonymous-auth"),
            "{said:?}"
        );
    }
}
