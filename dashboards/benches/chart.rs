//! Rendering one year of 1-minute data (525,600 points) into an 800-px
//! chart: gap detection, min/max downsampling and SVG writing together.
//! Goal: ≤ 50 ms. Run with `cargo bench -p apr-dashboards --bench chart`.

use apr_dashboards::chart::{self, ChartSpec, Series};

fn main() {
    divan::main();
}

fn year_of_minutes() -> Vec<(i64, f64)> {
    let start = 1_704_067_200;
    (0..525_600i64)
        .filter(|k| !(200_000..200_600).contains(k)) // a 10-hour outage
        .map(|k| {
            let phase = (k % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
            (
                start + 60 * k,
                0.8 + 0.5 * phase.sin() + ((k * 7919) % 101) as f64 / 500.0,
            )
        })
        .collect()
}

#[divan::bench(sample_count = 30)]
fn year_of_1_minute_data_into_800_px(bencher: divan::Bencher) {
    let points = year_of_minutes();
    let (from, to) = (points[0].0, points[points.len() - 1].0);
    bencher.bench(|| {
        let mut spec = ChartSpec::new(
            "ex",
            "Cloro libre (mg/L)",
            vec![Series {
                name: "caseta",
                points: divan::black_box(&points),
            }],
            from,
            to,
        );
        spec.band = Some((0.2, 2.0));
        spec.thresholds = &[0.2, 2.0];
        spec.utc_offset_s = -3 * 3600;
        chart::render(&spec)
    });
}
