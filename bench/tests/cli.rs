//! The options `scripts/bench` passes to each benchmark are ones the bench
//! binary takes: the producer's benchmark is not run by `scripts/test`, so a
//! renamed option would otherwise first show at someone's `scripts/bench
//! producer`. (Because of this test, cargo builds `bench` in the test build,
//! which `scripts/test`'s smoke runs of `scripts/bench` reuse.)

use std::process::Command;

const SCRIPT: &str = include_str!("../../scripts/bench");

/// Each subcommand, with the options `scripts/bench` gives it (its smoke
/// run's defaults included).
const PASSED: [(&str, &[&str]); 4] = [
    (
        "consumer",
        &["--batch-sizes", "--rows", "--naive-rows", "--rounds"],
    ),
    (
        "lambda",
        &["--bootstrap", "--zip", "--cold-starts", "--records"],
    ),
    (
        "status",
        &[
            "--orders",
            "--seconds",
            "--rounds",
            "--read-rate",
            "--batch",
        ],
    ),
    (
        "producer",
        &["--producer", "--oha", "--sqs-endpoint", "--queue-url"],
    ),
];

fn help(subcommand: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([subcommand, "--help"])
        .output()
        .expect("bench runs");
    assert!(output.status.success(), "bench {subcommand} --help failed");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

#[test]
fn every_option_scripts_bench_passes_is_one_the_benchmark_takes() {
    for (subcommand, options) in PASSED {
        let help = help(subcommand);
        for option in options {
            assert!(
                SCRIPT.contains(&format!("{option} ")),
                "scripts/bench no longer passes {option} to {subcommand}: update this table"
            );
            assert!(
                help.contains(&format!("{option} <")),
                "bench {subcommand} does not take {option}, which scripts/bench passes:\n{help}"
            );
        }
    }
}
