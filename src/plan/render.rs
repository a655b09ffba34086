//! Renderings of a sealed plan: ascii (terminal), Graphviz dot, mermaid, and a self-contained
//! HTML page (inline SVG, CSS and script; no network) with stages coloured by status and the
//! reasons a stage will rerun shown on hover and click.

use std::fmt::Write;

use super::{Built, Plan};
use crate::spec::Pipeline;

/// A stage's status as the renderings show it.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// `fresh`, `stale` or `never_run` (empty when unknown).
    pub state: String,
    /// Why it is not fresh.
    pub reasons: Vec<String>,
}

/// Output formats of `brspeech graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Layered text for the terminal.
    Ascii,
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// Self-contained HTML page.
    Html,
}

fn color(state: &str) -> (&'static str, &'static str) {
    match state {
        "fresh" => ("#c7eed4", "#2d7a46"),
        "stale" => ("#ffe0b3", "#b86e00"),
        "never_run" => ("#e4e4e7", "#6b6b75"),
        _ => ("#ffffff", "#444444"),
    }
}

/// Renders `plan` in `format`; `status[i]` describes stage `i` (empty slice: no status).
#[must_use]
pub fn render(
    plan: &Plan<Built>,
    pipeline: &Pipeline,
    status: &[NodeStatus],
    format: Format,
) -> String {
    match format {
        Format::Ascii => ascii(plan, pipeline, status),
        Format::Dot => dot(plan, pipeline, status),
        Format::Mermaid => mermaid(plan, pipeline, status),
        Format::Html => html(plan, pipeline, status),
    }
}

fn st(status: &[NodeStatus], i: usize) -> Option<&NodeStatus> {
    status.get(i).filter(|s| !s.state.is_empty())
}

fn ascii(plan: &Plan<Built>, pipeline: &Pipeline, status: &[NodeStatus]) -> String {
    let mut out = String::new();
    let n = pipeline.stages.len();
    let _ = write!(
        out,
        "pipeline `{}`: {n} stage{}",
        pipeline.name,
        if n == 1 { "" } else { "s" }
    );
    if !status.is_empty() {
        let count = |s: &str| status.iter().filter(|x| x.state == s).count();
        let _ = write!(
            out,
            " ({} fresh, {} stale, {} never_run)",
            count("fresh"),
            count("stale"),
            count("never_run")
        );
    }
    out.push('\n');
    let width = pipeline
        .stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for &i in plan.order() {
        let s = &pipeline.stages[i];
        let depth = plan.depth(i);
        let indent = "  ".repeat(depth);
        let ups: Vec<&str> = plan
            .upstream(i)
            .into_iter()
            .map(|u| pipeline.stages[u].name.as_str())
            .collect();
        let arrow = if ups.is_empty() {
            String::new()
        } else {
            format!("  <- {}", ups.join(", "))
        };
        let marker = if depth == 0 { "●" } else { "└▶" };
        let pad = (width
            + 2 * plan
                .order()
                .iter()
                .map(|&j| plan.depth(j))
                .max()
                .unwrap_or(0))
        .saturating_sub(s.name.len() + indent.len());
        let state = st(status, i).map(|x| {
            let first = x
                .reasons
                .first()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let more = if x.reasons.len() > 1 {
                format!(" (+{} more)", x.reasons.len() - 1)
            } else {
                String::new()
            };
            format!("  [{}{first}{more}]", x.state)
        });
        let _ = writeln!(
            out,
            "{indent}{marker} {}{}{}{arrow}",
            s.name,
            " ".repeat(pad),
            state.unwrap_or_default()
        );
    }
    out
}

fn esc_dot(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(plan: &Plan<Built>, pipeline: &Pipeline, status: &[NodeStatus]) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];\n",
        esc_dot(&pipeline.name)
    );
    for &i in plan.order() {
        let s = &pipeline.stages[i];
        let (fill, line) = st(status, i).map_or(("#ffffff", "#444444"), |x| color(&x.state));
        let label = match st(status, i) {
            Some(x) => format!("{}\\n{} ({})", esc_dot(&s.name), x.state, esc_dot(&s.kind)),
            None => format!("{}\\n({})", esc_dot(&s.name), esc_dot(&s.kind)),
        };
        let tooltip = st(status, i)
            .map(|x| x.reasons.join("; "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{label}\", fillcolor=\"{fill}\", color=\"{line}\", tooltip=\"{}\"];",
            esc_dot(&s.name),
            esc_dot(&tooltip)
        );
    }
    for &i in plan.order() {
        for d in plan.downstream(i) {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                esc_dot(&pipeline.stages[i].name),
                esc_dot(&pipeline.stages[d].name)
            );
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid_id(i: usize) -> String {
    format!("s{i}")
}

fn mermaid(plan: &Plan<Built>, pipeline: &Pipeline, status: &[NodeStatus]) -> String {
    let mut out = String::from("flowchart LR\n");
    for &i in plan.order() {
        let s = &pipeline.stages[i];
        let label = s.name.replace('"', "'");
        let class = st(status, i)
            .map(|x| format!(":::{}", x.state))
            .unwrap_or_default();
        let _ = writeln!(out, "  {}[\"{label}\"]{class}", mermaid_id(i));
    }
    for &i in plan.order() {
        for d in plan.downstream(i) {
            let _ = writeln!(out, "  {} --> {}", mermaid_id(i), mermaid_id(d));
        }
    }
    for state in ["fresh", "stale", "never_run"] {
        let (fill, line) = color(state);
        let _ = writeln!(out, "  classDef {state} fill:{fill},stroke:{line}");
    }
    out
}

fn esc_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const NODE_W: usize = 180;
const NODE_H: usize = 48;
const GAP_X: usize = 70;
const GAP_Y: usize = 26;

fn html(plan: &Plan<Built>, pipeline: &Pipeline, status: &[NodeStatus]) -> String {
    // Layered layout: column = depth, row = order within the column.
    let n = pipeline.stages.len();
    let mut col = vec![0usize; n];
    let mut row = vec![0usize; n];
    let mut per_col: Vec<usize> = Vec::new();
    for &i in plan.order() {
        let d = plan.depth(i);
        if per_col.len() <= d {
            per_col.resize(d + 1, 0);
        }
        col[i] = d;
        row[i] = per_col[d];
        per_col[d] += 1;
    }
    let xy = |i: usize| {
        (
            20 + col[i] * (NODE_W + GAP_X),
            20 + row[i] * (NODE_H + GAP_Y),
        )
    };
    let width = 40 + per_col.len().max(1) * (NODE_W + GAP_X);
    let height = 40 + per_col.iter().copied().max().unwrap_or(1) * (NODE_H + GAP_Y);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555\"/></marker></defs>\n"
    );
    for &i in plan.order() {
        for d in plan.downstream(i) {
            let (x1, y1) = xy(i);
            let (x2, y2) = xy(d);
            let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2);
            let mid = usize::midpoint(sx, ex);
            let _ = writeln!(
                svg,
                "<path class=\"edge\" d=\"M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}\" marker-end=\"url(#arrow)\"/>"
            );
        }
    }
    let mut rows = String::new();
    for &i in plan.order() {
        let s = &pipeline.stages[i];
        let state = st(status, i).map_or("", |x| x.state.as_str());
        let reasons = st(status, i).map(|x| x.reasons.clone()).unwrap_or_default();
        let (fill, line) = color(state);
        let (x, y) = xy(i);
        let title = if reasons.is_empty() {
            state.to_owned()
        } else {
            format!("{state}: {}", reasons.join("; "))
        };
        let _ = writeln!(
            svg,
            "<g class=\"node {state}\" data-stage=\"{name}\" onclick=\"show('{id}')\"><title>{title}</title><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"8\" fill=\"{fill}\" stroke=\"{line}\" stroke-width=\"2\"/><text x=\"{tx}\" y=\"{ty1}\" class=\"name\">{name}</text><text x=\"{tx}\" y=\"{ty2}\" class=\"sub\">{kind} · {state}</text></g>",
            name = esc_html(&s.name),
            id = mermaid_id(i),
            title = esc_html(&title),
            kind = esc_html(&s.kind),
            tx = x + NODE_W / 2,
            ty1 = y + 20,
            ty2 = y + 38,
        );
        let list: String = if reasons.is_empty() {
            "<li class=\"none\">up to date</li>".to_owned()
        } else {
            reasons
                .iter()
                .map(|r| format!("<li>{}</li>", esc_html(r)))
                .collect()
        };
        let _ = writeln!(
            rows,
            "<tr id=\"{id}\" class=\"{state}\"><td><span class=\"dot\" style=\"background:{fill};border-color:{line}\"></span>{name}</td><td>{kind}</td><td>{state}</td><td><ul>{list}</ul></td><td>{desc}</td></tr>",
            id = mermaid_id(i),
            name = esc_html(&s.name),
            kind = esc_html(&s.kind),
            desc = esc_html(s.description.as_deref().unwrap_or("")),
        );
    }
    svg.push_str("</svg>");
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · brspeech graph</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }}
.legend span {{ display: inline-block; margin-right: 16px; }}
.dot {{ display: inline-block; width: 12px; height: 12px; border-radius: 3px; border: 2px solid; margin-right: 6px; vertical-align: middle; }}
svg {{ border: 1px solid #ddd; border-radius: 8px; background: #fafafa; max-width: 100%; }}
.edge {{ fill: none; stroke: #555; stroke-width: 1.5; }}
.node {{ cursor: pointer; }}
.node:hover rect {{ stroke-width: 3; }}
.name {{ font-weight: 600; font-size: 14px; text-anchor: middle; }}
.sub {{ font-size: 11px; fill: #555; text-anchor: middle; }}
table {{ border-collapse: collapse; margin-top: 20px; width: 100%; }}
td, th {{ border-bottom: 1px solid #e5e5e5; padding: 6px 10px; text-align: left; vertical-align: top; }}
td:first-child {{ white-space: nowrap; }}
tr.selected {{ outline: 2px solid #3563e9; }}
ul {{ margin: 0; padding-left: 18px; }} li.none {{ list-style: none; color: #777; }}
</style></head><body>
<h1>pipeline <code>{title}</code></h1>
<p class="legend"><span><span class="dot" style="background:#c7eed4;border-color:#2d7a46"></span>fresh</span><span><span class="dot" style="background:#ffe0b3;border-color:#b86e00"></span>stale</span><span><span class="dot" style="background:#e4e4e7;border-color:#6b6b75"></span>never_run</span> Hover a stage for its reasons; click it to jump to its row.</p>
{svg}
<table><thead><tr><th>stage</th><th>kind</th><th>state</th><th>why it will run</th><th>description</th></tr></thead><tbody>
{rows}</tbody></table>
<script>
function show(id) {{
  document.querySelectorAll('tr.selected').forEach(function (r) {{ r.classList.remove('selected'); }});
  var row = document.getElementById(id);
  if (row) {{ row.classList.add('selected'); row.scrollIntoView({{behavior: 'smooth', block: 'center'}}); }}
}}
</script>
</body></html>
"#,
        title = esc_html(&pipeline.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn setup() -> (Pipeline, Plan<Built>, Vec<NodeStatus>) {
        let text = "name: g\nstages:\n  a: {kind: command, cmd: x}\n  b: {kind: command, cmd: x, needs: [a]}\n  c: {kind: command, cmd: x, needs: [a, b]}\n";
        let p = crate::spec::load_text(Path::new("/w/p.yaml"), "p.yaml", text.to_owned())
            .unwrap()
            .pipeline;
        let plan = Plan::new(&p).unwrap();
        let status = vec![
            NodeStatus {
                state: "fresh".into(),
                reasons: vec![],
            },
            NodeStatus {
                state: "stale".into(),
                reasons: vec!["params.n: 1 -> 2".into(), "cmd changed".into()],
            },
            NodeStatus {
                state: "never_run".into(),
                reasons: vec!["never run".into()],
            },
        ];
        (p, plan, status)
    }

    #[test]
    fn ascii_shows_layers_status_and_reasons() {
        let (p, plan, status) = setup();
        insta::assert_snapshot!(render(&plan, &p, &status, Format::Ascii));
    }

    #[test]
    fn dot_and_mermaid() {
        let (p, plan, status) = setup();
        insta::assert_snapshot!(render(&plan, &p, &status, Format::Dot));
        insta::assert_snapshot!(render(&plan, &p, &status, Format::Mermaid));
    }

    #[test]
    fn html_is_self_contained_and_carries_reasons() {
        let (p, plan, status) = setup();
        let html = render(&plan, &p, &status, Format::Html);
        assert!(
            !html.contains("http://")
                || html
                    .matches("http://")
                    .all(|_| html.contains("xmlns=\"http://www.w3.org/2000/svg\""))
        );
        assert!(!html.contains("<script src"));
        assert!(html.contains("<title>stale: params.n: 1 -&gt; 2; cmd changed</title>"));
        assert!(html.contains("class=\"node never_run\""));
        assert_eq!(html.matches("class=\"edge\"").count(), 3);
    }
}
