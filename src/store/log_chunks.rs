//! How the SQLite store packs a job's log lines: consecutive lines go into
//! one row (a chunk) instead of a row each. Per line, a row cost a B-tree
//! insert keyed by the job id and rewrote the pages around it at every
//! commit; a chunk is written about once, its lines side by side.
//!
//! A chunk holds the lines `first_n..=last_n` (their numbers are not stored:
//! they follow from `first_n`), each as its stream (one byte), its length
//! (`u32`, little-endian) and its UTF-8 text.

use super::{LogLine, StoreError, Stream};

/// Most lines in one chunk: a read of one line decodes at most this many.
pub const MAX_LINES: usize = 512;
/// Most text bytes in one chunk (a chunk holds at least one line).
pub const MAX_BYTES: usize = 256 * 1024;

/// One chunk to store: its first and last line numbers and its bytes.
#[derive(Debug, PartialEq)]
pub struct Chunk {
    pub first_n: u64,
    pub last_n: u64,
    pub bytes: Vec<u8>,
}

/// Packs `lines` (in order) into chunks of consecutive numbers, at most
/// `MAX_LINES` lines and about `MAX_BYTES` bytes each.
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
    chunks
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
    let damaged = || StoreError::Other(format!("the log chunk from line {first_n} is damaged"));
    let mut rest = bytes;
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
    }
}
