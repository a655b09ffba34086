//! Corpus layer on real folders: the parallel sorted walk with its problems, generated
//! sources, and a scan → split → probe → metadata run built from library calls only (what the
//! `scan_corpus` and `build_metadata` adapters do).

mod audio_support;

use std::os::unix::fs::symlink;
use std::path::Path;

use audio_support::*;
use brspeech::audio::{ProbeParams, probe_file};
use brspeech::corpus::split::Split;
use brspeech::corpus::{
    CorpusFile, MetadataRow, Origin, RejectedRow, SourceDef, SplitConfig, WalkProblem,
    compute_stats, generate_key, generated_name, read_split_csvs, read_stats, read_texts,
    run_generate, split_corpus, validate_sources, walk_sources, write_rejected, write_split_csvs,
    write_stats,
};

fn touch(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn defs(yaml: &str) -> Vec<SourceDef> {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn walk_is_sorted_counts_skips_and_reports_problems() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    for i in (0..40).rev() {
        touch(
            &a.join(format!("spk{}/train/utt{i:02}.flac", i % 4)),
            &[1; 10],
        );
    }
    touch(&a.join("spk0/train/LOUD.WAV"), &[2; 7]);
    touch(&a.join("spk0/notes.txt"), b"x");
    touch(&a.join("train.csv"), b"x");
    touch(&a.join("spk1/.hidden.flac"), b"x");
    touch(&a.join(".cache/x.flac"), b"x");
    touch(&a.join("spk2/old_bad.flac"), b"x");
    symlink(&a, a.join("spk3/loop")).unwrap();
    symlink(a.join("nowhere"), a.join("spk3/dangling.flac")).unwrap();
    let b = dir.path().join("b");
    touch(&b.join("z.mp3"), &[3; 5]);
    touch(&b.join("sub/y.ogg"), &[3; 5]);
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();

    let sources = validate_sources(
        &defs(
            r#"
- { name: tts-b, label: spoof, root: b }
- { name: real-a, label: bonafide, root: a, exclude: ["*_bad.flac"] }
- { name: nothing, label: spoof, root: empty }
"#,
        ),
        dir.path(),
    )
    .unwrap();
    let report = walk_sources(&sources);

    // Sorted by (source, path), whatever the order of creation and of the walker threads.
    let keys: Vec<(String, String)> = report
        .files
        .iter()
        .map(|f| (f.source.clone(), f.path.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(report.files.len(), 41 + 2);
    assert_eq!(keys[0], ("real-a".into(), "spk0/train/LOUD.WAV".into()));
    assert_eq!(keys.last().unwrap(), &("tts-b".into(), "z.mp3".into()));
    let loud = &report.files[0];
    assert_eq!(loud.size, 7);
    assert_eq!(loud.abs, a.join("spk0/train/LOUD.WAV"));

    let scan_a = report.sources.iter().find(|s| s.name == "real-a").unwrap();
    assert_eq!(scan_a.files, 41);
    assert_eq!(scan_a.bytes, 40 * 10 + 7);
    assert_eq!(scan_a.skipped_non_audio, 2, "notes.txt and train.csv");
    assert_eq!(scan_a.excluded, 1);
    assert_eq!(scan_a.hidden, 1);
    assert_eq!(report.empty_sources(), vec!["nothing"]);

    // The loop and the dangling link are reported with their paths; the walk went on.
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, WalkProblem::Loop { source, path, .. }
            if source == "real-a" && path.ends_with("spk3/loop"))),
        "{:#?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, WalkProblem::Unreadable { path, .. }
            if path.ends_with("spk3/dangling.flac"))),
        "{:#?}",
        report.problems
    );
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|t| t.contains("symlink loop")), "{text:?}");

    // The same tree walks to the same report again.
    assert_eq!(walk_sources(&sources), report);
}

#[test]
fn generated_source_runs_once_per_text_into_the_given_path() {
    let dir = tempfile::tempdir().unwrap();
    let voice = dir.path().join("voice.wav");
    write_wav_i16(&voice, 22_050, 1, &sine(22_050, 300.0, 0.4, 0.6));
    touch(
        &dir.path().join("texts.txt"),
        "# frases\nolá mundo\nbom dia\n\nolá mundo\n".as_bytes(),
    );
    let cmd = format!("cp {} {{out}} && test -n {{text}}", voice.display());
    let sources = validate_sources(
        &defs(&format!(
            "- {{ name: tts, label: spoof, generate: {{ cmd: '{cmd}', texts: texts.txt }} }}"
        )),
        dir.path(),
    )
    .unwrap();
    let Origin::Generate(g) = &sources[0].origin else {
        panic!("generated source expected")
    };
    let texts = read_texts(&g.texts).unwrap();
    assert_eq!(texts, vec!["olá mundo", "bom dia"]);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut names = Vec::new();
    for text in &texts {
        let key = generate_key(&g.cmd, text);
        let name = generated_name(&key, &g.ext);
        run_generate(&g.cmd, text, &out_dir.join(&name)).unwrap();
        let info = probe_file(&out_dir.join(&name), &ProbeParams::default()).unwrap();
        assert_eq!(info.sample_rate, 22_050);
        names.push(name);
    }
    assert_ne!(names[0], names[1]);
    assert!(names.iter().all(|n| n.ends_with(".wav")));

    // A failing TTS command reports its status and stderr.
    let err = run_generate(
        "echo 'voice not found' >&2; exit 2 # {text} {out}",
        "x",
        &out_dir.join("f.wav"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("status 2") && err.contains("voice not found"),
        "{err}"
    );
}

#[test]
fn scan_split_probe_and_metadata_from_library_calls() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let spoof = dir.path().join("spoof");
    // A BRSpeech-like real source (pipe-delimited CSVs with client_id) and a BRSpeech-DF-like
    // spoof source (train/dev/test folders), plus bad files.
    let mut csv = std::collections::BTreeMap::new();
    for (split, file, speakers) in [
        ("train", "train.csv", ["ana", "bia"]),
        ("dev", "dev.csv", ["caio", "caio"]),
        ("test", "test.csv", ["duda", "duda"]),
    ] {
        let mut text = String::from("wav_filename|wav_filesize|transcript|client_id\n");
        for (i, sp) in speakers.iter().enumerate() {
            let rel = format!("{split}/audio/{sp}_{i}.flac");
            write_flac(&real.join(&rel).with_extension("flac"), 24_000, 1, &{
                std::fs::create_dir_all(real.join(split).join("audio")).unwrap();
                sine(24_000, 220.0 + 50.0 * i as f64, 0.3, 1.5)
            });
            text.push_str(&format!("{rel}|1|texto, com vírgula|{sp}\n"));
        }
        csv.insert(file, text);
    }
    for (file, text) in &csv {
        touch(&real.join(file), text.as_bytes());
    }
    for split in ["train", "dev", "test"] {
        let p = spoof.join(format!("f5tts/{split}/audio/x.flac"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_flac(&p, 44_100, 1, &sine(44_100, 330.0, 0.3, 1.0));
    }
    touch(&spoof.join("f5tts/train/audio/empty.flac"), b"");
    let cut = flac_bytes(16_000, 1, &sine(16_000, 440.0, 0.3, 2.0));
    touch(
        &spoof.join("f5tts/test/audio/cut.flac"),
        &cut[..cut.len() / 2],
    );
    let p = spoof.join("f5tts/misc/nosplit.flac");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    write_flac(&p, 16_000, 1, &sine(16_000, 330.0, 0.3, 1.0));

    let sources = validate_sources(
        &defs(
            r#"
- name: real
  label: bonafide
  root: real
  split: csv
  speaker: { column: client_id }
- name: f5tts
  label: spoof
  root: spoof/f5tts
  split: folders
"#,
        ),
        dir.path(),
    )
    .unwrap();
    let scan = walk_sources(&sources);
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    assert_eq!(scan.files.len(), 6 + 6);

    let files: Vec<CorpusFile> = scan
        .files
        .iter()
        .map(|f| CorpusFile {
            source: f.source.clone(),
            path: f.path.clone(),
        })
        .collect();
    let placed = split_corpus(&sources, &files, &SplitConfig::default()).unwrap();
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    for (f, p) in scan.files.iter().zip(&placed.placements) {
        let label = sources.iter().find(|s| s.name == f.source).unwrap().label;
        let split = match &p.split {
            Ok(s) => *s,
            Err(_) => {
                rejected.push(RejectedRow {
                    path: f.path.clone(),
                    source: f.source.clone(),
                    reason: "unplaced".into(),
                });
                continue;
            }
        };
        match probe_file(&f.abs, &ProbeParams::default()) {
            Ok(info) => rows.push(MetadataRow {
                path: f.path.clone(),
                label: label.to_string(),
                source: f.source.clone(),
                split,
                speaker: p.speaker.clone().unwrap_or_default(),
                duration_s: info.duration_s,
                sample_rate: info.sample_rate,
                channels: info.channels,
                digest: blake3::hash(&std::fs::read(&f.abs).unwrap())
                    .to_hex()
                    .to_string(),
            }),
            Err(e) => rejected.push(RejectedRow {
                path: f.path.clone(),
                source: f.source.clone(),
                reason: e.reason().unwrap().to_string(),
            }),
        }
    }
    let out = dir.path().join("meta");
    std::fs::create_dir(&out).unwrap();
    write_split_csvs(&out, &rows).unwrap();
    write_rejected(&out.join("rejected.csv"), &rejected).unwrap();
    write_stats(&out.join("stats.json"), &compute_stats(&rows, &rejected)).unwrap();

    let back = read_split_csvs(&out).unwrap();
    assert_eq!(back.len(), 9);
    let rejected_text = std::fs::read_to_string(out.join("rejected.csv")).unwrap();
    assert_eq!(
        rejected_text,
        "path,source,reason\n\
         misc/nosplit.flac,f5tts,unplaced\n\
         test/audio/cut.flac,f5tts,truncated\n\
         train/audio/empty.flac,f5tts,zero_byte\n"
    );
    let stats = read_stats(&out.join("stats.json")).unwrap();
    assert_eq!(stats.splits["train"].total.files, 3);
    assert_eq!(stats.splits["train"].speakers, 2);
    assert_eq!(stats.splits["val"].sources["real"]["bonafide"].files, 2);
    assert!((stats.splits["test"].sources["real"]["bonafide"].hours - 3.0 / 3600.0).abs() < 1e-9);
    assert_eq!(stats.splits["test"].sources["f5tts"]["spoof"].files, 1);
    assert!(stats.speakers_in_several_splits.is_empty());
    assert_eq!(stats.rejected.total, 3);
    let val = back
        .iter()
        .find(|r| r.split == Split::Val && r.source == "real")
        .unwrap();
    assert_eq!(
        (val.speaker.as_str(), val.sample_rate, val.channels),
        ("caio", 24_000, 1)
    );
}
