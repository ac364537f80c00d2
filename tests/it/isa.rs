//! The lane loops' AVX2 copies (`compile::isa`) give the bits of the baseline copies: the same
//! command with `NODEC_ISA=baseline` prints the same numbers, on the scalar tape (P4, whose
//! field is `tanh` over 32-sample blocks), on tensor kernels (digits_odenet) and through a
//! whole training run.

use crate::support::root;

fn output(args: &[&str], baseline: bool) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"));
    command.args(args).current_dir(root());
    if baseline {
        command.env("NODEC_ISA", "baseline");
    }
    let out = command.output().expect("nodec runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Everything but the timings and the resident set, which differ from run to run.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("seconds") && !l.contains("rss"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_cpu_decides_the_lane_isa() {
    #[cfg(target_arch = "x86_64")]
    if std::env::var_os("NODEC_ISA").is_none() {
        let expected = if std::arch::is_x86_feature_detected!("avx2") {
            "avx2"
        } else {
            "baseline"
        };
        assert_eq!(nodec::compile::lane_isa(), expected);
    }
}

#[test]
fn isa_does_not_change_the_bits() {
    let dir = root().join("target/isa-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let trained = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (a, b) = (trained("avx2.json"), trained("baseline.json"));
    let cases: [Vec<&str>; 4] = [
        vec![
            "grad",
            "benches/data/p4/node_d2.node",
            "--params",
            "benches/data/p4/params_d2.json",
            "--format",
            "json",
        ],
        vec!["grad", "models/digits_odenet.node", "--format", "json"],
        vec!["run", "models/cnf_moons.node", "--format", "json"],
        vec!["train", "models/resnet_euler.node", "--quiet", "--out"],
    ];
    for case in &cases {
        let with = |out: &str| {
            let mut args = case.clone();
            if args[0] == "train" {
                args.push(out);
            }
            args.into_iter().map(str::to_string).collect::<Vec<_>>()
        };
        let (args_a, args_b) = (with(&a), with(&b));
        let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
        let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
        let (fast, slow) = (output(&args_a, false), output(&args_b, true));
        assert_eq!(fast, slow, "nodec {}", case.join(" "));
        if case[0] == "train" {
            let read = |p: &str| std::fs::read(p).unwrap();
            assert_eq!(read(&a), read(&b), "trained parameters");
        }
    }
}
