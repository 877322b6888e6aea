//! The order of the units, derived from one declaration (k0s's component
//! manager is the model): each unit, a process or an in-process task, names
//! the units it needs running. A unit starts after everything it needs, and
//! the stop reverses that in waves: every unit that needs another stops, all
//! of one wave together, before it. No order is written down by hand.
//!
//! With etcd ← API server ← {its clients}: the start is etcd, the API
//! server, its clients; the stop is the clients together, then the API
//! server, then etcd.

use std::collections::BTreeMap;
use std::time::Duration;

/// What a unit declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: &'static str,
    /// The units it needs running: it starts after them and stops before.
    pub needs: Vec<&'static str>,
    /// How long its stop may take.
    pub grace: Duration,
}

/// The units in their start order: each after everything it needs, in the
/// order declared otherwise.
///
/// Panics on a need that is not declared, or a circle: a declaration's
/// error, which its tests catch.
pub fn start_order(all: &[Declared]) -> Vec<&Declared> {
    let by_name = index(all);
    let mut depth = BTreeMap::new();
    for unit in all {
        measure(
            unit.name,
            &|name| &by_name[name].needs,
            &mut depth,
            &mut Vec::new(),
        );
    }
    let mut order: Vec<&Declared> = all.iter().collect();
    order.sort_by_key(|u| depth[u.name]);
    order
}

/// The stop, as waves: the first holds the units no other needs; each next
/// one the units all of whose dependents stopped in a wave before. The
/// units of one wave may stop together. Panics as [`start_order`] does.
pub fn stop_waves(all: &[Declared]) -> Vec<Vec<&Declared>> {
    let by_name = index(all);
    let mut dependents: BTreeMap<&str, Vec<&'static str>> = BTreeMap::new();
    for unit in all {
        for need in &unit.needs {
            dependents.entry(need).or_default().push(unit.name);
        }
    }
    let none = Vec::new();
    let mut height = BTreeMap::new();
    for unit in all {
        let of = |name: &str| dependents.get(name).unwrap_or(&none);
        measure(unit.name, &of, &mut height, &mut Vec::new());
    }
    let mut waves: Vec<Vec<&Declared>> = Vec::new();
    for unit in all {
        let wave = height[unit.name];
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(by_name[unit.name]);
    }
    waves
}

/// The units by name; panics on a need that names none.
fn index(all: &[Declared]) -> BTreeMap<&'static str, &Declared> {
    let by_name: BTreeMap<&'static str, &Declared> = all.iter().map(|u| (u.name, u)).collect();
    for unit in all {
        for need in &unit.needs {
            assert!(
                by_name.contains_key(need),
                "{} needs {need}, which is not declared",
                unit.name
            );
        }
    }
    by_name
}

/// The length of the longest path from `name` along `next` (its needs, or
/// its dependents), noted in `done` for it and every unit on the way.
fn measure<'a, F>(
    name: &'static str,
    next: &F,
    done: &mut BTreeMap<&'static str, usize>,
    path: &mut Vec<&'static str>,
) -> usize
where
    F: Fn(&str) -> &'a Vec<&'static str>,
{
    if let Some(&known) = done.get(name) {
        return known;
    }
    assert!(
        !path.contains(&name),
        "a circle of needs: {path:?} → {name}"
    );
    path.push(name);
    let length = next(name)
        .iter()
        .map(|other| 1 + measure(other, next, done, path))
        .max()
        .unwrap_or(0);
    path.pop();
    done.insert(name, length);
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &'static str, needs: &[&'static str]) -> Declared {
        Declared {
            name,
            needs: needs.to_vec(),
            grace: Duration::ZERO,
        }
    }

    fn names(units: &[&Declared]) -> Vec<&'static str> {
        units.iter().map(|u| u.name).collect()
    }

    /// Declared in no particular order on purpose.
    fn cluster() -> Vec<Declared> {
        vec![
            unit("scheduler", &["apiserver"]),
            unit("apiserver", &["etcd"]),
            unit("task", &["apiserver"]),
            unit("etcd", &[]),
            unit("kubelet", &["apiserver"]),
        ]
    }

    #[test]
    fn each_starts_after_what_it_needs_in_the_declared_order_otherwise() {
        let all = cluster();
        assert_eq!(
            names(&start_order(&all)),
            ["etcd", "apiserver", "scheduler", "task", "kubelet"]
        );
    }

    #[test]
    fn the_stop_reverses_it_in_waves() {
        let all = cluster();
        let waves: Vec<Vec<&str>> = stop_waves(&all).iter().map(|w| names(w)).collect();
        assert_eq!(
            waves,
            [
                vec!["scheduler", "task", "kubelet"],
                vec!["apiserver"],
                vec!["etcd"]
            ]
        );
    }

    #[test]
    fn a_unit_stops_after_its_longest_chain_of_dependents() {
        // b needs a, c needs b and a: a waits for c, through b.
        let all = vec![unit("a", &[]), unit("b", &["a"]), unit("c", &["b", "a"])];
        let waves: Vec<Vec<&str>> = stop_waves(&all).iter().map(|w| names(w)).collect();
        assert_eq!(waves, [vec!["c"], vec!["b"], vec!["a"]]);
        assert_eq!(names(&start_order(&all)), ["a", "b", "c"]);
    }

    #[test]
    #[should_panic(expected = "not declared")]
    fn a_need_not_declared_is_refused() {
        start_order(&[unit("a", &["ghost"])]);
    }

    #[test]
    #[should_panic(expected = "a circle of needs")]
    fn a_circle_is_refused() {
        stop_waves(&[unit("a", &["b"]), unit("b", &["a"])]);
    }
}
