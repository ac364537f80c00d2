//! Results people can use elsewhere: parameter files that record shapes (JSON and `.npz`),
//! `nodec run --all-samples`, and `.npy`/`.npz` trajectories and data, read back by nodec's
//! own reader and, when Python has numpy, by numpy.

use std::process::Command;

use nodec::npy::{read_npy, read_npz, write_npy, Array};
use serde_json::{json, Value};

use crate::support::{nodec, root};

fn tmp(name: &str) -> String {
    let dir = root().join("target/results-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_str().unwrap().to_string()
}

fn ok(out: std::process::Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json_of(args: &[&str]) -> Value {
    serde_json::from_slice(&ok(nodec(args))).expect("JSON on stdout")
}

fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().map(|x| x.as_f64().unwrap()).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

/// A short training of `resnet_euler` (3 epochs), written to `out`.
fn short_resnet() -> String {
    let text = std::fs::read_to_string(root().join("models/resnet_euler.node"))
        .unwrap()
        .replace("epochs = 200", "epochs = 3");
    let path = tmp("resnet3.node");
    std::fs::write(&path, text).unwrap();
    path
}

/// What `run` reports that depends on the parameters: final states, loss, costs, metrics.
fn results(model: &str, params: &str) -> Value {
    let v = json_of(&["run", model, "--params", params, "--format", "json"]);
    json!([v["final"], v["loss"], v["costs"], v["metrics"]])
}

/// `train --out` records every param's shape under `$shapes` (layers outermost for `per layer`
/// params, as the model declares them: 10 steps, `w = 8`, `d = 2`), and the file, the same
/// values as `.npz`, as the old form without shapes, and as numpy's nested lists all load to
/// the same results.
#[test]
fn trained_params_record_shapes_and_every_form_loads_back() {
    let model = short_resnet();
    let json_path = tmp("p3.json");
    let npz_path = tmp("p3.npz");
    for out in [&json_path, &npz_path] {
        ok(nodec(&["train", &model, "--quiet", "--out", out]));
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let shapes = &file["$shapes"];
    assert_eq!(
        shapes,
        &json!({"K1": [10, 8, 2], "b": [10, 8], "K2": [10, 2, 8], "head": [2], "bias": []})
    );
    let arrays = read_npz(&std::fs::read(&npz_path).unwrap()).unwrap();
    assert_eq!(arrays.len(), 5);
    for (name, array) in &arrays {
        let want: Vec<usize> = serde_json::from_value(shapes[name].clone()).unwrap();
        assert_eq!(array.shape, want, "{name}");
        assert_eq!(
            array.values,
            numbers(&file[name]),
            "{name}: same bits as the JSON"
        );
    }
    let reference = results(&model, &json_path);
    assert_eq!(results(&model, &npz_path), reference);
    // The old form: no `$shapes`.
    let mut old = file.clone();
    old.as_object_mut().unwrap().remove("$shapes");
    let old_path = tmp("p3_old.json");
    std::fs::write(&old_path, old.to_string()).unwrap();
    assert_eq!(results(&model, &old_path), reference);
    // Nested lists, as numpy's `tolist()` writes them: K1 as 10 × 8 × 2.
    let mut nested = old.clone();
    let k1 = numbers(&file["K1"]);
    let rows: Vec<Value> = k1
        .chunks(16)
        .map(|layer| json!(layer.chunks(2).map(|r| json!(r)).collect::<Vec<_>>()))
        .collect();
    nested["K1"] = json!(rows);
    let nested_path = tmp("p3_nested.json");
    std::fs::write(&nested_path, nested.to_string()).unwrap();
    assert_eq!(results(&model, &nested_path), reference);
    // A transposed K1 (10 × 2 × 8) is refused at the declaration, naming both shapes.
    let transposed: Vec<Value> = k1
        .chunks(16)
        .map(|layer| json!([layer[..8].to_vec(), layer[8..].to_vec()]))
        .collect();
    nested["K1"] = json!(transposed);
    std::fs::write(&nested_path, nested.to_string()).unwrap();
    let out = nodec(&["run", &model, "--params", &nested_path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(":11:1: error: `K1` in `")
            && stderr.contains("has shape [10, 2, 8], but the model's `K1` has shape [10, 8, 2]"),
        "{stderr}"
    );
}

/// The CSV of `--all-samples`, parsed: the header and the rows as text cells.
fn csv_rows(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

/// Each `--all-samples` row holds what `--sample I` reports for sample I (final states, the
/// same solve), its loss terms average to the reported loss, and the JSON form holds the same
/// numbers; rows are in sample order.
#[test]
fn all_samples_rows_match_one_sample_runs() {
    let model = "models/resnet_euler.node";
    let csv = String::from_utf8(ok(nodec(&[
        "run",
        model,
        "--all-samples",
        "--format",
        "csv",
    ])))
    .unwrap();
    let (header, rows) = csv_rows(&csv);
    assert_eq!(
        header,
        [
            "data",
            "sample",
            "label",
            "final.x[0]",
            "final.x[1]",
            "loss",
            "costs.terminal",
            "metrics.accuracy"
        ]
    );
    assert_eq!(rows.len(), 512, "moons(n = 512)");
    let cell = |row: &[String], name: &str| -> f64 { row[column(&header, name)].parse().unwrap() };
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row[0], "train");
        assert_eq!(row[1], k.to_string());
    }
    let all = json_of(&["run", model, "--all-samples", "--format", "json"]);
    let samples = all["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 512);
    for i in [0usize, 7, 300, 511] {
        let one = json_of(&["run", model, "--sample", &i.to_string(), "--format", "json"]);
        let x = numbers(&one["final"]["x"]);
        assert_eq!(cell(&rows[i], "final.x[0]"), x[0], "sample {i}");
        assert_eq!(cell(&rows[i], "final.x[1]"), x[1], "sample {i}");
        let s = &samples[i];
        assert_eq!(numbers(&s["final"]["x"]), x, "sample {i}");
        assert_eq!(s["loss"].as_f64().unwrap(), cell(&rows[i], "loss"));
        assert_eq!(
            s["metrics"]["accuracy"].as_f64().unwrap(),
            cell(&rows[i], "metrics.accuracy")
        );
        assert_eq!(s["label"].as_f64().unwrap(), cell(&rows[i], "label"));
    }
    // The mean of the samples' terms, plus the penalty, is the loss `run` reports.
    let summary = json_of(&["run", model, "--format", "json"]);
    let mean = |name: &str| rows.iter().map(|r| cell(r, name)).sum::<f64>() / rows.len() as f64;
    let penalty = summary["costs"]["penalty"].as_f64().unwrap();
    let loss = summary["loss"].as_f64().unwrap();
    assert!(((mean("loss") + penalty - loss) / loss).abs() < 1e-12);
    let accuracy = summary["metrics"]["accuracy"].as_f64().unwrap();
    assert!((mean("metrics.accuracy") - accuracy).abs() < 1e-12);
}

/// A sample's row against an independent solve of that sample alone: `digits_odenet` with
/// `rows = I..I+1` (the same shuffle) has that one sample as its training set, so its loss is
/// the row's terminal cost plus the penalty. Both blocks are reported, in order.
#[test]
fn all_samples_rows_match_a_model_of_that_sample_alone() {
    let source = std::fs::read_to_string(root().join("models/digits_odenet.node")).unwrap();
    let data = root().join("models/data/digits.csv");
    let source = source.replace(
        "\"data/digits.csv\"",
        &format!("{:?}", data.to_str().unwrap()),
    );
    let model = tmp("digits_abs.node");
    std::fs::write(&model, &source).unwrap();
    let csv = String::from_utf8(ok(nodec(&[
        "run",
        &model,
        "--all-samples",
        "--format",
        "csv",
    ])))
    .unwrap();
    let (header, rows) = csv_rows(&csv);
    assert_eq!(rows.len(), 1797);
    assert!(rows[..1400].iter().all(|r| r[0] == "train"));
    assert!(rows[1400..].iter().all(|r| r[0] == "test"));
    assert_eq!(rows[1400][1], "0");
    for i in [3usize, 1399] {
        let one = tmp(&format!("digits_row{i}.node"));
        std::fs::write(
            &one,
            source.replace("rows = 0..1400", &format!("rows = {i}..{}", i + 1)),
        )
        .unwrap();
        let v = json_of(&["run", &one, "--format", "json"]);
        let train = &v["data"]["train"];
        assert_eq!(train["samples"], 1);
        let terminal = train["costs"]["terminal"].as_f64().unwrap();
        let cell = |name: &str| -> f64 { rows[i][column(&header, name)].parse().unwrap() };
        assert!(
            (terminal - cell("costs.terminal")).abs() <= 1e-12 * terminal.abs(),
            "sample {i}: {terminal} vs {}",
            cell("costs.terminal")
        );
        assert_eq!(
            train["metrics"]["accuracy"].as_f64().unwrap(),
            cell("metrics.accuracy")
        );
        let x = numbers(&v["final"]["x"]);
        for (j, xj) in x.iter().enumerate() {
            let got = cell(&format!("final.x[{j}]"));
            assert!((got - xj).abs() <= 1e-12 * xj.abs().max(1.0), "x[{j}]");
        }
    }
}

/// `--all-samples` output is the same bytes on 1 and 2 threads.
#[test]
fn all_samples_are_bit_identical_for_any_thread_count() {
    let run = |threads: &str| {
        ok(Command::new(env!("CARGO_BIN_EXE_nodec"))
            .args([
                "run",
                "models/digits_odenet.node",
                "--all-samples",
                "--format",
                "csv",
            ])
            .env("RAYON_NUM_THREADS", threads)
            .current_dir(root())
            .output()
            .unwrap())
    };
    assert_eq!(run("1"), run("2"));
}

/// A model without data has one sample, its trajectory; binary formats need `--out`.
#[test]
fn a_model_without_data_has_one_sample() {
    let all = json_of(&[
        "run",
        "models/decay.node",
        "--all-samples",
        "--format",
        "json",
    ]);
    let one = json_of(&["run", "models/decay.node", "--format", "json"]);
    let samples = all["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0]["final"], one["final"]);
    assert_eq!(samples[0]["data"], "");
    let out = nodec(&["run", "models/decay.node", "--format", "npz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out FILE.npz"));
}

/// Python with numpy, if this machine has it (`NODEC_TEST_PYTHON` names another interpreter);
/// without it the test says so on stderr and checks with nodec's reader only.
#[allow(clippy::print_stderr)]
fn numpy_python() -> Option<String> {
    let python = std::env::var("NODEC_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = Command::new(&python)
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has {
        Some(python)
    } else {
        eprintln!(
            "note: {python} has no numpy; the .npy/.npz files are checked by nodec's reader only"
        );
        None
    }
}

/// Trajectories as `.npz` (arrays shaped `[T, ...]`, keyed like the JSON) and `.npy` (the CSV's
/// columns), picked by `--out`'s extension, hold the JSON's numbers; numpy reads them too.
#[test]
fn trajectories_as_npz_and_npy_hold_the_json_numbers() {
    let model = "models/lorenz.node";
    let v = json_of(&["run", model, "--format", "json"]);
    let t = numbers(&v["t"]);
    let npz = tmp("lorenz.npz");
    let npy = tmp("lorenz.npy");
    ok(nodec(&["run", model, "--out", &npz]));
    ok(nodec(&["run", model, "--out", &npy]));
    let arrays = read_npz(&std::fs::read(&npz).unwrap()).unwrap();
    let get = |key: &str| {
        arrays
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, a)| a)
            .unwrap()
    };
    assert_eq!(get("t").values, t);
    for name in ["x", "y", "z"] {
        let a = get(&format!("states.{name}"));
        assert_eq!(a.shape, [t.len()]);
        assert_eq!(a.values, numbers(&v["states"][name]));
    }
    let table = read_npy(&std::fs::read(&npy).unwrap()).unwrap();
    let csv = String::from_utf8(ok(nodec(&["run", model, "--format", "csv"]))).unwrap();
    let (header, rows) = csv_rows(&csv);
    assert_eq!(table.shape, [rows.len(), header.len()]);
    let cells: Vec<f64> = rows.iter().flatten().map(|c| c.parse().unwrap()).collect();
    assert_eq!(table.values, cells);

    let samples = tmp("resnet_samples.npz");
    ok(nodec(&[
        "run",
        "models/resnet_euler.node",
        "--all-samples",
        "--out",
        &samples,
    ]));
    let Some(python) = numpy_python() else {
        return;
    };
    let script = format!(
        "import numpy as np, json, sys\n\
         z = np.load({npz:?})\n\
         v = json.loads(sys.stdin.read())\n\
         assert z['t'].dtype == np.float64 and z['t'].tolist() == v['t']\n\
         assert z['states.x'].tolist() == v['states']['x']\n\
         a = np.load({npy:?})\n\
         assert a.shape == ({rows}, {cols}) and a[:, 0].tolist() == v['t']\n\
         s = np.load({samples:?})\n\
         assert s['train/final.x'].shape == (512, 2) and s['train/loss'].shape == (512,)\n",
        rows = rows.len(),
        cols = header.len()
    );
    let out = Command::new(python)
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .output_with(&serde_json::to_vec(&v).unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `Command::output` with bytes on standard input.
trait OutputWith {
    fn output_with(&mut self, input: &[u8]) -> std::process::Output;
}

impl OutputWith for Command {
    fn output_with(&mut self, input: &[u8]) -> std::process::Output {
        use std::io::Write as _;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

/// A `csv(...)` block reads an `.npy` array of the same rows as the CSV file and gives the
/// same data: the digits as an array (written by nodec's writer from the CSV's numbers) give
/// `digits_odenet` the same loss and metrics bit for bit.
#[test]
fn csv_blocks_read_npy_arrays() {
    let text = std::fs::read_to_string(root().join("models/data/digits.csv")).unwrap();
    let mut lines = text.lines();
    let width = lines.next().unwrap().split(',').count();
    let values: Vec<f64> = lines
        .flat_map(|l| l.split(',').map(|c| c.trim().parse::<f64>().unwrap()))
        .collect();
    let n = values.len() / width;
    let npy = tmp("digits.npy");
    std::fs::write(&npy, write_npy(&Array::new(vec![n, width], values))).unwrap();
    let source = std::fs::read_to_string(root().join("models/digits_odenet.node"))
        .unwrap()
        .replace(
            "\"data/digits.csv\", input = \"p0\"..\"label\", label = \"label\"",
            &format!(
                "\"digits.npy\", input = 0..{}, label = {}",
                width - 1,
                width - 1
            ),
        );
    assert!(source.contains("digits.npy"));
    let model = tmp("digits_npy.node");
    std::fs::write(&model, source).unwrap();
    let a = json_of(&["run", "models/digits_odenet.node", "--format", "json"]);
    let b = json_of(&["run", &model, "--format", "json"]);
    assert_eq!(a["data"], b["data"]);
    // A truncated array is an error at the data block that names the file.
    std::fs::write(
        &npy,
        &write_npy(&Array::new(vec![2, 2], vec![0.0; 4]))[..100],
    )
    .unwrap();
    let out = nodec(&["run", &model]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("digits_npy.node:33:1: error: `")
            && stderr.contains("digits.npy`: ")
            && stderr.contains("truncated"),
        "{stderr}"
    );
}
