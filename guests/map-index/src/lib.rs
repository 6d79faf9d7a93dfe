//! `map-index`: the nearest of 200 000 places to a point. Its initialization parses the
//! embedded place list and builds a grid index over it (several MB on the heap); `run` answers
//! `X Y` (0–10 000 each) with `id x y` of the nearest place.
//!
//! With an initialization step ([`limes_guest::init!`]) a node builds the index once at deploy
//! and every invocation starts with it built; without one (`limes run` without `--preinit`),
//! the first use in each instance builds it.

use std::sync::OnceLock;

const PLACES: &str = include_str!(concat!(env!("OUT_DIR"), "/places.csv"));
/// Grid cells per side over the 10 000 × 10 000 map.
const CELLS: usize = 256;
const CELL: f32 = 10_000.0 / CELLS as f32;

struct Index {
    points: Vec<(u32, f32, f32)>,
    /// For each cell, the range of `points` (sorted by cell) that lie in it.
    cells: Vec<(u32, u32)>,
}

static INDEX: OnceLock<Index> = OnceLock::new();

fn cell_of(x: f32, y: f32) -> (usize, usize) {
    let c = |v: f32| ((v / CELL) as usize).min(CELLS - 1);
    (c(x), c(y))
}

fn build() -> Index {
    let mut points: Vec<(u32, f32, f32)> = PLACES
        .lines()
        .filter_map(|line| {
            let mut f = line.split(',');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    points.sort_by_key(|&(_, x, y)| {
        let (cx, cy) = cell_of(x, y);
        cy * CELLS + cx
    });
    let mut cells = vec![(0u32, 0u32); CELLS * CELLS];
    for (i, &(_, x, y)) in points.iter().enumerate() {
        let (cx, cy) = cell_of(x, y);
        let cell = &mut cells[cy * CELLS + cx];
        if cell.1 == 0 {
            cell.0 = i as u32;
        }
        cell.1 += 1;
    }
    Index { points, cells }
}

impl Index {
    /// The nearest place, searching rings of cells outward until one holds a place and the next
    /// ring cannot hold a nearer one.
    fn nearest(&self, x: f32, y: f32) -> Option<(u32, f32, f32)> {
        let (cx, cy) = cell_of(x, y);
        let mut best: Option<((u32, f32, f32), f32)> = None;
        for ring in 0..CELLS as i64 {
            for dy in -ring..=ring {
                for dx in -ring..=ring {
                    if dx.abs() != ring && dy.abs() != ring {
                        continue;
                    }
                    let (gx, gy) = (cx as i64 + dx, cy as i64 + dy);
                    if !(0..CELLS as i64).contains(&gx) || !(0..CELLS as i64).contains(&gy) {
                        continue;
                    }
                    let (start, len) = self.cells[gy as usize * CELLS + gx as usize];
                    for &p in &self.points[start as usize..(start + len) as usize] {
                        let d = (p.1 - x).powi(2) + (p.2 - y).powi(2);
                        if best.is_none_or(|(_, b)| d < b) {
                            best = Some((p, d));
                        }
                    }
                }
            }
            if let Some((_, d)) = best
                && d.sqrt() <= ring as f32 * CELL
            {
                break;
            }
        }
        best.map(|(p, _)| p)
    }
}

struct MapIndex;

impl limes_guest::Init for MapIndex {
    fn init() {
        INDEX.get_or_init(build);
    }
}

impl limes_guest::Guest for MapIndex {
    fn run(args: String) -> String {
        let mut coords = args.split_whitespace().map(str::parse::<f32>);
        let (Some(Ok(x)), Some(Ok(y))) = (coords.next(), coords.next()) else {
            return format!("error: expected `X Y`, got {args:?}");
        };
        match INDEX.get_or_init(build).nearest(x, y) {
            Some((id, px, py)) => format!("{id} {px:.2} {py:.2}"),
            None => "error: no places".into(),
        }
    }
}

limes_guest::init!(MapIndex);
