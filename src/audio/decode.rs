//! Symphonia decode loop: opens a file, decodes its default audio track packet by packet and
//! hands out mono `f32` blocks (channel policy applied); truncation and corruption are told
//! apart from the end of the stream.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use super::AudioError;

/// Extensions of the containers this build decodes; a file with one of them that no reader
/// recognises is reported as corrupt rather than unsupported.
pub const DECODABLE_EXTENSIONS: &[&str] = &["flac", "wav", "wave", "ogg", "oga", "mp3"];

/// How a multi-channel file becomes one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelPolicy {
    /// Keep channel 0 only (what the reference does).
    #[default]
    First,
    /// Average all channels.
    Mean,
}

/// What a finished decode saw, besides the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeSummary {
    /// Native sample rate in Hz.
    pub sample_rate: u32,
    /// Channels in the file.
    pub channels: u16,
    /// Frames (samples per channel) decoded.
    pub frames: u64,
    /// Frames the container header declares, when it declares any.
    pub declared_frames: Option<u64>,
    /// Packets skipped because they failed to decode, plus stretches the demuxer dropped
    /// (seen as gaps in the packet timestamps).
    pub skipped_packets: u64,
    /// Frames missing inside the stream (gaps in the packet timestamps).
    pub lost_frames: u64,
    /// Codec name as Symphonia reports it (e.g. `flac`).
    pub codec: String,
}

/// An open file being decoded, one packet at a time.
pub struct DecodeStream {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    sample_rate: u32,
    channels: u16,
    declared_frames: Option<u64>,
    frames: u64,
    skipped_packets: u64,
    lost_frames: u64,
    /// Packet timestamps count frames (time base 1/rate), so gaps and the end can be checked.
    frame_timestamps: bool,
    start_ts: i64,
    next_pts: Option<i64>,
    stream_end: i64,
    codec: String,
    planes: Vec<Vec<f32>>,
    ended: bool,
}

impl std::fmt::Debug for DecodeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeStream")
            .field("path", &self.path)
            .field("sample_rate", &self.sample_rate)
            .field("channels", &self.channels)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

fn extension_of(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

fn unreadable(path: &Path, source: std::io::Error) -> AudioError {
    AudioError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

/// Classifies an error raised while opening a file (probe or decoder creation).
fn open_error(path: &Path, err: SymError, stage: &str) -> AudioError {
    let path_buf = path.to_path_buf();
    match err {
        SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::Truncated {
                path: path_buf,
                decoded: 0,
                declared: None,
                detail: format!("the file ends inside its header ({stage})"),
            }
        }
        SymError::IoError(e) => unreadable(path, e),
        SymError::Unsupported(what) => {
            let decodable =
                extension_of(path).is_some_and(|e| DECODABLE_EXTENSIONS.contains(&e.as_str()));
            if decodable && stage == "probe" {
                AudioError::Corrupt {
                    path: path_buf,
                    detail: format!("no container reader recognises its bytes ({what})"),
                }
            } else {
                AudioError::UnsupportedCodec {
                    path: path_buf,
                    detail: what.to_string(),
                }
            }
        }
        other => AudioError::Corrupt {
            path: path_buf,
            detail: format!("{stage}: {other}"),
        },
    }
}

impl DecodeStream {
    /// Opens `path`, probes its container and creates a decoder for its default audio track.
    ///
    /// # Errors
    /// `ZeroByte`, `Unreadable`, `Corrupt` (unrecognisable bytes under a decodable extension),
    /// `UnsupportedCodec` (a container or codec this build cannot decode) or `Truncated` (the file
    /// ends inside its header).
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let file = File::open(path).map_err(|e| unreadable(path, e))?;
        let len = file.metadata().map_err(|e| unreadable(path, e))?.len();
        if len == 0 {
            return Err(AudioError::ZeroByte {
                path: path.to_path_buf(),
            });
        }
        let mss = MediaSourceStream::new(
            Box::new(file),
            MediaSourceStreamOptions {
                buffer_len: 256 * 1024,
            },
        );
        let mut hint = Hint::new();
        if let Some(ext) = extension_of(path) {
            hint.with_extension(&ext);
        }
        let format = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| open_error(path, e, "probe"))?;
        let track =
            format
                .default_track(TrackType::Audio)
                .ok_or_else(|| AudioError::UnsupportedCodec {
                    path: path.to_path_buf(),
                    detail: "the container has no audio track".into(),
                })?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| AudioError::UnsupportedCodec {
                path: path.to_path_buf(),
                detail: "the audio track has no codec parameters".into(),
            })?
            .clone();
        let track_id = track.id;
        let declared_frames = track.num_frames;
        let start_ts = track.start_ts.get();
        let frame_timestamps = match (track.time_base, params.sample_rate) {
            (Some(tb), Some(rate)) => tb.numer.get() == 1 && tb.denom.get() == rate,
            _ => false,
        };
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| open_error(path, e, "decoder"))?;
        let codec = decoder.codec_info().short_name.to_string();
        let sample_rate = params.sample_rate.unwrap_or(0);
        let channels = params
            .channels
            .as_ref()
            .map_or(0, |c| u16::try_from(c.count()).unwrap_or(u16::MAX));
        Ok(Self {
            path: path.to_path_buf(),
            format,
            decoder,
            track_id,
            sample_rate,
            channels,
            declared_frames,
            frames: 0,
            skipped_packets: 0,
            lost_frames: 0,
            frame_timestamps,
            start_ts,
            next_pts: None,
            stream_end: start_ts,
            codec,
            planes: Vec::new(),
            ended: false,
        })
    }

    /// Native sample rate (0 until known for containers that do not declare it up front).
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Channel count (0 until known for containers that do not declare it up front).
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames the header declares, if it declares any.
    pub fn declared_frames(&self) -> Option<u64> {
        self.declared_frames
    }

    /// Decodes the next packet into `out` (cleared first) as mono samples under `policy`.
    /// Returns `Ok(false)` at the end of the stream. A packet that fails to decode is skipped
    /// and counted; any other error ends the decode with a categorised error.
    ///
    /// # Errors
    /// `Truncated` when the stream ends before the frames its header declares (or inside a
    /// packet), `Corrupt` on any other demux or decode failure.
    pub fn next_block(
        &mut self,
        policy: ChannelPolicy,
        out: &mut Vec<f32>,
    ) -> Result<bool, AudioError> {
        out.clear();
        loop {
            if self.ended {
                return Ok(false);
            }
            let packet = match self.format.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => {
                    self.ended = true;
                    self.check_complete()?;
                    return Ok(false);
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.ended = true;
                    return Err(self.truncated("the stream ends inside a packet"));
                }
                Err(SymError::IoError(e)) => {
                    self.ended = true;
                    return Err(unreadable(&self.path, e));
                }
                Err(SymError::ResetRequired) => {
                    // A chained stream (e.g. a second Ogg logical stream): treat its start as
                    // the end of the audio this file contributes.
                    self.ended = true;
                    return Ok(false);
                }
                Err(err) => {
                    self.ended = true;
                    return Err(AudioError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("demux failed after {} frames: {err}", self.frames),
                    });
                }
            };
            if packet.track_id != self.track_id {
                continue;
            }
            if self.frame_timestamps {
                let pts = packet.pts.get();
                let dur = i64::try_from(packet.dur.get()).unwrap_or(i64::MAX);
                if let Some(expected) = self.next_pts
                    && pts > expected
                {
                    self.skipped_packets += 1;
                    self.lost_frames += u64::try_from(pts - expected).unwrap_or(0);
                }
                self.next_pts = Some(pts.saturating_add(dur));
                self.stream_end = self.stream_end.max(pts.saturating_add(dur));
            }
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    let spec = buf.spec();
                    let rate = spec.rate();
                    let channels = u16::try_from(spec.channels().count()).unwrap_or(u16::MAX);
                    if self.sample_rate == 0 {
                        self.sample_rate = rate;
                    } else if rate != self.sample_rate {
                        self.ended = true;
                        return Err(AudioError::Corrupt {
                            path: self.path.clone(),
                            detail: format!(
                                "the sample rate changes mid-stream ({} Hz to {rate} Hz)",
                                self.sample_rate
                            ),
                        });
                    }
                    if self.channels == 0 {
                        self.channels = channels;
                    }
                    let frames = buf.frames();
                    if frames == 0 {
                        continue;
                    }
                    buf.copy_to_vecs_planar::<f32>(&mut self.planes);
                    self.frames += frames as u64;
                    mix_down(&self.planes, policy, out);
                    return Ok(true);
                }
                Err(SymError::DecodeError(_) | SymError::IoError(_)) => {
                    self.skipped_packets += 1;
                }
                Err(err) => {
                    self.ended = true;
                    return Err(AudioError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("decode failed after {} frames: {err}", self.frames),
                    });
                }
            }
        }
    }

    /// Largest absolute sample over all channels of the last decoded block.
    pub fn block_peak(&self) -> f32 {
        self.planes
            .iter()
            .flat_map(|p| p.iter())
            .fold(0.0f32, |m, s| m.max(s.abs()))
    }

    fn truncated(&self, why: &str) -> AudioError {
        AudioError::Truncated {
            path: self.path.clone(),
            decoded: self.frames,
            declared: self.declared_frames,
            detail: why.to_string(),
        }
    }

    fn check_complete(&self) -> Result<(), AudioError> {
        if self.frames == 0 {
            return Err(if self.skipped_packets > 0 {
                AudioError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("all {} packets failed to decode", self.skipped_packets),
                }
            } else if self.declared_frames.is_some_and(|d| d > 0) {
                self.truncated("no audio packet follows the header")
            } else {
                AudioError::Corrupt {
                    path: self.path.clone(),
                    detail: "the stream holds no audio".into(),
                }
            });
        }
        if let Some(declared) = self.declared_frames
            && self.frames < declared
        {
            // Packets reaching the declared end mean frames went missing inside the stream
            // (counted as skipped), not that the file was cut.
            let declared_end = self
                .start_ts
                .saturating_add(i64::try_from(declared).unwrap_or(i64::MAX));
            if !(self.frame_timestamps && self.stream_end >= declared_end) {
                return Err(self.truncated("the stream ends early"));
            }
        }
        Ok(())
    }

    /// What the decode saw so far (complete once [`Self::next_block`] returned `Ok(false)`).
    pub fn summary(&self) -> DecodeSummary {
        DecodeSummary {
            sample_rate: self.sample_rate,
            channels: self.channels,
            frames: self.frames,
            declared_frames: self.declared_frames,
            skipped_packets: self.skipped_packets,
            lost_frames: self.lost_frames,
            codec: self.codec.clone(),
        }
    }
}

/// Mixes planar channels into `out` under `policy`.
fn mix_down(planes: &[Vec<f32>], policy: ChannelPolicy, out: &mut Vec<f32>) {
    let Some(first) = planes.first() else {
        return;
    };
    match policy {
        ChannelPolicy::First => out.extend_from_slice(first),
        ChannelPolicy::Mean if planes.len() == 1 => out.extend_from_slice(first),
        ChannelPolicy::Mean => {
            out.extend_from_slice(first);
            for plane in &planes[1..] {
                for (o, s) in out.iter_mut().zip(plane) {
                    *o += *s;
                }
            }
            #[allow(clippy::cast_precision_loss)]
            let scale = 1.0 / planes.len() as f32;
            for o in out.iter_mut() {
                *o *= scale;
            }
        }
    }
}

/// A whole decoded file: mono samples at the native rate plus what the decode saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Mono samples in [-1, 1] at `summary.sample_rate`.
    pub samples: Vec<f32>,
    /// Rate, channels, frame counts, skipped packets.
    pub summary: DecodeSummary,
}

/// Decodes a whole file into mono samples at its native rate.
///
/// # Errors
/// Any categorised [`AudioError`] from [`DecodeStream`].
pub fn decode_file(path: &Path, policy: ChannelPolicy) -> Result<Decoded, AudioError> {
    let mut stream = DecodeStream::open(path)?;
    let mut samples = Vec::with_capacity(
        stream
            .declared_frames()
            .and_then(|f| usize::try_from(f).ok())
            .unwrap_or(0)
            .min(1 << 26),
    );
    let mut block = Vec::new();
    while stream.next_block(policy, &mut block)? {
        samples.extend_from_slice(&block);
    }
    Ok(Decoded {
        samples,
        summary: stream.summary(),
    })
}
