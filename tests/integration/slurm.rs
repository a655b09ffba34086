//! The Slurm executor, with the test kind `shard_demo` and with the corpus kinds (scan →
//! metadata → sharded chunk over a generated corpus). The `--dry-run` and validation tests need
//! no cluster, nor do the `fake_cluster_*` tests, which put a stand-in for Slurm's commands on `PATH`
//! (`fake_slurm.py`: each job runs at once when submitted). The others need a reachable Slurm
//! (`tools/slurm/start.sh`, then `SLURM_CONF` exported) and are skipped with a message without
//! one, unless `BRSPEECH_REQUIRE_SLURM=1` (CI), which makes them fail instead;
//! `BRSPEECH_SKIP_SLURM=1` skips them on a machine whose Slurm is a real, shared cluster. They
//! share the one cluster, so they run one at a time.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{Out, Test, finish, kill9};

/// Slurm tests take turns on the cluster.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Says a test was skipped, on stderr itself (the test harness captures `eprintln!` of passing
/// tests, which would hide it).
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// The cluster lock, or `None` (with a visible message) when no Slurm is reachable.
fn cluster(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if std::env::var_os("BRSPEECH_SKIP_SLURM").is_some() {
        skipped(test, "BRSPEECH_SKIP_SLURM is set");
        return None;
    }
    let ok = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                    ["idle", "mixed", "alloc", "completing"]
                        .iter()
                        .any(|s| l.starts_with(s))
                })
        });
    if !ok {
        assert!(
            std::env::var_os("BRSPEECH_REQUIRE_SLURM").is_none(),
            "BRSPEECH_REQUIRE_SLURM is set but no Slurm cluster answers `sinfo` (is SLURM_CONF exported?)"
        );
        skipped(
            test,
            "no Slurm cluster reachable (start one with `tools/slurm/start.sh` and export SLURM_CONF)",
        );
        return None;
    }
    Some(
        CLUSTER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Slurm's commands replaced by `fake_slurm.py` (in a folder put first on `PATH`).
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake_slurm.py");
        std::fs::write(&script, include_str!("fake_slurm.py")).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for cmd in ["sbatch", "squeue", "scancel", "scontrol"] {
            std::os::unix::fs::symlink(&script, bin.join(cmd)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { dir }
    }

    fn run(&self, t: &Test, args: &[&str]) -> Out {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let o = t
            .command(args)
            .env("PATH", path)
            .env("FAKE_SLURM_DIR", self.dir.path())
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

fn squeue_state(id: &str) -> String {
    let o = Command::new("squeue")
        .args(["-h", "-t", "all", "-j", id, "-o", "%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A generated input list, a sharded stage over it, a second sharded stage over the first one's
/// output, and a command stage after both.
fn pipeline(name: &str, a_params: &str) -> String {
    format!(
        r#"
name: {name}
executor:
  throttle: 4
stages:
  gen:
    kind: command
    cmd: "awk 'NR <= 48' data/source.txt > data/list.txt"
    deps: [data/source.txt]
    outs: [data/list.txt]
  a:
    kind: shard_demo
    deps: [data/list.txt]
    params: {{list: data/list.txt, shards: 4, trace: trace.txt{a_params}}}
  b:
    kind: shard_demo
    needs: [a]
    params: {{shards: 3, salt: b, trace: trace.txt}}
  report:
    kind: command
    needs: [a, b]
    cmd: "cut -f2 outputs/{name}/a/items.txt outputs/{name}/b/items.txt | sort > data/report.txt"
    outs: [data/report.txt]
"#
    )
}

fn workspace(name: &str, a_params: &str) -> Test {
    let t = Test::new();
    let source: String = (0..60).map(|i| format!("file-{i:03}.flac\n")).collect();
    t.write("data/source.txt", &source);
    t.pipeline(&pipeline(name, a_params));
    t
}

/// Lock records without their finishing times.
fn lock_entries(t: &Test) -> BTreeMap<String, serde_json::Value> {
    let lock: serde_json::Value = serde_json::from_str(&t.read("brspeech.lock")).unwrap();
    lock["stages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("finished_at");
            (k.clone(), v)
        })
        .collect()
}

/// Lines of the trace file, counted (`a shard 1` → how many times it started).
fn trace(t: &Test) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    if !t.exists("trace.txt") {
        return m;
    }
    for l in t.read("trace.txt").lines() {
        let what: Vec<&str> = l.split(" pid ").collect();
        *m.entry(what[0].to_owned()).or_insert(0) += 1;
    }
    m
}

/// The journal of the workspace's pipeline.
fn journal(t: &Test) -> serde_json::Value {
    let runs = t.path("cache/slurm/runs");
    let dir = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    serde_json::from_str(&std::fs::read_to_string(dir.join("journal.json")).unwrap()).unwrap()
}

/// A stage's ticket (its key, once known).
fn ticket(t: &Test, stage: &str) -> serde_json::Value {
    let runs = t.path("cache/slurm/runs");
    let dir = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(dir.join("tickets").join(format!("{stage}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// After a complete Slurm run: every stage is fresh and a rerun submits nothing.
fn all_fresh_and_nothing_resubmitted(run: impl Fn(&[&str]) -> Out) {
    let st = run(&["status", "--json"]).ok().states();
    assert!(st.values().all(|(s, _)| s == "fresh"), "{st:?}");
    let again = run(&["run", "--executor", "slurm", "--json"]).ok();
    assert!(
        again.outcomes().values().all(|v| v == "cached"),
        "{:?}",
        again.outcomes()
    );
    assert!(!again.stderr.contains("submitted"), "{}", again.stderr);
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what} within {secs}s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dry_run_prints_the_chained_sbatch_commands_and_submits_nothing() {
    let t = Test::new();
    t.write("data/source.txt", "x\n");
    t.pipeline(
        r#"
name: dr
executor:
  partition: cpu
  time: "01:00:00"
  mem: 2G
  throttle: 50
  stages:
    train: {partition: gpu, time: "1-00:00:00", extra: ["--constraint=a100"]}
stages:
  gen:
    kind: command
    cmd: cp data/source.txt data/list.txt
    deps: [data/source.txt]
    outs: [data/list.txt]
  many:
    kind: shard_demo
    deps: [data/list.txt]
    params: {list: data/list.txt, shards: 2500}
  few:
    kind: shard_demo
    params: {items: 8, shards: 2}
  train:
    kind: command
    needs: [many, few]
    cmd: "true"
    resources: {gpu: 1}
"#,
    );
    let out = t.run(&["run", "--executor", "slurm", "--dry-run"]).ok();
    let s = out.stdout;
    // A stage whose key waits for `gen` computes it on the cluster first; its 2500 shards are
    // three arrays below MaxArraySize (1001 by default), all after that job.
    assert!(s.contains("many_prepare=$(sbatch --parsable"), "{s}");
    for (offset, tasks) in [(0, "0-999%50"), (1000, "0-999%50"), (2000, "0-499%50")] {
        let line = s
            .lines()
            .find(|l| l.starts_with(&format!("many_shards_{offset}=")))
            .unwrap_or_else(|| panic!("no array at offset {offset}:\n{s}"));
        assert!(line.contains(&format!("'--array={tasks}'")), "{line}");
        assert!(
            line.contains("--dependency=afterok:$many_prepare"),
            "{line}"
        );
        assert!(line.contains(&format!("--offset {offset}")), "{line}");
        assert!(
            line.contains("'--partition=cpu'") && line.contains("'--mem=2G'"),
            "{line}"
        );
    }
    let final_line = s.lines().find(|l| l.starts_with("many_final=")).unwrap();
    assert!(
        final_line
            .contains("--dependency=afterok:$many_shards_0:$many_shards_1000:$many_shards_2000"),
        "{final_line}"
    );
    // A stage whose key is known now needs no key job and no dependency.
    let few = s.lines().find(|l| l.starts_with("few_shards_0=")).unwrap();
    assert!(!few.contains("--dependency"), "{few}");
    assert!(!s.contains("few_prepare"), "{s}");
    // Whole-stage work: one job after every upstream stage, with the stage's own settings.
    let train = s.lines().find(|l| l.starts_with("train_final=")).unwrap();
    for want in [
        "--dependency=afterok:$many_final:$few_final",
        "'--kill-on-invalid-dep=yes'",
        "'--partition=gpu'",
        "'--time=1-00:00:00'",
        "'--gres=gpu:1'",
        "'--constraint=a100'",
        "--step final --prepare",
    ] {
        assert!(train.contains(want), "{want} missing: {train}");
    }
    assert!(!t.exists("cache/slurm/runs"), "a dry run writes no journal");
    assert!(!t.exists("brspeech.lock"));

    let bad = t.run(&["run", "--detach"]).code(2);
    assert!(
        bad.stderr.contains("`--detach` needs `--executor slurm`"),
        "{}",
        bad.stderr
    );
}

#[test]
fn executor_block_problems_are_located() {
    let t = Test::new();
    t.pipeline(
        r#"
name: ex
executor:
  time: 2h
  extra: ["--array=1-3"]
  stages:
    trian: {mem: 4G}
    a: {mem: lots, throttle: 0}
stages:
  a: {kind: command, cmd: "true"}
"#,
    );
    let out = t.run(&["validate"]).code(3);
    let e = out.stderr;
    for want in [
        "invalid Slurm time limit \"2h\"",
        "`--array` is set by brspeech and cannot be given in `extra`",
        "`executor.stages` names unknown stage `trian`",
        "invalid Slurm memory size \"lots\"",
        "`throttle` must be at least 1",
        "brspeech.yaml:4:",
    ] {
        assert!(e.contains(want), "{want} missing:\n{e}");
    }
}

#[test]
fn slurm_run_gives_the_same_outputs_and_lock_entries_as_a_local_run() {
    let Some(_c) = cluster("slurm_run_gives_the_same_outputs_and_lock_entries_as_a_local_run")
    else {
        return;
    };
    let local = workspace("same", "");
    let o = local.run(&["run", "--json"]).ok();
    assert!(
        o.outcomes().values().all(|v| v == "ran"),
        "{:?}",
        o.outcomes()
    );

    let slurm = workspace("same", "");
    let out = slurm.run(&["run", "--executor", "slurm", "--json"]).ok();
    let outcomes = out.outcomes();
    assert!(
        outcomes.values().all(|v| v == "ran"),
        "{outcomes:?}\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("a: submitted"), "{}", out.stderr);
    for f in [
        "outputs/same/a/items.txt",
        "outputs/same/b/items.txt",
        "data/list.txt",
        "data/report.txt",
    ] {
        assert_eq!(
            std::fs::read(slurm.path(f)).unwrap(),
            std::fs::read(local.path(f)).unwrap(),
            "{f} differs"
        );
    }
    assert_eq!(slurm.read("outputs/same/a/items.txt").lines().count(), 48);
    assert_eq!(lock_entries(&slurm), lock_entries(&local));
    // Every shard ran once, on the cluster.
    let tr = trace(&slurm);
    for s in 0..4 {
        assert_eq!(tr.get(&format!("a shard {s}")), Some(&1), "{tr:?}");
    }
    for s in 0..3 {
        assert_eq!(tr.get(&format!("b shard {s}")), Some(&1), "{tr:?}");
    }
    all_fresh_and_nothing_resubmitted(|args| slurm.run(args));
}

#[test]
fn a_failed_shard_is_reported_dependents_cancelled_and_only_it_reruns() {
    let Some(_c) = cluster("a_failed_shard_is_reported_dependents_cancelled_and_only_it_reruns")
    else {
        return;
    };
    let t = workspace("fail", ", fail_shard: 1, fail_while: broken.flag");
    t.write("broken.flag", "");
    let out = t
        .run(&["run", "--executor", "slurm", "--keep-going", "--json"])
        .code(1);
    let e = &out.stderr;
    assert!(e.contains("FAILED   a: shard 1 (task "), "{e}");
    assert!(
        e.contains("fails while `broken.flag` exists"),
        "log tail shown:\n{e}"
    );
    let log_line = e.lines().find(|l| l.contains("full log: ")).unwrap();
    let log = log_line.split("full log: ").nth(1).unwrap().trim();
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("fails while")
    );
    let o = out.outcomes();
    assert_eq!(
        (
            o["gen"].as_str(),
            o["a"].as_str(),
            o["b"].as_str(),
            o["report"].as_str()
        ),
        ("ran", "failed", "skipped", "skipped")
    );
    // The dependents' jobs were cancelled, not left pending forever.
    let j = journal(&t);
    for stage in j["stages"].as_array().unwrap() {
        if stage["name"] == "b" || stage["name"] == "report" {
            for job in stage["jobs"].as_array().unwrap() {
                let state = squeue_state(job["id"].as_str().unwrap());
                assert!(
                    state.lines().all(|s| s.starts_with("CANCELLED")),
                    "{} job {}: {state}",
                    stage["name"],
                    job["id"]
                );
            }
        }
    }
    let st = t.run(&["status"]).ok();
    assert!(
        st.stdout.contains("slurm jobs of the last submission"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains("shards-"),
        "failed task's log listed: {}",
        st.stdout
    );

    // Fix the cause: only shard 1 of `a`, then what depends on `a`, run again.
    t.remove("broken.flag");
    t.remove("trace.txt");
    let out = t.run(&["run", "--executor", "slurm", "--json"]).ok();
    assert!(
        out.stderr.contains("a: submitted 1 shard task(s)"),
        "{}",
        out.stderr
    );
    let o = out.outcomes();
    assert_eq!(
        (
            o["gen"].as_str(),
            o["a"].as_str(),
            o["b"].as_str(),
            o["report"].as_str()
        ),
        ("cached", "ran", "ran", "ran")
    );
    let tr = trace(&t);
    let a: Vec<&String> = tr.keys().filter(|k| k.starts_with("a ")).collect();
    assert_eq!(a, ["a run", "a shard 1"], "{tr:?}");
    assert_eq!(tr.get("b run"), Some(&1));
    assert_eq!(t.read("outputs/fail/a/items.txt").lines().count(), 48);
}

#[test]
fn a_killed_coordinator_is_picked_up_again_and_no_shard_runs_twice() {
    let Some(_c) = cluster("a_killed_coordinator_is_picked_up_again_and_no_shard_runs_twice")
    else {
        return;
    };
    let t = workspace("kill", ", work_ms: 250");
    let mut child = t.spawn(&["run", "--executor", "slurm"]);
    wait_until("a shard task starts", 60, || {
        trace(&t).keys().any(|k| k.starts_with("a shard"))
    });
    kill9(&mut child);
    let st = t.run(&["status", "--json"]).ok().json();
    assert_eq!(st["slurm"]["live"], true, "{st}");
    assert_eq!(st["slurm"]["attached"], false, "{st}");
    let text = t.run(&["status"]).ok().stdout;
    assert!(
        text.contains("no coordinator is attached: `brspeech run --executor slurm` waits for them"),
        "{text}"
    );
    // A local run would do the same work again: it is refused while the jobs are in flight.
    let local = t.run(&["run"]).code(5);
    assert!(
        local.stderr.contains("has Slurm jobs in flight"),
        "{}",
        local.stderr
    );

    let out = t.run(&["run", "--executor", "slurm", "--json"]).ok();
    assert!(out.stderr.contains("picked up jobs"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("submitted"),
        "nothing submitted again: {}",
        out.stderr
    );
    let o = out.outcomes();
    assert_eq!(
        (o["a"].as_str(), o["b"].as_str(), o["report"].as_str()),
        ("ran", "ran", "ran")
    );
    let tr = trace(&t);
    assert!(
        tr.values().all(|&n| n == 1),
        "every shard and step ran once: {tr:?}"
    );
    assert_eq!(tr.len(), 4 + 1 + 3 + 1, "{tr:?}");
    let st = t.run(&["status", "--json"]).ok().states();
    assert!(st.values().all(|(s, _)| s == "fresh"), "{st:?}");
}

#[test]
fn a_cancelled_task_is_reported_and_nothing_partial_is_committed() {
    let Some(_c) = cluster("a_cancelled_task_is_reported_and_nothing_partial_is_committed") else {
        return;
    };
    let t = workspace("cancel", ", work_ms: 400");
    let child = t.spawn(&["run", "--executor", "slurm"]);
    wait_until("shard 0 of `a` starts", 60, || {
        trace(&t).contains_key("a shard 0")
    });
    let j = journal(&t);
    let a = j["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "a")
        .unwrap()
        .clone();
    let array = a["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["role"] == "shards")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // `a` waited for `gen`, so its key was computed on the cluster: it is in its ticket.
    let key = ticket(&t, "a")["key"].as_str().unwrap().to_owned();
    let task = format!("{array}_0");
    assert!(
        Command::new("scancel")
            .arg(&task)
            .status()
            .unwrap()
            .success()
    );
    let out: Out = finish(child).code(1);
    let e = &out.stderr;
    assert!(
        e.contains(&format!("FAILED   a: shard 0 (task {task}) was cancelled")),
        "{e}"
    );
    assert!(e.contains("nothing of it was committed"), "{e}");
    assert!(e.contains(&format!("shards-{task}.out")), "log named: {e}");
    assert!(e.contains("skipped  b"), "{e}");
    // Nothing partial: no shard record, no entry, no lock record for `a`; memo entries are
    // whole.
    assert!(!t.exists(&format!("cache/slurm/shards/{key}/0.json")));
    assert!(!t.exists(&format!("cache/entries/{key}")));
    assert!(!lock_entries(&t).contains_key("a"));
    for ns in std::fs::read_dir(t.path("cache/memo/shard_demo")).unwrap() {
        for m in std::fs::read_dir(ns.unwrap().path()).unwrap() {
            assert!(
                m.unwrap().path().join("value").is_file(),
                "a memo entry is complete"
            );
        }
    }
    // The next run redoes the cancelled shard and finishes.
    let out = t.run(&["run", "--executor", "slurm", "--json"]).ok();
    assert_eq!(out.outcomes()["a"], "ran");
    assert_eq!(t.read("outputs/cancel/a/items.txt").lines().count(), 48);
}

#[test]
fn fake_cluster_run_matches_a_local_run_and_a_failed_shard_reruns_alone() {
    let local = workspace("fake", "");
    local.run(&["run"]).ok();

    let fake = Fake::new();
    let t = workspace("fake", "");
    let out = fake.run(&t, &["run", "--executor", "slurm", "--json"]).ok();
    assert!(
        out.outcomes().values().all(|v| v == "ran"),
        "{:?}\n{}",
        out.outcomes(),
        out.stderr
    );
    assert!(
        out.stderr.contains("a: submitted key job"),
        "{}",
        out.stderr
    );
    for f in [
        "outputs/fake/a/items.txt",
        "outputs/fake/b/items.txt",
        "data/report.txt",
    ] {
        assert_eq!(
            std::fs::read(t.path(f)).unwrap(),
            std::fs::read(local.path(f)).unwrap(),
            "{f} differs"
        );
    }
    assert_eq!(lock_entries(&t), lock_entries(&local));
    assert!(trace(&t).values().all(|&n| n == 1), "{:?}", trace(&t));
    let again = fake.run(&t, &["run", "--executor", "slurm", "--json"]).ok();
    assert!(again.outcomes().values().all(|v| v == "cached"));
    assert!(!again.stderr.contains("submitted"), "{}", again.stderr);

    // One shard fails: reported with its log; Slurm cancels what depends on it.
    let t = workspace("fakefail", ", fail_shard: 2, fail_while: broken.flag");
    t.write("broken.flag", "");
    let out = fake
        .run(&t, &["run", "--executor", "slurm", "--json"])
        .code(1);
    assert!(
        out.stderr.contains("FAILED   a: shard 2 (task "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("| error: stage `a`: shard 2 fails while"),
        "{}",
        out.stderr
    );
    let o = out.outcomes();
    assert_eq!(
        (o["a"].as_str(), o["b"].as_str(), o["report"].as_str()),
        ("failed", "skipped", "skipped")
    );
    let st = fake.run(&t, &["status"]).ok();
    assert!(
        st.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("a ") && l.contains(" failed ")),
        "{}",
        st.stdout
    );
    t.remove("broken.flag");
    t.remove("trace.txt");
    let out = fake.run(&t, &["run", "--executor", "slurm", "--json"]).ok();
    assert!(
        out.stderr.contains("a: submitted 1 shard task(s)"),
        "{}",
        out.stderr
    );
    let tr = trace(&t);
    let a: Vec<&String> = tr.keys().filter(|k| k.starts_with("a ")).collect();
    assert_eq!(a, ["a run", "a shard 2"], "{tr:?}");
    assert_eq!(t.read("outputs/fakefail/a/items.txt").lines().count(), 48);
    let st = fake.run(&t, &["status", "--json"]).ok().states();
    assert!(st.values().all(|(s, _)| s == "fresh"), "{st:?}");
}

#[test]
fn a_request_the_cluster_cannot_meet_fails_at_once() {
    let Some(_c) = cluster("a_request_the_cluster_cannot_meet_fails_at_once") else {
        return;
    };
    let t = Test::new();
    t.pipeline(
        r#"
name: big
executor:
  cpus: 100000
stages:
  a: {kind: command, cmd: "true"}
  b: {kind: command, cmd: "true", needs: [a]}
"#,
    );
    let t0 = Instant::now();
    let out = t.run(&["run", "--executor", "slurm", "--json"]).code(1);
    assert!(t0.elapsed() < Duration::from_secs(30), "not left pending");
    assert!(
        out.stderr.contains("cannot start: Slurm keeps it pending"),
        "{}",
        out.stderr
    );
    let o = out.outcomes();
    assert_eq!((o["a"].as_str(), o["b"].as_str()), ("failed", "skipped"));
    let j = journal(&t);
    for stage in j["stages"].as_array().unwrap() {
        for job in stage["jobs"].as_array().unwrap() {
            let state = squeue_state(job["id"].as_str().unwrap());
            assert!(state.starts_with("CANCELLED"), "{}: {state}", job["id"]);
        }
    }
}

#[test]
fn fake_cluster_detached_jobs_are_recorded_by_the_next_run() {
    let fake = Fake::new();
    let t = workspace("detach", "");
    let out = fake
        .run(&t, &["run", "--executor", "slurm", "--detach", "--json"])
        .ok();
    assert_eq!(out.json()["detached"], true, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("detached: `brspeech status` shows the jobs"),
        "{}",
        out.stderr
    );
    // The jobs (which this stand-in runs at once) committed, but nothing recorded them yet.
    assert!(!t.exists("brspeech.lock"));
    assert_eq!(t.entries(), 4, "every stage committed by its jobs");
    let out = fake.run(&t, &["run", "--executor", "slurm", "--json"]).ok();
    let o = out.outcomes();
    assert!(o.values().all(|v| v == "ran"), "{o:?}\n{}", out.stderr);
    assert!(!out.stderr.contains("submitted"), "{}", out.stderr);
    assert_eq!(lock_entries(&t).len(), 4);
    assert!(trace(&t).values().all(|&n| n == 1), "{:?}", trace(&t));
}

/// A small generated corpus: a bonafide source of 9 FLAC files at three rates in speaker
/// folders and a truncated one, and a spoof source of 6 WAV files; scan → metadata → chunk with
/// 3 buckets, so `chunk` has 2 sources x 3 buckets = 6 shards and 15 files to cut.
fn corpus_workspace(name: &str) -> Test {
    use super::corpus_stages::audio::{flac_bytes, sine, write_flac, write_wav_i16};
    let t = Test::new();
    for n in 0..9u32 {
        let rate = [16_000, 22_050, 44_100][n as usize % 3];
        let p = t.path(&format!("real/spk{}/r{n}.flac", n % 3));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_flac(
            &p,
            rate,
            1,
            &sine(rate, 200.0 + 30.0 * f64::from(n), 0.4, 0.6),
        );
    }
    let full = flac_bytes(16_000, 1, &sine(16_000, 440.0, 0.5, 1.0));
    std::fs::write(t.path("real/spk0/cut.flac"), &full[..full.len() / 2]).unwrap();
    std::fs::create_dir_all(t.path("fake")).unwrap();
    for n in 0..6u32 {
        let p = t.path(&format!("fake/f{n}.wav"));
        write_wav_i16(
            &p,
            24_000,
            1,
            &sine(24_000, 300.0 + 25.0 * f64::from(n), 0.3, 0.5),
        );
    }
    t.pipeline(&format!(
        r#"
name: {name}
executor:
  throttle: 4
sources:
  - {{name: real, label: bonafide, root: real, speaker: {{regex: '^(spk[0-9]+)/'}}}}
  - {{name: fake, label: spoof, root: fake}}
stages:
  scan: {{kind: scan_corpus}}
  meta:
    kind: build_metadata
    needs: [scan]
    params: {{seed: 7, ratios: [0.6, 0.2, 0.2]}}
  chunk:
    kind: chunk_audio
    needs: [meta]
    params: {{buckets: 3, trim: true, crop: all, hop: 4000, samples: 8000}}
  extract:
    kind: extract_ssl
    needs: [chunk]
    params: {{ssl: {ssl}, device: cpu, batch_size: 4}}
"#,
        ssl = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/wav2vec2-tiny-random")
            .display()
    ));
    t
}

/// Every file of the outputs of `stages`, by `stage/relative path`.
fn corpus_outputs(t: &Test, name: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for stage in ["scan", "meta", "chunk", "extract"] {
        let dir = t.path(&format!("outputs/{name}/{stage}"));
        for e in walkdir::WalkDir::new(&dir).follow_links(true) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let rel = e.path().strip_prefix(&dir).unwrap_or(Path::new(""));
                out.insert(
                    format!("{stage}/{}", rel.display()),
                    std::fs::read(e.path()).unwrap(),
                );
            }
        }
    }
    out
}

/// A corpus pipeline run through `run` (the Slurm executor, real or stand-in) gives the bytes
/// and the lock entries of a local run.
fn corpus_matches_local(run: impl Fn(&Test, &[&str]) -> Out) {
    let local = corpus_workspace("corpus");
    let o = local.run(&["run", "--json"]).ok();
    assert!(
        o.outcomes().values().all(|v| v == "ran"),
        "{:?}",
        o.outcomes()
    );
    let expected = corpus_outputs(&local, "corpus");
    assert_eq!(
        expected
            .keys()
            .filter(|k| k.starts_with("chunk/shards/"))
            .count(),
        6,
        "{:?}",
        expected.keys().collect::<Vec<_>>()
    );

    let t = corpus_workspace("corpus");
    let out = run(&t, &["run", "--executor", "slurm", "--json"]).ok();
    assert!(
        out.outcomes().values().all(|v| v == "ran"),
        "{:?}\n{}",
        out.outcomes(),
        out.stderr
    );
    assert!(out.stderr.contains("chunk: submitted"), "{}", out.stderr);
    assert!(out.stderr.contains("extract: submitted"), "{}", out.stderr);
    assert!(out.stderr.contains("meta: submitted"), "{}", out.stderr);
    // Every stage counts its items as the local run does (shards counted once).
    let counts = |o: &Out| -> BTreeMap<String, (u64, u64)> {
        o.json()["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    (
                        s["items_processed"].as_u64().unwrap_or(0),
                        s["items_reused"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect()
    };
    assert_eq!(counts(&out), counts(&o));
    let got = corpus_outputs(&t, "corpus");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (k, v) in &got {
        assert!(expected[k] == *v, "`{k}` differs from the local run's");
    }
    assert_eq!(lock_entries(&t), lock_entries(&local));
    let json = out.json();
    let chunk = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "chunk")
        .unwrap();
    assert_eq!(chunk["items_processed"], 15, "{chunk}");
    let clips = local.read("outputs/corpus/chunk/index.csv").lines().count() - 1;
    let extract = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "extract")
        .unwrap();
    assert_eq!(extract["items_processed"], clips as u64, "{extract}");
    assert_eq!(extract["items_reused"], 0, "{extract}");

    all_fresh_and_nothing_resubmitted(|args| run(&t, args));
}

#[test]
fn a_sharded_corpus_pipeline_on_slurm_matches_a_local_run() {
    let Some(_c) = cluster("a_sharded_corpus_pipeline_on_slurm_matches_a_local_run") else {
        return;
    };
    corpus_matches_local(|t, args| t.run(args));
}

#[test]
fn fake_cluster_corpus_pipeline_matches_a_local_run() {
    let fake = Fake::new();
    corpus_matches_local(|t, args| fake.run(t, args));
}
