//! The model commands of the command line: `model import`, `model export`, `predict`,
//! `doctor`, and the runtime line of `--version` (docs/model.md, docs/cli.md). Thin layers over
//! the `model` and `audio` libraries; their errors map to exit codes in `error.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use rayon::prelude::*;
use serde::Serialize;

use crate::audio::{ChunkParams, CropMode, chunk_file};
use crate::error::{ENVIRONMENT, Error, OK};
use crate::model::{
    ChannelPolicy, CheckpointConfig, Detector, DetectorOptions, DeviceChoice, ExportOptions,
    ImportOptions, OomHint, Precision, Preprocessing, SslOutput, export_checkpoint,
    import_checkpoint, runtime_info,
};

/// `brspeech model ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// Build a model checkpoint from a Hugging Face wav2vec2 folder and a reference AASIST
    /// state dict (safetensors).
    Import(ImportArgs),
    /// Write a checkpoint's back end, SSL or whole state dict in the reference formats.
    Export(ExportArgs),
}

/// `on` / `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `brspeech model import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// Hugging Face wav2vec2 folder (`config.json` + `model.safetensors`).
    #[arg(long, value_name = "HF_DIR")]
    ssl: PathBuf,
    /// Reference AASIST state dict as safetensors: the back-end keys (`LL.weight`, ...), or the
    /// whole `W2V_AASIST` state dict of a fine-tuned model.
    #[arg(long, value_name = "AASIST.safetensors")]
    backend: PathBuf,
    /// Samples per clip the model was trained on.
    #[arg(long, default_value_t = 64_600, value_name = "N")]
    samples: usize,
    /// Sample rate of the clips.
    #[arg(long, default_value_t = 16_000, value_name = "HZ")]
    sample_rate: u32,
    /// Silence trimming before cropping (the reference trims).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    trim: OnOff,
    /// Channel policy: `first` (the reference) or `mean`.
    #[arg(long, default_value = "first", value_parser = parse_channel)]
    channel: ChannelPolicy,
    /// SSL output the back end reads: `last_hidden_state` or a hidden-state index.
    #[arg(long, default_value = "last_hidden_state", value_parser = parse_layer)]
    layer: SslOutput,
    /// Write a back-end-only checkpoint naming the SSL folder by digest instead of copying
    /// the SSL weights into it.
    #[arg(long)]
    no_embed_ssl: bool,
    /// The checkpoint folder to create (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// `brspeech model export`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true)
    .args(["backend_out", "ssl_out", "state_dict_out"])))]
pub(crate) struct ExportArgs {
    /// The model checkpoint folder.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Write the back-end state dict (reference key names) to FILE.
    #[arg(long, value_name = "FILE")]
    backend_out: Option<PathBuf>,
    /// Write a Hugging Face wav2vec2 folder to DIR (checkpoints that embed the SSL).
    #[arg(long, value_name = "DIR")]
    ssl_out: Option<PathBuf>,
    /// Write the whole reference `W2V_AASIST` state dict to FILE.
    #[arg(long, value_name = "FILE")]
    state_dict_out: Option<PathBuf>,
}

/// `brspeech predict`.
#[derive(Debug, Args)]
pub(crate) struct PredictArgs {
    /// The model checkpoint folder (`config.json` + `model.safetensors`), e.g.
    /// `outputs/<pipeline>/<train stage>/model`.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The SSL folder of a back-end-only (`ssl: frozen`) model [default: the folder the model
    /// records, if it exists here].
    #[arg(long, value_name = "HF_DIR")]
    ssl: Option<PathBuf>,
    /// `auto` (CUDA when available), `cpu`, `cuda`, `cuda:N`.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Files per forward pass.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// SSL precision: `f32`, or `bf16`/`f16` autocast on CUDA.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    dtype: Precision,
    /// Print a JSON array instead of CSV.
    #[arg(long)]
    json: bool,
    /// Audio files to score.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// `brspeech doctor`.
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_channel(s: &str) -> Result<ChannelPolicy, String> {
    s.parse()
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
}

fn parse_layer(s: &str) -> Result<SslOutput, String> {
    if s == "last_hidden_state" {
        return Ok(SslOutput::LastHiddenState);
    }
    s.parse::<usize>().map(SslOutput::HiddenState).map_err(|_| {
        format!("unknown layer `{s}`: use `last_hidden_state` or a hidden-state index")
    })
}

/// Writes to stdout; a closed pipe ends quietly.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|()| o.flush());
}

/// Runs `brspeech model import|export`.
pub(crate) fn cmd_model(c: ModelCommand) -> Result<u8, Error> {
    match c {
        ModelCommand::Import(a) => {
            let opts = ImportOptions {
                ssl_dir: a.ssl,
                backend: a.backend,
                preprocessing: Preprocessing {
                    sample_rate: a.sample_rate,
                    samples: a.samples,
                    trim: a.trim == OnOff::On,
                    channel: a.channel,
                },
                output: a.layer,
                embed_ssl: !a.no_embed_ssl,
                out_dir: a.out,
            };
            {
                let r = import_checkpoint(&opts)?;
                {
                    let mut text = format!(
                        "wrote model checkpoint `{}`: SSL D = {} ({}, weights from `{}`), {} parameters{}\n",
                        r.out_dir.display(),
                        r.ssl_dim,
                        r.ssl_digest.weights,
                        r.ssl_weights_from.display(),
                        r.parameters,
                        if opts.embed_ssl {
                            ""
                        } else {
                            " (back end only)"
                        }
                    );
                    if !r.set_aside.is_empty() {
                        text.push_str(&format!(
                            "set aside {} key(s) of the SSL file that are not part of Wav2Vec2Model: {}\n",
                            r.set_aside.len(),
                            r.set_aside.join(", ")
                        ));
                    }
                    out(&text);
                    Ok(OK)
                }
            }
        }
        ModelCommand::Export(a) => {
            let opts = ExportOptions {
                model_dir: a.model,
                backend_out: a.backend_out,
                ssl_out: a.ssl_out,
                state_dict_out: a.state_dict_out,
            };
            let r = export_checkpoint(&opts)?;
            let text: String = r
                .written
                .iter()
                .map(|p| format!("wrote `{}`\n", p.display()))
                .collect();
            out(&text);
            Ok(OK)
        }
    }
}

/// The SSL folder for a back-end-only model: `--ssl`, else the folder the checkpoint records,
/// relative to the current folder or the workspace root, when it exists.
fn ssl_dir_for(model: &Path, given: Option<PathBuf>) -> Option<PathBuf> {
    if given.is_some() {
        return given;
    }
    let config = CheckpointConfig::read(model).ok()?;
    if config.ssl.embedded {
        return None;
    }
    let source = PathBuf::from(config.ssl.source?);
    let cwd = std::env::current_dir().ok()?;
    [
        cwd.join(&source),
        crate::spec::find_root(&cwd).join(&source),
    ]
    .into_iter()
    .find(|p| p.join("config.json").is_file())
}

/// One line of `predict`'s output.
#[derive(Debug, Serialize)]
struct Prediction {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    logit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Runs `brspeech predict`: CSV `path,logit,score,error` (or JSON) on stdout, one row per file
/// in the order given; files that cannot be read get a row with the error. Exit 0 when every
/// file was scored, 4 when some could not be read.
pub(crate) fn cmd_predict(a: PredictArgs) -> Result<u8, Error> {
    let ssl_dir = ssl_dir_for(&a.model, a.ssl.clone());
    let detector = Detector::load(
        &a.model,
        &DetectorOptions {
            device: a.device,
            precision: a.dtype,
            ssl_dir,
            oom: OomHint::new("predict", "--batch-size"),
        },
    )?;
    if !detector.can_score_waveforms() {
        let digest = detector
            .config()
            .ssl
            .digest
            .as_ref()
            .map(|d| d.weights.clone())
            .unwrap_or_default();
        return Err(Error::Usage {
            message: format!(
                "model `{}` holds only the AASIST back end (trained on frozen SSL features {digest}); pass the SSL folder it was trained with: --ssl HF_DIR",
                a.model.display()
            ),
        });
    }
    let pre = detector.preprocessing().clone();
    let params = ChunkParams {
        sample_rate: pre.sample_rate,
        channels: match pre.channel {
            ChannelPolicy::First => crate::audio::ChannelPolicy::First,
            ChannelPolicy::Mean => crate::audio::ChannelPolicy::Mean,
        },
        trim: pre.trim,
        crop: CropMode::First,
        samples: pre.samples,
        ..ChunkParams::default()
    };
    let batch = a.batch_size as usize;
    let mut csv = (!a.json).then(|| {
        let mut w = csv::Writer::from_writer(std::io::stdout());
        let _ = w.write_record(["path", "logit", "score", "error"]);
        w
    });
    let mut all = Vec::new();
    let mut failed = 0usize;
    for files in a.files.chunks(batch) {
        let clips: Vec<Result<Vec<f32>, String>> = files
            .par_iter()
            .map(|f| {
                chunk_file(f, &params)
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        c.clips
                            .into_iter()
                            .next()
                            .map(|clip| clip.samples)
                            .ok_or_else(|| "no audio".to_owned())
                    })
            })
            .collect();
        let good: Vec<&Vec<f32>> = clips.iter().filter_map(|c| c.as_ref().ok()).collect();
        let logits = if good.is_empty() {
            Vec::new()
        } else {
            let flat: Vec<f32> = good.iter().flat_map(|c| c.iter().copied()).collect();
            detector.score_waveforms(&flat, good.len())?
        };
        let mut logits = logits.into_iter();
        for (file, clip) in files.iter().zip(&clips) {
            let path = file.display().to_string();
            let p = match clip {
                Ok(_) => {
                    let logit = f64::from(logits.next().unwrap_or(f32::NAN));
                    Prediction {
                        path,
                        logit: Some(logit),
                        score: Some(sigmoid(logit)),
                        error: None,
                    }
                }
                Err(e) => {
                    failed += 1;
                    Prediction {
                        path,
                        logit: None,
                        score: None,
                        error: Some(e.clone()),
                    }
                }
            };
            match &mut csv {
                Some(w) => {
                    let _ = w.write_record([
                        p.path.as_str(),
                        &p.logit.map(|v| v.to_string()).unwrap_or_default(),
                        &p.score.map(|v| v.to_string()).unwrap_or_default(),
                        p.error.as_deref().unwrap_or(""),
                    ]);
                    let _ = w.flush();
                }
                None => all.push(p),
            }
        }
    }
    if a.json {
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&all).unwrap_or_default()
        ));
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} file(s) could not be read (their rows carry the error)",
            a.files.len()
        );
        Ok(ENVIRONMENT)
    } else {
        Ok(OK)
    }
}

/// Free and total bytes of the file system holding `path` (or its nearest existing parent).
fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let s = rustix::fs::statvfs(existing).ok()?;
    Some((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

fn gib(b: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let g = b as f64 / f64::from(1u32 << 30);
    format!("{g:.1} GiB")
}

/// Runs `brspeech doctor`: libtorch, CUDA and devices, the cache folder and free disk space.
pub(crate) fn cmd_doctor(cache_flag: Option<&Path>, a: &DoctorArgs) -> u8 {
    let info = runtime_info();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let workspace = crate::spec::find_root(&cwd);
    let cache = cache_flag.map_or_else(|| workspace.join("cache"), Path::to_path_buf);
    let space = disk_space(&cache);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if a.json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "runtime": info,
            "cpu_cores": cores,
            "workspace": workspace,
            "cache": { "path": cache, "exists": cache.is_dir(),
                       "free_bytes": space.map(|s| s.0), "total_bytes": space.map(|s| s.1) },
        });
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
        return OK;
    }
    let mut text = format!("brspeech {}\n", env!("CARGO_PKG_VERSION"));
    let yes = |b: bool| if b { "yes" } else { "no" };
    if info.torch_feature {
        text.push_str(&format!(
            "libtorch:      {} ({})\n",
            info.libtorch_version
                .as_deref()
                .unwrap_or("unknown version"),
            info.libtorch_path.as_deref().unwrap_or("folder unknown")
        ));
    } else {
        text.push_str("libtorch:      not built in (rebuild with the `torch` feature)\n");
    }
    text.push_str(&format!(
        "CUDA:          linked {}, available {}\n",
        yes(info.cuda_linked),
        yes(info.cuda_available)
    ));
    if info.cuda_device_count > 0 {
        text.push_str(&format!(
            "GPUs:          {}{}\n",
            info.cuda_device_count,
            if info.cuda_devices.is_empty() {
                String::new()
            } else {
                format!(" ({})", info.cuda_devices.join(", "))
            }
        ));
        text.push_str(&format!(
            "cuDNN:         {}\n",
            match info.cudnn_version {
                Some(v) if info.cudnn_available => v.to_string(),
                _ => "unavailable".into(),
            }
        ));
    } else {
        text.push_str("GPUs:          none (stages with `device: auto` run on the CPU)\n");
    }
    text.push_str(&format!(
        "CPU:           {cores} core(s), libtorch uses {} thread(s)\n",
        info.cpu_threads
    ));
    text.push_str(&format!("workspace:     {}\n", workspace.display()));
    text.push_str(&format!(
        "cache:         {}{}\n",
        cache.display(),
        if cache.is_dir() {
            ""
        } else {
            " (not created yet)"
        }
    ));
    text.push_str(&match space {
        Some((free, total)) => format!("free disk:     {} of {}\n", gib(free), gib(total)),
        None => "free disk:     unknown\n".into(),
    });
    out(&text);
    OK
}

/// The text of `brspeech --version`: the version and the libtorch runtime.
pub(crate) fn version_text() -> String {
    format!(
        "brspeech {}\n{}\n",
        env!("CARGO_PKG_VERSION"),
        runtime_info()
    )
}
