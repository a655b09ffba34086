//! Checkpoint loading, `model import`/`export`, the `Detector` and the `Extractor`, on the tiny
//! wav2vec2 fixtures and a small AASIST back end.
#![cfg(feature = "torch")]

#[path = "model_support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use brspeech::model::aasist::{self, Aasist};
use brspeech::model::checkpoint::load_state_dict;
use brspeech::model::wav2vec2::{PretrainedSsl, normalize_waveforms};
use brspeech::model::{
    CheckpointConfig, Detector, DetectorOptions, DeviceChoice, ExportOptions, ExtractOptions,
    Extractor, Features, ImportOptions, ModelError, Preprocessing, SslOutput, export_checkpoint,
    import_checkpoint, ssl_digest,
};
use support::{assert_forward, fixture, read_fixture};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn write(path: &Path, tensors: &BTreeMap<String, Tensor>) {
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&refs, path).unwrap();
}

/// A Hugging Face folder from the tiny fixture, with its weights passed through `edit`.
fn hf_folder(
    root: &Path,
    layout: &str,
    edit: impl FnOnce(&mut BTreeMap<String, Tensor>),
) -> PathBuf {
    let dir = root.join(format!("hf-{layout}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture(&format!("ssl_tiny_{layout}_config.json")),
        dir.join("config.json"),
    )
    .unwrap();
    let mut w = read_fixture(&format!("ssl_tiny_{layout}_weights.safetensors"));
    edit(&mut w);
    write(&dir.join("model.safetensors"), &w);
    dir
}

fn tiny_io(layout: &str) -> BTreeMap<String, Tensor> {
    read_fixture(&format!("ssl_tiny_{layout}_io_eval.safetensors"))
}

fn waveforms(layout: &str) -> (Vec<f32>, usize) {
    let w = &tiny_io(layout)["waveform"];
    (
        Vec::<f32>::try_from(w.contiguous().view([-1])).unwrap(),
        w.size()[0] as usize,
    )
}

const G: &str = "encoder.pos_conv_embed.conv.parametrizations.weight.original0";
const V: &str = "encoder.pos_conv_embed.conv.parametrizations.weight.original1";

#[test]
fn strict_loading_names_the_offending_key() {
    support::single_thread();
    let tmp = tempfile::tempdir().unwrap();
    let missing = hf_folder(&tmp.path().join("a"), "layer", |w| {
        w.remove("encoder.layer_norm.weight");
    });
    match PretrainedSsl::load(&missing, Device::Cpu).unwrap_err() {
        ModelError::MissingKey { key, .. } => assert_eq!(key, "encoder.layer_norm.weight"),
        e => panic!("expected a missing key, got {e}"),
    }
    let unexpected = hf_folder(&tmp.path().join("b"), "layer", |w| {
        w.insert(
            "encoder.extra.weight".into(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        );
    });
    let e = PretrainedSsl::load(&unexpected, Device::Cpu).unwrap_err();
    assert!(
        matches!(&e, ModelError::UnexpectedKey { key, .. } if key == "encoder.extra.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("`encoder.extra.weight`"), "{e}");
    let reshaped = hf_folder(&tmp.path().join("c"), "layer", |w| {
        let t = w["feature_projection.projection.weight"].tr().contiguous();
        w.insert("feature_projection.projection.weight".into(), t);
    });
    match PretrainedSsl::load(&reshaped, Device::Cpu).unwrap_err() {
        ModelError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "feature_projection.projection.weight");
            assert_eq!(expected, vec![64, 32]);
            assert_eq!(found, vec![32, 64]);
        }
        e => panic!("expected a shape mismatch, got {e}"),
    }
}

#[test]
fn loads_prefixed_pretraining_checkpoints_and_old_weight_norm_names() {
    support::single_thread();
    let tmp = tempfile::tempdir().unwrap();
    let io = tiny_io("group");
    let dir = hf_folder(tmp.path(), "group", |w| {
        let old: BTreeMap<String, Tensor> = std::mem::take(w);
        for (k, v) in old {
            let k = k
                .replace("parametrizations.weight.original0", "weight_g")
                .replace("parametrizations.weight.original1", "weight_v");
            w.insert(format!("wav2vec2.{k}"), v);
        }
        w.insert(
            "quantizer.codevectors".into(),
            Tensor::zeros([1, 4, 8], (Kind::Float, Device::Cpu)),
        );
        w.insert(
            "project_q.weight".into(),
            Tensor::zeros([8, 8], (Kind::Float, Device::Cpu)),
        );
    });
    let ssl = PretrainedSsl::load(&dir, Device::Cpu)
        .expect("prefixed checkpoint with weight_g/weight_v loads");
    assert_eq!(
        ssl.set_aside,
        vec![
            "project_q.weight".to_string(),
            "quantizer.codevectors".to_string()
        ]
    );
    let vars = ssl.vs.variables();
    assert!(vars.contains_key(G) && vars.contains_key(V));
    let out = tch::no_grad(|| ssl.model.forward_t(&io["input_values"], false));
    assert_forward("last_hidden_state", &out, &io["last_hidden_state"]);
}

#[test]
fn hidden_layer_choice_stops_early_with_the_right_tensor() {
    support::single_thread();
    let tmp = tempfile::tempdir().unwrap();
    let dir = hf_folder(tmp.path(), "layer", |_| {});
    let ssl = PretrainedSsl::load(&dir, Device::Cpu).unwrap();
    let io = tiny_io("layer");
    for k in 0..=2 {
        let h = tch::no_grad(|| {
            ssl.model
                .forward_output(&io["input_values"], SslOutput::HiddenState(k), false)
        });
        assert_forward(
            &format!("hidden_states.{k}"),
            &h,
            &io[&format!("hidden_states.{k}")],
        );
    }
}

/// A D=64 AASIST back end with non-trivial BatchNorm statistics, saved as a reference-style
/// state dict.
fn backend_file(root: &Path) -> PathBuf {
    let _rng = brspeech::model::rng::seeded(11);
    let vs = VarStore::new(Device::Cpu);
    let model = Aasist::new(vs.root(), &aasist::Config { ssl_dim: 64 });
    // Warm the running statistics with a few training-mode passes.
    for _ in 0..3 {
        let _ = model.forward_t(
            &Tensor::randn([2, 49, 64], (Kind::Float, Device::Cpu)),
            true,
        );
    }
    let path = root.join("aasist.safetensors");
    vs.save(&path).unwrap();
    path
}

fn import(root: &Path, ssl_dir: &Path, backend: &Path, embed: bool, name: &str) -> PathBuf {
    let out = root.join(name);
    let report = import_checkpoint(&ImportOptions {
        ssl_dir: ssl_dir.to_path_buf(),
        backend: backend.to_path_buf(),
        preprocessing: Preprocessing {
            samples: 16_000,
            ..Preprocessing::default()
        },
        output: SslOutput::LastHiddenState,
        embed_ssl: embed,
        out_dir: out.clone(),
    })
    .expect("import");
    assert_eq!(report.ssl_dim, 64);
    assert_eq!(report.ssl_digest, ssl_digest(ssl_dir).unwrap());
    out
}

fn cpu() -> DetectorOptions {
    DetectorOptions {
        device: DeviceChoice::Cpu,
        ..DetectorOptions::default()
    }
}

#[test]
fn import_score_and_export_round_trip() {
    support::single_thread();
    let tmp = tempfile::tempdir().unwrap();
    let ssl_dir = hf_folder(tmp.path(), "group", |_| {});
    let backend = backend_file(tmp.path());
    let ckpt = import(tmp.path(), &ssl_dir, &backend, true, "model");

    // The folder: config.json + model.safetensors with the reference layout.
    let cfg = CheckpointConfig::read(&ckpt).unwrap();
    assert!(cfg.ssl.embedded);
    assert_eq!(cfg.backend.ssl_dim, 64);
    assert_eq!(cfg.preprocessing.samples, 16_000);
    assert_eq!(cfg.ssl.config["feat_extract_norm"], "group");
    let keys: BTreeSet<String> = Tensor::read_safetensors(ckpt.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("ssl_model.model."))
            .count(),
        51
    );
    assert_eq!(keys.len(), 51 + 245);
    assert!(
        keys.contains("ssl_model.model.encoder.layers.0.attention.q_proj.weight")
            && keys.contains("HtrgGAT_layer_ST11.att_weight12")
    );

    // Scores equal the two parts run by hand.
    let det = Detector::load(&ckpt, &cpu()).unwrap();
    assert!(det.can_score_waveforms());
    let (wave, batch) = waveforms("group");
    let scores = det.score_waveforms(&wave, batch).unwrap();
    let ssl = PretrainedSsl::load(&ssl_dir, Device::Cpu).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let back = Aasist::new(vs.root(), &aasist::Config { ssl_dim: 64 });
    load_state_dict(&vs, &backend).unwrap();
    let io = tiny_io("group");
    let expected = tch::no_grad(|| {
        back.forward_t(
            &ssl.model
                .forward_t(&normalize_waveforms(&io["waveform"]), false),
            false,
        )
    });
    assert_forward(
        "logits",
        &Tensor::from_slice(&scores).view([2, 1]),
        &expected,
    );

    // Export: the back end comes out bit-identical, the SSL as a loadable HF folder.
    let out = tmp.path().join("export");
    let report = export_checkpoint(&ExportOptions {
        model_dir: ckpt.clone(),
        backend_out: Some(out.join("aasist.safetensors")),
        ssl_out: Some(out.join("hf")),
        state_dict_out: Some(out.join("w2v_aasist.safetensors")),
    })
    .unwrap();
    assert_eq!(report.written.len(), 3);
    let a: BTreeMap<String, Tensor> = Tensor::read_safetensors(&backend)
        .unwrap()
        .into_iter()
        .collect();
    let b: BTreeMap<String, Tensor> = Tensor::read_safetensors(out.join("aasist.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v.equal(&b[k]), "`{k}` changed in the round trip");
    }
    let re = PretrainedSsl::load(&out.join("hf"), Device::Cpu).unwrap();
    let h = tch::no_grad(|| re.model.forward_t(&io["input_values"], false));
    assert_forward("last_hidden_state", &h, &io["last_hidden_state"]);

    // A whole reference state dict (fine-tuned SSL inside) imports with its own SSL weights.
    let mut full: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(out.join("w2v_aasist.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let key = "ssl_model.model.encoder.layer_norm.bias".to_string();
    let bumped = &full[&key] + 0.5;
    full.insert(key.clone(), bumped.shallow_clone());
    write(&out.join("finetuned.safetensors"), &full);
    let ft = import(
        tmp.path(),
        &ssl_dir,
        &out.join("finetuned.safetensors"),
        true,
        "finetuned",
    );
    let got: BTreeMap<String, Tensor> = Tensor::read_safetensors(ft.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        got[&key].equal(&bumped),
        "SSL weights come from the state dict, not the HF folder"
    );

    // The output folder must be new.
    let e = import_checkpoint(&ImportOptions {
        ssl_dir: ssl_dir.clone(),
        backend: backend.clone(),
        preprocessing: Preprocessing::default(),
        output: SslOutput::LastHiddenState,
        embed_ssl: true,
        out_dir: ckpt.clone(),
    })
    .unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
}

#[test]
fn import_refuses_pickles_and_mismatched_back_ends() {
    support::single_thread();
    let tmp = tempfile::tempdir().unwrap();
    let ssl_dir = hf_folder(tmp.path(), "layer", |_| {});
    let pth = tmp.path().join("AASIST.pth");
    std::fs::write(&pth, b"PK\x03\x04").unwrap();
    let opts = |backend: PathBuf, out: &str| ImportOptions {
        ssl_dir: ssl_dir.clone(),
        backend,
        preprocessing: Preprocessing::default(),
        output: SslOutput::LastHiddenState,
        embed_ssl: true,
        out_dir: tmp.path().join(out),
    };
    let e = import_checkpoint(&opts(pth, "x")).unwrap_err();
    assert!(matches!(e, ModelError::PickleRefused { .. }), "{e}");
    // A D=768 back end does not fit a D=64 SSL: the error names `LL.weight`.
    let e =
        import_checkpoint(&opts(fixture("backend_base768_weights.safetensors"), "y")).unwrap_err();
    match e {
        ModelError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "LL.weight");
            assert_eq!((expected, found), (vec![128, 64], vec![128, 768]));
        }
        e => panic!("expected a shape mismatch, got {e}"),
    }
    assert!(
        !tmp.path().join("y").exists(),
        "nothing is written on failure"
    );
}

#[test]
fn back_end_only_checkpoints_need_their_own_ssl() {
    support::single_thread();
    let tmp = tempfile::tempdir().unwrap();
    let group = hf_folder(tmp.path(), "group", |_| {});
    let layer = hf_folder(tmp.path(), "layer", |_| {});
    let backend = backend_file(tmp.path());
    let embedded = import(tmp.path(), &group, &backend, true, "embedded");
    let frozen = import(tmp.path(), &group, &backend, false, "frozen");
    let cfg = CheckpointConfig::read(&frozen).unwrap();
    assert!(!cfg.ssl.embedded);
    let keys: Vec<String> = Tensor::read_safetensors(frozen.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys.len(), 245);
    assert!(keys.iter().all(|k| !k.starts_with("ssl_model.")));

    let (wave, batch) = waveforms("group");
    let alone = Detector::load(&frozen, &cpu()).unwrap();
    assert!(!alone.can_score_waveforms());
    let e = alone.score_waveforms(&wave, batch).unwrap_err();
    assert!(matches!(e, ModelError::SslRequired { .. }), "{e}");

    let with_ssl = Detector::load(
        &frozen,
        &DetectorOptions {
            ssl_dir: Some(group.clone()),
            ..cpu()
        },
    )
    .unwrap();
    let a = with_ssl.score_waveforms(&wave, batch).unwrap();
    let b = Detector::load(&embedded, &cpu())
        .unwrap()
        .score_waveforms(&wave, batch)
        .unwrap();
    assert_eq!(a, b, "same weights, same scores");

    let e = Detector::load(
        &frozen,
        &DetectorOptions {
            ssl_dir: Some(layer),
            ..cpu()
        },
    )
    .unwrap_err();
    assert!(matches!(e, ModelError::SslDigestMismatch { .. }), "{e}");

    // Scoring cached features: features from the extractor give the same logits.
    let ex = Extractor::load(
        &group,
        &ExtractOptions {
            device: DeviceChoice::Cpu,
            ..ExtractOptions::default()
        },
    )
    .unwrap();
    let feats = ex.extract(&wave, batch).unwrap();
    let from_feats = alone.score_features(&feats).unwrap();
    for (x, y) in from_feats.iter().zip(&a) {
        assert!(
            (x - y).abs() < 1e-2,
            "f16 features score close to f32 features: {x} vs {y}"
        );
    }
    let bad = Features {
        batch: 1,
        frames: 5,
        dim: 32,
        data: vec![half::f16::ZERO; 160],
    };
    assert!(matches!(
        alone.score_features(&bad),
        Err(ModelError::Input { .. })
    ));
}

fn f16_close(name: &str, feats: &Features, reference: &Tensor) {
    let got = Tensor::from_slice(&feats.data).to_kind(Kind::Float).view([
        feats.batch as i64,
        feats.frames as i64,
        feats.dim as i64,
    ]);
    assert_eq!(got.size(), reference.size(), "{name} shape");
    // f16 keeps 11 significant bits: relative error <= 2^-11 plus the f32 forward tolerance.
    let r = support::tolerance_ratio(&got, reference, 2e-5, 1.0 / 1024.0);
    assert!(r <= 1.0, "{name}: f16 features ratio {r}");
}

#[test]
fn extractor_returns_f16_features_of_the_chosen_layer() {
    support::single_thread();
    let tmp = tempfile::tempdir().unwrap();
    let dir = hf_folder(tmp.path(), "layer", |_| {});
    let io = tiny_io("layer");
    let (wave, batch) = waveforms("layer");
    let cpu = ExtractOptions {
        device: DeviceChoice::Cpu,
        ..ExtractOptions::default()
    };
    let ex = Extractor::load(&dir, &cpu).unwrap();
    assert_eq!(
        (
            ex.hidden_size(),
            ex.frames_for(16_000),
            ex.device().as_str()
        ),
        (64, 49, "cpu")
    );
    assert_eq!(ex.digest(), &ssl_digest(&dir).unwrap());
    let section = ex.ssl_section();
    assert!(!section.embedded);
    assert_eq!(section.digest.as_ref(), Some(ex.digest()));
    assert_eq!(&section.config, ex.ssl_config_json());
    let f = ex.extract(&wave, batch).unwrap();
    assert_eq!(
        (f.batch, f.frames, f.dim, f.data.len()),
        (2, 49, 64, 2 * 49 * 64)
    );
    f16_close("last_hidden_state", &f, &io["last_hidden_state"]);
    assert_eq!(f.clip(1).len(), 49 * 64);

    let ex1 = Extractor::load(
        &dir,
        &ExtractOptions {
            output: SslOutput::HiddenState(1),
            ..cpu.clone()
        },
    )
    .unwrap();
    f16_close(
        "hidden_states.1",
        &ex1.extract(&wave, batch).unwrap(),
        &io["hidden_states.1"],
    );

    // 16-bit PCM rows give the features of the same samples as floats.
    let peak = wave.iter().fold(0f32, |m, x| m.max(x.abs()));
    let pcm: Vec<i16> = wave
        .iter()
        .map(|x| (x / peak * 30000.0).round() as i16)
        .collect();
    let as_f32: Vec<f32> = pcm.iter().map(|x| *x as f32 / 32768.0).collect();
    assert_eq!(
        ex.extract_i16(&pcm, batch).unwrap(),
        ex.extract(&as_f32, batch).unwrap()
    );

    assert!(matches!(
        ex.extract(&wave[..31_999], 2),
        Err(ModelError::Input { .. })
    ));
    assert!(matches!(
        ex.extract(&wave[..200], 2),
        Err(ModelError::Input { .. })
    ));
    let e = Extractor::load(
        &dir,
        &ExtractOptions {
            output: SslOutput::HiddenState(3),
            ..cpu
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("hidden state 3"), "{e}");
}
