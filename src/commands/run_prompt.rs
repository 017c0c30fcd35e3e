//! What `run` conditions the UNet on: the bundle's default, a
//! `--prompt-embeds` file, `--prompt TEXT`, or with `--prompt-dir DIR` one
//! text per image (the layout of the `txt/` folder the authors' test script
//! writes). The checks before anything runs, the prompt file of an input,
//! and the per-image conditioning of a batch.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;

use tadsr_edge::bundle::{component, Bundle, HashCheck};
use tadsr_edge::naming::{self, shown, OutputTarget};
use tadsr_edge::pipeline::Pipeline;
use tadsr_edge::prompt::{
    bundle_tokenizer, tokenizer::MAX_TEXT_BYTES, truncation_note, PromptEncoder,
};
use tadsr_edge::runtime::{Provider, Runtime};
use tadsr_edge::Error;

use super::default_model_dir;
use super::run::json_path;
use super::tile_policy::TilePolicy;
use crate::args::RunArgs;

/// `--prompt` and `--prompt-dir` checked before anything is computed (the
/// tokenizer needs no model): a bundle without a text encoder or a
/// tokenizer this runtime cannot read is a usage error at once, also under
/// `--dry-run`; a `--prompt` too long for the text encoder is a warning line.
pub(super) fn check_prompt(args: &RunArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.prompt_dir {
        if !dir.is_dir() {
            return Err(Error::InvalidOption(format!(
                "--prompt-dir {}: not a folder; give the folder of NAME.txt prompt files",
                shown(dir)
            ))
            .into());
        }
    }
    if args.prompt.is_none() && args.prompt_dir.is_none() {
        return Ok(());
    }
    let model_dir = args.model.clone().unwrap_or_else(default_model_dir);
    let bundle = Bundle::open_with(&model_dir, HashCheck::Skip)?;
    let tokenizer = bundle_tokenizer(&bundle)?;
    if let Some(text) = &args.prompt {
        let encoding = tokenizer
            .encode(text)
            .map_err(|e| Error::Prompt(e.to_string()))?;
        if let Some(note) = truncation_note(&encoding) {
            stderr_line!("warning: {note}");
        }
    }
    Ok(())
}

/// `--prompt-dir`: the prompt file of `input` whose first output is
/// `first_output`: DIR, then the output's subfolder under `-o DIR`, then
/// the input's file name up to its first dot (as the authors' test script
/// names them), `.txt`.
pub(super) fn prompt_file(
    dir: &Path,
    output_folder: Option<&Path>,
    input: &Path,
    first_output: Option<&PathBuf>,
) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    let name = input.file_name().unwrap_or_default().as_bytes();
    let stem = name.split(|&b| b == b'.').next().unwrap_or_default();
    let mut file_name = std::ffi::OsStr::from_bytes(stem).to_os_string();
    file_name.push(".txt");
    let subfolder = match (output_folder, first_output) {
        (Some(folder), Some(output)) => naming::parent_folder(output)
            .strip_prefix(folder)
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        _ => PathBuf::new(),
    };
    dir.join(subfolder).join(file_name)
}

/// A prompt file's text: a regular file of UTF-8 text of at most
/// [`MAX_TEXT_BYTES`], a leading byte-order mark (some editors write one)
/// dropped.
pub(super) fn read_prompt_file(file: &Path) -> Result<String, String> {
    let text = tadsr_edge::regular_file::read_text_capped(file, MAX_TEXT_BYTES as u64)?;
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

/// What the UNet was conditioned on, for the JSON lines: the bundle's
/// default (its text when the manifest has it), a `--prompt-embeds` file, or
/// a `--prompt` text with its token counts.
pub(super) fn prompt_json(args: &RunArgs, pipeline: &Pipeline) -> serde_json::Value {
    match (
        &args.prompt,
        &args.prompt_embeds,
        pipeline.prompt_encoding(),
    ) {
        (Some(text), _, Some(encoding)) => json!({
            "source": "text",
            "text": text,
            "tokens": encoding.text_tokens,
            "dropped_tokens": encoding.dropped_tokens,
        }),
        (_, Some(file), _) => json!({"source": "file", "file": json_path(file)}),
        _ => json!({"source": "bundle", "text": pipeline.bundle().manifest().prompt.text}),
    }
}

/// What `--tile auto`'s budget names the memory of `--prompt-dir`'s text
/// encoder on the GPU.
pub(super) const TEXT_ENCODER_ON_GPU: &str = "the text encoder of --prompt-dir on the GPU";

/// Why an image could not be conditioned on its prompt file.
pub(super) enum PromptFailure {
    /// This input's file (missing, unreadable, a text that cannot be
    /// tokenized): its one error line; the batch goes on.
    Input(String),
    /// The text encoder itself failed: every input would, the batch stops.
    Batch(Error),
}

/// `--prompt-dir`'s state during a batch: the folder, the output folder
/// (for subfolders) and the text encoder (on the CPU, or on CUDA beside GPU
/// stages), shared by the workers.
pub(super) struct PromptDir {
    folder: PathBuf,
    output_folder: Option<PathBuf>,
    encoder: Mutex<PromptEncoder>,
}

impl PromptDir {
    /// With `--prompt-dir`: opens the text encoder where
    /// `Pipeline::text_encoder_options` says (CUDA beside GPU stages, else
    /// the CPU) and takes its graph's bytes off `--tile auto`'s budget there
    /// (it stays loaded beside the stages); None without.
    pub(super) fn open(
        args: &RunArgs,
        ort_lib: Option<&Path>,
        pipeline: &Pipeline,
        target: &OutputTarget,
        tile_policy: &mut TilePolicy,
    ) -> anyhow::Result<Option<PromptDir>> {
        let Some(folder) = &args.prompt_dir else {
            return Ok(None);
        };
        let runtime = Runtime::global(ort_lib)?;
        let options = pipeline.text_encoder_options();
        let provider = options.provider;
        let encoder = match PromptEncoder::open_with(runtime, pipeline.bundle(), options) {
            // where it runs is our choice, not the user's: the CPU still encodes
            Err(error) if provider != Provider::Cpu => {
                if !args.quiet {
                    stderr_line!(
                        "note: --prompt-dir: the text encoder could not be opened on {provider} ({error}); it runs on the CPU"
                    );
                }
                PromptEncoder::open(runtime, pipeline.bundle(), args.threads)?
            }
            opened => opened?,
        };
        if let Some(bytes) = pipeline.bundle().graph_file_bytes(component::TEXT_ENCODER) {
            if encoder.provider() == Provider::Cpu {
                tile_policy.reserve_host(bytes, "the text encoder of --prompt-dir");
            } else {
                tile_policy.reserve_device(bytes, TEXT_ENCODER_ON_GPU);
            }
        }
        Ok(Some(PromptDir {
            folder: folder.clone(),
            output_folder: match target {
                OutputTarget::Dir { folder, .. } => Some(folder.clone()),
                OutputTarget::File(_) => None,
            },
            encoder: Mutex::new(encoder),
        }))
    }

    /// Where the text encoder runs.
    pub(super) fn provider(&self) -> Option<Provider> {
        self.encoder.lock().ok().map(|encoder| encoder.provider())
    }

    /// Conditions `pipeline` on the text of `input`'s prompt file; returns
    /// the JSON line's `prompt`.
    pub(super) fn condition(
        &self,
        pipeline: &mut Pipeline,
        input: &Path,
        output_paths: &[PathBuf],
    ) -> Result<serde_json::Value, PromptFailure> {
        let file = prompt_file(
            &self.folder,
            self.output_folder.as_deref(),
            input,
            output_paths.first(),
        );
        let text = read_prompt_file(&file).map_err(|reason| {
            PromptFailure::Input(format!(
                "prompt file {} (--prompt-dir): {reason}",
                shown(&file)
            ))
        })?;
        let (encoded, encoder_provider) = match self.encoder.lock() {
            Ok(mut encoder) => (encoder.encode(&text), Some(encoder.provider())),
            Err(_) => (Err(Error::Prompt("a worker panicked".into())), None),
        };
        let embedding = encoded.map_err(|error| match error {
            Error::Bundle { .. } | Error::OrtIn { .. } | Error::Ort(_) => {
                PromptFailure::Batch(error)
            }
            other => PromptFailure::Input(format!("prompt file {}: {other}", shown(&file))),
        })?;
        if let Some(note) = truncation_note(&embedding.encoding) {
            stderr_line!("warning: {}: {}: {note}", shown(input), shown(&file));
        }
        let json = json!({
            "source": "prompt_dir",
            "file": json_path(&file),
            "text": text,
            "tokens": embedding.encoding.text_tokens,
            "dropped_tokens": embedding.encoding.dropped_tokens,
            "text_encoder_on": encoder_provider.map(|provider| provider.to_string()),
        });
        pipeline
            .set_prompt_embedding(embedding)
            .map_err(PromptFailure::Batch)?;
        Ok(json)
    }
}
