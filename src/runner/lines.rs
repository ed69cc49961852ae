//! Reading a child's output line by line with bounded memory.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::store::Stream;

/// Reads `source` until end of file, sending its lines (without their
/// newlines) to `sink`, those of one read together. A line longer than
/// `max_line` bytes is cut there with a marker, and the rest of it is skipped,
/// so memory stays bounded whatever the child prints. Bytes that are not
/// UTF-8 are replaced.
pub async fn read_lines<R>(
    source: R,
    stream: Stream,
    max_line: usize,
    sink: mpsc::Sender<(Stream, Vec<String>)>,
) where
    R: AsyncRead + Unpin,
{
    let mut reader = BufReader::with_capacity(READ_BUFFER, source);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut cut = false;
    while let Ok(chunk) = reader.fill_buf().await {
        let mut lines = Vec::new();
        if chunk.is_empty() {
            if !line.is_empty() || cut {
                lines.push(finish(&line, cut, max_line));
                let _ = sink.send((stream, lines)).await;
            }
            break;
        }
        let mut rest = chunk;
        loop {
            let (part, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            let room = max_line.saturating_sub(line.len());
            if part.len() > room {
                cut = true;
            }
            let kept = &part[..part.len().min(room)];
            if !complete {
                line.extend_from_slice(kept);
                break;
            }
            if line.is_empty() {
                // The whole line is in this chunk: no copy into `line`.
                lines.push(finish(kept, cut, max_line));
            } else {
                line.extend_from_slice(kept);
                lines.push(finish(&line, cut, max_line));
                line.clear();
            }
            cut = false;
            rest = &rest[part.len() + 1..];
        }
        let consumed = chunk.len();
        reader.consume(consumed);
        if !lines.is_empty() && sink.send((stream, lines)).await.is_err() {
            break;
        }
    }
}

/// Bytes read from a pipe at a time (at most).
const READ_BUFFER: usize = 64 * 1024;

fn finish(line: &[u8], cut: bool, max_line: usize) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // The common case first: `from_utf8` checks ASCII a word at a time.
    let mut text = match std::str::from_utf8(line) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(line).into_owned(),
    };
    if cut {
        text.push_str(&format!(" [line cut at {max_line} bytes]"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &'static [u8], max_line: usize) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(read_lines(input, Stream::Stdout, max_line, tx));
        let mut out = Vec::new();
        while let Some((_, lines)) = rx.recv().await {
            out.extend(lines);
        }
        reader.await.unwrap();
        out
    }

    #[tokio::test]
    async fn lines_are_split_on_newlines_and_the_last_one_needs_none() {
        assert_eq!(lines_of(b"a\r\nb\n\nc", 100).await, ["a", "b", "", "c"]);
    }

    #[tokio::test]
    async fn a_long_line_is_cut_with_a_marker_and_the_next_one_is_intact() {
        let lines = lines_of(b"0123456789\nok\n", 4).await;
        assert_eq!(lines, ["0123 [line cut at 4 bytes]", "ok"]);
    }

    #[tokio::test]
    async fn a_line_split_across_reads_is_one_line() {
        let (client, mut server) = tokio::io::duplex(64);
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(read_lines(client, Stream::Stdout, 8, tx));
        use tokio::io::AsyncWriteExt;
        for piece in [&b"ab"[..], b"c\nde", b"fghijkl", b"mn\n", b"\nlast"] {
            server.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        drop(server);
        let mut out = Vec::new();
        while let Some((_, lines)) = rx.recv().await {
            out.extend(lines);
        }
        reader.await.unwrap();
        assert_eq!(out, ["abc", "defghijk [line cut at 8 bytes]", "", "last"]);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_not_dropped() {
        assert_eq!(lines_of(b"a\xffb\n", 100).await, ["a\u{fffd}b"]);
    }
}
