//! One child process: spawned in its own process group, its output read
//! concurrently, stopped by group on timeout or cancel, always reaped.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::pump::Pump;
use super::{DRAIN_GRACE, DRAIN_LIMIT, JobSpec, RunnerConfig, Sink};
use crate::store::JobStore;

/// Why the runner stopped a child before it ended by itself.
#[derive(Debug)]
pub enum StopReason {
    Cancelled,
    Timeout(String),
}

/// How the child ended.
#[derive(Debug)]
pub struct Ended {
    /// `None` when the child died of a signal.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub stopped: Option<StopReason>,
}

/// Runs the child of `spec` to its end, its output going to `sink` (which
/// comes back). `Err` when it could not be started.
pub async fn supervise(
    spec: &JobSpec,
    config: &RunnerConfig,
    mut sink: Sink,
    store: &Arc<dyn JobStore>,
    cancel: watch::Receiver<bool>,
) -> (Sink, Result<Ended, String>) {
    let mut child = match start(spec, config) {
        Ok(started) => started,
        Err(why) => return (sink, Err(why)),
    };
    let secret_writer = child.1.take();
    let mut child = child.0;
    let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let pid = child.id();
    let pid_start = pid.and_then(start_time);
    if let Err(err) = store
        .mark_running(sink.job_id, time::OffsetDateTime::now_utc(), pid, pid_start)
        .await
    {
        tracing::error!(job_id = %sink.job_id, error = %err, "could not record a job as running");
    }
    if let (Some(mut writer), Some((_, secret))) = (secret_writer, &spec.secret_input) {
        // Small enough for the pipe buffer: this never blocks on the child.
        let written = writer
            .write_all(secret.expose().as_bytes())
            .and_then(|_| writer.write_all(b"\n"));
        if let Err(e) = written {
            sink.system(&format!("could not hand the secret to the child: {e}"));
        }
    }

    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), &spec.stdin_input) {
        use tokio::io::AsyncWriteExt;
        let input = input.clone();
        // Written from its own task: a child that reads slowly must not stall us.
        tokio::spawn(async move {
            let _ = stdin.write_all(input.expose().as_bytes()).await;
            // Dropping stdin closes it: the child sees end of file.
        });
    }

    let pipes = child
        .stdout
        .take()
        .expect("stdout is piped")
        .into_owned_fd()
        .and_then(|stdout| {
            let stderr = child.stderr.take().expect("stderr is piped");
            Ok((stdout, stderr.into_owned_fd()?))
        });
    let (stdout, stderr) = match pipes {
        Ok(pipes) => pipes,
        Err(e) => {
            // Not expected: the pipes were just made. Nothing may outlive the job.
            signal_group(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
            return (sink, Err(format!("could not read the child's output: {e}")));
        }
    };
    let mut pump = Pump::start(sink, stdout, stderr, config.max_line_bytes);
    let ended = watch_child(&mut child, &mut pump, config, pgid, cancel).await;
    // Nothing of the job may outlive it.
    signal_group(pgid, Signal::SIGKILL);
    let sink = pump.finish().await;
    (sink, ended)
}

/// Spawns the child (and the pipe its secret goes through, if any).
fn start(
    spec: &JobSpec,
    config: &RunnerConfig,
) -> Result<(tokio::process::Child, Option<std::io::PipeWriter>), String> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .stdin(if spec.stdin_input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    for key in &config.secret_env {
        command.env_remove(key);
    }
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    // The secret goes through a pipe: the child reads it from /dev/fd/N.
    let mut secret_writer = None;
    if let Some((fd, _)) = &spec.secret_input {
        let (reader, writer) =
            std::io::pipe().map_err(|e| format!("could not create a pipe: {e}"))?;
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: reader.into(),
                child_fd: *fd,
            }])
            .map_err(|e| format!("could not map the secret pipe: {e}"))?;
        secret_writer = Some(writer);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", spec.program.display()))?;
    // Our copy of the pipe's read end went with the command.
    Ok((child, secret_writer))
}

/// Waits for the child and for its output to end; enforces the timeouts and
/// the cancel, reported in the job's log through the pump.
async fn watch_child(
    child: &mut tokio::process::Child,
    pump: &mut Pump,
    config: &RunnerConfig,
    pgid: Option<Pid>,
    mut cancel: watch::Receiver<bool>,
) -> Result<Ended, String> {
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut stopped: Option<StopReason> = None;
    let mut exit = None;
    let mut group_killed = false;
    let mut pipes_open = true;
    let mut exited_at = far;
    // The timers live across iterations; `kill` and `drain` are armed when set.
    let timeout = sleep_until(Instant::now() + config.timeout);
    // Re-armed when it fires early: the child printed since.
    let idle = sleep_until(config.idle_timeout.map_or(far, |d| Instant::now() + d));
    let kill = sleep_until(far);
    let drain = sleep_until(far);
    tokio::pin!(timeout, idle, kill, drain);
    let mut kill_armed = false;
    let mut drain_armed = false;

    loop {
        tokio::select! {
            _ = pump.pipes_closed(), if pipes_open => {
                pipes_open = false;
                if exit.is_some() {
                    break;
                }
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(status.map_err(|e| format!("could not wait for the child: {e}"))?);
                if !pipes_open {
                    break;
                }
                exited_at = Instant::now();
                drain.as_mut().reset(exited_at + DRAIN_GRACE);
                drain_armed = true;
            },
            changed = cancel.changed(), if stopped.is_none() => {
                if changed.is_ok() && *cancel.borrow() {
                    pump.system("cancel requested: sending SIGINT to the process group".into());
                    stopped = Some(StopReason::Cancelled);
                    kill.as_mut().reset(Instant::now() + config.cancel_grace);
                    kill_armed = true;
                    signal_group(pgid, Signal::SIGINT);
                }
            },
            _ = &mut timeout, if stopped.is_none() && exit.is_none() => {
                let why = format!("timed out after {}s", config.timeout.as_secs());
                pump.system(format!("{why}: sending SIGINT to the process group"));
                stopped = Some(StopReason::Timeout(why));
                kill.as_mut().reset(Instant::now() + config.cancel_grace);
                kill_armed = true;
                signal_group(pgid, Signal::SIGINT);
            },
            _ = &mut idle, if config.idle_timeout.is_some() && stopped.is_none() && exit.is_none() => {
                let limit = config.idle_timeout.unwrap_or_default();
                let due = pump.last_line_at() + limit;
                if Instant::now() < due {
                    idle.as_mut().reset(due);
                } else {
                    let why = format!("no output for {}s", limit.as_secs());
                    pump.system(format!("{why}: sending SIGINT to the process group"));
                    stopped = Some(StopReason::Timeout(why));
                    kill.as_mut().reset(Instant::now() + config.cancel_grace);
                    kill_armed = true;
                    signal_group(pgid, Signal::SIGINT);
                }
            },
            _ = &mut kill, if kill_armed && exit.is_none() => {
                pump.system("grace period over: sending SIGKILL to the process group".into());
                signal_group(pgid, Signal::SIGKILL);
                kill_armed = false;
            },
            _ = &mut drain, if drain_armed => {
                let now = Instant::now();
                if !group_killed {
                    // The tool exited but processes it left behind keep the pipes open.
                    signal_group(pgid, Signal::SIGKILL);
                    group_killed = true;
                    drain.as_mut().reset(now + DRAIN_GRACE);
                } else if pump.still_reading(DRAIN_GRACE) && now < exited_at + DRAIN_LIMIT {
                    // Still reading what was written before the end: the
                    // store was behind, and nothing of it is dropped.
                    drain.as_mut().reset(now + DRAIN_GRACE / 4);
                } else {
                    // Something outside the group still holds the pipes: stop reading.
                    break;
                }
            },
        }
    }
    let status = exit.expect("the loop ends only after the child was reaped");
    Ok(Ended {
        exit_code: status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&status),
        stopped,
    })
}

/// Runs a short command whose standard output is a secret (decrypting the
/// vault): nothing is logged or stored, stdout is returned to the caller.
/// The secret input, if any, is piped as in `supervise`.
pub async fn capture_secret_output(
    program: &std::path::Path,
    args: &[std::ffi::OsString],
    secret_env: &[String],
    secret_input: Option<(i32, &super::Secret)>,
    timeout: Duration,
) -> Result<String, String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for key in secret_env {
        command.env_remove(key);
    }
    let mut writer = None;
    if let Some((fd, _)) = secret_input {
        let (reader, w) = std::io::pipe().map_err(|e| format!("could not create a pipe: {e}"))?;
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: reader.into(),
                child_fd: fd,
            }])
            .map_err(|e| format!("could not map the secret pipe: {e}"))?;
        writer = Some(w);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", program.display()))?;
    drop(command);
    if let (Some(mut w), Some((_, secret))) = (writer, secret_input) {
        let _ = w
            .write_all(secret.expose().as_bytes())
            .and_then(|_| w.write_all(b"\n"));
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("{} timed out", program.display()))?
        .map_err(|e| format!("could not wait for {}: {e}", program.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| "the output is not UTF-8".to_string())
}

/// The start time of a process (clock ticks after boot, field 22 of
/// `/proc/<pid>/stat`): with the pid, it names one process for good.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Stops a process group left by a previous server: SIGINT, then SIGKILL
/// after `grace`, in the background.
pub fn stop_group(pid: u32, grace: Duration) {
    let pgid = Some(Pid::from_raw(pid as i32));
    signal_group(pgid, Signal::SIGINT);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        signal_group(pgid, Signal::SIGKILL);
    });
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH (no process left in the group) is the normal case here.
        let _ = killpg(pgid, signal);
    }
}
