//! Metadata files of the corpus stages: the scan manifest (`manifest.csv`), `train.csv` /
//! `val.csv` / `test.csv`, `rejected.csv`, `stats.json` and the probe records kept for reuse
//! (`probes.csv`) — record types, writers (sorted, deterministic bytes) and readers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::CorpusError;
use super::split::Split;

/// One accepted file (header
/// `path,label,source,split,speaker,duration_s,sample_rate,channels,digest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataRow {
    /// Path relative to the source root.
    pub path: String,
    /// `bonafide` or `spoof`.
    pub label: String,
    /// Source name.
    pub source: String,
    /// `train`, `val` or `test`.
    pub split: Split,
    /// Speaker, empty when unknown.
    pub speaker: String,
    /// Decoded duration in seconds.
    pub duration_s: f64,
    /// Native sample rate in Hz.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Content digest (blake3 hex) of the file.
    pub digest: String,
}

/// One rejected file (header `path,source,reason`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RejectedRow {
    /// Path relative to the source root.
    pub path: String,
    /// Source name.
    pub source: String,
    /// Category (`zero_byte`, `truncated`, `corrupt`, `unsupported_codec`, `all_silent`,
    /// `too_short`, `unreadable`, `unplaced`).
    pub reason: String,
}

/// File name of a split's metadata CSV.
pub fn split_file_name(split: Split) -> String {
    format!("{}.csv", split.as_str())
}

/// Header of the split CSVs.
pub const METADATA_HEADER: [&str; 9] = [
    "path",
    "label",
    "source",
    "split",
    "speaker",
    "duration_s",
    "sample_rate",
    "channels",
    "digest",
];

/// Header of `rejected.csv`.
pub const REJECTED_HEADER: [&str; 3] = ["path", "source", "reason"];

fn write_csv<T: Serialize>(path: &Path, header: &[&str], rows: &[&T]) -> Result<(), CorpusError> {
    let err = |source| CorpusError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    // `serialize` writes the header with the first row; an empty file still gets it.
    if rows.is_empty() {
        w.write_record(header).map_err(err)?;
    }
    for row in rows {
        w.serialize(row).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))
}

fn read_csv<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, CorpusError> {
    let err = |source| CorpusError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut r = csv::Reader::from_path(path).map_err(err)?;
    r.deserialize().collect::<Result<Vec<T>, _>>().map_err(err)
}

/// Writes `train.csv`, `val.csv` and `test.csv` into `dir` (each with its header even when
/// empty), rows sorted by (source, path).
///
/// # Errors
/// `Csv` when a file cannot be written.
pub fn write_split_csvs(dir: &Path, rows: &[MetadataRow]) -> Result<(), CorpusError> {
    for split in Split::ALL {
        let mut these: Vec<&MetadataRow> = rows.iter().filter(|r| r.split == split).collect();
        these.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
        write_csv(&dir.join(split_file_name(split)), &METADATA_HEADER, &these)?;
    }
    Ok(())
}

/// Reads one metadata CSV.
///
/// # Errors
/// `Csv` when the file cannot be read or a row does not parse.
pub fn read_metadata_csv(path: &Path) -> Result<Vec<MetadataRow>, CorpusError> {
    read_csv(path)
}

/// Reads `train.csv`, `val.csv` and `test.csv` of `dir`, in that order.
///
/// # Errors
/// `Csv` when a file cannot be read or a row does not parse.
pub fn read_split_csvs(dir: &Path) -> Result<Vec<MetadataRow>, CorpusError> {
    let mut rows = Vec::new();
    for split in Split::ALL {
        rows.extend(read_metadata_csv(&dir.join(split_file_name(split)))?);
    }
    Ok(rows)
}

/// Writes `rejected.csv`, rows sorted by (source, path, reason).
///
/// # Errors
/// `Csv` when the file cannot be written.
pub fn write_rejected(path: &Path, rows: &[RejectedRow]) -> Result<(), CorpusError> {
    let mut sorted: Vec<&RejectedRow> = rows.iter().collect();
    sorted.sort_by(|a, b| (&a.source, &a.path, &a.reason).cmp(&(&b.source, &b.path, &b.reason)));
    write_csv(path, &REJECTED_HEADER, &sorted)
}

/// Reads `rejected.csv`.
///
/// # Errors
/// `Csv` when the file cannot be read or a row does not parse.
pub fn read_rejected(path: &Path) -> Result<Vec<RejectedRow>, CorpusError> {
    read_csv(path)
}

/// One file found by the scan (`manifest.csv`: `path,source,label,size,digest`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Path relative to the source root (for a generated source, the generated file's name).
    pub path: String,
    /// Source name.
    pub source: String,
    /// `bonafide` or `spoof`.
    pub label: String,
    /// Size in bytes.
    pub size: u64,
    /// Content digest (blake3 hex) of the file.
    pub digest: String,
}

/// Header of `manifest.csv`.
pub const MANIFEST_HEADER: [&str; 5] = ["path", "source", "label", "size", "digest"];

/// Writes `manifest.csv`, rows sorted by (source, path).
///
/// # Errors
/// `Csv` when the file cannot be written.
pub fn write_manifest(path: &Path, rows: &[ManifestRow]) -> Result<(), CorpusError> {
    let mut sorted: Vec<&ManifestRow> = rows.iter().collect();
    sorted.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
    write_csv(path, &MANIFEST_HEADER, &sorted)
}

/// Reads `manifest.csv`.
///
/// # Errors
/// `Csv` when the file cannot be read or a row does not parse.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>, CorpusError> {
    read_csv(path)
}

/// The outcome of probing one file, kept so that a later run can reuse it instead of decoding
/// the file again (`probes.csv`: `source,path,item,reason,duration_s,sample_rate,channels`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRow {
    /// Source name.
    pub source: String,
    /// Path relative to the source root.
    pub path: String,
    /// Key of the probe: the file's content digest and the probe parameters.
    pub item: String,
    /// Rejection reason; empty when the file was accepted.
    pub reason: String,
    /// Decoded duration in seconds (0 when rejected).
    pub duration_s: f64,
    /// Native sample rate in Hz (0 when rejected).
    pub sample_rate: u32,
    /// Channels (0 when rejected).
    pub channels: u16,
}

/// Header of `probes.csv`.
pub const PROBES_HEADER: [&str; 7] = [
    "source",
    "path",
    "item",
    "reason",
    "duration_s",
    "sample_rate",
    "channels",
];

/// Writes `probes.csv`, rows sorted by (source, path).
///
/// # Errors
/// `Csv` when the file cannot be written.
pub fn write_probes(path: &Path, rows: &[ProbeRow]) -> Result<(), CorpusError> {
    let mut sorted: Vec<&ProbeRow> = rows.iter().collect();
    sorted.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
    write_csv(path, &PROBES_HEADER, &sorted)
}

/// Reads `probes.csv`.
///
/// # Errors
/// `Csv` when the file cannot be read or a row does not parse.
pub fn read_probes(path: &Path) -> Result<Vec<ProbeRow>, CorpusError> {
    read_csv(path)
}

/// Files and hours of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Files.
    pub files: u64,
    /// Hours of audio (decoded duration).
    pub hours: f64,
}

impl Tally {
    fn add(&mut self, duration_s: f64) {
        self.files += 1;
        self.hours += duration_s / 3600.0;
    }
}

/// Statistics of one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitStats {
    /// All files of the split.
    pub total: Tally,
    /// Per label.
    pub labels: BTreeMap<String, Tally>,
    /// Per source, then per label.
    pub sources: BTreeMap<String, BTreeMap<String, Tally>>,
    /// Distinct known speakers.
    pub speakers: u64,
}

/// Rejections summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedStats {
    /// All rejected files.
    pub total: u64,
    /// Per reason.
    pub reasons: BTreeMap<String, u64>,
    /// Per source, then per reason.
    pub sources: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Content of `stats.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Per split (`train`, `val`, `test`; all three always present).
    pub splits: BTreeMap<String, SplitStats>,
    /// Rejections.
    pub rejected: RejectedStats,
    /// Speakers found in more than one split (empty when the splits are speaker-disjoint).
    pub speakers_in_several_splits: Vec<String>,
}

/// Computes the statistics of a metadata set. Sums run in (source, path) order, so the same
/// set gives the same bytes whatever the input order.
pub fn compute_stats(rows: &[MetadataRow], rejected: &[RejectedRow]) -> Stats {
    let mut sorted: Vec<&MetadataRow> = rows.iter().collect();
    sorted.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
    let mut stats = Stats::default();
    let mut speakers: BTreeMap<Split, BTreeSet<&str>> = BTreeMap::new();
    for split in Split::ALL {
        stats
            .splits
            .insert(split.as_str().into(), SplitStats::default());
    }
    for r in sorted {
        let s = stats
            .splits
            .get_mut(r.split.as_str())
            .expect("every split is present");
        s.total.add(r.duration_s);
        s.labels
            .entry(r.label.clone())
            .or_default()
            .add(r.duration_s);
        s.sources
            .entry(r.source.clone())
            .or_default()
            .entry(r.label.clone())
            .or_default()
            .add(r.duration_s);
        if !r.speaker.is_empty() {
            speakers.entry(r.split).or_default().insert(&r.speaker);
        }
    }
    let mut owner: BTreeMap<&str, usize> = BTreeMap::new();
    for (split, set) in &speakers {
        stats
            .splits
            .get_mut(split.as_str())
            .expect("every split is present")
            .speakers = set.len() as u64;
        for sp in set {
            *owner.entry(sp).or_default() += 1;
        }
    }
    stats.speakers_in_several_splits = owner
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(sp, _)| sp.to_string())
        .collect();
    for r in rejected {
        stats.rejected.total += 1;
        *stats.rejected.reasons.entry(r.reason.clone()).or_default() += 1;
        *stats
            .rejected
            .sources
            .entry(r.source.clone())
            .or_default()
            .entry(r.reason.clone())
            .or_default() += 1;
    }
    stats
}

/// Writes `stats.json` (pretty, keys sorted, trailing newline).
///
/// # Errors
/// `Io` when the file cannot be written.
pub fn write_stats(path: &Path, stats: &Stats) -> Result<(), CorpusError> {
    let mut text = serde_json::to_string_pretty(stats).expect("stats serialise");
    text.push('\n');
    std::fs::write(path, text).map_err(|source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads `stats.json`.
///
/// # Errors
/// `Io` when the file cannot be read, `Json` when it does not parse.
pub fn read_stats(path: &Path) -> Result<Stats, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(|source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| CorpusError::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        source: &str,
        path: &str,
        label: &str,
        split: Split,
        speaker: &str,
        d: f64,
    ) -> MetadataRow {
        MetadataRow {
            path: path.into(),
            label: label.into(),
            source: source.into(),
            split,
            speaker: speaker.into(),
            duration_s: d,
            sample_rate: 24_000,
            channels: 1,
            digest: format!("{:064x}", path.len()),
        }
    }

    fn sample() -> (Vec<MetadataRow>, Vec<RejectedRow>) {
        let rows = vec![
            row("real", "b.flac", "bonafide", Split::Train, "alice", 3600.0),
            row("real", "a.flac", "bonafide", Split::Train, "bob", 1800.0),
            row("tts", "x, \"y\".wav", "spoof", Split::Train, "alice", 900.0),
            row("real", "c.flac", "bonafide", Split::Test, "carol", 360.0),
            row("tts", "z.wav", "spoof", Split::Test, "alice", 36.0),
        ];
        let rejected = vec![
            RejectedRow {
                path: "bad.flac".into(),
                source: "real".into(),
                reason: "truncated".into(),
            },
            RejectedRow {
                path: "empty.wav".into(),
                source: "tts".into(),
                reason: "zero_byte".into(),
            },
        ];
        (rows, rejected)
    }

    #[test]
    fn split_csvs_round_trip_sorted_with_headers() {
        let dir = tempfile::tempdir().unwrap();
        let (rows, rejected) = sample();
        write_split_csvs(dir.path(), &rows).unwrap();
        let train = std::fs::read_to_string(dir.path().join("train.csv")).unwrap();
        assert!(train.starts_with(
            "path,label,source,split,speaker,duration_s,sample_rate,channels,digest\na.flac,bonafide,real,train,bob,1800.0,24000,1,"
        ));
        let val = std::fs::read_to_string(dir.path().join("val.csv")).unwrap();
        assert_eq!(val, format!("{}\n", METADATA_HEADER.join(",")));
        let back = read_split_csvs(dir.path()).unwrap();
        assert_eq!(back.len(), rows.len());
        let mut expected = rows.clone();
        expected.sort_by(|a, b| (a.split, &a.source, &a.path).cmp(&(b.split, &b.source, &b.path)));
        assert_eq!(back, expected);

        write_rejected(&dir.path().join("rejected.csv"), &rejected).unwrap();
        let text = std::fs::read_to_string(dir.path().join("rejected.csv")).unwrap();
        assert!(text.starts_with("path,source,reason\nbad.flac,real,truncated\n"));
        assert_eq!(
            read_rejected(&dir.path().join("rejected.csv")).unwrap(),
            rejected
        );
    }

    #[test]
    fn manifest_and_probe_records_round_trip_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = vec![
            ManifestRow {
                path: "b.wav".into(),
                source: "tts".into(),
                label: "spoof".into(),
                size: 10,
                digest: "ab".into(),
            },
            ManifestRow {
                path: "z, \"q\".flac".into(),
                source: "real".into(),
                label: "bonafide".into(),
                size: 0,
                digest: "cd".into(),
            },
        ];
        let path = dir.path().join("manifest.csv");
        write_manifest(&path, &manifest).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("path,source,label,size,digest\n\"z, \"\"q\"\".flac\",real,"),
            "{text}"
        );
        let back = read_manifest(&path).unwrap();
        assert_eq!(back, vec![manifest[1].clone(), manifest[0].clone()]);
        write_manifest(&path, &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", MANIFEST_HEADER.join(","))
        );

        let probes = vec![
            ProbeRow {
                source: "real".into(),
                path: "b.flac".into(),
                item: "k2".into(),
                reason: "truncated".into(),
                duration_s: 0.0,
                sample_rate: 0,
                channels: 0,
            },
            ProbeRow {
                source: "real".into(),
                path: "a.flac".into(),
                item: "k1".into(),
                reason: String::new(),
                duration_s: 1.25,
                sample_rate: 44_100,
                channels: 2,
            },
        ];
        let path = dir.path().join("probes.csv");
        write_probes(&path, &probes).unwrap();
        assert_eq!(
            read_probes(&path).unwrap(),
            vec![probes[1].clone(), probes[0].clone()]
        );
    }

    #[test]
    fn stats_count_hours_and_speakers_per_split_source_label() {
        let (rows, rejected) = sample();
        let stats = compute_stats(&rows, &rejected);
        let train = &stats.splits["train"];
        assert_eq!(train.total.files, 3);
        assert!((train.total.hours - 1.75).abs() < 1e-12);
        assert_eq!(train.speakers, 2);
        assert!((train.sources["real"]["bonafide"].hours - 1.5).abs() < 1e-12);
        assert_eq!(train.sources["tts"]["spoof"].files, 1);
        assert_eq!(train.labels["spoof"].files, 1);
        assert_eq!(stats.splits["val"].total.files, 0);
        assert_eq!(stats.splits["test"].speakers, 2);
        assert_eq!(stats.speakers_in_several_splits, vec!["alice".to_string()]);
        assert_eq!(stats.rejected.total, 2);
        assert_eq!(stats.rejected.reasons["truncated"], 1);
        assert_eq!(stats.rejected.sources["tts"]["zero_byte"], 1);

        // Same bytes whatever the input order.
        let mut reversed = rows.clone();
        reversed.reverse();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        write_stats(&a, &stats).unwrap();
        write_stats(&b, &compute_stats(&reversed, &rejected)).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(read_stats(&a).unwrap(), stats);
    }
}
