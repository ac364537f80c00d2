//! `--features mpi`: ensembles and training under `mpirun -n R` against the one-process run,
//! byte for byte (the contract: rank 0 folds the ranks' blocks in block order), a resume with
//! another R, and a rank killed mid-training. `.ci/run` runs these with Open MPI installed.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{nodec, root};

fn dir() -> PathBuf {
    let dir = root().join("target/mpi-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tmp(name: &str) -> String {
    dir().join(name).to_str().unwrap().to_string()
}

/// A temporary directory of its own for one `mpirun`: Open MPI 4 makes its session directory
/// `$TMPDIR/ompi.HOST.UID` with a racy mkdir, so two launches at once (tests run in parallel)
/// can fail with "File exists".
fn session_tmpdir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("nodec-ompi-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `mpirun -n ranks nodec ARGS` with `threads` rayon threads per rank.
fn mpirun_command(ranks: usize, threads: &str, args: &[&str]) -> Command {
    let mut command = Command::new("mpirun");
    command.env("TMPDIR", session_tmpdir());
    command
        .args(["--oversubscribe", "--allow-run-as-root", "-n"])
        .arg(ranks.to_string())
        .args(["-x", "RAYON_NUM_THREADS"])
        .arg(env!("CARGO_BIN_EXE_nodec"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .current_dir(root());
    command
}

fn mpirun(ranks: usize, threads: &str, args: &[&str]) -> Output {
    let out = mpirun_command(ranks, threads, args)
        .output()
        .expect("mpirun runs (Open MPI installed)");
    assert!(
        out.status.success(),
        "mpirun -n {ranks} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The antisymmetric network of `models/` with `epochs` epochs of mini-batches of 100: five
/// batches of 100 (four blocks of 32, the last one short) and one of 12 (one block), so three
/// ranks get shares of two, one and one blocks, or one and none.
fn small_model(name: &str, epochs: usize) -> String {
    let text = std::fs::read_to_string(root().join("models/antisymmetric.node")).unwrap();
    let edited = text.replace(
        "epochs = 60, batch = 64",
        &format!("epochs = {epochs}, batch = 100"),
    );
    assert_ne!(edited, text, "the training settings are edited");
    let path = tmp(name);
    std::fs::write(&path, edited).unwrap();
    path
}

/// A grid and seeded draws of `models/lorenz.node`: the CSV rows and the printed summary are the
/// same bytes for R = 1, 2, 3 as without mpirun (members 0..300 split 100/100/100, and the grid's
/// 7 over 3 ranks unevenly).
#[test]
fn ensembles_are_byte_identical_for_one_two_and_three_ranks() {
    for (tag, spec, members) in [
        (
            "draws",
            "rho~uniform(20,30),sigma~normal(10,1)",
            Some("300"),
        ),
        ("grid", "rho=20:30:7", None),
    ] {
        let mut args = vec!["run", "models/lorenz.node", "--ensemble", spec];
        if let Some(m) = members {
            args.extend(["--members", m]);
        }
        let single = tmp(&format!("{tag}_single.csv"));
        let plain = nodec(&[&args[..], &["--out", &single]].concat());
        assert!(
            plain.status.success(),
            "{}",
            String::from_utf8_lossy(&plain.stderr)
        );
        let expected = std::fs::read(&single).unwrap();
        assert!(expected.len() > 100, "the ensemble wrote its rows");
        for ranks in [1, 2, 3] {
            let path = tmp(&format!("{tag}_{ranks}.csv"));
            let _ = std::fs::remove_file(&path);
            let out = mpirun(ranks, "2", &[&args[..], &["--out", &path]].concat());
            assert_eq!(
                std::fs::read(&path).unwrap(),
                expected,
                "{tag}: the rows on {ranks} ranks"
            );
            assert_eq!(
                out.stdout, plain.stdout,
                "{tag}: the summary on {ranks} ranks"
            );
        }
    }
}

/// PARAMS.json after three epochs of Adam is the same bytes on 1, 2 and 3 ranks, with 1 or 2
/// threads each, as without mpirun; the progress lines are printed once.
#[test]
fn training_is_bit_identical_for_any_number_of_ranks_and_threads() {
    let model = small_model("anti_3.node", 3);
    let single = tmp("anti_single.json");
    let plain = nodec(&["train", &model, "--out", &single]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let expected = std::fs::read_to_string(&single).unwrap();
    let progress = String::from_utf8_lossy(&plain.stderr)
        .matches("epoch ")
        .count();
    assert_eq!(progress, 3, "one line per epoch without mpirun");
    for ranks in [1, 2, 3] {
        for threads in ["1", "2"] {
            let path = tmp(&format!("anti_{ranks}_{threads}.json"));
            let _ = std::fs::remove_file(&path);
            let out = mpirun(ranks, threads, &["train", &model, "--out", &path]);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                expected,
                "{ranks} ranks × {threads} threads"
            );
            let lines = String::from_utf8_lossy(&out.stderr)
                .matches("epoch ")
                .count();
            assert_eq!(lines, 3, "rank 0 alone prints progress");
        }
    }
}

/// One epoch on three ranks, then a resume from its checkpoint on two, ends on the bits of
/// three uninterrupted epochs on one process.
#[test]
fn a_resume_on_another_number_of_ranks_gives_the_same_bits() {
    let full = small_model("anti_full.node", 3);
    let short = small_model("anti_short.node", 1);
    let uninterrupted = tmp("anti_uninterrupted.json");
    let plain = nodec(&["train", &full, "--quiet", "--out", &uninterrupted]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let ckpt = tmp("anti_resume.ckpt.json");
    let _ = std::fs::remove_file(&ckpt);
    mpirun(
        3,
        "1",
        &[
            "train",
            &short,
            "--quiet",
            "--checkpoint-every",
            "1",
            "--checkpoint",
            &ckpt,
        ],
    );
    let resumed = tmp("anti_resumed.json");
    mpirun(
        2,
        "2",
        &[
            "train", &full, "--quiet", "--resume", &ckpt, "--out", &resumed,
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&resumed).unwrap(),
        std::fs::read_to_string(&uninterrupted).unwrap()
    );
}

/// A rank killed with SIGKILL during training ends the run on every rank: mpirun exits
/// non-zero within a bounded time naming the rank, no nodec process is left, and the last
/// checkpoint (written atomically by rank 0 after every epoch) still resumes.
#[test]
fn a_killed_rank_ends_the_run_and_leaves_a_resumable_checkpoint() {
    let model = small_model("anti_long.node", 100_000);
    let ckpt = tmp("anti_killed.ckpt.json");
    let _ = std::fs::remove_file(&ckpt);
    let pids = tmp("anti_killed.pids");
    let _ = std::fs::remove_file(&pids);
    // Each rank writes its pid where the test can find it, then becomes nodec.
    let script = format!(
        "echo $OMPI_COMM_WORLD_RANK $$ >> {pids}; exec {} train {model} --quiet --checkpoint-every 1 --checkpoint {ckpt}",
        env!("CARGO_BIN_EXE_nodec")
    );
    let mut child = Command::new("mpirun")
        .args([
            "--oversubscribe",
            "--allow-run-as-root",
            "-n",
            "3",
            "sh",
            "-c",
        ])
        .arg(&script)
        .env("RAYON_NUM_THREADS", "1")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun runs");
    // Wait for a checkpoint, so the kill lands mid-training.
    let started = Instant::now();
    while !std::path::Path::new(&ckpt).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(child.try_wait().unwrap().is_none(), "training ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let table = std::fs::read_to_string(&pids).unwrap();
    let victim = table
        .lines()
        .find_map(|l| l.strip_prefix("1 "))
        .expect("rank 1 wrote its pid")
        .trim()
        .to_string();
    let killed = Command::new("kill")
        .args(["-KILL", &victim])
        .status()
        .unwrap();
    assert!(killed.success());
    let killed_at = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if killed_at.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the run did not end within 60 s of the kill");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "mpirun exits non-zero: {stderr}");
    assert!(
        stderr.contains("rank 1"),
        "the message names the rank: {stderr}"
    );
    // mpirun may return while the other ranks are still being torn down: give them 10 s.
    for line in table.lines() {
        let pid = line.split_whitespace().nth(1).unwrap();
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z "))
        };
        let since = Instant::now();
        while running() && since.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!running(), "rank process {pid} is still running");
    }
    // The checkpoint parses and resumes (one more epoch on one process).
    let resumed = tmp("anti_killed_resumed.json");
    let text = std::fs::read_to_string(&ckpt).unwrap();
    let epoch: serde_json::Value = serde_json::from_str(&text).expect("the checkpoint is whole");
    let done = epoch["state"]["epoch"].as_u64().unwrap();
    let next = small_model("anti_next.node", done as usize + 1);
    let out = nodec(&[
        "train", &next, "--quiet", "--resume", &ckpt, "--out", &resumed,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
