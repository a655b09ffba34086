//! The corpus kinds through the real CLI: `scan_corpus` → `build_metadata` → `chunk_audio` over
//! generated sources (FLAC, WAV int and float, Ogg/Vorbis, MP3, several rates, stereo, bad files
//! of every kind), per-file incremental runs counted through `run --json`, generated sources,
//! determinism across caches, source validation errors, `on_bad_audio: fail`, split rules, and
//! the repeat padding of a ramp read back from a shard.

#[path = "../audio_support/mod.rs"]
pub(super) mod audio;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use audio::{fixture, flac_bytes, interleave, sine, write_flac, write_wav_f32, write_wav_i16};
use brspeech::corpus::{MetadataRow, read_manifest, read_rejected, read_split_csvs, read_stats};
use brspeech::shards::{IndexRow, ShardReader, read_index};

use crate::common::{Out, Test};

fn mkdir(t: &Test, rel: &str) {
    std::fs::create_dir_all(t.path(rel)).unwrap();
}

fn flac(t: &Test, rel: &str, rate: u32, freq: f64, seconds: f64) {
    let p = t.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    write_flac(&p, rate, 1, &sine(rate, freq, 0.4, seconds));
}

fn bytes(t: &Test, rel: &str, content: &[u8]) {
    let p = t.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn copy_fixture(t: &Test, name: &str, rel: &str) {
    bytes(t, rel, &std::fs::read(fixture(name)).unwrap());
}

/// `(items_processed, items_reused)` of `stage` in a `run --json` summary (0 when absent).
fn items(out: &Out, stage: &str) -> (u64, u64) {
    let json = out.json();
    let s = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap_or_else(|| panic!("no stage `{stage}` in {json}"));
    (
        s["items_processed"].as_u64().unwrap_or(0),
        s["items_reused"].as_u64().unwrap_or(0),
    )
}

/// Every file of a stage's output folder, by relative path.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(true) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

fn output(t: &Test, pipeline: &str, stage: &str) -> std::path::PathBuf {
    t.path(&format!("outputs/{pipeline}/{stage}"))
}

const STAGES: &str = r#"
stages:
  scan:
    kind: scan_corpus
  meta:
    kind: build_metadata
    needs: [scan]
    params: PARAMS
  chunk:
    kind: chunk_audio
    needs: [meta]
    params: {buckets: 4}
"#;

fn pipeline(t: &Test, name: &str, sources: &str, meta_params: &str) {
    t.pipeline(&format!(
        "name: {name}\nsources:\n{sources}{}",
        STAGES.replace("PARAMS", meta_params)
    ));
}

/// A BRSpeech-like source (`split: csv`, speakers from `client_id`), a BRSpeech-DF-like one
/// (`split: folders`) holding every codec and every kind of bad file, a hash-split clone source
/// whose speakers partly match the real ones, and a holdout source.
fn mixed_corpus(t: &Test) {
    // real: pipe-delimited CSVs with client_id; FLAC at 16 / 22.05 / 44.1 kHz, float WAV stereo.
    let listing = [
        ("train", "ana", "real/clips/ana_1.flac", 16_000),
        ("train", "ana", "real/clips/ana_2.flac", 22_050),
        ("train", "bia", "real/clips/bia_1.flac", 44_100),
        ("dev", "caio", "real/clips/caio_1.flac", 16_000),
        ("test", "duda", "real/clips/duda_1.flac", 22_050),
    ];
    let mut csv: BTreeMap<&str, String> = BTreeMap::new();
    for (split, speaker, rel, rate) in listing {
        flac(t, rel, rate, 220.0, 1.2);
        csv.entry(split)
            .or_insert_with(|| "wav_filename|wav_filesize|transcript|client_id\n".into())
            .push_str(&format!(
                "{}|1|texto|{speaker}\n",
                rel.trim_start_matches("real/")
            ));
    }
    let stereo = interleave(&[sine(48_000, 300.0, 0.5, 1.0), sine(48_000, 500.0, 0.2, 1.0)]);
    mkdir(t, "real/clips");
    write_wav_f32(&t.path("real/clips/duda_2.wav"), 48_000, 2, &stereo);
    csv.get_mut("test")
        .unwrap()
        .push_str("clips/duda_2.wav|1|texto|duda\n");
    for (split, text) in &csv {
        t.write(&format!("real/{split}.csv"), text);
    }

    // df: train/dev/test folders; FLAC 24 kHz, Ogg/Vorbis stereo, MP3, 16-bit WAV, and bad files.
    flac(t, "df/train/a.flac", 24_000, 330.0, 1.0);
    copy_fixture(t, "tone_22050_stereo.ogg", "df/train/b.ogg");
    copy_fixture(t, "tone_44100.mp3", "df/dev/c.mp3");
    mkdir(t, "df/test");
    write_wav_i16(
        &t.path("df/test/d.wav"),
        32_000,
        1,
        &sine(32_000, 440.0, 0.5, 0.8),
    );
    bytes(t, "df/train/empty.flac", b"");
    let full = flac_bytes(16_000, 1, &sine(16_000, 440.0, 0.5, 2.0));
    bytes(t, "df/train/cut.flac", &full[..full.len() * 6 / 10]);
    let noise: Vec<u8> = (0u32..20_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    bytes(t, "df/dev/noise.wav", &noise);
    copy_fixture(t, "tone_48000.opus", "df/dev/opus.opus");
    mkdir(t, "df/test");
    write_flac(&t.path("df/test/zeros.flac"), 16_000, 1, &vec![0.0; 16_000]);
    // 0.2 s: longer than one 4,096-sample FLAC block (a single-block stream whose STREAMINFO
    // minimum block size is below its maximum, as this encoder writes, does not open in
    // Symphonia 0.6.1).
    flac(t, "df/test/short.flac", 24_000, 440.0, 0.2);
    flac(t, "df/misc/nosplit.flac", 16_000, 440.0, 0.5);
    t.write("df/README.txt", "not audio\n");
    t.write("df/train/notes.md", "not audio either\n");
    bytes(t, "df/train/._a.flac", b"macOS resource fork");
    // A link back to an ancestor: reported, not followed again, not fatal.
    std::os::unix::fs::symlink("..", t.path("df/train/loop")).unwrap();

    // clone: hash split by speaker; ana / caio / duda are also real speakers.
    let speakers = [
        "ana", "caio", "duda", "eva", "fabio", "gil", "hugo", "ines", "joao", "kim",
    ];
    for (i, sp) in (0u32..).zip(speakers) {
        for n in 0..2u32 {
            let freq = 180.0 + 20.0 * f64::from(i) + 7.0 * f64::from(n);
            flac(t, &format!("clone/{sp}_{n}.flac"), 16_000, freq, 0.5);
        }
    }
    // xtts: a held-out attack.
    for n in 0..3 {
        flac(
            t,
            &format!("xtts/x{n}.flac"),
            22_050,
            250.0 + 10.0 * f64::from(n),
            0.6,
        );
    }
}

const MIXED_SOURCES: &str = r#"  - name: real
    label: bonafide
    root: real
    split: csv
  - name: df
    label: spoof
    root: df
    split: folders
  - name: clone
    label: spoof
    root: clone
    split: hash
    speaker: { regex: '^(?P<speaker>[a-z]+)_' }
  - name: xtts
    label: spoof
    root: xtts
"#;

#[test]
fn a_mixed_corpus_is_scanned_split_probed_and_chunked() {
    let t = Test::new();
    mixed_corpus(&t);
    pipeline(
        &t,
        "mixed",
        MIXED_SOURCES,
        "{min_duration_s: 0.25, holdout_sources: [xtts]}",
    );
    let out = t.run(&["run", "--json"]).ok();
    assert_eq!(out.outcomes().values().filter(|o| *o == "ran").count(), 3);
    assert!(
        out.stderr.contains("files rejected"),
        "a warning counts the rejected files: {}",
        out.stderr
    );

    // Scan: every audio file, non-audio and hidden files skipped and counted.
    let scan = output(&t, "mixed", "scan");
    let manifest = read_manifest(&scan.join("manifest.csv")).unwrap();
    let count = |s: &str| manifest.iter().filter(|m| m.source == s).count();
    assert_eq!(
        (count("real"), count("df"), count("clone"), count("xtts")),
        (6, 11, 20, 3)
    );
    let df_a = manifest.iter().find(|m| m.path == "train/a.flac").unwrap();
    assert_eq!(df_a.label, "spoof");
    assert_eq!(
        df_a.size,
        std::fs::metadata(t.path("df/train/a.flac")).unwrap().len()
    );
    assert_eq!(
        df_a.digest,
        blake3::hash(&std::fs::read(t.path("df/train/a.flac")).unwrap())
            .to_hex()
            .to_string()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scan.join("scan.json")).unwrap()).unwrap();
    let df = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "df")
        .unwrap();
    assert_eq!(df["skipped_non_audio"], 2, "{report}");
    assert_eq!(df["hidden"], 1, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(
        (
            &problems[0]["source"],
            &problems[0]["kind"],
            &problems[0]["path"]
        ),
        (&"df".into(), &"symlink_loop".into(), &"train/loop".into())
    );
    assert!(out.stderr.contains("symlink loop at"), "{}", out.stderr);
    // The split CSVs of `real` are not audio either.
    let real = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "real")
        .unwrap();
    assert_eq!(real["skipped_non_audio"], 3, "{report}");

    // Metadata: every bad file with its reason.
    let meta = output(&t, "mixed", "meta");
    let rejected: BTreeSet<(String, String)> = read_rejected(&meta.join("rejected.csv"))
        .unwrap()
        .into_iter()
        .map(|r| (r.path, r.reason))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("train/empty.flac", "zero_byte"),
        ("train/cut.flac", "truncated"),
        ("dev/noise.wav", "corrupt"),
        ("dev/opus.opus", "unsupported_codec"),
        ("test/zeros.flac", "all_silent"),
        ("test/short.flac", "too_short"),
        ("misc/nosplit.flac", "unplaced"),
    ]
    .into_iter()
    .map(|(p, r)| (p.to_owned(), r.to_owned()))
    .collect();
    assert_eq!(rejected, expected);

    let rows = read_split_csvs(&meta).unwrap();
    assert_eq!(rows.len(), 6 + 4 + 20 + 3);
    let row = |p: &str| rows.iter().find(|r| r.path == p).unwrap();
    let ogg = row("train/b.ogg");
    assert_eq!((ogg.sample_rate, ogg.channels), (22_050, 2));
    assert!((ogg.duration_s - 0.5).abs() < 0.05, "{ogg:?}");
    let mp3 = row("dev/c.mp3");
    assert_eq!((mp3.sample_rate, mp3.split.as_str()), (44_100, "val"));
    let wav = row("clips/duda_2.wav");
    assert_eq!(
        (wav.sample_rate, wav.channels, wav.split.as_str()),
        (48_000, 2, "test")
    );
    assert!((wav.duration_s - 1.0).abs() < 1e-9);
    assert_eq!(row("clips/ana_2.flac").speaker, "ana");
    assert_eq!(row("clips/ana_2.flac").digest.len(), 64);

    // Speaker-disjoint splits; clones of a real speaker follow that speaker; holdout in test.
    let mut splits_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.speaker.is_empty()) {
        splits_of
            .entry(&r.speaker)
            .or_default()
            .insert(r.split.as_str());
    }
    for (sp, s) in &splits_of {
        assert_eq!(s.len(), 1, "speaker `{sp}` is in {s:?}");
    }
    assert_eq!(row("ana_0.flac").split.as_str(), "train");
    assert_eq!(row("caio_1.flac").split.as_str(), "val");
    assert_eq!(row("duda_0.flac").split.as_str(), "test");
    assert!(
        rows.iter()
            .filter(|r| r.source == "xtts")
            .all(|r| r.split.as_str() == "test"),
        "holdout source only in test"
    );
    let test_csv = std::fs::read_to_string(meta.join("test.csv")).unwrap();
    assert!(
        test_csv.starts_with(
            "path,label,source,split,speaker,duration_s,sample_rate,channels,digest\n"
        )
    );
    assert!(test_csv.contains("x0.flac,spoof,xtts,test,,"), "{test_csv}");
    let stats = read_stats(&meta.join("stats.json")).unwrap();
    assert!(stats.speakers_in_several_splits.is_empty());
    assert_eq!(stats.rejected.total, 7);
    assert_eq!(stats.splits["test"].sources["xtts"]["spoof"].files, 3);
    let total: u64 = stats.splits.values().map(|s| s.total.files).sum();
    assert_eq!(total, rows.len() as u64);

    // Chunk: one clip per accepted file, rows mapped back through index.csv.
    let chunk = output(&t, "mixed", "chunk");
    let index = read_index(&chunk.join("index.csv")).unwrap();
    assert_eq!(index.len(), rows.len());
    let mut sorted = index.clone();
    let bucket = |r: &IndexRow| r.shard.clone();
    sorted.sort_by(|a, b| {
        (&a.source, bucket(a), &a.path, a.offset).cmp(&(&b.source, bucket(b), &b.path, b.offset))
    });
    assert_eq!(
        index, sorted,
        "rows sorted by (source, bucket, path, offset)"
    );
    let by_path: BTreeMap<(&str, &str), &MetadataRow> = rows
        .iter()
        .map(|r| ((r.source.as_str(), r.path.as_str()), r))
        .collect();
    let mut per_shard: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &index {
        let m = by_path[&(r.source.as_str(), r.path.as_str())];
        assert_eq!(
            (r.label.as_str(), r.split.as_str()),
            (m.label.as_str(), m.split.as_str())
        );
        assert_eq!(r.speaker, m.speaker);
        assert_eq!(r.offset, 0);
        assert!(
            r.shard.starts_with(&format!("shards/{}-", r.source)),
            "{r:?}"
        );
        assert_eq!(r.row, per_shard.get(r.shard.as_str()).copied().unwrap_or(0));
        *per_shard.entry(&r.shard).or_default() += 1;
    }
    for (shard, n) in &per_shard {
        let reader = ShardReader::open(&chunk.join(shard), Some("audio")).unwrap();
        assert_eq!(reader.shape(), [*n as usize, 64_600]);
        assert_eq!(reader.dtype(), brspeech::shards::Dtype::I16);
    }
    // The stereo float WAV's first channel (300 Hz at 0.5), resampled to 16 kHz.
    let r = index.iter().find(|r| r.path == "clips/duda_2.wav").unwrap();
    let clip = ShardReader::open(&chunk.join(&r.shard), None)
        .unwrap()
        .row_f32(usize::try_from(r.row).unwrap())
        .unwrap();
    let peak = clip[..16_000].iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!((peak - 0.5).abs() < 0.01, "peak {peak}");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chunk.join("chunk.json")).unwrap()).unwrap();
    assert_eq!(
        info,
        serde_json::json!({"sample_rate": 16000, "samples": 64600, "dtype": "i16",
            "channel": "first", "trim": false, "crop": "first", "hop": 64600})
    );
    assert_eq!(
        std::fs::read_to_string(chunk.join("rejected.csv")).unwrap(),
        "path,source,reason,item\n"
    );

    // A second run is a no-op.
    let again = t.run(&["run", "--json"]).ok();
    assert!(
        again.outcomes().values().all(|o| o == "cached"),
        "{:?}",
        again.outcomes()
    );
}

fn small_corpus(t: &Test) {
    for n in 0..6 {
        flac(
            t,
            &format!("a/spk{}/a{n}.flac", n % 3),
            16_000,
            200.0 + 15.0 * f64::from(n),
            0.5,
        );
    }
    for n in 0..4 {
        let p = t.path(&format!("b/b{n}.wav"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_wav_i16(
            &p,
            22_050,
            1,
            &sine(22_050, 300.0 + 20.0 * f64::from(n), 0.3, 0.5),
        );
    }
}

const SOURCE_A: &str = r#"  - name: a
    label: bonafide
    root: a
    speaker: { regex: '^(spk\d+)/' }
"#;
const SOURCE_B: &str = r#"  - name: b
    label: spoof
    root: b
"#;
const SOURCE_C: &str = r#"  - name: c
    label: spoof
    root: c
"#;

#[test]
fn added_files_new_sources_and_removed_sources_process_only_what_changed() {
    let t = Test::new();
    small_corpus(&t);
    let sources = format!("{SOURCE_A}{SOURCE_B}");
    pipeline(&t, "inc", &sources, "{}");
    let first = t.run(&["run", "--json"]).ok();
    assert_eq!(items(&first, "meta"), (10, 0));
    assert_eq!(items(&first, "chunk"), (10, 0));

    // Two files more in `a`: only they are probed and chunked.
    flac(&t, "a/spk0/new1.flac", 16_000, 410.0, 0.5);
    flac(&t, "a/spk1/new2.flac", 16_000, 420.0, 0.5);
    let added = t.run(&["run", "--json"]).ok();
    assert_eq!(added.outcomes()["scan"], "ran");
    assert_eq!(items(&added, "meta"), (2, 10));
    assert_eq!(items(&added, "chunk"), (2, 10));
    let index = read_index(&output(&t, "inc", "chunk").join("index.csv")).unwrap();
    assert_eq!(index.len(), 12);

    // A new source (a YAML block and its folder): only its files.
    for n in 0..3 {
        flac(
            &t,
            &format!("c/c{n}.flac"),
            44_100,
            500.0 + 10.0 * f64::from(n),
            0.5,
        );
    }
    let sources = format!("{SOURCE_A}{SOURCE_B}{SOURCE_C}");
    pipeline(&t, "inc", &sources, "{}");
    let status = t.run(&["status", "--json"]).ok();
    let (state, reasons) = &status.states()["scan"];
    assert_eq!(state, "stale");
    assert!(
        reasons.iter().any(|r| r.contains("sources.c"))
            && reasons.iter().any(|r| r.contains("dep `c` added")),
        "{reasons:?}"
    );
    let new_source = t.run(&["run", "--json"]).ok();
    assert_eq!(items(&new_source, "meta"), (3, 12));
    assert_eq!(items(&new_source, "chunk"), (3, 12));
    let chunk = output(&t, "inc", "chunk");
    assert!(
        read_index(&chunk.join("index.csv"))
            .unwrap()
            .iter()
            .any(|r| r.source == "c")
    );

    // Removing a source drops its rows and shards; nothing is recomputed.
    let sources = format!("{SOURCE_A}{SOURCE_C}");
    pipeline(&t, "inc", &sources, "{}");
    let removed = t.run(&["run", "--json"]).ok();
    assert_eq!(items(&removed, "meta"), (0, 11));
    assert_eq!(items(&removed, "chunk"), (0, 11));
    let chunk = output(&t, "inc", "chunk");
    let index = read_index(&chunk.join("index.csv")).unwrap();
    assert_eq!(index.len(), 11);
    assert!(index.iter().all(|r| r.source != "b"));
    let shards: Vec<String> = std::fs::read_dir(chunk.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(shards.iter().all(|s| !s.starts_with("b-")), "{shards:?}");
    assert!(
        read_split_csvs(&output(&t, "inc", "meta"))
            .unwrap()
            .iter()
            .all(|r| r.source != "b")
    );

    // A forced rerun finds every shard in its memo entry: nothing is decoded again (what a
    // killed run or a second worker finds too).
    let forced = t.run(&["run", "--json", "--force", "chunk"]).ok();
    assert_eq!(forced.outcomes()["chunk"], "ran");
    assert_eq!(items(&forced, "chunk"), (0, 11));

    // The incrementally built outputs are byte for byte those of a fresh run in another cache.
    let incremental: Vec<_> = ["scan", "meta", "chunk"]
        .iter()
        .map(|s| snapshot(&output(&t, "inc", s)))
        .collect();
    let other = tempfile::tempdir().unwrap();
    let fresh = t
        .run(&[
            "run",
            "--json",
            "--cache-dir",
            other.path().to_str().unwrap(),
        ])
        .ok();
    assert_eq!(items(&fresh, "chunk"), (11, 0));
    for (i, s) in ["scan", "meta", "chunk"].iter().enumerate() {
        let again = snapshot(&output(&t, "inc", s));
        assert_eq!(
            again.keys().collect::<Vec<_>>(),
            incremental[i].keys().collect::<Vec<_>>(),
            "{s}"
        );
        for (k, v) in &again {
            assert!(
                incremental[i][k] == *v,
                "`{s}/{k}` differs from the fresh run's"
            );
        }
    }
}

#[test]
fn a_generated_source_runs_its_command_once_per_new_text_line() {
    let t = Test::new();
    // A fake TTS: writes one of several tones picked by the text's length, logs each call.
    mkdir(&t, "tones");
    for len in 1..48u32 {
        write_wav_i16(
            &t.path(&format!("tones/{len}.wav")),
            16_000,
            1,
            &sine(16_000, 100.0 + 20.0 * f64::from(len), 0.5, 0.4),
        );
    }
    t.write(
        "tts.sh",
        "#!/bin/sh\nprintf '%s\\n' \"$2\" >> calls.log\ncp \"tones/${#2}.wav\" \"$1\"\n",
    );
    t.write("texts.txt", "bom dia\n# a comment\n\nboa noite, Maria\n");
    let sources = r#"  - name: espeak
    label: spoof
    generate: { cmd: "sh tts.sh {out} {text}", texts: texts.txt }
"#;
    pipeline(&t, "gen", sources, "{ratios: [1, 0, 0]}");
    let first = t.run(&["run", "--json"]).ok();
    assert_eq!(items(&first, "scan"), (2, 0));
    // Commands run in parallel: the log's order is not fixed, its lines are.
    let calls = |t: &Test| {
        let mut lines: Vec<String> = t.read("calls.log").lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(calls(&t), ["boa noite, Maria", "bom dia"]);
    let manifest = read_manifest(&output(&t, "gen", "scan").join("manifest.csv")).unwrap();
    assert_eq!(manifest.len(), 2);
    assert!(
        manifest
            .iter()
            .all(|m| m.path.len() == 36 && m.path.ends_with(".wav"))
    );
    assert_eq!(items(&first, "chunk"), (2, 0));

    t.write(
        "texts.txt",
        "bom dia\n# a comment\n\nboa noite, Maria\nolá, tudo bem?\n",
    );
    let second = t.run(&["run", "--json"]).ok();
    assert_eq!(items(&second, "scan"), (1, 2));
    assert_eq!(
        calls(&t),
        ["boa noite, Maria", "bom dia", "olá, tudo bem?"],
        "only the new line is generated"
    );
    assert_eq!(items(&second, "meta"), (1, 2));
    assert_eq!(items(&second, "chunk"), (1, 2));
    let index = read_index(&output(&t, "gen", "chunk").join("index.csv")).unwrap();
    assert_eq!(index.len(), 3);
    assert!(
        index
            .iter()
            .all(|r| r.source == "espeak" && r.split == "train")
    );
}

#[test]
fn invalid_sources_are_reported_with_their_positions() {
    let t = Test::new();
    mkdir(&t, "real");
    t.pipeline(
        r#"name: bad
sources:
  - name: real
    label: bonafide
    root: real
  - name: real
    label: fake
    root: real
  - name: tts
    label: spoof
    root: real
    include: []
stages:
  scan:
    kind: scan_corpus
"#,
    );
    let out = t.run(&["validate"]).code(3);
    assert!(out.stderr.contains("brspeech.yaml:6:5"), "{}", out.stderr);
    insta::assert_snapshot!("invalid_sources", out.stderr);
}

#[test]
fn a_missing_source_root_validates_and_fails_at_run_naming_it() {
    let t = Test::new();
    flac(&t, "real/a.flac", 16_000, 220.0, 1.0);
    pipeline(
        &t,
        "elsewhere",
        "  - {name: real, label: bonafide, root: real}\n  - {name: cluster_tts, label: spoof, root: /nonexistent/tts}\n",
        "{}",
    );
    // Written for another machine: it still validates and graphs here.
    t.run(&["validate"]).code(0);
    t.run(&["graph", "--no-status"]).code(0);
    let out = t.run(&["run"]).code(4);
    assert!(
        out.stderr.contains(
            "stage `scan` reads a path not on this machine:\n  dep `/nonexistent/tts` (the root of source `cluster_tts`): `/nonexistent/tts`"
        ),
        "{}",
        out.stderr
    );
    assert!(!t.path("brspeech.lock").exists());

    // A checkpoint that is not on this machine: `status` says why instead of failing.
    let yaml = t.read("brspeech.yaml");
    t.pipeline(&format!(
        "{yaml}  extract:\n    kind: extract_ssl\n    needs: [chunk]\n    params: {{ssl: models/absent}}\n"
    ));
    let out = t.run(&["status"]).code(0);
    assert!(
        out.stdout.contains("cannot run here")
            && out.stdout.contains("models/absent")
            && out
                .stdout
                .contains("dep `/nonexistent/tts` (the root of source `cluster_tts`) is missing"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_source_without_audio_files_fails_naming_it() {
    let t = Test::new();
    t.write("empty/readme.txt", "no audio here\n");
    pipeline(
        &t,
        "noaudio",
        "  - {name: silent_corpus, label: bonafide, root: empty}\n",
        "{}",
    );
    let out = t.run(&["run"]).code(4);
    assert!(
        out.stderr
            .contains("source `silent_corpus` has no audio files")
            && out.stderr.contains("1 files match no `include` glob"),
        "{}",
        out.stderr
    );
}

#[test]
fn on_bad_audio_fail_stops_with_the_file_named() {
    let t = Test::new();
    small_corpus(&t);
    let full = flac_bytes(16_000, 1, &sine(16_000, 440.0, 0.5, 2.0));
    bytes(&t, "b/broken.flac", &full[..full.len() / 2]);
    pipeline(
        &t,
        "strict",
        &format!("{SOURCE_A}{SOURCE_B}"),
        "{on_bad_audio: fail}",
    );
    let out = t.run(&["run"]).code(4);
    assert!(
        out.stderr
            .contains("file `broken.flac` cannot be used (truncated)"),
        "{}",
        out.stderr
    );
    // With `skip` (the default) the same corpus goes through, the file listed as rejected.
    pipeline(
        &t,
        "strict",
        &format!("{SOURCE_A}{SOURCE_B}"),
        "{on_bad_audio: skip}",
    );
    let out = t.run(&["run", "--json"]).ok();
    assert_eq!(items(&out, "chunk"), (10, 0));
    assert_eq!(
        std::fs::read_to_string(output(&t, "strict", "meta").join("rejected.csv")).unwrap(),
        "path,source,reason\nbroken.flac,b,truncated\n"
    );
}

#[test]
fn a_short_ramp_is_repeat_padded_in_the_shard() {
    let t = Test::new();
    // A 1,000-sample ramp: sample k holds the 16-bit value k.
    let ramp: Vec<f32> = (0..1000).map(|k| k as f32 / 32768.0).collect();
    mkdir(&t, "ramp");
    write_wav_i16(&t.path("ramp/ramp.wav"), 16_000, 1, &ramp);
    pipeline(
        &t,
        "ramp",
        "  - {name: ramp, label: bonafide, root: ramp, split: {hash: {ratios: [0, 0, 1]}}}\n",
        "{}",
    );
    t.run(&["run"]).ok();
    let chunk = output(&t, "ramp", "chunk");
    let index = read_index(&chunk.join("index.csv")).unwrap();
    assert_eq!(index.len(), 1);
    let reader = ShardReader::open(&chunk.join(&index[0].shard), Some("audio")).unwrap();
    let row = reader.row_bytes(0).unwrap();
    let values: Vec<i16> = row
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(values.len(), 64_600);
    assert_eq!(values[..5], [0, 1, 2, 3, 4]);
    assert_eq!(values[999], 999);
    assert_eq!(values[1000], 0);
    assert_eq!(*values.last().unwrap(), 599);
    assert_eq!(index[0].split, "test");
}

#[test]
fn corpus_kinds_check_their_params_and_needs() {
    let t = Test::new();
    mkdir(&t, "a");
    t.pipeline(
        r#"name: params
sources:
  - {name: brspeech, label: bonafide, root: a}
stages:
  scan:
    kind: scan_corpus
    params: {threads: 4}
  meta:
    kind: build_metadata
    params: {holdout_sources: [brspeeh], ratios: [1, -1, 0], on_bad_audio: ignore}
  chunk:
    kind: chunk_audio
    needs: [meta]
    params: {crop: all, hop: 0, buckets: 0, dtype: f16}
  chunk2:
    kind: chunk_audio
    needs: [meta]
    params: {crop: middle, channel: mean}
"#,
    );
    let out = t.run(&["validate"]).code(3);
    for expected in [
        "unknown field `threads`",
        "stage `meta` reads a `scan_corpus` stage's output: name one in `needs`",
        "add `scan` to `needs`",
        "unknown variant `ignore`, expected `skip` or `fail`",
        "unknown variant `f16`, expected `i16` or `f32`",
        "unknown variant `middle`, expected `first` or `all`",
    ] {
        assert!(
            out.stderr.contains(expected),
            "no `{expected}` in\n{}",
            out.stderr
        );
    }
    // With the type errors fixed, the value checks speak.
    t.pipeline(
        r#"name: params
sources:
  - {name: brspeech, label: bonafide, root: a}
stages:
  scan:
    kind: scan_corpus
  meta:
    kind: build_metadata
    needs: [scan]
    params: {holdout_sources: [brspeeh], ratios: [1, -1, 0]}
  chunk:
    kind: chunk_audio
    needs: [meta]
    params: {crop: all, hop: 0, buckets: 0}
"#,
    );
    let out = t.run(&["validate"]).code(3);
    for expected in [
        "`brspeeh` is not a source",
        "did you mean `brspeech`?",
        "must be three non-negative weights",
        "`hop` must be between 1 and `samples` (64600)",
        "`buckets` must be between 1 and 65536",
        "brspeech.yaml:10:32",
    ] {
        assert!(
            out.stderr.contains(expected),
            "no `{expected}` in\n{}",
            out.stderr
        );
    }
}

const ONE_SOURCE: &str = "name: bad
sources:
  - {name: c, label: bonafide, root: corpus}
stages:
  scan: {kind: scan_corpus}
";

/// `(kind, path)` of every problem in a scan's `scan.json`.
fn scan_problems(t: &Test, pipeline: &str) -> Vec<(String, String)> {
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(output(t, pipeline, "scan").join("scan.json")).unwrap(),
    )
    .unwrap();
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn dangling_links_and_loops_are_warnings_and_symlinked_folders_count_for_the_key() {
    let t = Test::new();
    flac(&t, "corpus/spk0/a.flac", 16_000, 220.0, 0.5);
    flac(&t, "shared/b.flac", 16_000, 330.0, 0.5);
    std::os::unix::fs::symlink("../shared", t.path("corpus/linked")).unwrap();
    std::os::unix::fs::symlink("missing.flac", t.path("corpus/spk0/dangling.flac")).unwrap();
    std::os::unix::fs::symlink("..", t.path("corpus/spk0/loop")).unwrap();
    t.pipeline(ONE_SOURCE);

    let out = t.run(&["run", "--json"]).ok();
    assert_eq!(out.outcomes()["scan"], "ran");
    for want in [
        "dangling symlink (its target `missing.flac` does not exist)",
        "symlink loop at",
    ] {
        assert!(out.stderr.contains(want), "{want}:\n{}", out.stderr);
    }
    let log = t.read("cache/logs/bad/scan.log");
    assert!(
        log.contains("warning: source `c`: cannot read `")
            && log.contains("dangling.flac`: dangling symlink")
            && log.contains("warning: source `c`: symlink loop at"),
        "{log}"
    );
    assert_eq!(
        scan_problems(&t, "bad"),
        [
            ("symlink_loop".to_owned(), "spk0/loop".to_owned()),
            (
                "dangling_symlink".to_owned(),
                "spk0/dangling.flac".to_owned()
            ),
        ]
    );
    let manifest = read_manifest(&output(&t, "bad", "scan").join("manifest.csv")).unwrap();
    let paths: Vec<&str> = manifest.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["linked/b.flac", "spk0/a.flac"]);

    let again = t.run(&["run", "--json"]).ok();
    assert_eq!(again.outcomes()["scan"], "cached");

    // A file changed under the symlinked folder changes the key: the scan runs again.
    flac(&t, "shared/b.flac", 16_000, 440.0, 0.6);
    let status = t.run(&["status", "--json"]).ok();
    let (state, reasons) = &status.states()["scan"];
    assert_eq!(state, "stale");
    assert!(
        reasons
            .iter()
            .any(|r| r == "dep file `corpus/linked/b.flac` modified"),
        "{reasons:?}"
    );
    let changed = t.run(&["run", "--json"]).ok();
    assert_eq!(changed.outcomes()["scan"], "ran");
    let manifest = read_manifest(&output(&t, "bad", "scan").join("manifest.csv")).unwrap();
    assert_eq!(
        manifest[0].digest,
        blake3::hash(&std::fs::read(t.path("shared/b.flac")).unwrap())
            .to_hex()
            .to_string()
    );
}

/// Whether this process runs as root (which reads every folder whatever its mode).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// An unreadable folder in a source is a warning, not a failure. Root reads folders whatever
/// their mode, so as root the binary runs as `nobody` (uid and gid 65534, set in the child
/// process, which drops root's groups), with the workspace handed to that user; as another
/// user, the folder's mode is enough.
#[test]
fn an_unreadable_folder_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65_534;
    let t = Test::new();
    flac(&t, "corpus/ok/a.flac", 16_000, 220.0, 0.5);
    flac(&t, "corpus/locked/b.flac", 16_000, 330.0, 0.5);
    t.pipeline(ONE_SOURCE);
    let root = is_root();
    if root {
        for e in walkdir::WalkDir::new(t.root()) {
            std::os::unix::fs::chown(e.unwrap().path(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
    let locked = t.path("corpus/locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = t.command(&["run", "--json"]);
    if root {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let o = cmd.output().unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
    .ok();
    assert_eq!(out.outcomes()["scan"], "ran");
    assert!(
        out.stderr.contains("corpus/locked`: Permission denied"),
        "{}",
        out.stderr
    );
    assert_eq!(
        scan_problems(&t, "bad"),
        [("unreadable".to_owned(), "locked".to_owned())]
    );
    let manifest = read_manifest(&output(&t, "bad", "scan").join("manifest.csv")).unwrap();
    let paths: Vec<&str> = manifest.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["ok/a.flac"]);
}
