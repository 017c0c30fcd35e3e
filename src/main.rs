//! The `tadsr-edge` command line: a thin layer over the library, one way:
//! `args.rs` (what the user may type) -> `commands/` (one entry point per
//! subcommand) -> here. This file alone owns the exit codes:
//!
//! 0 success (a closed stdout, as under `| head`, is a normal end too);
//! 1 at least one input failed (the others were written);
//! 2 usage, model or runtime errors (nothing could run; [`Error::exit_code`]);
//! 128 + the signal after SIGINT (130), SIGTERM (143), SIGHUP (129) or another
//! signal that stops a run (`commands/signals.rs`).

/// `eprintln!` that cannot panic: a line for stderr, lost when stderr cannot
/// take it (a closed pipe, as under `2>&1 | head`; a full disk). std's
/// `eprintln!` panics then, which would end a batch because of a message.
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod args;
mod commands;

use std::process::ExitCode;

use clap::Parser as _;

use args::{Cli, Command};
use commands::Outcome;
use tadsr_edge::Error;

/// Exit code when some inputs failed.
const EXIT_INPUT_FAILED: u8 = 1;
/// Exit code for usage errors (clap's, before any library call).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // ONNX Runtime's own log would repeat our errors on stderr; keep only
    // fatal messages unless the user asked for more (ORT_LOG=warning...).
    // Set here, before any thread starts: the library never changes the
    // environment.
    if std::env::var_os("ORT_LOG").is_none() {
        std::env::set_var("ORT_LOG", "fatal");
    }
    // A file over the size limit (`ulimit -f`) would kill the process in
    // the middle of a write, leaving the temporary file; ignored, the write
    // fails with EFBIG and the input is reported like any failed write.
    // SAFETY: the handler does nothing, which is async-signal-safe.
    let _ = unsafe { signal_hook::low_level::register(signal_hook::consts::SIGXFSZ, || {}) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            if error.use_stderr() {
                // one line, as every error: the reason, clap's tip, where help is
                stderr_line!("{}", usage_error_line(&error.render().to_string()));
                return ExitCode::from(EXIT_USAGE);
            }
            // --help, --version; a failed print is `--help | head`: the
            // reader left, a normal end too
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
    };
    let ort_lib = cli.ort_lib.as_deref();
    let result = match &cli.command {
        Command::Info(args) => commands::info::info(ort_lib, args),
        Command::Bench(args) => commands::bench::bench(ort_lib, args),
        Command::Golden(args) => commands::golden::golden(ort_lib, args),
        Command::Prompt(args) => commands::prompt::prompt(ort_lib, args, exit_now),
        Command::Run(args) => commands::run::run(ort_lib, args, exit_now),
    };
    match result {
        Ok(outcome) => ExitCode::from(outcome_code(outcome)),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            stderr_line!("error: {}", one_line(&error));
            ExitCode::from(error_code(&error))
        }
    }
}

/// clap's usage error (reason, tip, usage, where to read more, over several
/// lines) as one line without the usage.
fn usage_error_line(rendered: &str) -> String {
    let mut joined = String::new();
    for line in rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("Usage:"))
    {
        if !joined.is_empty() {
            joined.push_str(if joined.ends_with(':') { " " } else { "; " });
        }
        joined.push_str(line);
    }
    joined
}

/// The exit code of a command that ran to its end.
fn outcome_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Done => 0,
        Outcome::SomeInputsFailed => EXIT_INPUT_FAILED,
        // 128 + the signal, as shells report a process killed by it.
        Outcome::Interrupted(signal) => 128u8.saturating_add(signal.clamp(0, 127) as u8),
    }
}

/// The exit code of a command that failed as a whole: the library's
/// mapping for its errors, usage/setup (2) for everything else.
fn error_code(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map_or(EXIT_USAGE, Error::exit_code)
}

/// Ends the process at once (a second signal): `_exit`, so no destructor
/// or ONNX Runtime thread can hold it up.
fn exit_now(outcome: Outcome) -> ! {
    signal_hook::low_level::exit(i32::from(outcome_code(outcome)))
}

/// Whether writing to stdout failed because its reader went away.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.downcast_ref::<commands::StdoutClosed>().is_some()
}

/// An error and its causes on one line (control characters escaped); a
/// cause whose text an outer message already holds is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    commands::escape_controls(&line)
}
