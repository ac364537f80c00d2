//! `nodec run --ensemble`: members from a grid, a CSV file or seeded draws, one row each,
//! checked against closed forms, against single runs of the same values, against statistics
//! recomputed here, and for the same bytes on 1 and 2 threads.

use std::process::Command;

use crate::support::{nodec, root};

fn dir() -> std::path::PathBuf {
    let dir = root().join("target/ensemble-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tmp(name: &str) -> String {
    dir().join(name).to_str().unwrap().to_string()
}

fn ok(args: &[&str]) -> String {
    let out = nodec(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rows of a CSV file of numbers after its header.
fn rows(path: &str) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    (header, rows)
}

/// `models/decay.node`: x(4) = 2 exp(-4 k) for every member of a grid, in grid order.
#[test]
fn a_grid_of_decay_rates_matches_the_closed_form() {
    let out = tmp("decay_grid.csv");
    ok(&[
        "run",
        "models/decay.node",
        "--ensemble",
        "k=0.25:2:8",
        "--out",
        &out,
    ]);
    let (header, rows) = rows(&out);
    assert_eq!(header, ["k", "x", "loss", "terminal"]);
    assert_eq!(rows.len(), 8);
    for (i, row) in rows.iter().enumerate() {
        let k = 0.25 + i as f64 * 0.25;
        assert!((row[0] - k).abs() < 1e-15, "member {i}: k {}", row[0]);
        let exact = 2.0 * (-4.0 * k).exp();
        assert!(
            (row[1] - exact).abs() <= 1e-8 * exact,
            "member {i}: x(4) = {} vs {exact}",
            row[1]
        );
        // The loss is the terminal cost x(4).
        assert_eq!(row[2], row[1]);
    }
}

/// Each row holds the numbers `nodec run --set` gives for its values alone, bit for bit; a
/// CSV file of the same members gives the same rows; the product's last axis is fastest.
#[test]
fn members_are_single_runs_and_a_csv_file_gives_the_same_rows() {
    let grid = tmp("lorenz_grid.csv");
    ok(&[
        "run",
        "models/lorenz.node",
        "--ensemble",
        "rho=20:30:3,beta=2:3:2",
        "--out",
        &grid,
    ]);
    let (header, grid_rows) = rows(&grid);
    assert_eq!(header, ["rho", "beta", "x", "y", "z", "r"]);
    let members = tmp("lorenz_members.csv");
    let mut text = "rho,beta\n".to_string();
    for row in &grid_rows {
        text += &format!("{},{}\n", row[0], row[1]);
    }
    std::fs::write(&members, text).unwrap();
    let from_file = tmp("lorenz_from_file.csv");
    ok(&[
        "run",
        "models/lorenz.node",
        "--ensemble",
        &members,
        "--out",
        &from_file,
    ]);
    assert_eq!(rows(&from_file).1, grid_rows);
    let expected = [(20.0, 2.0), (20.0, 3.0), (25.0, 2.0), (25.0, 3.0)];
    for (row, (rho, beta)) in grid_rows.iter().zip(expected) {
        assert_eq!((row[0], row[1]), (rho, beta));
        let single = ok(&[
            "run",
            "models/lorenz.node",
            "--set",
            &format!("rho={rho}"),
            "--set",
            &format!("beta={beta}"),
            "--all-samples",
            "--format",
            "csv",
        ]);
        // data,sample,outputs.r,final.x,final.y,final.z
        let cells: Vec<f64> = single
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .skip(2)
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(
            row[2..],
            [cells[1], cells[2], cells[3], cells[0]],
            "rho {rho}, beta {beta}"
        );
    }
}

fn draws(threads: &str, out: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_nodec"))
        .args([
            "run",
            "models/decay.node",
            "--ensemble",
            "k~loguniform(0.05,2)",
            "--members",
            "300",
            "--seed",
            "11",
            "--out",
            out,
        ])
        .env("RAYON_NUM_THREADS", threads)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// Seeded draws: the same bytes on 1 and 2 threads (rows streamed in member order from
/// parallel chunks), every value in range, and the JSON summary equal to statistics computed
/// here from the rows (numpy's conventions: std with ddof 0, linear quantiles).
#[test]
fn draws_are_the_same_bytes_on_any_thread_count_and_summarised() {
    let (one, two) = (tmp("draws_1.json"), tmp("draws_2.json"));
    draws("1", &one);
    draws("2", &two);
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    let (npy1, npy2) = (tmp("draws_1.npy"), tmp("draws_2.npy"));
    draws("1", &npy1);
    draws("2", &npy2);
    let npy = std::fs::read(&npy1).unwrap();
    assert_eq!(npy, std::fs::read(&npy2).unwrap());
    let array = nodec::npy::read_npy(&npy).unwrap();
    assert_eq!(array.shape, [300, 4]);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&one).unwrap()).unwrap();
    assert_eq!(
        json["columns"],
        serde_json::json!(["k", "x", "loss", "terminal"])
    );
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 300);
    let mut ks: Vec<f64> = rows.iter().map(|r| r[0].as_f64().unwrap()).collect();
    assert!(ks.iter().all(|k| (0.05..2.0).contains(k)));
    // The npy rows are the JSON rows.
    for (i, r) in rows.iter().enumerate() {
        for c in 0..4 {
            assert_eq!(array.values[i * 4 + c], r[c].as_f64().unwrap());
        }
    }
    let n = ks.len() as f64;
    let mean = ks.iter().sum::<f64>() / n;
    let std = (ks.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / n).sqrt();
    ks.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let at = q * (ks.len() - 1) as f64;
        let lo = at.floor() as usize;
        ks[lo] + (at - lo as f64) * (ks[(lo + 1).min(ks.len() - 1)] - ks[lo])
    };
    let s = &json["summary"]["k"];
    let close = |key: &str, v: f64| {
        let got = s[key].as_f64().unwrap();
        assert!(
            (got - v).abs() <= 1e-12 * v.abs().max(1.0),
            "{key}: {got} vs {v}"
        );
    };
    close("mean", mean);
    close("std", std);
    close("q05", quantile(0.05));
    close("median", quantile(0.5));
    close("q95", quantile(0.95));
    close("min", ks[0]);
    close("max", ks[299]);
    // Log-uniform on [0.05, 2]: the median is sqrt(0.05 · 2) = 0.316 (± about 0.04 at n = 300).
    assert!(
        (quantile(0.5) - 0.1f64.sqrt()).abs() < 0.06,
        "{}",
        quantile(0.5)
    );
}

#[test]
fn ensemble_errors_say_what_to_do() {
    let fail = |args: &[&str], code: i32, needle: &str| {
        let out = nodec(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    fail(
        &["run", "models/decay.node", "--ensemble", "kk=1:2:3"],
        2,
        "not a param of `models/decay.node`; did you mean `k`?",
    );
    fail(
        &["run", "models/decay.node", "--ensemble", "k~normal(1,0.1)"],
        2,
        "add `--members N`",
    );
    fail(
        &["run", "models/resnet_euler.node", "--ensemble", "K1=1:2:3"],
        2,
        "an ensemble varies scalar params",
    );
    let npz = tmp("refused.npz");
    fail(
        &[
            "run",
            "models/decay.node",
            "--ensemble",
            "k=1:2:3",
            "--out",
            &npz,
        ],
        2,
        "write .npy, .csv or .json",
    );
    assert!(!std::path::Path::new(&npz).exists());
    // A member whose solution overflows stops the run, naming it; no file is left.
    let blown = tmp("blown.csv");
    fail(
        &[
            "run",
            "models/decay.node",
            "--ensemble",
            "k=1,x0=1",
            "--out",
            &blown,
        ],
        2,
        "not a param",
    );
    fail(
        &[
            "run",
            "models/decay.node",
            "--ensemble",
            "k=0:-200:3",
            "--out",
            &blown,
        ],
        3,
        "the failing member is 2 of 3: k = -200",
    );
    assert!(!std::path::Path::new(&blown).exists());
    let leftovers = std::fs::read_dir(dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".blown"))
        })
        .count();
    assert_eq!(leftovers, 0, "no temporary file is left behind");
    // A located error in a members file.
    let members = tmp("bad_members.csv");
    std::fs::write(&members, "k\n0.5\nhalf\n").unwrap();
    fail(
        &["run", "models/decay.node", "--ensemble", &members],
        1,
        "bad_members.csv:3:1: error: `half` is not a finite number",
    );
}

/// One sample's model with every kind of cost the lane path reduces itself: a matrix field
/// scaled by the member's `a` (its products run as GEMMs from 8 hidden units on, and then the
/// members are solved one at a time), running and terminal costs, a penalty on `a`, a metric
/// and an output; one data row with inputs and a label.
const CONTROLLED: &str = "model controlled
input u[2]
label y
param K1[HIDDEN, 3] ~ normal(0, 0.5)
param K2[3, HIDDEN] ~ normal(0, 0.5)
param head[3] ~ normal(0, 0.5)
param a = 0.5
param bias = 0
state x[3] = [u[0], u[1], 0]
dx/dt = a * K2 * tanh(K1 * x)
schedule METHOD
let p = sigmoid(dot(head, x) + bias)
cost terminal = bce(p, y)
cost running = 0.01 * 0.5 * sumsq(der(x))
cost penalty = 1e-4 * (sumsq(K1) + sumsq(K2)) + 1e-3 * a^2
metric accuracy = (p > 0.5) == y
output q = dot(head, x)
data one = csv(\"one.csv\", input = \"u0\"..\"y\", label = \"y\")
";

/// Members solved side by side in a batch's lanes give the bytes of members solved one at a
/// time (`NODEC_ENSEMBLE_LANES=0`): rows, summary, errors and exit status, for explicit,
/// implicit, fixed-step and event-driven solves, every cost kind a lone sample has, one data
/// row with inputs and a label, members that fail, and f32 kernels (solved one at a time).
#[test]
fn members_side_by_side_give_the_bytes_of_members_one_at_a_time() {
    let dir = dir().join("lanes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("one.csv"), "u0,u1,y\n0.3,-0.7,1\n").unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let controlled = |method: &str, hidden: &str| {
        CONTROLLED
            .replace("METHOD", method)
            .replace("HIDDEN", hidden)
    };
    let robertson = std::fs::read_to_string(root().join("models/robertson.node")).unwrap();
    let cases: Vec<(String, &str, &[&str])> = vec![
        (
            write("rk4.node", controlled("rk4(t = [0, 1], steps = 10)", "6")),
            "a=0.2:1.0:5,bias=-0.5:0.5:3",
            &[],
        ),
        (
            write(
                "dopri5.node",
                controlled("dopri5(t = [0, 1], rtol = 1e-7, atol = 1e-9)", "6"),
            ),
            "a~uniform(0.1,2),bias~normal(0,1)",
            &["--members", "70", "--seed", "3"],
        ),
        (
            write(
                "tsit5.node",
                controlled("tsit5(t = [0, 1], rtol = 1e-5, atol = 1e-7)", "6"),
            ),
            "a=0.2:1.0:9",
            &["--precision", "f32"],
        ),
        (
            write("gemm.node", controlled("rk4(t = [0, 1], steps = 10)", "16")),
            "a=0.2:1.0:5",
            &[],
        ),
        (
            // A bouncing ball, its restitution and gravity the members' params.
            write(
                "ball.node",
                crate::events::BALL.replace("const g", "param g")
                    + "schedule dopri5(t = [0, 4], rtol = 1e-10, atol = 1e-10)\n\
                       cost terminal = h^2\noutput speed = abs(v)\n",
            ),
            "e=0.5:0.9:5,g=9:10:3",
            &[],
        ),
        (
            write("robertson_bdf.node", robertson.replace("rodas4(", "bdf(")),
            "k1=0.02:0.06:5",
            &[],
        ),
        (
            "models/robertson.node".into(),
            "k1=0.02:0.06:3,k3=5e3:2e4:2",
            &[],
        ),
        (
            "models/vdp.node".into(),
            "mu~loguniform(0.1,5)",
            &["--members", "40"],
        ),
        ("models/decay.node".into(), "k=0:2:9", &[]),
        // A member that blows up, and one that needs more steps than allowed: the chunk's
        // batch fails and is solved again member by member to name the culprit.
        ("models/decay.node".into(), "k=-300:1:3", &[]),
        ("models/vdp.node".into(), "mu=1:1e6:3", &[]),
        // A member whose solve succeeds but whose output is infinite.
        (
            write(
                "pole.node",
                "param k = 0.5\nstate x = 1\ndx/dt = -k * x\n\
                 schedule rk4(t = [0, 1], steps = 4)\noutput r = x / (k - 1)\n"
                    .into(),
            ),
            "k=0:2:3",
            &[],
        ),
        (
            "models/lorenz.node".into(),
            "rho=0:40:11,sigma=-1:12:3",
            &[],
        ),
    ];
    for (file, spec, extra) in &cases {
        let mut outputs = Vec::new();
        for lanes in ["0", "1"] {
            let rows = tmp(&format!("lanes_{lanes}.csv"));
            let _ = std::fs::remove_file(&rows);
            let out = Command::new(env!("CARGO_BIN_EXE_nodec"))
                .args(["run", file, "--ensemble", spec, "--out", &rows])
                .args(*extra)
                .env("NODEC_ENSEMBLE_LANES", lanes)
                .current_dir(root())
                .output()
                .unwrap();
            let failing =
                spec.contains("-300") || spec.contains("1e6") || file.ends_with("pole.node");
            assert_eq!(
                out.status.success(),
                !failing,
                "{file} {spec}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            outputs.push((
                out.status.code(),
                out.stdout,
                out.stderr,
                std::fs::read(&rows).ok(),
            ));
        }
        assert!(
            outputs[0] == outputs[1],
            "{file} {spec}: one at a time\n{}{}\nside by side\n{}{}",
            String::from_utf8_lossy(&outputs[0].2),
            String::from_utf8_lossy(outputs[0].3.as_deref().unwrap_or_default()),
            String::from_utf8_lossy(&outputs[1].2),
            String::from_utf8_lossy(outputs[1].3.as_deref().unwrap_or_default()),
        );
    }
}
