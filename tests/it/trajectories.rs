//! Several trajectories in one `series` (`traj = COL`): each is a sample with its own initial
//! state (from `input` columns) and its own observation times. The loss and gradient of a
//! two-trajectory file are checked against two runs of the one-trajectory path, averaged by
//! hand; the parser's grouping and located errors; and a mini-batch of trajectories.

use nodec::cli::run::{load, Loaded};
use nodec::cli::Output;
use nodec::data::{self, DataError};
use nodec::ir::{Column, DataSource, GradientMethod};
use nodec::sema::Overrides;
use nodec::sens::{self, GradientOptions};

use crate::support::root;

fn dir() -> std::path::PathBuf {
    let dir = root().join("target/trajectories-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(name: &str, text: &str) -> String {
    let path = dir().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn load_model(path: &str) -> Loaded {
    let mut out = Output::default();
    load(path, &Overrides::default(), 0, None, &mut out)
        .unwrap_or_else(|| panic!("{path} loads: {}", out.stderr))
}

/// Trajectory A: from (1, 0), observed at 0.5, 1, 1.7, 2.5. Trajectory B: from (0.5, 2),
/// observed at 0.25, 1, 2, 3. Rows interleaved in the file, so grouping is exercised; t = 1 is
/// shared (every lane observed) and the other times are one trajectory's (lane by lane).
const A_ROWS: [(f64, f64, f64); 4] = [
    (0.5, 0.9, 0.3),
    (1.0, 0.6, 0.7),
    (1.7, 0.1, 0.8),
    (2.5, -0.4, 0.5),
];
const B_ROWS: [(f64, f64, f64); 4] = [
    (0.25, 0.7, 1.9),
    (1.0, 1.5, 1.2),
    (2.0, 1.6, -0.3),
    (3.0, 0.8, -1.1),
];
const A0: [f64; 2] = [1.0, 0.0];
const B0: [f64; 2] = [0.5, 2.0];

/// The model, with `init` as the initial state and `data` as its data block. The observed
/// cost depends on a parameter `s` directly (a noise scale), so a lane charged at a time it
/// is not observed would show in the gradient of `s`.
fn model(init: &str, extra: &str, data: &str, schedule: &str) -> String {
    format!(
        "model traj\n\
         param a = 0.7\n\
         param b = 0.3\n\
         param s = 0.8\n\
         {extra}\n\
         state x[2] = {init}\n\
         observed xobs[2]\n\
         dx/dt = [a * x[1], -b * x[0] - 0.1 * x[1]]\n\
         schedule {schedule}\n\
         data obs = {data}\n\
         cost observed = sum((x - xobs)^2) / s^2 + log(s^2)\n\
         cost terminal = 0.1 * x[0]^2\n"
    )
}

fn single_file(rows: &[(f64, f64, f64)]) -> String {
    let mut text = "t,u,v\n".to_string();
    for (t, u, v) in rows {
        text += &format!("{t},{u},{v}\n");
    }
    text
}

fn two_file() -> String {
    let mut text = "exp,t,u,v,u0,v0\n".to_string();
    for k in 0..4 {
        let (t, u, v) = A_ROWS[k];
        text += &format!("A,{t},{u},{v},{},{}\n", A0[0], A0[1]);
        let (t, u, v) = B_ROWS[k];
        text += &format!("B,{t},{u},{v},{},{}\n", B0[0], B0[1]);
    }
    text
}

/// Loss and gradient of the two-trajectory file, and of each trajectory alone through the
/// path without `traj` and without inputs (initial state a literal).
fn compare(schedule: &str, method: GradientMethod, tol: f64) {
    let tag = schedule.split('(').next().unwrap();
    write("two.csv", &two_file());
    write("a.csv", &single_file(&A_ROWS));
    write("b.csv", &single_file(&B_ROWS));
    let two = write(
        &format!("two_{tag}.node"),
        &model(
            "x0",
            "input x0[2]",
            "series(\"two.csv\", t = \"t\", values = \"u\"..\"u0\", traj = \"exp\", input = \"u0\"..6)",
            schedule,
        ),
    );
    let single = |file: &str, x0: [f64; 2]| {
        write(
            &format!("{file}_{tag}.node"),
            &model(
                &format!("[{}, {}]", x0[0], x0[1]),
                "",
                &format!("series(\"{file}.csv\", t = 0, values = 1..3)"),
                schedule,
            ),
        )
    };
    let (a, b) = (single("a", A0), single("b", B0));
    let grad = |path: &str| {
        let l = load_model(path);
        let data = &l.data[0].1;
        sens::gradient(&l.bind(data), &GradientOptions::new(method)).expect("gradient")
    };
    let (g2, ga, gb) = (grad(&two), grad(&a), grad(&b));
    let close = |x: f64, y: f64| (x - y).abs() <= tol * y.abs().max(1e-3);
    let loss = 0.5 * (ga.simulation.loss + gb.simulation.loss);
    assert!(
        close(g2.simulation.loss, loss),
        "{tag} {method:?}: loss {} vs (A + B) / 2 = {loss}",
        g2.simulation.loss
    );
    assert_eq!(g2.grad.len(), 3);
    for i in 0..3 {
        let expected = 0.5 * (ga.grad[i] + gb.grad[i]);
        assert!(
            close(g2.grad[i], expected),
            "{tag} {method:?}: gradient {i}: {} vs (A + B) / 2 = {expected}",
            g2.grad[i]
        );
    }
    // The per-sample report splits the same terms.
    let l = load_model(&two);
    let data = &l.data[0].1;
    assert_eq!(data.n, 2);
    let bound = l.bind(data);
    let sim = bound.simulate(None).unwrap();
    let per = bound.per_sample(&sim.solution);
    let kind = nodec::ir::CostKind::Observed;
    let values = &per.costs.iter().find(|(k, _)| *k == kind).unwrap().1;
    let observed = |g: &sens::Gradient| {
        g.simulation
            .costs
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap()
            .1
    };
    assert!(close(values[0], observed(&ga)), "{values:?}");
    assert!(close(values[1], observed(&gb)), "{values:?}");
}

/// A fixed-step schedule takes the same steps whatever the other trajectory's times, so the
/// two-trajectory loss and gradient are the single runs' mean to rounding, for every method.
#[test]
fn two_trajectories_are_the_mean_of_two_single_runs_fixed_step() {
    for method in [
        GradientMethod::Backprop,
        GradientMethod::Adjoint,
        GradientMethod::Forward,
    ] {
        compare("rk4(t = [0, 3], steps = 60)", method, 1e-11);
    }
}

/// An adaptive schedule also steps onto the other trajectory's times, which changes its steps
/// within the tolerance.
#[test]
fn two_trajectories_are_the_mean_of_two_single_runs_adaptive() {
    for method in [GradientMethod::Backprop, GradientMethod::Adjoint] {
        compare(
            "dopri5(t = [0, 3], rtol = 1e-11, atol = 1e-12)",
            method,
            1e-7,
        );
    }
}

/// A mini-batch of trajectories keeps their own rows and inputs.
#[test]
fn selecting_trajectories_keeps_their_rows() {
    write("two.csv", &two_file());
    let path = write(
        "select.node",
        &model(
            "x0",
            "input x0[2]",
            "series(\"two.csv\", t = 1, values = 2..4, traj = 0, input = 4..6)",
            "rk4(t = [0, 3], steps = 60)",
        ),
    );
    let l = load_model(&path);
    let data = &l.data[0].1;
    let b = data.select(&[1]);
    assert_eq!(b.n, 1);
    assert_eq!(b.inputs, B0);
    let times: Vec<f64> = B_ROWS.iter().map(|r| r.0).collect();
    assert_eq!(b.times.as_deref(), Some(&times[..]));
    assert_eq!(b.observation_rows(0), 0..4);
    let a = data.select(&[0]);
    let sa = l.bind(&a).simulate(None).unwrap().loss;
    let sb = l.bind(&b).simulate(None).unwrap().loss;
    let both = l.bind(data).simulate(None).unwrap().loss;
    assert!((both - 0.5 * (sa + sb)).abs() <= 1e-12 * both.abs());
}

fn series(
    traj: Option<Column>,
    input: Option<(usize, usize)>,
    rows: Option<(usize, usize)>,
) -> DataSource {
    DataSource::Series {
        path: "f.csv".into(),
        t: Column::Name("t".into()),
        values: (Column::Index(2), Column::Index(3)),
        rows,
        traj,
        input: input.map(|(a, b)| (Column::Index(a), Column::Index(b))),
        input_file: None,
    }
}

fn exp() -> Option<Column> {
    Some(Column::Name("exp".into()))
}

#[test]
fn trajectories_in_order_of_first_appearance() {
    let text = "exp,t,x,x0\n2,0.5,1,10\n1,0.1,2,20\n2,1.5,3,10\n1,0.2,4,20\n3,9,5,30\n";
    let d = data::parse_csv(text, &series(exp(), Some((3, 4)), None), "f.csv").unwrap();
    assert_eq!(d.n, 3);
    assert_eq!(d.trajectories, Some(vec![0..2, 2..4, 4..5]));
    assert_eq!(d.times, Some(vec![0.5, 1.5, 0.1, 0.2, 9.0]));
    assert_eq!(d.observed, Some(vec![1.0, 3.0, 2.0, 4.0, 5.0]));
    assert_eq!((d.input_dim, d.inputs.clone()), (1, vec![10.0, 20.0, 30.0]));
    assert_eq!(d.observation_at(1, 0.2), Some(3));
    assert_eq!(d.observation_at(1, 0.5), None);
    // `rows` keeps file rows before grouping.
    let d = data::parse_csv(text, &series(exp(), Some((3, 4)), Some((1, 4))), "f.csv").unwrap();
    assert_eq!(d.trajectories, Some(vec![0..2, 2..3]));
    assert_eq!(d.inputs, vec![20.0, 10.0]);
    // Without a trajectory column, input columns give the one trajectory's inputs.
    let one = "exp,t,x,x0\n1,0.1,2,20\n1,0.2,4,20\n";
    let d = data::parse_csv(one, &series(None, Some((3, 4)), None), "f.csv").unwrap();
    assert_eq!(
        (d.n, d.trajectories.clone(), d.inputs.clone()),
        (1, None, vec![20.0])
    );
}

#[test]
fn trajectory_errors_are_located() {
    let err = |text: &str, source: DataSource| {
        data::parse_csv(text, &source, "f.csv")
            .expect_err("the file is wrong")
            .to_string()
    };
    // Times restart between trajectories, but not within one.
    assert_eq!(
        err(
            "exp,t,x,x0\nA,0.5,1,1\nB,0.1,2,2\nA,0.5,3,1\n",
            series(exp(), None, None)
        ),
        "f.csv:4:3: error: the times of trajectory `A` must increase, but 0.5 follows 0.5"
    );
    assert_eq!(
        err(
            "exp,t,x,x0\nA,0.5,1,1\nB,0.1,2,2\nB,0.2,3,2.5\n",
            series(exp(), Some((3, 4)), None)
        ),
        "f.csv:4:9: error: input column 3 (`x0`) is 2.5 here but 2 on the first row of trajectory `B`; a trajectory's inputs must be constant"
    );
    assert_eq!(
        err(
            "exp,t,x,x0\nA,0.5,1,1\n",
            series(Some(Column::Name("exps".into())), None, None)
        ),
        "f.csv: error: the header has no column `exps`; did you mean `exp`?"
    );
    assert!(matches!(
        data::parse_csv(
            "exp,t,x,x0\nA,0.5,1,1\n",
            &series(Some(Column::Index(7)), None, None),
            "f.csv"
        ),
        Err(DataError::ColumnOutOfRange { column: 7, .. })
    ));
}

/// `sema`'s checks of a series' `input` columns: they need an `input` declaration, a range of
/// two indices must select the inputs' size, and they bind the model's inputs.
#[test]
fn series_input_columns_are_checked_against_the_inputs() {
    let check = |decls: &str, data: &str| {
        let text = format!(
            "{decls}\nobserved xobs[2]\ndx/dt = -x\nschedule rk4(t = [0, 1], steps = 4)\n\
             data obs = {data}\ncost observed = sum((x - xobs)^2)\n"
        );
        let file = nodec::diag::SourceFile::new("m.node", &text);
        let (_, diags) = nodec::check_source(&file, &Overrides::default(), "m");
        diags
            .iter()
            .filter(|d| d.severity == nodec::diag::Severity::Error)
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
    };
    let with_input = "input x0[2]\nstate x[2] = x0";
    assert_eq!(
        check(
            with_input,
            "series(\"f.csv\", t = 1, values = 2..4, traj = 0, input = 4..6)"
        ),
        Vec::<String>::new()
    );
    let errors = check(
        with_input,
        "series(\"f.csv\", t = 1, values = 2..4, traj = 0, input = 4..5)",
    );
    assert!(
        errors.len() == 1
            && errors[0].contains("`4..5` selects 1 column")
            && errors[0].contains("`x0` has 2 elements"),
        "{errors:?}"
    );
    let errors = check(
        "state x[2] = [1, 0]",
        "series(\"f.csv\", t = 1, values = 2..4, traj = 0, input = 4..6)",
    );
    assert!(
        errors.len() == 1 && errors[0].contains("need an `input` declaration"),
        "{errors:?}"
    );
    // Without `input =`, a series binds no inputs.
    let errors = check(
        with_input,
        "series(\"f.csv\", t = 1, values = 2..4, traj = 0)",
    );
    assert!(
        errors.len() == 1 && errors[0].contains("input `x0` is not bound to any data"),
        "{errors:?}"
    );
}

/// `nodec train` cuts mini-batches of trajectories, and `run --all-samples` reports one row
/// per trajectory.
#[test]
fn trajectories_train_in_mini_batches_and_report_per_sample() {
    write("two.csv", &two_file());
    let path = write(
        "batches.node",
        &(model(
            "x0",
            "input x0[2]",
            "series(\"two.csv\", t = \"t\", values = \"u\"..\"u0\", traj = \"exp\", input = \"u0\"..6)",
            "rk4(t = [0, 3], steps = 30)",
        ) + "train adam(lr = 0.01, epochs = 3, batch = 1, seed = 1)\n"),
    );
    let out = crate::support::nodec(&["train", &path, "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::support::nodec(&["run", &path, "--all-samples", "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("obs,")).collect();
    assert_eq!(rows.len(), 2, "{text}");
}

/// `input_file = "ic.csv"`: each trajectory's inputs from its row of a second file, found by
/// the trajectory column. The same numbers given in the series file itself must give the same
/// data set and the same loss and gradient, bit for bit; the input file's rows are in another
/// order and hold a trajectory the series does not have, which is not used.
#[test]
fn inputs_from_a_keyed_file_equal_inputs_in_the_series_file() {
    let mut series = "exp,t,u,v\n".to_string();
    for k in 0..4 {
        let (t, u, v) = A_ROWS[k];
        series += &format!("A,{t},{u},{v}\n");
        let (t, u, v) = B_ROWS[k];
        series += &format!("B,{t},{u},{v}\n");
    }
    write("keyed_obs.csv", &series);
    write(
        "keyed_ic.csv",
        &format!(
            "exp,u0,v0\nC,9,9\nB,{},{}\nA,{},{}\n",
            B0[0], B0[1], A0[0], A0[1]
        ),
    );
    write("two.csv", &two_file());
    let schedule = "rk4(t = [0, 3], steps = 30)";
    let keyed = write(
        "keyed.node",
        &model(
            "x0",
            "input x0[2]",
            "series(\"keyed_obs.csv\", t = \"t\", values = \"u\"..4, traj = \"exp\", input = \"u0\"..3, input_file = \"keyed_ic.csv\")",
            schedule,
        ),
    );
    let inline = write(
        "inline.node",
        &model(
            "x0",
            "input x0[2]",
            "series(\"two.csv\", t = \"t\", values = \"u\"..\"u0\", traj = \"exp\", input = \"u0\"..6)",
            schedule,
        ),
    );
    let (k, i) = (load_model(&keyed), load_model(&inline));
    let (dk, di) = (&k.data[0].1, &i.data[0].1);
    assert_eq!(dk.n, 2);
    assert_eq!(dk.inputs, di.inputs);
    assert_eq!(dk.inputs, [A0[0], A0[1], B0[0], B0[1]]);
    assert_eq!(dk.times, di.times);
    assert_eq!(dk.observed, di.observed);
    let options = GradientOptions::new(GradientMethod::Backprop);
    let gk = sens::gradient(&k.bind(dk), &options).expect("gradient");
    let gi = sens::gradient(&i.bind(di), &options).expect("gradient");
    assert_eq!(gk.simulation.loss.to_bits(), gi.simulation.loss.to_bits());
    assert_eq!(gk.grad, gi.grad);
}

fn keyed_series(input: (&str, usize)) -> DataSource {
    DataSource::Series {
        path: "f.csv".into(),
        t: Column::Name("t".into()),
        values: (Column::Index(2), Column::Index(3)),
        rows: None,
        traj: exp(),
        input: Some((Column::Name(input.0.into()), Column::Index(input.1))),
        input_file: Some("ic.csv".into()),
    }
}

#[test]
fn input_file_errors_are_located() {
    let source = keyed_series(("x0", 2));
    let series = "exp,t,x\nA,0.5,1\nB,0.1,2\n";
    let keyed = |ic: &str| data::parse_input_file(ic, &source, "ic.csv");
    // A trajectory without a row: at the trajectory's first row of the series.
    let only_a = keyed("exp,x0\nA,1\n").unwrap();
    assert_eq!(
        data::parse_csv_with_inputs(series, &source, "f.csv", &only_a)
            .unwrap_err()
            .to_string(),
        "f.csv:3:1: error: trajectory `B` has no row in the input file `ic.csv`; add one with its inputs"
    );
    // A key twice: at the second row, naming the first.
    assert_eq!(
        keyed("exp,x0\nA,1\nB,2\nA,3\n").unwrap_err().to_string(),
        "ic.csv:4:1: error: trajectory `A` has a second row here (the first is on line 2); an input file holds one row per trajectory"
    );
    // The trajectory column by name must be in the input file's header too.
    assert!(keyed("traj,x0\nA,1\n")
        .unwrap_err()
        .to_string()
        .starts_with("ic.csv: error: the header has no column `exp`"));
    // A cell that is not a number: at its place.
    assert_eq!(
        keyed("exp,x0\nA,one\n").unwrap_err().to_string(),
        "ic.csv:2:3: error: `one` in column 1 (`x0`) is not a number"
    );
    // Without the input file read first, the series is refused rather than read wrongly.
    assert!(data::parse_csv(series, &source, "f.csv").is_err());
}

/// `sema` wants `traj` and `input` beside `input_file`, and the input file's columns are checked
/// against the inputs they bind, naming that file.
#[test]
fn input_file_needs_a_trajectory_column_and_input_columns() {
    write("nk_obs.csv", "exp,t,u,v\nA,0.5,1,2\n");
    write("nk_ic.csv", "exp,u0,v0,w0\nA,1,2,3\n");
    let no_traj = write(
        "nk_no_traj.node",
        &model(
            "x0",
            "input x0[2]",
            "series(\"nk_obs.csv\", t = \"t\", values = \"u\"..4, input = \"u0\"..\"w0\", input_file = \"nk_ic.csv\")",
            "rk4(t = [0, 1], steps = 4)",
        ),
    );
    let out = crate::support::nodec(&["run", &no_traj]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":10:")
            && stderr.contains("`input_file` gives each trajectory's inputs, so it needs `traj = COL` and `input = A..B`"),
        "{stderr}"
    );
    let too_wide = write(
        "nk_wide.node",
        &model(
            "x0",
            "input x0[2]",
            "series(\"nk_obs.csv\", t = \"t\", values = \"u\"..4, traj = \"exp\", input = \"u0\"..4, input_file = \"nk_ic.csv\")",
            "rk4(t = [0, 1], steps = 4)",
        ),
    );
    let out = crate::support::nodec(&["run", &too_wide]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nk_ic.csv") && stderr.contains("write `\"u0\"..\"w0\"`"),
        "{stderr}"
    );
}
