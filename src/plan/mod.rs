//! The stage DAG over petgraph: built from a pipeline (explicit `needs` plus data edges where a
//! stage's dep lies inside another stage's out), checked (unknown/self dependencies, cycles
//! printed whole, two stages writing one out), then sealed; only a sealed plan can be run.
//! Target selection and the ascii / dot / mermaid / html renderings live here too.

pub mod render;

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::path::{Component, Path, PathBuf};

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::spec::{Issue, Pipeline, did_you_mean, positions};

/// A plan still being checked.
#[derive(Debug)]
pub enum Building {}
/// A checked, acyclic plan.
#[derive(Debug)]
pub enum Built {}

/// Why one stage depends on another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    /// Listed in `needs` (index into the list).
    Needs(usize),
    /// A dep (index into `deps`) lies inside an out of the upstream stage.
    Data(usize),
}

/// The DAG of a pipeline's stages. Node weights are indices into `pipeline.stages`.
#[derive(Debug)]
pub struct Plan<S = Built> {
    graph: DiGraph<usize, Edge>,
    nodes: Vec<NodeIndex>,
    names: HashMap<String, usize>,
    order: Vec<usize>,
    _state: PhantomData<S>,
}

/// Errors selecting stages.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A target or `--force` names no stage.
    #[error("unknown stage `{name}`{}", help.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    UnknownStage {
        /// The name given.
        name: String,
        /// A did-you-mean.
        help: Option<String>,
    },
}

/// A written path made comparable: relative to the pipeline folder, no `.`, no trailing `/`.
#[must_use]
pub fn normalize(dir: &Path, written: &str) -> PathBuf {
    let p = Path::new(written);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl Plan<Building> {
    /// Builds the graph, reporting unknown stages in `needs` (with a did-you-mean), stages
    /// that depend on themselves, and outs written by two stages.
    #[must_use]
    pub fn from_pipeline(pipeline: &Pipeline) -> (Self, Vec<Issue>) {
        let mut issues = Vec::new();
        let mut graph = DiGraph::new();
        let mut names = HashMap::new();
        let nodes: Vec<NodeIndex> = pipeline
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                names.insert(s.name.clone(), i);
                graph.add_node(i)
            })
            .collect();
        let stage_names: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
        for (i, s) in pipeline.stages.iter().enumerate() {
            let needs_path = positions::child(&s.path(), "needs");
            for (j, need) in s.needs.iter().enumerate() {
                let p = positions::item(&needs_path, j);
                if *need == s.name {
                    issues.push(Issue::new(
                        p,
                        format!("stage `{}` depends on itself", s.name),
                    ));
                    continue;
                }
                match names.get(need) {
                    Some(&up) => {
                        graph.update_edge(nodes[up], nodes[i], Edge::Needs(j));
                    }
                    None => issues.push(
                        Issue::new(
                            p,
                            format!("stage `{}` depends on unknown stage `{need}`", s.name),
                        )
                        .with_help_opt(did_you_mean(need, stage_names.iter().copied())),
                    ),
                }
            }
        }
        // Outs: no two stages may write the same path (or one inside another's).
        let outs: Vec<(usize, usize, PathBuf)> = pipeline
            .stages
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.outs
                    .iter()
                    .enumerate()
                    .map(move |(j, o)| (i, j, normalize(&pipeline.dir, o)))
            })
            .collect();
        for (a, (i, j, p)) in outs.iter().enumerate() {
            for (k, l, q) in &outs[..a] {
                if i != k && (p.starts_with(q) || q.starts_with(p)) {
                    let (si, sk) = (&pipeline.stages[*i], &pipeline.stages[*k]);
                    issues.push(
                        Issue::new(
                            positions::item(&positions::child(&si.path(), "outs"), *j),
                            format!(
                                "out `{}` of stage `{}` is also written by stage `{}` (`{}`)",
                                si.outs[*j], si.name, sk.name, sk.outs[*l]
                            ),
                        )
                        .with_note(
                            positions::item(&positions::child(&sk.path(), "outs"), *l),
                            "written here too",
                        ),
                    );
                }
            }
        }
        // Data edges: a dep inside (or containing) another stage's out.
        for (i, s) in pipeline.stages.iter().enumerate() {
            for (j, dep) in s.deps.iter().enumerate() {
                let d = normalize(&pipeline.dir, dep);
                for (k, _, o) in &outs {
                    if d.starts_with(o) || o.starts_with(&d) {
                        if *k == i {
                            issues.push(Issue::new(
                                positions::item(&positions::child(&s.path(), "deps"), j),
                                format!("stage `{}` depends on itself: dep `{dep}` is one of its own outs", s.name),
                            ));
                        } else if graph.find_edge(nodes[*k], nodes[i]).is_none() {
                            graph.add_edge(nodes[*k], nodes[i], Edge::Data(j));
                        }
                    }
                }
            }
        }
        (
            Plan {
                graph,
                nodes,
                names,
                order: Vec::new(),
                _state: PhantomData,
            },
            issues,
        )
    }

    /// Checks for cycles (each reported once, whole: `a -> b -> a`) and seals the plan.
    ///
    /// # Errors
    /// One issue per cycle, located at the `needs` (or `deps`) entry that closes it.
    pub fn seal(self, pipeline: &Pipeline) -> Result<Plan<Built>, Vec<Issue>> {
        let mut issues = Vec::new();
        for scc in tarjan_scc(&self.graph) {
            if scc.len() < 2 {
                continue;
            }
            let members: BTreeSet<usize> = scc.iter().map(|n| self.graph[*n]).collect();
            let start = *members.iter().next().unwrap_or(&0);
            let cycle = self.cycle_from(start, &members);
            let names: Vec<&str> = cycle
                .iter()
                .map(|&i| pipeline.stages[i].name.as_str())
                .collect();
            // Locate at the edge entering `start` from the last stage of the cycle.
            let last = cycle[cycle.len() - 2];
            let path = self
                .graph
                .find_edge(self.nodes[last], self.nodes[start])
                .map(|e| {
                    let s = &pipeline.stages[start];
                    match self.graph[e] {
                        Edge::Needs(j) => positions::item(&positions::child(&s.path(), "needs"), j),
                        Edge::Data(j) => positions::item(&positions::child(&s.path(), "deps"), j),
                    }
                })
                .unwrap_or_else(|| pipeline.stages[start].path());
            issues.push(Issue::new(
                path,
                format!("dependency cycle: {}", names.join(" -> ")),
            ));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let order = toposort(&self.graph, None).map_err(|_| Vec::<Issue>::new())?;
        // Stable order: topological, ties broken by file order.
        let mut order: Vec<usize> = order.into_iter().map(|n| self.graph[n]).collect();
        let mut depth = vec![0usize; self.nodes.len()];
        for &i in &order {
            for e in self
                .graph
                .edges_directed(self.nodes[i], petgraph::Direction::Incoming)
            {
                depth[i] = depth[i].max(depth[self.graph[e.source()]] + 1);
            }
        }
        order.sort_by_key(|&i| (depth[i], i));
        Ok(Plan {
            graph: self.graph,
            nodes: self.nodes,
            names: self.names,
            order,
            _state: PhantomData,
        })
    }

    /// The shortest cycle through `start` within `members`, as stage indices ending with `start`.
    fn cycle_from(&self, start: usize, members: &BTreeSet<usize>) -> Vec<usize> {
        let mut prev: HashMap<usize, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(cur) = queue.pop_front() {
            for next in self.graph.neighbors(self.nodes[cur]).map(|n| self.graph[n]) {
                if !members.contains(&next) {
                    continue;
                }
                if next == start {
                    let mut path = vec![start];
                    let mut at = cur;
                    while at != start {
                        path.push(at);
                        at = prev[&at];
                    }
                    path.push(start);
                    path.reverse();
                    return path;
                }
                if let std::collections::hash_map::Entry::Vacant(v) = prev.entry(next) {
                    v.insert(cur);
                    queue.push_back(next);
                }
            }
        }
        vec![start, start]
    }
}

impl Plan<Built> {
    /// Builds, checks and seals the plan of `pipeline`.
    ///
    /// # Errors
    /// Every problem found.
    pub fn new(pipeline: &Pipeline) -> Result<Self, Vec<Issue>> {
        let (plan, mut issues) = Plan::from_pipeline(pipeline);
        match plan.seal(pipeline) {
            Ok(p) if issues.is_empty() => Ok(p),
            Ok(_) => Err(issues),
            Err(more) => {
                issues.extend(more);
                Err(issues)
            }
        }
    }

    /// Stage indices in run order (topological; by depth, then file order).
    #[must_use]
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Index of the stage named `name`.
    #[must_use]
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    /// Direct upstream stages of `stage`, sorted.
    #[must_use]
    pub fn upstream(&self, stage: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(self.nodes[stage], petgraph::Direction::Incoming)
            .map(|n| self.graph[n])
            .collect();
        v.sort_unstable();
        v
    }

    /// Direct downstream stages of `stage`, sorted.
    #[must_use]
    pub fn downstream(&self, stage: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(self.nodes[stage], petgraph::Direction::Outgoing)
            .map(|n| self.graph[n])
            .collect();
        v.sort_unstable();
        v
    }

    /// Length of the longest path from a root to `stage`.
    #[must_use]
    pub fn depth(&self, stage: usize) -> usize {
        let mut depth = vec![0usize; self.nodes.len()];
        for &i in &self.order {
            for u in self.upstream(i) {
                depth[i] = depth[i].max(depth[u] + 1);
            }
        }
        depth[stage]
    }

    /// The targets and everything they need, in run order; all stages when `targets` is empty.
    ///
    /// # Errors
    /// [`PlanError::UnknownStage`] for a name that is not a stage.
    pub fn select(&self, pipeline: &Pipeline, targets: &[String]) -> Result<Vec<usize>, PlanError> {
        if targets.is_empty() {
            return Ok(self.order.clone());
        }
        let mut keep = vec![false; self.nodes.len()];
        let mut stack = Vec::new();
        for t in targets {
            let i = self.resolve(pipeline, t)?;
            stack.push(i);
        }
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut keep[i], true) {
                stack.extend(self.upstream(i));
            }
        }
        Ok(self.order.iter().copied().filter(|&i| keep[i]).collect())
    }

    /// The index of stage `name`, or an error with a did-you-mean.
    ///
    /// # Errors
    /// [`PlanError::UnknownStage`].
    pub fn resolve(&self, pipeline: &Pipeline, name: &str) -> Result<usize, PlanError> {
        self.index(name).ok_or_else(|| PlanError::UnknownStage {
            name: name.to_owned(),
            help: did_you_mean(name, pipeline.stages.iter().map(|s| s.name.as_str())),
        })
    }

    /// Every stage downstream of `stage` (transitively).
    #[must_use]
    pub fn descendants(&self, stage: usize) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = self.downstream(stage);
        let mut out = Vec::new();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                out.push(i);
                stack.extend(self.downstream(i));
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn pipeline(text: &str) -> Pipeline {
        let l = crate::spec::load_text(Path::new("/w/p.yaml"), "p.yaml", text.to_owned()).unwrap();
        assert!(l.issues.is_empty(), "{:?}", l.issues);
        l.pipeline
    }

    fn messages(issues: &[Issue]) -> Vec<String> {
        issues
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect()
    }

    #[test]
    fn order_is_topological_and_data_edges_are_inferred() {
        let p = pipeline(
            "name: t\nstages:\n  report: {kind: command, cmd: x, deps: [out/c.txt]}\n  a: {kind: command, cmd: x, outs: [out/a]}\n  c: {kind: command, cmd: x, needs: [a], outs: [out/c.txt]}\n",
        );
        let plan = Plan::new(&p).unwrap();
        let names: Vec<&str> = plan
            .order()
            .iter()
            .map(|&i| p.stages[i].name.as_str())
            .collect();
        assert_eq!(names, ["a", "c", "report"]);
        assert_eq!(plan.upstream(0), [2]);
        let sel = plan.select(&p, &["c".to_owned()]).unwrap();
        assert_eq!(sel, [1, 2]);
        assert_eq!(plan.descendants(1), [0, 2]);
        let err = plan.select(&p, &["reprot".to_owned()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown stage `reprot` (did you mean `report`?)"
        );
    }

    #[test]
    fn graph_errors_are_all_reported() {
        let p = pipeline(concat!(
            "name: t\nstages:\n",
            "  a: {kind: command, cmd: x, needs: [c], outs: [o/x]}\n",
            "  b: {kind: command, cmd: x, needs: [a, b, prepare], outs: [o/x/y]}\n",
            "  c: {kind: command, cmd: x, needs: [b]}\n",
            "  prepare_data: {kind: command, cmd: x, deps: [o/self], outs: [o/self]}\n",
        ));
        let issues = Plan::new(&p).unwrap_err();
        let got = messages(&issues);
        assert_eq!(
            got,
            [
                "stages.b.needs[1]: stage `b` depends on itself",
                "stages.b.needs[2]: stage `b` depends on unknown stage `prepare`",
                "stages.b.outs[0]: out `o/x/y` of stage `b` is also written by stage `a` (`o/x`)",
                "stages.prepare_data.deps[0]: stage `prepare_data` depends on itself: dep `o/self` is one of its own outs",
                "stages.a.needs[0]: dependency cycle: a -> b -> c -> a",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn normalize_makes_paths_comparable() {
        assert_eq!(normalize(Path::new("/w"), "./a/b/"), Path::new("/w/a/b"));
        assert_eq!(normalize(Path::new("/w"), "a/../c"), Path::new("/w/c"));
    }
}
