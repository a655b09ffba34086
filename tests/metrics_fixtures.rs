//! The four EER definitions and the AUC against the reference fixture values
//! (`tests/fixtures/eer/`, copied from the shared parity fixtures; tolerances of their README §2).

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use brspeech::metrics::{
    Label, ScoreSet, auc, eer, eer_argmin_fpr, eer_argmin_mean, eer_interp, roc_curve,
};
use safetensors::{Dtype, SafeTensors};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eer")
}

/// Labels (i64, 1 = bona fide) and scores (f64) of `eer_synthetic_scores.safetensors`.
fn load_scores() -> Result<(Vec<i64>, Vec<f64>)> {
    let path = fixture_dir().join("eer_synthetic_scores.safetensors");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)?;
    let labels = st.tensor("labels")?;
    let scores = st.tensor("scores")?;
    ensure!(
        labels.dtype() == Dtype::I64,
        "labels are {:?}",
        labels.dtype()
    );
    ensure!(
        scores.dtype() == Dtype::F64,
        "scores are {:?}",
        scores.dtype()
    );
    let labels: Vec<i64> = labels
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let scores: Vec<f64> = scores
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Ok((labels, scores))
}

fn load_set() -> Result<ScoreSet> {
    let (labels, scores) = load_scores()?;
    let items = labels
        .iter()
        .zip(&scores)
        .map(|(&l, &s)| Ok((Label::from_int(l).context("label")?, s)))
        .collect::<Result<Vec<_>>>()?;
    Ok(ScoreSet::from_labelled(items, "fixture")?)
}

fn expected() -> Result<serde_json::Value> {
    let path = fixture_dir().join("eer_synthetic.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("fixture has no number `{key}`"))
}

fn close(name: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{name}: got {got:.17}, fixture {want:.17}, |diff| {:.3e} > {tol:e}",
        (got - want).abs()
    );
}

#[test]
fn fixture_shape_is_as_documented() -> Result<()> {
    let set = load_set()?;
    let want = expected()?;
    assert_eq!(set.bonafide().len() as f64, num(&want, "n_bona"));
    assert_eq!(set.spoof().len() as f64, num(&want, "n_spoof"));
    Ok(())
}

#[test]
fn asvspoof_eer_matches_clovaai_compute_eer() -> Result<()> {
    let set = load_set()?;
    let want = expected()?;
    let e = eer(&set);
    close("eer", e.eer, num(&want, "clovaai_compute_eer"), 1e-12);
    close(
        "threshold",
        e.threshold,
        num(&want, "clovaai_threshold"),
        1e-12,
    );
    Ok(())
}

#[test]
fn interpolated_eer_matches_polyglots_brentq() -> Result<()> {
    let set = load_set()?;
    let want = expected()?;
    let e = eer_interp(&set);
    close(
        "eer_interp",
        e.eer,
        num(&want, "polyglots_evaluate_brentq"),
        1e-9,
    );
    close(
        "eer_interp threshold",
        e.threshold,
        num(&want, "polyglots_evaluate_threshold"),
        1e-9,
    );
    Ok(())
}

#[test]
fn argmin_variants_match_the_reference_scripts() -> Result<()> {
    let set = load_set()?;
    let want = expected()?;
    let p = eer_argmin_fpr(&set);
    close(
        "argmin fpr",
        p.eer,
        num(&want, "polyglots_postproc_argmin_fpr"),
        1e-12,
    );
    close(
        "argmin fpr threshold",
        p.threshold,
        num(&want, "polyglots_postproc_threshold"),
        1e-12,
    );
    let r = eer_argmin_mean(&set);
    close(
        "argmin mean",
        r.eer,
        num(&want, "rvirgilli_analyze_scores_mean"),
        1e-12,
    );
    Ok(())
}

#[test]
fn roc_and_auc_match_sklearn() -> Result<()> {
    let set = load_set()?;
    let want = expected()?;
    close("auc", auc(&set), num(&want, "auc"), 1e-12);
    let roc = roc_curve(&set, true);
    assert_eq!(roc.fpr.len() as f64, num(&want, "n_roc_points_sklearn"));
    Ok(())
}

#[test]
fn fixture_eers_are_invariant_under_sigmoid_only_up_to_ties() -> Result<()> {
    // The fixture's scores are logits; a sigmoid is strictly increasing, so as long as it
    // creates no ties (true for these moderate scores) every definition is unchanged.
    let set = load_set()?;
    let sig = set.map(|z| 1.0 / (1.0 + (-z).exp()), "sigmoid")?;
    assert_eq!(eer(&set).eer, eer(&sig).eer);
    assert_eq!(eer_interp(&set).eer, eer_interp(&sig).eer);
    assert_eq!(auc(&set), auc(&sig));
    Ok(())
}

/// `eer_crosscheck.json`: 29 score sets (ties, one-clip classes, separable, inverted, up to
/// 300 × 1500) with the values scikit-learn / scipy give (`make_crosscheck.py`).
#[test]
fn crosscheck_cases_match_sklearn_and_scipy() -> Result<()> {
    let path = fixture_dir().join("eer_crosscheck.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let cases = doc["cases"].as_array().context("cases")?;
    assert!(cases.len() >= 25);
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (mut interp_checked, mut thresholds_checked) = (0, 0);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let set = ScoreSet::new(floats(&c["bonafide"]), floats(&c["spoof"]), name)?;
        let e = eer(&set);
        close(
            &format!("{name} asvspoof"),
            e.eer,
            num(c, "asvspoof_eer"),
            1e-12,
        );
        close(
            &format!("{name} asvspoof threshold"),
            e.threshold,
            num(c, "asvspoof_threshold"),
            1e-12,
        );
        close(&format!("{name} auc"), auc(&set), num(c, "auc"), 1e-12);
        assert_eq!(
            roc_curve(&set, true).fpr.len() as f64,
            num(c, "n_roc_points"),
            "{name} roc points"
        );
        close(
            &format!("{name} argmin fpr"),
            eer_argmin_fpr(&set).eer,
            num(c, "argmin_fpr"),
            1e-12,
        );
        close(
            &format!("{name} argmin mean"),
            eer_argmin_mean(&set).eer,
            num(c, "argmin_mean"),
            1e-12,
        );
        let ip = eer_interp(&set);
        if let Some(want) = c["interp_eer"].as_f64() {
            close(&format!("{name} interp"), ip.eer, want, 1e-9);
            interp_checked += 1;
        }
        if let Some(want) = c["interp_threshold"].as_f64() {
            close(
                &format!("{name} interp threshold"),
                ip.threshold,
                want,
                1e-9,
            );
            thresholds_checked += 1;
        }
    }
    assert_eq!(interp_checked, cases.len());
    assert!(thresholds_checked >= 15, "{thresholds_checked}");
    Ok(())
}
