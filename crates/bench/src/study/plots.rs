//! The study's SVG plots (plotters): cold start per backend on a log scale, execution per
//! workload and backend, and the concurrency sweep. Emulated backends say so in their label.

use std::path::Path;

use plotters::prelude::*;

use super::report::EMULATED;
use super::run::{Sample, Study};
use crate::stats::Summary;

type Result<T> = std::result::Result<T, String>;

const COLOURS: [RGBColor; 15] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 100, 0),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
];

fn label(study: &Study, backend: &str) -> String {
    if study.emulated.iter().any(|b| b == backend) {
        format!("{backend} ({EMULATED})")
    } else {
        backend.to_owned()
    }
}

fn p50(
    study: &Study,
    backend: &str,
    workload: &str,
    mode: &str,
    pick: fn(&Sample) -> Option<f64>,
) -> Option<Summary> {
    let v: Vec<f64> = study
        .samples
        .iter()
        .filter(|s| s.backend == backend && s.workload == workload && s.mode == mode)
        .filter_map(pick)
        .collect();
    Summary::of(&v)
}

/// Writes `cold_start.svg`, `execution.svg` and `concurrency.svg` into `dir`.
pub fn write_all(study: &Study, dir: &Path) -> Result<()> {
    cold_start(study, &dir.join("cold_start.svg"))?;
    execution(study, &dir.join("execution.svg"))?;
    concurrency(study, &dir.join("concurrency.svg"))
}

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("plotting: {e}")
}

/// A log-scale axis range around the positive values (a log axis cannot start at 0).
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        0.001..1.0
    } else {
        lo / 2.0..hi * 2.0
    }
}

/// The charts' coordinates: a category or count on x, a log-scale value on y.
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordusize, LogCoord<f64>>,
>;

/// Draws one backend's points joined by a line, with its legend entry.
fn line(
    chart: &mut Chart,
    points: Vec<(usize, f64)>,
    name: String,
    colour: RGBColor,
) -> Result<()> {
    chart
        .draw_series(LineSeries::new(points, colour.stroke_width(2)).point_size(4))
        .map_err(err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    Ok(())
}

/// Draws the legend box at `position`.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(err)
}

fn cold_start(study: &Study, path: &Path) -> Result<()> {
    let rows: Vec<(String, Summary, bool)> = study
        .ran
        .iter()
        .filter_map(|b| {
            p50(study, b, "noop", "noio", |s| s.m.cold_ms)
                .map(|s| (label(study, b), s, study.emulated.contains(b)))
        })
        .collect();
    let root = SVGBackend::new(path, (1300, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let range = log_range(rows.iter().flat_map(|(_, s, _)| [s.p50, s.p99]));
    let n = rows.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Cold start of the no-op, p50 (dot) and p99 (cross), ms, log scale; hollow = emulated, not comparable",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0..n, range.log_scale())
        .map_err(err)?;
    let short: Vec<String> = rows
        .iter()
        .map(|(name, _, emulated)| {
            let name = name.split(' ').next().unwrap_or_default();
            if *emulated {
                format!("{name}*")
            } else {
                name.to_owned()
            }
        })
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|i| short.get(*i).cloned().unwrap_or_default())
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    for (i, (name, s, emulated)) in rows.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let style = if *emulated {
            colour.stroke_width(2)
        } else {
            colour.filled()
        };
        chart
            .draw_series([Circle::new((i, s.p50), 6, style)])
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x, y), 5, style));
        chart
            .draw_series([Cross::new((i, s.p99), 6, colour.stroke_width(2))])
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}

fn execution(study: &Study, path: &Path) -> Result<()> {
    let keys: Vec<(&'static str, &'static str)> =
        study.workloads.iter().map(|w| (w.name, w.mode())).collect();
    let series: Vec<(String, Vec<(usize, f64)>)> = study
        .ran
        .iter()
        .map(|b| {
            let points = keys
                .iter()
                .enumerate()
                .filter_map(|(i, (w, m))| p50(study, b, w, m, |s| s.m.exec_ms).map(|s| (i, s.p50)))
                .collect();
            (label(study, b), points)
        })
        .filter(|(_, p): &(String, Vec<(usize, f64)>)| !p.is_empty())
        .collect();
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let range = log_range(series.iter().flat_map(|(_, p)| p.iter().map(|(_, v)| *v)));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Execution p50 per workload, ms, log scale",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0..keys.len().max(1), range.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(keys.len() + 1)
        .x_label_formatter(&|i| {
            keys.get(*i)
                .map_or(String::new(), |(w, m)| format!("{w} {m}"))
        })
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        line(&mut chart, points.clone(), name.clone(), colour)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}

fn concurrency(study: &Study, path: &Path) -> Result<()> {
    let mut backends: Vec<&str> = study.sweep.iter().map(|p| p.backend.as_str()).collect();
    backends.dedup();
    let range = log_range(study.sweep.iter().map(|p| p.throughput));
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Concurrency sweep: Mandelbrot invocations per second by in-flight count",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0usize..9, range.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("in flight")
        .y_desc("invocations/s")
        .draw()
        .map_err(err)?;
    for (i, b) in backends.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(usize, f64)> = study
            .sweep
            .iter()
            .filter(|p| p.backend == *b)
            .map(|p| (p.in_flight, p.throughput))
            .collect();
        line(&mut chart, points, b.to_string(), colour)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::study::backends::Measurement;
    use crate::study::kvm::Acceleration;
    use crate::study::run::{Host, Options, StageSample, SweepPoint};
    use crate::study::workload::Workload;

    pub(crate) fn fake_study() -> Study {
        let m = |cold: f64, exec: f64| Measurement {
            cold_ms: Some(cold),
            exec_ms: Some(exec),
            e2e_ms: cold + exec,
            work_ms: None,
            rss_kib: Some(100),
            result: String::new(),
        };
        let mut samples = Vec::new();
        let backends = [
            ("limes-cold", 0.01, 1.2, false),
            ("native-process", 1.0, 1.0, false),
            ("microvm-qemu", 1700.0, 1.5, true),
            ("unikernel-qemu", 170.0, 1.5, true),
        ];
        for (backend, cold, exec, emulated) in backends {
            for w in Workload::all(true) {
                for i in 0..20 {
                    // A little spread, so that the intervals have a width.
                    let spread = 1.0 + 0.001 * i as f64;
                    samples.push(Sample {
                        backend: backend.into(),
                        workload: w.name,
                        mode: w.mode(),
                        iteration: i,
                        emulated,
                        m: m(cold * spread, exec * spread),
                    });
                }
            }
        }
        let mut stages = Vec::new();
        for i in 0..20 {
            let spread = 1.0 + 0.001 * f64::from(i);
            for (stage, limes, native) in [("decode", 1.0, 1.0), ("blur", 3.0, 1.0)] {
                for (backend, ms) in [("limes-cold", limes), ("native-process", native)] {
                    stages.push(StageSample {
                        backend: backend.into(),
                        stage,
                        ms: ms * spread,
                    });
                }
            }
        }
        let latency_ms = Summary::of(&[1.0, 2.0]).unwrap();
        Study {
            host: Host {
                cpu: "test".into(),
                cores: 2,
                kernel: "6".into(),
                memory_gib: 1.0,
            },
            accel: Acceleration::Emulated {
                reason: "test".into(),
            },
            options: Options {
                guests: "g".into(),
                limes: "l".into(),
                quick: true,
                iterations: None,
                backends: None,
                workloads: None,
                allow_emulated: false,
            },
            workloads: Workload::all(true),
            ran: backends.iter().map(|b| b.0.to_owned()).collect(),
            unavailable: vec![("container".into(), "no bwrap".into())],
            failures: Vec::new(),
            samples,
            sweep: [1, 2, 4, 8]
                .map(|n| SweepPoint {
                    backend: "limes-cold".into(),
                    in_flight: n,
                    throughput: 100.0 * n as f64,
                    latency_ms,
                })
                .to_vec(),
            emulated: vec!["microvm-qemu".into(), "unikernel-qemu".into()],
            stages,
        }
    }

    #[test]
    fn plots_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let study = fake_study();
        cold_start(&study, &dir.path().join("c.svg")).unwrap();
        eprintln!("cold done");
        execution(&study, &dir.path().join("e.svg")).unwrap();
        eprintln!("exec done");
        concurrency(&study, &dir.path().join("s.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("c.svg")).unwrap();
        assert!(svg.contains("limes-cold") && svg.contains("native-process"));
    }
}
