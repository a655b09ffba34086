//! Concurrent runs on one cache: fail fast naming the holder, or `--wait`.

use std::time::Duration;

use crate::common::{Test, finish};

const SLOW: &str = r#"
name: lk
stages:
  slow:
    kind: command
    cmd: touch started; while [ ! -f release ]; do sleep 0.02; done; echo done > out.txt
    outs: [out.txt]
"#;

#[test]
fn a_second_run_fails_at_once_naming_the_holder_or_waits() {
    let t = Test::new();
    t.pipeline(SLOW);
    let first = t.spawn(&["run"]);
    let pid = first.id();
    t.wait_for("started", 20);
    let second = t.run(&["run"]).code(5);
    assert!(
        second
            .stderr
            .contains(&format!("is locked by pid {pid} on host")),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("--wait"), "{}", second.stderr);
    // Read-only commands do not need the lock.
    t.run(&["status"]).ok();
    let log = std::fs::File::create(t.path("waiter.err")).unwrap();
    let waiter = t
        .command(&["run", "--wait", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(t.path("waiter.err"))
        .unwrap_or_default()
        .contains("waiting for the cache lock held by")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the waiter never said it was waiting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.write("release", "");
    finish(first).ok();
    let waited = finish(waiter).ok();
    assert_eq!(waited.outcomes()["slow"], "cached");
}
