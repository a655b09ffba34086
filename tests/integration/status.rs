//! `status`: fresh / stale / never_run and the exact reasons, for each kind of change.

use crate::common::Test;

const P: &str = r#"
name: st
stages:
  scan:
    kind: command
    deps: [corpus]
    params: {lr: 5.0e-6}
    cmd: ls corpus > list.txt
    outs: [list.txt]
  meta:
    kind: command
    needs: [scan]
    cmd: wc -l < list.txt > meta.txt
    outs: [meta.txt]
"#;

fn setup() -> Test {
    let t = Test::new();
    t.pipeline(P)
        .write("corpus/a.flac", "a")
        .write("corpus/b.flac", "b")
        .write("corpus/sub/c.flac", "c");
    t
}

#[test]
fn never_run_then_fresh() {
    let t = setup();
    let st = t.run(&["status", "--json"]).ok().states();
    assert_eq!(
        st["scan"],
        ("never_run".to_owned(), vec!["never run".to_owned()])
    );
    assert_eq!(st["meta"].0, "never_run");
    t.run(&["run"]).ok();
    let out = t.run(&["status", "--json"]).ok();
    assert!(
        out.states()
            .values()
            .all(|(s, r)| s == "fresh" && r.is_empty())
    );
    assert!(out.json()["stages"][0]["key"].as_str().unwrap().len() == 64);
    let human = t.run(&["status"]).ok();
    assert!(
        human.stdout.starts_with("pipeline `st`: 2/2 stages fresh"),
        "{}",
        human.stdout
    );
}

#[test]
fn param_changes_name_the_param_and_both_values() {
    let t = setup();
    t.run(&["run"]).ok();
    t.pipeline(&P.replace("lr: 5.0e-6", "lr: 1.0e-5"));
    let st = t.run(&["status", "--json"]).ok().states();
    assert_eq!(
        st["scan"],
        (
            "stale".to_owned(),
            vec!["params.lr: 5e-6 -> 1e-5".to_owned()]
        )
    );
    assert_eq!(
        st["meta"],
        (
            "stale".to_owned(),
            vec!["upstream `scan` is not up to date".to_owned()]
        )
    );
}

#[test]
fn dep_files_modified_added_and_removed_are_named() {
    let t = setup();
    t.run(&["run"]).ok();
    t.write("corpus/a.flac", "changed")
        .write("corpus/new.flac", "n");
    t.remove("corpus/sub/c.flac");
    let st = t.run(&["status", "--json"]).ok().states();
    assert_eq!(
        st["scan"].1,
        [
            "dep file `corpus/a.flac` modified",
            "dep file `corpus/new.flac` added",
            "dep file `corpus/sub/c.flac` removed"
        ]
    );
}

#[test]
fn upstream_output_and_cmd_changes() {
    let t = setup();
    t.run(&["run"]).ok();
    t.write("corpus/d.flac", "d");
    t.run(&["run", "scan"]).ok();
    let st = t.run(&["status", "--json"]).ok().states();
    assert_eq!(st["scan"].0, "fresh");
    assert_eq!(
        st["meta"],
        (
            "stale".to_owned(),
            vec!["upstream `scan` output changed".to_owned()]
        )
    );
    t.pipeline(&P.replace("wc -l < list.txt", "wc -c < list.txt"));
    let st = t.run(&["status", "--json"]).ok().states();
    assert_eq!(
        st["meta"].1,
        ["cmd changed", "upstream `scan` output changed"]
    );
}

#[test]
fn a_missing_cache_entry_is_explained() {
    let t = setup();
    t.run(&["run"]).ok();
    std::fs::remove_dir_all(t.path("cache/entries")).unwrap();
    std::fs::create_dir(t.path("cache/entries")).unwrap();
    let st = t.run(&["status", "--json"]).ok().states();
    assert_eq!(
        st["scan"].1,
        ["cache entry missing (collected by gc, or found corrupt)"]
    );
}
