//! Signals during `tadsr-edge run`: the first SIGINT, SIGTERM, SIGHUP (or
//! any other signal whose default would end the process: SIGQUIT, SIGUSR1,
//! SIGUSR2, SIGALRM, SIGXCPU) sets the cancel
//! flag the pipeline checks between tiles, so the batch ends cleanly; a
//! second stops the process at once after removing the temporary file of a
//! write in progress. SIGKILL cannot be caught: the temporary file it leaves
//! is removed by the next run that writes into that folder
//! (`write::remove_stale_temporaries`).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use anyhow::Context as _;
use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGXCPU};

use tadsr_edge::image::write;

use super::{ExitNow, Outcome};

/// Set by the first signal: the pipeline stops at its next tile, the batch at its next input.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The signal number that stopped the run, 0 while none came.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Signals received so far.
static SIGNALS_SEEN: AtomicUsize = AtomicUsize::new(0);

/// The signals that would end the process by default and that a user or
/// the system sends to stop it. Not SIGPIPE (Rust ignores it: a closed pipe
/// is a write error), SIGXFSZ (ignored in `main`: a file over the size
/// limit is a write error), SIGPROF and SIGVTALRM (profilers' timers).
const STOPPING_SIGNALS: [i32; 8] = [
    SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGXCPU,
];

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        SIGQUIT => "SIGQUIT",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        SIGALRM => "SIGALRM",
        SIGXCPU => "SIGXCPU (CPU time limit)",
        _ => "a signal",
    }
}

/// SIGINT, SIGTERM, SIGHUP and the other [`STOPPING_SIGNALS`]: the first sets the cancel flag (in the signal
/// handler itself, so the run stops at the next tile however busy it is) and
/// the batch ends cleanly: outputs written so far are complete, the one
/// being computed is dropped. A second one stops the process at once, after
/// removing the temporary file of a write in progress.
pub fn install_signal_handlers(exit_now: ExitNow) -> anyhow::Result<()> {
    for signal in STOPPING_SIGNALS {
        // SAFETY: the closure only touches atomics, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal, move || {
                let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
                SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst);
                INTERRUPTED.store(true, Ordering::SeqCst);
            })
        }
        .context("cannot install the signal handlers")?;
    }
    let mut signals = signal_hook::iterator::Signals::new(STOPPING_SIGNALS)
        .context("cannot install the signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if SIGNALS_SEEN.load(Ordering::SeqCst) >= 2 {
                    let removed = write::remove_temporary_files();
                    super::run::remove_created_empty_folders();
                    let signal = SIGNAL.load(Ordering::SeqCst);
                    stderr_line!(
                        "error: stopped at once by a second signal; outputs already written are complete{}",
                        if removed > 0 {
                            ", the one being written was removed"
                        } else {
                            ""
                        }
                    );
                    exit_now(Outcome::Interrupted(signal));
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// After a first signal: the message and the outcome.
pub fn interrupted() -> Option<Outcome> {
    if !INTERRUPTED.load(Ordering::SeqCst) {
        return None;
    }
    let signal = SIGNAL.load(Ordering::SeqCst);
    stderr_line!(
        "error: interrupted by {}; outputs already written are complete, nothing partial was left",
        signal_name(signal)
    );
    Some(Outcome::Interrupted(if signal == 0 {
        SIGINT
    } else {
        signal
    }))
}
