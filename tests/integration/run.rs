//! `run`: no-op reruns, exact invalidation, early cutoff, restores, force, targets, failures.

use crate::common::Test;

const CHAIN: &str = r#"
name: chain
stages:
  a:
    kind: command
    deps: [in.txt]
    cmd: tr -d ' ' < in.txt > a.txt
    outs: [a.txt]
  b:
    kind: command
    deps: [a.txt]
    params: {n: 1}
    cmd: cat a.txt > b.txt && echo "n=$BRSPEECH_PARAM_N" >> b.txt
    outs: [b.txt]
  c:
    kind: command
    needs: [b]
    cmd: wc -l < b.txt > c.txt
    outs: [c.txt]
  d:
    kind: command
    params: {word: hello}
    cmd: echo "$BRSPEECH_PARAM_WORD" > d.txt
    outs: [d.txt]
"#;

fn chain() -> Test {
    let t = Test::new();
    t.pipeline(CHAIN).write("in.txt", "x y z\n");
    t
}

#[test]
fn first_run_runs_everything_and_rerun_is_a_no_op() {
    let t = chain();
    let first = t.run(&["run", "--json"]).ok();
    assert!(
        first.outcomes().values().all(|o| o == "ran"),
        "{:?}",
        first.outcomes()
    );
    assert_eq!(t.read("b.txt"), "xyz\nn=1\n");
    assert_eq!(t.read("d.txt"), "hello\n");
    let lock_before = t.read("brspeech.lock");
    // Cross a second boundary: records carry a finish time that a no-op run must not refresh.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = t.run(&["run", "--json"]).ok();
    assert!(
        again.outcomes().values().all(|o| o == "cached"),
        "{:?}",
        again.outcomes()
    );
    assert_eq!(
        t.read("brspeech.lock"),
        lock_before,
        "a no-op run leaves the lock file alone"
    );
    let summary = again.json();
    assert_eq!(summary["ok"], true);
    for s in summary["stages"].as_array().unwrap() {
        assert!(s["seconds"].is_number());
        assert!(
            s.get("items_processed").is_none(),
            "command stages process no items"
        );
    }
    assert!(
        again
            .stderr
            .contains("4 stages: 0 ran, 4 cached, 0 restored, 0 failed"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_param_change_reruns_exactly_that_stage_and_its_dependents() {
    let t = chain();
    t.run(&["run"]).ok();
    t.pipeline(&CHAIN.replace("params: {n: 1}", "params: {n: 2}"));
    let out = t.run(&["run", "--json"]).ok();
    let o = out.outcomes();
    assert_eq!(
        (
            o["a"].as_str(),
            o["b"].as_str(),
            o["c"].as_str(),
            o["d"].as_str()
        ),
        ("cached", "ran", "ran", "cached"),
        "{o:?}"
    );
    assert_eq!(t.read("b.txt"), "xyz\nn=2\n");
}

#[test]
fn an_unchanged_re_output_stops_invalidation() {
    let t = chain();
    t.run(&["run"]).ok();
    // Same letters, other spacing: `a` reruns and writes the same bytes.
    t.write("in.txt", "x  y    z\n");
    let out = t.run(&["run", "--json"]).ok();
    let o = out.outcomes();
    assert_eq!(
        (o["a"].as_str(), o["b"].as_str(), o["c"].as_str()),
        ("ran", "cached", "cached"),
        "{o:?}"
    );
}

#[test]
fn deleted_outs_are_restored_from_the_cache_without_running() {
    let t = chain();
    t.run(&["run"]).ok();
    t.remove("b.txt");
    std::fs::write(t.path("c.txt"), "edited\n").unwrap();
    let st = t.run(&["status", "--json"]).ok().states();
    assert_eq!(st["b"].0, "stale");
    assert!(
        st["b"]
            .1
            .contains(&"out `b.txt` missing from the workspace".to_owned()),
        "{st:?}"
    );
    assert!(
        st["c"]
            .1
            .contains(&"out `c.txt` modified in the workspace".to_owned()),
        "{st:?}"
    );
    let out = t.run(&["run", "--json"]).ok();
    let o = out.outcomes();
    assert_eq!(
        (o["b"].as_str(), o["c"].as_str(), o["a"].as_str()),
        ("restored", "restored", "cached"),
        "{o:?}"
    );
    assert_eq!(t.read("b.txt"), "xyz\nn=1\n");
    assert_eq!(t.read("c.txt"), "2\n");
    // Restored by copy: editing the workspace file cannot reach the cache.
    std::fs::write(t.path("b.txt"), "mine\n").unwrap();
    t.remove("b.txt");
    t.run(&["run"]).ok();
    assert_eq!(t.read("b.txt"), "xyz\nn=1\n");
}

#[test]
fn going_back_to_an_earlier_param_value_restores_instead_of_running() {
    let t = chain();
    t.run(&["run"]).ok();
    t.pipeline(&CHAIN.replace("params: {n: 1}", "params: {n: 2}"));
    t.run(&["run"]).ok();
    t.pipeline(CHAIN);
    let o = t.run(&["run", "--json"]).ok().outcomes();
    assert_eq!(
        (o["b"].as_str(), o["c"].as_str()),
        ("restored", "restored"),
        "{o:?}"
    );
    assert_eq!(t.read("b.txt"), "xyz\nn=1\n");
}

#[test]
fn targets_select_what_they_need_and_force_reruns() {
    let t = chain();
    let o = t.run(&["run", "b", "--json"]).ok().outcomes();
    assert_eq!(o.keys().cloned().collect::<Vec<_>>(), ["a", "b"]);
    let o = t
        .run(&["run", "brspeech.yaml", "c", "--force", "a", "--json"])
        .ok()
        .outcomes();
    assert_eq!(
        (o["a"].as_str(), o["b"].as_str(), o["c"].as_str()),
        ("ran", "cached", "ran"),
        "{o:?}"
    );
    let o = t.run(&["run", "--force-all", "--json"]).ok().outcomes();
    assert!(o.values().all(|x| x == "ran"), "{o:?}");
    let bad = t.run(&["run", "cc"]).code(2);
    assert!(
        bad.stderr
            .contains("unknown stage `cc` (did you mean `c`?)"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_failing_stage_prints_its_name_status_and_log_and_stops_cleanly() {
    let t = Test::new();
    t.pipeline(
        r#"
name: fail
stages:
  bad:
    kind: command
    cmd: echo "something broke" >&2; exit 3
  after:
    kind: command
    needs: [bad]
    cmd: "true"
  other:
    kind: command
    cmd: echo ok > other.txt
    outs: [other.txt]
"#,
    );
    let out = t.run(&["run", "-j", "1", "--json"]).code(1);
    let log = t.path("cache/logs/fail/bad.log");
    assert!(
        out.stderr
            .contains("FAILED   bad: stage `bad` failed: exit status 3"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&log.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("| something broke"), "{}", out.stderr);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("something broke")
    );
    let o = out.outcomes();
    assert_eq!(
        (o["bad"].as_str(), o["after"].as_str(), o["other"].as_str()),
        ("failed", "skipped", "skipped"),
        "{o:?}"
    );
    assert_eq!(out.json()["ok"], false);
    assert!(!t.exists("other.txt"));

    let out = t.run(&["run", "-j", "1", "--keep-going", "--json"]).code(1);
    let o = out.outcomes();
    assert_eq!(
        (o["bad"].as_str(), o["after"].as_str(), o["other"].as_str()),
        ("failed", "skipped", "ran"),
        "{o:?}"
    );
    assert!(
        out.stderr
            .contains("skipped  after: upstream `bad` did not finish"),
        "{}",
        out.stderr
    );
    let lock: serde_json::Value = serde_json::from_str(&t.read("brspeech.lock")).unwrap();
    assert!(
        lock["stages"].get("bad").is_none(),
        "a failed stage is never recorded"
    );
}

#[test]
fn a_command_that_forgets_an_out_fails() {
    let t = Test::new();
    t.pipeline("name: p\nstages:\n  a: {kind: command, cmd: 'true', outs: [missing.txt]}\n");
    let out = t.run(&["run"]).code(1);
    assert!(
        out.stderr
            .contains("did not produce its declared out `missing.txt`"),
        "{}",
        out.stderr
    );
    assert_eq!(t.entries(), 0);
}

#[test]
fn paths_are_relative_to_the_pipeline_folder_and_the_cache_is_at_the_root() {
    let t = Test::new();
    t.write("pipelines/data/in.txt", "42\n");
    t.write(
        "pipelines/sub.yaml",
        "name: sub\nstages:\n  copy: {kind: command, deps: [data/in.txt], cmd: cp data/in.txt out.txt, outs: [out.txt]}\n",
    );
    t.run(&["run", "pipelines/sub.yaml"]).ok();
    assert_eq!(t.read("pipelines/out.txt"), "42\n");
    assert!(t.exists("pipelines/sub.lock"));
    assert_eq!(
        t.entries(),
        1,
        "cache/ at the workspace root (brspeech.toml)"
    );
    // --cache-dir and BRSPEECH_CACHE move it.
    t.run(&[
        "run",
        "pipelines/sub.yaml",
        "--cache-dir",
        "elsewhere",
        "--force-all",
    ])
    .ok();
    assert!(t.exists("elsewhere/entries"));
    let o = t
        .command(&["run", "pipelines/sub.yaml", "--json"])
        .env("BRSPEECH_CACHE", t.path("elsewhere"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stages"][0]["outcome"], "cached");
}

#[test]
fn vars_and_config_sections_reach_the_command() {
    let t = Test::new();
    t.write("cfg.yaml", "command: {threshold: 0.25, opt: {beta: 0.9}}\n");
    t.pipeline(
        "name: v\nvars: {word: hi, n: 3}\nconfigs: {defaults: cfg.yaml}\nstages:\n  a:\n    kind: command\n    config: defaults\n    params: {n: '${vars.n}', opt: {beta: 0.5}}\n    cmd: echo ${vars.word} $BRSPEECH_PARAM_N $BRSPEECH_PARAM_THRESHOLD $BRSPEECH_PARAM_OPT_BETA > out.txt\n    outs: [out.txt]\n",
    );
    t.run(&["run"]).ok();
    assert_eq!(t.read("out.txt"), "hi 3 0.25 0.5\n");
    t.write("cfg.yaml", "command: {threshold: 0.75, opt: {beta: 0.9}}\n");
    let st = t.run(&["status", "--json"]).ok().states();
    assert_eq!(
        st["a"].1,
        [
            "params.threshold: 0.25 -> 0.75",
            "config defaults section command changed"
        ]
    );
}

#[test]
fn a_missing_dep_is_an_environment_error() {
    let t = Test::new();
    t.pipeline("name: p\nstages:\n  a: {kind: command, deps: [corpus], cmd: 'true'}\n");
    let out = t.run(&["run"]).code(4);
    assert!(
        out.stderr
            .contains("stage `a` reads a path not on this machine:\n  dep `corpus`: `"),
        "{}",
        out.stderr
    );
}

#[test]
fn dry_run_prints_what_would_run_and_why_and_changes_nothing() {
    let t = chain();
    t.run(&["run"]).ok();
    t.pipeline(&CHAIN.replace("params: {n: 1}", "params: {n: 5}"));
    t.remove("d.txt");
    let out = t.run(&["run", "--dry-run"]).ok();
    insta::assert_snapshot!("dry_run", out.stdout);
    assert!(!t.exists("d.txt"));
    let o = t.run(&["run", "-n", "--json"]).ok().json();
    let b = o["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "b")
        .unwrap()
        .clone();
    assert_eq!(b["action"], "run");
    assert_eq!(b["reasons"][0], "params.n: 1 -> 5");
}
