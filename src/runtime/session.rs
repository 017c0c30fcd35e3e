//! One open ONNX graph: its ports, and runs on borrowed views (`TensorRef`,
//! no copies of f32 data; fp16 graphs get a converted buffer). Inputs that
//! stay the same over many runs (the prompt embedding, the timestep) are
//! set once as constants: on a GPU provider they are bound with ONNX
//! Runtime's I/O binding, which copies them to the device once, not per tile.
//! A group of tile runs can go as one batched run ([`super::batch`]). For
//! CUDA graphs every input and output lives in device memory at a fixed
//! address (`device_io.rs`).
//!
//! Over 500 lines: one type's four run paths (plain, I/O-bound, device
//! memory, batched) share its private state (session, constants, binding,
//! run options); the pure batch arithmetic lives in `batch.rs`, the device
//! tensors in `device_io.rs`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use half::f16;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, RunOptions, Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef, ValueType};

use super::batch;
use super::device_io::{DeviceIo, HostData};
use crate::error::{Error, Result};

/// Element type of a graph input or output, as the bundle manifest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    Float32,
    Float16,
    Int64,
    /// A type the bundle format does not use, by its ONNX name.
    Other(&'static str),
}

impl DType {
    /// The manifest's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Float16 => "float16",
            DType::Int64 => "int64",
            DType::Other(name) => name,
        }
    }
}

/// Name and element type of one graph input or output.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub name: String,
    pub dtype: DType,
    /// Dimensions as the graph declares them, -1 for free ones (fixed by
    /// dimension overrides where the session was opened with them).
    pub shape: Vec<i64>,
}

/// An input tensor handed to [`ModelSession::run`]. Float data is always f32
/// on our side; fp16 graphs get it converted here.
#[derive(Debug, Clone, Copy)]
pub enum InputTensor<'a> {
    Float { shape: &'a [usize], data: &'a [f32] },
    Int64 { shape: &'a [usize], data: &'a [i64] },
}

/// An output tensor: shape and f32 data (fp16 outputs are widened).
#[derive(Debug, Clone)]
pub struct OutputTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// An input that keeps its value over many runs, owned.
#[derive(Debug, Clone, PartialEq)]
enum ConstantData {
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
struct Constant {
    name: String,
    shape: Vec<usize>,
    data: ConstantData,
}

/// Each output's name, element type and shape.
type OutputShapes = Vec<(String, DType, Vec<usize>)>;

/// One open ONNX graph.
pub struct ModelSession {
    session: Session,
    inputs: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
    model: PathBuf,
    /// Inputs set once ([`ModelSession::set_constant`]).
    constants: Vec<Constant>,
    /// GPU providers: the I/O binding holding the constants on the device
    /// (None on the CPU, where a plain run borrows them without a copy).
    binding: Option<IoBinding>,
    /// Set when the CPU arena is returned to the system at the end of every
    /// run (`memory.enable_memory_arena_shrinkage`): a stage's activations
    /// are then not held while the next stage runs.
    run_options: Option<RunOptions>,
    /// Each input's name and whether its first axis is a dynamic batch.
    batch_axis: Vec<(String, bool)>,
    /// Runs of one group stacked into one batched run (`--tile-batch`).
    tile_batch: usize,
    /// Inputs and outputs in device memory at fixed addresses (CUDA
    /// graphs; [`super::device_io`]), with every output's shape.
    device_io: Option<(DeviceIo, OutputShapes)>,
    /// A constant changed since it was last copied to the device.
    constants_dirty: bool,
}

impl Drop for ModelSession {
    fn drop(&mut self) {
        // device tensors and the binding before the session they belong to
        self.device_io = None;
        self.binding = None;
    }
}

/// Where [`ModelSession`] keeps its inputs and outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPlacement {
    /// Plain runs on borrowed host data.
    Host,
    /// Constants in an I/O binding (copied to the device once).
    BoundConstants,
    /// Every input and output in device memory at a fixed address, bound
    /// once (CUDA graphs); `cuda`: the GPU's memory, else host memory.
    Device { cuda: bool, device_id: i32 },
}

fn port_info(name: &str, dtype: &ValueType) -> PortInfo {
    let shape = match dtype {
        ValueType::Tensor { shape, .. } => shape.iter().copied().collect(),
        _ => Vec::new(),
    };
    let dtype = match dtype {
        ValueType::Tensor { ty, .. } => match ty {
            TensorElementType::Float32 => DType::Float32,
            TensorElementType::Float16 => DType::Float16,
            TensorElementType::Int64 => DType::Int64,
            TensorElementType::Float64 => DType::Other("float64"),
            TensorElementType::Bfloat16 => DType::Other("bfloat16"),
            TensorElementType::Int32 => DType::Other("int32"),
            TensorElementType::Int16 => DType::Other("int16"),
            TensorElementType::Int8 => DType::Other("int8"),
            TensorElementType::Uint8 => DType::Other("uint8"),
            TensorElementType::Bool => DType::Other("bool"),
            TensorElementType::String => DType::Other("string"),
            _ => DType::Other("another tensor type"),
        },
        _ => DType::Other("not a tensor"),
    };
    PortInfo {
        name: name.to_string(),
        dtype,
        shape,
    }
}

impl ModelSession {
    pub(super) fn new(
        session: Session,
        model: &Path,
        placement: IoPlacement,
        shrink_cpu_arena: bool,
        tile_batch: usize,
        fixed_dims: &[(String, i64)],
    ) -> Result<Self> {
        let fail = |source| Error::OrtIn {
            path: model.to_path_buf(),
            source,
        };
        let use_binding = placement != IoPlacement::Host;
        let batch_axis = session
            .inputs()
            .iter()
            .map(|input| {
                let batched = match input.dtype() {
                    ValueType::Tensor { shape, .. } => shape.first().is_some_and(|d| *d < 0),
                    _ => false,
                };
                (input.name().to_string(), batched)
            })
            .collect();
        let inputs = session
            .inputs()
            .iter()
            .map(|o| port_info(o.name(), o.dtype()))
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| port_info(o.name(), o.dtype()))
            .collect();
        let binding = if use_binding {
            Some(session.create_binding().map_err(fail)?)
        } else {
            None
        };
        let device_io = match placement {
            IoPlacement::Device { cuda, device_id } => {
                let shapes = output_shapes(&session, fixed_dims).map_err(|reason| {
                    Error::Ort(format!(
                        "{}: outputs cannot be held in device memory: {reason}",
                        model.display()
                    ))
                })?;
                let device = if cuda {
                    AllocationDevice::CUDA
                } else {
                    AllocationDevice::CPU
                };
                Some((
                    DeviceIo::new(&session, device, device_id).map_err(fail)?,
                    shapes,
                ))
            }
            _ => None,
        };
        let run_options = if shrink_cpu_arena {
            let fail = |source| Error::OrtIn {
                path: model.to_path_buf(),
                source,
            };
            let mut run_options = RunOptions::new().map_err(fail)?;
            run_options
                .set("memory.enable_memory_arena_shrinkage", "cpu:0")
                .map_err(fail)?;
            Some(run_options)
        } else {
            None
        };
        Ok(ModelSession {
            session,
            inputs,
            outputs,
            model: model.to_path_buf(),
            constants: Vec::new(),
            binding,
            run_options,
            batch_axis,
            tile_batch: tile_batch.max(1),
            device_io,
            constants_dirty: false,
        })
    }

    /// Whether inputs and outputs are held in device memory (CUDA graphs).
    pub fn holds_io_on_device(&self) -> bool {
        self.device_io.is_some()
    }

    /// Whether constants are held on the device by an I/O binding.
    pub fn uses_binding(&self) -> bool {
        self.binding.is_some()
    }

    /// Sets an input that every following [`ModelSession::run`] gets without
    /// naming it. Setting the same value again does nothing (no new copy to
    /// the device).
    pub fn set_constant(&mut self, name: &str, tensor: InputTensor<'_>) -> Result<()> {
        let constant = match tensor {
            InputTensor::Float { shape, data } => Constant {
                name: name.to_string(),
                shape: shape.to_vec(),
                data: ConstantData::Float(data.to_vec()),
            },
            InputTensor::Int64 { shape, data } => Constant {
                name: name.to_string(),
                shape: shape.to_vec(),
                data: ConstantData::Int64(data.to_vec()),
            },
        };
        if self.constants.contains(&constant) {
            return Ok(());
        }
        if self.device_io.is_some() {
            // copied into its device tensor before the next run
            self.constants_dirty = true;
        } else if self.binding.is_some() {
            let value = self.owned_value(&constant)?;
            let path = self.model.clone();
            if let Some(binding) = self.binding.as_mut() {
                binding
                    .bind_input(constant.name.as_str(), &value)
                    .map_err(|source| Error::OrtIn { path, source })?;
            }
        }
        self.constants.retain(|c| c.name != constant.name);
        self.constants.push(constant);
        Ok(())
    }

    /// A constant as an owned tensor of the graph's element type.
    fn owned_value(&self, constant: &Constant) -> Result<DynValue> {
        let shape = constant.shape.clone();
        Ok(match &constant.data {
            ConstantData::Float(data) if self.input_dtype(&constant.name)? == DType::Float16 => {
                let half: Vec<f16> = data.iter().map(|v| f16::from_f32(*v)).collect();
                Tensor::from_array((shape, half))?.into_dyn()
            }
            ConstantData::Float(data) => Tensor::from_array((shape, data.clone()))?.into_dyn(),
            ConstantData::Int64(data) => Tensor::from_array((shape, data.clone()))?.into_dyn(),
        })
    }

    /// The graph's inputs.
    pub fn inputs(&self) -> &[PortInfo] {
        &self.inputs
    }

    /// The graph's outputs.
    pub fn outputs(&self) -> &[PortInfo] {
        &self.outputs
    }

    fn input_dtype(&self, name: &str) -> Result<DType> {
        self.inputs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.dtype)
            .ok_or_else(|| Error::Ort(format!("{}: no input named {name}", self.model.display())))
    }

    /// Runs the graph on named inputs (and the constants) and returns the
    /// named outputs, in order.
    pub fn run(
        &mut self,
        inputs: &[(&str, InputTensor<'_>)],
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        if self.device_io.is_some() {
            return self.run_on_device(inputs, output_names);
        }
        if self.binding.is_some() {
            let (half_buffers, wants_half) = self.half_inputs(inputs)?;
            return self.run_bound(inputs, &wants_half, half_buffers, output_names);
        }
        self.run_unbound(inputs, true, output_names)
    }

    /// An input as host data of the graph's element type.
    fn host_data(&self, name: &str, tensor: &InputTensor<'_>) -> Result<HostData> {
        Ok(match tensor {
            InputTensor::Float { data, .. } if self.input_dtype(name)? == DType::Float16 => {
                HostData::F16(data.iter().map(|v| f16::from_f32(*v)).collect())
            }
            InputTensor::Float { data, .. } => HostData::F32(data.to_vec()),
            InputTensor::Int64 { data, .. } => HostData::I64(data.to_vec()),
        })
    }

    /// [`ModelSession::run`] with every input and output in device memory
    /// ([`super::device_io`]): the inputs (and changed constants) copied
    /// into their fixed tensors, one run, the outputs copied back.
    fn run_on_device(
        &mut self,
        inputs: &[(&str, InputTensor<'_>)],
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        let mut writes: Vec<(String, Vec<usize>, HostData)> = Vec::new();
        for (name, tensor) in inputs {
            let shape = match tensor {
                InputTensor::Float { shape, .. } | InputTensor::Int64 { shape, .. } => {
                    shape.to_vec()
                }
            };
            writes.push((name.to_string(), shape, self.host_data(name, tensor)?));
        }
        if self.constants_dirty {
            for constant in &self.constants {
                let tensor = match &constant.data {
                    ConstantData::Float(data) => InputTensor::Float {
                        shape: &constant.shape,
                        data,
                    },
                    ConstantData::Int64(data) => InputTensor::Int64 {
                        shape: &constant.shape,
                        data,
                    },
                };
                let data = self.host_data(&constant.name, &tensor)?;
                writes.push((constant.name.clone(), constant.shape.clone(), data));
            }
        }
        let model = self.model.clone();
        let fail = |reason: String| Error::Ort(format!("{}: {reason}", model.display()));
        let (Some(binding), Some((device_io, shapes))) =
            (self.binding.as_mut(), self.device_io.as_mut())
        else {
            return Err(fail("no device memory set up".into()));
        };
        for (name, shape, data) in writes {
            device_io
                .write_input(binding, &name, &shape, data)
                .map_err(fail)?;
        }
        self.constants_dirty = false;
        device_io.bind_outputs(binding, shapes).map_err(fail)?;
        match &self.run_options {
            Some(run_options) => self.session.run_binding_with_options(binding, run_options),
            None => self.session.run_binding(binding),
        }
        .map_err(|source| Error::OrtIn {
            path: model.clone(),
            source,
        })?;
        output_names
            .iter()
            .map(|name| device_io.read_output(name).map_err(fail))
            .collect()
    }

    /// fp16 copies of the float inputs the graph takes as fp16, and which
    /// inputs they are.
    fn half_inputs(
        &self,
        inputs: &[(&str, InputTensor<'_>)],
    ) -> Result<(Vec<Vec<f16>>, Vec<bool>)> {
        let mut half_buffers: Vec<Vec<f16>> = Vec::new();
        let mut wants_half = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let half = matches!(tensor, InputTensor::Float { .. })
                && self.input_dtype(name)? == DType::Float16;
            if let (true, InputTensor::Float { data, .. }) = (half, tensor) {
                half_buffers.push(data.iter().map(|v| f16::from_f32(*v)).collect());
            }
            wants_half.push(half);
        }
        Ok((half_buffers, wants_half))
    }

    /// A plain run (no I/O binding) on borrowed inputs, plus the constants
    /// when `with_constants`.
    fn run_unbound(
        &mut self,
        inputs: &[(&str, InputTensor<'_>)],
        with_constants: bool,
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        let (half_buffers, wants_half) = self.half_inputs(inputs)?;
        let constants: &[Constant] = if with_constants { &self.constants } else { &[] };
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len() + constants.len());
        let mut half_iter = half_buffers.iter();
        for ((name, tensor), half) in inputs.iter().zip(wants_half) {
            let value: SessionInputValue<'_> = match tensor {
                InputTensor::Float { shape, data } => {
                    if half {
                        let buffer = half_iter.next().expect("one buffer per fp16 input");
                        TensorRef::from_array_view((shape.to_vec(), buffer.as_slice()))?.into()
                    } else {
                        TensorRef::from_array_view((shape.to_vec(), *data))?.into()
                    }
                }
                InputTensor::Int64 { shape, data } => {
                    TensorRef::from_array_view((shape.to_vec(), *data))?.into()
                }
            };
            values.push((Cow::Borrowed(*name), value));
        }
        let model = self.model.display().to_string();
        let fail = |source| Error::OrtIn {
            path: self.model.clone(),
            source,
        };
        let mut constant_half: Vec<Vec<f16>> = Vec::new();
        for constant in constants {
            if let ConstantData::Float(data) = &constant.data {
                if self.input_dtype(&constant.name)? == DType::Float16 {
                    constant_half.push(data.iter().map(|v| f16::from_f32(*v)).collect());
                }
            }
        }
        let mut constant_half = constant_half.iter();
        for constant in constants {
            let shape = constant.shape.clone();
            let value: SessionInputValue<'_> = match &constant.data {
                ConstantData::Float(data) => {
                    if self.input_dtype(&constant.name)? == DType::Float16 {
                        let buffer = constant_half.next().expect("one buffer per fp16 constant");
                        TensorRef::from_array_view((shape, buffer.as_slice()))?.into()
                    } else {
                        TensorRef::from_array_view((shape, data.as_slice()))?.into()
                    }
                }
                ConstantData::Int64(data) => {
                    TensorRef::from_array_view((shape, data.as_slice()))?.into()
                }
            };
            values.push((Cow::Borrowed(constant.name.as_str()), value));
        }
        let outputs = match &self.run_options {
            Some(run_options) => self.session.run_with_options(values, run_options),
            None => self.session.run(values),
        }
        .map_err(fail)?;
        extract_outputs(&model, &outputs, output_names)
    }

    /// Runs `runs` (the tiles of one group) as batches of up to
    /// `tile_batch` runs each ([`super::batch`]); a group that cannot be
    /// batched (other shapes, an input without a batch axis that differs)
    /// runs one run at a time. Outputs in the order of `runs`.
    pub fn run_group(
        &mut self,
        runs: &[Vec<(&str, InputTensor<'_>)>],
        output_names: &[&str],
    ) -> Result<Vec<Vec<OutputTensor>>> {
        let mut results = Vec::with_capacity(runs.len());
        for chunk in runs.chunks(self.tile_batch.max(1)) {
            let batched = if chunk.len() > 1 && self.device_io.is_none() {
                self.run_batched(chunk, output_names)?
            } else {
                None
            };
            match batched {
                Some(outputs) => results.extend(outputs),
                None => {
                    for inputs in chunk {
                        results.push(self.run(inputs, output_names)?);
                    }
                }
            }
        }
        Ok(results)
    }

    /// Whether the graph's input `name` has a dynamic first (batch) axis.
    fn has_batch_axis(&self, name: &str) -> bool {
        self.batch_axis
            .iter()
            .any(|(input, batched)| input == name && *batched)
    }

    /// One batched run of `chunk`, or None when it cannot be batched.
    fn run_batched(
        &mut self,
        chunk: &[Vec<(&str, InputTensor<'_>)>],
        output_names: &[&str],
    ) -> Result<Option<Vec<Vec<OutputTensor>>>> {
        let n = chunk.len();
        let first = &chunk[0];
        let same_names = chunk.iter().all(|inputs| {
            inputs.len() == first.len() && inputs.iter().zip(first).all(|(a, b)| a.0 == b.0)
        });
        if !same_names {
            return Ok(None);
        }
        let owned_data = |data: batch::Data<'_>| match data {
            batch::Data::Float(values) => batch::Stacked::Float(values.to_vec()),
            batch::Data::Int64(values) => batch::Stacked::Int64(values.to_vec()),
        };
        let mut owned: Vec<(String, Vec<usize>, batch::Stacked)> = Vec::new();
        for (index, (name, _)) in first.iter().enumerate() {
            let per_run: Vec<_> = chunk
                .iter()
                .map(|inputs| as_data(&inputs[index].1))
                .collect();
            if self.has_batch_axis(name) {
                let Some((shape, data)) = batch::stack(&per_run) else {
                    return Ok(None);
                };
                owned.push((name.to_string(), shape, data));
            } else {
                if !batch::all_equal(&per_run) {
                    return Ok(None);
                }
                let (shape, data) = per_run[0];
                owned.push((name.to_string(), shape.to_vec(), owned_data(data)));
            }
        }
        for constant in &self.constants {
            let data = match &constant.data {
                ConstantData::Float(values) => batch::Data::Float(values),
                ConstantData::Int64(values) => batch::Data::Int64(values),
            };
            if self.has_batch_axis(&constant.name) {
                let Some((shape, data)) = batch::repeat(&constant.shape, data, n) else {
                    return Ok(None);
                };
                owned.push((constant.name.clone(), shape, data));
            } else {
                owned.push((
                    constant.name.clone(),
                    constant.shape.clone(),
                    owned_data(data),
                ));
            }
        }
        let inputs: Vec<(&str, InputTensor<'_>)> = owned
            .iter()
            .map(|(name, shape, data)| {
                let tensor = match data {
                    batch::Stacked::Float(values) => InputTensor::Float {
                        shape,
                        data: values,
                    },
                    batch::Stacked::Int64(values) => InputTensor::Int64 {
                        shape,
                        data: values,
                    },
                };
                (name.as_str(), tensor)
            })
            .collect();
        let outputs = self.run_unbound(&inputs, false, output_names)?;
        let mut per_run: Vec<Vec<OutputTensor>> = (0..n).map(|_| Vec::new()).collect();
        for output in outputs {
            let parts = batch::split(&output.shape, &output.data, n).ok_or_else(|| {
                Error::Ort(format!(
                    "{}: a batched run of {n} tiles returned shape {:?}",
                    self.model.display(),
                    output.shape
                ))
            })?;
            for (run, (shape, data)) in per_run.iter_mut().zip(parts) {
                run.push(OutputTensor { shape, data });
            }
        }
        Ok(Some(per_run))
    }

    /// [`ModelSession::run`] through the I/O binding: the constants are
    /// bound already; the per-run inputs are bound now as owned tensors
    /// (ort rc.15 deadlocks binding a borrowed one: the clone in
    /// `bind_input` re-takes a lock it holds), the outputs to host memory.
    fn run_bound(
        &mut self,
        inputs: &[(&str, InputTensor<'_>)],
        wants_half: &[bool],
        half_buffers: Vec<Vec<f16>>,
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        let model = self.model.display().to_string();
        let path = self.model.clone();
        let fail = |source| Error::OrtIn {
            path: path.clone(),
            source,
        };
        let binding = self.binding.as_mut().expect("called with a binding");
        let mut half_buffers = half_buffers.into_iter();
        for ((name, tensor), &half) in inputs.iter().zip(wants_half) {
            let owned: DynValue = match tensor {
                InputTensor::Float { shape, .. } if half => {
                    let buffer = half_buffers.next().expect("one buffer per fp16 input");
                    Tensor::from_array((shape.to_vec(), buffer))
                        .map_err(fail)?
                        .into_dyn()
                }
                InputTensor::Float { shape, data } => {
                    Tensor::from_array((shape.to_vec(), data.to_vec()))
                        .map_err(fail)?
                        .into_dyn()
                }
                InputTensor::Int64 { shape, data } => {
                    Tensor::from_array((shape.to_vec(), data.to_vec()))
                        .map_err(fail)?
                        .into_dyn()
                }
            };
            binding.bind_input(*name, &owned).map_err(fail)?;
        }
        let host = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(fail)?;
        for name in output_names {
            binding.bind_output_to_device(*name, &host).map_err(fail)?;
        }
        let outputs = match &self.run_options {
            Some(run_options) => self.session.run_binding_with_options(binding, run_options),
            None => self.session.run_binding(binding),
        }
        .map_err(fail)?;
        extract_outputs(&model, &outputs, output_names)
    }
}

/// Every output's name, element type and shape, its free dimensions
/// resolved by the dimension overrides the session was opened with; an
/// error naming the first dimension they leave free.
fn output_shapes(
    session: &Session,
    fixed_dims: &[(String, i64)],
) -> std::result::Result<OutputShapes, String> {
    session
        .outputs()
        .iter()
        .map(|output| {
            let ValueType::Tensor {
                shape,
                dimension_symbols,
                ..
            } = output.dtype()
            else {
                return Err(format!("output {} is not a tensor", output.name()));
            };
            let dims = shape
                .iter()
                .zip(dimension_symbols.iter())
                .map(|(&size, symbol)| {
                    if size >= 0 {
                        return Ok(size as usize);
                    }
                    fixed_dims
                        .iter()
                        .find(|(name, _)| name == symbol)
                        .map(|(_, value)| *value as usize)
                        .ok_or_else(|| {
                            format!("output {} has the free dimension {symbol:?}", output.name())
                        })
                })
                .collect::<std::result::Result<Vec<usize>, String>>()?;
            Ok((
                output.name().to_string(),
                port_info(output.name(), output.dtype()).dtype,
                dims,
            ))
        })
        .collect()
}

/// An input's shape and data as [`batch`] sees them.
fn as_data<'a>(tensor: &InputTensor<'a>) -> (&'a [usize], batch::Data<'a>) {
    match *tensor {
        InputTensor::Float { shape, data } => (shape, batch::Data::Float(data)),
        InputTensor::Int64 { shape, data } => (shape, batch::Data::Int64(data)),
    }
}

/// The named outputs as f32 (fp16 outputs widened), in order.
fn extract_outputs(
    model: &str,
    outputs: &SessionOutputs<'_>,
    output_names: &[&str],
) -> Result<Vec<OutputTensor>> {
    output_names
        .iter()
        .map(|name| {
            let value = outputs
                .get(*name)
                .ok_or_else(|| Error::Ort(format!("{model}: no output named {name}")))?;
            if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
                return Ok(OutputTensor {
                    shape: shape.iter().map(|d| *d as usize).collect(),
                    data: data.to_vec(),
                });
            }
            let (shape, data) = value.try_extract_tensor::<f16>()?;
            Ok(OutputTensor {
                shape: shape.iter().map(|d| *d as usize).collect(),
                data: data.iter().map(|v| v.to_f32()).collect(),
            })
        })
        .collect()
}
