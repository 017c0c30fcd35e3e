//! `tadsr-edge prompt`: a text as the bundle's tokenizer splits it and, with
//! `-o`, its embedding by the bundle's text encoder written as a `.npy` that
//! `run --prompt-embeds` reads (for a bundle or a machine without the text
//! encoder, or a Triton client that should not hold it).

use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use tadsr_edge::bundle::{Bundle, HashCheck};
use tadsr_edge::image::write::write_file_atomically;
use tadsr_edge::npy::{encode_npy, NpyDtype};
use tadsr_edge::prompt::{bundle_tokenizer, truncation_note, Encoding, PromptEncoder};
use tadsr_edge::runtime::Runtime;
use tadsr_edge::Error;

use super::signals::{install_signal_handlers, interrupted};
use super::{default_model_dir, escape_controls, print_line, ExitNow, Outcome};
use crate::args::PromptArgs;

/// `-o`'s checks before anything is computed: a `.npy` name in an existing
/// folder, not a folder or a special file.
fn check_output(path: &Path) -> Result<(), Error> {
    let invalid = |reason: String| Err(Error::InvalidOption(reason));
    let shown = path.display();
    if path.extension().and_then(|e| e.to_str()) != Some("npy") {
        return invalid(format!("-o {shown}: give a .npy file name"));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return invalid(format!("-o {shown} is a folder; give a .npy file name"))
        }
        Ok(meta) if !meta.is_file() && !meta.file_type().is_symlink() => {
            return invalid(format!("-o {shown} is not a regular file"))
        }
        _ => {}
    }
    let folder = tadsr_edge::naming::parent_folder(path);
    if !folder.is_dir() {
        return invalid(format!(
            "-o {shown}: the folder {} does not exist",
            folder.display()
        ));
    }
    Ok(())
}

/// `5 token(s): a|photo|of|a|cat (ids 49406 320 1125 539 320 2368 49407, then 70 x 0: padding to 77)`
fn describe(encoding: &Encoding, token_texts: &[String]) -> String {
    let ids = &encoding.ids;
    let shown: Vec<String> = ids[..ids.len() - encoding.padding]
        .iter()
        .map(i64::to_string)
        .collect();
    format!(
        "{} token(s){}: {} (ids {}{})",
        encoding.text_tokens,
        if encoding.dropped_tokens > 0 {
            format!(" kept, {} dropped", encoding.dropped_tokens)
        } else {
            String::new()
        },
        escape_controls(&token_texts.join("|")),
        shown.join(" "),
        match (encoding.padding, ids.last()) {
            (0, _) | (_, None) => String::new(),
            (n, Some(pad)) => format!(", then {n} x {pad}: padding to {}", ids.len()),
        }
    )
}

pub fn prompt(
    ort_lib: Option<&Path>,
    args: &PromptArgs,
    exit_now: ExitNow,
) -> anyhow::Result<Outcome> {
    if let Some(output) = &args.output {
        check_output(output)?;
        install_signal_handlers(exit_now)?;
    }
    let model_dir = args.model.clone().unwrap_or_else(default_model_dir);
    // every file checked as by `run` (the tokenizer too: an edited vocabulary
    // gives other ids); files unchanged since their last check are not read again
    let bundle = Bundle::open_with(&model_dir, HashCheck::Remembered)
        .with_context(|| "cannot use the bundle")?;
    // the tokenizer alone without -o; with it, the encoder's (read once)
    let (encoding, token_texts, written) = match &args.output {
        None => {
            let tokenizer = bundle_tokenizer(&bundle)?;
            let encoding = tokenizer
                .encode(&args.text)
                .map_err(|e| Error::Prompt(e.to_string()))?;
            let token_texts = tokenizer.token_texts(encoding.text_ids());
            (encoding, token_texts, None)
        }
        Some(output) => {
            let mut encoder =
                PromptEncoder::open(Runtime::global(ort_lib)?, &bundle, args.threads)?;
            let embedding = encoder.encode(&args.text)?;
            if let Some(outcome) = interrupted() {
                return Ok(outcome);
            }
            let array = ndarray::ArrayViewD::from_shape(&embedding.shape[..], &embedding.values)
                .context("the embedding's shape")?;
            let bytes = encode_npy(&array, NpyDtype::Float32);
            write_file_atomically(output, |writer| {
                std::io::Write::write_all(writer, &bytes).map_err(|e| e.to_string())
            })?;
            let token_texts = encoder
                .tokenizer()
                .token_texts(embedding.encoding.text_ids());
            (
                embedding.encoding,
                token_texts,
                Some((output.clone(), embedding.shape)),
            )
        }
    };
    if let Some(note) = truncation_note(&encoding) {
        stderr_line!("warning: {note}");
    }
    if args.json {
        print_line(json!({
            "text": args.text,
            "model": bundle.root(),
            "ids": encoding.ids,
            "tokens": token_texts,
            "text_tokens": encoding.text_tokens,
            "dropped_tokens": encoding.dropped_tokens,
            "output": written.as_ref().map(|(path, _)| path),
            "shape": written.as_ref().map(|(_, shape)| shape),
        }))?;
    } else {
        print_line(format!(
            "{:?}: {}",
            escape_controls(&args.text),
            describe(&encoding, &token_texts)
        ))?;
        if let Some((path, shape)) = written {
            print_line(format!(
                "wrote {}: the embedding, {shape:?} float32 (use it with run --prompt-embeds)",
                path.display()
            ))?;
        }
    }
    Ok(interrupted().unwrap_or(Outcome::Done))
}
