//! The iptables state a cluster leaves behind, and exactly that, removed.
//!
//! Ours are: every `KUBE-*` chain (kube-proxy's and kubelet's, in the nat,
//! filter and mangle tables) and the `CNI-*` chains of our CNI network, which
//! the bridge and portmap plugins mark with the comment `name: "<network>" id:
//! "<container>"` on the rule that jumps to them. Docker's chains (`DOCKER*`),
//! other CNI networks' chains and the user's own chains and rules are not
//! ours and stay as they are, byte for byte.
//!
//! The rules are read with `iptables-save`; [`cleanup_plan`] decides, as a pure
//! function, which rules to delete (the jumps into our chains from chains that
//! are not ours, and rules carrying our network's comment) and which chains to
//! flush and delete; the plan is applied as one `iptables-restore --noflush`
//! transaction per family, so that it lands whole or not at all. The same is
//! done with `ip6tables` when it is installed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use super::RuntimeError;
use super::exec;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The rules may change between save and restore (Docker adding a container's
/// rules, another tool holding the xtables lock): the transaction then fails
/// as a whole and is planned again from fresh rules.
const ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// kube-proxy and kubelet name every chain they create so.
const KUBE_PREFIX: &str = "KUBE-";
const CNI_PREFIX: &str = "CNI-";
/// portmap's chains, shared by every CNI network on the host.
const PORTMAP_SHARED_PREFIX: &str = "CNI-HOSTPORT-";

/// A rule: the chain it is in and its specification, as `iptables-save`
/// prints it after `-A CHAIN `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub spec: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// Chains declared in the table, in order, with whether they are built in.
    pub chains: Vec<(String, bool)>,
    pub rules: Vec<Rule>,
}

/// The rules of every table of one `iptables-save` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

/// What to remove from one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub table: String,
    /// Rules to delete from chains that stay.
    pub delete_rules: Vec<Rule>,
    /// Chains to flush and delete.
    pub delete_chains: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub tables: Vec<TablePlan>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The plan as input for `iptables-restore --noflush`: in each table, the
    /// rules that jump into our chains go first, then every chain of ours is
    /// flushed (which removes the jumps between them), then deleted.
    pub fn restore_script(&self) -> String {
        let mut script = String::new();
        for table in &self.tables {
            let _ = writeln!(script, "*{}", table.table);
            for rule in &table.delete_rules {
                let _ = writeln!(script, "-D {} {}", rule.chain, rule.spec);
            }
            for chain in &table.delete_chains {
                let _ = writeln!(script, "-F {chain}");
            }
            for chain in &table.delete_chains {
                let _ = writeln!(script, "-X {chain}");
            }
            script.push_str("COMMIT\n");
        }
        script
    }
}

/// Parses `iptables-save` output. Comment lines and counters are skipped.
pub fn parse_save(text: &str) -> Result<Ruleset, String> {
    let mut tables: Vec<Table> = Vec::new();
    let mut open = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end();
        let context = |what: &str| format!("line {}: {what}: {line}", number + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            tables.push(Table {
                name: name.to_string(),
                chains: Vec::new(),
                rules: Vec::new(),
            });
            open = true;
            continue;
        }
        if line == "COMMIT" {
            open = false;
            continue;
        }
        let table = match tables.last_mut() {
            Some(table) if open => table,
            _ => return Err(context("outside a table")),
        };
        if let Some(declaration) = line.strip_prefix(':') {
            let mut fields = declaration.split_whitespace();
            let name = fields
                .next()
                .ok_or_else(|| context("chain without a name"))?;
            // Built-in chains have a policy; user chains print `-`.
            let builtin = fields.next().is_some_and(|policy| policy != "-");
            table.chains.push((name.to_string(), builtin));
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            table.rules.push(Rule {
                chain: chain.to_string(),
                spec: spec.to_string(),
            });
        } else {
            return Err(context("not a chain or a rule"));
        }
    }
    Ok(Ruleset { tables })
}

/// The words of a rule, with iptables-save's double quotes removed and its
/// backslash escapes resolved.
fn words(spec: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

impl Rule {
    /// The chain or target the rule jumps or goes to.
    fn target(&self) -> Option<String> {
        let words = words(&self.spec);
        words
            .iter()
            .position(|w| matches!(w.as_str(), "-j" | "--jump" | "-g" | "--goto"))
            .and_then(|i| words.get(i + 1).cloned())
    }

    fn comment(&self) -> Option<String> {
        let words = words(&self.spec);
        words
            .iter()
            .position(|w| w == "--comment")
            .and_then(|i| words.get(i + 1).cloned())
    }
}

/// What to delete so that no rule or chain of kube-proxy, kubelet, or the
/// CNI network `cni_network` is left, and nothing else changes.
pub fn cleanup_plan(ruleset: &Ruleset, cni_network: &str) -> Plan {
    // The CNI plugins' comment is Go's `name: %q id: %q` (portmap prefixes it
    // with `dnat `); the closing quote keeps `k8s-manager-2` from matching.
    let marker = format!("name: \"{cni_network}\" id: \"");
    let tables = ruleset
        .tables
        .iter()
        .filter_map(|table| table_plan(table, &marker))
        .collect();
    Plan { tables }
}

fn table_plan(table: &Table, marker: &str) -> Option<TablePlan> {
    let user_chains: Vec<&str> = table
        .chains
        .iter()
        .filter(|(_, builtin)| !builtin)
        .map(|(name, _)| name.as_str())
        .collect();
    let is_user_chain = |name: &str| user_chains.contains(&name);
    let marked = |rule: &Rule| rule.comment().is_some_and(|c| c.contains(marker));

    let mut owned: BTreeSet<&str> = user_chains
        .iter()
        .copied()
        .filter(|c| c.starts_with(KUBE_PREFIX))
        .collect();
    // A per-pod CNI chain is ours when the rule jumping to it carries our mark.
    for rule in table.rules.iter().filter(|r| marked(r)) {
        if let Some(target) = rule.target()
            && let Some(&chain) = user_chains.iter().find(|c| **c == target)
            && chain.starts_with(CNI_PREFIX)
            && !chain.starts_with(PORTMAP_SHARED_PREFIX)
        {
            owned.insert(chain);
        }
    }

    // portmap's shared chains go too once no other network has a port
    // mapping in them (portmap creates them again on its next use).
    let shared: Vec<&str> = user_chains
        .iter()
        .copied()
        .filter(|c| c.starts_with(PORTMAP_SHARED_PREFIX))
        .collect();
    let rules_to_delete = |owned: &BTreeSet<&str>| -> Vec<Rule> {
        table
            .rules
            .iter()
            .filter(|rule| !owned.contains(rule.chain.as_str()))
            .filter(|rule| {
                marked(rule) || rule.target().is_some_and(|t| owned.contains(t.as_str()))
            })
            .cloned()
            .collect()
    };
    let mut delete_rules = rules_to_delete(&owned);
    if !shared.is_empty() {
        let other_network_uses_shared = table
            .rules
            .iter()
            .filter(|rule| shared.contains(&rule.chain.as_str()) && !delete_rules.contains(rule))
            .filter_map(Rule::target)
            .any(|target| is_user_chain(&target) && !shared.contains(&target.as_str()));
        if !other_network_uses_shared {
            owned.extend(shared.iter().copied());
            delete_rules = rules_to_delete(&owned);
        }
    }

    if owned.is_empty() && delete_rules.is_empty() {
        return None;
    }
    // Declaration order, so that the plan reads like the table.
    let delete_chains = user_chains
        .iter()
        .filter(|c| owned.contains(*c))
        .map(|c| c.to_string())
        .collect();
    Some(TablePlan {
        table: table.name.clone(),
        delete_rules,
        delete_chains,
    })
}

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    fn save_program(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables-save",
            Family::Ipv6 => "ip6tables-save",
        }
    }

    fn restore_program(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables-restore",
            Family::Ipv6 => "ip6tables-restore",
        }
    }
}

/// What [`clean`] removed from one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    pub family: Family,
    pub rules_deleted: usize,
    pub chains_deleted: Vec<String>,
}

/// Reads the family's rules and removes ours (see [`cleanup_plan`]). For
/// IPv6, a host without `ip6tables` is not an error: there is nothing to
/// clean, and `None` says so.
pub async fn clean(family: Family, cni_network: &str) -> Result<Option<Cleaned>, RuntimeError> {
    let mut cleaned = Cleaned {
        family,
        rules_deleted: 0,
        chains_deleted: Vec::new(),
    };
    let mut failures = 0;
    loop {
        let saved = match exec::run(
            family.save_program(),
            std::iter::empty::<&str>(),
            None,
            COMMAND_TIMEOUT,
        )
        .await
        {
            Err(RuntimeError::Spawn { source, .. })
                if family == Family::Ipv6 && source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            other => other?.success()?,
        };
        let ruleset = parse_save(&saved).map_err(|reason| RuntimeError::Command {
            command: family.save_program().to_string(),
            output: format!("unexpected output: {reason}"),
        })?;
        let plan = cleanup_plan(&ruleset, cni_network);
        if plan.is_empty() {
            return Ok(Some(cleaned));
        }
        if !cleaned.chains_deleted.is_empty() || cleaned.rules_deleted > 0 {
            // Our transaction went through, yet rules of ours are back.
            let left: Vec<_> = plan.tables.iter().flat_map(|t| &t.delete_chains).collect();
            return Err(RuntimeError::Command {
                command: format!("{} --noflush", family.restore_program()),
                output: format!(
                    "removed, yet recreated at once: {left:?}; is kube-proxy or kubelet still running?"
                ),
            });
        }
        let script = plan.restore_script();
        let restored = exec::run(
            family.restore_program(),
            ["--noflush"],
            Some(script.as_bytes()),
            COMMAND_TIMEOUT,
        )
        .await?;
        if restored.status.success() {
            for table in plan.tables {
                cleaned.rules_deleted += table.delete_rules.len();
                cleaned.chains_deleted.extend(table.delete_chains);
            }
            // Planned again from fresh rules: confirms nothing of ours is left.
            continue;
        }
        failures += 1;
        if failures == ATTEMPTS {
            return Err(RuntimeError::Command {
                command: format!("{} --noflush", family.restore_program()),
                output: format!("{}\ninput was:\n{script}", restored.output_summary()),
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUR_ID: &str = "9f3c1d2e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
    const PODMAN_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    /// A host with Docker, a user's firewall chain, a running cluster (kube-proxy
    /// and kubelet chains, one pod of ours with a hostPort), and a podman
    /// container on another CNI network with a hostPort of its own.
    fn sample() -> String {
        format!(
            r#"# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 23 18:00:00 2026
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-PROXY-CANARY - [0:0]
COMMIT
# Completed on Mon Nov 23 18:00:00 2026
*filter
:INPUT ACCEPT [120:9000]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [100:8000]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
:MY-FIREWALL - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -j KUBE-FIREWALL
-A INPUT -j MY-FIREWALL
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i k8smgr0 -m comment --comment "user: let pods out -j KUBE-FORWARD" -j ACCEPT
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A MY-FIREWALL -s 192.168.1.0/24 -j ACCEPT
-A MY-FIREWALL -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-3f1c9a2b7d6e5f4a3b2c1d0e - [0:0]
:CNI-9aa1b2c3d4e5f60718293a4b - [0:0]
:CNI-DN-3f1c9a2b7d6e5f4a3b2c1 - [0:0]
:CNI-DN-9aa1b2c3d4e5f60718293 - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
:DOCKER - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-SEP-IT2ZTR26TO4XFPTO - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-TCOU7JCQXEZGVUNU - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 10.244.0.5/32 -m comment --comment "name: \"k8s-manager\" id: \"{OUR_ID}\"" -j CNI-3f1c9a2b7d6e5f4a3b2c1d0e
-A POSTROUTING -s 10.88.0.3/32 -m comment --comment "name: \"podman\" id: \"{PODMAN_ID}\"" -j CNI-9aa1b2c3d4e5f60718293a4b
-A CNI-3f1c9a2b7d6e5f4a3b2c1d0e -d 10.244.0.0/24 -m comment --comment "name: \"k8s-manager\" id: \"{OUR_ID}\"" -j ACCEPT
-A CNI-3f1c9a2b7d6e5f4a3b2c1d0e ! -d 224.0.0.0/4 -m comment --comment "name: \"k8s-manager\" id: \"{OUR_ID}\"" -j MASQUERADE
-A CNI-9aa1b2c3d4e5f60718293a4b -d 10.88.0.0/16 -m comment --comment "name: \"podman\" id: \"{PODMAN_ID}\"" -j ACCEPT
-A CNI-9aa1b2c3d4e5f60718293a4b ! -d 224.0.0.0/4 -m comment --comment "name: \"podman\" id: \"{PODMAN_ID}\"" -j MASQUERADE
-A CNI-DN-3f1c9a2b7d6e5f4a3b2c1 -s 10.244.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-3f1c9a2b7d6e5f4a3b2c1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.0.5:80
-A CNI-DN-9aa1b2c3d4e5f60718293 -s 10.88.0.0/16 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-9aa1b2c3d4e5f60718293 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.88.0.3:80
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"k8s-manager\" id: \"{OUR_ID}\"" -m multiport --dports 8080 -j CNI-DN-3f1c9a2b7d6e5f4a3b2c1
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"podman\" id: \"{PODMAN_ID}\"" -m multiport --dports 9090 -j CNI-DN-9aa1b2c3d4e5f60718293
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
-A DOCKER -i docker0 -j RETURN
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web" -m tcp --dport 30080 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SEP-IT2ZTR26TO4XFPTO -s 10.244.0.3/32 -m comment --comment "kube-system/kube-dns:dns-tcp" -j KUBE-MARK-MASQ
-A KUBE-SEP-IT2ZTR26TO4XFPTO -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp" -m tcp -j DNAT --to-destination 10.244.0.3:53
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-TCOU7JCQXEZGVUNU -m comment --comment "kube-system/kube-dns:dns-tcp -> 10.244.0.3:53" -j KUBE-SEP-IT2ZTR26TO4XFPTO
COMMIT
"#
        )
    }

    fn plan_for(text: &str, network: &str) -> Plan {
        cleanup_plan(&parse_save(text).unwrap(), network)
    }

    fn table<'a>(plan: &'a Plan, name: &str) -> &'a TablePlan {
        plan.tables
            .iter()
            .find(|t| t.table == name)
            .unwrap_or_else(|| panic!("no {name} in {plan:#?}"))
    }

    fn specs(rules: &[Rule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| format!("{} {}", r.chain, r.spec))
            .collect()
    }

    #[test]
    fn parses_tables_chains_and_rules() {
        let ruleset = parse_save(&sample()).unwrap();
        let names: Vec<_> = ruleset.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["mangle", "filter", "nat"]);
        let filter = &ruleset.tables[1];
        assert!(filter.chains.contains(&("FORWARD".to_string(), true)));
        assert!(filter.chains.contains(&("DOCKER-USER".to_string(), false)));
        assert_eq!(filter.rules[0].chain, "INPUT");
        assert!(filter.rules[0].spec.ends_with("-j KUBE-PROXY-FIREWALL"));
    }

    #[test]
    fn rejects_what_is_not_iptables_save_output() {
        assert!(
            parse_save("-A INPUT -j ACCEPT\n")
                .unwrap_err()
                .contains("outside a table")
        );
        assert!(
            parse_save("*filter\n-I INPUT -j ACCEPT\nCOMMIT\n")
                .unwrap_err()
                .contains("line 2")
        );
    }

    #[test]
    fn words_follow_iptables_save_quoting() {
        let rule = Rule {
            chain: "POSTROUTING".into(),
            spec: r#"-s 10.244.0.5/32 -m comment --comment "name: \"k8s-manager\" id: \"abc\"" -j CNI-1"#.into(),
        };
        assert_eq!(rule.comment().unwrap(), r#"name: "k8s-manager" id: "abc""#);
        assert_eq!(rule.target().unwrap(), "CNI-1");
        // A `-j` inside a comment is not the target.
        let rule = Rule {
            chain: "FORWARD".into(),
            spec: r#"-m comment --comment "-j KUBE-X" -j ACCEPT"#.into(),
        };
        assert_eq!(rule.target().unwrap(), "ACCEPT");
    }

    #[test]
    fn every_kube_chain_goes_with_the_jumps_into_it() {
        let plan = plan_for(&sample(), "k8s-manager");
        let mangle = table(&plan, "mangle");
        assert_eq!(
            mangle.delete_chains,
            [
                "KUBE-IPTABLES-HINT",
                "KUBE-KUBELET-CANARY",
                "KUBE-PROXY-CANARY"
            ]
        );
        assert!(mangle.delete_rules.is_empty());

        let filter = table(&plan, "filter");
        assert_eq!(
            filter.delete_chains,
            [
                "KUBE-EXTERNAL-SERVICES",
                "KUBE-FIREWALL",
                "KUBE-FORWARD",
                "KUBE-KUBELET-CANARY",
                "KUBE-NODEPORTS",
                "KUBE-PROXY-CANARY",
                "KUBE-PROXY-FIREWALL",
                "KUBE-SERVICES"
            ]
        );
        let deleted = specs(&filter.delete_rules);
        assert_eq!(deleted.len(), 11, "{deleted:#?}");
        assert!(
            deleted.iter().all(|r| r.contains("-j KUBE-")),
            "{deleted:#?}"
        );
    }

    #[test]
    fn docker_user_and_other_network_rules_are_kept() {
        let plan = plan_for(&sample(), "k8s-manager");
        for t in &plan.tables {
            for chain in &t.delete_chains {
                assert!(
                    chain.starts_with("KUBE-") || chain.starts_with("CNI-"),
                    "{chain} deleted"
                );
                assert!(!chain.starts_with("DOCKER") && chain != "MY-FIREWALL");
            }
            for rule in &t.delete_rules {
                let text = format!("{} {}", rule.chain, rule.spec);
                assert!(
                    !text.contains("DOCKER") && !text.contains("MY-FIREWALL"),
                    "{text} deleted"
                );
                assert!(
                    !text.contains("podman") && !text.contains("docker0"),
                    "{text} deleted"
                );
            }
        }
        // The user's rule about our bridge is the user's: it stays.
        let filter = table(&plan, "filter");
        assert!(
            !specs(&filter.delete_rules)
                .iter()
                .any(|r| r.contains("k8smgr0"))
        );
        // podman's per-container chains stay, and so do portmap's shared chains
        // while podman has a port mapping in them.
        let nat = table(&plan, "nat");
        for kept in [
            "CNI-9aa1b2c3d4e5f60718293a4b",
            "CNI-DN-9aa1b2c3d4e5f60718293",
            "CNI-HOSTPORT-DNAT",
        ] {
            assert!(
                !nat.delete_chains.iter().any(|c| c == kept),
                "{kept} deleted"
            );
        }
    }

    #[test]
    fn our_cni_chains_go_with_their_jumps() {
        let plan = plan_for(&sample(), "k8s-manager");
        let nat = table(&plan, "nat");
        assert_eq!(
            nat.delete_chains,
            [
                "CNI-3f1c9a2b7d6e5f4a3b2c1d0e",
                "CNI-DN-3f1c9a2b7d6e5f4a3b2c1",
                "KUBE-KUBELET-CANARY",
                "KUBE-MARK-MASQ",
                "KUBE-NODEPORTS",
                "KUBE-POSTROUTING",
                "KUBE-PROXY-CANARY",
                "KUBE-SEP-IT2ZTR26TO4XFPTO",
                "KUBE-SERVICES",
                "KUBE-SVC-TCOU7JCQXEZGVUNU"
            ]
        );
        let deleted = specs(&nat.delete_rules);
        assert_eq!(
            deleted,
            [
                "PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".to_string(),
                "OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".to_string(),
                "POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING".to_string(),
                format!(
                    "POSTROUTING -s 10.244.0.5/32 -m comment --comment \"name: \\\"k8s-manager\\\" id: \\\"{OUR_ID}\\\"\" -j CNI-3f1c9a2b7d6e5f4a3b2c1d0e"
                ),
                format!(
                    "CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"k8s-manager\\\" id: \\\"{OUR_ID}\\\"\" -m multiport --dports 8080 -j CNI-DN-3f1c9a2b7d6e5f4a3b2c1"
                ),
            ]
        );
    }

    #[test]
    fn portmap_shared_chains_go_when_no_other_network_maps_ports() {
        // Without podman's container, nothing else uses portmap's chains.
        let without_podman: String = sample()
            .lines()
            .filter(|l| !l.contains("9aa1b2c3d4e5f6"))
            .map(|l| format!("{l}\n"))
            .collect();
        let plan = plan_for(&without_podman, "k8s-manager");
        let nat = table(&plan, "nat");
        for chain in [
            "CNI-HOSTPORT-DNAT",
            "CNI-HOSTPORT-MASQ",
            "CNI-HOSTPORT-SETMARK",
        ] {
            assert!(
                nat.delete_chains.iter().any(|c| c == chain),
                "{chain} kept: {nat:#?}"
            );
        }
        let deleted = specs(&nat.delete_rules);
        assert!(
            deleted.contains(
                &"PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string()
            )
        );
        assert!(
            deleted
                .contains(&"OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string())
        );
        assert!(
            deleted
                .iter()
                .any(|r| r.starts_with("POSTROUTING") && r.ends_with("-j CNI-HOSTPORT-MASQ"))
        );
        assert!(!deleted.iter().any(|r| r.contains("DOCKER")));
    }

    #[test]
    fn another_network_name_matches_nothing_of_ours() {
        // `k8s-manager-2` must not match `k8s-manager`'s chains or the reverse.
        let plan = plan_for(&sample(), "k8s-manager-2");
        let nat = table(&plan, "nat");
        assert!(
            nat.delete_chains.iter().all(|c| c.starts_with("KUBE-")),
            "{nat:#?}"
        );
    }

    #[test]
    fn nothing_of_ours_means_an_empty_plan() {
        let docker_only = "*filter\n:INPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n-A INPUT -j DOCKER\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n";
        let plan = plan_for(docker_only, "k8s-manager");
        assert!(plan.is_empty());
        assert_eq!(plan.restore_script(), "");
    }

    #[test]
    fn restore_script_deletes_jumps_then_flushes_then_deletes_chains() {
        let text = "*nat\n:POSTROUTING ACCEPT [0:0]\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n\
                    -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-A\n\
                    -A KUBE-A -j KUBE-B\nCOMMIT\n";
        let script = plan_for(text, "k8s-manager").restore_script();
        assert_eq!(
            script,
            "*nat\n\
             -D POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-A\n\
             -F KUBE-A\n-F KUBE-B\n-X KUBE-A\n-X KUBE-B\nCOMMIT\n"
        );
    }
}
