//! One entry point per subcommand (`run`, `bench`, `info`, `golden`). Each takes its
//! parsed arguments, uses the library, and returns an [`Outcome`] or an
//! error; `main.rs` alone turns those into exit codes.

pub mod bench;
pub mod golden;
pub mod info;
pub mod prompt;
pub mod run;
mod run_prompt;
pub mod signals;
pub mod tile_policy;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tadsr_edge::pipeline::ProviderChoice;
use tadsr_edge::runtime::Provider;

use crate::args::ProviderArg;

/// How a command ended, when it did not fail as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done.
    Done,
    /// At least one input failed (one line each); the others were written.
    SomeInputsFailed,
    /// Stopped cleanly by this signal number (SIGINT, SIGTERM, SIGHUP, ...).
    Interrupted(i32),
}

/// Ends the process at once with the code of `outcome` (the signal thread's
/// second-signal path); `main.rs` provides it, so the codes stay there.
pub type ExitNow = fn(Outcome) -> !;

/// Stdout's reader went away (`| head`): `main.rs` ends normally.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// Writes one line to stdout (never panics, unlike `println!`). A closed
/// pipe comes back as [`StdoutClosed`].
pub fn print_line(line: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
            _ => anyhow::Error::new(error).context("cannot write to stdout"),
        })
}

/// A message with its control characters escaped (`\n`, `\u{1b}`, ...),
/// so it stays one line and cannot drive the terminal.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The model folder when `--model` is not given.
pub fn default_model_dir() -> PathBuf {
    ["models/tadsr", "models/nano"]
        .into_iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("manifest.json").is_file())
        .unwrap_or_else(|| PathBuf::from("models/tiny"))
}

/// `--provider` as the library's choice.
pub fn provider_choice(arg: ProviderArg) -> ProviderChoice {
    match arg {
        ProviderArg::Auto => ProviderChoice::Auto,
        ProviderArg::Cpu => ProviderChoice::Only(Provider::Cpu),
        ProviderArg::Cuda => ProviderChoice::Only(Provider::Cuda),
        ProviderArg::Tensorrt => ProviderChoice::Only(Provider::TensorRt),
    }
}

/// Whether the networks will run on a GPU provider: `--provider cuda` or
/// `tensorrt`, or `auto` where the first provider that passes its probe
/// (TensorRT, then CUDA; the result is kept for loading) is one. `--tile
/// auto` then plans with the GPU's memory from the start, so the tile the
/// graphs or engines are built for is the one the images get.
pub fn plans_on_device(provider: ProviderArg, ort_lib: Option<&Path>, device: u32) -> bool {
    match provider {
        ProviderArg::Cuda | ProviderArg::Tensorrt => true,
        ProviderArg::Cpu => false,
        ProviderArg::Auto => tadsr_edge::runtime::Runtime::global(ort_lib).is_ok_and(|runtime| {
            runtime
                .usable_providers(device as i32)
                .first()
                .is_some_and(|first| *first != Provider::Cpu)
        }),
    }
}

/// A note when `--cuda-graph` was asked for and no graph runs as one (it
/// needs a graph opened for one shape on the CUDA provider); None
/// otherwise.
pub fn cuda_graph_note(
    requested: bool,
    pipeline: &tadsr_edge::pipeline::Pipeline,
) -> Option<String> {
    let applied = pipeline.cuda_graphs().iter().any(|(_, on)| *on);
    (requested && !applied).then(|| {
        "note: --cuda-graph is not applied: it needs the graphs on the CUDA provider opened for one shape \
         (--provider cuda, --static-shapes auto or on, every input of one size or a fixed --tile, --tile-batch 1)"
            .to_string()
    })
}
