//! Reading a child's output line by line with bounded memory.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::store::Stream;

/// Reads `source` until end of file, sending each line (without its newline)
/// to `sink`. A line longer than `max_line` bytes is cut there with a marker,
/// and the rest of it is skipped, so memory stays bounded whatever the child
/// prints. Bytes that are not UTF-8 are replaced.
pub async fn read_lines<R>(
    source: R,
    stream: Stream,
    max_line: usize,
    sink: mpsc::Sender<(Stream, String)>,
) where
    R: AsyncRead + Unpin,
{
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut cut = false;
    while let Ok(chunk) = reader.fill_buf().await {
        if chunk.is_empty() {
            if !line.is_empty() || cut {
                let _ = sink.send((stream, finish(&line, cut, max_line))).await;
            }
            break;
        }
        let (part, consumed, complete) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = max_line.saturating_sub(line.len());
        if part.len() > room {
            cut = true;
        }
        line.extend_from_slice(&part[..part.len().min(room)]);
        reader.consume(consumed);
        if complete {
            if sink
                .send((stream, finish(&line, cut, max_line)))
                .await
                .is_err()
            {
                break;
            }
            line.clear();
            cut = false;
        }
    }
}

fn finish(line: &[u8], cut: bool, max_line: usize) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::from_utf8_lossy(line).into_owned();
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
        while let Some((_, line)) = rx.recv().await {
            out.push(line);
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
    async fn invalid_utf8_is_replaced_not_dropped() {
        assert_eq!(lines_of(b"a\xffb\n", 100).await, ["a\u{fffd}b"]);
    }
}
