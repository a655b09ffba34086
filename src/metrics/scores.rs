//! Scored clips: `scores.csv` rows (`path,source,label,logit`), their reader and writer, and the
//! validated two-class [`ScoreSet`] every metric is computed on.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MetricsError;

/// Ground-truth class of a clip. Bona fide is the positive class (label 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Real human speech (positive class, label 1).
    Bonafide,
    /// Synthetic or otherwise fake speech (label 0).
    Spoof,
}

impl Label {
    /// The reference's integer label: 1 = bona fide, 0 = spoof.
    #[must_use]
    pub fn as_int(self) -> i64 {
        match self {
            Self::Bonafide => 1,
            Self::Spoof => 0,
        }
    }

    /// Label from the reference's integers (1 = bona fide, 0 = spoof); other values give `None`.
    #[must_use]
    pub fn from_int(value: i64) -> Option<Self> {
        match value {
            1 => Some(Self::Bonafide),
            0 => Some(Self::Spoof),
            _ => None,
        }
    }

    /// `bonafide` or `spoof`, as written in CSV and JSON files.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bonafide => "bonafide",
            Self::Spoof => "spoof",
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `scores.csv`: a scored clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    /// Clip path (as in the metadata: relative to its source root, or as the corpus gives it).
    pub path: String,
    /// Source name (`real_asterisk`, `xtts`, ...).
    pub source: String,
    /// Ground truth.
    pub label: Label,
    /// Bona fide logit of the model (σ(logit) = P(bona fide)); not a probability.
    pub logit: f64,
}

/// Reads `scores.csv` rows from any reader (header `path,source,label,logit`).
///
/// # Errors
/// [`MetricsError::ReadScores`] with the line of the first bad row.
pub fn read_scores<R: Read>(reader: R) -> Result<Vec<ScoreRow>, MetricsError> {
    read_scores_named(reader, Path::new("<reader>"))
}

/// Reads a `scores.csv` file.
///
/// # Errors
/// [`MetricsError::Io`] when the file cannot be opened, [`MetricsError::ReadScores`] on a bad row.
pub fn read_scores_csv(path: &Path) -> Result<Vec<ScoreRow>, MetricsError> {
    let file = File::open(path).map_err(|source| MetricsError::Io {
        action: "open",
        path: path.to_path_buf(),
        source,
    })?;
    read_scores_named(file, path)
}

fn read_scores_named<R: Read>(reader: R, path: &Path) -> Result<Vec<ScoreRow>, MetricsError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let mut rows = Vec::new();
    for row in csv.deserialize::<ScoreRow>() {
        rows.push(row.map_err(|source| MetricsError::ReadScores {
            path: path.to_path_buf(),
            source,
        })?);
    }
    Ok(rows)
}

/// Writes `scores.csv` rows (with header) to any writer. Logits are written with the shortest
/// representation that reads back to the same `f64`.
///
/// # Errors
/// [`MetricsError::WriteScores`].
pub fn write_scores<W: Write>(writer: W, rows: &[ScoreRow]) -> Result<(), MetricsError> {
    write_scores_named(writer, rows, Path::new("<writer>"))
}

/// Writes a `scores.csv` file (created or truncated).
///
/// # Errors
/// [`MetricsError::Io`] when the file cannot be created, [`MetricsError::WriteScores`] otherwise.
pub fn write_scores_csv(path: &Path, rows: &[ScoreRow]) -> Result<(), MetricsError> {
    let file = File::create(path).map_err(|source| MetricsError::Io {
        action: "create",
        path: path.to_path_buf(),
        source,
    })?;
    write_scores_named(std::io::BufWriter::new(file), rows, path)
}

fn write_scores_named<W: Write>(
    writer: W,
    rows: &[ScoreRow],
    path: &Path,
) -> Result<(), MetricsError> {
    let err = |source| MetricsError::WriteScores {
        path: PathBuf::from(path),
        source,
    };
    let mut csv = csv::WriterBuilder::new()
        .has_headers(true)
        .from_writer(writer);
    if rows.is_empty() {
        csv.write_record(["path", "source", "label", "logit"])
            .map_err(err)?;
    }
    for row in rows {
        csv.serialize(row).map_err(err)?;
    }
    csv.flush().map_err(|source| err(source.into()))?;
    Ok(())
}

/// Scores of one evaluation set split by class: every score finite, both classes non-empty.
///
/// The order inside each class is the input order (the ASVspoof EER uses a stable sort, so order
/// matters only for exactly tied scores, and only through the class: ties sort bona fide first).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSet {
    bonafide: Vec<f64>,
    spoof: Vec<f64>,
}

impl ScoreSet {
    /// A score set from the two classes' scores; `subset` names the set in error messages.
    ///
    /// # Errors
    /// [`MetricsError::NoBonafide`], [`MetricsError::NoSpoof`] or
    /// [`MetricsError::NonFiniteScore`] (with the index within its class).
    pub fn new(bonafide: Vec<f64>, spoof: Vec<f64>, subset: &str) -> Result<Self, MetricsError> {
        for (class, scores) in [("bona fide", &bonafide), ("spoof", &spoof)] {
            if let Some((i, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
                return Err(MetricsError::NonFiniteScore {
                    subset: subset.to_owned(),
                    item: format!("{class} score #{i}"),
                    value,
                });
            }
        }
        Self::checked(bonafide, spoof, subset)
    }

    /// A score set from `(label, score)` pairs in input order.
    ///
    /// # Errors
    /// As [`ScoreSet::new`]; a non-finite score is named by its index in the input.
    pub fn from_labelled<I>(items: I, subset: &str) -> Result<Self, MetricsError>
    where
        I: IntoIterator<Item = (Label, f64)>,
    {
        let mut bonafide = Vec::new();
        let mut spoof = Vec::new();
        for (i, (label, score)) in items.into_iter().enumerate() {
            if !score.is_finite() {
                return Err(MetricsError::NonFiniteScore {
                    subset: subset.to_owned(),
                    item: format!("item #{i}"),
                    value: score,
                });
            }
            match label {
                Label::Bonafide => bonafide.push(score),
                Label::Spoof => spoof.push(score),
            }
        }
        Self::checked(bonafide, spoof, subset)
    }

    /// A score set from `scores.csv` rows (their logits), in row order.
    ///
    /// # Errors
    /// As [`ScoreSet::new`]; a non-finite score is named by the clip's path.
    pub fn from_rows<'a, I>(rows: I, subset: &str) -> Result<Self, MetricsError>
    where
        I: IntoIterator<Item = &'a ScoreRow>,
    {
        let mut bonafide = Vec::new();
        let mut spoof = Vec::new();
        for row in rows {
            if !row.logit.is_finite() {
                return Err(MetricsError::NonFiniteScore {
                    subset: subset.to_owned(),
                    item: format!("`{}`", row.path),
                    value: row.logit,
                });
            }
            match row.label {
                Label::Bonafide => bonafide.push(row.logit),
                Label::Spoof => spoof.push(row.logit),
            }
        }
        Self::checked(bonafide, spoof, subset)
    }

    fn checked(bonafide: Vec<f64>, spoof: Vec<f64>, subset: &str) -> Result<Self, MetricsError> {
        if bonafide.is_empty() {
            return Err(MetricsError::NoBonafide {
                subset: subset.to_owned(),
            });
        }
        if spoof.is_empty() {
            return Err(MetricsError::NoSpoof {
                subset: subset.to_owned(),
            });
        }
        Ok(Self { bonafide, spoof })
    }

    /// Bona fide scores, in input order.
    #[must_use]
    pub fn bonafide(&self) -> &[f64] {
        &self.bonafide
    }

    /// Spoof scores, in input order.
    #[must_use]
    pub fn spoof(&self) -> &[f64] {
        &self.spoof
    }

    /// Number of scores (both classes).
    #[must_use]
    pub fn len(&self) -> usize {
        self.bonafide.len() + self.spoof.len()
    }

    /// Always false: a score set holds at least one score of each class.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The mirrored problem: classes swapped and every score negated (spoof becomes the
    /// positive class, scored by −logit). Error rates swap roles; EERs stay the same.
    #[must_use]
    pub fn swapped(&self) -> Self {
        Self {
            bonafide: self.spoof.iter().map(|s| -s).collect(),
            spoof: self.bonafide.iter().map(|s| -s).collect(),
        }
    }

    /// The same set with `f` applied to every score (for monotone-transform checks).
    ///
    /// # Errors
    /// [`MetricsError::NonFiniteScore`] when `f` yields a non-finite value.
    pub fn map(&self, f: impl Fn(f64) -> f64, subset: &str) -> Result<Self, MetricsError> {
        Self::new(
            self.bonafide.iter().map(|&s| f(s)).collect(),
            self.spoof.iter().map(|&s| f(s)).collect(),
            subset,
        )
    }

    /// Labelled scores, bona fide first then spoof, each in input order: the concatenation the
    /// ASVspoof EER sorts.
    pub(crate) fn labelled(&self) -> impl Iterator<Item = (Label, f64)> + '_ {
        self.bonafide
            .iter()
            .map(|&s| (Label::Bonafide, s))
            .chain(self.spoof.iter().map(|&s| (Label::Spoof, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, source: &str, label: Label, logit: f64) -> ScoreRow {
        ScoreRow {
            path: path.into(),
            source: source.into(),
            label,
            logit,
        }
    }

    #[test]
    fn csv_round_trip_keeps_every_bit_of_the_logits() {
        let rows = vec![
            row("a/b.flac", "real", Label::Bonafide, 0.1 + 0.2),
            row("c,d.flac", "tts \"x\"", Label::Spoof, -1.0e-300),
            row("e.flac", "tts", Label::Spoof, -17.251_234_567_890_123),
        ];
        let mut buf = Vec::new();
        write_scores(&mut buf, &rows).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.starts_with("path,source,label,logit\n"), "{text}");
        assert!(text.contains("real,bonafide,0.30000000000000004"), "{text}");
        let back = read_scores(buf.as_slice()).unwrap();
        assert_eq!(back, rows);
        for (a, b) in back.iter().zip(&rows) {
            assert_eq!(a.logit.to_bits(), b.logit.to_bits());
        }
    }

    #[test]
    fn empty_scores_file_still_has_a_header() {
        let mut buf = Vec::new();
        write_scores(&mut buf, &[]).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "path,source,label,logit\n");
    }

    #[test]
    fn bad_label_is_reported_with_its_line() {
        let text = "path,source,label,logit\na.flac,x,bonafide,1.5\nb.flac,y,fake,0.2\n";
        let err = read_scores(text.as_bytes()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, MetricsError::ReadScores { .. }));
        assert!(msg.contains("line 3") || msg.contains("line: 3"), "{msg}");
    }

    #[test]
    fn nan_logit_is_named_by_path() {
        let text = "path,source,label,logit\na.flac,x,bonafide,1.5\nb.flac,y,spoof,NaN\n";
        let rows = read_scores(text.as_bytes()).unwrap();
        let err = ScoreSet::from_rows(&rows, "all scored clips").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`b.flac`") && msg.contains("NaN"), "{msg}");
    }

    #[test]
    fn degenerate_sets_are_errors() {
        assert!(matches!(
            ScoreSet::new(vec![], vec![1.0], "s"),
            Err(MetricsError::NoBonafide { .. })
        ));
        assert!(matches!(
            ScoreSet::new(vec![1.0], vec![], "s"),
            Err(MetricsError::NoSpoof { .. })
        ));
        assert!(matches!(
            ScoreSet::new(vec![], vec![], "s"),
            Err(MetricsError::NoBonafide { .. })
        ));
        let err = ScoreSet::new(vec![1.0, f64::INFINITY], vec![0.0], "s").unwrap_err();
        assert!(err.to_string().contains("bona fide score #1"), "{err}");
        let err = ScoreSet::from_labelled([(Label::Spoof, f64::NAN)], "s").unwrap_err();
        assert!(err.to_string().contains("item #0"), "{err}");
    }

    #[test]
    fn swapped_negates_and_exchanges_classes() {
        let set = ScoreSet::new(vec![1.0, 2.0], vec![-3.0], "s").unwrap();
        let sw = set.swapped();
        assert_eq!(sw.bonafide(), &[3.0]);
        assert_eq!(sw.spoof(), &[-1.0, -2.0]);
        assert_eq!(sw.swapped(), set);
    }
}
