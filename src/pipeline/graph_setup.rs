//! How the main graphs are set up, and changing it mid-run: graphs opened
//! for one shape ([`super::static_shapes`]) are reopened for any shape when
//! a run sends another; graphs run as CUDA graphs are reopened without them
//! when a CUDA graph run fails. Plus what callers and tests can ask about it.

use super::stages::Stage;
use super::{open_component, static_shapes, Pipeline, RunOptions};
use crate::bundle::{check_graph_ports, component};
use crate::error::{Error, Result};
use crate::runtime::PortInfo;

/// The three main graphs, in pipeline order.
const MAIN: [&str; 3] = [
    component::VAE_ENCODER,
    component::UNET,
    component::VAE_DECODER,
];

impl Pipeline {
    fn main_stage(&self, component: &str) -> &Stage {
        match component {
            component::VAE_ENCODER => &self.encoder,
            component::UNET => &self.unet,
            _ => &self.decoder,
        }
    }

    fn main_stage_mut(&mut self, component: &str) -> &mut Stage {
        match component {
            component::VAE_ENCODER => &mut self.encoder,
            component::UNET => &mut self.unet,
            _ => &mut self.decoder,
        }
    }

    /// Closes main graph `component` and opens it again with the pipeline's
    /// configuration as it is now (`pin_shape`: it may be opened for the
    /// runs' one shape). The old session goes first, so memory never holds
    /// both.
    fn reopen_stage(&mut self, component: &'static str, pin_shape: bool) -> Result<()> {
        let provider = self.main_stage(component).provider;
        *self.main_stage_mut(component) = Stage::closed(provider);
        let reopened = open_component(
            &self.backend,
            &self.bundle,
            &self.config,
            self.prompt_shape,
            &mut self.fallbacks,
            component,
            pin_shape,
        )?;
        check_graph_ports(
            &self.bundle,
            component,
            reopened.session.inputs(),
            reopened.session.outputs(),
        )?;
        *self.main_stage_mut(component) = reopened;
        Ok(())
    }

    /// Reopens, for any shape, each main graph that was opened for one
    /// shape when this run sends it another (a `--tile auto` choice or an
    /// image size the load did not foresee). Once per graph.
    pub(super) fn unpin_other_shapes(
        &mut self,
        options: &RunOptions,
        height: usize,
        width: usize,
    ) -> Result<()> {
        let run_shape = static_shapes::network_shape(
            options.tile_px,
            options.tiling,
            self.uses_fixed_tiles(),
            Some((height as u32, width as u32)),
        );
        for component in MAIN {
            let Some((fixed_h, fixed_w)) = self.main_stage(component).fixed_px else {
                continue;
            };
            if run_shape == Some((fixed_h, fixed_w)) {
                continue;
            }
            (self.config.notify)(&format!(
                "{component} was opened for {fixed_w}x{fixed_h} inputs only (--static-shapes); this run sends other shapes: reopening it for any shape"
            ));
            self.reopen_stage(component, false)?;
        }
        Ok(())
    }

    /// Whether any main graph runs as a CUDA graph.
    pub(super) fn runs_cuda_graphs(&self) -> bool {
        MAIN.iter().any(|c| self.main_stage(c).cuda_graph)
    }

    /// Errors a failed CUDA graph capture or replay can give (ONNX Runtime's
    /// own, and NaN or infinity: a replay that never wrote an output leaves
    /// the device memory as it was allocated), not the input's or the
    /// user's. A real fp16 overflow fails again without CUDA graphs.
    pub(super) fn may_be_cuda_graph_fault(error: &Error) -> bool {
        matches!(
            error,
            Error::Ort(_) | Error::OrtApi(_) | Error::OrtIn { .. } | Error::NonFinite { .. }
        )
    }

    /// Reopens every main graph that runs as a CUDA graph without it (the
    /// shape pinning stays), for the rest of this pipeline's life.
    pub(super) fn drop_cuda_graphs(&mut self) -> Result<()> {
        self.config.cuda_graph = false;
        for component in MAIN {
            if self.main_stage(component).cuda_graph {
                self.reopen_stage(component, true)?;
            }
        }
        Ok(())
    }

    /// The one shape (height, width in pixels) each main graph was opened
    /// for, None for any shape (`--static-shapes`).
    pub fn fixed_shapes(&self) -> [(&'static str, Option<(usize, usize)>); 3] {
        MAIN.map(|c| (c, self.main_stage(c).fixed_px))
    }

    /// Whether each main graph holds its inputs and outputs in device
    /// memory at fixed addresses (with `--cuda-graph`).
    pub fn io_on_device(&self) -> [(&'static str, bool); 3] {
        MAIN.map(|c| (c, self.main_stage(c).session.holds_io_on_device()))
    }

    /// Whether each main graph runs as a CUDA graph (`--cuda-graph`).
    pub fn cuda_graphs(&self) -> [(&'static str, bool); 3] {
        MAIN.map(|c| (c, self.main_stage(c).cuda_graph))
    }

    /// The inputs of a main graph as its session reports them (shapes
    /// included: -1 where free).
    pub fn graph_inputs(&self, component: &str) -> Option<&[PortInfo]> {
        MAIN.contains(&component)
            .then(|| self.main_stage(component).session.inputs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_onnx_runtime_errors_retry_without_cuda_graphs() {
        assert!(Pipeline::may_be_cuda_graph_fault(&Error::Ort(
            "CUDA failure 900: operation not permitted when stream is capturing".into()
        )));
        assert!(Pipeline::may_be_cuda_graph_fault(&Error::NonFinite {
            stage: "unet",
            provider: "cuda".into(),
            value: f32::NAN,
            index: 0,
            hint: "",
        }));
        // the user's stop, a bad option or a bad input are never retried
        assert!(!Pipeline::may_be_cuda_graph_fault(&Error::Interrupted));
        assert!(!Pipeline::may_be_cuda_graph_fault(&Error::InvalidOption(
            "--tile 7".into()
        )));
        assert!(!Pipeline::may_be_cuda_graph_fault(&Error::Input(
            "not an image".into()
        )));
    }
}
