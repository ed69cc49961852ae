//! `terraform.log` and `ansible.log`: every line the tools print, with its job
//! id and stream, in the server's log format.
//!
//! A job formats its lines as it reads them and hands them over a batch at a
//! time; each file has a thread of its own that writes a batch with one
//! write, then gives way to any thread waiting for the core (a request).
//! (A `tracing` event per line cost more than reading the line.) The
//! queue is bounded: when the disk falls behind, batches are dropped rather
//! than held in memory, and the file says how many lines it lost.

use std::fmt::Display;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use tracing_appender::rolling::{self, RollingFileAppender};

use crate::config::{LogFormat, LogRotation};

/// One of the tool log files.
#[derive(Clone, Copy, Debug)]
pub enum ToolFile {
    Terraform,
    Ansible,
}

/// Bytes queued for one file past which new batches are dropped.
const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

static FILES: OnceLock<Files> = OnceLock::new();

struct Files {
    format: LogFormat,
    terraform: File,
    ansible: File,
}

struct File {
    queue: mpsc::Sender<Message>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    queued_bytes: AtomicUsize,
    /// Lines dropped because the writer fell behind.
    dropped_lines: AtomicU64,
}

enum Message {
    Lines(Vec<u8>),
    Stop,
}

/// Stops the writer threads once they have written what is queued.
pub struct ToolLogGuard {
    threads: Vec<JoinHandle<()>>,
}

impl Drop for ToolLogGuard {
    fn drop(&mut self) {
        if let Some(files) = FILES.get() {
            for file in [&files.terraform, &files.ansible] {
                let _ = file.queue.send(Message::Stop);
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Opens both files and starts their writers. Once per process: later calls
/// leave the first files in place.
pub fn install(
    dir: &Path,
    format: LogFormat,
    rotation: LogRotation,
) -> std::io::Result<ToolLogGuard> {
    let mut threads = Vec::new();
    let mut open = |name: &'static str| -> std::io::Result<File> {
        let appender = match rotation {
            LogRotation::Never => rolling::never(dir, name),
            LogRotation::Daily => rolling::daily(dir, name),
            LogRotation::Hourly => rolling::hourly(dir, name),
        };
        let (queue, received) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let thread = std::thread::Builder::new()
            .name(format!("log {name}"))
            .spawn({
                let counts = counts.clone();
                move || write_file(appender, received, counts, format)
            })?;
        threads.push(thread);
        Ok(File { queue, counts })
    };
    let files = Files {
        format,
        terraform: open("terraform.log")?,
        ansible: open("ansible.log")?,
    };
    let _ = FILES.set(files);
    Ok(ToolLogGuard { threads })
}

fn write_file(
    mut out: RollingFileAppender,
    received: mpsc::Receiver<Message>,
    counts: Arc<Counts>,
    format: LogFormat,
) {
    // Lines lost because the file could not be written (a full or failing
    // disk), and the last reason: counted, and reported once it can be.
    let mut unwritten: u64 = 0;
    let mut reason = String::new();
    let report_dropped = |out: &mut RollingFileAppender, unwritten: &mut u64, reason: &str| {
        let dropped = counts.dropped_lines.swap(0, Ordering::Relaxed);
        let mut parts = Vec::new();
        if dropped > 0 {
            parts.push(format!(
                "{dropped} lines of tool output were dropped: the disk fell behind"
            ));
        }
        if *unwritten > 0 {
            parts.push(format!(
                "{unwritten} lines of tool output could not be written: {reason}"
            ));
        }
        if parts.is_empty() {
            return;
        }
        let mut line = Vec::new();
        format_line(
            &mut line,
            &mut Clock::default(),
            format,
            "WARN",
            &parts.join("; "),
            None,
        );
        if out.write_all(&line).is_ok() {
            *unwritten = 0;
        } else {
            counts.dropped_lines.fetch_add(dropped, Ordering::Relaxed);
        }
    };
    while let Ok(message) = received.recv() {
        match message {
            Message::Lines(batch) => {
                if let Err(err) = out.write_all(&batch) {
                    unwritten += batch.iter().filter(|b| **b == b'\n').count() as u64;
                    reason = err.to_string();
                }
                counts
                    .queued_bytes
                    .fetch_sub(batch.len(), Ordering::Relaxed);
                report_dropped(&mut out, &mut unwritten, &reason);
                // Give way: a request woken meanwhile runs now, not at the
                // end of this thread's slice (writes come back to back).
                std::thread::yield_now();
            }
            Message::Stop => break,
        }
    }
    report_dropped(&mut out, &mut unwritten, &reason);
    let _ = out.flush();
}

/// One job's lines for a tool log, formatted as they come and written
/// together. Without installed files (tests), it keeps nothing.
pub struct ToolLogBatch {
    file: Option<&'static File>,
    format: LogFormat,
    job_id: String,
    buf: Vec<u8>,
    lines: u64,
    clock: Clock,
}

impl ToolLogBatch {
    pub fn new(file: ToolFile, job_id: impl Display) -> ToolLogBatch {
        let files = FILES.get();
        ToolLogBatch {
            file: files.map(|f| match file {
                ToolFile::Terraform => &f.terraform,
                ToolFile::Ansible => &f.ansible,
            }),
            format: files.map(|f| f.format).unwrap_or(LogFormat::Text),
            job_id: job_id.to_string(),
            buf: Vec::new(),
            lines: 0,
            clock: Clock::default(),
        }
    }

    /// A line the tool printed on `stream` (`Stdout`, `Stderr`, `System`).
    pub fn push(&mut self, stream: &str, text: &str) {
        if self.file.is_none() {
            return;
        }
        format_line(
            &mut self.buf,
            &mut self.clock,
            self.format,
            "INFO",
            text,
            Some((&self.job_id, stream)),
        );
        self.lines += 1;
    }

    /// Bytes waiting to be sent.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Hands the lines to the file's writer, or drops them if it is too far
    /// behind.
    pub fn send(&mut self) {
        let Some(file) = self.file else { return };
        if self.buf.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.buf);
        let lines = std::mem::take(&mut self.lines);
        let queued = file
            .counts
            .queued_bytes
            .fetch_add(batch.len(), Ordering::Relaxed);
        if queued + batch.len() > MAX_QUEUED_BYTES {
            file.counts
                .queued_bytes
                .fetch_sub(batch.len(), Ordering::Relaxed);
            file.counts
                .dropped_lines
                .fetch_add(lines, Ordering::Relaxed);
            return;
        }
        let size = batch.len();
        if file.queue.send(Message::Lines(batch)).is_err() {
            // The writer has stopped (the server is exiting).
            file.counts.queued_bytes.fetch_sub(size, Ordering::Relaxed);
        }
    }
}

impl Drop for ToolLogBatch {
    fn drop(&mut self) {
        self.send();
    }
}

/// One line as the `tracing` formatter writes it: `text`
/// (`<time>  INFO <message> job_id=<id> stream=<stream>`) or `json`.
fn format_line(
    buf: &mut Vec<u8>,
    clock: &mut Clock,
    format: LogFormat,
    level: &str,
    message: &str,
    fields: Option<(&str, &str)>,
) {
    match format {
        LogFormat::Text => {
            clock.push(buf);
            buf.push(b' ');
            // The level is padded to five characters, as tracing does.
            for _ in level.len()..5 {
                buf.push(b' ');
            }
            buf.extend_from_slice(level.as_bytes());
            buf.push(b' ');
            push_escaped(buf, message);
            if let Some((job_id, stream)) = fields {
                buf.extend_from_slice(b" job_id=");
                buf.extend_from_slice(job_id.as_bytes());
                buf.extend_from_slice(b" stream=");
                buf.extend_from_slice(stream.as_bytes());
            }
        }
        LogFormat::Json => {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            clock.push(buf);
            buf.extend_from_slice(b"\",\"level\":\"");
            buf.extend_from_slice(level.as_bytes());
            buf.extend_from_slice(b"\",\"fields\":{\"message\":");
            // Writing JSON to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, message);
            if let Some((job_id, stream)) = fields {
                buf.extend_from_slice(b",\"job_id\":\"");
                buf.extend_from_slice(job_id.as_bytes());
                buf.extend_from_slice(b"\",\"stream\":\"");
                buf.extend_from_slice(stream.as_bytes());
                buf.push(b'"');
            }
            buf.extend_from_slice(b"}}");
        }
    }
    buf.push(b'\n');
}

/// Writes `2026-11-23T20:37:46.123456Z`, as tracing does, formatting the
/// date and time once a second.
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    /// `2026-11-23T20:37:46.`
    prefix: Vec<u8>,
}

impl Clock {
    fn push(&mut self, buf: &mut Vec<u8>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if self.second != Some(now.as_secs()) {
            let time = OffsetDateTime::from_unix_timestamp(now.as_secs() as i64)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let (year, month, day) = time.to_calendar_date();
            self.prefix.clear();
            let _ = write!(
                self.prefix,
                "{year:04}-{:02}-{day:02}T{:02}:{:02}:{:02}.",
                month as u8,
                time.hour(),
                time.minute(),
                time.second(),
            );
            self.second = Some(now.as_secs());
        }
        buf.extend_from_slice(&self.prefix);
        let mut micros = now.subsec_micros();
        let mut digits = [b'0'; 6];
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        buf.extend_from_slice(&digits);
        buf.push(b'Z');
    }
}

/// The message with the characters tracing escapes (those that can drive a
/// terminal) escaped the same way.
fn push_escaped(buf: &mut Vec<u8>, text: &str) {
    // A branch-free pass over every byte (vectorised) rules out the usual
    // line: no control character at all. C1 controls are U+0080..U+009F,
    // encoded 0xC2 0x80..0x9F.
    let risky = text.as_bytes().iter().fold(false, |risky, &b| {
        risky | (b < 0x20) | (b == 0x7f) | (b == 0xc2)
    });
    if !risky {
        buf.extend_from_slice(text.as_bytes());
        return;
    }
    for ch in text.chars() {
        match ch {
            '\x1b' => buf.extend_from_slice(b"\\x1b"),
            '\x07' => buf.extend_from_slice(b"\\x07"),
            '\x08' => buf.extend_from_slice(b"\\x08"),
            '\x0c' => buf.extend_from_slice(b"\\x0c"),
            '\x7f' => buf.extend_from_slice(b"\\x7f"),
            '\u{80}'..='\u{9f}' => {
                let _ = write!(buf, "\\u{{{:x}}}", ch as u32);
            }
            _ => {
                let mut utf8 = [0; 4];
                buf.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: LogFormat, text: &str) -> String {
        let mut buf = Vec::new();
        let clock = &mut Clock::default();
        format_line(
            &mut buf,
            clock,
            format,
            "INFO",
            text,
            Some(("job-1", "Stderr")),
        );
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn a_text_line_reads_like_the_tracing_formatter_writes_it() {
        let line = line(LogFormat::Text, "Plan: 1 to add");
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(time.len(), "2026-11-23T20:37:46.123456Z".len(), "{line}");
        assert!(time.ends_with('Z'));
        assert_eq!(rest, " INFO Plan: 1 to add job_id=job-1 stream=Stderr\n");
    }

    #[test]
    fn a_json_line_is_one_object_with_the_tracing_fields() {
        let line = line(LogFormat::Json, "a \"quoted\"\ttab");
        assert!(line.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["fields"]["message"], "a \"quoted\"\ttab");
        assert_eq!(value["fields"]["job_id"], "job-1");
        assert_eq!(value["fields"]["stream"], "Stderr");
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn the_time_is_utc_with_microseconds() {
        let mut clock = Clock::default();
        let mut buf = Vec::new();
        clock.push(&mut buf);
        buf.push(b' ');
        clock.push(&mut buf);
        let text = String::from_utf8(buf).unwrap();
        let now = OffsetDateTime::now_utc();
        for stamp in text.split(' ') {
            let parsed =
                OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            assert!((now - parsed).abs() < time::Duration::seconds(5), "{stamp}");
            assert_eq!(stamp.len(), "2026-11-23T20:37:46.123456Z".len());
        }
    }

    #[test]
    fn terminal_escapes_in_a_text_line_are_escaped() {
        let line = line(LogFormat::Text, "\x1b[31mred\x1b[0m \u{9b}2J é");
        assert!(
            line.contains(" \\x1b[31mred\\x1b[0m \\u{9b}2J é job_id="),
            "{line}"
        );
    }
}
