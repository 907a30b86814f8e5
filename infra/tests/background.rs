//! The background steps of `scripts/lib/process.sh`, which `scripts/test` runs
//! `scripts/check-infra` (at idle priority) and the outage run with: their
//! priority, their session, their output and time when they end, a failure
//! stopping the run, and the EXIT trap's stop. Runs the real functions in bash.

use std::process::Command;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

struct Run {
    code: Option<i32>,
    output: String,
}

/// Runs `body` in bash after sourcing the scripts' library, with the
/// background steps' output in a directory of its own.
fn bash(name: &str, body: &str) -> Run {
    let dir = std::env::temp_dir().join(format!("background-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let script = format!(
        "set -euo pipefail\nsource \"$1/scripts/lib/common.sh\"\nBACKGROUND_DIR=\"$2\"\ncd \"$2\"\n{body}"
    );
    let output = Command::new("bash")
        .args(["-c", &script, "bash", REPO])
        .arg(&dir)
        .output()
        .expect("bash runs");
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        code: output.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[test]
fn an_idle_background_step_runs_at_nice_19_in_a_session_of_its_own_and_is_reported_when_it_ends() {
    let run = bash(
        "idle",
        r#"start_background --idle probe "the probe" bash -c '
            read -r -a stat </proc/$$/stat
            echo "nice=$(nice) session=${stat[5]} pid=$$"
            cat /proc/self/autogroup 2>/dev/null || echo "no autogroup"'
        finish_background probe
        print_step_times"#,
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    let out = &run.output;
    assert!(out.contains("nice=19 "), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("nice="))
        .expect("the probe's line");
    let session = line
        .split("session=")
        .nth(1)
        .and_then(|s| s.split(' ').next());
    let pid = line.split("pid=").nth(1);
    assert_eq!(session, pid, "a session of its own: {line}");
    // Where the kernel has autogroups, the session's autogroup yields too.
    if let Some(group) = out.lines().find(|l| l.starts_with("/autogroup-")) {
        assert!(group.ends_with("nice 19"), "{out}");
    }
    assert!(
        out.contains("==== the probe (ran in the background) ===="),
        "{out}"
    );
    let timed = out
        .lines()
        .find(|l| l.contains("the probe (in the background)") && l.ends_with("(exit status 0)"));
    assert!(timed.is_some(), "a line of its time in the table: {out}");
    assert!(out.contains("==== Time of each step ===="), "{out}");
}

#[test]
fn a_failed_background_step_stops_the_run_at_the_next_step_with_its_status() {
    let run = bash(
        "failed",
        r#"start_background broken "the broken step" bash -c 'echo "it broke"; exit 3'
        while pid_alive "${BACKGROUND_PID[broken]}"; do sleep 0.05; done
        finish_ended_backgrounds
        echo "the run went on""#,
    );
    assert_eq!(run.code, Some(3), "{}", run.output);
    assert!(
        run.output.contains("it broke"),
        "its output: {}",
        run.output
    );
    assert!(
        run.output
            .contains("the broken step (in the background) took")
            && run.output.contains("exit status 3"),
        "{}",
        run.output
    );
    assert!(!run.output.contains("the run went on"), "{}", run.output);
}

#[test]
fn stopping_the_background_steps_ends_everything_their_sessions_started() {
    let run = bash(
        "stopped",
        r#"start_background sleeper "the sleeper" bash -c 'sleep 300 & echo $! >child; wait'
        for ((i = 0; i < 200; i++)); do [[ -s child ]] && break; sleep 0.05; done
        child="$(cat child)"
        pid_alive "$child"
        stop_backgrounds
        for ((i = 0; i < 200; i++)); do pid_alive "$child" || break; sleep 0.05; done
        if pid_alive "$child"; then echo "still running: $child"; exit 1; fi
        echo "stopped""#,
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert!(
        run.output.contains("stopping the sleeper (session"),
        "{}",
        run.output
    );
}
