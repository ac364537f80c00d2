//! The data layer through its public API: the portable generator against an independent
//! reference, each toy set's geometry, CSV parsing of `models/data/digits.csv` and of
//! malformed files, and every model's data blocks.

use std::f64::consts::PI;

use nodec::data::{self, DataError, Dataset};
use nodec::diag::SourceFile;
use nodec::ir::{Column, DataSource, Shape, ToyKind};
use nodec::rng::Rng;
use nodec::sema::Overrides;

use crate::support;

/// `models/data/digits.csv`, the copy `digits_odenet.node` reads.
fn digits() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/data/digits.csv");
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
}

fn point(d: &Dataset, i: usize) -> (f64, f64) {
    (d.inputs[2 * i], d.inputs[2 * i + 1])
}

fn radius(d: &Dataset, i: usize) -> f64 {
    let (x, y) = point(d, i);
    x.hypot(y)
}

fn labels(d: &Dataset) -> &[f64] {
    d.labels.as_deref().expect("labelled set")
}

fn bits(d: &Dataset) -> Vec<u64> {
    d.inputs
        .iter()
        .chain(d.labels.iter().flatten())
        .map(|x| x.to_bits())
        .collect()
}

/// Asserts `got` and `want` agree to `tol` elementwise.
fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "{got:?} vs {want:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The generator against an independent reference.
//
// The expected values come from the Python reimplementation in docs/data.md ("Reference
// values"): PCG32 seed expansion and ChaCha8 written from their specifications (its ChaCha
// block reproduces RFC 7539's test vector), with Python's exact integers. Integer and uniform
// draws must match bit for bit; values that pass through log/cos/sin may differ in the last
// bits between Python's C library and the libm crate, hence 1e-14 (a few ulps at these sizes).

#[test]
fn rng_matches_the_reference_chacha8() {
    let mut r = Rng::new(0);
    let words: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
    assert_eq!(
        words,
        [
            13080132717333068652,
            8594738769458413623,
            12896916468484187878
        ]
    );
    let mut r = Rng::new(42);
    let units: Vec<f64> = (0..3).map(|_| r.unit()).collect();
    // Bit identity: these are exact functions of the reference words.
    assert_eq!(
        units,
        [0.6818961923066714, 0.950275407672484, 0.4275164028565197]
    );
    let mut r = Rng::new(7);
    let below: Vec<usize> = (0..10).map(|_| r.below(10)).collect();
    assert_eq!(below, [1, 1, 7, 7, 6, 3, 0, 8, 3, 9]);
    let mut r = Rng::new(1);
    let normals: Vec<f64> = (0..3).map(|_| r.normal(0.0, 1.0)).collect();
    assert_close(
        &normals,
        &[
            0.8881529718908301,
            0.25808989365040697,
            -0.20011365011563995,
        ],
        1e-14,
    );
}

#[test]
fn generators_match_the_reference_implementation() {
    // (generated set, expected inputs, expected labels)
    type Case<'a> = (Dataset, &'a [f64], Option<&'a [f64]>);
    let cases: [Case; 6] = [
        (
            data::circles(5, 0.1, 3, 0.5),
            &[
                -0.9506691408297567,
                0.013083047935501023,
                0.5003741067879578,
                0.16235296012802614,
                -0.25582249806696045,
                -0.4164842338635895,
                0.947683398902828,
                0.17604677948748393,
                -0.3519016234077687,
                0.34802443250140214,
            ],
            Some(&[0.0, 1.0, 1.0, 0.0, 1.0]),
        ),
        (
            data::moons(5, 0.1, 3),
            &[
                -0.9506691408297567,
                0.013083047935501023,
                0.0003741067879578063,
                0.6623529601280261,
                1.9941775019330397,
                0.5165284680286296,
                0.947683398902828,
                0.17604677948748393,
                0.898098376592231,
                -0.5849882693908172,
            ],
            Some(&[0.0, 1.0, 1.0, 0.0, 1.0]),
        ),
        (
            data::spirals(5, 0.05, 4),
            &[
                0.6834254637374642,
                2.6102565913727855,
                0.7293980491879952,
                0.5805468574471485,
                2.536980409854918,
                1.7363068532981063,
                -0.5984713187657931,
                -2.6529617829518894,
                -0.711095264809515,
                -0.48965938956615024,
            ],
            Some(&[0.0, 0.0, 0.0, 1.0, 1.0]),
        ),
        (
            data::gaussians(3, 0.5, 2),
            &[
                -3.5254044210308684,
                0.3896715156845769,
                -2.3463011493538075,
                0.030385993210479852,
                3.4108599337707033,
                0.10164836274974834,
            ],
            None,
        ),
        (
            data::checkerboard(3, 0.0, 5),
            &[
                -2.3900023732175706,
                -2.265421036045449,
                1.7214443185870536,
                -3.147008439138745,
                2.532312589689038,
                -1.426418432364569,
            ],
            None,
        ),
        (
            data::annulus(4, 0.1, 1),
            &[
                0.18039036135718448,
                0.3040756010798142,
                0.3585694767998501,
                0.3620735174067925,
                -0.3148130877759868,
                -1.2198368253655876,
                0.7367817009819886,
                0.9647379063985682,
            ],
            Some(&[1.0, 1.0, 0.0, 0.0]),
        ),
    ];
    for (got, inputs, labels) in cases {
        assert_close(&got.inputs, inputs, 1e-14);
        assert_eq!(got.labels.as_deref(), labels);
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry and balance of each generator, from the definitions (not from the code's output).

#[test]
fn circles_lie_on_two_circles() {
    let d = data::circles(201, 0.0, 1, 0.5);
    assert_eq!((d.n, d.input_dim), (201, 2));
    let l = labels(&d);
    // sklearn: n // 2 outer (label 0), the rest inner.
    assert_eq!(l.iter().filter(|&&y| y == 0.0).count(), 100);
    assert_eq!(l.iter().filter(|&&y| y == 1.0).count(), 101);
    for (i, &y) in l.iter().enumerate() {
        let want = if y == 0.0 { 1.0 } else { 0.5 };
        // cos² + sin² = 1 to a few ulps.
        assert!((radius(&d, i) - want).abs() < 1e-12);
    }
    // Shuffled: the first half is not all one class.
    assert!(l[..100].contains(&0.0) && l[..100].contains(&1.0));
}

#[test]
fn circles_without_noise_are_the_linspace_points() {
    // make_circles(8, factor=0.5, noise=None): angles 0, π/2, π, 3π/2 on radii 1 and 0.5.
    let d = data::circles(8, 0.0, 0, 0.5);
    let mut got: Vec<(i64, i64, i64)> = (0..8)
        .map(|i| {
            let (x, y) = point(&d, i);
            // Round away cos(π/2) ≈ 6e-17 so that the points compare exactly.
            (
                (x * 1e9).round() as i64,
                (y * 1e9).round() as i64,
                labels(&d)[i] as i64,
            )
        })
        .collect();
    got.sort_unstable();
    let mut want = vec![
        (1_000_000_000, 0, 0),
        (0, 1_000_000_000, 0),
        (-1_000_000_000, 0, 0),
        (0, -1_000_000_000, 0),
        (500_000_000, 0, 1),
        (0, 500_000_000, 1),
        (-500_000_000, 0, 1),
        (0, -500_000_000, 1),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn moons_lie_on_two_half_circles() {
    let d = data::moons(300, 0.0, 2);
    let l = labels(&d);
    assert_eq!(l.iter().filter(|&&y| y == 0.0).count(), 150);
    for (i, &class) in l.iter().enumerate() {
        let (x, y) = point(&d, i);
        if class == 0.0 {
            // Upper half of the unit circle.
            assert!((x.hypot(y) - 1.0).abs() < 1e-12 && y >= -1e-12);
        } else {
            // Lower half of the unit circle centred at (1, 0.5).
            assert!(((x - 1.0).hypot(y - 0.5) - 1.0).abs() < 1e-12 && y <= 0.5 + 1e-12);
        }
    }
    // make_moons(6, noise=None): linspace(0, π, 3) on both moons.
    let d = data::moons(6, 0.0, 0);
    let mut got: Vec<(i64, i64, i64)> = (0..6)
        .map(|i| {
            let (x, y) = point(&d, i);
            (
                (x * 1e9).round() as i64,
                (y * 1e9).round() as i64,
                labels(&d)[i] as i64,
            )
        })
        .collect();
    got.sort_unstable();
    let g = 1_000_000_000;
    let mut want = vec![
        (g, 0, 0),
        (0, g, 0),
        (-g, 0, 0),
        (0, g / 2, 1),
        (g, -g / 2, 1),
        (2 * g, g / 2, 1),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn spirals_are_two_mirrored_arms() {
    let n = 401;
    let d = data::spirals(n, 0.0, 4);
    let l = labels(&d);
    let m = n - n / 2;
    assert!(l[..m].iter().all(|&y| y == 0.0) && l[m..].iter().all(|&y| y == 1.0));
    // Arm 1 is the point reflection of arm 0 (bit for bit: negation is exact).
    for i in 0..n / 2 {
        let (x0, y0) = point(&d, i);
        let (x1, y1) = point(&d, m + i);
        assert_eq!(
            (x1.to_bits(), y1.to_bits()),
            ((-x0).to_bits(), (-y0).to_bits())
        );
    }
    // |(-cos θ·θ + jx, sin θ·θ + jy)| ≤ θ + |j| ≤ 3π + 0.5·√2, then /3.
    let bound = (3.0 * PI + 0.5 * 2f64.sqrt()) / 3.0;
    assert!((0..n).all(|i| radius(&d, i) <= bound));
    // The arms reach out to 540°: some point beyond radius 2.5.
    assert!((0..n).any(|i| radius(&d, i) > 2.5));
}

#[test]
fn gaussians_sit_on_eight_centers() {
    let d = data::gaussians(400, 0.0, 6);
    assert!(d.labels.is_none());
    let mut hits = [0usize; 8];
    for i in 0..d.n {
        let (x, y) = point(&d, i);
        // Without noise each point is a center 4·(cos kπ/4, sin kπ/4) divided by 1.414.
        assert!((x.hypot(y) - 4.0 / 1.414).abs() < 1e-12);
        let k = (y.atan2(x) / (PI / 4.0)).round().rem_euclid(8.0) as usize;
        hits[k] += 1;
    }
    // 400 draws over 8 centres, 50 expected each.
    assert!(hits.iter().all(|&h| h > 20), "{hits:?}");
    // With FFJORD's std 0.5 the mixture is centred at 0.
    let d = data::gaussians(4000, 0.5, 6);
    let mean_x = (0..d.n).map(|i| point(&d, i).0).sum::<f64>() / d.n as f64;
    // Per-coordinate sd ≈ 2 (mixture), standard error ≈ 0.03.
    assert!(mean_x.abs() < 0.15, "{mean_x}");
}

#[test]
fn checkerboard_fills_alternate_squares() {
    let d = data::checkerboard(2000, 0.0, 8);
    assert!(d.labels.is_none());
    let mut squares = std::collections::BTreeSet::new();
    for i in 0..d.n {
        let (x, y) = point(&d, i);
        assert!((-4.0..4.0).contains(&x) && (-4.0..4.0).contains(&y));
        let (cx, cy) = ((x / 2.0).floor() as i64, (y / 2.0).floor() as i64);
        assert_eq!((cx + cy).rem_euclid(2), 0, "({x}, {y})");
        squares.insert((cx, cy));
    }
    // All 8 squares of that colour on the 4×4 board are used.
    assert_eq!(squares.len(), 8);
}

#[test]
fn annulus_is_a_disc_inside_a_ring_uniform_in_area() {
    let d = data::annulus(4001, 0.0, 1);
    let l = labels(&d);
    assert_eq!(l.iter().filter(|&&y| y == 1.0).count(), 2001);
    let (mut disc_inner, mut ring_inner) = (0, 0);
    for (i, &class) in l.iter().enumerate() {
        let r = radius(&d, i);
        if class == 1.0 {
            assert!(r <= 0.5 + 1e-12);
            disc_inner += usize::from(r * r < 0.125);
        } else {
            assert!((1.0 - 1e-12..=1.5 + 1e-12).contains(&r));
            ring_inner += usize::from(r * r < 1.625);
        }
    }
    // Uniform in area: half of each class lies inside the radius that halves its area.
    // Binomial sd ≈ 0.011 for 2000 points; allow about 5 sd.
    let half = |k: usize, n: usize| (k as f64 / n as f64 - 0.5).abs() < 0.06;
    assert!(half(disc_inner, 2001) && half(ring_inner, 2000));
    // Shuffled: both classes appear among the first samples.
    assert!(l[..20].contains(&0.0) && l[..20].contains(&1.0));
}

#[test]
fn normal_and_uniform_have_their_moments() {
    let d = data::normal(20_000, 2, 3, &[1.0, -2.0], 0.5);
    for j in 0..2 {
        let xs: Vec<f64> = (0..d.n).map(|i| d.input(i)[j]).collect();
        let mean = xs.iter().sum::<f64>() / d.n as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.n as f64).sqrt();
        // Standard errors 0.0035 (mean) and 0.0025 (sd).
        assert!((mean - [1.0, -2.0][j]).abs() < 0.02 && (sd - 0.5).abs() < 0.015);
    }
    let d = data::uniform(1000, 3, -1.0, 2.0, 3);
    assert!(d.inputs.iter().all(|x| (-1.0..2.0).contains(x)));
}

#[test]
fn every_generator_is_deterministic_per_seed() {
    let all = |seed: u64| {
        vec![
            data::circles(50, 0.1, seed, 0.5),
            data::moons(50, 0.1, seed),
            data::spirals(50, 0.1, seed),
            data::gaussians(50, 0.5, seed),
            data::checkerboard(50, 0.1, seed),
            data::annulus(50, 0.1, seed),
            data::normal(50, 3, seed, &[0.0; 3], 1.0),
            data::uniform(50, 3, 0.0, 1.0, seed),
        ]
    };
    for ((a, b), c) in all(5).iter().zip(all(5)).zip(all(6)) {
        // Bit identity is the claim.
        assert_eq!(bits(a), bits(&b));
        assert_ne!(bits(a), bits(&c));
    }
}

// ---------------------------------------------------------------------------------------------
// `generate` from the model's declarations.

#[test]
fn every_model_data_block_generates() {
    for path in support::node_files("models") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let model = support::load_model(&name);
        let shapes: Vec<Shape> = model.inputs.iter().map(|i| i.shape).collect();
        // File-backed sources (csv, series) are read by `cli` and parsed elsewhere.
        for block in model
            .data
            .iter()
            .filter(|b| data::file_path(&b.source).is_none())
        {
            let d = data::generate(&block.source, &model.pool, &shapes)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let width: usize = shapes.iter().map(|s| s.len()).sum();
            assert_eq!(d.input_dim, width, "{name}");
            assert_eq!(d.inputs.len(), d.n * width, "{name}");
            if !model.labels.is_empty() {
                assert_eq!(d.labels.as_ref().map(Vec::len), Some(d.n), "{name}");
            }
        }
    }
}

#[test]
fn uniform_label_reads_inputs_in_declaration_order() {
    let text = "input a[2]\ninput b\nlabel y\nstate x = 0\ndx/dt = -x\n\
                schedule euler(t = [0, 1], steps = 1)\n\
                data train = uniform(n = 20, dim = 3, lo = -1, hi = 1, seed = 5, label = a[1] + 10 * b)\n";
    let file = SourceFile::new("label.node", text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "label");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    let model = nodec::prepare(model);
    let shapes: Vec<Shape> = model.inputs.iter().map(|i| i.shape).collect();
    let d = data::generate(&model.data[0].source, &model.pool, &shapes).unwrap();
    for i in 0..d.n {
        let u = d.input(i);
        // One addition and one multiplication by 10: exact up to one rounding each.
        assert!((d.label(i).unwrap() - (u[1] + 10.0 * u[2])).abs() < 1e-14);
    }
    // The inputs are plain uniform draws from the same seed.
    assert_eq!(d.inputs, data::uniform(20, 3, -1.0, 1.0, 5).inputs);
    // The model's inputs must add up to `dim`.
    let err = data::generate(&model.data[0].source, &model.pool, &[Shape::Vector(2)]).unwrap_err();
    assert_eq!(err, DataError::InputWidth { dim: 3, width: 2 });
    assert!(err.to_string().starts_with("error: "));
}

// ---------------------------------------------------------------------------------------------
// CSV and series parsing.

fn csv(
    input: (Column, Column),
    label: Option<Column>,
    shuffle: Option<u64>,
    rows: Option<(usize, usize)>,
) -> DataSource {
    DataSource::Csv {
        path: "digits.csv".into(),
        input,
        label,
        shuffle,
        rows,
    }
}

fn idx(a: usize, b: usize) -> (Column, Column) {
    (Column::Index(a), Column::Index(b))
}

fn rows_of(d: &Dataset) -> Vec<Vec<u64>> {
    (0..d.n)
        .map(|i| {
            let mut row: Vec<u64> = d.input(i).iter().map(|x| x.to_bits()).collect();
            row.push(d.label(i).unwrap().to_bits());
            row
        })
        .collect()
}

#[test]
fn digits_by_index_and_by_name() {
    let by_index = data::parse_csv(
        digits(),
        &csv(idx(0, 64), Some(Column::Index(64)), None, None),
        "digits.csv",
    )
    .unwrap();
    assert_eq!((by_index.n, by_index.input_dim), (1797, 64));
    // The first rows of the file (README): digit 0 with p2 = 0.3125, then digit 1.
    assert_eq!(by_index.input(0)[2], 0.3125);
    assert_eq!(by_index.label(0), Some(0.0));
    assert_eq!(by_index.label(1), Some(1.0));
    assert!(by_index.inputs.iter().all(|x| (0.0..=1.0).contains(x)));
    // A name range is end-exclusive like an index range: "p0".."label" is 0..64.
    let names = (Column::Name("p0".into()), Column::Name("label".into()));
    let by_name = data::parse_csv(
        digits(),
        &csv(names, Some(Column::Name("label".into())), None, None),
        "digits.csv",
    )
    .unwrap();
    assert_eq!(by_name, by_index);
    let pixels =
        data::parse_csv(digits(), &csv(idx(10, 12), None, None, None), "digits.csv").unwrap();
    assert_eq!(pixels.input(0), &by_index.input(0)[10..12]);
    assert!(pixels.labels.is_none());
}

#[test]
fn digits_shuffle_then_rows_splits_train_and_test() {
    let parse = |rows| {
        data::parse_csv(
            digits(),
            &csv(idx(0, 64), Some(Column::Index(64)), Some(1), rows),
            "digits.csv",
        )
        .unwrap()
    };
    let train = parse(Some((0, 1400)));
    let test = parse(Some((1400, 1797)));
    assert_eq!((train.n, test.n), (1400, 397));
    // Together they are exactly the file's rows (as a multiset: the file may repeat a row).
    let mut together = rows_of(&train);
    together.extend(rows_of(&test));
    together.sort_unstable();
    let all = data::parse_csv(
        digits(),
        &csv(idx(0, 64), Some(Column::Index(64)), None, None),
        "digits.csv",
    )
    .unwrap();
    let mut all = rows_of(&all);
    all.sort_unstable();
    assert_eq!(together, all);
    // The shuffle really permutes: the training rows are not the file's first 1400.
    let unshuffled = data::parse_csv(
        digits(),
        &csv(idx(0, 64), Some(Column::Index(64)), None, Some((0, 1400))),
        "digits.csv",
    )
    .unwrap();
    assert_ne!(rows_of(&train), rows_of(&unshuffled));
    // Every digit appears in the test set.
    let classes: std::collections::BTreeSet<i64> =
        (0..test.n).map(|i| test.label(i).unwrap() as i64).collect();
    assert_eq!(classes.len(), 10);
    // Rows past the end are an error, not a short set.
    let err = data::parse_csv(
        digits(),
        &csv(idx(0, 64), None, Some(1), Some((1400, 1800))),
        "digits.csv",
    )
    .unwrap_err();
    assert_eq!(
        err,
        DataError::RowsOutOfRange {
            file: "digits.csv".into(),
            start: 1400,
            end: 1800,
            rows: 1797
        }
    );
    assert_eq!(
        err.to_string(),
        "digits.csv: error: `rows = 1400..1800` is out of range: the file has 1797 data rows (0..1797)"
    );
}

fn parse_err(text: &str, source: &DataSource) -> DataError {
    data::parse_csv(text, source, "f.csv").expect_err("the file is malformed")
}

#[test]
fn malformed_rows_and_cells_name_their_line_and_column() {
    let two = csv(idx(0, 2), None, None, None);
    // A short row: the error points just past its end.
    let err = parse_err("a,b,c\n1,2,3\n4,5\n", &two);
    assert_eq!(err.position(), Some((3, 4)));
    assert_eq!(
        err.to_string(),
        "f.csv:3:4: error: this row has 2 cells but the first row has 3"
    );
    // A long row: the error points at the first extra cell.
    let err = parse_err("1,2\n3,4,5\n", &two);
    assert_eq!(err.position(), Some((2, 5)));
    // A text cell in a used column, after blank and CRLF lines.
    let err = parse_err("a,b\r\n1,2\r\n\r\n3, x\r\n", &two);
    assert_eq!(
        err.to_string(),
        "f.csv:4:4: error: `x` in column 1 (`b`) is not a number"
    );
    // Columns count characters, not bytes.
    let err = parse_err("name,v\nθθθ,1\nθθθ,x\n", &csv(idx(1, 2), None, None, None));
    assert_eq!(err.position(), Some((3, 5)));
    // Empty and non-finite cells.
    let err = parse_err("1,2\n,3\n", &two);
    assert_eq!(err.to_string(), "f.csv:2:1: error: empty cell in column 0");
    let err = parse_err("1,2\n3,inf\n", &two);
    assert!(
        matches!(
            err,
            DataError::NonFinite {
                line: 2,
                column: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let err = parse_err("1,2\n3,1e999\n", &two);
    assert!(matches!(err, DataError::NonFinite { .. }), "{err:?}");
    // An unclosed quote.
    let err = parse_err("1,2\n3,\"4\n", &two);
    assert!(
        matches!(
            err,
            DataError::UnclosedQuote {
                line: 2,
                column: 3,
                ..
            }
        ),
        "{err:?}"
    );
    // Unused text columns are allowed; used ones are not.
    let d = data::parse_csv("1,a\n2,b\n", &csv(idx(0, 1), None, None, None), "f.csv").unwrap();
    assert_eq!(d.inputs, [1.0, 2.0]);
    // An empty file has no rows.
    assert_eq!(
        parse_err("\n\n", &two),
        DataError::NoRows {
            file: "f.csv".into()
        }
    );
}

#[test]
fn header_detection_never_guesses() {
    // All names: a header. All numbers: data.
    let d = data::parse_csv("x,y\n1,2\n", &csv(idx(0, 2), None, None, None), "f.csv").unwrap();
    assert_eq!(d.n, 1);
    let d = data::parse_csv("1,2\n3,4\n", &csv(idx(0, 2), None, None, None), "f.csv").unwrap();
    assert_eq!(d.n, 2);
    // A text cell above a number could be a numeric-named header or a typo: an error.
    let err = parse_err("t,1\n0,2\n", &csv(idx(0, 2), None, None, None));
    assert!(
        matches!(
            err,
            DataError::AmbiguousHeader {
                line: 1,
                column: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let err = parse_err("1,x\n1,2\n", &csv(idx(0, 2), None, None, None));
    assert!(
        matches!(err, DataError::AmbiguousHeader { column: 3, .. }),
        "{err:?}"
    );
    // A name without a header.
    let err = parse_err(
        "1,2\n",
        &csv(
            (Column::Name("x".into()), Column::Index(2)),
            None,
            None,
            None,
        ),
    );
    assert!(matches!(err, DataError::NoHeader { .. }), "{err:?}");
}

#[test]
fn unknown_and_out_of_range_columns() {
    let err = data::parse_csv(
        digits(),
        &csv(idx(0, 64), Some(Column::Name("lable".into())), None, None),
        "digits.csv",
    )
    .unwrap_err();
    assert_eq!(
        err,
        DataError::UnknownColumn {
            file: "digits.csv".into(),
            name: "lable".into(),
            suggestion: Some("label".into())
        }
    );
    assert_eq!(
        err.to_string(),
        "digits.csv: error: the header has no column `lable`; did you mean `label`?"
    );
    let err =
        data::parse_csv(digits(), &csv(idx(0, 66), None, None, None), "digits.csv").unwrap_err();
    assert_eq!(
        err.message(),
        "input column 66 is out of range: the file has 65 columns (0..65)"
    );
    let err = data::parse_csv(
        digits(),
        &csv(idx(0, 64), Some(Column::Index(65)), None, None),
        "digits.csv",
    )
    .unwrap_err();
    assert!(matches!(
        err,
        DataError::ColumnOutOfRange {
            role: "label",
            column: 65,
            ..
        }
    ));
    let reversed = (Column::Name("p5".into()), Column::Name("p2".into()));
    let err =
        data::parse_csv(digits(), &csv(reversed, None, None, None), "digits.csv").unwrap_err();
    assert!(matches!(
        err,
        DataError::EmptyColumnRange {
            start: 5,
            end: 2,
            ..
        }
    ));
    let err = parse_err(
        "a,a\n1,2\n",
        &csv(
            (Column::Name("a".into()), Column::Index(2)),
            None,
            None,
            None,
        ),
    );
    assert!(matches!(
        err,
        DataError::DuplicateColumn {
            first: 0,
            second: 1,
            ..
        }
    ));
}

/// `rows = A..B` keeps a window of a series (to fit a short stretch first), and a window past
/// the file's rows is an error naming them.
#[test]
fn series_rows_keep_a_window() {
    let series = |rows| DataSource::Series {
        path: "obs.csv".into(),
        t: Column::Index(0),
        values: (Column::Index(1), Column::Index(3)),
        rows,
        traj: None,
        input: None,
        input_file: None,
    };
    let text = "t,x,y\n0,1,2\n0.5,3,4\n1,5,6\n";
    let d = data::parse_csv(text, &series(Some((1, 3))), "obs.csv").unwrap();
    assert_eq!(d.times.as_deref(), Some(&[0.5, 1.0][..]));
    assert_eq!(d.observed.as_deref(), Some(&[3.0, 4.0, 5.0, 6.0][..]));
    let err = data::parse_csv(text, &series(Some((2, 5))), "obs.csv").unwrap_err();
    assert!(
        matches!(err, DataError::RowsOutOfRange { rows: 3, .. }),
        "{err}"
    );
}

#[test]
fn series_gives_times_and_observations() {
    let series = |t: Column| DataSource::Series {
        path: "obs.csv".into(),
        t,
        values: (Column::Name("x".into()), Column::Index(3)),
        rows: None,
        traj: None,
        input: None,
        input_file: None,
    };
    let text = "t,x,y\n0,1,2\n0.5,3,4\n1,5,6\n";
    let d = data::parse_csv(text, &series(Column::Name("t".into())), "obs.csv").unwrap();
    assert_eq!(d.times.as_deref(), Some(&[0.0, 0.5, 1.0][..]));
    assert_eq!(
        d.observed.as_deref(),
        Some(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0][..])
    );
    assert_eq!((d.n, d.obs_dim, d.input_dim), (1, 2, 0));
    let err = data::parse_csv(
        "t,x,y\n0,1,2\n0,3,4\n",
        &series(Column::Index(0)),
        "obs.csv",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "obs.csv:3:1: error: the times of a series must increase, but 0 follows 0"
    );
    // A generator source is not a file.
    let moons = DataSource::Toy {
        kind: ToyKind::Moons,
        n: 4,
        noise: 0.0,
        seed: 0,
        factor: 0.5,
    };
    assert!(matches!(
        data::parse_csv(text, &moons, "obs.csv"),
        Err(DataError::WrongSource { .. })
    ));
}
