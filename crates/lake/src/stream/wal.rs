//! The streams' write-ahead log: every acknowledged record is here, fsync'd, until the
//! files it was delivered to are committed to the catalog.
//!
//! The log is a folder of segments named by the first log sequence number (LSN) they may
//! hold (`00000000000000000001.wal`). A segment is a run of frames:
//!
//! ```text
//! u32 magic | u32 length of the payload | u32 CRC-32 of the payload | payload
//! payload = u64 LSN | i64 table id | Arrow IPC stream of one batch
//! ```
//!
//! Writers are acknowledged only after the frames of their group are written and the
//! segment is fsync'd, so a frame that fails its length or checksum can only be a torn
//! write at a segment's end (nobody was acknowledged for it): reading stops there. A
//! reopened log always starts a new segment, so appends never follow a torn tail.
//! The newest segment is never deleted, so sequence numbers never go back, even when
//! everything was delivered. The log's id (a file beside the segments) names the log in
//! the catalog's record of what was delivered, so two servers' logs never mix.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::error::{Error, Result};

const MAGIC: u32 = 0x5441_524e; // "TARN"
/// A segment is closed once it holds this many bytes, so delivered ones can be deleted.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A record read back from the log.
#[derive(Debug)]
pub struct Frame {
    pub lsn: u64,
    pub table_id: i64,
    pub batch: RecordBatch,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// By table, the newest LSN this segment holds for it.
    newest: HashMap<i64, u64>,
}

/// An open log: appends go to its newest segment.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    id: String,
    file: File,
    written: u64,
    next_lsn: u64,
    /// Segments in order, the last one being written.
    segments: Vec<Segment>,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

impl Wal {
    /// Opens (or creates) the log in `dir`; returns it with every frame it holds, in LSN
    /// order.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder or a segment cannot be read or created.
    pub fn open(dir: &Path) -> Result<(Self, Vec<Frame>)> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let id_path = dir.join("log-id");
        let id = match std::fs::read_to_string(&id_path) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                write_synced(&id_path, id.as_bytes())?;
                sync_dir(dir)?;
                id
            }
        };
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                names.push((first, path));
            }
        }
        names.sort();
        let mut frames = Vec::new();
        let mut segments = Vec::new();
        let mut next_lsn = 1;
        for (first, path) in names {
            next_lsn = next_lsn.max(first);
            let mut newest = HashMap::new();
            for frame in read_segment(&path)? {
                next_lsn = next_lsn.max(frame.lsn + 1);
                newest.insert(frame.table_id, frame.lsn);
                frames.push(frame);
            }
            segments.push(Segment { path, newest });
        }
        frames.sort_by_key(|f| f.lsn);
        let path = dir.join(segment_name(next_lsn));
        let file = create_segment(&path)?;
        segments.push(Segment {
            path,
            newest: HashMap::new(),
        });
        Ok((
            Self {
                dir: dir.to_path_buf(),
                id,
                file,
                written: 0,
                next_lsn,
                segments,
            },
            frames,
        ))
    }

    /// The log's id, under which the catalog records what was delivered from it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends one frame per batch and fsyncs; returns their LSNs. Only after this returns
    /// may the writers be acknowledged.
    ///
    /// # Errors
    /// [`Error::Io`] when writing or syncing fails (nothing may be acknowledged then).
    pub fn append(&mut self, batches: &[(i64, RecordBatch)]) -> Result<Vec<u64>> {
        if self.written >= SEGMENT_BYTES {
            let path = self.dir.join(segment_name(self.next_lsn));
            self.file = create_segment(&path)?;
            self.written = 0;
            self.segments.push(Segment {
                path,
                newest: HashMap::new(),
            });
        }
        let mut out = Vec::new();
        let mut lsns = Vec::with_capacity(batches.len());
        for (table_id, batch) in batches {
            let lsn = self.next_lsn + lsns.len() as u64;
            let mut payload = Vec::with_capacity(batch.get_array_memory_size() + 256);
            payload.extend_from_slice(&lsn.to_le_bytes());
            payload.extend_from_slice(&table_id.to_le_bytes());
            let mut writer = StreamWriter::try_new(&mut payload, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
            drop(writer);
            let length = u32::try_from(payload.len()).map_err(|_| {
                Error::InvalidArgument(format!(
                    "a batch of {} bytes is too large for one record; send batches under 4 GiB",
                    payload.len()
                ))
            })?;
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
            lsns.push(lsn);
        }
        let path = self.current_path();
        self.file.write_all(&out).map_err(|e| io(&path, e))?;
        self.file.sync_data().map_err(|e| io(&path, e))?;
        self.written += out.len() as u64;
        self.next_lsn += lsns.len() as u64;
        if let Some(segment) = self.segments.last_mut() {
            for ((table_id, _), lsn) in batches.iter().zip(&lsns) {
                segment.newest.insert(*table_id, *lsn);
            }
        }
        Ok(lsns)
    }

    fn current_path(&self) -> PathBuf {
        self.segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_else(|| self.dir.clone())
    }

    /// Deletes the closed segments whose every record was delivered: for each table in
    /// it, `delivered(table)` (the newest LSN delivered, `None` when the table's records
    /// need no delivery any more: it was dropped) is at or past the segment's newest.
    pub fn release(&mut self, delivered: impl Fn(i64) -> Option<u64>) {
        let last = self.segments.len().saturating_sub(1);
        let mut kept = Vec::with_capacity(self.segments.len());
        for (i, segment) in std::mem::take(&mut self.segments).into_iter().enumerate() {
            let done = i < last
                && segment
                    .newest
                    .iter()
                    .all(|(table, lsn)| delivered(*table).is_none_or(|d| d >= *lsn));
            if done {
                match std::fs::remove_file(&segment.path) {
                    Ok(()) => continue,
                    Err(e) => tracing::warn!(
                        segment = %segment.path.display(), error = %e,
                        "could not delete a delivered log segment"
                    ),
                }
            }
            kept.push(segment);
        }
        self.segments = kept;
    }

    /// Number of segments on disk (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

fn create_segment(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    file.sync_all().map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(file)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|e| io(path, e))?;
    file.write_all(bytes).map_err(|e| io(path, e))?;
    file.sync_all().map_err(|e| io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// The frames of one segment, up to the first torn or damaged one.
fn read_segment(path: &Path) -> Result<Vec<Frame>> {
    let mut reader = BufReader::new(File::open(path).map_err(|e| io(path, e))?);
    let mut frames = Vec::new();
    loop {
        let mut header = [0u8; 12];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        if word(0) != MAGIC {
            tracing::warn!(segment = %path.display(), "log segment ends in a damaged frame; reading stops there");
            break;
        }
        let mut payload = vec![0u8; word(4) as usize];
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != word(8) {
            tracing::warn!(segment = %path.display(), "log segment ends in a torn frame (never acknowledged); reading stops there");
            break;
        }
        match decode(&payload) {
            Ok(frame) => frames.push(frame),
            Err(e) => {
                return Err(Error::Internal(format!(
                    "log segment {}: a frame with a valid checksum does not decode: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(frames)
}

fn decode(payload: &[u8]) -> Result<Frame> {
    let short = || Error::Internal("frame shorter than its header".to_string());
    let lsn = u64::from_le_bytes(
        payload
            .get(0..8)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    );
    let table_id = i64::from_le_bytes(
        payload
            .get(8..16)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    );
    let mut reader = StreamReader::try_new(&payload[16..], None)?;
    let batch = reader
        .next()
        .transpose()?
        .ok_or_else(|| Error::Internal("frame without a batch".to_string()))?;
    Ok(Frame {
        lsn,
        table_id,
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn batch(values: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int64Array::from(values.to_vec())) as arrow::array::ArrayRef,
        )])
        .unwrap()
    }

    #[test]
    fn frames_survive_a_reopen_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, frames) = Wal::open(dir.path()).unwrap();
        assert!(frames.is_empty());
        let id = wal.id().to_string();
        assert_eq!(
            wal.append(&[(7, batch(&[1, 2])), (8, batch(&[3]))])
                .unwrap(),
            vec![1, 2]
        );
        assert_eq!(wal.append(&[(7, batch(&[4]))]).unwrap(), vec![3]);
        let segment = wal.current_path();
        drop(wal);
        // A torn write: half a frame at the end.
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&MAGIC.to_le_bytes()).unwrap();
        file.write_all(&100u32.to_le_bytes()).unwrap();
        drop(file);

        let (mut wal, frames) = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.id(), id);
        let got: Vec<(u64, i64, usize)> = frames
            .iter()
            .map(|f| (f.lsn, f.table_id, f.batch.num_rows()))
            .collect();
        assert_eq!(got, vec![(1, 7, 2), (2, 8, 1), (3, 7, 1)]);
        // Numbering goes on after the reopen, in a new segment.
        assert_eq!(wal.append(&[(7, batch(&[5]))]).unwrap(), vec![4]);
        assert_eq!(wal.segment_count(), 2);
        // The old segment goes once both tables' records were delivered; not before.
        wal.release(|t| Some(if t == 7 { 3 } else { 1 }));
        assert_eq!(wal.segment_count(), 2);
        wal.release(|t| if t == 7 { Some(3) } else { None });
        assert_eq!(wal.segment_count(), 1);
        // The newest segment stays even when delivered, so numbering never goes back.
        wal.release(|_| Some(u64::MAX));
        drop(wal);
        let (mut wal, frames) = Wal::open(dir.path()).unwrap();
        assert_eq!(frames.iter().map(|f| f.lsn).collect::<Vec<_>>(), vec![4]);
        assert_eq!(wal.append(&[(7, batch(&[6]))]).unwrap(), vec![5]);
    }
}
