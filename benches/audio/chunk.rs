//! Chunk-stage throughput, side by side in one run: Symphonia decode-only (the floor), the
//! full chunk path (decode + resample + trim + crop + shard write) at 1 and 2 threads, and the
//! Python baseline (soundfile + soxr + repeat-pad). Reports corpus audio-seconds per
//! wall-second, the median of several repeats.
//!
//! Run: `cargo bench --no-default-features --bench chunk` (env: `BENCH_REPEATS`, default 5;
//! `BENCH_FILES`, default 200; `BENCH_SKIP_PYTHON=1` to leave both Python baselines out,
//! `BENCH_SKIP_TORCHAUDIO=1` the torchaudio one;
//! `BENCH_OUT_DIR`, where shards are written; `BENCH_PROFILE=1` for a per-step breakdown).

#[path = "../../tests/audio_support/mod.rs"]
mod audio_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use brspeech::audio::{ChannelPolicy, ChunkParams, CropMode, DecodeStream, chunk_file};
use brspeech::shards::{Dtype, ShardWriter};
use rayon::prelude::*;

const RATES: [u32; 5] = [16_000, 22_050, 24_000, 32_000, 44_100];
/// Shards the files are grouped into (one source, `bucket_of(path) mod SHARDS`).
const SHARDS: usize = 16;
/// Files of a shard chunked in parallel before their rows are written.
const BATCH: usize = 4;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Speech-like test signal: phrases of 0.8-2.5 s (harmonics of a gliding f0 under a ~4 Hz
/// syllable envelope that dips but does not stop), pauses of 0.1-0.5 s between phrases (about
/// 15 % of the time, most of them long enough for the trim to remove), and a faint noise floor.
fn speechlike(rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let n = (seconds * f64::from(rate)) as usize;
    let mut out = Vec::with_capacity(n);
    let mut phase = 0.0f64;
    while out.len() < n {
        let voiced = (0.8 + 1.7 * rng.next()) * f64::from(rate);
        let f0 = 100.0 + 150.0 * rng.next();
        let amp = 0.1 + 0.3 * rng.next();
        let syllable_hz = 3.0 + 2.0 * rng.next();
        for k in 0..voiced as usize {
            let t = k as f64 / f64::from(rate);
            let f = f0 * (1.0 + 0.1 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
            phase += 2.0 * std::f64::consts::PI * f / f64::from(rate);
            let syl = (std::f64::consts::PI * syllable_hz * t).sin();
            let env = 0.3 + 0.7 * syl * syl;
            let mut v = 0.0;
            for h in 1..=6 {
                if f * f64::from(h) < f64::from(rate) / 2.0 {
                    v += (phase * f64::from(h)).sin() / f64::from(h);
                }
            }
            out.push((amp * env * v * 0.6 + 0.002 * (rng.next() - 0.5)) as f32);
        }
        let pause = (0.1 + 0.4 * rng.next()) * f64::from(rate);
        for _ in 0..pause as usize {
            out.push((0.002 * (rng.next() - 0.5)) as f32);
        }
    }
    out.truncate(n);
    out
}

/// Generates (once) the mixed-rate FLAC set and returns (paths, total audio-seconds).
fn dataset(files: usize) -> (Vec<PathBuf>, f64) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-data")
        .join(format!("audio-chunk-v2-{files}"));
    let list: Vec<(PathBuf, u32, f64)> = (0..files)
        .map(|i| {
            let rate = RATES[i % RATES.len()];
            let seconds = 3.0 + ((i * 37) % 61) as f64 / 10.0;
            (dir.join(format!("f{i:04}_{rate}.flac")), rate, seconds)
        })
        .collect();
    let marker = dir.join("complete");
    if !marker.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        eprintln!("generating {files} FLAC files in {}", dir.display());
        list.par_iter()
            .enumerate()
            .for_each(|(i, (path, rate, seconds))| {
                let signal = speechlike(*rate, *seconds, i as u64 + 1);
                audio_support::write_flac(path, *rate, 1, &signal);
            });
        std::fs::write(&marker, b"").unwrap();
    }
    let total = list
        .iter()
        .map(|(_, r, s)| (s * f64::from(*r)).floor() / f64::from(*r))
        .sum();
    (list.into_iter().map(|(p, _, _)| p).collect(), total)
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn decode_only(files: &[PathBuf], threads: usize) {
    let frames: u64 = pool(threads).install(|| {
        files
            .par_iter()
            .map(|p| {
                let mut s = DecodeStream::open(p).unwrap();
                let mut block = Vec::new();
                while s.next_block(ChannelPolicy::First, &mut block).unwrap() {}
                s.frames()
            })
            .sum()
    });
    assert!(frames > 0);
}

/// The chunk stage's work: files grouped into shards by `bucket_of(path)`, shards processed
/// in parallel, files inside a shard in batches of `BATCH` (in parallel too), clips written in
/// path order to the shard's streaming writer (memory: a batch of clips per shard in flight).
fn chunk_path(shards: &[Vec<PathBuf>], threads: usize, params: &ChunkParams, out: &Path) {
    let rows: u64 = pool(threads).install(|| {
        shards
            .par_iter()
            .enumerate()
            .map(|(i, files)| {
                let mut w = ShardWriter::create(
                    &out.join(format!("shard-{i:03}.safetensors")),
                    "audio",
                    Dtype::I16,
                    &[params.samples],
                    BTreeMap::new(),
                )
                .unwrap();
                // Small batches of files in parallel, written in path order: idle threads can
                // help with another shard's batch, and memory stays at a batch of clips.
                for batch in files.chunks(BATCH) {
                    let done: Vec<_> = batch
                        .par_iter()
                        .map(|p| chunk_file(p, params).unwrap())
                        .collect();
                    for chunked in done {
                        for clip in chunked.clips {
                            w.write_row(&clip.samples).unwrap();
                        }
                    }
                }
                w.finish().unwrap().rows
            })
            .sum()
    });
    assert!(rows as usize >= shards.iter().map(Vec::len).sum::<usize>());
}

/// CPU seconds (user + system) this process has used, its exited threads included.
fn cpu_seconds(tick: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and
    // 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / tick
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs `f` and returns (wall seconds, CPU seconds).
fn timed(f: &dyn Fn(), tick: f64) -> (f64, f64) {
    let cpu = cpu_seconds(tick);
    let start = Instant::now();
    f();
    (start.elapsed().as_secs_f64(), cpu_seconds(tick) - cpu)
}

/// Time per step of the chunk path on one thread, over whole files (no early stop).
fn profile(files: &[PathBuf]) {
    use brspeech::audio::{TrimParams, decode_file, resample, trim_silence};
    let t = Instant::now();
    let decoded: Vec<_> = files
        .iter()
        .map(|p| decode_file(p, ChannelPolicy::First).unwrap())
        .collect();
    let t_decode = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let resampled: Vec<Vec<f32>> = decoded
        .iter()
        .map(|d| resample(&d.samples, d.summary.sample_rate, 16_000).unwrap())
        .collect();
    let t_resample = t.elapsed().as_secs_f64();
    for hint in [256usize, 512, 1024, 2048, 4096, 8192] {
        let t = Instant::now();
        let mut cut = Vec::new();
        for d in &decoded {
            let rate = d.summary.sample_rate;
            if rate == 16_000 {
                continue;
            }
            let mut r = brspeech::audio::StreamResampler::with_chunk(rate, 16_000, hint).unwrap();
            let mut out = Vec::new();
            r.push(&d.samples, &mut out);
            r.finish(&mut out);
            cut.push((rate, r.cutoff_hz()));
        }
        cut.sort_by_key(|c| c.0);
        cut.dedup_by_key(|c| c.0);
        println!(
            "chunk {hint}: {:.3} s, cutoffs {cut:?}",
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let trimmed: Vec<Vec<f32>> = resampled
        .iter()
        .map(|s| trim_silence(s, 16_000, &TrimParams::default()))
        .collect();
    let t_trim = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let clips: Vec<Vec<f32>> = trimmed
        .iter()
        .map(|s| brspeech::audio::repeat_pad(s, 64_600))
        .collect();
    let t_crop = t.elapsed().as_secs_f64();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let mut w = ShardWriter::create(
        &dir.path().join("a.safetensors"),
        "audio",
        Dtype::I16,
        &[64_600],
        BTreeMap::new(),
    )
    .unwrap();
    for c in &clips {
        w.write_row(c).unwrap();
    }
    w.finish().unwrap();
    let t_write = t.elapsed().as_secs_f64();
    println!(
        "decode {t_decode:.3} s, resample {t_resample:.3} s, trim {t_trim:.3} s, crop {t_crop:.3} s, write {t_write:.3} s"
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn python(files: &[PathBuf], repeats: usize, implementation: &str) -> Option<Vec<(f64, f64)>> {
    let list = std::env::temp_dir().join(format!("brspeech-bench-{}.txt", std::process::id()));
    let text: String = files.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/audio/python_baseline.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(&list)
        .arg(repeats.to_string())
        .arg(implementation)
        .output();
    let _ = std::fs::remove_file(&list);
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "python baseline failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("python baseline did not start: {e}");
            return None;
        }
    };
    let runs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["wall_s"].as_f64()?, v["cpu_s"].as_f64()?)))
        .collect();
    Some(runs)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let repeats: usize = std::env::var("BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let n_files: usize = std::env::var("BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (files, audio_s) = dataset(n_files);
    if std::env::var_os("BENCH_PROFILE").is_some() {
        profile(&files);
        return;
    }
    // Shards go to a temporary folder under `BENCH_OUT_DIR` (default: the system's).
    let out_dir = match std::env::var_os("BENCH_OUT_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let shard = out_dir.path();
    let mut shards: Vec<Vec<PathBuf>> = vec![Vec::new(); SHARDS];
    for p in &files {
        let name = p.file_name().unwrap().to_str().unwrap();
        shards[brspeech::shards::bucket_of(name, SHARDS as u32) as usize].push(p.clone());
    }

    let reference = ChunkParams {
        trim: true,
        ..ChunkParams::default()
    };
    let no_trim = ChunkParams::default();
    let all = ChunkParams {
        trim: true,
        crop: CropMode::All,
        ..ChunkParams::default()
    };
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let cases: Vec<Case> = vec![
        (
            "decode only (symphonia), 1 thread",
            Box::new(|| decode_only(&files, 1)),
        ),
        (
            "decode only (symphonia), 2 threads",
            Box::new(|| decode_only(&files, 2)),
        ),
        (
            "chunk: trim + crop first, 1 thread",
            Box::new(|| chunk_path(&shards, 1, &reference, shard)),
        ),
        (
            "chunk: trim + crop first, 2 threads",
            Box::new(|| chunk_path(&shards, 2, &reference, shard)),
        ),
        (
            "chunk: no trim, crop first, 1 thread",
            Box::new(|| chunk_path(&shards, 1, &no_trim, shard)),
        ),
        (
            "chunk: trim + crop all (full decode), 1 thread",
            Box::new(|| chunk_path(&shards, 1, &all, shard)),
        ),
        (
            "chunk: trim + crop all (full decode), 2 threads",
            Box::new(|| chunk_path(&shards, 2, &all, shard)),
        ),
    ];
    let tick = clock_ticks();
    // Warm the page cache.
    for (_, run) in &cases {
        run();
    }
    // Repeats interleave the cases, so a burst of load from elsewhere hits them alike.
    let mut times: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    for _ in 0..repeats {
        for (i, (_, run)) in cases.iter().enumerate() {
            times[i].push(timed(run.as_ref(), tick));
        }
    }
    let med = |t: &[(f64, f64)]| {
        (
            median(t.iter().map(|x| x.0).collect()),
            median(t.iter().map(|x| x.1).collect()),
        )
    };
    let mut rows: Vec<(String, (f64, f64))> = cases
        .iter()
        .zip(&times)
        .map(|((name, _), t)| ((*name).to_string(), med(t)))
        .collect();
    let baselines = [
        (
            "soundfile",
            "python: soundfile + soxr HQ + repeat-pad, 1 process",
        ),
        (
            "torchaudio",
            "python: torchaudio.load + functional.resample + repeat-pad, 1 thread",
        ),
    ];
    for (implementation, label) in baselines {
        let skip = std::env::var_os("BENCH_SKIP_PYTHON").is_some()
            || (implementation == "torchaudio"
                && std::env::var_os("BENCH_SKIP_TORCHAUDIO").is_some());
        if !skip
            && let Some(runs) = python(&files, repeats.max(1) + 1, implementation)
            && runs.len() > 1
        {
            // The first Python repeat warms imports and caches; it is left out.
            rows.push((label.into(), med(&runs[1..])));
        }
    }
    println!(
        "audio chunk benchmark: {} FLAC files in {SHARDS} shards, {:.1} audio-seconds, rates {:?}, median of {repeats}",
        files.len(),
        audio_s,
        RATES
    );
    println!("| path | wall s | CPU s | audio-s / wall-s | audio-s / CPU-s |");
    println!("|---|---:|---:|---:|---:|");
    for (name, (wall, cpu)) in &rows {
        println!(
            "| {name} | {wall:.3} | {cpu:.2} | {:.0} | {:.0} |",
            audio_s / wall,
            audio_s / cpu
        );
    }
    println!(
        "load average after the run: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let json: BTreeMap<&str, (f64, f64)> = rows
        .iter()
        .map(|(n, (w, c))| (n.as_str(), (audio_s / w, audio_s / c)))
        .collect();
    println!("{}", serde_json::to_string(&json).unwrap());
}
