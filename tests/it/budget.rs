//! The memory budget (`--max-memory`): a model is refused before anything large is allocated,
//! at the declaration that drives the estimate, with the figure; just under the limit it runs.

use crate::support::{nodec, root};

/// 16 states × 100 samples × 1000 saved points (rk4 saves every one of its 999 steps and the
/// start): the saved trajectories are 16 · 100 · 1000 · 8 = 12 800 000 bytes = 12.2 MiB.
const TRAJECTORIES: &str = "model traj
input u[16]
state x[16] = u
dx/dt = -x
schedule rk4(t = [0, 1], steps = 999)
data train = normal(n = 100, dim = 16)
";

fn write(name: &str, text: &str) -> String {
    let dir = root().join("target").join("budget-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn estimate_of(text: &str) -> f64 {
    let file = nodec::diag::SourceFile::new("m.node", text);
    let (model, diags) = nodec::check_source(&file, &Default::default(), "m");
    assert!(!diags.has_errors());
    let blocks: Vec<_> = model
        .data
        .iter()
        .map(|b| nodec::budget::BlockSize::declared(&model, b))
        .collect();
    nodec::budget::estimate(&model, &blocks, 1).total()
}

#[test]
fn a_model_just_over_the_limit_is_refused_with_its_figure_and_just_under_runs() {
    let path = write("trajectories.node", TRAJECTORIES);
    let total = estimate_of(TRAJECTORIES);
    // The trajectories are the largest part; the rest is the report, the data and the process.
    assert!(total > 12_800_000.0 && total < 40e6, "{total}");
    let over = format!("{}", total as u64 - 1);
    let out = nodec(&["run", "--no-timings", "--max-memory", &over, &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("trajectories.node:5:1: error: this model needs an estimated"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "saved trajectories: 16 values × 100 samples × 1000 saved points × 8 bytes = 12.2 MiB"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--max-memory"), "{stderr}");
    for command in ["check", "grad", "train"] {
        let out = nodec(&[command, "--max-memory", &over, &path]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("needs an estimated"),
            "{command}"
        );
    }
    // `run` estimates again after `prepare`, with the derivative IR's nodes (512 bytes each,
    // a few kilobytes here): 1% above the checked estimate is under it.
    let under = format!("{}", (total * 1.01) as u64);
    let out = nodec(&["run", "--no-timings", "--max-memory", &under, &path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_stiff_method_is_charged_its_dense_jacobians() {
    let path = write(
        "stiff.node",
        "model stiff\nstate z[65536] = 1\ndz/dt = -z\nschedule rodas4(t = [0, 1])\n",
    );
    let out = nodec(&["check", "--max-memory", "4G", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // 2 · 65536² · 8 bytes = 64 GiB per thread.
    assert!(stderr.contains("stiff.node:4:1: error:"), "{stderr}");
    assert!(
        stderr.contains("dense Jacobians of `rodas4`: 2 × 65536² values"),
        "{stderr}"
    );
}

/// `check` cannot know a CSV file's rows; `run` counts them once the file is read, before
/// the solve.
#[test]
fn a_data_file_is_counted_once_it_is_read() {
    let mut csv = String::from("a,b\n");
    for i in 0..2000 {
        csv.push_str(&format!("{},{}\n", i as f64 * 1e-3, 1.0));
    }
    write("rows.csv", &csv);
    // Each sample saves 2 values at 10001 points: 160 kB; 2000 samples make 320 MB.
    let path = write(
        "rows.node",
        "model rows\ninput u[2]\nstate x[2] = u\ndx/dt = -x\nschedule rk4(t = [0, 1], steps = 10000)\ndata train = csv(\"rows.csv\", input = 0..2)\n",
    );
    let checked = nodec(&["check", "--max-memory", "64M", &path]);
    assert_eq!(
        checked.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let out = nodec(&["run", "--max-memory", "64M", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rows.node:5:1: error: this model needs an estimated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 values × 2000 samples × 10001 saved points"),
        "{stderr}"
    );
}

#[test]
fn max_memory_takes_sizes_people_write() {
    let path = write("sizes.node", TRAJECTORIES);
    for size in ["512M", "8G", "1.5GiB"] {
        let out = nodec(&["check", "--max-memory", size, &path]);
        assert_eq!(out.status.code(), Some(0), "{size}");
    }
    let out = nodec(&["check", "--max-memory", "lots", &path]);
    assert_eq!(out.status.code(), Some(2), "a bad size is a usage error");
}
