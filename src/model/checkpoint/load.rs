//! Strict state-dict loading into a `VarStore`: key normalisation (the `wav2vec2.` prefix,
//! both weight-norm spellings), missing / unexpected / mis-shaped keys as errors naming the
//! key, dtype and device conversion.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tch::Tensor;
use tch::nn::VarStore;

use super::{HfFiles, refuse_pickle_state_dict};
use crate::model::error::{ModelError, TorchContext};

/// A named tensor and the file it came from.
pub(crate) struct Named {
    pub name: String,
    pub tensor: Tensor,
    pub file: PathBuf,
}

/// Reads every tensor of a safetensors file (refusing pickles).
pub(crate) fn read_safetensors(path: &Path) -> Result<Vec<Named>, ModelError> {
    refuse_pickle_state_dict(path)?;
    if !path.is_file() {
        return Err(ModelError::MissingFile {
            path: path.to_path_buf(),
            hint: "expected a safetensors file".into(),
        });
    }
    let tensors = Tensor::read_safetensors(path).ctx(|| format!("reading `{}`", path.display()))?;
    Ok(tensors
        .into_iter()
        .map(|(name, tensor)| Named {
            name,
            tensor,
            file: path.to_path_buf(),
        })
        .collect())
}

/// Rewrites the old weight-norm spelling of the positional conv (`weight_g`, `weight_v`) to the
/// parametrization names (`parametrizations.weight.original0/1`) used in memory.
pub(crate) fn normalize_key(key: &str) -> String {
    if let Some(stem) = key.strip_suffix("pos_conv_embed.conv.weight_g") {
        return format!("{stem}pos_conv_embed.conv.parametrizations.weight.original0");
    }
    if let Some(stem) = key.strip_suffix("pos_conv_embed.conv.weight_v") {
        return format!("{stem}pos_conv_embed.conv.parametrizations.weight.original1");
    }
    key.to_string()
}

/// The model tensors of a Hugging Face wav2vec2 folder, keys normalised and stripped of the
/// `wav2vec2.` prefix of `...ForPreTraining`/`...ForCTC` checkpoints. Returns the tensors and the
/// head keys that were set aside (quantizer, projections, `lm_head`).
pub(crate) fn read_hf_ssl(files: &HfFiles) -> Result<(Vec<Named>, Vec<String>), ModelError> {
    let mut all = Vec::new();
    for w in &files.weights {
        all.extend(read_safetensors(w)?);
    }
    let prefixed = all.iter().any(|n| n.name.starts_with("wav2vec2."));
    let mut model = Vec::new();
    let mut head = Vec::new();
    for mut n in all {
        if prefixed {
            match n.name.strip_prefix("wav2vec2.") {
                Some(rest) => n.name = rest.to_string(),
                None => {
                    head.push(n.name);
                    continue;
                }
            }
        }
        n.name = normalize_key(&n.name);
        model.push(n);
    }
    head.sort();
    Ok((model, head))
}

/// What a strict load set aside.
#[derive(Debug, Default)]
pub(crate) struct LoadReport {
    /// Keys of the file that `ignorable` accepted without a model parameter.
    pub ignored: Vec<String>,
}

/// Copies `tensors` (names already mapped to the store's names) into the variables of `vs` for
/// which `scope` is true. Every such variable must be present with the same shape and every
/// tensor must be one of them, except names for which `ignorable` is true. Values are converted
/// to the variable's dtype and device.
pub(crate) fn load_strict(
    vs: &VarStore,
    tensors: Vec<Named>,
    fallback_path: &Path,
    scope: &dyn Fn(&str) -> bool,
    ignorable: &dyn Fn(&str) -> bool,
) -> Result<LoadReport, ModelError> {
    let vars: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(k, _)| scope(k))
        .collect();
    let mut by_name: BTreeMap<String, Named> = BTreeMap::new();
    for n in tensors {
        by_name.insert(n.name.clone(), n);
    }
    let mut report = LoadReport::default();
    for (name, n) in &by_name {
        if !vars.contains_key(name) {
            if ignorable(name) {
                report.ignored.push(name.clone());
            } else {
                return Err(ModelError::UnexpectedKey {
                    key: name.clone(),
                    path: n.file.clone(),
                });
            }
        }
    }
    let present: BTreeSet<&String> = by_name.keys().collect();
    if let Some(missing) = vars.keys().find(|k| !present.contains(k)) {
        let path = by_name
            .values()
            .next()
            .map(|n| n.file.clone())
            .unwrap_or_else(|| fallback_path.to_path_buf());
        return Err(ModelError::MissingKey {
            key: missing.clone(),
            path,
        });
    }
    for (name, var) in &vars {
        let n = &by_name[name];
        if n.tensor.size() != var.size() {
            return Err(ModelError::ShapeMismatch {
                key: name.clone(),
                path: n.file.clone(),
                expected: var.size(),
                found: n.tensor.size(),
            });
        }
    }
    tch::no_grad(|| -> Result<(), ModelError> {
        for (name, var) in &vars {
            let src = &by_name[name].tensor;
            let mut dst = var.shallow_clone();
            dst.f_copy_(&src.to_kind(var.kind()))
                .ctx(|| format!("loading `{name}`"))?;
        }
        Ok(())
    })?;
    Ok(report)
}

/// The variables of `vs` as `(name, tensor)` sorted by name, moved to the CPU (for saving).
pub(crate) fn sorted_cpu_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().to_device(tch::Device::Cpu)))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Writes named tensors to a safetensors file (sorted by name; byte-reproducible).
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
) -> Result<(), ModelError> {
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&refs, path).ctx(|| format!("writing `{}`", path.display()))
}
