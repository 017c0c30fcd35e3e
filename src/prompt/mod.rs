//! `--prompt` and `--prompt-dir`: a text turned into the prompt embedding
//! the UNet takes, by the bundle's own tokenizer ([`tokenizer`]) and text
//! encoder graph, run on the CPU ([`PromptEncoder`]: a 77-token pass, small
//! next to one image; once per run, or once per distinct text of a batch).

mod pretokenize;
pub mod tokenizer;
mod tokenizer_json;

pub use tokenizer::{Encoding, Tokenizer, TokenizerError};

use crate::bundle::{component, port, Bundle};
use crate::error::{Error, Result};
use crate::runtime::{InputTensor, Provider, Runtime, SessionOptions};

/// Largest tokenizer.json read (CLIP's is about 3.6 MB).
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

/// A prompt encoded: the embedding [1, tokens, width] and how the text was
/// tokenized.
#[derive(Debug, Clone)]
pub struct PromptEmbedding {
    pub values: Vec<f32>,
    pub shape: [usize; 3],
    pub encoding: Encoding,
}

fn no_text_encoder(bundle: &Bundle) -> Error {
    Error::Prompt(format!(
        "the bundle {} has no text encoder; export it with --text-encoder, or give --prompt-embeds FILE (a [1, 77, {}] .npy)",
        bundle.root().display(),
        bundle.manifest().prompt.shape.get(2).copied().unwrap_or(0)
    ))
}

/// Whether the bundle can encode `--prompt` text.
pub fn has_text_encoder(bundle: &Bundle) -> bool {
    bundle
        .manifest()
        .components
        .get(component::TEXT_ENCODER)
        .is_some_and(|spec| spec.tokenizer.is_some())
}

/// The bundle's tokenizer, read and checked against the text encoder's
/// input length.
pub fn bundle_tokenizer(bundle: &Bundle) -> Result<Tokenizer> {
    let spec = bundle
        .manifest()
        .components
        .get(component::TEXT_ENCODER)
        .ok_or_else(|| no_text_encoder(bundle))?;
    let file = spec
        .tokenizer
        .as_ref()
        .ok_or_else(|| no_text_encoder(bundle))?;
    let path = bundle.resolve(&file.file)?;
    let damaged = |reason: String| Error::bundle(&path, format!("tokenizer: {reason}"));
    let text =
        crate::regular_file::read_text_capped(&path, MAX_TOKENIZER_BYTES).map_err(damaged)?;
    let tokenizer = Tokenizer::from_json(&text).map_err(|e| damaged(e.0))?;
    if tokenizer.padded_length() != Some(file.max_length) {
        return Err(damaged(format!(
            "it pads to {:?} ids, the manifest says max_length {}",
            tokenizer.padded_length(),
            file.max_length
        )));
    }
    Ok(tokenizer)
}

/// The bundle's tokenizer and text encoder, open on the CPU (or, for
/// `--prompt-dir` beside stages on a GPU, on CUDA), for texts one after
/// another (`--prompt-dir`: one per image). Each distinct text is
/// encoded once: later requests for it are served from memory.
pub struct PromptEncoder {
    tokenizer: Tokenizer,
    session: crate::runtime::ModelSession,
    path: std::path::PathBuf,
    width: usize,
    cache: std::collections::HashMap<String, PromptEmbedding>,
    provider: Provider,
}

/// Most distinct texts kept encoded (a [1, 77, 1024] embedding is 315 KB).
const MAX_CACHED_TEXTS: usize = 256;

impl PromptEncoder {
    /// Reads the tokenizer and opens the text encoder with `threads`
    /// intra-op threads (0: one per core).
    pub fn open(runtime: &Runtime, bundle: &Bundle, threads: usize) -> Result<PromptEncoder> {
        let options = SessionOptions {
            threads,
            ..SessionOptions::default()
        };
        PromptEncoder::open_with(runtime, bundle, options)
    }

    /// Reads the tokenizer and opens the text encoder with `options` (the
    /// provider among them: see `Pipeline::text_encoder_options`).
    pub fn open_with(
        runtime: &Runtime,
        bundle: &Bundle,
        options: SessionOptions,
    ) -> Result<PromptEncoder> {
        let tokenizer = bundle_tokenizer(bundle)?;
        let spec = bundle.component(component::TEXT_ENCODER);
        let path = bundle.resolve(&spec.file)?;
        let options = SessionOptions {
            graph_sha256: Some(spec.sha256.clone()),
            ..options
        };
        let provider = options.provider;
        let session = runtime.session(&path, &options)?;
        // another graph in its place, or ports the manifest does not describe: the bundle's fault, said now
        crate::bundle::check_graph_ports(
            bundle,
            component::TEXT_ENCODER,
            session.inputs(),
            session.outputs(),
        )?;
        Ok(PromptEncoder {
            tokenizer,
            session,
            path,
            width: bundle.manifest().prompt.shape.get(2).copied().unwrap_or(0),
            cache: std::collections::HashMap::new(),
            provider,
        })
    }

    /// Where the text encoder runs.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The tokenizer in use.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// `text`'s embedding [1, tokens, width], checked: the width the UNet
    /// takes, every value finite.
    pub fn encode(&mut self, text: &str) -> Result<PromptEmbedding> {
        if let Some(known) = self.cache.get(text) {
            return Ok(known.clone());
        }
        let encoding = self
            .tokenizer
            .encode(text)
            .map_err(|e| Error::Prompt(e.to_string()))?;
        let ids_shape = [1, encoding.ids.len()];
        let mut outputs = self.session.run(
            &[(
                port::INPUT_IDS,
                InputTensor::Int64 {
                    shape: &ids_shape,
                    data: &encoding.ids,
                },
            )],
            &[port::LAST_HIDDEN_STATE],
        )?;
        let hidden = outputs.remove(0);
        let (path, width) = (&self.path, self.width);
        let [1, tokens, got_width] = hidden.shape[..] else {
            return Err(Error::bundle(
                path,
                format!(
                    "the text encoder gave shape {:?}, expected [1, tokens, {width}]",
                    hidden.shape
                ),
            ));
        };
        if got_width != width {
            return Err(Error::bundle(
                path,
                format!(
                    "the text encoder gives {got_width} values per token, the UNet takes {width}"
                ),
            ));
        }
        if let Some(index) = hidden.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::bundle(
                path,
                format!(
                    "the text encoder produced {} at element {index}; the graph is damaged or overflowed (an fp16 export?)",
                    hidden.data[index]
                ),
            ));
        }
        let embedding = PromptEmbedding {
            values: hidden.data,
            shape: [1, tokens, width],
            encoding,
        };
        if self.cache.len() >= MAX_CACHED_TEXTS {
            self.cache.clear();
        }
        self.cache.insert(text.to_string(), embedding.clone());
        Ok(embedding)
    }
}

/// `text` tokenized and run through the bundle's text encoder on the CPU
/// with `threads` intra-op threads (0: one per core); the text encoder is
/// closed again on return.
pub fn encode_prompt(
    runtime: &Runtime,
    bundle: &Bundle,
    text: &str,
    threads: usize,
) -> Result<PromptEmbedding> {
    PromptEncoder::open(runtime, bundle, threads)?.encode(text)
}

/// A warning line when the text was cut to fit the text encoder, else None.
pub fn truncation_note(encoding: &Encoding) -> Option<String> {
    (encoding.dropped_tokens > 0).then(|| {
        format!(
            "--prompt: the text is {} tokens, the text encoder takes {}: the last {} were dropped",
            encoding.text_tokens + encoding.dropped_tokens,
            encoding.text_tokens,
            encoding.dropped_tokens
        )
    })
}
