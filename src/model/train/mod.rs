//! The training library behind `train_aasist`: configuration (the reference recipe as
//! defaults), the data-set trait the stage adapter implements over shard files, training events
//! for `train_log.jsonl`, and (with the `torch` feature) the loop itself with Adam, validation,
//! model selection, early stopping and resumable per-epoch checkpoints.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::checkpoint::SslSection;
use crate::model::options::{DeviceChoice, Preprocessing, SslOutput};

#[cfg(feature = "torch")]
mod adam;
#[cfg(feature = "torch")]
mod gpu;
#[cfg(feature = "torch")]
mod trainer;

#[cfg(feature = "torch")]
pub use adam::Adam;
#[cfg(feature = "torch")]
pub use trainer::train;

/// Weight of the bona fide (positive) class in the BCE loss.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum PosWeight {
    /// The reference's `n_spoof / (n_spoof + n_bona)` (about 0.83 at 5:1).
    #[default]
    Reference,
    /// `n_spoof / n_bona` (classes weigh the same).
    Balanced,
    /// No weight.
    None,
    /// A fixed number.
    Value(f64),
}

impl PosWeight {
    /// The weight for the given class counts (`None` = unweighted).
    pub fn resolve(self, n_bona: usize, n_spoof: usize) -> Option<f64> {
        match self {
            PosWeight::Reference => Some(n_spoof as f64 / (n_spoof + n_bona).max(1) as f64),
            PosWeight::Balanced => Some(n_spoof as f64 / n_bona.max(1) as f64),
            PosWeight::None => None,
            PosWeight::Value(v) => Some(v),
        }
    }
}

impl Serialize for PosWeight {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PosWeight::Reference => s.serialize_str("reference"),
            PosWeight::Balanced => s.serialize_str("balanced"),
            PosWeight::None => s.serialize_str("none"),
            PosWeight::Value(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for PosWeight {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Number(v) if v.is_finite() && v > 0.0 => Ok(PosWeight::Value(v)),
            Raw::Number(v) => Err(serde::de::Error::custom(format!(
                "`pos_weight` must be positive, got {v}"
            ))),
            Raw::Name(n) => match n.as_str() {
                "reference" => Ok(PosWeight::Reference),
                "balanced" => Ok(PosWeight::Balanced),
                "none" => Ok(PosWeight::None),
                other => Err(serde::de::Error::custom(format!(
                    "unknown `pos_weight` `{other}`: use `reference`, `balanced`, `none` or a number"
                ))),
            },
        }
    }
}

/// Validation metric that picks the best epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    /// Lowest validation EER; among equal EERs the lower validation loss (an easy validation
    /// set reaches EER 0 early, and the loss still tells a better-fitted epoch), then the
    /// earliest epoch.
    #[default]
    ValEer,
    /// Highest validation accuracy at logit >= 0 (the reference; ties: the earliest epoch).
    ValAccuracy,
}

/// Training hyper-parameters; the defaults are the reference recipe (spec §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs (25).
    pub epochs: usize,
    /// Items per step (4).
    pub batch_size: usize,
    /// Adam learning rate (5e-6).
    pub lr: f64,
    /// L2 weight decay added to the gradient, as torch `Adam(weight_decay)` (5e-7).
    pub weight_decay: f64,
    /// Adam betas (0.9, 0.999).
    pub betas: (f64, f64),
    /// Adam epsilon (1e-8).
    pub eps: f64,
    /// Loss weight of the bona fide class.
    pub pos_weight: PosWeight,
    /// Model selection.
    pub select_by: SelectBy,
    /// Stop after this many epochs without improvement (`None`: never).
    pub patience: Option<usize>,
    /// Stop as soon as validation accuracy reaches 100 % (the reference wrapper's rule).
    pub stop_on_perfect: bool,
    /// Seed of initialisation, shuffling, dropout and masking.
    pub seed: u64,
    /// Drop the last incomplete training batch (the reference loader does).
    pub drop_last: bool,
    /// Emit a step event every this many steps (0: never).
    pub log_every: usize,
    /// Device.
    pub device: DeviceChoice,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 25,
            batch_size: 4,
            lr: 5e-6,
            weight_decay: 5e-7,
            betas: (0.9, 0.999),
            eps: 1e-8,
            pos_weight: PosWeight::Reference,
            select_by: SelectBy::ValEer,
            patience: None,
            stop_on_perfect: false,
            seed: 42,
            drop_last: true,
            log_every: 100,
            device: DeviceChoice::Auto,
        }
    }
}

/// What is trained.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainMode {
    /// `ssl: frozen`: the back end on cached SSL features (items are [`Input::Features`]); the
    /// checkpoint names the SSL by `ssl.digest` (build it with [`SslSection::external`]).
    Frozen {
        /// The SSL the features came from (`embedded: false`).
        ssl: SslSection,
    },
    /// `ssl: finetune`: wav2vec2 + AASIST end to end from waveforms (items are
    /// [`Input::Waveform`]), the SSL initialised from a Hugging Face folder and in training mode.
    Finetune {
        /// The Hugging Face wav2vec2 folder.
        ssl_dir: PathBuf,
        /// The SSL tensor the back end reads.
        output: SslOutput,
    },
}

/// One item's input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// SSL features `[frames, dim]` (frozen mode).
    Features {
        /// `frames * dim` values, row-major.
        data: Vec<half::f16>,
        /// Frames T.
        frames: usize,
        /// Width D.
        dim: usize,
    },
    /// A preprocessed 16 kHz clip (finetune mode).
    Waveform(Vec<f32>),
}

/// A batch of inputs of equal shape.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchInput {
    /// `[batch, frames, dim]` features.
    Features {
        /// Values, row-major.
        data: Vec<half::f16>,
        /// Items.
        batch: usize,
        /// Frames T.
        frames: usize,
        /// Width D.
        dim: usize,
    },
    /// `[batch, samples]` waveforms.
    Waveforms {
        /// Values, row-major.
        data: Vec<f32>,
        /// Items.
        batch: usize,
        /// Samples per clip.
        samples: usize,
    },
}

/// A data set for training or validation. Labels: `true` = bona fide (1), `false` = spoof (0).
///
/// The stage adapter implements it over shard files; [`InMemoryData`] is the implementation for
/// tests and small runs. `Sync` because a loader thread prefetches batches.
pub trait TrainData: Sync {
    /// Number of items.
    fn len(&self) -> usize;
    /// Whether the set is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Label of item `index` (cheap: used for class counts and EER).
    fn label(&self, index: usize) -> bool;
    /// Input of item `index`.
    fn input(&self, index: usize) -> Result<Input, String>;
    /// Inputs of several items stacked into a batch (override to read shard rows in bulk).
    fn batch(&self, indices: &[usize]) -> Result<BatchInput, (usize, String)> {
        stack(self, indices)
    }
}

/// The default [`TrainData::batch`]: reads each item and stacks them.
pub fn stack<D: TrainData + ?Sized>(
    data: &D,
    indices: &[usize],
) -> Result<BatchInput, (usize, String)> {
    let mut out: Option<BatchInput> = None;
    for &i in indices {
        let item = data.input(i).map_err(|e| (i, e))?;
        match (&mut out, item) {
            (
                None,
                Input::Features {
                    data: d,
                    frames,
                    dim,
                },
            ) => {
                let mut v = Vec::with_capacity(indices.len() * d.len());
                v.extend_from_slice(&d);
                out = Some(BatchInput::Features {
                    data: v,
                    batch: 1,
                    frames,
                    dim,
                });
            }
            (None, Input::Waveform(w)) => {
                let samples = w.len();
                let mut v = Vec::with_capacity(indices.len() * samples);
                v.extend_from_slice(&w);
                out = Some(BatchInput::Waveforms {
                    data: v,
                    batch: 1,
                    samples,
                });
            }
            (
                Some(BatchInput::Features {
                    data: v,
                    batch,
                    frames,
                    dim,
                }),
                Input::Features {
                    data: d,
                    frames: f,
                    dim: dd,
                },
            ) => {
                if (f, dd) != (*frames, *dim) {
                    return Err((
                        i,
                        format!("features are [{f}, {dd}], the batch has [{frames}, {dim}]"),
                    ));
                }
                v.extend_from_slice(&d);
                *batch += 1;
            }
            (
                Some(BatchInput::Waveforms {
                    data: v,
                    batch,
                    samples,
                }),
                Input::Waveform(w),
            ) => {
                if w.len() != *samples {
                    return Err((
                        i,
                        format!("clip has {} samples, the batch has {samples}", w.len()),
                    ));
                }
                v.extend_from_slice(&w);
                *batch += 1;
            }
            _ => return Err((i, "mixes features and waveforms".into())),
        }
    }
    out.ok_or((0, "empty batch".into()))
}

/// A data set held in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InMemoryData {
    /// Inputs.
    pub inputs: Vec<Input>,
    /// Labels (`true` = bona fide).
    pub labels: Vec<bool>,
}

impl TrainData for InMemoryData {
    fn len(&self) -> usize {
        self.inputs.len()
    }
    fn label(&self, index: usize) -> bool {
        self.labels[index]
    }
    fn input(&self, index: usize) -> Result<Input, String> {
        self.inputs
            .get(index)
            .cloned()
            .ok_or_else(|| format!("no item {index}"))
    }
}

/// The EER function used for validation: logits (higher = bona fide) and labels (`true` = bona
/// fide) → EER in [0, 1]. The metrics layer provides the ASVspoof definition.
pub type EerFn<'a> = &'a (dyn Fn(&[f64], &[bool]) -> f64 + Sync);

/// Metrics of one finished epoch (one line of `train_log.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy at logit >= 0.
    pub train_accuracy: f64,
    /// Mean validation loss (same criterion).
    pub val_loss: f64,
    /// Validation accuracy at logit >= 0.
    pub val_accuracy: f64,
    /// Validation EER.
    pub val_eer: f64,
    /// Learning rate.
    pub lr: f64,
    /// Training items per second.
    pub items_per_s: f64,
    /// Wall time of the epoch (training + validation + checkpoint), seconds.
    pub seconds: f64,
    /// GPU memory used by this process, bytes (CUDA only).
    pub gpu_memory_bytes: Option<u64>,
    /// Whether this epoch is the best so far by `select_by`.
    pub best: bool,
}

/// Progress reported to the caller's callback; serialises as one `train_log.jsonl` object
/// tagged by `"event"` (`started`, `step`, `epoch`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    /// Training (re)starts.
    Started {
        /// First epoch to run (> 1 when resuming).
        first_epoch: usize,
        /// Last epoch.
        epochs: usize,
        /// Steps per epoch.
        steps_per_epoch: usize,
        /// Training items.
        train_items: usize,
        /// Validation items.
        val_items: usize,
        /// The device in use.
        device: String,
        /// The loss weight of the bona fide class.
        pos_weight: Option<f64>,
        /// Parameters being trained.
        parameters: i64,
    },
    /// Every `log_every` steps.
    Step {
        /// Epoch, from 1.
        epoch: usize,
        /// Step within the epoch, from 1.
        step: usize,
        /// Steps in the epoch.
        steps: usize,
        /// Mean loss over the steps since the previous step event.
        loss: f64,
        /// Learning rate.
        lr: f64,
        /// Items per second since the epoch started.
        items_per_s: f64,
        /// GPU memory used by this process (CUDA only).
        gpu_memory_bytes: Option<u64>,
    },
    /// An epoch finished and its checkpoint is written.
    Epoch(EpochMetrics),
}

/// How a training run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Every epoch's metrics (the resumed ones included).
    pub history: Vec<EpochMetrics>,
    /// The selected epoch.
    pub best_epoch: usize,
    /// Model checkpoint folder (`config.json` + `model.safetensors`) of the selected epoch.
    pub best_model: PathBuf,
    /// Model checkpoint folder of the last epoch.
    pub last_model: PathBuf,
    /// Stopped by patience or a perfect validation accuracy.
    pub stopped_early: bool,
    /// Stopped because the callback asked to (resumable).
    pub interrupted: bool,
}

/// Everything a run needs besides the data.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSpec {
    /// Frozen or fine-tuned SSL.
    pub mode: TrainMode,
    /// Preprocessing recorded in the checkpoints.
    pub preprocessing: Preprocessing,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Folder for per-epoch checkpoints; a killed run resumes from it.
    pub run_dir: PathBuf,
    /// The config key that sets the batch size (named by out-of-memory errors).
    pub batch_size_key: String,
    /// The stage name (named by out-of-memory errors).
    pub stage: String,
}

#[cfg(not(feature = "torch"))]
/// Without libtorch: [`crate::model::ModelError::TorchDisabled`].
pub fn train(
    _spec: &TrainSpec,
    _train_data: &dyn TrainData,
    _val_data: &dyn TrainData,
    _eer: EerFn<'_>,
    _on_event: &mut dyn FnMut(&TrainEvent) -> std::ops::ControlFlow<()>,
) -> Result<TrainOutcome, crate::model::ModelError> {
    Err(crate::model::ModelError::TorchDisabled {
        entry: "train_aasist",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pos_weight_rules() {
        assert!((PosWeight::Reference.resolve(1, 5).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(PosWeight::Balanced.resolve(2, 10), Some(5.0));
        assert_eq!(PosWeight::None.resolve(2, 10), None);
        assert_eq!(PosWeight::Value(0.3).resolve(2, 10), Some(0.3));
        for (text, want) in [
            ("\"reference\"", PosWeight::Reference),
            ("\"balanced\"", PosWeight::Balanced),
            ("\"none\"", PosWeight::None),
            ("2.5", PosWeight::Value(2.5)),
        ] {
            let got: PosWeight = serde_json::from_str(text).unwrap();
            assert_eq!(got, want);
            assert_eq!(serde_json::to_string(&got).unwrap(), text);
        }
        let e = serde_json::from_str::<PosWeight>("\"heavy\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`heavy`"), "{e}");
        assert!(serde_json::from_str::<PosWeight>("-1").is_err());
    }

    #[test]
    fn defaults_are_the_reference_recipe() {
        let c = TrainConfig::default();
        assert_eq!(
            (c.epochs, c.batch_size, c.lr, c.weight_decay, c.betas, c.eps),
            (25, 4, 5e-6, 5e-7, (0.9, 0.999), 1e-8)
        );
        assert_eq!(c.select_by, SelectBy::ValEer);
        let parsed: TrainConfig =
            serde_json::from_str(r#"{"select_by": "val_accuracy", "patience": 5}"#).unwrap();
        assert_eq!(parsed.select_by, SelectBy::ValAccuracy);
        assert_eq!(parsed.patience, Some(5));
        assert!(serde_json::from_str::<TrainConfig>(r#"{"learning_rate": 1}"#).is_err());
    }

    #[test]
    fn events_serialise_as_tagged_json_lines() {
        let m = EpochMetrics {
            epoch: 2,
            train_loss: 0.5,
            train_accuracy: 0.75,
            val_loss: 0.4,
            val_accuracy: 0.8,
            val_eer: 0.1,
            lr: 5e-6,
            items_per_s: 100.0,
            seconds: 3.0,
            gpu_memory_bytes: None,
            best: true,
        };
        let line = serde_json::to_value(TrainEvent::Epoch(m)).unwrap();
        assert_eq!(line["event"], "epoch");
        assert_eq!(line["val_eer"], 0.1);
        let step = TrainEvent::Step {
            epoch: 1,
            step: 10,
            steps: 20,
            loss: 0.6,
            lr: 5e-6,
            items_per_s: 9.0,
            gpu_memory_bytes: Some(7),
        };
        let line = serde_json::to_value(step).unwrap();
        assert_eq!(
            (line["event"].as_str(), line["gpu_memory_bytes"].as_u64()),
            (Some("step"), Some(7))
        );
    }

    #[test]
    fn stacking_checks_shapes() {
        let d = InMemoryData {
            inputs: vec![
                Input::Waveform(vec![0.0; 4]),
                Input::Waveform(vec![1.0; 4]),
                Input::Waveform(vec![1.0; 3]),
            ],
            labels: vec![true, false, true],
        };
        match d.batch(&[1, 0]).unwrap() {
            BatchInput::Waveforms {
                data,
                batch,
                samples,
            } => {
                assert_eq!((batch, samples), (2, 4));
                assert_eq!(&data[..4], &[1.0; 4]);
            }
            other => panic!("{other:?}"),
        }
        let (i, e) = d.batch(&[0, 2]).unwrap_err();
        assert_eq!(i, 2);
        assert!(e.contains("3 samples"), "{e}");
    }
}
