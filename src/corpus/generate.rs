//! Generated sources: texts file parsing, command rendering with shell quoting, a stable key
//! per (text, command), and running one command into a given output path.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use super::CorpusError;

/// Utterances of a texts file: one per line, trimmed; empty lines and lines starting with `#`
/// are skipped; a repeated line is kept once (first position).
pub fn parse_texts(content: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| seen.insert(*l))
        .map(str::to_string)
        .collect()
}

/// Reads and parses a texts file.
///
/// # Errors
/// `Io` when the file cannot be read (or is not UTF-8).
pub fn read_texts(path: &Path) -> Result<Vec<String>, CorpusError> {
    let content = std::fs::read_to_string(path).map_err(|source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_texts(&content))
}

/// Stable key of one generated file: blake3 over the command template and the text (hex).
/// The output path is not part of it, so the same (text, command) is generated once wherever
/// its output goes.
pub fn generate_key(cmd_template: &str, text: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"brspeech-generate-v1\0");
    h.update(&(cmd_template.len() as u64).to_le_bytes());
    h.update(cmd_template.as_bytes());
    h.update(&(text.len() as u64).to_le_bytes());
    h.update(text.as_bytes());
    h.finalize().to_hex().to_string()
}

/// File name of a generated item inside its source (`<first 32 hex digits of key>.<ext>`);
/// used as the item's relative path.
pub fn generated_name(key: &str, ext: &str) -> String {
    format!("{}.{ext}", &key[..key.len().min(32)])
}

/// Renders `cmd_template` for `sh -c`: every `{text}` and `{out}` is replaced by the
/// shell-quoted text and output path. Write the placeholders bare (`-w {out} {text}`), not
/// inside quotes.
///
/// # Errors
/// `Quote` when a value holds a NUL byte, which no shell argument can carry.
pub fn render_command(cmd_template: &str, text: &str, out: &Path) -> Result<String, CorpusError> {
    let quote = |value: &str, what: &str| {
        shlex::try_quote(value)
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| CorpusError::Quote {
                what: what.to_string(),
                value: value.escape_debug().to_string(),
            })
    };
    let text_q = quote(text, "text")?;
    let out_q = quote(&out.to_string_lossy(), "output path")?;
    let mut rendered = String::with_capacity(cmd_template.len() + text_q.len() + out_q.len());
    let mut rest = cmd_template;
    while let Some(i) = rest.find('{') {
        rendered.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{text}") {
            rendered.push_str(&text_q);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{out}") {
            rendered.push_str(&out_q);
            rest = after;
        } else {
            rendered.push('{');
            rest = &tail[1..];
        }
    }
    rendered.push_str(rest);
    Ok(rendered)
}

/// Runs `cmd_template` for `text` with `sh -c` in the current folder, writing to `out`, and
/// checks that it succeeded and wrote a non-empty file.
///
/// # Errors
/// As [`run_generate_in`].
pub fn run_generate(cmd_template: &str, text: &str, out: &Path) -> Result<(), CorpusError> {
    run_generate_in(None, cmd_template, text, out)
}

/// Runs `cmd_template` for `text` with `sh -c` in `dir` (the pipeline's folder, so that
/// relative paths in the command resolve as they do for `command` stages; `None`: the current
/// folder), writing to `out`, and checks that it succeeded and wrote a non-empty
/// file.
///
/// # Errors
/// `Generate` with the exit status and the end of stderr when the command fails or cannot
/// start; `GenerateNoOutput` when it succeeds without writing `out`; `Quote`.
pub fn run_generate_in(
    dir: Option<&Path>,
    cmd_template: &str,
    text: &str,
    out: &Path,
) -> Result<(), CorpusError> {
    // The command runs elsewhere: a relative output path must not move with it.
    let out = &std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let rendered = render_command(cmd_template, text, out)?;
    let fail = |status: String, stderr: String| CorpusError::Generate {
        cmd: rendered.clone(),
        status,
        stderr,
    };
    let mut command = Command::new("sh");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .arg("-c")
        .arg(&rendered)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail("did not start".into(), e.to_string()))?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child
        .wait()
        .map_err(|e| fail("could not be waited for".into(), e.to_string()))?;
    if !status.success() {
        let tail: String = {
            let chars: Vec<char> = stderr.trim().chars().collect();
            chars[chars.len().saturating_sub(2000)..].iter().collect()
        };
        let status = status.code().map_or_else(
            || "was killed by a signal".to_string(),
            |c| format!("exited with status {c}"),
        );
        return Err(fail(status, tail));
    }
    match std::fs::metadata(out) {
        Ok(m) if m.len() > 0 => Ok(()),
        _ => Err(CorpusError::GenerateNoOutput {
            cmd: rendered,
            out: out.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_skip_blanks_comments_and_repeats() {
        let texts = parse_texts("# header\n olá mundo \n\nbom dia\nolá mundo\r\n  # note\nfim");
        assert_eq!(texts, vec!["olá mundo", "bom dia", "fim"]);
    }

    #[test]
    fn keys_depend_on_text_and_command_only() {
        let k = generate_key("espeak-ng -w {out} {text}", "olá");
        assert_eq!(k.len(), 64);
        assert_eq!(k, generate_key("espeak-ng -w {out} {text}", "olá"));
        assert_ne!(k, generate_key("espeak-ng -w {out} {text}", "ola"));
        assert_ne!(k, generate_key("espeak-ng -v pt-br -w {out} {text}", "olá"));
        // Length-prefixed: moving text between the two parts changes the key.
        assert_ne!(generate_key("ab", "c"), generate_key("a", "bc"));
        assert_eq!(generated_name(&k, "wav"), format!("{}.wav", &k[..32]));
    }

    #[test]
    fn rendering_quotes_hostile_text() {
        let out = Path::new("/tmp/out dir/x.wav");
        let cmd = render_command(
            "tts --out {out} --text {text} {other}",
            "it's $(rm -rf /) `x`",
            out,
        )
        .unwrap();
        assert_eq!(
            shlex::split(&cmd).unwrap(),
            vec![
                "tts",
                "--out",
                "/tmp/out dir/x.wav",
                "--text",
                "it's $(rm -rf /) `x`",
                "{other}"
            ]
        );
        assert!(matches!(
            render_command("t {text} {out}", "a\0b", out),
            Err(CorpusError::Quote { .. })
        ));
    }

    #[test]
    fn running_writes_the_output_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o u t.txt");
        let text = "olá; echo injected > /dev/stderr; 'quoted' \"double\" $HOME";
        run_generate("printf '%s' {text} > {out}", text, &out).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), text);

        let err = run_generate("echo boom >&2; exit 3; : {text} {out}", "x", &out).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CorpusError::Generate { .. }));
        assert!(
            msg.contains("exited with status 3") && msg.contains("boom"),
            "{msg}"
        );

        // Relative paths in the command resolve against the given folder.
        std::fs::write(dir.path().join("template.txt"), "tone").unwrap();
        let copied = dir.path().join("copied.txt");
        run_generate_in(
            Some(dir.path()),
            "cp template.txt {out} # {text}",
            "x",
            &copied,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&copied).unwrap(), "tone");

        let missing = dir.path().join("never.wav");
        let err = run_generate("true {text} {out}", "x", &missing).unwrap_err();
        assert!(matches!(err, CorpusError::GenerateNoOutput { .. }), "{err}");
    }
}
