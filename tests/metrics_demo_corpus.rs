//! The committed demo corpus (`data/demo/`, docs/demo-corpus.md): layout
//! `<source>/<speaker>/<clip>`, class sizes, at least three spoof sources, a mix of containers,
//! a size budget, and a NOTICE that covers every source folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/demo")
}

/// (source, speaker, file) of every clip.
fn clips() -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    for source in std::fs::read_dir(demo_dir()).unwrap() {
        let source = source.unwrap().path();
        let name = source.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("real_") || name.starts_with("tts_")) {
            continue;
        }
        for speaker in std::fs::read_dir(&source).unwrap() {
            let speaker = speaker.unwrap().path();
            assert!(
                speaker.is_dir(),
                "{} is not a speaker folder",
                speaker.display()
            );
            let spk = speaker.file_name().unwrap().to_string_lossy().into_owned();
            for clip in std::fs::read_dir(&speaker).unwrap() {
                let clip = clip.unwrap().path();
                assert!(clip.is_file(), "{} is not a file", clip.display());
                out.push((name.clone(), spk.clone(), clip));
            }
        }
    }
    out.sort();
    out
}

/// Container recognised from the first bytes.
fn container(path: &Path) -> &'static str {
    let bytes = std::fs::read(path).unwrap();
    match &bytes[..4.min(bytes.len())] {
        b"fLaC" => "flac",
        b"RIFF" if &bytes[8..12] == b"WAVE" => "wav",
        b"OggS" => "ogg",
        [b'I', b'D', b'3', _] => "mp3",
        [0xFF, b, _, _] if b & 0xE0 == 0xE0 => "mp3",
        _ => "unknown",
    }
}

#[test]
fn layout_classes_and_sources() {
    let clips = clips();
    let mut per_class: BTreeMap<&str, usize> = BTreeMap::new();
    let mut speakers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (source, speaker, _) in &clips {
        let class = if source.starts_with("real_") {
            "bonafide"
        } else {
            "spoof"
        };
        *per_class.entry(class).or_default() += 1;
        speakers.entry(source).or_default().insert(speaker);
    }
    for class in ["bonafide", "spoof"] {
        let n = per_class[class];
        assert!((60..=120).contains(&n), "{class}: {n} clips");
    }
    let spoof_sources = speakers.keys().filter(|s| s.starts_with("tts_")).count();
    assert!(spoof_sources >= 3, "{spoof_sources} spoof sources");
    let bona_speakers: usize = speakers
        .iter()
        .filter(|(s, _)| s.starts_with("real_"))
        .map(|(_, v)| v.len())
        .sum();
    assert!(bona_speakers >= 8, "{bona_speakers} bona fide speakers");
    for (source, spk) in &speakers {
        if source.starts_with("tts_") {
            assert!(spk.len() >= 5, "{source}: {spk:?}");
        }
    }
}

#[test]
fn formats_are_mixed_and_match_their_extension() {
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut bytes = 0;
    for (_, _, clip) in clips() {
        let kind = container(&clip);
        let ext = clip.extension().unwrap().to_string_lossy().into_owned();
        assert_eq!(kind, ext, "{}", clip.display());
        *seen.entry(kind).or_default() += 1;
        bytes += std::fs::metadata(&clip).unwrap().len();
    }
    for kind in ["flac", "wav", "ogg", "mp3"] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {seen:?}"
        );
    }
    assert!(
        seen["flac"] * 2 > seen.values().sum::<usize>(),
        "mostly FLAC: {seen:?}"
    );
    assert!(bytes < 6_200_000, "{bytes} bytes of audio");
}

#[test]
fn notice_covers_every_source_and_licence_file() {
    let notice = std::fs::read_to_string(demo_dir().join("NOTICE")).unwrap();
    let sources: BTreeSet<String> = clips().into_iter().map(|(s, _, _)| s).collect();
    for source in &sources {
        assert!(
            notice.contains(&format!("{source}/")),
            "NOTICE does not mention {source}"
        );
    }
    for line in notice.lines() {
        for word in line.split_whitespace() {
            let word = word.trim_end_matches(['.', ',', ')', ';']);
            if let Some(file) = word.strip_prefix("licenses/") {
                assert!(
                    demo_dir().join("licenses").join(file).is_file(),
                    "NOTICE names missing licenses/{file}"
                );
            }
        }
    }
}
