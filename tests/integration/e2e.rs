//! The product end to end through the real CLI, on the CPU: the shipped demo pipeline (fresh
//! run with metrics, plots and model; a cached rerun; a training param change; a new file; a new
//! source; `predict`; `graph`), a learning check on a separable synthetic corpus, `model import`
//! of a reference-style state dict and its errors, and a killed training that resumes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

use crate::common::{Out, Test, kill9};

/// Runs the CLI in `t` with one libtorch thread (test machines are shared; OpenMP threads that
/// spin-wait on busy cores make multi-threaded runs far slower there).
fn run(t: &Test, args: &[&str]) -> Out {
    let o = t
        .command(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dst = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

/// 16-bit mono WAV at 16 kHz: a tone (`tone: Some(hz)`) with a little noise, or white noise.
fn write_wav(path: &Path, seconds: f32, tone: Option<f32>, seed: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let n = (seconds * 16_000.0) as usize;
    for i in 0..n {
        let noise = rng.random::<f32>() * 2.0 - 1.0;
        let v = match tone {
            Some(hz) => {
                0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / 16_000.0).sin() + 0.02 * noise
            }
            None => 0.5 * noise,
        };
        w.write_sample((v * 32_767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// `{stage: (outcome, items_processed, items_reused)}` of a `run --json` summary.
fn items(out: &Out) -> std::collections::BTreeMap<String, (String, Option<u64>, Option<u64>)> {
    out.json()["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                (
                    s["outcome"].as_str().unwrap().to_owned(),
                    s["items_processed"].as_u64(),
                    s["items_reused"].as_u64(),
                ),
            )
        })
        .collect()
}

fn json_file(t: &Test, rel: &str) -> serde_json::Value {
    serde_json::from_str(&t.read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The demo pipeline, corpus and tiny SSL copied into a temporary workspace, with training
/// shortened to 2 epochs.
fn demo_workspace() -> Test {
    let t = Test::new();
    copy_dir(&repo().join("data/demo"), &t.path("data/demo"));
    copy_dir(&repo().join("models"), &t.path("models"));
    let yaml = std::fs::read_to_string(repo().join("pipelines/demo.yaml")).unwrap();
    let short = yaml.replacen("  epochs: 10\n", "  epochs: 2\n", 1);
    assert_ne!(short, yaml, "demo.yaml sets `epochs: 10` in `vars`");
    t.write("pipelines/demo.yaml", &short);
    t
}

const DEMO: &str = "pipelines/demo.yaml";
const STAGES: [&str; 6] = ["scan", "metadata", "chunk", "extract", "train", "evaluate"];

#[test]
fn demo_pipeline_end_to_end() {
    let t = demo_workspace();

    // A fresh run completes and writes metrics, plots and the model.
    let out = run(&t, &["run", DEMO, "--json"]).ok();
    let first = items(&out);
    for s in STAGES {
        assert_eq!(first[s].0, "ran", "{s}: {first:?}");
    }
    let clips = first["chunk"].1.unwrap();
    assert!(clips >= 150, "{first:?}");
    assert_eq!(first["extract"].1, Some(clips), "{first:?}");
    let ev = "outputs/demo/evaluate";
    for f in [
        "metrics.json",
        "scores.csv",
        "report.md",
        "report.html",
        "plots/det.svg",
        "plots/det.png",
        "plots/roc.svg",
        "plots/roc.png",
        "plots/histograms.svg",
        "plots/histograms.png",
        "plots/training.svg",
        "plots/training.png",
    ] {
        assert!(t.exists(&format!("{ev}/{f}")), "{ev}/{f} missing");
    }
    for f in [
        "model/config.json",
        "model/model.safetensors",
        "train_log.jsonl",
        "train_summary.json",
    ] {
        assert!(t.exists(&format!("outputs/demo/train/{f}")), "{f} missing");
    }
    let metrics = json_file(&t, &format!("{ev}/metrics.json"));
    let eer = metrics["eer"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&eer), "{metrics}");
    let per_source = metrics["per_source"].as_object().unwrap();
    assert!(!per_source.is_empty(), "{metrics}");
    assert!(
        per_source.keys().all(|k| k.starts_with("tts_")),
        "{metrics}"
    );
    let summary = json_file(&t, "outputs/demo/train/train_summary.json");
    assert_eq!(summary["epochs_run"], 2, "{summary}");
    let model = json_file(&t, "outputs/demo/train/model/config.json");
    assert_eq!(model["ssl"]["embedded"], false);
    assert_eq!(model["backend"]["ssl_dim"], 64);

    // A second run is entirely cached.
    let again = run(&t, &["run", DEMO, "--json"]).ok().outcomes();
    assert!(again.values().all(|o| o == "cached"), "{again:?}");

    // `graph` shows the DAG.
    let graph = run(&t, &["graph", DEMO]).ok().stdout;
    for s in STAGES {
        assert!(graph.contains(s), "{graph}");
    }
    let dot = run(&t, &["graph", DEMO, "--format", "dot"]).ok().stdout;
    for edge in [
        "\"scan\" -> \"metadata\"",
        "\"metadata\" -> \"chunk\"",
        "\"chunk\" -> \"extract\"",
        "\"extract\" -> \"train\"",
        "\"train\" -> \"evaluate\"",
        "\"extract\" -> \"evaluate\"",
    ] {
        assert!(dot.contains(edge), "{edge} missing:\n{dot}");
    }

    // Changing a training param reruns exactly train and evaluate.
    let yaml = t.read(DEMO);
    t.write(DEMO, &yaml.replacen("  lr: 1.0e-4\n", "  lr: 2.0e-4\n", 1));
    let st = run(&t, &["status", DEMO, "--json"]).ok().states();
    assert_eq!(st["train"].0, "stale", "{st:?}");
    assert!(
        st["train"].1.iter().any(|r| r.contains("params.lr")),
        "{st:?}"
    );
    let changed = run(&t, &["run", DEMO, "--json"]).ok().outcomes();
    for s in STAGES {
        let want = if s == "train" || s == "evaluate" {
            "ran"
        } else {
            "cached"
        };
        assert_eq!(changed[s], want, "{s}: {changed:?}");
    }

    // A new file in one source: chunk and extract process only that file; train and evaluate
    // rerun.
    write_wav(
        &t.path("data/demo/tts_espeak_klatt/klatt/added.wav"),
        2.0,
        Some(330.0),
        1,
    );
    let added = items(&run(&t, &["run", DEMO, "--json"]).ok());
    assert_eq!(added["chunk"].0, "ran", "{added:?}");
    assert_eq!(
        (added["chunk"].1, added["chunk"].2),
        (Some(1), Some(clips)),
        "{added:?}"
    );
    assert_eq!(
        (added["extract"].1, added["extract"].2),
        (Some(1), Some(clips)),
        "{added:?}"
    );
    for s in ["train", "evaluate"] {
        assert_eq!(added[s].0, "ran", "{s}: {added:?}");
    }
    let index = t.read("outputs/demo/extract/index.csv");
    assert!(index.contains("klatt/added.wav"), "{index}");

    // A new source directory plugs in with no code change.
    for (voice, n) in [("va", 4), ("vb", 4), ("vc", 4)] {
        for i in 0..n {
            write_wav(
                &t.path(&format!("data/extra/tts_extra/{voice}/{i}.wav")),
                1.5,
                None,
                100 + i,
            );
        }
    }
    let yaml = t.read(DEMO);
    let with_source = yaml.replacen(
        "stages:\n",
        "  - {name: tts_extra, label: spoof, root: ../data/extra/tts_extra, split: hash, speaker: {regex: \"${vars.speaker}\"}}\nstages:\n",
        1,
    );
    t.write(DEMO, &with_source);
    let plugged = items(&run(&t, &["run", DEMO, "--json"]).ok());
    assert_eq!(plugged["chunk"].1, Some(12), "{plugged:?}");
    assert_eq!(plugged["extract"].1, Some(12), "{plugged:?}");
    assert_eq!(plugged["evaluate"].0, "ran", "{plugged:?}");
    let index = t.read("outputs/demo/extract/index.csv");
    assert_eq!(index.matches(",tts_extra,spoof,").count(), 12, "{index}");

    // `predict` with the trained model scores a file (and gives an error row for a bad one).
    let file = "data/demo/real_asterisk/june";
    let some = std::fs::read_dir(t.path(file))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .min()
        .unwrap();
    let some = some
        .strip_prefix(t.root())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    t.write("not-audio.wav", "this is not audio");
    let p = run(
        &t,
        &[
            "predict",
            "--model",
            "outputs/demo/train/model",
            "--device",
            "cpu",
            &some,
            "not-audio.wav",
        ],
    );
    let p = p.code(4);
    let lines: Vec<&str> = p.stdout.lines().collect();
    assert_eq!(lines[0], "path,logit,score,error", "{}", p.stdout);
    let cols: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(cols[0], some);
    let logit: f64 = cols[1].parse().unwrap();
    let score: f64 = cols[2].parse().unwrap();
    assert!(logit.is_finite() && (score - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-9);
    assert!(lines[2].starts_with("not-audio.wav,,,"), "{}", p.stdout);
    let j = run(
        &t,
        &[
            "predict",
            "--model",
            "outputs/demo/train/model",
            "--json",
            &some,
        ],
    )
    .ok()
    .json();
    assert_eq!(j[0]["path"], some.as_str());
    assert!(
        (j[0]["logit"].as_f64().unwrap() - logit).abs() < 1e-4,
        "{j}"
    );
}

/// A corpus a detector must separate: bona fide clips are tones with a little noise, spoof
/// clips are white noise.
fn synthetic(t: &Test, per_class: u64) {
    for i in 0..per_class {
        // Twelve pitches, each a few times, so that every pitch of the test split is likely
        // seen in training (a split, not an extrapolation test).
        let hz = 150.0 + 97.0 * (i % 12) as f32;
        write_wav(
            &t.path(&format!("corpus/tones/s{}/{i}.wav", i % 6)),
            1.0,
            Some(hz),
            i,
        );
        write_wav(
            &t.path(&format!("corpus/noise/s{}/{i}.wav", i % 6)),
            1.0,
            None,
            1_000 + i,
        );
    }
}

fn synthetic_pipeline(epochs: usize, lr: f64) -> String {
    format!(
        r#"name: synth
sources:
  - {{name: tones, label: bonafide, root: corpus/tones, split: hash}}
  - {{name: noise, label: spoof, root: corpus/noise, split: hash}}
stages:
  scan: {{kind: scan_corpus}}
  metadata: {{kind: build_metadata, needs: [scan], params: {{seed: 3, ratios: [0.6, 0.2, 0.2]}}}}
  chunk: {{kind: chunk_audio, needs: [metadata], params: {{samples: 16000, buckets: 2}}}}
  extract: {{kind: extract_ssl, needs: [chunk], params: {{ssl: {ssl}, device: cpu, batch_size: 16}}}}
  train:
    kind: train_aasist
    needs: [extract]
    params: {{epochs: {epochs}, batch_size: 8, lr: {lr}, pos_weight: balanced, device: cpu, log_every: 2}}
  evaluate: {{kind: evaluate, needs: [train, extract], params: {{device: cpu, bootstrap: {{resamples: 200}}}}}}
"#,
        ssl = repo().join("models/wav2vec2-tiny-random").display()
    )
}

#[test]
fn separable_synthetic_corpus_reaches_a_low_eer() {
    let t = Test::new();
    synthetic(&t, 36);
    // Ten epochs: with the default seed (42) and 19 of the training seeds 0-19 the selected
    // model separates the test split (EER 0); seed 10 never ranks two validation clips right
    // and keeps an early epoch (test EER 0.13). Six epochs were not enough for 2 in 10.
    t.pipeline(&synthetic_pipeline(10, 1e-3));
    run(&t, &["run"]).ok();
    let m = json_file(&t, "outputs/synth/evaluate/metrics.json");
    let counts = &m["counts"];
    assert!(
        counts["bonafide"].as_u64().unwrap() >= 4 && counts["spoof"].as_u64().unwrap() >= 4,
        "{m}"
    );
    let eer = m["eer"].as_f64().unwrap();
    eprintln!(
        "separable synthetic corpus: test EER {eer}, AUC {}, counts {}",
        m["auc"], m["counts"]
    );
    assert!(eer <= 0.05, "EER {eer} on a separable corpus: {m}");
    assert!(m["auc"].as_f64().unwrap() >= 0.98, "{m}");
    // Training learned something: the validation loss went down.
    let log = t.read("outputs/synth/train/train_log.jsonl");
    let val: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "epoch")
        .map(|v| v["val_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(val.len(), 10, "{log}");
    assert!(val[9] < val[0], "validation loss {val:?}");
}

/// The highest epoch checkpoint in the workspace's resume folders.
fn last_epoch(t: &Test) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(t.path("cache/scratch"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|key| {
            std::fs::read_dir(key.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("epoch-")?
                .parse::<u64>()
                .ok()?;
            Some((n, e.path()))
        })
        .max()
}

#[test]
fn killed_training_resumes_from_its_last_epoch() {
    let t = Test::new();
    synthetic(&t, 24);
    t.pipeline(&synthetic_pipeline(10, 1e-3));
    run(&t, &["run", "extract"]).ok();
    let mut child = t
        .command(&["run"])
        .env("OMP_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while last_epoch(&t).is_none_or(|(n, _)| n < 2) {
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "no epoch checkpoint appeared"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill9(&mut child);
    let (killed_at, dir) = last_epoch(&t).unwrap();
    assert!(killed_at < 10, "the run finished before it was killed");
    let out = run(&t, &["run", "--json"]).ok().outcomes();
    assert_eq!(out["train"], "ran", "{out:?}");
    let log = t.read("outputs/synth/train/train_log.jsonl");
    let starts: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "started")
        .map(|v| v["first_epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![1, killed_at + 1], "{log}");
    let summary = json_file(&t, "outputs/synth/train/train_summary.json");
    assert_eq!(summary["epochs_run"], 10, "{summary}");
    // The resume folder is gone once the stage is committed.
    assert!(!dir.exists());

    // On the CPU with the same seed, the resumed run ends with the weights of an uninterrupted
    // one.
    let u = Test::new();
    synthetic(&u, 24);
    u.pipeline(&synthetic_pipeline(10, 1e-3));
    run(&u, &["run"]).ok();
    let resumed = std::fs::read(t.path("outputs/synth/train/model/model.safetensors")).unwrap();
    let straight = std::fs::read(u.path("outputs/synth/train/model/model.safetensors")).unwrap();
    assert!(
        resumed == straight,
        "the resumed model differs from the uninterrupted one"
    );
    assert_eq!(
        json_file(&t, "outputs/synth/train/train_summary.json")["best_epoch"],
        json_file(&u, "outputs/synth/train/train_summary.json")["best_epoch"]
    );
}

/// The reference back end of the parity fixtures (D = 768) cut to the tiny SSL's D = 64:
/// `LL.weight` keeps its first 64 columns, every other tensor is as the reference saved it.
fn reference_backend(drop: Option<&str>) -> Vec<u8> {
    let bytes =
        std::fs::read(repo().join("tests/fixtures/parity/backend_base768_weights.safetensors"))
            .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        if Some(name.as_str()) == drop {
            continue;
        }
        let (shape, data) = if name == "LL.weight" {
            let row = view.shape()[1] * 4;
            let data: Vec<u8> = view
                .data()
                .chunks_exact(row)
                .flat_map(|r| r[..64 * 4].to_vec())
                .collect();
            (vec![view.shape()[0], 64], data)
        } else {
            (view.shape().to_vec(), view.data().to_vec())
        };
        tensors.push((name, shape, view.dtype(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d, data)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn model_import_predict_export_and_bad_checkpoints() {
    let t = Test::new();
    let ssl = repo().join("models/wav2vec2-tiny-random");
    let ssl = ssl.to_str().unwrap();
    std::fs::write(t.path("AASIST.safetensors"), reference_backend(None)).unwrap();
    let out = run(
        &t,
        &[
            "model",
            "import",
            "--ssl",
            ssl,
            "--backend",
            "AASIST.safetensors",
            "--samples",
            "16000",
            "--trim",
            "off",
            "--out",
            "imported",
        ],
    )
    .ok();
    assert!(
        out.stdout.contains("wrote model checkpoint `imported`"),
        "{}",
        out.stdout
    );
    let config = json_file(&t, "imported/config.json");
    assert_eq!(config["ssl"]["embedded"], true);
    assert_eq!(config["preprocessing"]["samples"], 16000);
    assert_eq!(config["preprocessing"]["trim"], false);

    write_wav(&t.path("a.wav"), 1.0, Some(440.0), 5);
    let p = run(
        &t,
        &["predict", "--model", "imported", "--device", "cpu", "a.wav"],
    )
    .ok();
    let row: Vec<&str> = p.stdout.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[0], "a.wav");
    assert!(row[1].parse::<f64>().unwrap().is_finite(), "{}", p.stdout);
    assert_eq!(row[3], "");

    // Export gives the reference back end back, tensor for tensor.
    run(
        &t,
        &[
            "model",
            "export",
            "--model",
            "imported",
            "--backend-out",
            "back.safetensors",
        ],
    )
    .ok();
    let original = std::fs::read(t.path("AASIST.safetensors")).unwrap();
    let original = safetensors::SafeTensors::deserialize(&original).unwrap();
    let back = std::fs::read(t.path("back.safetensors")).unwrap();
    let back = safetensors::SafeTensors::deserialize(&back).unwrap();
    assert_eq!(back.len(), 245);
    for (name, view) in original.tensors() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let b = back.tensor(&name).unwrap();
        assert_eq!(b.shape(), view.shape(), "{name}");
        assert_eq!(b.data(), view.data(), "{name}");
    }

    // A state dict without a key the model needs.
    std::fs::write(
        t.path("missing.safetensors"),
        reference_backend(Some("GAT_layer_S.att_weight")),
    )
    .unwrap();
    let e = run(
        &t,
        &[
            "model",
            "import",
            "--ssl",
            ssl,
            "--backend",
            "missing.safetensors",
            "--out",
            "m2",
        ],
    )
    .code(2);
    assert!(
        e.stderr.contains("missing key `GAT_layer_S.att_weight`"),
        "{}",
        e.stderr
    );
    assert!(!t.exists("m2/model.safetensors"));

    // A pickle file is refused with the command that converts it.
    let mut pickle = b"PK\x03\x04".to_vec();
    pickle.extend_from_slice(&[0u8; 60]);
    std::fs::write(t.path("AASIST.pth"), pickle).unwrap();
    let e = run(
        &t,
        &[
            "model",
            "import",
            "--ssl",
            ssl,
            "--backend",
            "AASIST.pth",
            "--out",
            "m3",
        ],
    )
    .code(2);
    assert!(e.stderr.contains("pickle"), "{}", e.stderr);
    assert!(e.stderr.contains("save_file"), "{}", e.stderr);

    // `predict` with a folder that is not a model checkpoint.
    std::fs::create_dir_all(t.path("empty")).unwrap();
    let e = run(&t, &["predict", "--model", "empty", "a.wav"]).code(2);
    assert!(e.stderr.contains("config.json"), "{}", e.stderr);
}

#[test]
fn version_and_doctor_report_the_runtime() {
    let t = Test::new();
    let v = run(&t, &["--version"]).ok().stdout;
    assert!(
        v.starts_with(&format!("brspeech {}\n", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.contains("libtorch 2.11"), "{v}");
    assert!(v.contains("CUDA"), "{v}");
    let d = run(&t, &["doctor"]).ok().stdout;
    for want in ["libtorch:", "CUDA:", "GPUs:", "cache:", "free disk:"] {
        assert!(d.contains(want), "{want} missing:\n{d}");
    }
    let j = run(&t, &["doctor", "--json"]).ok().json();
    assert_eq!(j["runtime"]["torch_feature"], true);
    assert!(j["cache"]["free_bytes"].as_u64().unwrap() > 0, "{j}");
}
