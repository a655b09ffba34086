//! `graph`: ascii (with the reason a stage will rerun), dot, mermaid, html coloured by status.

use crate::common::Test;

const P: &str = r#"
name: g
stages:
  prepare: {kind: command, cmd: echo 1 > p.txt, outs: [p.txt], params: {n: 1}}
  train: {kind: command, deps: [p.txt], cmd: cat p.txt > t.txt, outs: [t.txt], description: fit the model}
  report: {kind: command, needs: [train], cmd: "true"}
"#;

#[test]
fn every_format_shows_status_and_reasons() {
    let t = Test::new();
    t.pipeline(P);
    t.run(&["run"]).ok();
    t.pipeline(&P.replace("n: 1", "n: 2"));
    let ascii = t.run(&["graph"]).ok().stdout;
    insta::assert_snapshot!("ascii", ascii);
    let dot = t.run(&["graph", "--format", "dot"]).ok().stdout;
    assert!(dot.starts_with("digraph \"g\""));
    assert!(dot.contains("\"prepare\" -> \"train\";"));
    assert!(dot.contains("tooltip=\"params.n: 1 -> 2\""), "{dot}");
    let mermaid = t.run(&["graph", "-f", "mermaid"]).ok().stdout;
    assert!(mermaid.starts_with("flowchart LR"));
    assert!(
        mermaid.contains("s0 --> s1") && mermaid.contains(":::stale"),
        "{mermaid}"
    );
    t.run(&["graph", "-f", "html", "-o", "g.html"]).ok();
    let html = t.read("g.html");
    assert!(html.contains("<svg") && !html.contains("<script src") && !html.contains("<link"));
    assert!(
        html.contains("<title>stale: params.n: 1 -&gt; 2</title>"),
        "reasons on hover"
    );
    assert!(html.contains("fit the model"));
    let bare = t.run(&["graph", "--no-status"]).ok().stdout;
    assert!(!bare.contains("stale"));
}
