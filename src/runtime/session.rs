//! One open ONNX graph: its ports, and runs on borrowed views (`TensorRef`,
//! no copies of f32 data; fp16 graphs get a converted buffer).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use half::f16;
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};

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
}

/// An input tensor handed to [`ModelSession::run`]. Float data is always f32
/// on our side; fp16 graphs get it converted here.
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

/// One open ONNX graph.
pub struct ModelSession {
    session: Session,
    inputs: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
    model: PathBuf,
}

fn port_info(name: &str, dtype: &ValueType) -> PortInfo {
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
    }
}

impl ModelSession {
    pub(super) fn new(session: Session, model: &Path) -> Result<Self> {
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
        Ok(ModelSession {
            session,
            inputs,
            outputs,
            model: model.to_path_buf(),
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

    /// Runs the graph on named inputs and returns the named outputs, in order.
    pub fn run(
        &mut self,
        inputs: &[(&str, InputTensor<'_>)],
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
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
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
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
        let outputs = self.session.run(values).map_err(|source| Error::OrtIn {
            path: self.model.clone(),
            source,
        })?;
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
}
