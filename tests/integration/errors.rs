//! Invalid pipelines: every problem reported at once with file:line:column (exit 3); the
//! rendered diagnostics are snapshot-tested.

use crate::common::Test;

fn invalid(yaml: &str) -> String {
    let t = Test::new();
    t.pipeline(yaml);
    let out = t.run(&["validate"]).code(3);
    assert!(out.stdout.is_empty());
    out.stderr
}

#[test]
fn unknown_keys_and_wrong_types() {
    let stderr = invalid(
        r#"name: demo
stagse: {}
stages:
  prepare:
    kind: command
    comand: echo hi
    cmd: [not, a, string]
    needs: prepare_all
    resources: {gpu: two}
"#,
    );
    insta::assert_snapshot!("unknown_keys_and_wrong_types", stderr);
}

#[test]
fn unknown_needs_with_did_you_mean_self_dependency_and_duplicate_names() {
    let stderr = invalid(
        r#"name: demo
stages:
  prepare:
    kind: command
    cmd: echo a
  train:
    kind: command
    needs: [prepar, train]
    cmd: echo b
  prepare:
    kind: command
    cmd: echo c
"#,
    );
    insta::assert_snapshot!("needs_self_duplicates", stderr);
}

#[test]
fn cycles_are_printed_whole() {
    let stderr = invalid(
        r#"name: demo
stages:
  a: {kind: command, cmd: x, needs: [c]}
  b: {kind: command, cmd: x, needs: [a]}
  c: {kind: command, cmd: x, needs: [b]}
"#,
    );
    assert!(
        stderr.contains("dependency cycle: a -> b -> c -> a"),
        "{stderr}"
    );
    insta::assert_snapshot!("cycle", stderr);
}

#[test]
fn two_stages_writing_the_same_out() {
    let stderr = invalid(
        r#"name: demo
stages:
  a: {kind: command, cmd: x, outs: [data/out.txt]}
  b: {kind: command, cmd: x, outs: [data/out.txt]}
"#,
    );
    insta::assert_snapshot!("same_out", stderr);
}

#[test]
fn unknown_and_unavailable_kinds() {
    let stderr = invalid(
        r#"name: demo
stages:
  scan: {kind: scan_corpsu}
  train: {kind: train_aasist, cmd: python train.py}
"#,
    );
    assert!(stderr.contains("did you mean `scan_corpus`?"), "{stderr}");
    if !stderr.contains("only `command` stages take `cmd`") {
        assert!(
            stderr.contains("kind `train_aasist` is not available in this build"),
            "{stderr}"
        );
    }
}

#[test]
fn vars_and_configs() {
    let stderr = invalid(
        r#"name: demo
vars: {dir: data}
configs: {model: missing.yaml}
stages:
  a: {kind: command, cmd: "ls ${vars.dri}", config: modle}
"#,
    );
    insta::assert_snapshot!("vars_and_configs", stderr);
}

#[test]
fn syntax_errors_point_at_the_place() {
    let stderr = invalid("name: demo\nstages:\n  a: {kind: command, cmd: [x\n");
    assert!(stderr.contains("invalid YAML"), "{stderr}");
    assert!(stderr.contains("brspeech.yaml:4:"), "{stderr}");
}

#[test]
fn every_command_validates_first() {
    let t = Test::new();
    t.pipeline("name: demo\nstages:\n  a: {kind: command}\n");
    for args in [&["run"][..], &["status"], &["graph"], &["run", "--dry-run"]] {
        let out = t.run(args).code(3);
        assert!(
            out.stderr.contains("command stage `a` has no `cmd`"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("brspeech.yaml:3:3"), "{}", out.stderr);
    }
}

#[test]
fn a_missing_pipeline_file_is_a_usage_error() {
    let t = Test::new();
    let out = t.run(&["status"]).code(2);
    assert!(
        out.stderr
            .contains("pipeline file `brspeech.yaml` not found"),
        "{}",
        out.stderr
    );
    t.run(&["frobnicate"]).code(2);
}
