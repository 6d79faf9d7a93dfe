//! Emergency plans: which nodes to release for urgent work, as SPARE does.
//!
//! Regular work is consolidated onto the fewest *keeper* nodes such that every node's regular
//! invocations can be forwarded to a keeper within the latency bound, and keepers have the
//! capacity for the regular load. The other nodes in the area are released: they take only
//! urgent functions.

pub use limes_node::cluster::plan::{DEFAULT_MAX_ADDED_MS, Declaration, Plan};

use crate::view::{LatencyMatrix, Member, distance};

/// Fraction of a keeper's capacity regular work may fill; the rest stays free for urgent
/// functions, which have priority everywhere.
pub const REGULAR_SHARE: f64 = 0.75;

/// Checks a declaration; the error names what is wrong.
pub fn validate(declaration: &Declaration) -> Result<(), String> {
    if declaration.urgent.is_empty() {
        return Err("an emergency needs at least one urgent function (`urgent`)".into());
    }
    if let Some(bad) = declaration
        .urgent
        .iter()
        .find(|n| limes_node::validate_name(n).is_err())
    {
        return Err(format!(
            "urgent function {bad:?} is not a valid function name"
        ));
    }
    if !(declaration.max_added_ms.is_finite() && declaration.max_added_ms >= 0.0) {
        return Err("max_added_ms must be a number ≥ 0".into());
    }
    if let Some([x, y, r]) = declaration.area
        && !(x.is_finite() && y.is_finite() && r.is_finite() && r >= 0.0)
    {
        return Err("area must be [x, y, radius] with radius ≥ 0".into());
    }
    Ok(())
}

/// Decides which of `members` to release. Distances come from `matrix` (one-way ms) or the
/// members' locations (taken as ms); forwarding costs a round trip, twice the distance.
pub fn decide(
    declaration: &Declaration,
    members: &[Member],
    matrix: &LatencyMatrix,
    decided_by: &str,
    decided_at_ms: u64,
) -> Plan {
    let in_area = |m: &Member| match declaration.area {
        None => true,
        Some([x, y, r]) => {
            let (dx, dy) = (m.location[0] - x, m.location[1] - y);
            (dx * dx + dy * dy).sqrt() <= r
        }
    };
    let round_trip = |a: &Member, b: &Member| 2.0 * distance(matrix, a, b);
    let load: f64 = members.iter().map(|m| f64::from(m.in_flight)).sum();
    let mut keepers: Vec<&Member> = members.iter().filter(|m| !in_area(m)).collect();
    let covered = |keepers: &[&Member], n: &Member| {
        keepers
            .iter()
            .any(|k| round_trip(n, k) <= declaration.max_added_ms)
    };
    loop {
        let room: f64 = keepers
            .iter()
            .map(|k| f64::from(k.capacity) * REGULAR_SHARE)
            .sum();
        let uncovered: Vec<&Member> = members.iter().filter(|n| !covered(&keepers, n)).collect();
        if !keepers.is_empty() && uncovered.is_empty() && room >= load {
            break;
        }
        // The candidate that covers most uncovered nodes, then the one with most capacity.
        let best = members
            .iter()
            .filter(|c| !keepers.iter().any(|k| k.id == c.id))
            .max_by(|a, b| {
                let gain = |c: &Member| {
                    uncovered
                        .iter()
                        .filter(|n| round_trip(n, c) <= declaration.max_added_ms)
                        .count()
                };
                gain(a)
                    .cmp(&gain(b))
                    .then(a.capacity.cmp(&b.capacity))
                    .then(b.id.cmp(&a.id))
            });
        match best {
            Some(best) => keepers.push(best),
            // Every node keeps regular work and the bound still cannot be met: release none.
            None => break,
        }
    }
    let worst_added_ms = members
        .iter()
        .map(|n| {
            keepers
                .iter()
                .map(|k| round_trip(n, k))
                .fold(f64::INFINITY, f64::min)
        })
        .fold(0.0, f64::max);
    let mut released: Vec<String> = members
        .iter()
        .filter(|m| !keepers.iter().any(|k| k.id == m.id))
        .map(|m| m.id.clone())
        .collect();
    released.sort();
    let mut keepers: Vec<String> = keepers.iter().map(|k| k.id.clone()).collect();
    keepers.sort();
    Plan {
        declaration: declaration.clone(),
        released,
        keepers,
        worst_added_ms,
        decided_by: decided_by.to_owned(),
        decided_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, x: f64, in_flight: u32) -> Member {
        Member {
            id: id.into(),
            location: [x, 0.0],
            capacity: 8,
            in_flight,
            listen: None,
            forwarded: Default::default(),
        }
    }

    fn declaration(max_added_ms: f64, area: Option<[f64; 3]>) -> Declaration {
        Declaration {
            urgent: vec!["alert".into()],
            area,
            max_added_ms,
            declared_by: None,
        }
    }

    fn line(n: usize, load: u32) -> Vec<Member> {
        (0..n)
            .map(|i| member(&format!("n{i}"), i as f64, load))
            .collect()
    }

    #[test]
    fn a_looser_bound_releases_more_nodes_and_keeps_its_promise() {
        let nodes = line(6, 1);
        let m = LatencyMatrix::new();
        let tight = decide(&declaration(0.0, None), &nodes, &m, "n0", 0);
        assert!(tight.released.is_empty(), "{tight:?}");
        let mild = decide(&declaration(2.0, None), &nodes, &m, "n0", 0);
        let loose = decide(&declaration(10.0, None), &nodes, &m, "n0", 0);
        assert_eq!(mild.released.len(), 4, "{mild:?}");
        assert_eq!(loose.released.len(), 5, "{loose:?}");
        for plan in [&tight, &mild, &loose] {
            assert!(plan.worst_added_ms <= plan.declaration.max_added_ms);
            assert_eq!(plan.released.len() + plan.keepers.len(), nodes.len());
        }
    }

    #[test]
    fn keepers_have_room_for_the_regular_load() {
        // 6 nodes of 8 slots with 5 busy each: 30 in flight need 5 keepers at 75 %.
        let nodes = line(6, 5);
        let plan = decide(
            &declaration(100.0, None),
            &nodes,
            &LatencyMatrix::new(),
            "n0",
            0,
        );
        assert_eq!(plan.keepers.len(), 5, "{plan:?}");
    }

    #[test]
    fn only_nodes_in_the_area_are_released() {
        let nodes = line(6, 0);
        let plan = decide(
            &declaration(100.0, Some([4.5, 0.0, 1.0])),
            &nodes,
            &LatencyMatrix::new(),
            "n0",
            0,
        );
        assert_eq!(plan.released, ["n4", "n5"]);
    }

    #[test]
    fn bad_declarations_are_named() {
        let mut d = declaration(1.0, None);
        d.urgent.clear();
        assert!(validate(&d).unwrap_err().contains("urgent"));
        let d = declaration(-1.0, None);
        assert!(validate(&d).unwrap_err().contains("max_added_ms"));
        let d = Declaration {
            urgent: vec!["Bad Name".into()],
            ..declaration(1.0, None)
        };
        assert!(validate(&d).unwrap_err().contains("Bad Name"));
    }
}
