//! Where jobs' output is read and handled: a runtime of its own, whose
//! threads run at a lower scheduling priority (`JOB_OUTPUT_NICE`) than the
//! request handlers.
//!
//! On a busy machine, requests then get the CPU first and a job's output
//! waits: its child blocks on its full pipe until the output is read, so
//! nothing is lost, only later. Storing the lines runs here too (`live`),
//! on this runtime's blocking threads, at the same priority; after each
//! batch, read or stored, the thread gives way to any thread waiting for
//! its core (see `scheduling`). The children themselves are started (and
//! waited for) from the main runtime, and run at the server's priority with
//! the kernel's default slice.
//!
//! The price: a request that writes a job record (starting or ending a job)
//! may wait for a batch of log lines being stored at the lower priority;
//! batches are kept small for that. Reads have a connection of their own.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::net::unix::pipe;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Sink;
use super::lines::read_lines;
use crate::scheduling;
use crate::store::Stream;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Runs `future` on the output runtime, started on first use with threads
/// `nice` steps below the server's priority (0: at it). One per process: the
/// first caller's `nice` holds.
pub(super) fn spawn<F>(nice: i32, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = RUNTIME.get_or_init(|| {
        // Set as a value, not a step from whatever a thread started with: a
        // blocking thread is started by a worker that already runs lower.
        let target = (nice != 0)
            .then(scheduling::nice_of_this_thread)
            .flatten()
            .map(|ours| (ours + nice).min(19));
        // Few threads: every thread that allocates costs memory (allocator
        // arenas), and the stores serialise on one connection anyway.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(2)
            .thread_name("job-output")
            .on_thread_start(move || {
                if let Some(target) = target
                    && let Err(err) = scheduling::set_nice_of_this_thread(target)
                {
                    tracing::warn!(
                        nice = target,
                        error = %err,
                        "could not lower the priority of a job output thread"
                    );
                }
            })
            .enable_all()
            .build()
            .expect("the job output runtime starts")
    });
    runtime.spawn(future)
}

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

/// When the child last printed, for the idle timeout.
struct Activity {
    since: Instant,
    /// Milliseconds after `since`.
    last_ms: AtomicU64,
}

impl Pump {
    /// Starts reading the child's pipes into `sink` on the output runtime.
    pub fn start(sink: Sink, stdout: OwnedFd, stderr: OwnedFd, max_line: usize, nice: i32) -> Pump {
        let (system, system_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let activity = std::sync::Arc::new(Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let task = spawn(
            nice,
            pump(
                sink,
                [(stdout, Stream::Stdout), (stderr, Stream::Stderr)],
                max_line,
                system_rx,
                stop_rx,
                activity.clone(),
            ),
        );
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
        Err(err) => panic!("the job output runtime stopped: {err}"),
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
                        sink.flush().await;
                        // Requests waiting for this core run first.
                        scheduling::give_way();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's nice value as `/proc/thread-self/stat` shows it (field 19).
    fn nice_in_proc() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let fields = stat.rsplit_once(')').unwrap().1;
        fields.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn output_threads_run_at_the_lower_priority_and_requests_do_not() {
        let ours = nice_in_proc();
        // The unit tests start the runtime with the default, 5.
        let worker = spawn(5, async { nice_in_proc() }).await.unwrap();
        assert_eq!(worker, (ours + 5).min(19));
        // A blocking thread is started by a worker: 5 below the server too,
        // not 5 below that worker.
        let blocking = spawn(5, async {
            tokio::task::spawn_blocking(nice_in_proc).await.unwrap()
        })
        .await
        .unwrap();
        assert_eq!(blocking, (ours + 5).min(19));
        assert_eq!(nice_in_proc(), ours);
    }
}
