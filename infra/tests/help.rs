//! Every script's `--help` prints its whole header comment, the script's
//! manual, from the one `usage` in `scripts/lib/common.sh`. Runs the scripts
//! themselves; `--help` returns before anything is installed or started.

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// `scripts/replay-dlq` hands every argument, `--help` included, to the
/// `replay-dlq` binary, whose help clap writes.
const HELP_FROM_ELSEWHERE: &[&str] = &["replay-dlq"];

/// The header comment as the reader sees it: line 2 up to the first line that
/// is not a comment, without the leading `# `.
fn header(script: &str) -> String {
    script
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with('#'))
        .map(|line| {
            let text = &line[1..];
            format!("{}\n", text.strip_prefix(' ').unwrap_or(text))
        })
        .collect()
}

#[test]
fn every_scripts_help_prints_its_whole_header_comment() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(format!("{REPO}/scripts")).expect("scripts/") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if path.is_dir() || HELP_FROM_ELSEWHERE.contains(&name.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a script");
        let output = std::process::Command::new(&path)
            .arg("--help")
            .output()
            .unwrap_or_else(|err| panic!("{name} --help: {err}"));
        assert!(output.status.success(), "{name} --help exits 0");
        let expected = header(&text);
        assert!(
            expected.lines().count() > 3,
            "{name} has a header comment to print"
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            expected,
            "{name} --help prints its header, every line of it"
        );
        checked.push(name);
    }
    assert!(checked.len() >= 6, "the scripts were found: {checked:?}");
}
