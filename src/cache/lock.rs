//! The run lock: one run per cache. The OS lock (`flock` through `std::fs::File::try_lock`) is
//! released by the kernel when its owner dies, so a dead owner's lock is always reclaimed; the
//! file's content (pid, host, start time) names the holder in messages.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Cache, CacheError, fsutil};

/// Who holds (or held) the run lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Start time, seconds since the epoch.
    pub started: u64,
    /// The command line.
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = humantime::format_rfc3339_seconds(
            UNIX_EPOCH + std::time::Duration::from_secs(self.started),
        );
        write!(
            f,
            "pid {} on host `{}` (`{}`, running since {since})",
            self.pid, self.host, self.command
        )
    }
}

/// Something worth telling the user while taking the lock.
#[derive(Debug, Clone)]
pub enum LockNote {
    /// Another run holds the lock; waiting for it.
    Waiting(String),
    /// The previous holder died without releasing; its lock was taken over.
    Reclaimed(String),
}

/// The held run lock; released on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

impl RunLock {
    /// Takes the run lock of `cache`. With `wait`, blocks until the holder finishes; without,
    /// fails at once with [`CacheError::Locked`] naming the holder.
    ///
    /// # Errors
    /// [`CacheError::Locked`], or the I/O error on the lock file.
    pub fn acquire(
        cache: &Cache,
        wait: bool,
        note: &dyn Fn(LockNote),
    ) -> Result<RunLock, CacheError> {
        let path = cache.root().join("lock");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fsutil::write_error(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file)
                    .map_or_else(|| "another run".to_owned(), |h| h.to_string());
                if !wait {
                    return Err(CacheError::Locked {
                        cache: cache.root().to_path_buf(),
                        holder,
                    });
                }
                note(LockNote::Waiting(holder));
                file.lock().map_err(|e| CacheError::Write {
                    path: path.clone(),
                    source: e,
                })?;
            }
            Err(TryLockError::Error(e)) => return Err(CacheError::Write { path, source: e }),
        }
        if let Some(old) = read_holder(&mut file) {
            // Holders clear the file when they finish: content left behind means its owner died.
            note(LockNote::Reclaimed(old.to_string()));
        }
        let me = Holder {
            pid: std::process::id(),
            host: this_host(),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        };
        let bytes = serde_json::to_vec(&me).unwrap_or_default();
        file.set_len(0).map_err(|e| fsutil::write_error(&path, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| fsutil::write_error(&path, e))?;
        file.write_all(&bytes)
            .map_err(|e| fsutil::write_error(&path, e))?;
        Ok(RunLock { file, path })
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Whether process `pid` on this host is alive.
#[must_use]
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This host's name (for tmp-folder ownership).
pub(crate) fn host() -> String {
    this_host()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_fails_fast_naming_the_holder_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let first = RunLock::acquire(&cache, false, &|_| {}).unwrap();
        let err = RunLock::acquire(&cache, false, &|_| {}).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        let notes = std::sync::Mutex::new(Vec::new());
        let _again = RunLock::acquire(&cache, false, &|n| notes.lock().unwrap().push(n)).unwrap();
        assert!(
            notes.lock().unwrap().is_empty(),
            "a cleanly released lock is not 'reclaimed'"
        );
    }

    #[test]
    fn content_left_by_a_dead_owner_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let dead = Holder {
            pid: 999_999,
            host: this_host(),
            started: 1,
            command: "brspeech run".into(),
        };
        std::fs::write(
            cache.root().join("lock"),
            serde_json::to_vec(&dead).unwrap(),
        )
        .unwrap();
        let notes = std::sync::Mutex::new(Vec::new());
        let _l = RunLock::acquire(&cache, false, &|n| {
            notes.lock().unwrap().push(format!("{n:?}"))
        })
        .unwrap();
        let notes = notes.lock().unwrap();
        assert!(
            notes[0].contains("Reclaimed") && notes[0].contains("999999"),
            "{notes:?}"
        );
        assert!(!pid_alive(999_999));
        assert!(pid_alive(std::process::id()));
    }
}
