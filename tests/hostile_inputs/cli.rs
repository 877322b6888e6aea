//! Hostile inputs: cli. The command line as a script or a careless user
//! gives it: extreme numbers and odd strings never panic; with
//! `--output json` every result is JSON with camelCase keys, and every
//! error one JSON object with a stable code; no message says a cause twice.
//! Every run has its own state folder and bundle cache, and none but the
//! last test starts the daemon (each enable is refused before it would).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use k8s_manager::bundle::manifest::CLUSTER_EXECUTABLES;

use crate::support::{manager_bin, run};

/// The manager, with everything it could read from the environment unset,
/// its state and cache in `dir`, and `dir` its working folder (a relative
/// path given to it lands there).
fn manager(dir: &Path) -> Command {
    let mut cmd = manager_without_state(dir);
    cmd.arg("--state-dir").arg(dir.join("state"));
    cmd
}

fn manager_without_state(dir: &Path) -> Command {
    let mut cmd = Command::new(manager_bin());
    cmd.current_dir(dir);
    cmd.env("K8S_MANAGER_CACHE", dir.join("cache"));
    for var in [
        "K8S_MANAGER_STATE_DIR",
        "K8S_MANAGER_KUBECONFIG",
        "K8S_MANAGER_HOST_KUBECONFIG",
        "K8S_MANAGER_HOST_USERPROFILE",
        "K8S_MANAGER_HOST_USERNAME",
        "K8S_MANAGER_HOST_MOUNT_ROOT",
        "K8S_MANAGER_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn ours() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/kubeconfig/ours-docker-desktop.yaml")
}

fn unparsable() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kubeconfig/unparsable.yaml")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Every key of `value`, at every depth, with its path.
fn keys(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                out.push(format!("{path}.{key}"));
                keys(value, &format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                keys(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_camel_case(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// The keys of `value` that are not camelCase.
fn non_camel_keys(value: &Value) -> Vec<String> {
    let mut all = Vec::new();
    keys(value, "", &mut all);
    all.into_iter()
        .filter(|path| !is_camel_case(path.rsplit('.').next().unwrap()))
        .collect()
}

/// Standard output as one JSON value; fails on anything else.
fn json_of(cmd: &Command, out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("not one JSON value ({err}): {}", describe(cmd, out)))
}

/// A bundle of stand-in executables that passes `verify --digests-only`,
/// except that the manifest's digest of `corrupt`, if given, is wrong.
fn bundle(dir: &Path, corrupt: Option<&str>) -> PathBuf {
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(bundle.join("bin")).unwrap();
    let mut files = Vec::new();
    let mut executables = Vec::new();
    for name in CLUSTER_EXECUTABLES {
        let path = format!("bin/{name}");
        let content = format!("#!/bin/sh\necho {name} v1.34.4\n");
        std::fs::write(bundle.join(&path), &content).unwrap();
        std::fs::set_permissions(bundle.join(&path), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let sha256 = if corrupt == Some(name) {
            "0".repeat(64)
        } else {
            format!("{:x}", sha2::Sha256::digest(content.as_bytes()))
        };
        files.push(serde_json::json!({
            "path": path, "sha256": sha256, "size": content.len(), "executable": true,
        }));
        executables.push(serde_json::json!({
            "path": path, "args": ["--version"], "expect": "v1.34.4",
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 1,
        "kubernetes": "v1.34.4",
        "components": {"kubernetes": "v1.34.4", "etcd": "3.6.5"},
        "executables": executables,
        "files": files,
    });
    std::fs::write(bundle.join("bundle.json"), manifest.to_string()).unwrap();
    bundle
}

fn generate_pki(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    let mut cmd = manager(dir);
    cmd.args([
        "certs",
        "generate",
        "--node-name",
        "node",
        "--advertise-address",
        "10.0.0.2",
    ])
    .arg("--pki-dir")
    .arg(&pki);
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    pki
}

#[test]
fn every_json_result_parses_and_has_only_camel_case_keys() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = generate_pki(dir);
    let profile = dir.join("mnt/c/Users/dev");
    std::fs::create_dir_all(&profile).unwrap();
    let config = dir.join("config");

    let mut commands: Vec<(Vec<String>, bool)> = vec![
        (vec!["status".into()], true),
        (
            vec![
                "certs".into(),
                "check".into(),
                "--pki-dir".into(),
                pki.display().to_string(),
            ],
            true,
        ),
        (
            vec![
                "certs".into(),
                "check".into(),
                "--pki-dir".into(),
                dir.join("none").display().to_string(),
            ],
            false,
        ),
        (
            vec![
                "kubeconfig".into(),
                "merge".into(),
                "--from".into(),
                ours().display().to_string(),
                "--into".into(),
                config.display().to_string(),
            ],
            true,
        ),
        (
            vec![
                "kubeconfig".into(),
                "remove".into(),
                "--from".into(),
                config.display().to_string(),
            ],
            true,
        ),
        (
            vec![
                "kubeconfig".into(),
                "discover".into(),
                "--mount-root".into(),
                dir.join("mnt").display().to_string(),
            ],
            true,
        ),
        (
            vec![
                "bundle".into(),
                "verify".into(),
                "--digests-only".into(),
                bundle(dir, None).display().to_string(),
            ],
            true,
        ),
    ];
    let broken = bundle(&dir.join("broken"), Some("kubelet"));
    commands.push((
        vec![
            "bundle".into(),
            "verify".into(),
            "--digests-only".into(),
            broken.display().to_string(),
        ],
        false,
    ));
    for (args, succeeds) in commands {
        let mut cmd = manager(dir);
        cmd.args(&args).args(["--output", "json"]);
        let out = run(&mut cmd);
        assert_eq!(out.status.success(), succeeds, "{}", describe(&cmd, &out));
        let value = json_of(&cmd, &out);
        assert!(value.is_object(), "{}", describe(&cmd, &out));
        assert_eq!(
            non_camel_keys(&value),
            Vec::<String>::new(),
            "{}",
            describe(&cmd, &out)
        );
        // A result that reports a failure says so where every error does.
        assert_eq!(
            value.get("error").is_some(),
            !succeeds,
            "{}",
            describe(&cmd, &out)
        );
        if !succeeds {
            assert!(
                value["error"]["code"].is_string(),
                "{}",
                describe(&cmd, &out)
            );
            assert!(!value["error"]["problems"].as_array().unwrap().is_empty());
        }
    }
}

/// A failure with `--output json`: one object on standard output, with the
/// code, and the exit code.
fn assert_json_error(cmd: &mut Command, code: &str, exit: i32) -> Value {
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(exit), "{}", describe(cmd, &out));
    let value = json_of(cmd, &out);
    assert_eq!(value["error"]["code"], code, "{}", describe(cmd, &out));
    let message = value["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{}", describe(cmd, &out));
    assert!(
        !text(&out.stderr).contains("error:"),
        "{}",
        describe(cmd, &out)
    );
    assert_eq!(
        non_camel_keys(&value),
        Vec::<String>::new(),
        "{}",
        describe(cmd, &out)
    );
    value
}

#[test]
fn an_error_with_output_json_is_one_json_object_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let json = ["--output", "json"];
    let config = dir.join("config");

    let mut cmd = manager(dir);
    cmd.args(["kubeconfig", "merge", "--from"])
        .arg(dir.join("missing"))
        .arg("--into")
        .arg(&config)
        .args(json);
    assert_json_error(&mut cmd, "IoError", 1);

    let mut cmd = manager(dir);
    cmd.args(["kubeconfig", "merge", "--from"])
        .arg(unparsable())
        .arg("--into")
        .arg(&config)
        .args(json);
    assert_json_error(&mut cmd, "InvalidKubeconfig", 1);

    let mut cmd = manager(dir);
    cmd.args(["kubeconfig", "merge", "--from"])
        .arg(ours())
        .args(["--into", ""])
        .args(json);
    assert_json_error(&mut cmd, "InvalidArgument", 2);

    std::fs::write(dir.join("config.lock"), "").unwrap();
    let mut cmd = manager(dir);
    cmd.args(["kubeconfig", "merge", "--lock-timeout", "100ms", "--from"])
        .arg(ours())
        .arg("--into")
        .arg(&config)
        .args(json);
    assert_json_error(&mut cmd, "LockTimeout", 1);

    let mut cmd = manager(dir);
    cmd.args(["kubeconfig", "discover", "--mount-root"])
        .arg(dir.join("nothing-mounted"))
        .args(json);
    assert_json_error(&mut cmd, "HostProfileNotFound", 1);

    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::write(pki.join("ca.crt"), "not a certificate").unwrap();
    let mut cmd = manager(dir);
    cmd.args(["certs", "check", "--pki-dir"])
        .arg(&pki)
        .args(json);
    assert_json_error(&mut cmd, "PkiInvalid", 1);

    let mut cmd = manager(dir);
    cmd.args(["bundle", "verify"])
        .arg(dir.join("no-bundle"))
        .args(json);
    assert_json_error(&mut cmd, "BundleInvalid", 1);

    std::fs::create_dir_all(dir.join("bad-bundle")).unwrap();
    std::fs::write(dir.join("bad-bundle/bundle.json"), "{").unwrap();
    let mut cmd = manager(dir);
    cmd.args(["bundle", "verify"])
        .arg(dir.join("bad-bundle"))
        .args(json);
    assert_json_error(&mut cmd, "BundleInvalid", 1);

    // Settings refused by the daemon, naming the setting; nothing saved.
    let mut cmd = manager(dir);
    cmd.args(["enable", "--api-port", "0", "--bundle"])
        .arg(dir)
        .args(json);
    let value = assert_json_error(&mut cmd, "InvalidSettings", 2);
    assert_eq!(value["error"]["field"], "kubernetes.apiPort");
    let mut cmd = manager(dir);
    cmd.args(["enable", "--node-name", "Not A Name", "--bundle"])
        .arg(dir)
        .args(json);
    let value = assert_json_error(&mut cmd, "InvalidSettings", 2);
    assert_eq!(value["error"]["field"], "kubernetes.nodeName");
    let mut cmd = manager(dir);
    cmd.args(["enable"]).args(json);
    let value = assert_json_error(&mut cmd, "InvalidSettings", 2);
    assert_eq!(value["error"]["field"], "kubernetes.version");
    let message = value["error"]["message"].as_str().unwrap();
    assert!(message.contains("vm/bundle/build.sh"), "{message}");
    // The daemon those requests started reads the state folder no more.
    let out = run(manager(dir).args(["daemon", "--stop"]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("state/state.json"), "{").unwrap();
    let mut cmd = manager(dir);
    cmd.arg("status").args(json);
    assert_json_error(&mut cmd, "IoError", 1);
}

#[test]
fn a_usage_error_with_output_json_is_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for args in [
        &["status", "--output", "json", "--no-such-flag"][..],
        &["status", "--output=json", "--output", "text"],
        &["certs", "check", "--output", "json", "--pki-dir", ""],
        &["enable", "--api-port", "65536", "--output", "json"],
        &[
            "kubeconfig",
            "merge",
            "--output",
            "json",
            "--lock-timeout",
            "soon",
        ],
        &["bundle", "verify", "--output", "json"],
    ] {
        let mut cmd = manager(dir);
        cmd.args(args);
        let value = assert_json_error(&mut cmd, "InvalidArgument", 2);
        let message = value["error"]["message"].as_str().unwrap();
        assert!(!message.contains("Usage:"), "{message}");
    }
    // Without --output json, clap's own message.
    let mut cmd = manager(dir);
    cmd.args(["status", "--no-such-flag"]);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", describe(&cmd, &out));
    assert!(
        text(&out.stderr).starts_with("error: "),
        "{}",
        describe(&cmd, &out)
    );
}

/// The first clause (text between ": ") said twice, if any.
fn repeated_clause(message: &str) -> Option<String> {
    let clauses: Vec<&str> = message.trim().split(": ").collect();
    clauses
        .iter()
        .enumerate()
        .find(|(i, clause)| clauses[i + 1..].contains(clause))
        .map(|(_, clause)| clause.to_string())
}

#[test]
fn no_error_message_repeats_a_clause() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let config = dir.join("config");
    let commands: Vec<Vec<std::ffi::OsString>> = vec![
        // Each fails on an OS error wrapped by one of the crate's errors.
        vec![
            "kubeconfig".into(),
            "merge".into(),
            "--from".into(),
            dir.join("missing").into(),
            "--into".into(),
            config.clone().into(),
        ],
        vec![
            "kubeconfig".into(),
            "merge".into(),
            "--from".into(),
            ours().into(),
            "--into".into(),
            file.join("config").into(),
        ],
        vec![
            "certs".into(),
            "generate".into(),
            "--node-name".into(),
            "node".into(),
            "--advertise-address".into(),
            "10.0.0.2".into(),
            "--pki-dir".into(),
            file.join("pki").into(),
        ],
        vec![
            "certs".into(),
            "kubeconfigs".into(),
            "--server".into(),
            "https://10.0.0.2:6443".into(),
            "--node-name".into(),
            "node".into(),
            "--out-dir".into(),
            dir.join("out").into(),
            "--pki-dir".into(),
            dir.join("no-pki").into(),
        ],
        vec![
            "bundle".into(),
            "verify".into(),
            dir.join("no-bundle").into(),
        ],
    ];
    for args in commands {
        for json in [false, true] {
            let mut cmd = manager(dir);
            cmd.args(&args);
            if json && args[0] != "certs" {
                cmd.args(["--output", "json"]);
            }
            let out = run(&mut cmd);
            assert!(!out.status.success(), "{}", describe(&cmd, &out));
            let message = if json && args[0] != "certs" {
                json_of(&cmd, &out)["error"]["message"]
                    .as_str()
                    .unwrap()
                    .to_string()
            } else {
                let stderr = text(&out.stderr);
                let line = stderr
                    .lines()
                    .find(|l| l.starts_with("error: "))
                    .unwrap_or_else(|| panic!("{}", describe(&cmd, &out)));
                line.trim_start_matches("error: ").to_string()
            };
            assert_eq!(repeated_clause(&message), None, "{}", describe(&cmd, &out));
        }
    }
}

/// Runs and checks that the manager ended on its own terms: no panic
/// (exit code 101, "panicked" on standard error), no signal.
fn assert_no_panic(mut cmd: Command) {
    let out = run(&mut cmd);
    let stderr = text(&out.stderr);
    assert!(
        out.status.code().is_some_and(|code| code != 101) && !stderr.contains("panicked"),
        "{}",
        describe(&cmd, &out)
    );
}

#[test]
fn no_argument_panics() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = generate_pki(dir);
    let numbers = [
        "0",
        "1",
        "-1",
        "65535",
        "65536",
        "2147483648",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "10000000000000000000",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999999999",
        "1e400",
        "NaN",
        "",
    ];
    let long = "x".repeat(100_000);
    let strings = [
        "",
        " ",
        "ü ñ 漢字 🚀",
        "\u{202e}gnp.exe",
        "..",
        "-",
        "--",
        "C:\\",
        ":;:;",
        "%USERPROFILE%",
        "${HOME}",
        long.as_str(),
    ];
    let bundle = bundle(dir, None);
    for n in numbers {
        // Refused before a daemon is started: every enable here has an API
        // port or a node name that does not validate, or no such bundle.
        let mut cmd = manager(dir);
        cmd.args([
            "enable",
            "--node-name",
            "Bad Name",
            "--output",
            "json",
            "--api-port",
            n,
        ]);
        assert_no_panic(cmd);
        let mut cmd = manager_without_state(dir);
        cmd.args(["daemon", "--socket-gid", n, "--state-dir"])
            .arg(file_in(dir));
        assert_no_panic(cmd);
        // An hour is the longest lock wait; a lock held by nobody answers at once.
        for unit in ["", "s", "ms", "m"] {
            let mut cmd = manager(dir);
            cmd.args(["kubeconfig", "merge", "--from"])
                .arg(ours())
                .arg("--into")
                .arg(dir.join("merged"))
                .arg(format!("--lock-timeout={n}{unit}"));
            assert_no_panic(cmd);
        }
        // The pki module bounds the validity itself (its own hostile test);
        // here the values clap sees first.
        if n.len() < 10 {
            let mut cmd = manager(dir);
            cmd.args(["certs", "renew", "--pki-dir"])
                .arg(&pki)
                .arg(format!("--validity-days={n}"))
                .arg("front-proxy-client");
            assert_no_panic(cmd);
        }
    }
    let mut cmd = manager(dir);
    cmd.arg(format!("-{}", "v".repeat(300)))
        .args(["certs", "check", "--pki-dir"])
        .arg(&pki);
    assert_no_panic(cmd);
    for s in strings {
        let mut cmd = manager(dir);
        cmd.args(["enable", "--api-port", "0", "--bundle"])
            .arg(&bundle)
            .args(["--node-name", s, "--server-url", s, "--host-kubeconfig", s]);
        assert_no_panic(cmd);
        let mut cmd = manager(dir);
        cmd.args(["certs", "generate", "--pki-dir"])
            .arg(dir.join("pki-odd"))
            .args([
                "--advertise-address",
                "10.0.0.2",
                "--node-name",
                s,
                "--dns-domain",
                s,
                "--san",
                s,
                "--service-cidr",
                s,
            ]);
        assert_no_panic(cmd);
        let mut cmd = manager(dir);
        cmd.args(["certs", "generate", "--pki-dir"])
            .arg(dir.join("pki-odd"))
            .args([
                "--node-name",
                "node",
                "--advertise-address",
                s,
                "--key-algorithm",
                s,
            ]);
        assert_no_panic(cmd);
        let mut cmd = manager(dir);
        cmd.args(["certs", "kubeconfigs", "--pki-dir"])
            .arg(&pki)
            .arg("--out-dir")
            .arg(dir.join("out"))
            .args(["--server", s, "--node-name", s, "--cluster-name", s]);
        assert_no_panic(cmd);
        let mut cmd = manager(dir);
        cmd.args(["certs", "renew", "--pki-dir"]).arg(&pki).arg(s);
        assert_no_panic(cmd);
        let mut cmd = manager(dir);
        cmd.args(["kubeconfig", "merge", "--from"])
            .arg(ours())
            .args(["--into", s, "--set-current-context", s, "--mount-root"])
            .arg(dir.join("mnt"));
        assert_no_panic(cmd);
        let mut cmd = manager(dir);
        cmd.args([
            "kubeconfig",
            "remove",
            "--from",
            s,
            "--context",
            s,
            "--mount-root",
        ])
        .arg(dir.join("mnt"));
        assert_no_panic(cmd);
        let mut cmd = manager(dir);
        cmd.args([
            "kubeconfig",
            "discover",
            "--kubeconfig",
            s,
            "--host-kubeconfig",
            s,
            "--host-userprofile",
            s,
            "--host-username",
            s,
            "--mount-root",
        ])
        .arg(dir.join("mnt"));
        assert_no_panic(cmd);
        let mut cmd = manager(dir);
        cmd.args([
            "kubeconfig",
            "discover",
            "--host-userprofile",
            s,
            "--host-username",
            s,
            "--mount-root",
        ])
        .arg(dir.join("mnt"));
        assert_no_panic(cmd);
        // Refused before any download: the version does not parse.
        let mut cmd = manager(dir);
        cmd.args([
            "bundle",
            "fetch",
            "--version",
            s,
            "--etcd-version",
            s,
            "--dest",
        ])
        .arg(dir.join("fetched"));
        assert_no_panic(cmd);
        let mut cmd = manager(dir);
        cmd.args(["--log-format", s, "status", "--output", s]);
        assert_no_panic(cmd);
    }
}

/// A state folder that cannot be made (a path under a file), so that a
/// daemon given it stops at once instead of serving.
fn file_in(dir: &Path) -> PathBuf {
    let file = dir.join("not-a-folder");
    std::fs::write(&file, "").unwrap();
    file.join("state")
}

/// The one test here that starts a daemon: a failed operation's last event
/// carries the daemon's typed error (phase, code, one problem per entry),
/// and the CLI's JSON error repeats it. The daemon is ended afterwards.
#[test]
fn a_failed_enable_carries_the_typed_error_of_its_phase() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let bundle = bundle(dir, Some("kubelet"));
    let state = dir.join("state");
    let out = run(manager(dir)
        .args(["enable", "--no-vm-kubeconfig", "--bundle"])
        .arg(&bundle)
        .args(["--host-kubeconfig"])
        .arg(dir.join("kubeconfig"))
        .args(["--containerd-socket"])
        .arg(dir.join("no-containerd.sock"))
        .args(["--output", "json"]));
    let ended = Command::new("pkill")
        .args(["-f", "--"])
        .arg(format!("--state-dir {} daemon", state.display()))
        .status()
        .unwrap();
    assert!(ended.success(), "the CLI started a daemon for the enable");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let done = lines
        .iter()
        .find(|e| e["event"] == "done")
        .unwrap_or_else(|| panic!("no done event: {stdout}"));
    assert_eq!(done["ok"], false);
    let error = &done["error"];
    assert_eq!(error["phase"], "preflight", "{done}");
    assert_eq!(error["code"], "PreflightFailed", "{done}");
    let problems: Vec<&str> = error["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("bin/kubelet")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("no-containerd.sock")),
        "{problems:?}"
    );
    // The CLI's own closing error: the same code, phase and problems.
    let last = lines.last().unwrap();
    assert_eq!(last["error"]["code"], "PreflightFailed", "{last}");
    assert_eq!(last["error"]["phase"], "preflight", "{last}");
    assert_eq!(
        last["error"]["problems"].as_array().unwrap().len(),
        problems.len()
    );
}
