//! `-j` parallelism and the `gpu` resource.

use crate::common::Test;

/// A stage that records its start and end times (ns) under `t/`.
fn timed(name: &str, secs: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    kind: command\n{extra}    cmd: mkdir -p t && date +%s%N > t/{name}.start && sleep {secs} && date +%s%N > t/{name}.end\n"
    )
}

fn span(t: &Test, name: &str) -> (u128, u128) {
    let r = |f: &str| {
        t.read(&format!("t/{name}.{f}"))
            .trim()
            .parse::<u128>()
            .unwrap()
    };
    (r("start"), r("end"))
}

fn overlap(a: (u128, u128), b: (u128, u128)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[test]
fn independent_stages_overlap_with_j2_and_not_with_j1() {
    let t = Test::new();
    t.pipeline(&format!(
        "name: par\nstages:\n{}{}",
        timed("x", "0.6", ""),
        timed("y", "0.6", "")
    ));
    t.run(&["run", "-j", "2"]).ok();
    assert!(
        overlap(span(&t, "x"), span(&t, "y")),
        "-j 2 runs independent stages together"
    );
    t.run(&["run", "-j", "1", "--force-all"]).ok();
    assert!(
        !overlap(span(&t, "x"), span(&t, "y")),
        "-j 1 runs one at a time"
    );
}

#[test]
fn gpu_stages_never_overlap_while_a_cpu_stage_runs_alongside() {
    let t = Test::new();
    let gpu = "    resources: {gpu: 1}\n";
    t.pipeline(&format!(
        "name: gpu\nstages:\n{}{}{}",
        timed("g1", "0.5", gpu),
        timed("g2", "0.5", gpu),
        timed("cpu", "0.8", "")
    ));
    t.run(&["run", "-j", "3", "--gpus", "1"]).ok();
    let (g1, g2, cpu) = (span(&t, "g1"), span(&t, "g2"), span(&t, "cpu"));
    assert!(
        !overlap(g1, g2),
        "two gpu:1 stages on one GPU never overlap: {g1:?} {g2:?}"
    );
    assert!(
        overlap(cpu, g1) || overlap(cpu, g2),
        "the CPU stage runs meanwhile"
    );
    t.run(&["run", "-j", "3", "--gpus", "2", "--force-all"])
        .ok();
    assert!(
        overlap(span(&t, "g1"), span(&t, "g2")),
        "with two GPUs they may overlap"
    );
    let too_many = t.run(&["run", "--gpus", "0", "--force-all"]).code(4);
    assert!(
        too_many.stderr.contains("needs 1 GPU(s) but only 0"),
        "{}",
        too_many.stderr
    );
}
