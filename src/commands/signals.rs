//! Signals during `tadsr-edge run`: the first SIGINT, SIGTERM or SIGHUP
//! sets the cancel flag the pipeline checks between tiles, so the batch
//! ends cleanly; a second stops the process at once after removing the
//! temporary file of a write in progress.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use anyhow::Context as _;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use tadsr_edge::image::write;

use super::{ExitNow, Outcome};

/// Set by the first signal: the pipeline stops at its next tile, the batch at its next input.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The signal number that stopped the run, 0 while none came.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Signals received so far.
static SIGNALS_SEEN: AtomicUsize = AtomicUsize::new(0);

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// SIGINT, SIGTERM and SIGHUP: the first sets the cancel flag (in the signal
/// handler itself, so the run stops at the next tile however busy it is) and
/// the batch ends cleanly: outputs written so far are complete, the one
/// being computed is dropped. A second one stops the process at once, after
/// removing the temporary file of a write in progress.
pub fn install_signal_handlers(exit_now: ExitNow) -> anyhow::Result<()> {
    for signal in [SIGINT, SIGTERM, SIGHUP] {
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
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if SIGNALS_SEEN.load(Ordering::SeqCst) >= 2 {
                    let removed = write::remove_temporary_files();
                    super::run::remove_created_empty_folders();
                    let signal = SIGNAL.load(Ordering::SeqCst);
                    eprintln!(
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
    eprintln!(
        "error: interrupted by {}; outputs already written are complete, nothing partial was left",
        signal_name(signal)
    );
    Some(Outcome::Interrupted(if signal == 0 {
        SIGINT
    } else {
        signal
    }))
}
