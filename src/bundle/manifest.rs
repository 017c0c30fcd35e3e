//! `manifest.json` as types: every field with a closed set of values is an
//! enum (an unknown value is refused by name when the manifest is read), the
//! component and port names are constants. See docs/bundle-format.md and
//! docs/manifest.schema.json (tests/manifest_schema.rs keeps them agreeing).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::image::colorfix::ColorFix;

/// The manifest format version this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// A manifest field with a closed set of values: parsed into an enum, an
/// unknown value refused when the manifest is read, with the field's name
/// and the values allowed.
macro_rules! closed_set {
    ($(#[$doc:meta])* $name:ident in $field:literal {
        $($(#[$variant_doc:meta])* $variant:ident = $text:literal),+ $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_doc])* $variant),+
        }

        impl $name {
            /// Every value, in the order the format lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name the manifest uses.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> std::result::Result<Self, String> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == text)
                    .ok_or_else(|| {
                        let allowed: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                        format!("{} is {text:?}, expected one of {}", $field, allowed.join(", "))
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

closed_set! {
    /// `precision`: how the graphs' weights are stored.
    Precision in "precision" {
        Fp32 = "fp32",
        Fp16 = "fp16",
        /// int8 QDQ graphs (export/quantize.py) whose float ports stay float32.
        Int8Qdq = "int8-qdq",
    }
}

impl Precision {
    /// The element type of the graphs' float ports.
    pub fn float_dtype(self) -> TensorDType {
        match self {
            Precision::Fp32 | Precision::Int8Qdq => TensorDType::Float32,
            Precision::Fp16 => TensorDType::Float16,
        }
    }
}

closed_set! {
    /// A port's or the prompt embedding's `dtype`.
    TensorDType in "dtype" {
        Float32 = "float32",
        Float16 = "float16",
        Int64 = "int64",
    }
}

closed_set! {
    /// `vae_decoder.latent_input`: whether the decoder graph divides by the
    /// scaling factor itself.
    LatentInput in "latent_input" {
        Scaled = "scaled",
        Unscaled = "unscaled",
    }
}

closed_set! {
    /// `schedule.type`: the DDPM beta schedule.
    ScheduleType in "schedule.type" {
        ScaledLinear = "scaled_linear",
        Linear = "linear",
        SquaredcosCapV2 = "squaredcos_cap_v2",
        Sigmoid = "sigmoid",
        /// The checkpoint lists its betas.
        TrainedBetas = "trained_betas",
    }
}

closed_set! {
    /// A port's `layout` (docs/manifest.schema.json).
    PortLayout in "layout" {
        /// Images and latents.
        Nchw = "NCHW",
        /// The timestep.
        N = "N",
        /// (batch, tokens, width): encoder_hidden_states, last_hidden_state.
        Nld = "NLD",
        /// input_ids.
        Nl = "NL",
        /// (layer, group): GroupNorm statistics.
        Kg = "KG",
        /// group_norm_fixed.
        Scalar = "1",
    }
}

/// A port shape's named (dynamic) dimensions.
pub const NAMED_DIMS: [&str; 5] = ["batch", "height", "width", "latent_height", "latent_width"];

/// Component names: the graphs a bundle holds.
pub mod component {
    pub const VAE_ENCODER: &str = "vae_encoder";
    pub const UNET: &str = "unet";
    pub const VAE_DECODER: &str = "vae_decoder";
    /// Optional: the encoder taking shared GroupNorm statistics.
    pub const VAE_ENCODER_TILED: &str = "vae_encoder_tiled";
    /// Optional: the decoder taking shared GroupNorm statistics.
    pub const VAE_DECODER_TILED: &str = "vae_decoder_tiled";
    /// Optional: the text encoder (`--prompt`), with its tokenizer.
    pub const TEXT_ENCODER: &str = "text_encoder";
    /// The three every bundle has (and `--fusions cuda` rewrites).
    pub const MAIN: [&str; 3] = [VAE_ENCODER, UNET, VAE_DECODER];
}

/// Port names: the graphs' inputs and outputs.
pub mod port {
    pub const IMAGE: &str = "image";
    pub const TIMESTEP: &str = "timestep";
    pub const LATENT: &str = "latent";
    pub const LATENT_MEAN: &str = "latent_mean";
    pub const LATENT_LOGVAR: &str = "latent_logvar";
    pub const ENCODER_HIDDEN_STATES: &str = "encoder_hidden_states";
    pub const RESIDUAL: &str = "residual";
    pub const GROUP_NORM_MEAN: &str = "group_norm_mean";
    pub const GROUP_NORM_VAR: &str = "group_norm_var";
    pub const GROUP_NORM_FIXED: &str = "group_norm_fixed";
    pub const GROUP_NORM_MEAN_OUT: &str = "group_norm_mean_out";
    pub const GROUP_NORM_VAR_OUT: &str = "group_norm_var_out";
    pub const INPUT_IDS: &str = "input_ids";
    pub const LAST_HIDDEN_STATE: &str = "last_hidden_state";
}

/// One graph input or output as the manifest describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PortSpec {
    pub name: String,
    pub dtype: TensorDType,
    #[serde(default)]
    pub shape: Vec<serde_json::Value>,
    #[serde(default)]
    pub layout: Option<PortLayout>,
}

/// A file of the bundle with its hash.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HashedFile {
    pub file: String,
    pub sha256: String,
}

/// One ONNX graph of the bundle.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ComponentSpec {
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub external_data: Vec<HashedFile>,
    pub inputs: Vec<PortSpec>,
    pub outputs: Vec<PortSpec>,
    /// Decoder only: `scaled` (the graph divides by the scaling factor) or `unscaled`.
    #[serde(default)]
    pub latent_input: Option<LatentInput>,
    /// Text encoder only: the tokenizer giving its `input_ids`.
    #[serde(default)]
    pub tokenizer: Option<TokenizerFile>,
}

/// `text_encoder.tokenizer`: a Hugging Face `tokenizers` file that
/// truncates and pads to `max_length` ids itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TokenizerFile {
    pub file: String,
    pub sha256: String,
    pub max_length: usize,
}

/// The noise schedule.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ScheduleSpec {
    #[serde(rename = "type")]
    pub kind: ScheduleType,
    pub beta_start: f64,
    pub beta_end: f64,
    pub num_train_timesteps: usize,
    #[serde(default)]
    pub alphas_cumprod: Vec<f64>,
}

/// The authors' defaults, as exported.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Defaults {
    pub timestep: u32,
    pub upscale: u32,
    pub process_size: u32,
    pub color_fix: ColorFix,
}

/// The default prompt embedding.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PromptSpec {
    pub embeds_file: String,
    pub sha256: String,
    pub shape: Vec<usize>,
    pub dtype: TensorDType,
    #[serde(default)]
    pub text: Option<String>,
}

/// One graph's measured memory (`memory.components.<name>`): the bytes its
/// session holds once created (`weights_bytes`), and the peak bytes more
/// while it runs on an image of `pixels` (upscaled) pixels, measured at a
/// few sizes (`activations`: `[pixels, bytes]` pairs, pixels increasing).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageMemory {
    pub weights_bytes: u64,
    pub activations: Vec<(u64, u64)>,
}

/// `memory`: what the exporter measured (export/memory.py), used by
/// `--tile auto`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MemoryFigures {
    pub measured_with: String,
    #[serde(default)]
    pub output_sides_px: Vec<u32>,
    #[serde(default)]
    pub import_bytes: u64,
    pub components: BTreeMap<String, StageMemory>,
}

/// `vae_encoder_segments.group_norm`: the tiled encoder's GroupNorm layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupNormShape {
    pub layers: usize,
    pub groups: usize,
}

/// One graph of `vae_encoder_segments` (export/encoder_segments.py): its
/// ports by name; the graph says their types and shapes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSegmentSpec {
    /// The statistics row its GroupNorm observes; None on the last segment.
    #[serde(default)]
    pub layer: Option<usize>,
    pub file: String,
    pub sha256: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// `vae_encoder_segments`: `vae_encoder_tiled` cut at its GroupNorms, in the
/// order they run (`--tiling latent` beyond the authors' encoder tile).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSegments {
    pub group_norm: GroupNormShape,
    pub segments: Vec<EncoderSegmentSpec>,
}

/// Port names of the encoder segments besides the tiled encoder's.
pub mod segment_port {
    /// Prefix of the activations one segment hands to later ones.
    pub const STATE_PREFIX: &str = "state_";
    /// What a segment's GroupNorm observed, pooled over the batch: `[groups]`.
    pub const LAYER_MEAN: &str = "group_norm_mean_layer";
    pub const LAYER_VAR: &str = "group_norm_var_layer";
}

/// `manifest.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    #[serde(default)]
    pub name: Option<String>,
    pub precision: Precision,
    pub components: BTreeMap<String, ComponentSpec>,
    /// Optional: the tiled encoder cut at its GroupNorms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae_encoder_segments: Option<EncoderSegments>,
    pub latent_channels: usize,
    pub vae_scale_factor: usize,
    pub scaling_factor: f32,
    #[serde(default)]
    pub cross_attention_dim: Option<usize>,
    pub schedule: ScheduleSpec,
    pub defaults: Defaults,
    pub prompt: PromptSpec,
    #[serde(default)]
    pub provenance: serde_json::Value,
    /// Measured memory of the graphs; None in bundles exported before it.
    #[serde(default)]
    pub memory: Option<MemoryFigures>,
}

impl Manifest {
    /// How the exporter wrote the main graphs' GroupNorms
    /// (`provenance.group_norm`): `rowwise` (also when absent: bundles
    /// written before the option) or `instance`.
    pub fn group_norm_form(&self) -> &str {
        self.provenance
            .get("group_norm")
            .and_then(|v| v.as_str())
            .unwrap_or("rowwise")
    }

    /// How the exporter wrote attention (`provenance.attention`): `onnx`
    /// (also when absent) or `fused`.
    pub fn attention_form(&self) -> &str {
        self.provenance
            .get("attention")
            .and_then(|v| v.as_str())
            .unwrap_or("onnx")
    }

    /// Which graph fusions the exporter applied (`provenance.fusions`):
    /// `none` (also when absent) or `cuda` (ONNX Runtime's CUDA-only fused
    /// operators: the bundle runs on CUDA, or TensorRT with CUDA behind it).
    pub fn fusions_form(&self) -> &str {
        self.provenance
            .get("fusions")
            .and_then(|v| v.as_str())
            .unwrap_or("none")
    }

    /// The graph forms must be ones this runtime knows: a newer exporter's
    /// form (fusions for another device, say) is refused by name here rather
    /// than by ONNX Runtime at a node.
    pub fn check_graph_forms(&self) -> std::result::Result<(), String> {
        let known: [(&str, &[&str]); 3] = [
            ("group_norm", &["rowwise", "instance"]),
            ("attention", &["onnx", "fused"]),
            ("fusions", &["none", "cuda"]),
        ];
        for (key, allowed) in known {
            match self.provenance.get(key) {
                None => {}
                Some(serde_json::Value::String(form)) if allowed.contains(&form.as_str()) => {}
                Some(other) => {
                    return Err(format!(
                        "provenance.{key} is {other}, which this tadsr-edge does not know (it reads {}); use the tadsr-edge that matches the exporter",
                        allowed.join(", ")
                    ))
                }
            }
        }
        Ok(())
    }

    /// Whether the main graphs hold operators that ONNX Runtime has on CUDA
    /// only, so that the CPU provider cannot open them.
    pub fn needs_cuda(&self) -> bool {
        self.fusions_form() == "cuda"
    }
}
