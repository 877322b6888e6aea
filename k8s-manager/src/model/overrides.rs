//! `components.<name>.extraArgs` and `components.<name>.env`: what a user
//! adds to a component's command line and environment (a flag to raise a
//! log level, a feature gate, a variable for debugging), for each process of
//! the cluster by the name it runs under.
//!
//! Here: the section of the settings document, and the checks of its form
//! (a flag is `--name` or `--name=value`, a variable has a valid name). The
//! flags and variables the manager sets itself are refused by
//! [`crate::components::overrides`], which knows them from the components'
//! own command lines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::field::{HIDDEN, SettingsError};

/// The components, by the names their processes run under, in the order
/// they start.
pub const NAMES: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
];

/// A flag or a value longer than this is no flag anyone types.
pub const MAX_ARG_BYTES: usize = 4096;
/// More overrides than this for one component is not an override any more.
pub const MAX_ENTRIES: usize = 64;

/// The `components` section: one entry per component, each empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentOverrides {
    pub etcd: Overrides,
    #[serde(rename = "kube-apiserver")]
    pub kube_apiserver: Overrides,
    #[serde(rename = "kube-controller-manager")]
    pub kube_controller_manager: Overrides,
    #[serde(rename = "kube-scheduler")]
    pub kube_scheduler: Overrides,
    pub kubelet: Overrides,
    #[serde(rename = "kube-proxy")]
    pub kube_proxy: Overrides,
}

/// What is added to one component's command line and environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Overrides {
    /// Flags appended after the manager's own (`--v=4`): for a flag given
    /// twice the last one wins, so a user's default of ours (a log level)
    /// takes effect.
    pub extra_args: Vec<String>,
    /// Variables added to the component's environment, `NAME` → value. A
    /// number or a boolean is taken as its text (`settings set
    /// components.etcd.env.GOGC=50` reads `50` as JSON).
    #[serde(deserialize_with = "values_as_text")]
    pub env: BTreeMap<String, String>,
}

/// A map of strings, whose numbers and booleans are taken as their text.
fn values_as_text<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Text(String);
    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
            deserializer.deserialize_any(TextVisitor)
        }
    }
    struct TextVisitor;
    impl serde::de::Visitor<'_> for TextVisitor {
        type Value = Text;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a text (or a number, or true or false)")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
            Ok(Text(v.to_string()))
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Text, E> {
            Ok(Text(v.to_string()))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
            Ok(Text(v.to_string()))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Text, E> {
            Ok(Text(v.to_string()))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Text, E> {
            Ok(Text(v.to_string()))
        }
    }
    let map = BTreeMap::<String, Text>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(name, Text(text))| (name, text))
        .collect())
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.extra_args.is_empty() && self.env.is_empty()
    }
}

impl ComponentOverrides {
    /// The overrides of the component `name`; `None` for a name that is no
    /// component.
    pub fn get(&self, name: &str) -> Option<&Overrides> {
        self.iter().find(|(n, _)| *n == name).map(|(_, o)| o)
    }

    /// Each component's name with its overrides, in [`NAMES`]' order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Overrides)> {
        NAMES.into_iter().zip([
            &self.etcd,
            &self.kube_apiserver,
            &self.kube_controller_manager,
            &self.kube_scheduler,
            &self.kubelet,
            &self.kube_proxy,
        ])
    }

    /// Each component's name with its overrides, to change.
    fn iter_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut Overrides)> {
        NAMES.into_iter().zip([
            &mut self.etcd,
            &mut self.kube_apiserver,
            &mut self.kube_controller_manager,
            &mut self.kube_scheduler,
            &mut self.kubelet,
            &mut self.kube_proxy,
        ])
    }

    /// As shown outside the daemon: every variable's value is write-only
    /// (one may be a token, and nothing tells which), [`HIDDEN`]; the names
    /// and the flags are shown.
    pub fn redacted(&self) -> ComponentOverrides {
        let mut shown = self.clone();
        for (_, overrides) in shown.iter_mut() {
            for value in overrides.env.values_mut() {
                *value = HIDDEN.to_string();
            }
        }
        shown
    }

    /// In `self` (the overrides asked for), a variable whose value is
    /// [`HIDDEN`] keeps the value `current` (the saved overrides) has for
    /// it; [`HIDDEN`] for a variable with no value saved is refused (it is
    /// never saved as a value).
    pub fn keep_values(&mut self, current: &ComponentOverrides) -> Result<(), SettingsError> {
        for (name, overrides) in self.iter_mut() {
            let saved = current.get(name).map(|o| &o.env);
            for (variable, value) in overrides.env.iter_mut() {
                if value != HIDDEN {
                    continue;
                }
                match saved.and_then(|env| env.get(variable)) {
                    Some(saved) => value.clone_from(saved),
                    None => {
                        return Err(SettingsError::new(
                            format!("components.{name}.env.{variable}"),
                            format!(
                                "{HIDDEN} stands for the value already set, and the variable has none: type its value"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the form of every override, each problem with its field
    /// (`components.kubelet.extraArgs[1]`, `components.etcd.env.GOGC`).
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (name, overrides) in self.iter() {
            let field = format!("components.{name}.extraArgs");
            if overrides.extra_args.len() > MAX_ENTRIES {
                return Err(SettingsError::new(
                    field,
                    format!("at most {MAX_ENTRIES} flags"),
                ));
            }
            for (i, arg) in overrides.extra_args.iter().enumerate() {
                flag_name(arg).map_err(|why| SettingsError::new(format!("{field}[{i}]"), why))?;
            }
            let field = format!("components.{name}.env");
            if overrides.env.len() > MAX_ENTRIES {
                return Err(SettingsError::new(
                    field,
                    format!("at most {MAX_ENTRIES} variables"),
                ));
            }
            for (variable, value) in &overrides.env {
                if !is_variable_name(variable) {
                    // The name is the field's last part: not repeated.
                    return Err(SettingsError::new(
                        format!("{field}.{variable}"),
                        "is not a variable name (letters, digits and '_', not starting with a digit)",
                    ));
                }
                if value.len() > MAX_ARG_BYTES || value.contains('\0') {
                    return Err(SettingsError::new(
                        format!("{field}.{variable}"),
                        format!("a value is at most {MAX_ARG_BYTES} bytes, without a NUL byte"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The name of a flag written `--name` or `--name=value` (`v` of `--v=4`),
/// or why `arg` is not one. The message never repeats the value.
pub fn flag_name(arg: &str) -> Result<&str, String> {
    let form = "write a flag as --name or --name=value (one flag an entry, its value after '=')";
    let Some(rest) = arg.strip_prefix("--") else {
        return Err(format!("not a flag: {form}"));
    };
    let name = rest.split_once('=').map_or(rest, |(name, _)| name);
    let good = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !good {
        return Err(format!("not a flag name: {form}"));
    }
    if arg.len() > MAX_ARG_BYTES || arg.contains('\0') {
        return Err(format!(
            "a flag is at most {MAX_ARG_BYTES} bytes, without a NUL byte"
        ));
    }
    Ok(name)
}

/// A flag's name as the components' flag parser takes it: Kubernetes
/// programs read `_` as `-` (`--anonymous_auth` is `--anonymous-auth`).
pub fn normalized_flag(name: &str) -> String {
    name.replace('_', "-")
}

/// A variable name as a shell takes it: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_one_form() {
        assert_eq!(flag_name("--v=4"), Ok("v"));
        assert_eq!(flag_name("--audit-log-maxage=5"), Ok("audit-log-maxage"));
        assert_eq!(
            flag_name("--feature-gates=A=true,B=false"),
            Ok("feature-gates")
        );
        assert_eq!(flag_name("--profiling"), Ok("profiling"));
        assert_eq!(flag_name("--anonymous_auth=true"), Ok("anonymous_auth"));
        assert_eq!(normalized_flag("anonymous_auth"), "anonymous-auth");
        for bad in [
            "", "-v=4", "v=4", "4", "--", "--=4", "---v", "--v 4", "--a b=1", "--é=1",
        ] {
            let err = flag_name(bad).unwrap_err();
            assert!(err.contains("--name=value"), "{bad:?}: {err}");
        }
        assert!(flag_name("--v=\0").is_err());
        assert!(flag_name(&format!("--v={}", "9".repeat(MAX_ARG_BYTES))).is_err());
    }

    #[test]
    fn variable_names_are_a_shells() {
        for good in ["GOGC", "_X", "http2_debug", "A1"] {
            assert!(is_variable_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "A.B"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_component_has_its_entry_in_order() {
        let mut overrides = ComponentOverrides::default();
        overrides.kube_proxy.extra_args.push("--v=2".into());
        let names: Vec<&str> = overrides.iter().map(|(n, _)| n).collect();
        assert_eq!(names, NAMES);
        assert_eq!(overrides.get("kube-proxy").unwrap().extra_args, ["--v=2"]);
        assert!(overrides.get("kube-dns").is_none());
        // The document's keys are the names.
        let value = serde_json::to_value(&overrides).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, NAMES);
    }

    #[test]
    fn a_variables_number_or_boolean_is_its_text() {
        let read: Overrides = serde_json::from_value(serde_json::json!({
            "env": {"GOGC": 50, "DEBUG": true, "RATIO": 1.5, "NAME": "x"}
        }))
        .unwrap();
        let texts: Vec<(&str, &str)> = read
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                ("DEBUG", "true"),
                ("GOGC", "50"),
                ("NAME", "x"),
                ("RATIO", "1.5")
            ]
        );
        let err =
            serde_json::from_value::<Overrides>(serde_json::json!({"env": {"X": []}})).unwrap_err();
        assert!(err.to_string().contains("expected a text"), "{err}");
    }

    #[test]
    fn a_bad_override_is_named_by_its_field() {
        let mut overrides = ComponentOverrides::default();
        overrides.kubelet.extra_args = vec!["--v=4".into(), "-v=4".into()];
        let err = overrides.validate().unwrap_err();
        assert_eq!(err.field, "components.kubelet.extraArgs[1]");
        overrides.kubelet.extra_args.pop();
        overrides.validate().unwrap();
        overrides.etcd.env.insert("GO-GC".into(), "50".into());
        let err = overrides.validate().unwrap_err();
        assert_eq!(err.field, "components.etcd.env.GO-GC");
        overrides.etcd.env.clear();
        overrides.etcd.env.insert("GOGC".into(), "a\0b".into());
        assert_eq!(
            overrides.validate().unwrap_err().field,
            "components.etcd.env.GOGC"
        );
        overrides.etcd.env.clear();
        overrides.kube_scheduler.extra_args = vec!["--v=1".into(); MAX_ENTRIES + 1];
        assert_eq!(
            overrides.validate().unwrap_err().field,
            "components.kube-scheduler.extraArgs"
        );
    }
}
