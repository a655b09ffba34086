//! `Test`: a temporary workspace (with `brspeech.toml`, so it is the root), files written into
//! it, and the real binary run inside it.

#![allow(dead_code, reason = "each test module uses a different part")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_brspeech");

pub struct Test {
    dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// `{stage: outcome}` from a `run --json` summary.
    pub fn outcomes(&self) -> std::collections::BTreeMap<String, String> {
        self.json()["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// `{stage: (state, reasons)}` from `status --json`.
    pub fn states(&self) -> std::collections::BTreeMap<String, (String, Vec<String>)> {
        self.json()["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let reasons = s["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect();
                (
                    s["name"].as_str().unwrap().to_owned(),
                    (s["state"].as_str().unwrap().to_owned(), reasons),
                )
            })
            .collect()
    }
}

impl Test {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("brspeech-it-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("brspeech.toml"), "").unwrap();
        Test { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn pipeline(&self, yaml: &str) -> &Self {
        self.write("brspeech.yaml", yaml)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    pub fn remove(&self, rel: &str) {
        let p = self.path(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap()
        } else {
            std::fs::remove_file(p).unwrap()
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.root())
            .env_remove("BRSPEECH_CACHE")
            .env_remove("CUDA_VISIBLE_DEVICES");
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let o = self.command(args).output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits until `rel` exists (panics after `secs`).
    pub fn wait_for(&self, rel: &str, secs: u64) {
        let t = Instant::now();
        while !self.exists(rel) {
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "{rel} did not appear within {secs}s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Entries committed in the workspace cache.
    pub fn entries(&self) -> usize {
        std::fs::read_dir(self.path("cache/entries"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

pub fn finish(child: Child) -> Out {
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// SIGKILL to a process.
pub fn kill9(child: &mut Child) {
    child.kill().unwrap();
    let _ = child.wait();
}
