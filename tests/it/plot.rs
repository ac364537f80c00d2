//! `nodec plot`: every kind renders a valid picture that is not blank (SVG parses as XML and
//! holds many drawn points; PNG decodes with many colours and much ink), `auto` follows the
//! rule `--help` states, and kinds or variables that do not fit the model are clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::root;

/// A fresh directory for one test's pictures.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodec-plot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `nodec plot MODEL ARGS...` in `dir`, with the model named from the repository root.
fn plot(dir: &Path, model: &str, args: &[&str]) -> Output {
    let model = root().join(model);
    Command::new(env!("CARGO_BIN_EXE_nodec"))
        .arg("plot")
        .arg(&model)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the nodec binary runs")
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What an SVG holds: vertices of drawn polylines, rectangles and circles.
#[derive(Debug, Default)]
struct SvgInk {
    vertices: usize,
    rects: usize,
    circles: usize,
}

/// Parses an SVG (it must be well-formed XML with an `svg` root) and counts what is drawn.
fn svg_ink(path: &Path) -> SvgInk {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let mut ink = SvgInk::default();
    for node in doc.descendants().filter(|n| n.is_element()) {
        match node.tag_name().name() {
            "polyline" => {
                ink.vertices += node
                    .attribute("points")
                    .unwrap_or_default()
                    .split_whitespace()
                    .count()
            }
            "rect" => ink.rects += 1,
            "circle" => ink.circles += 1,
            _ => {}
        }
    }
    ink
}

/// Decodes a PNG and returns its number of distinct colours and its share of pixels that are
/// not the white background.
fn png_ink(path: &Path) -> (usize, f64) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let pixels = &pixels[..info.buffer_size()];
    let mut colours: Vec<[u8; 3]> = pixels.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    let total = colours.len();
    let inked = colours.iter().filter(|p| **p != [255, 255, 255]).count();
    colours.sort_unstable();
    colours.dedup();
    (colours.len(), inked as f64 / total as f64)
}

/// A training log as `nodec train --log` writes it, from a short real run (the log's format
/// is the train command's, so the test reads what it writes).
fn training_log(dir: &Path) -> PathBuf {
    let log = dir.join("decay_fit.csv");
    let output = Command::new(env!("CARGO_BIN_EXE_nodec"))
        .args(["train", "models/decay_fit.node", "--quiet", "--log"])
        .arg(&log)
        .arg("--out")
        .arg(dir.join("decay_fit.json"))
        .current_dir(root())
        .output()
        .unwrap();
    assert_ok(&output, "train decay_fit");
    log
}

/// Every kind on a model it fits, small and quick: SVGs are XML with many drawn points (heat
/// maps: a rectangle per cell), PNGs decode with many colours and a good share of ink.
#[test]
fn every_kind_renders_a_valid_picture_that_is_not_blank() {
    let dir = scratch("kinds");
    let log = training_log(&dir);
    let log = log.to_str().unwrap();
    let size = ["--size", "240x180"];
    // (model, kind, extra arguments, least polyline vertices, least rectangles)
    let cases: [(&str, &str, &[&str], usize, usize); 7] = [
        ("models/decay.node", "series", &[], 8, 0),
        ("models/lorenz.node", "phase", &[], 900, 0),
        ("models/circles_anode.node", "decision", &[], 0, 25 * 25),
        ("models/cnf_moons.node", "density", &[], 0, 25 * 25),
        (
            "models/crowd_motion.node",
            "trajectories",
            &[],
            40 * 10,
            25 * 25,
        ),
        ("models/cnf_moons.node", "grid", &[], 26 * 80, 0),
        ("models/decay_fit.node", "training", &["--log", log], 2, 0),
    ];
    for (model, kind, extra, vertices, rects) in cases {
        let svg = dir.join(format!("{kind}.svg"));
        let mut args = vec!["--kind", kind, "--out", svg.to_str().unwrap()];
        args.extend(size);
        args.extend(extra);
        assert_ok(&plot(&dir, model, &args), kind);
        let ink = svg_ink(&svg);
        assert!(
            ink.vertices >= vertices && ink.rects >= rects,
            "{kind}: {ink:?}, wanted {vertices} vertices and {rects} rectangles"
        );
    }
    // The scatter kinds draw their data.
    assert!(svg_ink(&dir.join("decision.svg")).circles >= 100);
    // PNG for a line kind, a heat-map kind and a 3-D one.
    for (model, kind) in [
        ("models/vdp.node", "phase"),
        ("models/cnf_moons.node", "density"),
        ("models/lorenz.node", "phase"),
    ] {
        let png = dir.join(format!("{kind}.png"));
        let out = png.to_str().unwrap();
        assert_ok(
            &plot(
                &dir,
                model,
                &["--kind", kind, "--out", out, "--size", "240x180"],
            ),
            kind,
        );
        let (colours, ink) = png_ink(&png);
        // Text, axes and antialiased lines alone give dozens of colours; a heat map hundreds.
        assert!(colours > 30, "{model} {kind}: {colours} colours");
        assert!(ink > 0.05, "{model} {kind}: {ink} of the pixels inked");
    }
    let (colours, ink) = png_ink(&dir.join("density.png"));
    // At 240 × 180 the plot area is about half the picture, the rest margins and labels.
    assert!(
        colours > 100 && ink > 0.35,
        "a density fills its plot area: {colours} colours, {ink} inked"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `auto` picks as `--help` says; the default picture is `<model stem>-<kind>.svg` in the
/// current directory, so the file's name shows the kind picked.
#[test]
fn auto_picks_the_kind_that_help_states() {
    let dir = scratch("auto");
    for (model, kind) in [
        ("decay", "series"),
        ("lorenz", "phase"),
        ("vdp", "phase"),
        ("circles_anode", "decision"),
        ("cnf_moons", "density"),
        ("otflow_moons", "density"),
        ("crowd_motion", "trajectories"),
        // Its input is the initial state, with an observed cost and no running one.
        ("lotka_volterra_fit", "grid"),
    ] {
        let output = plot(
            &dir,
            &format!("models/{model}.node"),
            &["--size", "160x120"],
        );
        assert_ok(&output, model);
        let picture = dir.join(format!("{model}-{kind}.svg"));
        assert!(picture.exists(), "{model}: no {}", picture.display());
        svg_ink(&picture);
    }
    let log = training_log(&dir);
    let output = plot(
        &dir,
        "models/decay_fit.node",
        &["--log", log.to_str().unwrap(), "--size", "160x120"],
    );
    assert_ok(&output, "auto with --log");
    assert!(dir.join("decay_fit-training.svg").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A kind that does not fit the model, an unknown variable, a wrong count of variables and an
/// extension that is no picture are command-line errors (exit 2) that say what fits; a broken
/// training log is a file error at its line (exit 1); nothing is written.
#[test]
fn kinds_and_variables_that_do_not_fit_are_clear_errors() {
    let dir = scratch("errors");
    let out = dir.join("x.svg");
    let out = out.to_str().unwrap();
    let refused = |model: &str, args: &[&str], wanted: &[&str]| {
        let mut all = vec!["--out", out];
        all.extend(args);
        let output = plot(&dir, model, &all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        for w in wanted {
            assert!(stderr.contains(w), "{args:?}: `{w}` not in: {stderr}");
        }
        assert!(!Path::new(out).exists(), "{args:?} wrote a picture");
    };
    refused(
        "models/lorenz.node",
        &["--kind", "decision"],
        &["--kind decision needs a classifier", "lorenz.node"],
    );
    refused(
        "models/crowd_motion.node",
        &["--kind", "density"],
        &["--kind density needs a flow"],
    );
    refused(
        "models/lorenz.node",
        &["--kind", "phase", "--vars", "x,yy"],
        &["no state component `yy`", "did you mean `y`?", "x, y, z"],
    );
    refused(
        "models/lorenz.node",
        &["--kind", "phase", "--vars", "x"],
        &["needs 2 to 3 variables"],
    );
    refused("models/lorenz.node", &["--kind", "training"], &["--log"]);
    // A training log that is not one: a file error (exit 1) at its line.
    std::fs::write(dir.join("bad.csv"), "epoch,loss\n1,0.5\n2,oops\n").unwrap();
    let output = plot(
        &dir,
        "models/decay.node",
        &["--log", "bad.csv", "--out", out],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("bad.csv:3: error: expected 2 numbers"),
        "{stderr}"
    );
    assert!(!Path::new(out).exists());
    let output = plot(&dir, "models/lorenz.node", &["--out", "x.pdf"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains(".svg or .png"));
    std::fs::remove_dir_all(&dir).unwrap();
}
