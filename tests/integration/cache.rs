//! `cache du | gc | verify`, and corrupted entries being recomputed.

use crate::common::Test;

const P: &str = r#"
name: c
stages:
  a: {kind: command, params: {v: 1}, cmd: "echo $BRSPEECH_PARAM_V > a.txt", outs: [a.txt]}
  b: {kind: command, deps: [a.txt], cmd: "cat a.txt a.txt > b.txt", outs: [b.txt]}
"#;

fn damage(t: &Test, stage: &str) {
    let lock: serde_json::Value = serde_json::from_str(&t.read("brspeech.lock")).unwrap();
    let key = lock["stages"][stage]["key"].as_str().unwrap().to_owned();
    let out = t.path(&format!("cache/entries/{key}/out"));
    for e in walkdir::WalkDir::new(out)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
    {
        let mut perm = std::fs::metadata(e.path()).unwrap().permissions();
        #[allow(
            clippy::permissions_set_readonly_false,
            reason = "tests damage the cache on purpose"
        )]
        perm.set_readonly(false);
        std::fs::set_permissions(e.path(), perm).unwrap();
        std::fs::write(e.path(), "garbage\n").unwrap();
    }
}

#[test]
fn du_maps_sizes_to_stages_and_versions() {
    let t = Test::new();
    t.pipeline(P);
    t.run(&["run"]).ok();
    let out = t.run(&["cache", "du"]).ok();
    assert!(
        out.stdout.contains("c/a") && out.stdout.contains("c/b"),
        "{}",
        out.stdout
    );
    let j = t.run(&["cache", "du", "--json"]).ok().json();
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["stage"], "b");
    assert_eq!(rows[0]["bytes"], 4);
    assert_eq!(rows[0]["referenced"], 1);
    assert_eq!(rows[1]["version"], 1);
}

#[test]
fn gc_keeps_what_lock_files_reference_and_the_last_n() {
    let t = Test::new();
    t.pipeline(P);
    for v in 1..=3 {
        t.pipeline(&P.replace("v: 1", &format!("v: {v}")));
        t.run(&["run"]).ok();
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(t.entries(), 6);
    let j = t
        .run(&["cache", "gc", "--keep-last", "2", "--json"])
        .ok()
        .json();
    assert_eq!(j["entries_kept"], 4, "{j}");
    assert_eq!(t.entries(), 4);
    let j = t.run(&["cache", "gc", "--json"]).ok().json();
    assert_eq!(j["entries_removed"], 2, "{j}");
    assert_eq!(t.entries(), 2);
    let o = t.run(&["run", "--json"]).ok().outcomes();
    assert!(
        o.values().all(|x| x == "cached"),
        "referenced entries survive gc: {o:?}"
    );
    let human = t.run(&["cache", "gc"]).ok().stdout;
    assert!(
        human.starts_with("kept 2 entries (1 lock file(s), --keep-last 0)"),
        "{human}"
    );
}

#[test]
fn verify_reports_corrupt_entries_and_the_next_run_recomputes_them() {
    let t = Test::new();
    t.pipeline(P);
    t.run(&["run"]).ok();
    t.run(&["cache", "verify"]).ok();
    damage(&t, "b");
    let out = t.run(&["cache", "verify"]).code(5);
    assert!(out.stdout.contains("corrupt  c/b"), "{}", out.stdout);
    assert!(
        out.stderr.contains("1 corrupt cache entry"),
        "{}",
        out.stderr
    );
    let st = t.run(&["status", "--json"]).ok().states();
    assert_eq!(st["b"].0, "stale");
    t.remove("b.txt");
    let o = t.run(&["run", "--json"]).ok().outcomes();
    assert_eq!(
        (o["a"].as_str(), o["b"].as_str()),
        ("cached", "ran"),
        "{o:?}"
    );
    assert_eq!(t.read("b.txt"), "1\n1\n");
    t.run(&["cache", "verify"]).ok();
}

#[test]
fn a_corrupt_entry_found_while_restoring_is_recomputed() {
    let t = Test::new();
    t.pipeline(P);
    t.run(&["run"]).ok();
    damage(&t, "a");
    t.remove("a.txt");
    let out = t.run(&["run", "--json"]).ok();
    assert_eq!(out.outcomes()["a"], "ran");
    assert!(out.stderr.contains("is corrupt"), "{}", out.stderr);
    assert_eq!(t.read("a.txt"), "1\n");
    t.run(&["cache", "verify"]).ok();
}

#[test]
fn cache_commands_need_a_cache() {
    let t = Test::new();
    let out = t.run(&["cache", "du"]).code(2);
    assert!(out.stderr.contains("no cache at"), "{}", out.stderr);
}

/// A command stage's dep folder is hashed following symlinked folders; a dangling link or a
/// symlink loop inside it is left out of the key, not fatal; a declared dep that is missing
/// stays an error.
#[test]
fn dep_folders_follow_symlinked_folders_and_survive_bad_entries() {
    let t = Test::new();
    t.write("data/a.txt", "a\n");
    t.write("elsewhere/b.txt", "b\n");
    std::os::unix::fs::symlink("../elsewhere", t.path("data/linked")).unwrap();
    std::os::unix::fs::symlink("gone.txt", t.path("data/dangling.txt")).unwrap();
    std::os::unix::fs::symlink("..", t.path("data/loop")).unwrap();
    t.pipeline(
        r#"
name: d
stages:
  cat: {kind: command, deps: [data], cmd: "cat data/a.txt data/linked/b.txt > out.txt", outs: [out.txt]}
"#,
    );
    let first = t.run(&["run", "--json"]).ok();
    assert_eq!(first.outcomes()["cat"], "ran");
    assert_eq!(t.read("out.txt"), "a\nb\n");
    assert_eq!(t.run(&["run", "--json"]).ok().outcomes()["cat"], "cached");

    t.write("elsewhere/b.txt", "b2\n");
    let (state, reasons) = t.run(&["status", "--json"]).ok().states()["cat"].clone();
    assert_eq!(state, "stale");
    assert_eq!(reasons, ["dep file `data/linked/b.txt` modified"]);
    t.run(&["run"]).ok();
    assert_eq!(t.read("out.txt"), "a\nb2\n");

    t.pipeline(
        r#"
name: d
stages:
  cat: {kind: command, deps: [data, data/missing.txt], cmd: "true"}
"#,
    );
    let out = t.run(&["run"]).code(4);
    assert!(
        out.stderr
            .contains("stage `cat` reads a path not on this machine:\n  dep `data/missing.txt`: `"),
        "{}",
        out.stderr
    );
}
