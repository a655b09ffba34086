//! `${vars.x}` substitution. A string that is exactly one reference takes the variable's value
//! with its type (`lr: ${vars.lr}` stays a number); references inside longer strings are replaced
//! by the scalar's text. `$${` writes a literal `${`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Issue, did_you_mean, positions};

/// Substitutes every reference in `value` (located at YAML path `path`), collecting problems.
pub(crate) fn substitute(
    value: &mut Value,
    path: &str,
    vars: &BTreeMap<String, Value>,
    issues: &mut Vec<Issue>,
) {
    match value {
        Value::String(s) => {
            if let Some(new) = substitute_str(s, path, vars, issues) {
                *value = new;
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                substitute(v, &positions::item(path, i), vars, issues);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                substitute(v, &positions::child(path, k), vars, issues);
            }
        }
        _ => {}
    }
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn pieces<'a>(s: &'a str) -> Result<Vec<Piece<'a>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push(Piece::Text(&rest[..i - 1]));
            out.push(Piece::Text("${"));
            rest = &rest[i + 2..];
            continue;
        }
        let after = &rest[i + 2..];
        if !after.trim_start().starts_with("vars.") {
            // Not ours (e.g. the shell's `${HOME}` in a `cmd`): kept as written.
            out.push(Piece::Text(&rest[..i + 2]));
            rest = after;
            continue;
        }
        out.push(Piece::Text(&rest[..i]));
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed `${{` in `{s}`"));
        };
        out.push(Piece::Var(after[..end].trim()));
        rest = &after[end + 1..];
    }
    out.push(Piece::Text(rest));
    out.retain(|p| !matches!(p, Piece::Text("")));
    Ok(out)
}

fn lookup<'v>(reference: &str, vars: &'v BTreeMap<String, Value>) -> Result<&'v Value, String> {
    let name = reference.strip_prefix("vars.").unwrap_or(reference);
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    let mut current = vars.get(first).ok_or_else(|| {
        let hint = did_you_mean(first, vars.keys().map(String::as_str))
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        format!("unknown variable `{first}`{hint}")
    })?;
    for part in parts {
        current = current
            .get(part)
            .ok_or_else(|| format!("variable `{name}` does not exist: no key `{part}`"))?;
    }
    Ok(current)
}

fn substitute_str(
    s: &str,
    path: &str,
    vars: &BTreeMap<String, Value>,
    issues: &mut Vec<Issue>,
) -> Option<Value> {
    if !s.contains("${") {
        return None;
    }
    let pieces = match pieces(s) {
        Ok(p) => p,
        Err(msg) => {
            issues.push(Issue::new(path, msg));
            return None;
        }
    };
    if let [Piece::Var(reference)] = pieces.as_slice() {
        return match lookup(reference, vars) {
            Ok(v) => Some(v.clone()),
            Err(msg) => {
                issues.push(Issue::new(path, msg));
                None
            }
        };
    }
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(reference) => match lookup(reference, vars) {
                Ok(Value::String(v)) => out.push_str(v),
                Ok(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
                Ok(_) => {
                    issues.push(Issue::new(
                        path,
                        format!("variable `{reference}` is not a scalar and cannot be placed inside a string"),
                    ));
                    return None;
                }
                Err(msg) => {
                    issues.push(Issue::new(path, msg));
                    return None;
                }
            },
        }
    }
    Some(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> BTreeMap<String, Value> {
        [
            ("lr".to_owned(), json!(5e-6)),
            ("dir".to_owned(), json!("data")),
            ("m".to_owned(), json!({"k": 3})),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn whole_references_keep_their_type_and_embedded_ones_become_text() {
        let mut v =
            json!({"lr": "${vars.lr}", "p": "${vars.dir}/x-${ vars.m.k }", "lit": "$${vars.lr}"});
        let mut issues = Vec::new();
        substitute(&mut v, "stages.a.params", &vars(), &mut issues);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(v, json!({"lr": 5e-6, "p": "data/x-3", "lit": "${vars.lr}"}));
    }

    #[test]
    fn unknown_variables_are_reported_at_their_path() {
        let mut v =
            json!({"a": "${vars.dri}", "b": "x ${vars.m}", "c": "${HOME}", "d": "${vars.lr"});
        let mut issues = Vec::new();
        substitute(&mut v, "s", &vars(), &mut issues);
        let got: Vec<(String, String)> = issues.into_iter().map(|i| (i.path, i.message)).collect();
        assert_eq!(
            got[0],
            (
                "s.a".into(),
                "unknown variable `dri` (did you mean `dir`?)".into()
            )
        );
        assert!(got[1].1.contains("not a scalar"));
        assert!(got[2].1.contains("unclosed"));
        assert_eq!(v["c"], json!("${HOME}"), "shell references are left alone");
    }
}
