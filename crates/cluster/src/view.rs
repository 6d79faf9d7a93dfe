//! Who is in the cluster, how loaded each node is, and how far apart they are.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A node's heartbeat, as stored in the membership bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id.
    pub id: String,
    /// Where it is: `[x, y]`, in the units of every other node's location.
    pub location: [f64; 2],
    /// Instances it may run at once.
    pub capacity: u32,
    /// Most instances it ran at once since its previous heartbeat.
    pub in_flight: u32,
    /// Its HTTP address, for people and tools (`limes cluster status`).
    pub listen: Option<String>,
    /// Calls it forwarded since it started, by the id of the node it sent them to (which ran
    /// them or, full itself, passed them on): the arrows of the dashboard's map. Absent in
    /// heartbeats of nodes that predate it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forwarded: BTreeMap<String, u64>,
}

impl Member {
    /// Slots free at the last heartbeat.
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.in_flight)
    }
}

/// One-way latencies in milliseconds between node ids, where configured; locations fill the
/// gaps.
pub type LatencyMatrix = HashMap<String, HashMap<String, f64>>;

/// The distance between two nodes: from the latency matrix when it has the pair (either way
/// round), else the Euclidean distance of their locations.
pub fn distance(matrix: &LatencyMatrix, a: &Member, b: &Member) -> f64 {
    if a.id == b.id {
        return 0.0;
    }
    let lookup = |x: &str, y: &str| matrix.get(x).and_then(|row| row.get(y)).copied();
    lookup(&a.id, &b.id)
        .or_else(|| lookup(&b.id, &a.id))
        .unwrap_or_else(|| {
            let (dx, dy) = (a.location[0] - b.location[0], a.location[1] - b.location[1]);
            (dx * dx + dy * dy).sqrt()
        })
}

/// The members this node has heard from lately.
///
/// Liveness is judged by when *this* node received a heartbeat, never by the sender's clock, so
/// skewed clocks cannot keep a dead node in the view.
#[derive(Debug, Default)]
pub struct View {
    members: HashMap<String, (Member, Instant)>,
}

impl View {
    /// Records a heartbeat received now.
    pub fn heard(&mut self, member: Member) {
        self.members
            .insert(member.id.clone(), (member, Instant::now()));
    }

    /// Forgets a node that left on purpose.
    pub fn left(&mut self, id: &str) {
        self.members.remove(id);
    }

    /// Members heard from within `horizon`, by id.
    pub fn alive(&self, horizon: Duration) -> Vec<Member> {
        let mut alive: Vec<Member> = self
            .members
            .values()
            .filter(|(_, at)| at.elapsed() <= horizon)
            .map(|(m, _)| m.clone())
            .collect();
        alive.sort_by(|a, b| a.id.cmp(&b.id));
        alive
    }

    /// Drops what has not been heard of in `horizon`, so the map does not grow with departed
    /// nodes.
    pub fn prune(&mut self, horizon: Duration) {
        self.members.retain(|_, (_, at)| at.elapsed() <= horizon);
    }
}

/// Candidates to run a forwarded call, nearest first: alive, not `from` itself, not excluded,
/// and with a free slot at their last heartbeat.
pub fn nearest_with_room<'a>(
    from: &Member,
    members: &'a [Member],
    matrix: &LatencyMatrix,
    excluded: impl Fn(&Member) -> bool,
) -> Vec<&'a Member> {
    let mut candidates: Vec<&Member> = members
        .iter()
        .filter(|m| m.id != from.id && m.free() > 0 && !excluded(m))
        .collect();
    candidates.sort_by(|a, b| {
        distance(matrix, from, a)
            .total_cmp(&distance(matrix, from, b))
            .then_with(|| b.free().cmp(&a.free()))
            .then_with(|| a.id.cmp(&b.id))
    });
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn member(id: &str, x: f64, y: f64, capacity: u32, in_flight: u32) -> Member {
        Member {
            id: id.into(),
            location: [x, y],
            capacity,
            in_flight,
            listen: None,
            forwarded: BTreeMap::new(),
        }
    }

    #[test]
    fn nearest_with_room_skips_full_self_and_excluded_and_orders_by_distance() {
        let a = member("a", 0.0, 0.0, 4, 4);
        let all = vec![
            a.clone(),
            member("b", 5.0, 0.0, 4, 0),
            member("c", 1.0, 0.0, 4, 4),
            member("d", 2.0, 0.0, 4, 1),
            member("e", 1.5, 0.0, 4, 0),
        ];
        let order: Vec<&str> = nearest_with_room(&a, &all, &LatencyMatrix::new(), |m| m.id == "e")
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(order, ["d", "b"]);
    }

    #[test]
    fn matrix_overrides_locations_either_way_round() {
        let (a, b) = (member("a", 0.0, 0.0, 1, 0), member("b", 3.0, 4.0, 1, 0));
        assert_eq!(distance(&LatencyMatrix::new(), &a, &b), 5.0);
        let matrix: LatencyMatrix = [("b".to_owned(), [("a".to_owned(), 1.5)].into())].into();
        assert_eq!(distance(&matrix, &a, &b), 1.5);
    }

    #[test]
    fn the_view_forgets_silent_nodes() {
        let mut view = View::default();
        view.heard(member("a", 0.0, 0.0, 1, 0));
        assert_eq!(view.alive(Duration::from_secs(1)).len(), 1);
        assert!(view.alive(Duration::ZERO).is_empty());
        view.left("a");
        assert!(view.alive(Duration::from_secs(1)).is_empty());
    }
}
