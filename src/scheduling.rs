//! How the server's threads ask the kernel for the CPU: requests first.
//!
//! Requests are answered by the main runtime's threads; jobs' output is read
//! and stored by a runtime of its own (`runner::pump`), whose threads run at
//! a lower priority (`JOB_OUTPUT_NICE`) and give way after each batch. A
//! priority sets a thread's share of the CPU, not how soon it gets a core
//! when it wakes: on Linux 6.6 and later (EEVDF) a running thread keeps its
//! core for its slice before a thread waking with the same slice can take
//! it. So the request threads also ask for a short slice: a thread that wakes
//! with a shorter slice than the one running takes its core at once (Linux
//! 6.12 and later; earlier kernels accept the request and ignore it).

use std::io;

use nix::libc;
use tokio::runtime::Runtime;

/// The slice the request threads ask for: the shortest the kernel grants.
pub const REQUEST_SLICE_NS: u64 = 100_000;

/// The runtime that answers requests: its threads ask for the short slice.
pub fn request_runtime() -> io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(prefer_this_thread)
        .build()
}

/// Asks for the short slice for the calling thread, its priority unchanged.
/// Threads and processes it starts get the kernel's default (tools run as
/// they would without the server; threads that answer requests ask again).
pub fn prefer_this_thread() {
    if let Err(err) = set_slice_of_this_thread(REQUEST_SLICE_NS) {
        tracing::debug!(error = %err, "could not ask for a short scheduler slice");
    }
}

/// Whether the kernel grants (and reports) a thread's own slice: Linux 6.12
/// and later.
pub fn kernel_has_custom_slices() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 12)
}

/// Lets any thread waiting for this core run first (see `runner::pump`).
pub(crate) fn give_way() {
    // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
    unsafe { libc::sched_yield() };
}

/// This thread's nice value (Linux schedules threads, not processes: each
/// has its own).
pub(crate) fn nice_of_this_thread() -> Option<i32> {
    use nix::errno::Errno;
    Errno::clear();
    // SAFETY: getpriority only reads its integer arguments; 0 is this thread.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    (nice != -1 || Errno::last_raw() == 0).then_some(nice)
}

/// Sets this thread's nice value; the other threads keep theirs.
pub(crate) fn set_nice_of_this_thread(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority only reads its integer arguments; 0 is this thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct sched_attr` of `sched_setattr(2)`, its first version (48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For the normal policy: the slice asked for (0: the default).
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Children and threads started by the thread get the default policy and
/// slice back.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

fn set_slice_of_this_thread(slice_ns: u64) -> io::Result<()> {
    let nice = nice_of_this_thread().ok_or_else(io::Error::last_os_error)?;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: SCHED_FLAG_RESET_ON_FORK,
        nice,
        runtime: slice_ns,
        ..SchedAttr::default()
    };
    // SAFETY: the kernel reads `size` bytes of a valid `sched_attr`; pid 0 is
    // the calling thread.
    let done = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
fn slice_of_this_thread() -> io::Result<u64> {
    let mut attr = SchedAttr::default();
    // SAFETY: the kernel writes at most `size` bytes into `attr`.
    let done = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr.runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_thread_has_the_short_slice_and_what_it_starts_does_not() {
        std::thread::spawn(|| {
            let nice = nice_of_this_thread().unwrap();
            prefer_this_thread();
            assert_eq!(nice_of_this_thread(), Some(nice), "priority unchanged");
            if !kernel_has_custom_slices() {
                return;
            }
            assert_eq!(slice_of_this_thread().unwrap(), REQUEST_SLICE_NS);
            let started = std::thread::spawn(|| slice_of_this_thread().unwrap())
                .join()
                .unwrap();
            assert_ne!(started, REQUEST_SLICE_NS);
            assert!(started > 0, "the kernel's default slice");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_request_runtime_threads_ask_for_the_short_slice() {
        if !kernel_has_custom_slices() {
            return;
        }
        let runtime = request_runtime().unwrap();
        let worker = runtime.block_on(async {
            tokio::spawn(async { slice_of_this_thread().unwrap() })
                .await
                .unwrap()
        });
        let blocking = runtime.block_on(async {
            tokio::task::spawn_blocking(|| slice_of_this_thread().unwrap())
                .await
                .unwrap()
        });
        assert_eq!((worker, blocking), (REQUEST_SLICE_NS, REQUEST_SLICE_NS));
    }
}
