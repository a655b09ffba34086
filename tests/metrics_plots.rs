//! Plots and the report written by `write_evaluation`: every file present, PNGs decodable with
//! text drawn, SVGs with text, links in the reports pointing at existing files, bytes
//! reproducible.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use brspeech::metrics::{
    EpochRecord, Label, MetricsOptions, ScoreRow, plot_training, read_metrics_json,
    write_evaluation,
};

/// Three spoof sources of different difficulty and two bona fide sources, deterministic.
fn rows() -> Vec<ScoreRow> {
    let mut rows = Vec::new();
    let wave = |i: usize, k: usize| ((i * k) % 97) as f64 / 97.0 - 0.5;
    for i in 0..120 {
        let source = if i % 3 == 0 { "real_b" } else { "real_a" };
        rows.push(ScoreRow {
            path: format!("{source}/spk{}/{i}.flac", i % 7),
            source: source.into(),
            label: Label::Bonafide,
            logit: 1.5 + 3.0 * wave(i, 31),
        });
    }
    for (source, centre, k) in [
        ("tts_easy", -3.0, 17),
        ("tts_mid", -0.5, 29),
        ("tts_hard", 1.0, 41),
    ] {
        for i in 0..90 {
            rows.push(ScoreRow {
                path: format!("{source}/{i}.wav"),
                source: source.into(),
                label: Label::Spoof,
                logit: centre + 3.0 * wave(i, k),
            });
        }
    }
    rows
}

fn epochs() -> Vec<EpochRecord> {
    (1..=6)
        .map(|e| EpochRecord {
            epoch: e,
            train_loss: 0.9 / f64::from(e),
            val_loss: if e == 3 {
                None
            } else {
                Some(1.0 / f64::from(e) + 0.1)
            },
            val_eer: Some(0.3 / f64::from(e)),
            val_accuracy: if e == 2 {
                Some(f64::NAN)
            } else {
                Some(1.0 - 0.2 / f64::from(e))
            },
        })
        .collect()
}

/// Width, height and the number of clearly dark pixels in the top `band` rows.
fn png_info(path: &Path, band: u32) -> Result<(u32, u32, usize)> {
    let decoder = png::Decoder::new(std::fs::File::open(path)?);
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    let row_bytes = info.line_size;
    let mut dark = 0;
    for y in 0..band.min(info.height) as usize {
        let row = &buf[y * row_bytes..(y + 1) * row_bytes];
        dark += row
            .chunks_exact(channels)
            .filter(|px| px.iter().take(3).all(|&c| c < 100))
            .count();
    }
    Ok((info.width, info.height, dark))
}

#[test]
fn evaluation_folder_has_metrics_plots_and_reports() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut run = BTreeMap::new();
    run.insert("stage".to_owned(), serde_json::json!("evaluate"));
    let opts = MetricsOptions::default();
    let ev = write_evaluation(dir.path(), &rows(), &opts, Some(&epochs()), run)?;
    let names: Vec<String> = ev.files.iter().map(|p| p.display().to_string()).collect();
    for want in [
        "metrics.json",
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
        assert!(names.contains(&want.to_owned()), "{want} not in {names:?}");
        assert!(dir.path().join(want).is_file(), "{want} missing");
    }
    let back = read_metrics_json(&dir.path().join("metrics.json"))?;
    // serde_json writes the shortest exact representation but, without its `float_roundtrip`
    // feature, may parse it back one ulp off: compare numbers with a tolerance.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * a.abs().max(1.0);
    assert!(close(back.eer, ev.metrics.eer) && close(back.auc, ev.metrics.auc));
    assert!(close(back.eer_ci95.lo, ev.metrics.eer_ci95.lo));
    assert_eq!(back.confusion, ev.metrics.confusion);
    assert_eq!(back.counts, ev.metrics.counts);
    assert_eq!(back.per_source.len(), 3);
    assert_eq!(back.counts.per_source["real_b"], 40);
    assert_eq!(back.run["stage"], "evaluate");
    assert!(back.per_source["tts_easy"].eer < back.per_source["tts_hard"].eer);

    for stem in ["det", "roc", "histograms", "training"] {
        let png = dir.path().join(format!("plots/{stem}.png"));
        let (w, h, dark) = png_info(&png, 60)?;
        assert!(w >= 800 && h >= 500, "{stem}: {w}x{h}");
        // The title is drawn with the embedded font: dark pixels in the top band.
        assert!(
            dark > 200,
            "{stem}: only {dark} dark pixels in the title band"
        );
        let svg = std::fs::read_to_string(dir.path().join(format!("plots/{stem}.svg")))?;
        assert!(svg.starts_with("<svg") && svg.contains("<text"), "{stem}");
    }
    let det_svg = std::fs::read_to_string(dir.path().join("plots/det.svg"))?;
    for text in [
        "DET curve",
        "all sources (EER",
        "tts_hard (EER",
        "False acceptance rate",
    ] {
        assert!(det_svg.contains(text), "det.svg lacks {text:?}");
    }

    let md = std::fs::read_to_string(dir.path().join("report.md"))?;
    let html = std::fs::read_to_string(dir.path().join("report.html"))?;
    for (source, e) in &back.per_source {
        let cell = format!("{:.2} %", e.eer * 100.0);
        let md_name = source.replace('_', "\\_");
        assert!(
            md.contains(&md_name) && md.contains(&cell),
            "{source} {cell}"
        );
        assert!(
            html.contains(source.as_str()) && html.contains(&cell),
            "{source} {cell}"
        );
    }
    for link in md
        .split("](")
        .skip(1)
        .map(|s| s.split(')').next().unwrap_or_default())
    {
        assert!(
            dir.path().join(link).is_file(),
            "report.md links missing {link}"
        );
    }
    for link in html
        .split("src=\"")
        .skip(1)
        .chain(html.split("href=\"").skip(1))
        .map(|s| s.split('"').next().unwrap_or_default())
    {
        assert!(
            dir.path().join(link).is_file(),
            "report.html links missing {link}"
        );
    }
    Ok(())
}

#[test]
fn outputs_are_byte_for_byte_reproducible() -> Result<()> {
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let opts = MetricsOptions::default();
    let ea = write_evaluation(a.path(), &rows(), &opts, None, BTreeMap::new())?;
    let eb = write_evaluation(b.path(), &rows(), &opts, None, BTreeMap::new())?;
    assert_eq!(ea.files, eb.files);
    assert!(!ea.files.iter().any(|f| f.starts_with("plots/training")));
    for f in &ea.files {
        let (x, y) = (
            std::fs::read(a.path().join(f))?,
            std::fs::read(b.path().join(f))?,
        );
        assert!(x == y, "{} differs between runs", f.display());
    }
    Ok(())
}

#[test]
fn training_curves_need_epochs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let err = plot_training(&[], &dir.path().join("t")).unwrap_err();
    assert!(err.to_string().contains("`epochs`"), "{err}");
    let one = [EpochRecord {
        epoch: 0,
        train_loss: 0.7,
        val_loss: None,
        val_eer: None,
        val_accuracy: None,
    }];
    let files = plot_training(&one, &dir.path().join("t")).context("one epoch")?;
    assert!(files.png.is_file() && files.svg.is_file());
    Ok(())
}

#[test]
fn unwritable_output_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("plots");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let err = write_evaluation(
        dir.path(),
        &rows(),
        &MetricsOptions::default(),
        None,
        BTreeMap::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("plots"), "{err}");
}
