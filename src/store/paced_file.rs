//! The database file, with the log writer's page writes paced.
//!
//! redb writes a transaction's pages at its commit, each with a `pwrite` of its own: for a batch
//! of a thousand logged records some 0.5 ms of the commit's ~1.3 ms, and the `fdatasync` after
//! them another 0.35 ms. Run in one go, the commit holds the request worker that shares the
//! writer's core off it for that long. Here each page write and the sync first give
//! [`pace::pace`] its turn, so inside the writer's paced run (and nowhere else: `pace` does
//! nothing on other threads) the commit rests between slices like the rest of the batch. The
//! bytes, their order and the sync are redb's, unchanged.

use std::ops::Bound;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use super::pace;

/// The error of a backend's I/O (redb's, without its experimental API).
type BackendIoError = std::io::Error;

/// [`FileBackend`] with [`pace::pace`] before each write and sync.
#[derive(Debug)]
pub struct PacedFile(pub FileBackend);

impl StorageBackend for PacedFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        pace::pace();
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        pace::pace();
        self.0.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.0.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}
