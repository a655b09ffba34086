//! Frozen-mode training throughput on the CPU: one epoch of the `train_aasist` stage's loop
//! (`model::train::train` over memory-mapped f16 feature shards, read through the stage's own
//! `ShardData` loader, shuffled across shards, prefetched) on synthetic features of the real
//! shape `[201, D]`, batch 4 as the seed. Prints one JSON object with the epoch time, the
//! training items/s and the time per 1,000 clips.
//!
//! `cargo bench --bench train -- [--clips N] [--val N] [--dim D] [--frames T] [--batch B]
//! [--threads N] [--epochs E]` (benches/train/run.sh runs it as docs/BENCHMARKS.md shows).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use brspeech::model::train::{EpochMetrics, TrainConfig, TrainEvent, TrainMode, TrainSpec, train};
use brspeech::model::{DeviceChoice, Preprocessing, SslOutput, SslSection};
use brspeech::shards::{Dtype, IndexRow, ShardWriter, read_index, write_index};
use brspeech::stages::model_data::ShardData;
use clap::Parser;
use rand::{RngExt, SeedableRng};

#[derive(Parser)]
struct Args {
    /// Training clips.
    #[arg(long, default_value_t = 1000)]
    clips: usize,
    /// Validation clips.
    #[arg(long, default_value_t = 100)]
    val: usize,
    /// Feature width D (1024 = XLS-R 300M, 768 = base).
    #[arg(long, default_value_t = 1024)]
    dim: usize,
    /// Frames per clip (201 for 64,600 samples).
    #[arg(long, default_value_t = 201)]
    frames: usize,
    /// Items per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// libtorch threads.
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Epochs (the first one is reported; later ones show the spread).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Cargo passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Writes `n` clips per split into 8 shards (1 bona fide : 5 spoof, as BRSpeech-DF).
fn write_shards(dir: &Path, splits: &[(&str, usize)], frames: usize, dim: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    std::fs::create_dir_all(dir.join("shards")).unwrap();
    let mut writers: Vec<(String, ShardWriter, u64)> = (0..8)
        .map(|s| {
            let rel = format!("shards/s-{s:04}.safetensors");
            let w = ShardWriter::create(
                &dir.join(&rel),
                "features",
                Dtype::F16,
                &[frames, dim],
                BTreeMap::new(),
            )
            .unwrap();
            (rel, w, 0)
        })
        .collect();
    let mut rows = Vec::new();
    let mut row = vec![0f32; frames * dim];
    let mut k = 0usize;
    for (split, n) in splits {
        for i in 0..*n {
            let bona = k.is_multiple_of(6);
            let shift = if bona { 0.2 } else { -0.2 };
            for v in &mut row {
                *v = rng.random::<f32>() - 0.5 + shift;
            }
            let (rel, w, r) = &mut writers[k % 8];
            w.write_row(&row).unwrap();
            rows.push(IndexRow {
                shard: rel.clone(),
                row: *r,
                path: format!("{split}/{i}.flac"),
                source: if bona { "real" } else { "tts" }.into(),
                label: if bona { "bonafide" } else { "spoof" }.into(),
                split: (*split).into(),
                speaker: String::new(),
                offset: 0,
                item: k.to_string(),
            });
            *r += 1;
            k += 1;
        }
    }
    for (_, w, _) in writers {
        w.finish().unwrap();
    }
    write_index(&dir.join("index.csv"), &rows).unwrap();
}

fn main() {
    let a = Args::parse();
    tch::set_num_threads(a.threads);
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    write_shards(
        dir.path(),
        &[("train", a.clips), ("val", a.val)],
        a.frames,
        a.dim,
    );
    let write_s = t0.elapsed().as_secs_f64();
    let rows = read_index(&dir.path().join("index.csv")).unwrap();
    let train_data = ShardData::open("bench", dir.path(), "features", &rows, |r| {
        r.split == "train"
    })
    .unwrap();
    let val_data =
        ShardData::open("bench", dir.path(), "features", &rows, |r| r.split == "val").unwrap();

    let tiny =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/wav2vec2-tiny-random/config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny).unwrap()).unwrap();
    config["hidden_size"] = serde_json::json!(a.dim);
    let ssl = SslSection {
        embedded: false,
        output: SslOutput::LastHiddenState,
        config,
        digest: Some(brspeech::model::SslDigest {
            weights: "blake3:bench".into(),
            config: "blake3:bench".into(),
        }),
        source: None,
    };
    let run_dir = dir.path().join("run");
    let spec = TrainSpec {
        mode: TrainMode::Frozen { ssl },
        preprocessing: Preprocessing::default(),
        config: TrainConfig {
            epochs: a.epochs,
            batch_size: a.batch,
            device: DeviceChoice::Cpu,
            log_every: 0,
            ..TrainConfig::default()
        },
        run_dir,
        batch_size_key: "batch_size".into(),
        stage: "bench".into(),
    };
    let eer = |_: &[f64], _: &[bool]| 0.0;
    let mut epochs: Vec<EpochMetrics> = Vec::new();
    train(&spec, &train_data, &val_data, &eer, &mut |e| {
        if let TrainEvent::Epoch(m) = e {
            eprintln!(
                "epoch {}: {:.1} s, {:.1} items/s",
                m.epoch, m.seconds, m.items_per_s
            );
            epochs.push(m.clone());
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    let first = &epochs[0];
    let per_1000_train = 1000.0 / first.items_per_s;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let out = serde_json::json!({
        "cpu": cpu,
        "threads": a.threads,
        "train_clips": a.clips,
        "val_clips": a.val,
        "shape": [a.frames, a.dim],
        "batch": a.batch,
        "shard_write_s": write_s,
        "epoch_s": first.seconds,
        "items_per_s": first.items_per_s,
        "train_s_per_1000_clips": per_1000_train,
        "epoch_s_per_1000_clips": first.seconds * 1000.0 / a.clips as f64,
        "epochs": epochs.iter().map(|m| serde_json::json!({"epoch": m.epoch, "seconds": m.seconds, "items_per_s": m.items_per_s})).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
