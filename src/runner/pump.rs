//! Where jobs' output is read and handled: a task per job on the server's
//! runtime.
//!
//! A child whose output is not read fast enough blocks on its full pipe, so
//! nothing is lost, only later. Storing the lines is a task of its own
//! (`live`).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Sink;
use super::lines::read_lines;
use crate::store::Stream;

/// The output side of a running child, seen from its supervisor.
pub(super) struct Pump {
    /// Lines of the runner's own (cancel, timeouts), in order.
    system: mpsc::UnboundedSender<String>,
    stop: Option<oneshot::Sender<()>>,
    activity: std::sync::Arc<Activity>,
    /// Hands the sink back once both pipes are at end of file, or stopped.
    task: Option<JoinHandle<Sink>>,
    sink: Option<Sink>,
    /// Lines of the runner's own that came after the pump had stopped.
    unsent: Vec<String>,
}

/// When the child last printed, for the idle timeout, and whether lines
/// wait for the store, for the drain after the child's exit.
struct Activity {
    since: Instant,
    /// Milliseconds after `since`.
    last_ms: AtomicU64,
    /// The pump waits for the store to take lines (it reads on after).
    storing: AtomicBool,
}

impl Pump {
    /// Starts reading the child's pipes into `sink`.
    pub fn start(sink: Sink, stdout: OwnedFd, stderr: OwnedFd, max_line: usize) -> Pump {
        let (system, system_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let activity = std::sync::Arc::new(Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            storing: AtomicBool::new(false),
        });
        let task = tokio::spawn(pump(
            sink,
            [(stdout, Stream::Stdout), (stderr, Stream::Stderr)],
            max_line,
            system_rx,
            stop_rx,
            activity.clone(),
        ));
        Pump {
            system,
            stop: Some(stop),
            activity,
            task: Some(task),
            sink: None,
            unsent: Vec::new(),
        }
    }

    /// Adds a line of the runner's own to the job's log.
    pub fn system(&mut self, text: String) {
        match &mut self.sink {
            Some(sink) => sink.system(&text),
            None => {
                if let Err(returned) = self.system.send(text) {
                    // The pump is handing the sink back: added then.
                    self.unsent.push(returned.0);
                }
            }
        }
    }

    /// When the child last printed a line.
    pub fn last_line_at(&self) -> tokio::time::Instant {
        let ms = self.activity.last_ms.load(Ordering::Relaxed);
        (self.activity.since + std::time::Duration::from_millis(ms)).into()
    }

    /// Whether lines are still coming: one was read within `grace`, or the
    /// pump is waiting for the store to take some (more are then unread).
    pub fn still_reading(&self, grace: std::time::Duration) -> bool {
        self.activity.storing.load(Ordering::Relaxed)
            || self.last_line_at() + grace > tokio::time::Instant::now()
    }

    /// Resolves once both pipes are at end of file and everything read from
    /// them is in the sink (never, after that). Cancel-safe.
    pub async fn pipes_closed(&mut self) {
        match &mut self.task {
            Some(task) => {
                let sink = join(task).await;
                self.task = None;
                self.sink = Some(sink);
            }
            None => std::future::pending().await,
        }
    }

    /// Stops reading if it has not stopped (what was read is still handled)
    /// and hands back the sink.
    pub async fn finish(mut self) -> Sink {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let mut sink = match (self.sink.take(), self.task.take()) {
            (Some(sink), _) => sink,
            (None, Some(mut task)) => join(&mut task).await,
            (None, None) => unreachable!("the sink is with the pump or back"),
        };
        for text in self.unsent.drain(..) {
            sink.system(&text);
        }
        sink
    }
}

async fn join(task: &mut JoinHandle<Sink>) -> Sink {
    match task.await {
        Ok(sink) => sink,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("the job output task was cancelled: {err}"),
    }
}

/// Reads both pipes (a task each, as output comes in) and hands the lines to
/// the sink, with the runner's own lines, until both are at end of file or
/// it is told to stop; then hands the sink back.
async fn pump(
    mut sink: Sink,
    pipes: [(OwnedFd, Stream); 2],
    max_line: usize,
    mut system: mpsc::UnboundedReceiver<String>,
    mut stop: oneshot::Receiver<()>,
    activity: std::sync::Arc<Activity>,
) -> Sink {
    // A few reads' worth of lines: past that the child waits on its pipe.
    let (tx, mut rx) = mpsc::channel::<(Stream, Vec<String>)>(8);
    let mut readers = Vec::new();
    for (fd, stream) in pipes {
        match pipe::Receiver::from_owned_fd(fd) {
            Ok(pipe) => readers.push(tokio::spawn(read_lines(pipe, stream, max_line, tx.clone()))),
            Err(e) => sink.system(&format!(
                "could not read the child's {}: {e}",
                stream.as_str()
            )),
        }
    }
    drop(tx);
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some((stream, lines)) => {
                    for text in lines {
                        sink.push(stream, text);
                    }
                    activity.last_ms.store(
                        activity.since.elapsed().as_millis() as u64,
                        Ordering::Relaxed,
                    );
                    // Show (and store) a burst as soon as it is read, in batches.
                    if sink.wants_flush() || rx.is_empty() {
                        activity.storing.store(true, Ordering::Relaxed);
                        sink.flush().await;
                        activity.storing.store(false, Ordering::Relaxed);
                    }
                }
                None => break,
            },
            Some(text) = system.recv() => {
                sink.system(&text);
                sink.flush().await;
            }
            _ = &mut stop => break,
        }
    }
    // Something outside the child's group may still hold the pipes: what was
    // read is kept, the rest is not waited for.
    for reader in readers {
        reader.abort();
    }
    while let Ok((stream, lines)) = rx.try_recv() {
        for text in lines {
            sink.push(stream, text);
        }
    }
    // From here on, the supervisor adds its lines itself.
    system.close();
    while let Ok(text) = system.try_recv() {
        sink.system(&text);
    }
    sink
}
