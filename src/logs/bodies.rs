//! Where logs' heads and bodies are stored: in chunks of about 32 KiB, each holding the encoded
//! bodies (`record::encode_bodies_append`) of logs committed together, compressed together with
//! lz4, with one small row per log naming its chunk.
//!
//! One row per log (schema 3) cost a B-tree insert of a value of 1–2 KB for every log: with
//! ids ascending, a leaf split every second or third insert and its parent was rebuilt each
//! time. A chunk is one insert for a few dozen logs, and the per-log row is 24 bytes. Measured
//! on 100,000 bodies of 1.2–2 KB in batches of 1,000: 10.9 µs per log before, 5.9 after
//! (including making the test data), and 17 % fewer pages.
//!
//! A chunk is compressed whole (version 2) rather than log by log (version 1): logs share most
//! of their bytes (JSON keys, heads, an application's system prompt), which a log compressed on
//! its own cannot use. The plain bytes a chunk gathers follow the compression the last chunk
//! got, so its stored size stays near 32 KiB (up to [`MAX_PLAIN`]).
//!
//! Reading a log's bodies reads its chunk (one value) and, for version 2, decompresses it; a
//! reader keeps the last chunk it decompressed for the next log. Deleting logs rewrites each
//! chunk they touch once, in its own version, without their entries, and removes a chunk left
//! empty: deleted bodies do not stay in the file. Logs written before chunks keep their rows in
//! `LOG_BODIES`, which are read and deleted as before.

use std::cell::RefCell;
use std::collections::BTreeMap;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, StorageError, Table, WriteTransaction};

use super::record::{LogBodies, decode_bodies, decode_plain_bodies, encode_bodies, pack_bodies};
use crate::store::{StoreError, tables};

/// A chunk is written before its stored size would grow past this many bytes: redb stores a
/// value in pages of a power-of-two size, and this with the leaf's own few bytes fits 32 KiB
/// (a chunk just over it would take 64 KiB, half of it empty). A log whose bodies are larger
/// has a chunk of its own.
const CHUNK_BYTES: usize = 32 * 1024 - 64;

/// The stored size a compressed chunk aims at: under [`CHUNK_BYTES`] by a margin, as the next
/// chunk compresses a little better or worse than the last.
const CHUNK_AIM: usize = CHUNK_BYTES / 8 * 7;

/// The plain bytes a compressed chunk gathers at most, however well its logs compress: what
/// reading one log may decompress.
pub const MAX_PLAIN: usize = 512 * 1024;

/// Bytes of one entry's place in a chunk's head: id (16, big-endian) and length (4).
const SLOT: usize = 20;

/// A version 2 chunk starts with these bytes, then its plain size (u32, little-endian), then
/// its lz4 block. A version 1 chunk starts with its entry count, which is never `u32::MAX`
/// (its slots alone would take 80 GiB).
const COMPRESSED: [u8; 4] = [0xFF; 4];

/// A log's bodies as a chunk or row keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Compressed on their own: lz4 with the plain size prepended (version 1 chunks, rows of
    /// schema 3, and what PostgreSQL keeps).
    Packed(Vec<u8>),
    /// Encoded and not compressed (out of a version 2 chunk).
    Plain(Vec<u8>),
}

impl Stored {
    /// The bodies; `None` when they do not decode.
    #[must_use]
    pub fn decode(&self) -> Option<LogBodies> {
        match self {
            Self::Packed(b) => decode_bodies(b),
            Self::Plain(b) => decode_plain_bodies(b),
        }
    }

    /// The bodies compressed on their own, their heads as sequences of pairs (as PostgreSQL
    /// keeps them); `None` when they do not decode.
    #[must_use]
    pub fn into_packed(self) -> Option<Vec<u8>> {
        match self {
            Self::Packed(b) => Some(b),
            Self::Plain(b) => {
                let bodies = decode_plain_bodies(&b)?;
                encode_bodies(&bodies).ok().map(|plain| pack_bodies(&plain))
            }
        }
    }
}

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
        let mut out = Vec::new();
        for (number, mut gone) in by_chunk {
            gone.sort_unstable();
            let Some(old) = self.chunks.get(number)?.map(|c| c.value().to_vec()) else { continue };
            // A chunk that does not parse cannot be read either: it goes with its last reader.
            let opened = Chunk::open(&old);
            let kept: Vec<(u128, &[u8])> = opened
                .as_ref()
                .and_then(Chunk::entries)
                .unwrap_or_default()
                .into_iter()
                .filter(|(id, _)| gone.binary_search(id).is_err())
                .collect();
            match opened.as_ref().map(|c| c.plain) {
                Some(plain_entries) if !kept.is_empty() => {
                    if plain_entries {
                        let mut plain: Vec<u8> = kept.iter().flat_map(|(_, b)| b.iter().copied()).collect();
                        append_slots(&mut plain, kept.iter().map(|(id, b)| (*id, b.len())));
                        let n = compress_chunk(&plain, &mut out)?;
                        self.chunks.insert(number, &out[..n])?;
                    } else {
                        write_chunk(&mut out, kept.iter().map(|(id, b)| (*id, b.len())), kept.iter().map(|(_, b)| *b));
                        self.chunks.insert(number, out.as_slice())?;
                    }
                }
                _ => {
                    self.chunks.remove(number)?;
                }
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
    /// The last compressed chunk read, decompressed (number, plain bytes): logs read in a row
    /// are mostly in the same chunk.
    last: RefCell<Option<(u64, Vec<u8>)>>,
}

impl BodyReader {
    /// Opens the tables in `txn`.
    pub fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            chunks: txn.open_table(tables::LOG_BODY_CHUNKS)?,
            at: txn.open_table(tables::LOG_BODY_AT)?,
            legacy: txn.open_table(tables::LOG_BODIES)?,
            last: RefCell::new(None),
        })
    }

    /// The stored bodies of log `id`, wherever they are.
    pub fn get(&self, id: u128) -> Result<Option<Stored>, StorageError> {
        let Some(number) = self.at.get(id)?.map(|c| c.value()) else {
            return Ok(self.legacy.get(id)?.map(|b| Stored::Packed(b.value().to_vec())));
        };
        let mut last = self.last.borrow_mut();
        if let Some((_, plain)) = last.as_ref().filter(|(n, _)| *n == number) {
            return Ok(find(&Chunk { plain: true, bytes: std::borrow::Cow::Borrowed(plain) }, id));
        }
        let Some(value) = self.chunks.get(number)? else { return Ok(None) };
        let Some(chunk) = Chunk::open(value.value()) else { return Ok(None) };
        let found = find(&chunk, id);
        if let std::borrow::Cow::Owned(plain) = chunk.bytes {
            *last = Some((number, plain));
        }
        Ok(found)
    }
}

/// The entry of log `id` in `chunk`.
fn find(chunk: &Chunk<'_>, id: u128) -> Option<Stored> {
    let bytes = chunk.entries()?.into_iter().find(|(i, _)| *i == id)?.1.to_vec();
    Some(if chunk.plain { Stored::Plain(bytes) } else { Stored::Packed(bytes) })
}

/// A chunk builder's buffers, kept from one batch to the next: a chunk's plain bytes reach
/// hundreds of KiB, which allocated and faulted in again for every batch.
#[derive(Default)]
pub struct ChunkBuffers {
    /// The entries' plain bytes, in the order of `slots` (then, as a chunk is written, its
    /// slots and count).
    bytes: Vec<u8>,
    /// The newest entry while the chunk before it is written.
    carry: Vec<u8>,
    /// The chunk written out (its length only grows: the bytes past a chunk's end are not
    /// zeroed again for each).
    out: Vec<u8>,
}

/// The bodies of one batch, gathered into chunks as the writer stores its logs.
pub struct ChunkBuilder {
    /// The entries' plain bytes, in the order of `slots` (then, as a chunk is written, its
    /// slots and count).
    bytes: Vec<u8>,
    /// (id, length) of each entry.
    slots: Vec<(u128, usize)>,
    /// The newest entry while the chunk before it is written.
    carry: Vec<u8>,
    /// The chunk written out, reused.
    out: Vec<u8>,
    /// The next chunk number (read once per transaction).
    next: Option<u64>,
    /// (log id, chunk number) of the entries in chunks written out, for the `at` table: written
    /// together, in id order, by [`Self::flush`].
    placed: Vec<(u128, u64)>,
    /// The plain bytes a chunk gathers before it is written (see [`Self::plain_limit`]).
    plain_limit: usize,
}

impl Default for ChunkBuilder {
    fn default() -> Self {
        Self::new(CHUNK_BYTES, ChunkBuffers::default())
    }
}

impl ChunkBuilder {
    /// A builder whose chunks gather `plain_limit` plain bytes (kept within [`CHUNK_BYTES`] and
    /// [`MAX_PLAIN`]) until one is written and shows how well logs compress, in `buffers` (a
    /// previous builder's, see [`Self::into_buffers`]).
    #[must_use]
    pub fn new(plain_limit: usize, buffers: ChunkBuffers) -> Self {
        let ChunkBuffers { mut bytes, mut carry, out } = buffers;
        bytes.clear();
        carry.clear();
        Self {
            bytes,
            slots: Vec::new(),
            carry,
            out,
            next: None,
            placed: Vec::new(),
            plain_limit: plain_limit.clamp(CHUNK_BYTES, MAX_PLAIN),
        }
    }

    /// The buffers, for the next batch's builder (what they hold is not kept).
    #[must_use]
    pub fn into_buffers(self) -> ChunkBuffers {
        ChunkBuffers { bytes: self.bytes, carry: self.carry, out: self.out }
    }

    /// The plain bytes the next chunk will gather: what makes a chunk compressed as well as the
    /// last one come out near [`CHUNK_AIM`] (for the writer's next batch to start from).
    #[must_use]
    pub fn plain_limit(&self) -> usize {
        self.plain_limit
    }

    /// Adds the bodies of log `id`, which `encode` appends to the chunk's plain bytes. A chunk
    /// that grows past its limit is written without them (they start the next); bodies over
    /// the limit on their own have a chunk to themselves.
    pub fn push(
        &mut self,
        tables: &mut BodyTables<'_>,
        id: u128,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let start = self.bytes.len();
        encode(&mut self.bytes)?;
        let entry = (id, self.bytes.len() - start);
        if self.bytes.len() > self.plain_limit && !self.slots.is_empty() {
            self.carry.clear();
            self.carry.extend_from_slice(&self.bytes[start..]);
            self.bytes.truncate(start);
            self.write_out(tables)?;
            std::mem::swap(&mut self.bytes, &mut self.carry);
        }
        self.slots.push(entry);
        if self.bytes.len() >= self.plain_limit {
            self.write_out(tables)?;
        }
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

    /// Writes the chunk being filled (nothing when empty), compressed, and sets the next plain
    /// limit from how well it compressed.
    fn write_out(&mut self, tables: &mut BodyTables<'_>) -> Result<(), StorageError> {
        if self.slots.is_empty() {
            return Ok(());
        }
        crate::store::pace::pace();
        let number = match self.next {
            Some(n) => n,
            None => tables.chunks.last()?.map_or(0, |(k, _)| k.value().saturating_add(1)),
        };
        let plain = self.bytes.len();
        append_slots(&mut self.bytes, self.slots.iter().copied());
        let n = compress_chunk(&self.bytes, &mut self.out)?;
        tables.chunks.insert(number, &self.out[..n])?;
        // Widened: 512 KiB times 28 KiB does not fit 32 bits.
        let aim = u64::try_from(plain).unwrap_or(u64::MAX).saturating_mul(CHUNK_AIM as u64) / n.max(1) as u64;
        self.plain_limit = usize::try_from(aim).unwrap_or(MAX_PLAIN).clamp(CHUNK_BYTES, MAX_PLAIN);
        self.placed.extend(self.slots.iter().map(|(id, _)| (*id, number)));
        self.next = Some(number.saturating_add(1));
        self.slots.clear();
        self.bytes.clear();
        Ok(())
    }
}

/// Appends a version 2 chunk's tail to its entries' bytes: a slot per entry, in order, then the
/// entry count (u32, little-endian).
fn append_slots(bytes: &mut Vec<u8>, slots: impl ExactSizeIterator<Item = (u128, usize)>) {
    let count = u32::try_from(slots.len()).unwrap_or(u32::MAX);
    put_slots(bytes, slots);
    bytes.extend_from_slice(&count.to_le_bytes());
}

/// Appends a slot per entry: id (big-endian), length (u32, little-endian).
fn put_slots(out: &mut Vec<u8>, slots: impl Iterator<Item = (u128, usize)>) {
    for (id, len) in slots {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    }
}

/// Compresses a version 2 chunk's plain bytes into `out` (marker, plain size, lz4 block);
/// returns the stored length (`out` may be longer).
fn compress_chunk(plain: &[u8], out: &mut Vec<u8>) -> Result<usize, StorageError> {
    let size = u32::try_from(plain.len()).map_err(|_| StorageError::ValueTooLarge(plain.len()))?;
    let room = 8 + lz4_flex::block::get_maximum_output_size(plain.len());
    if out.len() < room {
        out.resize(room, 0);
    }
    out[..4].copy_from_slice(&COMPRESSED);
    out[4..8].copy_from_slice(&size.to_le_bytes());
    let n = lz4_flex::compress_into(plain, &mut out[8..]).map_err(|e| StorageError::Corrupted(e.to_string()))?;
    Ok(8 + n)
}

/// A version 1 chunk: the entry count (u32, little-endian), a slot per entry, then the entries'
/// bytes in slot order.
fn write_chunk<'a>(
    out: &mut Vec<u8>,
    slots: impl ExactSizeIterator<Item = (u128, usize)>,
    bytes: impl Iterator<Item = &'a [u8]>,
) {
    out.clear();
    out.extend_from_slice(&u32::try_from(slots.len()).unwrap_or(u32::MAX).to_le_bytes());
    put_slots(out, slots);
    for b in bytes {
        out.extend_from_slice(b);
    }
}

/// A chunk as read: version 2 decompressed (its entries plain), version 1 as stored (its
/// entries each compressed).
struct Chunk<'a> {
    plain: bool,
    bytes: std::borrow::Cow<'a, [u8]>,
}

impl<'a> Chunk<'a> {
    /// Opens a stored chunk; `None` when a compressed one does not decompress. Its plain size
    /// is believed only up to what lz4 can make of its length (a byte makes at most 255), so a
    /// damaged size cannot make the reader allocate gigabytes.
    fn open(value: &'a [u8]) -> Option<Self> {
        let Some(packed) = value.strip_prefix(&COMPRESSED[..]) else {
            return Some(Self { plain: false, bytes: std::borrow::Cow::Borrowed(value) });
        };
        let size = usize::try_from(u32::from_le_bytes(packed.get(..4)?.try_into().ok()?)).ok()?;
        if size > packed.len().saturating_mul(255) {
            return None;
        }
        let plain = lz4_flex::decompress(packed.get(4..)?, size).ok()?;
        let whole = plain.len() == size;
        whole.then_some(Self { plain: true, bytes: std::borrow::Cow::Owned(plain) })
    }

    /// The chunk's entries, borrowed from it; `None` when it does not parse.
    fn entries(&self) -> Option<Vec<(u128, &[u8])>> {
        if self.plain { entries_v2(&self.bytes) } else { entries(&self.bytes) }
    }
}

/// A version 1 chunk's entries, borrowed from it; `None` when it does not parse.
fn entries(chunk: &[u8]) -> Option<Vec<(u128, &[u8])>> {
    let n = usize::try_from(u32::from_le_bytes(chunk.get(..4)?.try_into().ok()?)).ok()?;
    let head = n.checked_mul(SLOT)?.checked_add(4)?;
    cut(chunk.get(4..head)?, chunk.get(head..)?)
}

/// A version 2 chunk's (decompressed) entries, borrowed from it; `None` when it does not parse.
fn entries_v2(plain: &[u8]) -> Option<Vec<(u128, &[u8])>> {
    let count_at = plain.len().checked_sub(4)?;
    let n = usize::try_from(u32::from_le_bytes(plain.get(count_at..)?.try_into().ok()?)).ok()?;
    let slots_at = count_at.checked_sub(n.checked_mul(SLOT)?)?;
    cut(plain.get(slots_at..count_at)?, plain.get(..slots_at)?)
}

/// Cuts `bytes` into the entries `slots` name, in order; `None` unless they cover it exactly.
fn cut<'a>(slots: &[u8], bytes: &'a [u8]) -> Option<Vec<(u128, &'a [u8])>> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(slots.len() / SLOT);
    for slot in slots.chunks_exact(SLOT) {
        let (id, len) = slot.split_at(16);
        let id = u128::from_be_bytes(id.try_into().ok()?);
        let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
        let end = at.checked_add(len)?;
        out.push((id, bytes.get(at..end)?));
        at = end;
    }
    (at == bytes.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTable as _, ReadableTableMetadata};

    use super::*;
    use crate::store::Store;

    /// Bytes lz4 cannot shrink (xorshift), different for each id.
    fn blob(id: u128, len: usize) -> Vec<u8> {
        let mut x = u64::try_from(id).unwrap_or(0).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    /// Bytes that compress well: a shared text with the id in it, as logs of one application.
    fn text(id: u128, len: usize) -> Vec<u8> {
        format!("{{\"role\":\"user\",\"content\":\"question {id} about the runbook\"}} ")
            .bytes()
            .cycle()
            .take(len)
            .collect()
    }

    fn stored(store: &Store, id: u128) -> Option<Stored> {
        let txn = store.db().unwrap().begin_read().unwrap();
        BodyReader::open(&txn).unwrap().get(id).unwrap()
    }

    /// Every chunk's stored size and entry count.
    fn chunks(store: &Store) -> Vec<(usize, usize)> {
        let txn = store.db().unwrap().begin_read().unwrap();
        let table = txn.open_table(tables::LOG_BODY_CHUNKS).unwrap();
        let mut out = Vec::new();
        for row in table.iter().unwrap() {
            let value = row.unwrap().1.value().to_vec();
            let n = Chunk::open(&value).unwrap().entries().unwrap().len();
            out.push((value.len(), n));
        }
        out
    }

    /// Stores `ids` in one transaction, their bytes from `make`; returns the builder's next
    /// plain limit.
    fn store_batch(store: &Store, ids: &[u128], limit: usize, make: impl Fn(u128) -> Vec<u8>) -> usize {
        store
            .write(|txn| {
                let mut t = BodyTables::open(txn)?;
                let mut b = ChunkBuilder::new(limit, ChunkBuffers::default());
                for id in ids {
                    b.push(&mut t, *id, |out| {
                        out.extend_from_slice(&make(*id));
                        Ok(())
                    })?;
                }
                b.flush(&mut t)?;
                Ok::<_, StoreError>(b.plain_limit())
            })
            .unwrap()
    }

    #[test]
    fn bodies_round_trip_through_chunks_and_deletes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        // 100 logs of 0 to 5 KB over two batches: several chunks each, one log of 40 KB alone.
        let sizes = |id: u128| if id == 50 { 40_000 } else { usize::try_from(id * 53 % 5_000).unwrap() };
        let first: Vec<u128> = (1..=60).collect();
        let limit = store_batch(&store, &first, CHUNK_BYTES, |id| blob(id, sizes(id)));
        // Nothing compressed: a chunk gathers no more than it stores.
        assert_eq!(limit, CHUNK_BYTES);
        let second: Vec<u128> = (61..=100).collect();
        store_batch(&store, &second, limit, |id| blob(id, sizes(id)));
        let all = chunks(&store);
        assert!((5..=20).contains(&all.len()), "about 32 KiB a chunk: {all:?}");
        for (len, n) in &all {
            // lz4's framing adds a little to bytes it cannot shrink.
            assert!(*len <= CHUNK_BYTES + CHUNK_BYTES / 200 + 64 || *n == 1, "{len} bytes in {n} entries");
        }
        for id in 1..=100 {
            assert_eq!(stored(&store, id), Some(Stored::Plain(blob(id, sizes(id)))), "{id}");
        }
        assert_eq!(stored(&store, 101), None);
        // A log of schema 3, in its own row.
        store
            .write(|txn| {
                txn.open_table(tables::LOG_BODIES)?.insert(7_000, blob(7_000, 300).as_slice())?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(stored(&store, 7_000), Some(Stored::Packed(blob(7_000, 300))));
        // Every other log goes, then the rest: chunks shrink, then disappear.
        let odd: Vec<u128> = (1..=100).filter(|id| id % 2 == 1).chain([7_000]).collect();
        store.write(|txn| BodyTables::open(txn)?.remove(&odd).map_err(StoreError::from)).unwrap();
        for id in 1..=100 {
            let want = (id % 2 == 0).then(|| Stored::Plain(blob(id, sizes(id))));
            assert_eq!(stored(&store, id), want, "{id}");
        }
        assert_eq!(stored(&store, 7_000), None);
        let even: Vec<u128> = (1..=100).filter(|id| id % 2 == 0).collect();
        store.write(|txn| BodyTables::open(txn)?.remove(&even).map_err(StoreError::from)).unwrap();
        assert!(chunks(&store).is_empty());
        let txn = store.db().unwrap().begin_read().unwrap();
        assert_eq!(txn.open_table(tables::LOG_BODY_AT).unwrap().len().unwrap(), 0);
    }

    /// Logs that compress well share a chunk many to one: the plain limit follows the last
    /// chunk's ratio, the stored chunks stay under 32 KiB, and no chunk gathers more than
    /// `MAX_PLAIN`.
    #[test]
    fn chunks_of_logs_that_compress_gather_more_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        let ids: Vec<u128> = (1..=600).collect();
        let limit = store_batch(&store, &ids, CHUNK_BYTES, |id| text(id, 1_500));
        assert!(limit > 4 * CHUNK_BYTES, "the limit grew with the compression: {limit}");
        assert!(limit <= MAX_PLAIN);
        let all = chunks(&store);
        assert!(all.len() < 600 * 1_500 / CHUNK_BYTES / 4, "{} chunks", all.len());
        for (len, n) in &all {
            assert!(*len <= CHUNK_BYTES, "{len} bytes");
            assert!(n * 1_500 <= MAX_PLAIN + 1_500, "{n} entries");
        }
        assert_eq!(all.iter().map(|(_, n)| n).sum::<usize>(), 600);
        // Read in a row (the reader keeps the chunk it decompressed) and one by one.
        let txn = store.db().unwrap().begin_read().unwrap();
        let reader = BodyReader::open(&txn).unwrap();
        for id in ids.iter().copied().chain([5, 599, 300]) {
            assert_eq!(reader.get(id).unwrap(), Some(Stored::Plain(text(id, 1_500))), "{id}");
        }
        drop(reader);
        // Deleting from a compressed chunk rewrites it compressed.
        let gone: Vec<u128> = (1..=600).filter(|id| id % 3 != 0).collect();
        store.write(|txn| BodyTables::open(txn)?.remove(&gone).map_err(StoreError::from)).unwrap();
        for id in [3, 4, 300, 301, 600] {
            assert_eq!(stored(&store, id), (id % 3 == 0).then(|| Stored::Plain(text(id, 1_500))), "{id}");
        }
        let txn = store.db().unwrap().begin_read().unwrap();
        for row in txn.open_table(tables::LOG_BODY_CHUNKS).unwrap().iter().unwrap() {
            assert!(row.unwrap().1.value().starts_with(&COMPRESSED));
        }
    }

    /// Chunks written before compressed chunks (each log compressed on its own) read as they
    /// are, and a delete rewrites them in their own version.
    #[test]
    fn version_1_chunks_are_read_and_rewritten_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        let bodies = |id: u128| LogBodies {
            request_headers: vec![("content-type".into(), "application/json".into()), ("x-n".into(), id.to_string())]
                .into(),
            request_body: text(id, 700).into(),
            response_headers: vec![("content-type".into(), "application/json".into())].into(),
            response_body: text(id + 1, 300),
        };
        let packed = |id: u128| pack_bodies(&encode_bodies(&bodies(id)).unwrap());
        store
            .write(|txn| {
                let mut out = Vec::new();
                let all = [packed(1), packed(2), packed(3)];
                write_chunk(
                    &mut out,
                    [1u128, 2, 3].into_iter().zip(all.iter().map(Vec::len)),
                    all.iter().map(Vec::as_slice),
                );
                txn.open_table(tables::LOG_BODY_CHUNKS)?.insert(0, out.as_slice())?;
                let mut at = txn.open_table(tables::LOG_BODY_AT)?;
                for id in 1..=3u128 {
                    at.insert(id, 0)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        // A new batch goes to the next chunk number, compressed.
        store_batch(&store, &[4], CHUNK_BYTES, |id| {
            let mut out = Vec::new();
            super::super::record::encode_bodies_append(&bodies(id), &mut out).unwrap();
            out
        });
        for id in 1..=3 {
            assert_eq!(stored(&store, id), Some(Stored::Packed(packed(id))));
            assert_eq!(stored(&store, id).unwrap().decode(), Some(bodies(id)));
            assert_eq!(stored(&store, id).unwrap().into_packed(), Some(packed(id)));
        }
        assert!(matches!(stored(&store, 4), Some(Stored::Plain(_))));
        assert_eq!(stored(&store, 4).unwrap().decode(), Some(bodies(4)));
        // PostgreSQL gets every log compressed on its own, its heads as pairs, whichever chunk
        // it is in.
        assert_eq!(stored(&store, 4).unwrap().into_packed(), Some(packed(4)));
        store.write(|txn| BodyTables::open(txn)?.remove(&[2]).map_err(StoreError::from)).unwrap();
        let txn = store.db().unwrap().begin_read().unwrap();
        let chunk = txn.open_table(tables::LOG_BODY_CHUNKS).unwrap().get(0).unwrap().unwrap().value().to_vec();
        assert_eq!(entries(&chunk).unwrap(), vec![(1, packed(1).as_slice()), (3, packed(3).as_slice())]);
        assert_eq!(stored(&store, 2), None);
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

        // Version 2: the plain bytes' own checks, then the compressed value's.
        let mut plain = b"abcde".to_vec();
        append_slots(&mut plain, [(1, 3), (2, 2)].into_iter());
        assert_eq!(entries_v2(&plain), Some(vec![(1, &b"abc"[..]), (2, &b"de"[..])]));
        for cut in 1..plain.len() {
            assert_eq!(entries_v2(&plain[cut..]), None, "cut {cut} from the start");
        }
        let mut lying = plain.clone();
        let count_at = lying.len() - 4;
        lying[count_at..].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(entries_v2(&lying), None);
        let mut out = Vec::new();
        let n = compress_chunk(&plain, &mut out).unwrap();
        let value = &out[..n];
        assert_eq!(Chunk::open(value).unwrap().entries(), Some(vec![(1, &b"abc"[..]), (2, &b"de"[..])]));
        for cut in 0..value.len() {
            let opened = Chunk::open(&value[..cut]);
            // Cut inside the marker, it reads as a version 1 chunk, which does not parse.
            assert!(opened.as_ref().and_then(Chunk::entries).is_none(), "cut at {cut}");
        }
        // A plain size lz4 could not make of the bytes there is refused before any allocation.
        let mut bomb = value.to_vec();
        bomb[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Chunk::open(&bomb).is_none());
    }
}
