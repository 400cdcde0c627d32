//! The database file, with the log writer's page writes and sync paced.
//!
//! redb writes a transaction's pages at its commit, each with a `pwrite` of its own: for a batch
//! of a thousand logged records some 0.5 ms of the commit's ~1.3 ms, and the `fdatasync` after
//! them another 0.35 ms. Run in one go, the commit holds the request worker that shares the
//! writer's core off it for that long. Here each page write first gives [`pace::pace`] its turn,
//! so inside the writer's paced run (and nowhere else: `pace` does nothing on other threads) the
//! commit rests between slices like the rest of the batch.
//!
//! The sync is paced too. Most of `fdatasync`'s time is the kernel starting the write-back of
//! the pages the commit wrote (walking them, building and submitting the block requests), and
//! kernel code is not preempted: traced with `perf sched` at c=32, those runs of 0.3–0.7 ms were
//! the writer's longest left. So inside a paced run the file first starts the write-back of what
//! was written since the last sync, [`KICK`] bytes at a time with a rest between
//! (`posix_fadvise(DONTNEED)`, which starts it without waiting; `sync_file_range` has no safe
//! wrapper), and `fdatasync` then mostly waits for it. The bytes, their order and the sync are
//! redb's, unchanged.

use std::ops::Bound;
#[cfg(target_os = "linux")]
use std::sync::Mutex;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use super::pace;

/// The error of a backend's I/O (redb's, without its experimental API).
type BackendIoError = std::io::Error;

/// How much written data one start of its write-back covers: about 50 µs of the kernel's work
/// on this kind of machine, under a [`pace::SLICE`].
#[cfg(target_os = "linux")]
const KICK: u64 = 256 * 1024;

/// [`FileBackend`] with [`pace::pace`] before each write and sync, and the sync's write-back
/// started in paced pieces.
#[derive(Debug)]
pub struct PacedFile {
    inner: FileBackend,
    /// The same file, for the write-back's start.
    #[cfg(target_os = "linux")]
    file: std::fs::File,
    /// The byte ranges written in a paced run since the last sync.
    #[cfg(target_os = "linux")]
    written: Mutex<Vec<(u64, u64)>>,
}

impl PacedFile {
    /// Wraps `file`, which redb then locks and owns.
    pub fn new(file: std::fs::File) -> Result<Self, redb::DatabaseError> {
        #[cfg(target_os = "linux")]
        let copy = file.try_clone()?;
        Ok(Self {
            inner: FileBackend::new(file)?,
            #[cfg(target_os = "linux")]
            file: copy,
            #[cfg(target_os = "linux")]
            written: Mutex::new(Vec::new()),
        })
    }

    /// Starts the write-back of what was written in a paced run since the last sync, a
    /// [`KICK`] at a time, resting between. Advice only: where it fails, the sync does it all.
    #[cfg(target_os = "linux")]
    fn start_write_back(&self) {
        let mut ranges = std::mem::take(&mut *self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (start, end) in merged(&mut ranges) {
            let mut at = start;
            while at < end {
                let len = KICK.min(end - at);
                pace::pace();
                if let Some(len) = std::num::NonZeroU64::new(len) {
                    let _ = rustix::fs::fadvise(&self.file, at, Some(len), rustix::fs::Advice::DontNeed);
                }
                at += len;
            }
        }
    }
}

/// Sorts `ranges` and joins those that touch or overlap.
#[cfg(target_os = "linux")]
fn merged(ranges: &mut [(u64, u64)]) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges.iter() {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

impl StorageBackend for PacedFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        #[cfg(target_os = "linux")]
        self.start_write_back();
        pace::pace();
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        pace::pace();
        #[cfg(target_os = "linux")]
        if pace::paced() {
            let end = offset.saturating_add(data.len() as u64);
            self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((offset, end));
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn written_ranges_are_joined_where_they_touch() {
        let mut ranges = vec![(8192, 12288), (0, 4096), (4096, 8192), (20480, 24576), (22000, 23000)];
        assert_eq!(merged(&mut ranges), [(0, 12288), (20480, 24576)]);
        assert!(merged(&mut []).is_empty());
    }

    /// Writes in a paced run are remembered until the sync starts their write-back; writes
    /// anywhere else are not (their sync does it all), and the bytes land either way.
    #[test]
    fn a_paced_runs_writes_are_kept_for_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
        let paced = PacedFile::new(file).unwrap();
        let kept = || paced.written.lock().unwrap().clone();
        paced.set_len(3 * KICK).unwrap();
        paced.write(0, &[1; 4096]).unwrap();
        assert!(kept().is_empty());
        pace::run(pace::Mode::Rest(std::time::Duration::ZERO), None, || {
            paced.write(KICK, &[2; 4096]).unwrap();
            paced.write(KICK + 4096, &[3; 100]).unwrap();
            assert_eq!(kept(), [(KICK, KICK + 4096), (KICK + 4096, KICK + 4196)]);
            paced.sync_data().unwrap();
            assert!(kept().is_empty());
        });
        let mut out = [0; 4196];
        paced.read(KICK, &mut out).unwrap();
        assert!(out[..4096].iter().all(|b| *b == 2) && out[4096..].iter().all(|b| *b == 3));
    }
}
