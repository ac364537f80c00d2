//! The lane loops' AVX-512 and AVX2 copies (`compile::isa`) give the bits of the baseline
//! copies: the same command with `NODEC_ISA=avx2` and `NODEC_ISA=baseline` prints the same
//! numbers, on the scalar tape (P4, whose field is `tanh` over 32-sample blocks), on tensor
//! kernels (digits_odenet) and through a whole training run.

use crate::support::root;

/// What `nodec ARGS` prints with the lane loops capped at `isa` (`None`: the widest the CPU has).
fn output(args: &[&str], isa: Option<&str>) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nodec"));
    command.args(args).current_dir(root());
    if let Some(isa) = isa {
        command.env("NODEC_ISA", isa);
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
        use std::arch::is_x86_feature_detected as has;
        let expected =
            if has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("avx512bw") {
                "avx512"
            } else if has!("avx2") {
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
    let isas = [None, Some("avx2"), Some("baseline")];
    let files = isas.map(|isa| trained(&format!("{}.json", isa.unwrap_or("widest"))));
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
        let printed: Vec<String> = isas
            .iter()
            .zip(&files)
            .map(|(isa, file)| {
                let mut args = case.clone();
                if args[0] == "train" {
                    args.push(file);
                }
                output(&args, *isa)
            })
            .collect();
        for (isa, other) in isas.iter().zip(&printed).skip(1) {
            assert_eq!(
                &printed[0],
                other,
                "nodec {} with NODEC_ISA={isa:?}",
                case.join(" ")
            );
        }
        if case[0] == "train" {
            let read = |p: &String| std::fs::read(p).unwrap();
            for file in &files[1..] {
                assert_eq!(read(&files[0]), read(file), "trained parameters ({file})");
            }
        }
    }
}
