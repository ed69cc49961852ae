//! How the SQLite store packs a job's log lines: consecutive lines go into
//! one row (a chunk) instead of a row each. Per line, a row cost a B-tree
//! insert keyed by the job id and rewrote the pages around it at every
//! commit; a chunk is written about once, its lines side by side.
//!
//! A chunk holds the lines `first_n..=last_n` (their numbers are not stored:
//! they follow from `first_n`), each as its stream (one byte), its length
//! (`u32`, little-endian) and its UTF-8 text.
//!
//! Those bytes are stored LZ4-compressed, behind a `z` and their length
//! (`u32`, little-endian). Where that would not make them smaller they are
//! stored as they are, and begin with a stream byte, as every chunk written
//! before compression does. Tool output repeats itself, and writing a
//! chunk's bytes (to the WAL, then to the database) is most of what storing
//! a log costs.

use std::borrow::Cow;

use super::{LogLine, StoreError, Stream};

/// Most lines in one chunk: a read of one line decodes at most this many.
pub const MAX_LINES: usize = 512;
/// Most text bytes in one chunk (a chunk holds at least one line).
pub const MAX_BYTES: usize = 256 * 1024;

/// The first byte of a compressed chunk.
const LZ4: u8 = b'z';

/// One chunk to store: its first and last line numbers and its bytes.
#[derive(Debug, PartialEq)]
pub struct Chunk {
    pub first_n: u64,
    pub last_n: u64,
    pub bytes: Vec<u8>,
}

/// Packs `lines` (in order) into chunks of consecutive numbers, at most
/// `MAX_LINES` lines and about `MAX_BYTES` bytes each, compressed where that
/// makes them smaller.
pub fn pack(lines: &[LogLine]) -> Vec<Chunk> {
    let mut chunks: Vec<Chunk> = Vec::new();
    for line in lines {
        match chunks.last_mut() {
            // Consecutive numbers: the chunk's line count follows from them.
            Some(chunk)
                if chunk.last_n + 1 == line.n
                    && chunk.last_n - chunk.first_n + 1 < MAX_LINES as u64
                    && chunk.bytes.len() + line.text.len() <= MAX_BYTES =>
            {
                append(&mut chunk.bytes, line);
                chunk.last_n = line.n;
            }
            _ => {
                let mut bytes = Vec::with_capacity(line.text.len() + 5);
                append(&mut bytes, line);
                chunks.push(Chunk {
                    first_n: line.n,
                    last_n: line.n,
                    bytes,
                });
            }
        }
    }
    for chunk in &mut chunks {
        chunk.bytes = compress(std::mem::take(&mut chunk.bytes));
    }
    chunks
}

/// `raw` compressed behind its header, or `raw` when that is not smaller.
fn compress(raw: Vec<u8>) -> Vec<u8> {
    let block = lz4_flex::block::compress(&raw);
    if block.len() + 5 >= raw.len() {
        return raw;
    }
    let mut bytes = Vec::with_capacity(block.len() + 5);
    bytes.push(LZ4);
    bytes.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&block);
    bytes
}

fn append(bytes: &mut Vec<u8>, line: &LogLine) {
    bytes.push(match line.stream {
        Stream::Stdout => b'o',
        Stream::Stderr => b'e',
        Stream::System => b's',
    });
    // A line is cut long before 4 GiB (MAX_LINE_BYTES).
    bytes.extend_from_slice(&(line.text.len() as u32).to_le_bytes());
    bytes.extend_from_slice(line.text.as_bytes());
}

/// Adds to `out` the lines of the chunk starting at `first_n` that are
/// numbered above `after`, until `out` holds `limit` lines.
pub fn unpack_into(
    first_n: u64,
    bytes: &[u8],
    after: u64,
    limit: usize,
    out: &mut Vec<LogLine>,
) -> Result<(), StoreError> {
    let raw = decompress(first_n, bytes)?;
    let damaged = || damaged_chunk(first_n);
    let mut rest = &raw[..];
    let mut n = first_n;
    while !rest.is_empty() && out.len() < limit {
        let (&kind, tail) = rest.split_first().ok_or_else(damaged)?;
        let (len, tail) = tail.split_first_chunk::<4>().ok_or_else(damaged)?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(damaged());
        }
        let (text, tail) = tail.split_at(len);
        if n > after {
            out.push(LogLine {
                n,
                stream: match kind {
                    b'o' => Stream::Stdout,
                    b'e' => Stream::Stderr,
                    b's' => Stream::System,
                    _ => return Err(damaged()),
                },
                text: std::str::from_utf8(text).map_err(|_| damaged())?.to_owned(),
            });
        }
        rest = tail;
        n += 1;
    }
    Ok(())
}

/// A chunk's bytes as `pack` laid them out, before compression.
fn decompress(first_n: u64, bytes: &[u8]) -> Result<Cow<'_, [u8]>, StoreError> {
    let damaged = || damaged_chunk(first_n);
    let Some((&LZ4, rest)) = bytes.split_first() else {
        return Ok(Cow::Borrowed(bytes));
    };
    let (len, block) = rest.split_first_chunk::<4>().ok_or_else(damaged)?;
    let len = u32::from_le_bytes(*len) as usize;
    // LZ4 expands a byte to at most about 255: a larger length is damage,
    // not a size to allocate.
    if len > block.len().saturating_mul(256) {
        return Err(damaged());
    }
    let raw = lz4_flex::block::decompress(block, len).map_err(|_| damaged())?;
    if raw.len() != len {
        return Err(damaged());
    }
    Ok(Cow::Owned(raw))
}

fn damaged_chunk(first_n: u64) -> StoreError {
    StoreError::Other(format!("the log chunk from line {first_n} is damaged"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u64, text: &str) -> LogLine {
        LogLine {
            n,
            stream: match n % 3 {
                0 => Stream::Stdout,
                1 => Stream::Stderr,
                _ => Stream::System,
            },
            text: text.into(),
        }
    }

    fn unpack_all(chunks: &[Chunk], after: u64, limit: usize) -> Vec<LogLine> {
        let mut out = Vec::new();
        for chunk in chunks {
            unpack_into(chunk.first_n, &chunk.bytes, after, limit, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn lines_round_trip_with_their_numbers_streams_and_text() {
        let lines: Vec<LogLine> = (1..=1200)
            .map(|n| line(n, &format!("line {n} ✓ \"quoted\"")))
            .collect();
        let chunks = pack(&lines);
        assert_eq!(chunks.len(), 3, "512 lines a chunk at most");
        assert_eq!((chunks[1].first_n, chunks[1].last_n), (513, 1024));
        assert_eq!(unpack_all(&chunks, 0, usize::MAX), lines);
        // From the middle of a chunk, up to a limit inside the next one.
        assert_eq!(unpack_all(&chunks, 500, 20), lines[500..520]);
        assert_eq!(unpack_all(&chunks, 1200, 10), Vec::<LogLine>::new());
    }

    #[test]
    fn repetitive_lines_are_stored_compressed_and_others_as_they_are() {
        let repetitive: Vec<LogLine> = (1..=512)
            .map(|n| {
                line(
                    n,
                    &format!("[TRACE] vertex \"null_resource.db_host[{n}]\": visit complete"),
                )
            })
            .collect();
        let text: usize = repetitive.iter().map(|l| l.text.len()).sum();
        let chunk = &pack(&repetitive)[0];
        assert_eq!(chunk.bytes[0], LZ4);
        assert!(
            chunk.bytes.len() * 4 < text,
            "{} bytes for {text}",
            chunk.bytes.len()
        );
        assert_eq!(unpack_all(&pack(&repetitive), 0, usize::MAX), repetitive);

        // A line that does not compress (a hash) stays as it is.
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(b"pgcluster-api");
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        let random = vec![line(1, &hex)];
        let chunk = &pack(&random)[0];
        assert_ne!(chunk.bytes[0], LZ4);
        assert_eq!(unpack_all(&pack(&random), 0, usize::MAX), random);
    }

    #[test]
    fn a_chunk_written_before_compression_reads_as_it_did() {
        let lines: Vec<LogLine> = (1..=100).map(|n| line(n, "the same line")).collect();
        let mut raw = Vec::new();
        for l in &lines {
            append(&mut raw, l);
        }
        let mut out = Vec::new();
        unpack_into(1, &raw, 0, usize::MAX, &mut out).unwrap();
        assert_eq!(out, lines);
    }

    #[test]
    fn a_gap_in_the_numbers_or_the_byte_limit_starts_a_new_chunk() {
        let big = "x".repeat(MAX_BYTES / 2);
        let lines = vec![
            line(1, "a"),
            line(2, "b"),
            line(5, "after a gap"),
            line(6, &big),
            line(7, &big),
            line(8, ""),
        ];
        let chunks = pack(&lines);
        let bounds: Vec<(u64, u64)> = chunks.iter().map(|c| (c.first_n, c.last_n)).collect();
        assert_eq!(bounds, [(1, 2), (5, 6), (7, 8)]);
        assert_eq!(unpack_all(&chunks, 0, usize::MAX), lines);
    }

    #[test]
    fn a_damaged_chunk_is_an_error_not_a_panic() {
        let chunk = &pack(&[line(1, "hello")])[0];
        for cut in 0..chunk.bytes.len() - 1 {
            let mut out = Vec::new();
            let damaged = &chunk.bytes[..=cut];
            assert!(
                unpack_into(1, damaged, 0, 10, &mut out).is_err(),
                "cut at {cut}"
            );
        }
        let mut wrong_stream = chunk.bytes.clone();
        wrong_stream[0] = b'?';
        assert!(unpack_into(1, &wrong_stream, 0, 10, &mut Vec::new()).is_err());

        let lines: Vec<LogLine> = (1..=200).map(|n| line(n, "compresses well")).collect();
        let compressed = &pack(&lines)[0];
        assert_eq!(compressed.bytes[0], LZ4);
        for cut in 0..compressed.bytes.len() - 1 {
            let damaged = &compressed.bytes[..=cut];
            assert!(
                unpack_into(1, damaged, 0, usize::MAX, &mut Vec::new()).is_err(),
                "cut at {cut}"
            );
        }
        // A length no block of that size can hold is not allocated.
        let mut huge = compressed.bytes.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unpack_into(1, &huge, 0, usize::MAX, &mut Vec::new()).is_err());
    }
}
