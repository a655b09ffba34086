//! Crash safety: kill -9 at any moment then run again; a full disk.

use std::time::Duration;

use crate::common::{Test, kill9};

#[test]
fn kill_9_in_the_middle_of_a_stage_then_resume() {
    let t = Test::new();
    t.pipeline(
        r#"
name: k
stages:
  long:
    kind: command
    cmd: if [ ! -f fast ]; then touch started; sleep 30; fi; echo done > out.txt
    outs: [out.txt]
  after:
    kind: command
    needs: [long]
    cmd: cat out.txt > after.txt
    outs: [after.txt]
"#,
    );
    let mut child = t.spawn(&["run"]);
    t.wait_for("started", 20);
    kill9(&mut child);
    assert_eq!(t.entries(), 0, "nothing committed");
    assert!(!t.exists("brspeech.lock"));
    assert!(
        std::fs::read_dir(t.path("cache/tmp")).unwrap().count() > 0,
        "the staging folder is left behind"
    );
    t.write("fast", "");
    let out = t.run(&["run", "--json"]).ok();
    assert!(
        out.stderr
            .contains("reclaimed the cache lock left by a run that died"),
        "{}",
        out.stderr
    );
    let o = out.outcomes();
    assert_eq!((o["long"].as_str(), o["after"].as_str()), ("ran", "ran"));
    assert_eq!(t.read("after.txt"), "done\n");
    let tmp: Vec<_> = std::fs::read_dir(t.path("cache/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "dead run's staging removed: {tmp:?}");
    t.run(&["cache", "verify"]).ok();
}

#[test]
fn kill_9_at_many_moments_always_resumes_to_the_same_result() {
    let t = Test::new();
    let pipeline = |round: usize| {
        format!(
            r#"
name: many
stages:
  gen:
    kind: command
    params: {{round: {round}}}
    cmd: mkdir -p data && for i in 1 2 3 4 5 6 7 8; do echo "$BRSPEECH_PARAM_ROUND $i" > data/f$i.txt; sleep 0.01; done
    outs: [data]
  sum:
    kind: command
    deps: [data]
    cmd: cat data/*.txt | sort > sum.txt; sleep 0.05
    outs: [sum.txt]
  last:
    kind: command
    needs: [sum]
    cmd: wc -l < sum.txt > last.txt
    outs: [last.txt]
"#
        )
    };
    for (round, delay_ms) in [5u64, 20, 45, 70, 100, 140, 200, 300]
        .into_iter()
        .enumerate()
    {
        t.pipeline(&pipeline(round));
        let mut child = t.spawn(&["run", "-j", "1"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill9(&mut child);
        t.run(&["run"]).ok();
        let expected: String = (1..=8).map(|i| format!("{round} {i}\n")).collect();
        assert_eq!(
            t.read("sum.txt"),
            expected,
            "round {round}, killed after {delay_ms} ms"
        );
        assert_eq!(t.read("last.txt"), "8\n");
        let st = t.run(&["status", "--json"]).ok().states();
        assert!(
            st.values().all(|(s, _)| s == "fresh"),
            "round {round}: {st:?}"
        );
    }
    t.run(&["cache", "verify"]).ok();
}

/// Mounts a small tmpfs (needs root); `None` where mounting is not allowed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_and_leaves_the_cache_consistent() {
    let t = Test::new();
    let Some(_fs) = Tmpfs::mount(&t.path("smallfs"), "256k") else {
        eprintln!(
            "SKIPPED a_full_disk_gives_a_clear_error_and_leaves_the_cache_consistent: cannot mount a tmpfs here (needs root)"
        );
        return;
    };
    t.pipeline(
        r#"
name: full
stages:
  small:
    kind: command
    cmd: echo small > small.txt
    outs: [small.txt]
  big:
    kind: command
    needs: [small]
    params: {kib: 1024}
    cmd: head -c "${BRSPEECH_PARAM_KIB}K" /dev/zero > big.bin
    outs: [big.bin]
"#,
    );
    let out = t
        .run(&["run", "--cache-dir", "smallfs/cache", "--json"])
        .code(4);
    assert!(out.stderr.contains("FAILED   big"), "{}", out.stderr);
    assert!(
        out.stderr.contains("no space left on device while writing"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("smallfs/cache"),
        "names the path: {}",
        out.stderr
    );
    let o = out.outcomes();
    assert_eq!((o["small"].as_str(), o["big"].as_str()), ("ran", "failed"));
    // Consistent: the committed stage is intact and recorded, nothing of `big` is.
    t.run(&["cache", "verify", "--cache-dir", "smallfs/cache"])
        .ok();
    let lock: serde_json::Value = serde_json::from_str(&t.read("brspeech.lock")).unwrap();
    assert!(lock["stages"].get("small").is_some() && lock["stages"].get("big").is_none());
    assert_eq!(
        std::fs::read_dir(t.path("smallfs/cache/tmp"))
            .unwrap()
            .count(),
        0,
        "staging cleaned up"
    );
    // With room again (a smaller output), the run completes.
    t.pipeline(&t.read("brspeech.yaml").replace("kib: 1024", "kib: 16"));
    let o = t
        .run(&["run", "--cache-dir", "smallfs/cache", "--json"])
        .ok()
        .outcomes();
    assert_eq!((o["small"].as_str(), o["big"].as_str()), ("cached", "ran"));
}

#[test]
fn ctrl_c_stops_running_commands_and_exits_130() {
    let t = Test::new();
    t.pipeline(
        r#"
name: int
stages:
  long:
    kind: command
    cmd: touch started; sleep 30; echo never > out.txt
    outs: [out.txt]
"#,
    );
    let child = t.spawn(&["run", "--json"]);
    t.wait_for("started", 20);
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = crate::common::finish(child).code(130);
    assert_eq!(out.outcomes()["long"], "cancelled");
    assert_eq!(out.json()["interrupted"], true);
    assert_eq!(t.entries(), 0);
    assert!(!t.exists("out.txt"));
    assert!(!t.exists("brspeech.lock"));
}
