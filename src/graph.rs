//! A network graph as the pipeline sees it: named inputs in, named outputs
//! out. An ONNX Runtime session ([`crate::runtime::ModelSession`]) is one; a
//! model on a Triton server ([`crate::remote::RemoteModel`]) is another.

use crate::error::Result;
use crate::runtime::{InputTensor, ModelSession, OutputTensor, PortInfo};

/// One runnable graph.
pub trait Graph: Send {
    /// The graph's inputs.
    fn inputs(&self) -> &[PortInfo];
    /// The graph's outputs.
    fn outputs(&self) -> &[PortInfo];
    /// Whether every input and output is held in device memory at a fixed
    /// address (what CUDA graphs need).
    fn holds_io_on_device(&self) -> bool {
        false
    }
    /// Sets an input that every following run gets without naming it.
    fn set_constant(&mut self, name: &str, tensor: InputTensor<'_>) -> Result<()>;
    /// Runs the graph on named inputs (and the constants); returns the
    /// named outputs, in order.
    fn run(
        &mut self,
        inputs: &[(&str, InputTensor<'_>)],
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>>;
    /// Runs the graph once per entry of `runs` (the tiles of one group);
    /// the outputs in the same order. One after another unless the graph
    /// can have several runs in flight (a server).
    fn run_group(
        &mut self,
        runs: &[Vec<(&str, InputTensor<'_>)>],
        output_names: &[&str],
    ) -> Result<Vec<Vec<OutputTensor>>> {
        runs.iter()
            .map(|inputs| self.run(inputs, output_names))
            .collect()
    }
}

impl Graph for ModelSession {
    fn inputs(&self) -> &[PortInfo] {
        ModelSession::inputs(self)
    }

    fn outputs(&self) -> &[PortInfo] {
        ModelSession::outputs(self)
    }

    fn holds_io_on_device(&self) -> bool {
        ModelSession::holds_io_on_device(self)
    }

    fn set_constant(&mut self, name: &str, tensor: InputTensor<'_>) -> Result<()> {
        ModelSession::set_constant(self, name, tensor)
    }

    fn run(
        &mut self,
        inputs: &[(&str, InputTensor<'_>)],
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        ModelSession::run(self, inputs, output_names)
    }

    fn run_group(
        &mut self,
        runs: &[Vec<(&str, InputTensor<'_>)>],
        output_names: &[&str],
    ) -> Result<Vec<Vec<OutputTensor>>> {
        ModelSession::run_group(self, runs, output_names)
    }
}
