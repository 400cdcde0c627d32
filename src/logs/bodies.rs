//! Where logs' heads and bodies are stored: in chunks of about 32 KiB, each holding the encoded
//! bodies (`record::encode_bodies_into`, lz4 per log) of logs committed together, with one small
//! row per log naming its chunk.
//!
//! One row per log (schema 3) cost a B-tree insert of a value of 1–2 KB for every log: with
//! ids ascending, a leaf split every second or third insert and its parent was rebuilt each
//! time. A chunk is one insert for a few dozen logs, and the per-log row is 24 bytes. Measured
//! on 100,000 bodies of 1.2–2 KB in batches of 1,000: 10.9 µs per log before, 5.9 after
//! (including making the test data), and 17 % fewer pages.
//!
//! Reading a log's bodies reads its chunk (one value) and slices its entry out; nothing else in
//! the chunk is decoded. Deleting logs rewrites each chunk they touch once, without their
//! entries, and removes a chunk left empty: deleted bodies do not stay in the file. Logs
//! written before chunks keep their rows in `LOG_BODIES`, which are read and deleted as before.

use std::collections::BTreeMap;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, StorageError, Table, WriteTransaction};

use crate::store::{StoreError, tables};

/// A chunk is written before it would grow past this many bytes: redb stores a value in pages
/// of a power-of-two size, and this with the leaf's own few bytes fits 32 KiB (a chunk just
/// over it would take 64 KiB, half of it empty). A log whose bodies are larger has a chunk of
/// its own.
const CHUNK_BYTES: usize = 32 * 1024 - 64;

/// Bytes of one entry's place in a chunk's head: id (16, big-endian) and length (4).
const SLOT: usize = 20;

/// The body tables, open in one write transaction.
pub struct BodyTables<'t> {
    /// chunk number → chunk.
    chunks: Table<'t, u64, &'static [u8]>,
    /// log id → its chunk's number.
    at: Table<'t, u128, u64>,
    /// log id → its encoded bodies (logs written before chunks).
    legacy: Table<'t, u128, &'static [u8]>,
}

impl<'t> BodyTables<'t> {
    /// Opens the tables in `txn`.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            chunks: txn.open_table(tables::LOG_BODY_CHUNKS)?,
            at: txn.open_table(tables::LOG_BODY_AT)?,
            legacy: txn.open_table(tables::LOG_BODIES)?,
        })
    }

    /// Deletes the bodies of `ids` (those without any are skipped), rewriting each chunk they
    /// touch once.
    pub fn remove(&mut self, ids: &[u128]) -> Result<(), StorageError> {
        let mut by_chunk: BTreeMap<u64, Vec<u128>> = BTreeMap::new();
        for id in ids {
            match self.at.remove(id)?.map(|c| c.value()) {
                Some(chunk) => by_chunk.entry(chunk).or_default().push(*id),
                None => {
                    self.legacy.remove(id)?;
                }
            }
        }
        for (number, mut gone) in by_chunk {
            gone.sort_unstable();
            let Some(old) = self.chunks.get(number)?.map(|c| c.value().to_vec()) else { continue };
            // A chunk that does not parse cannot be read either: it goes with its last reader.
            let kept: Vec<(u128, &[u8])> = entries(&old)
                .unwrap_or_default()
                .into_iter()
                .filter(|(id, _)| gone.binary_search(id).is_err())
                .collect();
            if kept.is_empty() {
                self.chunks.remove(number)?;
            } else {
                let mut out = Vec::new();
                write_chunk(&mut out, kept.iter().map(|(id, b)| (*id, b.len())), kept.iter().map(|(_, b)| *b));
                self.chunks.insert(number, out.as_slice())?;
            }
        }
        Ok(())
    }
}

/// The body tables, open in one read transaction (for one log, or for many in a row).
pub struct BodyReader {
    chunks: ReadOnlyTable<u64, &'static [u8]>,
    at: ReadOnlyTable<u128, u64>,
    legacy: ReadOnlyTable<u128, &'static [u8]>,
}

impl BodyReader {
    /// Opens the tables in `txn`.
    pub fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            chunks: txn.open_table(tables::LOG_BODY_CHUNKS)?,
            at: txn.open_table(tables::LOG_BODY_AT)?,
            legacy: txn.open_table(tables::LOG_BODIES)?,
        })
    }

    /// The encoded bodies of log `id`, wherever they are stored.
    pub fn get(&self, id: u128) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(number) = self.at.get(id)?.map(|c| c.value()) else {
            return Ok(self.legacy.get(id)?.map(|b| b.value().to_vec()));
        };
        let Some(chunk) = self.chunks.get(number)? else { return Ok(None) };
        let chunk = chunk.value();
        Ok(entries(chunk).and_then(|e| e.into_iter().find(|(i, _)| *i == id)).map(|(_, b)| b.to_vec()))
    }
}

/// The bodies of one batch, gathered into chunks as the writer stores its logs.
#[derive(Default)]
pub struct ChunkBuilder {
    /// (id, length) of each entry, in the order their bytes are in `bytes`.
    slots: Vec<(u128, usize)>,
    bytes: Vec<u8>,
    /// The chunk written out, reused.
    out: Vec<u8>,
    /// The next chunk number (read once per transaction).
    next: Option<u64>,
    /// (log id, chunk number) of the entries in chunks written out, for the `at` table: written
    /// together, in id order, by [`Self::flush`].
    placed: Vec<(u128, u64)>,
}

impl ChunkBuilder {
    /// Adds the encoded bodies of log `id`, writing out the chunk first when they would not fit.
    pub fn push(&mut self, tables: &mut BodyTables<'_>, id: u128, encoded: &[u8]) -> Result<(), StorageError> {
        let size = 4 + SLOT * (self.slots.len() + 1) + self.bytes.len() + encoded.len();
        if size > CHUNK_BYTES {
            self.write_out(tables)?;
        }
        self.slots.push((id, encoded.len()));
        self.bytes.extend_from_slice(encoded);
        Ok(())
    }

    /// Writes what is gathered: the chunk being filled, and every entry's row naming its chunk.
    pub fn flush(&mut self, tables: &mut BodyTables<'_>) -> Result<(), StorageError> {
        self.write_out(tables)?;
        self.placed.sort_by_key(|(id, _)| *id);
        crate::store::insert_sorted(&mut tables.at, std::ops::Bound::Unbounded, &self.placed)?;
        self.placed.clear();
        Ok(())
    }

    /// Writes the chunk being filled (nothing when empty).
    fn write_out(&mut self, tables: &mut BodyTables<'_>) -> Result<(), StorageError> {
        if self.slots.is_empty() {
            return Ok(());
        }
        let number = match self.next {
            Some(n) => n,
            None => tables.chunks.last()?.map_or(0, |(k, _)| k.value().saturating_add(1)),
        };
        write_chunk(&mut self.out, self.slots.iter().copied(), std::iter::once(self.bytes.as_slice()));
        tables.chunks.insert(number, self.out.as_slice())?;
        self.placed.extend(self.slots.iter().map(|(id, _)| (*id, number)));
        self.next = Some(number.saturating_add(1));
        self.slots.clear();
        self.bytes.clear();
        Ok(())
    }
}

/// A chunk: the entry count (u32, little-endian), a slot per entry, then the entries' bytes in
/// slot order.
fn write_chunk<'a>(
    out: &mut Vec<u8>,
    slots: impl ExactSizeIterator<Item = (u128, usize)>,
    bytes: impl Iterator<Item = &'a [u8]>,
) {
    out.clear();
    out.extend_from_slice(&u32::try_from(slots.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (id, len) in slots {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    }
    for b in bytes {
        out.extend_from_slice(b);
    }
}

/// A chunk's entries, borrowed from it; `None` when it does not parse.
fn entries(chunk: &[u8]) -> Option<Vec<(u128, &[u8])>> {
    let n = usize::try_from(u32::from_le_bytes(chunk.get(..4)?.try_into().ok()?)).ok()?;
    let head = n.checked_mul(SLOT)?.checked_add(4)?;
    let slots = chunk.get(4..head)?;
    let mut at = head;
    let mut out = Vec::with_capacity(n);
    for slot in slots.chunks_exact(SLOT) {
        let (id, len) = slot.split_at(16);
        let id = u128::from_be_bytes(id.try_into().ok()?);
        let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
        let end = at.checked_add(len)?;
        out.push((id, chunk.get(at..end)?));
        at = end;
    }
    (at == chunk.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTable as _, ReadableTableMetadata};

    use super::*;
    use crate::store::Store;

    fn blob(id: u128, len: usize) -> Vec<u8> {
        (0..len).map(|i| u8::try_from((id as usize + i) % 251).unwrap_or(0)).collect()
    }

    fn stored(store: &Store, id: u128) -> Option<Vec<u8>> {
        let txn = store.db().unwrap().begin_read().unwrap();
        BodyReader::open(&txn).unwrap().get(id).unwrap()
    }

    fn chunk_count(store: &Store) -> u64 {
        let txn = store.db().unwrap().begin_read().unwrap();
        txn.open_table(tables::LOG_BODY_CHUNKS).unwrap().len().unwrap()
    }

    #[test]
    fn bodies_round_trip_through_chunks_and_deletes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        // 100 logs of 0 to 5 KB over two batches: several chunks each, one log of 40 KB alone.
        let sizes = |id: u128| if id == 50 { 40_000 } else { usize::try_from(id * 53 % 5_000).unwrap() };
        for batch in [1..=60u128, 61..=100] {
            store
                .write(|txn| {
                    let mut t = BodyTables::open(txn)?;
                    let mut b = ChunkBuilder::default();
                    for id in batch.clone() {
                        b.push(&mut t, id, &blob(id, sizes(id)))?;
                    }
                    b.flush(&mut t)?;
                    Ok::<_, StoreError>(())
                })
                .unwrap();
        }
        let chunks = chunk_count(&store);
        assert!((5..=20).contains(&chunks), "about 32 KiB a chunk: {chunks}");
        {
            let txn = store.db().unwrap().begin_read().unwrap();
            for row in txn.open_table(tables::LOG_BODY_CHUNKS).unwrap().iter().unwrap() {
                let chunk = row.unwrap().1.value().to_vec();
                let n = entries(&chunk).unwrap().len();
                assert!(chunk.len() <= CHUNK_BYTES || n == 1, "{} bytes in {n} entries", chunk.len());
            }
        }
        for id in 1..=100 {
            assert_eq!(stored(&store, id), Some(blob(id, sizes(id))), "{id}");
        }
        assert_eq!(stored(&store, 101), None);
        // A log of schema 3, in its own row.
        store
            .write(|txn| {
                txn.open_table(tables::LOG_BODIES)?.insert(7_000, blob(7_000, 300).as_slice())?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(stored(&store, 7_000), Some(blob(7_000, 300)));
        // Every other log goes, then the rest: chunks shrink, then disappear.
        let odd: Vec<u128> = (1..=100).filter(|id| id % 2 == 1).chain([7_000]).collect();
        store.write(|txn| BodyTables::open(txn)?.remove(&odd).map_err(StoreError::from)).unwrap();
        for id in 1..=100 {
            assert_eq!(stored(&store, id).is_some(), id % 2 == 0, "{id}");
        }
        assert_eq!(stored(&store, 7_000), None);
        let even: Vec<u128> = (1..=100).filter(|id| id % 2 == 0).collect();
        store.write(|txn| BodyTables::open(txn)?.remove(&even).map_err(StoreError::from)).unwrap();
        assert_eq!(chunk_count(&store), 0);
        let txn = store.db().unwrap().begin_read().unwrap();
        assert_eq!(txn.open_table(tables::LOG_BODY_AT).unwrap().len().unwrap(), 0);
    }

    #[test]
    fn damaged_chunks_read_as_nothing() {
        let chunk = {
            let mut out = Vec::new();
            write_chunk(&mut out, [(1, 3), (2, 2)].into_iter(), [&b"abc"[..], b"de"].into_iter());
            out
        };
        assert_eq!(entries(&chunk), Some(vec![(1, &b"abc"[..]), (2, &b"de"[..])]));
        for cut in 0..chunk.len() {
            assert_eq!(entries(&chunk[..cut]), None, "cut at {cut}");
        }
        let mut long = chunk.clone();
        long.push(0);
        assert_eq!(entries(&long), None);
        let mut huge = chunk;
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(entries(&huge), None);
    }
}
