//! `brspeech model import` / `model export`: between a Hugging Face wav2vec2 folder plus a
//! reference AASIST state dict (safetensors, reference key names) and a model checkpoint folder.

use std::path::Path;

use tch::Device;

use crate::model::aasist;
use crate::model::api::{ExportOptions, ExportReport, ImportOptions, ImportReport};
use crate::model::checkpoint::load::{
    load_strict, normalize_key, read_hf_ssl, read_safetensors, write_safetensors,
};
use crate::model::checkpoint::{
    CheckpointConfig, HfFiles, SSL_PREFIX, SslSection, refuse_pickle_state_dict,
};
use crate::model::error::ModelError;
use crate::model::full::{ModelCheckpoint, ensure_fresh_dir, is_backend_key, with_ssl_prefix};
use crate::model::wav2vec2;

/// Builds a model checkpoint folder from a Hugging Face wav2vec2 folder and a reference AASIST
/// state dict. Every tensor is checked strictly (names and shapes) before anything is written.
pub fn import_checkpoint(opts: &ImportOptions) -> Result<ImportReport, ModelError> {
    let files = HfFiles::locate(&opts.ssl_dir)?;
    let (ssl_cfg, raw_config) = wav2vec2::Config::from_file(&files.config)?;
    refuse_pickle_state_dict(&opts.backend)?;
    let backend_tensors: Vec<_> = read_safetensors(&opts.backend)?
        .into_iter()
        .map(|mut n| {
            n.name = normalize_key(&n.name);
            n
        })
        .collect();
    let has_ssl_keys = backend_tensors
        .iter()
        .any(|n| n.name.starts_with(SSL_PREFIX));
    if has_ssl_keys && !opts.embed_ssl {
        return Err(ModelError::config(
            &opts.backend,
            "this state dict holds fine-tuned SSL weights (`ssl_model.model.*`); import it with the SSL embedded",
        ));
    }
    let digest = files.digest()?;
    let config = CheckpointConfig::new(
        SslSection {
            embedded: opts.embed_ssl,
            output: opts.output,
            config: raw_config,
            digest: Some(digest.clone()),
            source: Some(opts.ssl_dir.display().to_string()),
        },
        aasist::Config {
            ssl_dim: ssl_cfg.hidden_size,
        },
        opts.preprocessing.clone(),
    );
    let ckpt = ModelCheckpoint::build(config, Device::Cpu)?;
    let mut set_aside = Vec::new();
    let ssl_weights_from;
    let mut tensors = backend_tensors;
    if opts.embed_ssl && !has_ssl_keys {
        let (ssl_tensors, head) = read_hf_ssl(&files)?;
        set_aside = head;
        tensors.extend(ssl_tensors.into_iter().map(|mut n| {
            n.name = with_ssl_prefix(&n.name);
            n
        }));
        ssl_weights_from = files.dir.clone();
    } else {
        ssl_weights_from = opts.backend.clone();
    }
    let spec_embed = format!("{SSL_PREFIX}masked_spec_embed");
    let report = load_strict(&ckpt.vs, tensors, &opts.backend, &|_| true, &|k| {
        k == spec_embed
    })?;
    set_aside.extend(report.ignored);
    ensure_fresh_dir(&opts.out_dir)?;
    ckpt.save(&opts.out_dir)?;
    Ok(ImportReport {
        out_dir: opts.out_dir.clone(),
        ssl_digest: digest,
        ssl_weights_from,
        ssl_dim: ssl_cfg.hidden_size,
        parameters: ckpt.parameter_count(),
        set_aside,
    })
}

/// Writes the parts of a model checkpoint in the reference's formats: the back-end state dict,
/// a Hugging Face wav2vec2 folder, and/or the whole `W2V_AASIST` state dict.
pub fn export_checkpoint(opts: &ExportOptions) -> Result<ExportReport, ModelError> {
    let ckpt = ModelCheckpoint::load(&opts.model_dir, Device::Cpu)?;
    let state = ckpt.state_dict();
    let mut report = ExportReport::default();
    if let Some(path) = &opts.backend_out {
        let backend: Vec<_> = state
            .iter()
            .filter(|(k, _)| is_backend_key(k))
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect();
        write_file(path, &backend)?;
        report.written.push(path.clone());
    }
    if let Some(dir) = &opts.ssl_out {
        if !ckpt.config.ssl.embedded {
            return Err(ModelError::config(
                opts.model_dir.join("config.json"),
                "this checkpoint holds only the back end; its SSL is the folder named by `ssl.digest`",
            ));
        }
        ensure_fresh_dir(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io("create", dir, e))?;
        let ssl: Vec<_> = state
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(SSL_PREFIX)
                    .map(|s| (s.to_string(), v.shallow_clone()))
            })
            .collect();
        write_file(&dir.join("model.safetensors"), &ssl)?;
        let cfg_path = dir.join("config.json");
        let mut text =
            serde_json::to_string_pretty(&ckpt.config.ssl.config).expect("JSON value serialises");
        text.push('\n');
        std::fs::write(&cfg_path, text).map_err(|e| ModelError::io("write", &cfg_path, e))?;
        report.written.push(dir.clone());
    }
    if let Some(path) = &opts.state_dict_out {
        write_file(path, &state)?;
        report.written.push(path.clone());
    }
    Ok(report)
}

fn write_file(path: &Path, tensors: &[(String, tch::Tensor)]) -> Result<(), ModelError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ModelError::io("create", parent, e))?;
    }
    write_safetensors(path, tensors)
}
