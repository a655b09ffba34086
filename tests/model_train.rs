//! The training library: learning on a separable synthetic set, bit-identical resumption after
//! an interruption (between and inside epochs), early stopping, fine-tuning end to end, errors.
#![cfg(feature = "torch")]

#[path = "model_support/mod.rs"]
mod support;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use brspeech::model::train::{
    EpochMetrics, InMemoryData, Input, PosWeight, SelectBy, TrainConfig, TrainData, TrainEvent,
    TrainMode, TrainOutcome, TrainSpec, train,
};
use brspeech::model::{
    Detector, DetectorOptions, DeviceChoice, ModelError, Preprocessing, SslOutput, SslSection,
};
use support::fixture;
use tch::{Device, Kind, Tensor};

/// The libtorch generator is process-wide: training tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// ASVspoof-style EER on logits (bona fide = positive), for the tests.
fn eer(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let n_bona = labels.iter().filter(|l| **l).count() as f64;
    let n_spoof = labels.len() as f64 - n_bona;
    let (mut frr, mut far) = (0.0, 1.0);
    let mut best = (f64::INFINITY, 0.5);
    for i in idx {
        if labels[i] {
            frr += 1.0 / n_bona;
        } else {
            far -= 1.0 / n_spoof;
        }
        let gap = (frr - far).abs();
        if gap < best.0 {
            best = (gap, (frr + far) / 2.0);
        }
    }
    best.1
}

fn tiny_ssl(root: &Path) -> PathBuf {
    let dir = root.join("ssl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("ssl_tiny_group_config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        fixture("ssl_tiny_group_weights.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    dir
}

/// Features `[28, 64]` whose mean is +shift for bona fide and -shift for spoof items.
fn features(n: usize, seed: i64, shift: f64) -> InMemoryData {
    let _rng = brspeech::model::rng::seeded(seed);
    let mut data = InMemoryData::default();
    for i in 0..n {
        let bona = i % 3 == 0;
        let mean = if bona { shift } else { -shift };
        let x = Tensor::randn([28, 64], (Kind::Float, Device::Cpu)) + mean;
        let v = Vec::<f32>::try_from(x.view([-1])).unwrap();
        data.inputs.push(Input::Features {
            data: v.iter().map(|f| half::f16::from_f32(*f)).collect(),
            frames: 28,
            dim: 64,
        });
        data.labels.push(bona);
    }
    data
}

fn frozen_spec(root: &Path, run: &str, config: TrainConfig) -> TrainSpec {
    TrainSpec {
        mode: TrainMode::Frozen {
            ssl: SslSection::external(&tiny_ssl(root), SslOutput::LastHiddenState).unwrap(),
        },
        preprocessing: Preprocessing {
            samples: 16_000,
            ..Preprocessing::default()
        },
        config,
        run_dir: root.join(run),
        batch_size_key: "stages.train.params.batch_size".into(),
        stage: "train_aasist".into(),
    }
}

fn quick(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        lr: 1e-3,
        batch_size: 4,
        log_every: 5,
        device: DeviceChoice::Cpu,
        seed: 7,
        ..TrainConfig::default()
    }
}

fn run(
    spec: &TrainSpec,
    train_set: &dyn TrainData,
    val_set: &dyn TrainData,
    mut stop: impl FnMut(&TrainEvent) -> bool,
) -> (Result<TrainOutcome, ModelError>, Vec<TrainEvent>) {
    let mut events = Vec::new();
    let out = train(spec, train_set, val_set, &eer, &mut |e| {
        events.push(e.clone());
        if stop(e) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    (out, events)
}

fn file_bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[test]
fn learns_a_separable_synthetic_set() {
    support::single_thread();
    let _serial = SERIAL.lock().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let train_set = features(48, 1, 0.3);
    let val_set = features(24, 2, 0.3);
    let spec = frozen_spec(tmp.path(), "run", quick(6));
    let (out, events) = run(&spec, &train_set, &val_set, |_| false);
    let out = out.unwrap();
    let history: Vec<&EpochMetrics> = out.history.iter().collect();
    for m in &history {
        println!(
            "epoch {}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} EER {:.3}",
            m.epoch, m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.val_eer
        );
    }
    assert_eq!(history.len(), 6);
    let best = &out.history[out.best_epoch - 1];
    assert!(
        best.val_eer <= 0.05,
        "a separable set is learnt: best val EER {}",
        best.val_eer
    );
    assert!(
        history.last().unwrap().train_loss < history[0].train_loss,
        "training loss falls"
    );
    // The reference pos_weight: 32 spoof / 48 items.
    match &events[0] {
        TrainEvent::Started {
            pos_weight,
            steps_per_epoch,
            first_epoch,
            ..
        } => {
            assert!((pos_weight.unwrap() - 32.0 / 48.0).abs() < 1e-12);
            assert_eq!((*steps_per_epoch, *first_epoch), (12, 1));
        }
        e => panic!("first event {e:?}"),
    }
    assert!(events.iter().any(|e| matches!(
        e,
        TrainEvent::Step {
            step: 5,
            steps: 12,
            ..
        }
    )));
    // The best epoch is a model checkpoint that scores cached features like validation did.
    let det = Detector::load(
        &out.best_model,
        &DetectorOptions {
            device: DeviceChoice::Cpu,
            ..DetectorOptions::default()
        },
    )
    .unwrap();
    let feats = match val_set.batch(&(0..24).collect::<Vec<_>>()).unwrap() {
        brspeech::model::train::BatchInput::Features {
            data,
            batch,
            frames,
            dim,
        } => brspeech::model::Features {
            batch,
            frames,
            dim,
            data,
        },
        _ => unreachable!(),
    };
    let scores: Vec<f64> = det
        .score_features(&feats)
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert!((eer(&scores, &val_set.labels) - best.val_eer).abs() < 1e-9);
    // The dead `bn1` never gets a gradient: Adam has no state for it and never moved it
    // (no update, no weight decay), while its running statistics follow the batches.
    let opt: Vec<String> = Tensor::read_safetensors(out.last_model.join("optimizer.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(opt.contains(&"exp_avg.encoder.1.0.bn2.weight".to_string()));
    assert!(
        !opt.iter().any(|k| k.contains(".bn1.")),
        "no optimizer state for the dead bn1"
    );
    let weights: std::collections::BTreeMap<String, Tensor> =
        Tensor::read_safetensors(out.last_model.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    assert!(
        weights["encoder.1.0.bn1.weight"].equal(&Tensor::ones([32], (Kind::Float, Device::Cpu)))
    );
    assert!(
        weights["encoder.1.0.bn1.bias"].equal(&Tensor::zeros([32], (Kind::Float, Device::Cpu)))
    );
    assert!(weights["encoder.1.0.bn1.num_batches_tracked"].int64_value(&[]) > 0);
    // The best epoch exports as a plain model checkpoint folder.
    let exported = tmp.path().join("model");
    brspeech::model::copy_checkpoint(&out.best_model, &exported).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&exported)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["config.json", "model.safetensors"]);
    assert!(
        Detector::load(
            &exported,
            &DetectorOptions {
                device: DeviceChoice::Cpu,
                ..DetectorOptions::default()
            }
        )
        .is_ok()
    );
    // Only the best and the last epoch folders are kept.
    let mut kept: Vec<String> = std::fs::read_dir(&spec.run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    let mut want = vec![
        format!("epoch-{:04}", out.best_epoch),
        "epoch-0006".to_string(),
    ];
    want.dedup();
    want.sort();
    assert_eq!(kept, want);
}

#[test]
fn resumed_training_ends_bit_identical() {
    support::single_thread();
    let _serial = SERIAL.lock().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let train_set = features(20, 3, 0.2);
    let val_set = features(9, 4, 0.2);
    let config = TrainConfig {
        log_every: 1,
        ..quick(3)
    };

    let straight = frozen_spec(tmp.path(), "straight", config.clone());
    let a = run(&straight, &train_set, &val_set, |_| false).0.unwrap();

    // Killed after epoch 1 was written, then killed in the middle of epoch 2.
    let resumed = frozen_spec(tmp.path(), "resumed", config.clone());
    let first = run(
        &resumed,
        &train_set,
        &val_set,
        |e| matches!(e, TrainEvent::Epoch(m) if m.epoch == 1),
    )
    .0
    .unwrap();
    assert!(first.interrupted);
    assert_eq!(first.history.len(), 1);
    let (second, events) = run(&resumed, &train_set, &val_set, |e| {
        matches!(
            e,
            TrainEvent::Step {
                epoch: 2,
                step: 3,
                ..
            }
        )
    });
    assert!(second.unwrap().interrupted);
    assert!(matches!(
        events[0],
        TrainEvent::Started { first_epoch: 2, .. }
    ));
    assert!(
        !resumed.run_dir.join("epoch-0002").exists(),
        "no partial epoch is written"
    );
    let (b, events) = run(&resumed, &train_set, &val_set, |_| false);
    let b = b.unwrap();
    assert!(matches!(
        events[0],
        TrainEvent::Started { first_epoch: 2, .. }
    ));

    assert_eq!(a.history.len(), 3);
    for (x, y) in a.history.iter().zip(&b.history) {
        assert_eq!(
            (x.train_loss, x.val_loss, x.val_eer, x.val_accuracy),
            (y.train_loss, y.val_loss, y.val_eer, y.val_accuracy)
        );
    }
    assert_eq!(
        file_bytes(&a.last_model, "model.safetensors"),
        file_bytes(&b.last_model, "model.safetensors")
    );
    assert_eq!(
        file_bytes(&a.last_model, "optimizer.safetensors"),
        file_bytes(&b.last_model, "optimizer.safetensors")
    );

    // A finished run returns at once; other settings refuse the folder.
    let (again, events) = run(&resumed, &train_set, &val_set, |_| false);
    assert_eq!(again.unwrap().history.len(), 3);
    assert!(events.is_empty());
    let other = frozen_spec(tmp.path(), "resumed", TrainConfig { lr: 2e-3, ..config });
    let e = run(&other, &train_set, &val_set, |_| false).0.unwrap_err();
    assert!(matches!(e, ModelError::Resume { .. }), "{e}");
}

#[test]
fn early_stopping_and_selection_by_accuracy() {
    support::single_thread();
    let _serial = SERIAL.lock().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let train_set = features(12, 5, 0.2);
    let val_set = features(6, 6, 0.2);
    // lr 0: nothing improves after epoch 1, so patience 2 stops after epoch 3.
    let config = TrainConfig {
        lr: 0.0,
        patience: Some(2),
        select_by: SelectBy::ValAccuracy,
        pos_weight: PosWeight::None,
        ..quick(10)
    };
    let spec = frozen_spec(tmp.path(), "run", config);
    let (out, events) = run(&spec, &train_set, &val_set, |_| false);
    let out = out.unwrap();
    assert!(out.stopped_early);
    assert_eq!(out.history.len(), 3);
    assert_eq!(out.best_epoch, 1);
    assert!(matches!(
        events[0],
        TrainEvent::Started {
            pos_weight: None,
            ..
        }
    ));
}

#[test]
fn data_errors_and_empty_classes_are_reported() {
    support::single_thread();
    let _serial = SERIAL.lock().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    struct Broken(InMemoryData);
    impl TrainData for Broken {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn label(&self, i: usize) -> bool {
            self.0.label(i)
        }
        fn input(&self, i: usize) -> Result<Input, String> {
            if i == 5 {
                Err("shard row unreadable".into())
            } else {
                self.0.input(i)
            }
        }
    }
    let val_set = features(6, 8, 0.2);
    let spec = frozen_spec(
        tmp.path(),
        "run",
        TrainConfig {
            drop_last: false,
            ..quick(1)
        },
    );
    let e = run(&spec, &Broken(features(8, 7, 0.2)), &val_set, |_| false)
        .0
        .unwrap_err();
    assert!(matches!(&e, ModelError::Data { index: 5, .. }), "{e}");
    let mut one_class = features(8, 7, 0.2);
    one_class.labels = vec![false; 8];
    let e = run(&spec, &one_class, &val_set, |_| false).0.unwrap_err();
    assert!(e.to_string().contains("both classes"), "{e}");
    let waves = InMemoryData {
        inputs: vec![Input::Waveform(vec![0.0; 16_000]); 4],
        labels: vec![true, false, true, false],
    };
    let e = run(&spec, &waves, &val_set, |_| false).0.unwrap_err();
    assert!(e.to_string().contains("`ssl: frozen`"), "{e}");
}

#[test]
fn finetunes_wav2vec2_and_aasist_end_to_end() {
    support::single_thread();
    let _serial = SERIAL.lock().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ssl_dir = tiny_ssl(tmp.path());
    let _rng = brspeech::model::rng::seeded(9);
    let mut waves = InMemoryData::default();
    for i in 0..8 {
        let bona = i % 2 == 0;
        let t = Tensor::arange(16_000, (Kind::Float, Device::Cpu)) / 16_000.0;
        let tone = (t
            * (if bona {
                2.0 * std::f64::consts::PI * 220.0
            } else {
                2.0 * std::f64::consts::PI * 1_800.0
            }))
        .sin()
            * 0.3;
        let x = tone + Tensor::randn([16_000], (Kind::Float, Device::Cpu)) * 0.05;
        waves
            .inputs
            .push(Input::Waveform(Vec::<f32>::try_from(&x).unwrap()));
        waves.labels.push(bona);
    }
    let spec = TrainSpec {
        mode: TrainMode::Finetune {
            ssl_dir: ssl_dir.clone(),
            output: SslOutput::LastHiddenState,
        },
        preprocessing: Preprocessing {
            samples: 16_000,
            ..Preprocessing::default()
        },
        config: TrainConfig {
            batch_size: 2,
            ..quick(2)
        },
        run_dir: tmp.path().join("run"),
        batch_size_key: "batch_size".into(),
        stage: "train_aasist".into(),
    };
    let (out, _) = run(&spec, &waves, &waves, |_| false);
    let out = out.unwrap();
    assert_eq!(out.history.len(), 2);
    // The SSL is embedded and was trained (its weights moved away from the pretrained ones).
    let trained: std::collections::BTreeMap<String, Tensor> =
        Tensor::read_safetensors(out.last_model.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let pretrained = support::read_fixture("ssl_tiny_group_weights.safetensors");
    let key = "encoder.layers.0.attention.q_proj.weight";
    let moved = (&trained[&format!("ssl_model.model.{key}")] - &pretrained[key])
        .abs()
        .max()
        .double_value(&[]);
    assert!(moved > 0.0, "the SSL is fine-tuned");
    assert!(trained.contains_key("ssl_model.model.masked_spec_embed"));
    let det = Detector::load(
        &out.best_model,
        &DetectorOptions {
            device: DeviceChoice::Cpu,
            ..DetectorOptions::default()
        },
    )
    .unwrap();
    let flat: Vec<f32> = waves
        .inputs
        .iter()
        .take(2)
        .flat_map(|i| match i {
            Input::Waveform(w) => w.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(det.score_waveforms(&flat, 2).unwrap().len(), 2);
}
