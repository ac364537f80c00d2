//! The command line's own surface: every subcommand's `--help` ends with an example that works,
//! and `nodec completions SHELL` prints a script that offers every subcommand and flag.

use crate::support::{nodec, root};

/// The subcommands `nodec --help` lists, read from its `Commands:` section, so a subcommand
/// added later is covered without editing this test.
fn subcommands() -> Vec<String> {
    let out = nodec(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("help is UTF-8");
    let section = help
        .split("Commands:")
        .nth(1)
        .expect("`nodec --help` has a Commands section");
    section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_subcommand_help_ends_with_a_working_example() {
    let commands = subcommands();
    for expected in ["check", "ir", "run", "train", "grad", "completions"] {
        assert!(
            commands.iter().any(|c| c == expected),
            "{expected} missing from {commands:?}"
        );
    }
    for command in &commands {
        let out = nodec(&[command, "--help"]);
        assert!(out.status.success(), "nodec {command} --help failed");
        let help = String::from_utf8(out.stdout).expect("help is UTF-8");
        let lines: Vec<&str> = help.trim_end().lines().collect();
        let n = lines.len();
        assert!(
            n >= 2 && lines[n - 2] == "Example:",
            "`nodec {command} --help` must end with `Example:` and one command:\n{help}"
        );
        let example: Vec<&str> = lines[n - 1].split_whitespace().collect();
        assert_eq!(
            &example[..2],
            ["nodec", command.as_str()],
            "the example of `{command}` runs `nodec {command}`"
        );
        // A model the example names exists and checks, so the example can be pasted as is.
        for model in example
            .iter()
            .filter(|a| a.ends_with(".node") && !a.contains('*'))
        {
            let out = nodec(&["check", model]);
            assert!(
                out.status.success(),
                "`nodec {command}`'s example names {model}, which does not check"
            );
        }
        for pattern in example.iter().filter(|a| a.contains('*')) {
            let dir = pattern.rsplit_once('/').map_or(".", |(d, _)| d);
            assert!(root().join(dir).is_dir(), "{pattern} matches nothing");
        }
    }
}

#[test]
fn completions_offer_every_subcommand_and_flag() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = nodec(&["completions", shell]);
        assert!(out.status.success(), "completions {shell} failed");
        let script = String::from_utf8(out.stdout).expect("script is UTF-8");
        for command in subcommands() {
            assert!(
                script.contains(&command),
                "{shell} script lacks `{command}`"
            );
        }
        // Fish writes a long flag as `-l NAME`, the others as `--NAME`.
        for flag in [
            "params-partial",
            "all-samples",
            "checkpoint-every",
            "forward-limit",
        ] {
            assert!(script.contains(flag), "{shell} script lacks `--{flag}`");
        }
    }
    // An unknown shell is a usage error naming the choices.
    let out = nodec(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bash") && stderr.contains("zsh"),
        "{stderr}"
    );
}

#[test]
fn the_bash_completion_script_parses_and_completes() {
    // Needs bash; every CI image has it, but skip quietly on a machine without one.
    let Ok(probe) = std::process::Command::new("bash").arg("--version").output() else {
        return;
    };
    assert!(probe.status.success());
    let script = nodec(&["completions", "bash"]).stdout;
    let dir = std::env::temp_dir().join(format!("nodec-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("nodec.bash");
    std::fs::write(&path, script).expect("script written");
    // Source the script and ask it to complete `nodec tr`: the function clap registers must
    // offer `train`.
    let probe = format!(
        "source {}; COMP_WORDS=(nodec tr); COMP_CWORD=1; COMP_LINE='nodec tr'; COMP_POINT=8; _nodec nodec tr nodec; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &probe])
        .output()
        .expect("bash runs");
    let _ = std::fs::remove_dir_all(&dir);
    let replies = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && replies.lines().any(|l| l == "train"),
        "bash completion of `nodec tr` gave {replies:?}, stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
