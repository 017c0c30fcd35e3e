//! What `Pipeline::load` reads from a bundle: the noise schedule, the
//! prompt embedding, and one session per component (provider fallback,
//! TensorRT profiles and engine caches), each checked against the manifest's ports.

use std::path::Path;

use super::gpu_plan;
use super::stages::Stage;
use super::static_shapes;
use super::{PipelineConfig, ProviderChoice};
use crate::bundle::{component, port, Bundle};
use crate::error::{Error, Result};
use crate::npy;
use crate::runtime::{cache_dir, Provider, Runtime, SessionOptions, TensorRtOptions};
use crate::schedule::NoiseSchedule;

/// Most training timesteps a bundle's schedule may have (the models use 1000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// The bundle's noise schedule ([`NoiseSchedule::from_spec`]), refused as
/// the bundle's fault when it would be computed for more than
/// [`MAX_TRAIN_TIMESTEPS`] steps (a hostile manifest must not make a huge
/// allocation) or when a computed value falls outside (0, 1] (NaN betas).
pub fn noise_schedule(bundle: &Bundle) -> Result<NoiseSchedule> {
    let spec = &bundle.manifest().schedule;
    let fail = |reason: String| Error::bundle(bundle.root(), format!("schedule: {reason}"));
    if spec.num_train_timesteps > MAX_TRAIN_TIMESTEPS {
        return Err(fail(format!(
            "num_train_timesteps is {}, over {MAX_TRAIN_TIMESTEPS}",
            spec.num_train_timesteps
        )));
    }
    if spec.alphas_cumprod.len() > MAX_TRAIN_TIMESTEPS {
        return Err(fail(format!(
            "alphas_cumprod lists {} values, over {MAX_TRAIN_TIMESTEPS}",
            spec.alphas_cumprod.len()
        )));
    }
    let schedule = NoiseSchedule::from_spec(spec).map_err(|e| fail(e.to_string()))?;
    // from_spec checks listed values; computed ones are checked the same way.
    NoiseSchedule::from_alphas_cumprod(schedule.alphas_cumprod().to_vec())
        .map_err(|e| fail(format!("{e}; check beta_start and beta_end")))
}

/// Largest prompt embedding file read (a [1, 77, 1024] float32 one is 315 KB).
const MAX_PROMPT_EMBEDS_BYTES: u64 = 64 << 20;

pub(super) fn load_prompt_embeds(
    bundle: &Bundle,
    replacement: Option<&Path>,
) -> Result<(Vec<f32>, [usize; 3])> {
    let path = match replacement {
        Some(path) => path.to_path_buf(),
        None => bundle.resolve(&bundle.manifest().prompt.embeds_file)?,
    };
    // A file given with --prompt-embeds is the user's, not the bundle's.
    let fail = |reason: String| match replacement {
        Some(_) => Error::PromptEmbeds {
            path: path.clone(),
            reason,
        },
        None => Error::bundle(&path, format!("prompt embedding: {reason}")),
    };
    let bytes = {
        use std::io::Read as _;
        crate::image::io::check_input_file(&path).map_err(|e| fail(e.to_string()))?;
        let file = crate::image::io::open_regular(&path).map_err(|e| fail(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_PROMPT_EMBEDS_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_PROMPT_EMBEDS_BYTES {
            return Err(fail(format!(
                "larger than {} MiB; a prompt embedding is [1, tokens, dim] floats",
                MAX_PROMPT_EMBEDS_BYTES >> 20
            )));
        }
        bytes
    };
    let expected = &bundle.manifest().prompt.shape;
    let (header, _) = npy::parse_header(&bytes).map_err(|e| fail(e.to_string()))?;
    let shape = header.shape.clone();
    if shape.len() != 3
        || shape[0] != 1
        || shape[1] == 0
        || shape[1] > 4096
        || shape[2] != expected[2]
    {
        return Err(fail(format!(
            "shape {shape:?}; the model needs [1, tokens, {}] with 1..4096 tokens",
            expected[2]
        )));
    }
    check_prompt_tokens(bundle, &shape).map_err(fail)?;
    let array = npy::parse_npy(&bytes).map_err(|e| fail(e.to_string()))?;
    if let Some(index) = array.iter().position(|v| !v.is_finite()) {
        return Err(fail(format!(
            "value {index} is {}; every value must be a finite number",
            array.iter().nth(index).copied().unwrap_or(f32::NAN)
        )));
    }
    Ok((
        array.iter().copied().collect(),
        [shape[0], shape[1], shape[2]],
    ))
}

/// `--prompt`'s embedding by the bundle's text encoder, checked as a
/// `--prompt-embeds` file is. The text encoder runs here even when the
/// networks run on a server.
pub(super) fn encode_prompt_text(
    runtime: &Runtime,
    bundle: &Bundle,
    text: &str,
    threads: usize,
) -> Result<crate::prompt::PromptEmbedding> {
    let embedding = crate::prompt::encode_prompt(runtime, bundle, text, threads)?;
    check_prompt_tokens(bundle, &embedding.shape).map_err(Error::Prompt)?;
    Ok(embedding)
}

/// A UNet exported with a fixed token count (77, as the authors' CLIP pads
/// to) takes only that many.
fn check_prompt_tokens(bundle: &Bundle, shape: &[usize]) -> std::result::Result<(), String> {
    let expected = &bundle.manifest().prompt.shape;
    let fixed_tokens = bundle
        .manifest()
        .components
        .get(component::UNET)
        .and_then(|unet| {
            unet.inputs
                .iter()
                .find(|p| p.name == port::ENCODER_HIDDEN_STATES)
        })
        .and_then(|port| port.shape.get(1))
        .and_then(serde_json::Value::as_u64);
    match fixed_tokens.filter(|&tokens| tokens as usize != shape[1]) {
        Some(tokens) => Err(format!(
            "shape {shape:?}; this bundle's UNet takes exactly {tokens} tokens: [1, {tokens}, {}]",
            expected.get(2).copied().unwrap_or(0)
        )),
        None => Ok(()),
    }
}

/// The largest side TensorRT profiles admit when the run did not say.
const DEFAULT_LARGEST_SIDE_PX: usize = 2048;

/// TensorRT's settings for one graph: the profile of what the run sends
/// ([`gpu_plan`]) and its own engine cache folder under `<cache>/trt/`.
fn tensorrt_options(
    bundle: &Bundle,
    component: &str,
    config: &PipelineConfig,
    prompt_shape: [usize; 3],
) -> TensorRtOptions {
    let sides = gpu_plan::stage_sides(
        config.shapes.tile_px as usize,
        config.shapes.tiling,
        match config.shapes.largest_side_px {
            0 => DEFAULT_LARGEST_SIDE_PX,
            side => side as usize,
        },
        // TensorRT is a GPU provider: fixed tiles unless the caller said otherwise
        config.fixed_tiles.unwrap_or(true),
    );
    let range = match component {
        component::UNET => sides.unet,
        component::VAE_ENCODER | component::VAE_ENCODER_TILED => sides.encoder,
        _ => sides.decoder,
    };
    let profile = gpu_plan::profile_shapes(
        component,
        range,
        bundle.manifest().latent_channels,
        prompt_shape,
        config.tile_batch,
    );
    let cache_dir = cache_dir().map(|cache| {
        gpu_plan::engine_cache_dir(
            &cache.join("trt"),
            component,
            bundle.component(component),
            &profile,
            config.tensorrt.fp16,
        )
    });
    TensorRtOptions {
        profile: Some(profile),
        cache_dir,
        ..config.tensorrt.clone()
    }
}

/// Says on the notice channel when TensorRT is about to build an engine (no
/// engine in the graph's cache folder yet): that takes minutes for the
/// SD-size UNet. Returns when the build started.
fn announce_engine_build(
    component: &str,
    options: &TensorRtOptions,
    notify: fn(&str),
) -> Option<std::time::Instant> {
    let folder = options.cache_dir.as_ref()?;
    let cached = std::fs::read_dir(folder).ok().is_some_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".engine"))
    });
    if cached {
        return None;
    }
    if let Err(error) = std::fs::create_dir_all(folder) {
        notify(&format!(
            "warning: cannot create the TensorRT cache {}: {error}; engines will be rebuilt every run",
            folder.display()
        ));
    }
    let shapes = options.profile.as_ref().map_or("", |p| p.2.as_str());
    notify(&format!(
        "building the TensorRT engine for {component} (up to {shapes}); this can take minutes, once: it is cached in {}",
        folder.display()
    ));
    Some(std::time::Instant::now())
}

/// Graphs at least this big (weights file included) get a notice when
/// their optimized graph is first written to the cache.
const CACHE_NOTICE_BYTES: u64 = 256 << 20;

/// Says so when a big graph is about to be optimized and cached for the
/// first time (a slower start, and a copy of its weights on disk).
fn announce_graph_caching(
    runtime: &Runtime,
    path: &Path,
    component: &str,
    options: &SessionOptions,
    notify: fn(&str),
) {
    let Some(entry) = runtime.graph_cache_entry(path, options) else {
        return;
    };
    if entry.graph().is_some() {
        return;
    }
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let weights = path.with_file_name(format!(
        "{}.data",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let bytes = size(path) + size(&weights);
    if bytes >= CACHE_NOTICE_BYTES {
        notify(&format!(
            "optimizing {component} for this CPU once ({:.1} GB kept in {}; {}=0 turns this off)",
            bytes as f64 / 1e9,
            entry.folder.display(),
            crate::runtime::graph_cache::GRAPH_CACHE_ENV
        ));
    }
}

/// The one shape `component` is opened for on `provider`, if any: main
/// graphs only ([`static_shapes`]), when `--static-shapes` applies there and
/// every call of the runs has one shape. The tiled-VAE graphs also take a
/// whole-image sample of another shape: never pinned.
fn fixed_shape_for(
    component: &str,
    provider: Provider,
    config: &PipelineConfig,
) -> Option<(usize, usize)> {
    let main = [
        component::VAE_ENCODER,
        component::UNET,
        component::VAE_DECODER,
    ];
    let on_gpu = provider != Provider::Cpu;
    if !main.contains(&component) || !config.static_shapes.applies(provider) {
        return None;
    }
    static_shapes::network_shape(
        config.shapes.tile_px,
        config.shapes.tiling,
        // as Pipeline::uses_fixed_tiles decides it for a stage on `provider`
        config.fixed_tiles.unwrap_or(on_gpu),
        config.shapes.exact_px,
    )
}

/// Opens one graph on the first usable provider. `pin_shape`: the graph
/// may be opened for the runs' one shape ([`fixed_shape_for`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn open_stage(
    runtime: &Runtime,
    bundle: &Bundle,
    path: &Path,
    component: &str,
    config: &PipelineConfig,
    prompt_shape: [usize; 3],
    fallbacks: &mut Vec<String>,
    pin_shape: bool,
) -> Result<Stage> {
    // the three main graphs of a --fusions cuda bundle hold CUDA-only operators (the tiled VAE graphs do not)
    let cuda_only = bundle.manifest().needs_cuda() && component::MAIN.contains(&component);
    let candidates: Vec<Provider> = match config.provider {
        // fused graphs are made for the CUDA provider: under TensorRT they would be cut into many engines
        ProviderChoice::Auto if cuda_only => {
            vec![Provider::Cuda, Provider::TensorRt, Provider::Cpu]
        }
        ProviderChoice::Auto => Provider::PREFERENCE.to_vec(),
        ProviderChoice::Only(provider) => vec![provider],
    };
    let mut last_error = None;
    for provider in candidates {
        if provider == Provider::Cpu && cuda_only {
            // ONNX Runtime's own refusal names one node and no remedy
            let reason = match (config.provider, &last_error) {
                (ProviderChoice::Only(_), _) => "--provider cpu was asked for".to_string(),
                (ProviderChoice::Auto, Some(error)) => {
                    format!("the GPU provider could not open {component}: {error}")
                }
                (ProviderChoice::Auto, None) => {
                    let unusable: Vec<&str> = fallbacks
                        .iter()
                        .filter_map(|note| note.strip_prefix("auto: "))
                        .collect();
                    format!("no GPU provider is usable here ({})", unusable.join("; "))
                }
            };
            return Err(Error::NeedsCuda {
                path: bundle.root().to_path_buf(),
                reason,
            });
        }
        if provider != Provider::Cpu {
            if let Err(reason) = runtime.probe_provider(provider, config.device_id) {
                if config.provider == ProviderChoice::Auto {
                    let note = format!("auto: {provider} not usable: {reason}");
                    if !fallbacks.contains(&note) {
                        fallbacks.push(note);
                    }
                    continue;
                }
                return Err(Error::ProviderUnavailable {
                    provider: provider.to_string(),
                    reason,
                });
            }
        }
        let tensorrt = if provider == Provider::TensorRt {
            tensorrt_options(bundle, component, config, prompt_shape)
        } else {
            config.tensorrt.clone()
        };
        let mut fixed_px = fixed_shape_for(component, provider, config).filter(|_| pin_shape);
        // a --tile-batch group may end with fewer tiles: the batch stays free
        let batch = (config.tile_batch <= 1).then_some(1);
        let fixed_dims = fixed_px.map_or_else(Vec::new, |px| {
            static_shapes::dimension_overrides(bundle.component(component), px, batch)
        });
        // CUDA graphs: CUDA only, every dimension pinned (the batch too)
        let cuda_graph = config.cuda_graph
            && provider == Provider::Cuda
            && fixed_px.is_some()
            && batch.is_some();
        let mut options = SessionOptions {
            provider,
            device_id: config.device_id,
            threads: config.threads,
            tf32: config.tf32,
            conv_search: config.conv_search,
            tensorrt,
            io_binding: config.io_binding,
            graph_sha256: Some(bundle.component(component).sha256.clone()),
            tile_batch: config.tile_batch,
            fixed_dims,
            cuda_options: config.cuda_options.clone(),
            cuda_graph,
            // device memory needs every output's shape: pinned graphs only
            device_io: config
                .device_io
                .filter(|_| fixed_px.is_some() && batch.is_some()),
            ..SessionOptions::default()
        };
        let engine_build = (provider == Provider::TensorRt)
            .then(|| announce_engine_build(component, &options.tensorrt, config.notify));
        announce_graph_caching(runtime, path, component, &options, config.notify);
        let mut opened = runtime.session(path, &options);
        // a broken graph file fails alike in every setting: no retries then
        let retry = |opened: &Result<crate::runtime::ModelSession>| matches!(opened, Err(error) if !matches!(error, Error::Model { .. }));
        if let (true, true, Err(error)) = (options.cuda_graph, retry(&opened), &opened) {
            (config.notify)(&format!(
                "{component}: CUDA graphs refused ({error}); opening it without them"
            ));
            options.cuda_graph = false;
            opened = runtime.session(path, &options);
        }
        if let (false, true, Err(error)) = (options.fixed_dims.is_empty(), retry(&opened), &opened)
        {
            // never worse than before --static-shapes: free dimensions again
            (config.notify)(&format!(
                "{component}: could not be opened for one shape ({error}); opening it for any shape"
            ));
            options.fixed_dims.clear();
            options.device_io = None;
            fixed_px = None;
            opened = runtime.session(path, &options);
        }
        if let (Some(Some(start)), Ok(_)) = (engine_build, &opened) {
            (config.notify)(&format!(
                "TensorRT engine for {component} built in {:.1} s",
                start.elapsed().as_secs_f64()
            ));
        }
        match opened {
            Ok(session) => {
                return Ok(Stage {
                    session: Box::new(session),
                    provider,
                    fixed_px,
                    cuda_graph: options.cuda_graph,
                })
            }
            Err(error) if config.provider == ProviderChoice::Auto && provider != Provider::Cpu => {
                fallbacks.push(format!("{component}: {provider} failed: {error}"));
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Ort(format!("{component}: no provider could open it"))))
}
