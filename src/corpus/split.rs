//! Split assignment: folder and CSV rules, seeded speaker-disjoint hashing, holdout sources.
//! Every decision depends only on the record set, never on its order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::CorpusError;
use super::source::{CsvRule, Source, SpeakerRule, SplitRule};

/// A data split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data (`dev` in BRSpeech).
    #[serde(alias = "dev")]
    Val,
    /// Test data.
    Test,
}

impl Split {
    /// All splits in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// `train`, `val` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        }
    }

    /// Split named by a folder: `train`, `dev` / `val`, `test` (ASCII case ignored).
    pub fn from_folder(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "train" => Some(Self::Train),
            "dev" | "val" => Some(Self::Val),
            "test" => Some(Self::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Self::Train),
            "val" | "dev" => Ok(Self::Val),
            "test" => Ok(Self::Test),
            other => Err(format!(
                "`{other}` is not a split: use `train`, `val` or `test`"
            )),
        }
    }
}

/// Stage-level split settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    /// Seed of the hash rule.
    pub seed: u64,
    /// `[train, val, test]` weights of the hash rule.
    pub ratios: [f64; 3],
    /// Sources whose files all go to test (unseen-attack evaluation).
    pub holdout_sources: Vec<String>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            ratios: [0.8, 0.1, 0.1],
            holdout_sources: Vec::new(),
        }
    }
}

/// What a source's own rule says about one file.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleSplit {
    /// The data fixes the split (a folder or a CSV listing).
    Fixed(Split),
    /// Decide by hashing (optional per-source ratios).
    Hash(Option<[f64; 3]>),
    /// The rule cannot place the file (why).
    Unplaced(String),
}

/// One file to place.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitRecord {
    /// Source name.
    pub source: String,
    /// Path relative to the source root.
    pub path: String,
    /// Speaker, when known.
    pub speaker: Option<String>,
    /// What the source's rule says.
    pub rule: RuleSplit,
}

/// Why a speaker ends up in more than one split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerConflict {
    /// The speaker.
    pub speaker: String,
    /// The splits the data puts them in.
    pub splits: BTreeSet<Split>,
}

/// The outcome for a record set, aligned with the input.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitAssignment {
    /// Split of each record, or why it has none.
    pub splits: Vec<Result<Split, String>>,
    /// Speakers that folder / CSV rules put in several splits (the data's own overlap; hash
    /// placement cannot undo it).
    pub conflicts: Vec<SpeakerConflict>,
}

/// Uniform value in [0, 1) from a seeded blake3 of `parts`.
fn unit_hash(seed: u64, parts: &[&str]) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(b"brspeech-split-v1\0");
    h.update(&seed.to_le_bytes());
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    #[allow(clippy::cast_precision_loss)]
    let u = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    u
}

/// Split for a uniform value under `[train, val, test]` weights.
pub fn split_for(u: f64, ratios: &[f64; 3]) -> Split {
    let total: f64 = ratios.iter().sum();
    let train = ratios[0] / total;
    let val = train + ratios[1] / total;
    // The last split with a positive weight takes what rounding leaves past `val`.
    let last = if ratios[2] > 0.0 {
        Split::Test
    } else if ratios[1] > 0.0 {
        Split::Val
    } else {
        Split::Train
    };
    if u < train {
        Split::Train
    } else if u < val && ratios[1] > 0.0 {
        Split::Val
    } else {
        last
    }
}

/// Places every record:
/// 1. a record of a `holdout_sources` source goes to test;
/// 2. a fixed rule (folder, CSV) is followed;
/// 3. a hash-rule record with a speaker goes where the fixed rules put that speaker, when they
///    put them in exactly one split; otherwise to `hash(seed, speaker)`, so every file of a
///    speaker, across all hash sources, lands in the same split;
/// 4. a hash-rule record without speaker goes to `hash(seed, source, path)`.
pub fn assign_splits(records: &[SplitRecord], config: &SplitConfig) -> SplitAssignment {
    let holdout: BTreeSet<&str> = config.holdout_sources.iter().map(String::as_str).collect();
    let mut fixed: BTreeMap<&str, BTreeSet<Split>> = BTreeMap::new();
    for r in records {
        if let (RuleSplit::Fixed(s), Some(sp)) = (&r.rule, &r.speaker)
            && !holdout.contains(r.source.as_str())
        {
            fixed.entry(sp.as_str()).or_default().insert(*s);
        }
    }
    let conflicts = fixed
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(sp, s)| SpeakerConflict {
            speaker: (*sp).to_string(),
            splits: s.clone(),
        })
        .collect();
    let splits = records
        .iter()
        .map(|r| {
            if holdout.contains(r.source.as_str()) {
                return Ok(Split::Test);
            }
            match &r.rule {
                RuleSplit::Fixed(s) => Ok(*s),
                RuleSplit::Unplaced(why) => Err(why.clone()),
                RuleSplit::Hash(ratios) => {
                    let ratios = ratios.as_ref().unwrap_or(&config.ratios);
                    Ok(match &r.speaker {
                        Some(sp) => match fixed.get(sp.as_str()) {
                            Some(set) if set.len() == 1 => *set.iter().next().expect("one split"),
                            _ => split_for(unit_hash(config.seed, &["speaker", sp]), ratios),
                        },
                        None => split_for(
                            unit_hash(config.seed, &["file", &r.source, &r.path]),
                            ratios,
                        ),
                    })
                }
            }
        })
        .collect();
    SplitAssignment { splits, conflicts }
}

/// What a source's split CSVs list: relative path → (split, speaker column value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CsvListing {
    /// Listed files.
    pub entries: BTreeMap<String, (Split, Option<String>)>,
    /// Paths listed more than once (the first listing wins).
    pub duplicates: Vec<String>,
}

fn normalize_listed(path: &str) -> String {
    let p = path.trim().replace('\\', "/");
    p.trim_start_matches("./").to_string()
}

/// Which column of the split CSVs holds speakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeakerColumn<'a> {
    /// This column, which every CSV must have (`speaker: { column: ... }`).
    Required(&'a str),
    /// This column when a CSV has it (the BRSpeech default, `client_id`).
    IfPresent(&'a str),
    /// No speakers from the CSVs.
    None,
}

/// Speaker column read from a `split: csv` source's files when it has no `speaker` rule.
pub const DEFAULT_SPEAKER_COLUMN: &str = "client_id";

/// Reads a source's split CSVs, with speakers from `speaker_column`.
///
/// # Errors
/// `Csv` for unreadable files or rows, `MissingColumn` when a header lacks the path column or a
/// required speaker column.
pub fn read_csv_listing(
    rule: &CsvRule,
    speaker_column: SpeakerColumn<'_>,
) -> Result<CsvListing, CorpusError> {
    let mut listing = CsvListing::default();
    for (split, file) in &rule.files {
        read_one_csv(file, *split, rule, speaker_column, &mut listing)?;
    }
    Ok(listing)
}

fn read_one_csv(
    file: &Path,
    split: Split,
    rule: &CsvRule,
    speaker_column: SpeakerColumn<'_>,
    listing: &mut CsvListing,
) -> Result<(), CorpusError> {
    let csv_err = |source| CorpusError::Csv {
        path: file.to_path_buf(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(rule.delimiter)
        .flexible(true)
        .from_path(file)
        .map_err(csv_err)?;
    let headers = reader.headers().map_err(csv_err)?.clone();
    let column = |name: &str| -> Result<usize, CorpusError> {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| CorpusError::MissingColumn {
                path: file.to_path_buf(),
                column: name.to_string(),
                available: headers.iter().map(str::to_string).collect(),
            })
    };
    let path_idx = column(&rule.path_column)?;
    let speaker_idx = match speaker_column {
        SpeakerColumn::Required(name) => Some(column(name)?),
        SpeakerColumn::IfPresent(name) => column(name).ok(),
        SpeakerColumn::None => None,
    };
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let Some(path) = record.get(path_idx).map(normalize_listed) else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        let speaker = speaker_idx
            .and_then(|i| record.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        match listing.entries.entry(path) {
            std::collections::btree_map::Entry::Occupied(e) => {
                listing.duplicates.push(e.key().clone());
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((split, speaker));
            }
        }
    }
    Ok(())
}

/// The rule split and speaker of one file of `source` (`listing` is the source's CSV listing
/// for `split: csv` sources).
pub fn place_file(
    source: &Source,
    relative_path: &str,
    listing: Option<&CsvListing>,
) -> (RuleSplit, Option<String>) {
    let listed = listing.and_then(|l| l.entries.get(relative_path));
    let speaker = match &source.speaker {
        Some(SpeakerRule::Column(_)) | None => listed.and_then(|(_, sp)| sp.clone()),
        Some(rule @ SpeakerRule::Regex(_)) => rule.speaker_from_path(relative_path),
    };
    let rule = match &source.split {
        SplitRule::Folders => {
            let mut dirs = relative_path.split('/').collect::<Vec<_>>();
            dirs.pop();
            match dirs.into_iter().find_map(Split::from_folder) {
                Some(s) => RuleSplit::Fixed(s),
                None => RuleSplit::Unplaced(
                    "no `train/`, `dev/`, `val/` or `test/` folder in its path".into(),
                ),
            }
        }
        SplitRule::Csv(_) => match listed {
            Some((s, _)) => RuleSplit::Fixed(*s),
            None => RuleSplit::Unplaced("not listed in the source's split CSV files".into()),
        },
        SplitRule::Hash { ratios } => RuleSplit::Hash(*ratios),
    };
    (rule, speaker)
}

/// One file of the corpus to place (as the scan produced it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusFile {
    /// Source name.
    pub source: String,
    /// Path relative to the source root.
    pub path: String,
}

/// Placement of one corpus file.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The split, or why there is none.
    pub split: Result<Split, String>,
    /// Speaker, when known.
    pub speaker: Option<String>,
}

/// Corpus-level placement: reads the CSV listings of `split: csv` sources, resolves speakers,
/// assigns splits. The result is aligned with `files`.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusSplits {
    /// Placement per file.
    pub placements: Vec<Placement>,
    /// Speakers the data itself puts in several splits.
    pub conflicts: Vec<SpeakerConflict>,
    /// Per source: paths its CSVs list but the scan did not find.
    pub listed_missing: BTreeMap<String, Vec<String>>,
    /// Per source: paths its CSVs list more than once.
    pub listed_twice: BTreeMap<String, Vec<String>>,
}

/// Places every file of the corpus (see [`assign_splits`] for the rules).
///
/// # Errors
/// `UnknownSource` for a file or holdout naming no source; CSV read errors.
pub fn split_corpus(
    sources: &[Source],
    files: &[CorpusFile],
    config: &SplitConfig,
) -> Result<CorpusSplits, CorpusError> {
    let by_name: BTreeMap<&str, &Source> = sources.iter().map(|s| (s.name.as_str(), s)).collect();
    for h in &config.holdout_sources {
        if !by_name.contains_key(h.as_str()) {
            return Err(CorpusError::UnknownSource {
                name: h.clone(),
                context: "holdout_sources".into(),
            });
        }
    }
    let mut listings: BTreeMap<&str, CsvListing> = BTreeMap::new();
    for s in sources {
        if let SplitRule::Csv(rule) = &s.split {
            let column = match &s.speaker {
                Some(SpeakerRule::Column(c)) => SpeakerColumn::Required(c),
                Some(SpeakerRule::Regex(_)) => SpeakerColumn::None,
                None => SpeakerColumn::IfPresent(DEFAULT_SPEAKER_COLUMN),
            };
            listings.insert(&s.name, read_csv_listing(rule, column)?);
        }
    }
    let mut records = Vec::with_capacity(files.len());
    let mut found: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for f in files {
        let source = by_name
            .get(f.source.as_str())
            .ok_or_else(|| CorpusError::UnknownSource {
                name: f.source.clone(),
                context: format!("file `{}`", f.path),
            })?;
        let listing = listings.get(f.source.as_str());
        if listing.is_some() {
            found.entry(&f.source).or_default().insert(&f.path);
        }
        let (rule, speaker) = place_file(source, &f.path, listing);
        records.push(SplitRecord {
            source: f.source.clone(),
            path: f.path.clone(),
            speaker,
            rule,
        });
    }
    let assignment = assign_splits(&records, config);
    let mut listed_missing = BTreeMap::new();
    let mut listed_twice = BTreeMap::new();
    for (name, listing) in &listings {
        let seen = found.get(name);
        let missing: Vec<String> = listing
            .entries
            .keys()
            .filter(|p| !seen.is_some_and(|s| s.contains(p.as_str())))
            .cloned()
            .collect();
        if !missing.is_empty() {
            listed_missing.insert((*name).to_string(), missing);
        }
        if !listing.duplicates.is_empty() {
            listed_twice.insert((*name).to_string(), listing.duplicates.clone());
        }
    }
    let placements = records
        .into_iter()
        .zip(assignment.splits)
        .map(|(r, split)| Placement {
            split,
            speaker: r.speaker,
        })
        .collect();
    Ok(CorpusSplits {
        placements,
        conflicts: assignment.conflicts,
        listed_missing,
        listed_twice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::source::{SourceDef, validate_sources};

    fn rec(source: &str, path: &str, speaker: Option<&str>, rule: RuleSplit) -> SplitRecord {
        SplitRecord {
            source: source.into(),
            path: path.into(),
            speaker: speaker.map(str::to_string),
            rule,
        }
    }

    fn hashed_corpus() -> Vec<SplitRecord> {
        let mut out = Vec::new();
        for spk in 0..60 {
            for utt in 0..5 {
                let sp = format!("spk{spk}");
                out.push(rec(
                    "real",
                    &format!("{sp}/{utt}.flac"),
                    Some(&sp),
                    RuleSplit::Hash(None),
                ));
                out.push(rec(
                    "tts",
                    &format!("{sp}/{utt}.wav"),
                    Some(&sp),
                    RuleSplit::Hash(None),
                ));
            }
        }
        for i in 0..300 {
            out.push(rec(
                "nospk",
                &format!("{i}.wav"),
                None,
                RuleSplit::Hash(None),
            ));
        }
        out
    }

    #[test]
    fn no_speaker_is_in_two_splits_across_sources() {
        let records = hashed_corpus();
        let a = assign_splits(&records, &SplitConfig::default());
        let mut by_speaker: BTreeMap<&str, BTreeSet<Split>> = BTreeMap::new();
        for (r, s) in records.iter().zip(&a.splits) {
            if let Some(sp) = &r.speaker {
                by_speaker
                    .entry(sp)
                    .or_default()
                    .insert(*s.as_ref().unwrap());
            }
        }
        assert_eq!(by_speaker.len(), 60);
        assert!(by_speaker.values().all(|s| s.len() == 1));
        // Every split gets speakers at 0.8 / 0.1 / 0.1.
        let mut count = BTreeMap::new();
        for s in by_speaker.values() {
            *count.entry(*s.iter().next().unwrap()).or_insert(0) += 1;
        }
        assert!(count[&Split::Train] > 35, "{count:?}");
        assert!(
            count.get(&Split::Val).copied().unwrap_or(0) > 0,
            "{count:?}"
        );
        assert!(
            count.get(&Split::Test).copied().unwrap_or(0) > 0,
            "{count:?}"
        );
        assert!(a.conflicts.is_empty());
    }

    #[test]
    fn assignment_is_independent_of_order_and_follows_the_seed() {
        let records = hashed_corpus();
        let config = SplitConfig::default();
        let a = assign_splits(&records, &config);
        let mut shuffled: Vec<(usize, SplitRecord)> = records.iter().cloned().enumerate().collect();
        // A fixed permutation: reverse, then interleave halves.
        shuffled.reverse();
        let (x, y) = shuffled.split_at(shuffled.len() / 2);
        let mixed: Vec<(usize, SplitRecord)> = y
            .iter()
            .zip(x)
            .flat_map(|(p, q)| [p.clone(), q.clone()])
            .collect();
        let only: Vec<SplitRecord> = mixed.iter().map(|(_, r)| r.clone()).collect();
        let b = assign_splits(&only, &config);
        for ((i, _), s) in mixed.iter().zip(&b.splits) {
            assert_eq!(&a.splits[*i], s);
        }
        let other = assign_splits(&records, &SplitConfig { seed: 7, ..config });
        assert_ne!(a.splits, other.splits);
    }

    #[test]
    fn holdout_sources_go_to_test_only() {
        let records = hashed_corpus();
        let config = SplitConfig {
            holdout_sources: vec!["tts".into()],
            ..SplitConfig::default()
        };
        let a = assign_splits(&records, &config);
        for (r, s) in records.iter().zip(&a.splits) {
            if r.source == "tts" {
                assert_eq!(s, &Ok(Split::Test));
            }
        }
        assert!(a.splits.iter().any(|s| s == &Ok(Split::Train)));
    }

    #[test]
    fn hashed_speakers_follow_fixed_rules_and_conflicts_are_reported() {
        let records = vec![
            rec(
                "real",
                "train/a.flac",
                Some("alice"),
                RuleSplit::Fixed(Split::Train),
            ),
            rec(
                "real",
                "test/b.flac",
                Some("bob"),
                RuleSplit::Fixed(Split::Test),
            ),
            rec(
                "real",
                "dev/c.flac",
                Some("carol"),
                RuleSplit::Fixed(Split::Val),
            ),
            rec(
                "real",
                "test/c.flac",
                Some("carol"),
                RuleSplit::Fixed(Split::Test),
            ),
            rec("tts", "alice/1.wav", Some("alice"), RuleSplit::Hash(None)),
            rec("tts", "bob/1.wav", Some("bob"), RuleSplit::Hash(None)),
            rec(
                "tts",
                "x.wav",
                None,
                RuleSplit::Unplaced("no folder".into()),
            ),
        ];
        let a = assign_splits(&records, &SplitConfig::default());
        assert_eq!(a.splits[4], Ok(Split::Train));
        assert_eq!(a.splits[5], Ok(Split::Test));
        assert_eq!(a.splits[6], Err("no folder".into()));
        assert_eq!(a.conflicts.len(), 1);
        assert_eq!(a.conflicts[0].speaker, "carol");
    }

    #[test]
    fn ratios_with_zero_weights_never_pick_those_splits() {
        for i in 0..2000 {
            #[allow(clippy::cast_precision_loss)]
            let u = f64::from(i) / 2000.0;
            assert_eq!(split_for(u, &[1.0, 0.0, 0.0]), Split::Train);
            assert_ne!(split_for(u, &[0.7, 0.2, 0.0]), Split::Test);
            assert_ne!(split_for(u, &[0.5, 0.0, 0.5]), Split::Val);
        }
        assert_eq!(split_for(0.999_999_999, &[0.7, 0.2, 0.0]), Split::Val);
    }

    fn brspeech_like(dir: &Path) -> Vec<Source> {
        let real = dir.join("real");
        for split in ["train", "dev", "test"] {
            std::fs::create_dir_all(real.join(split).join("audio")).unwrap();
        }
        // Pipe-delimited, with a transcript holding commas and quotes.
        std::fs::write(
            real.join("train.csv"),
            "wav_filename|wav_filesize|transcript|client_id\n\
             train/audio/a1.flac|100|olá, \"mundo\"|alice\n\
             train/audio/a2.flac|100|bom dia|alice\n\
             train/audio/b1.flac|100|boa noite|bob\n",
        )
        .unwrap();
        std::fs::write(
            real.join("dev.csv"),
            "wav_filename|wav_filesize|transcript|client_id\n./dev/audio/c1.flac|1|x|carol\n",
        )
        .unwrap();
        std::fs::write(
            real.join("test.csv"),
            "wav_filename|wav_filesize|transcript|client_id\n\
             test/audio/d1.flac|1|x|dave\n\
             test/audio/gone.flac|1|x|dave\n",
        )
        .unwrap();
        let defs: Vec<SourceDef> = serde_yaml::from_str(
            r#"
- name: real
  label: bonafide
  root: real
  split: csv
- name: f5tts
  label: spoof
  root: f5
  split: folders
- name: clone
  label: spoof
  root: f5
  speaker: { regex: '^(?P<speaker>[a-z]+)_' }
"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("f5")).unwrap();
        validate_sources(&defs, dir).unwrap()
    }

    #[test]
    fn csv_rule_reads_a_brspeech_like_listing() {
        let dir = tempfile::tempdir().unwrap();
        let sources = brspeech_like(dir.path());
        let files: Vec<CorpusFile> = [
            ("real", "train/audio/a1.flac"),
            ("real", "train/audio/a2.flac"),
            ("real", "train/audio/b1.flac"),
            ("real", "dev/audio/c1.flac"),
            ("real", "test/audio/d1.flac"),
            ("real", "test/audio/unlisted.flac"),
            ("f5tts", "train/audio/x.flac"),
            ("f5tts", "dev/audio/y.flac"),
            ("f5tts", "other/z.flac"),
            ("clone", "alice_1.wav"),
            ("clone", "dave_1.wav"),
            ("clone", "erin_1.wav"),
        ]
        .iter()
        .map(|(s, p)| CorpusFile {
            source: (*s).into(),
            path: (*p).into(),
        })
        .collect();
        let out = split_corpus(&sources, &files, &SplitConfig::default()).unwrap();
        let got: Vec<(Result<Split, String>, Option<&str>)> = out
            .placements
            .iter()
            .map(|p| (p.split.clone(), p.speaker.as_deref()))
            .collect();
        assert_eq!(got[0], (Ok(Split::Train), Some("alice")));
        assert_eq!(got[2], (Ok(Split::Train), Some("bob")));
        assert_eq!(got[3], (Ok(Split::Val), Some("carol")));
        assert_eq!(got[4], (Ok(Split::Test), Some("dave")));
        assert!(got[5].0.as_ref().unwrap_err().contains("not listed"));
        assert_eq!(got[6].0, Ok(Split::Train));
        assert_eq!(got[7].0, Ok(Split::Val));
        assert!(got[8].0.as_ref().unwrap_err().contains("folder"));
        // Hash-rule speakers known from the CSV follow it: speaker-disjoint across sources.
        assert_eq!(got[9], (Ok(Split::Train), Some("alice")));
        assert_eq!(got[10], (Ok(Split::Test), Some("dave")));
        assert_eq!(got[11].1, Some("erin"));
        assert_eq!(
            out.listed_missing.get("real"),
            Some(&vec!["test/audio/gone.flac".to_string()])
        );
        assert!(out.conflicts.is_empty());
    }

    #[test]
    fn csv_without_a_speaker_column_gives_no_speakers_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let sources = brspeech_like(dir.path());
        let real = dir.path().join("real");
        for f in ["train.csv", "dev.csv", "test.csv"] {
            std::fs::write(
                real.join(f),
                "wav_filename|transcript\ntrain/audio/a1.flac|x\n",
            )
            .unwrap();
        }
        let files = vec![CorpusFile {
            source: "real".into(),
            path: "train/audio/a1.flac".into(),
        }];
        let out = split_corpus(&sources, &files, &SplitConfig::default()).unwrap();
        assert_eq!(out.placements[0].split, Ok(Split::Train));
        assert_eq!(out.placements[0].speaker, None);
        assert_eq!(out.listed_twice.get("real").map(Vec::len), Some(2));
    }

    #[test]
    fn csv_rule_names_a_missing_column() {
        let dir = tempfile::tempdir().unwrap();
        let mut sources = brspeech_like(dir.path());
        sources[0].speaker = Some(SpeakerRule::Column("speaker_id".into()));
        let err = split_corpus(&sources, &[], &SplitConfig::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no column `speaker_id`") && msg.contains("client_id"),
            "{msg}"
        );
        let err = split_corpus(
            &sources[1..],
            &[],
            &SplitConfig {
                holdout_sources: vec!["nope".into()],
                ..SplitConfig::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
    }
}
