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
    let waiter = t.spawn(&["run", "--wait", "--json"]);
    std::thread::sleep(Duration::from_millis(400));
    t.write("release", "");
    finish(first).ok();
    let waited = finish(waiter).ok();
    assert!(
        waited.stderr.contains("waiting for the cache lock held by"),
        "{}",
        waited.stderr
    );
    assert_eq!(waited.outcomes()["slow"], "cached");
}
