//! A graph's inputs and outputs held in device memory at fixed addresses:
//! what CUDA graphs need (`--cuda-graph`), since a captured graph replays
//! reads and writes at the addresses it was captured with. Each input gets
//! one device tensor, bound once; every run copies the new host data into
//! it. Each output gets one device tensor of the shape the pinned graph
//! gives (`--static-shapes`), bound once, and is copied to the host after
//! the run. The same code runs with host memory as the "device" on the
//! CPU, which is how the tests check it.

use half::f16;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use super::session::{DType, OutputTensor};

/// One tensor in the device's memory, of the graph's element type.
enum DeviceTensor {
    F32(Tensor<f32>),
    F16(Tensor<f16>),
    I64(Tensor<i64>),
}

impl DeviceTensor {
    fn shape(&self) -> Vec<usize> {
        let shape = match self {
            DeviceTensor::F32(t) => t.shape(),
            DeviceTensor::F16(t) => t.shape(),
            DeviceTensor::I64(t) => t.shape(),
        };
        shape.iter().map(|d| *d as usize).collect()
    }
}

/// Host data for one input, already in the graph's element type.
pub(super) enum HostData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I64(Vec<i64>),
}

/// Binds input `name` to `device`; tensors made by an allocator are bound as
/// they are (the same address), not copied.
fn bind(binding: &mut IoBinding, name: &str, device: &DeviceTensor) -> ort::Result<()> {
    match device {
        DeviceTensor::F32(t) => binding.bind_input(name, t),
        DeviceTensor::F16(t) => binding.bind_input(name, t),
        DeviceTensor::I64(t) => binding.bind_input(name, t),
    }
}

/// The device tensors of one session.
pub(super) struct DeviceIo {
    allocator: Allocator,
    inputs: Vec<(String, DeviceTensor)>,
    outputs: Vec<(String, DeviceTensor)>,
}

impl DeviceIo {
    /// Tensors on `device` (`CUDA` for a GPU provider, `CPU` in tests),
    /// allocated by `session`'s allocator for it.
    pub(super) fn new(
        session: &Session,
        device: AllocationDevice<'static>,
        device_id: i32,
    ) -> ort::Result<DeviceIo> {
        let info = MemoryInfo::new(
            device,
            device_id,
            AllocatorType::Device,
            MemoryType::Default,
        )?;
        Ok(DeviceIo {
            allocator: Allocator::new(session, info)?,
            inputs: Vec::new(),
            outputs: Vec::new(),
        })
    }

    /// Copies `data` (of `shape`) into input `name`'s device tensor; the
    /// first time, the tensor is made and bound. A later shape that differs
    /// is an error: the addresses, and a captured CUDA graph, are for one
    /// shape.
    pub(super) fn write_input(
        &mut self,
        binding: &mut IoBinding,
        name: &str,
        shape: &[usize],
        data: HostData,
    ) -> Result<(), String> {
        let text = |e: ort::Error| e.to_string();
        if let Some((_, device)) = self.inputs.iter_mut().find(|(n, _)| n == name) {
            if device.shape() != shape {
                return Err(format!(
                    "input {name} has shape {shape:?}, but its device memory holds {:?} (the graph is opened for one shape)",
                    device.shape()
                ));
            }
            copy_to(data, shape, device).map_err(text)?;
            // bound again (the same tensor, the same address): where the
            // provider wants this input elsewhere (a CPU kernel's), ONNX
            // Runtime copies it at binding time, so the new data must be
            // bound to be seen
            return bind(binding, name, device).map_err(text);
        }
        let mut device = match &data {
            HostData::F32(_) => {
                DeviceTensor::F32(Tensor::new(&self.allocator, shape.to_vec()).map_err(text)?)
            }
            HostData::F16(_) => {
                DeviceTensor::F16(Tensor::new(&self.allocator, shape.to_vec()).map_err(text)?)
            }
            HostData::I64(_) => {
                DeviceTensor::I64(Tensor::new(&self.allocator, shape.to_vec()).map_err(text)?)
            }
        };
        copy_to(data, shape, &mut device).map_err(text)?;
        bind(binding, name, &device).map_err(text)?;
        self.inputs.push((name.to_string(), device));
        Ok(())
    }

    /// Makes and binds every output's device tensor, once.
    pub(super) fn bind_outputs(
        &mut self,
        binding: &mut IoBinding,
        outputs: &[(String, DType, Vec<usize>)],
    ) -> Result<(), String> {
        if !self.outputs.is_empty() {
            return Ok(());
        }
        let text = |e: ort::Error| e.to_string();
        for (name, dtype, shape) in outputs {
            let mut device = match dtype {
                DType::Float32 => {
                    DeviceTensor::F32(Tensor::new(&self.allocator, shape.clone()).map_err(text)?)
                }
                DType::Float16 => {
                    DeviceTensor::F16(Tensor::new(&self.allocator, shape.clone()).map_err(text)?)
                }
                DType::Int64 => {
                    DeviceTensor::I64(Tensor::new(&self.allocator, shape.clone()).map_err(text)?)
                }
                DType::Other(other) => return Err(format!("output {name} is {other}")),
            };
            match &mut device {
                DeviceTensor::F32(t) => binding.bind_output(name.as_str(), t),
                DeviceTensor::F16(t) => binding.bind_output(name.as_str(), t),
                DeviceTensor::I64(t) => binding.bind_output(name.as_str(), t),
            }
            .map_err(text)?;
            self.outputs.push((name.clone(), device));
        }
        Ok(())
    }

    /// Output `name` copied to the host, as f32 (fp16 widened).
    pub(super) fn read_output(&self, name: &str) -> Result<OutputTensor, String> {
        let text = |e: ort::Error| e.to_string();
        let (_, device) = self
            .outputs
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("no output named {name}"))?;
        let shape = device.shape();
        let data = match device {
            DeviceTensor::F32(t) => {
                let host = t.to(AllocationDevice::CPU, 0).map_err(text)?;
                host.try_extract_tensor::<f32>().map_err(text)?.1.to_vec()
            }
            DeviceTensor::F16(t) => {
                let host = t.to(AllocationDevice::CPU, 0).map_err(text)?;
                let (_, values) = host.try_extract_tensor::<f16>().map_err(text)?;
                values.iter().map(|v| v.to_f32()).collect()
            }
            DeviceTensor::I64(_) => return Err(format!("output {name} is int64")),
        };
        Ok(OutputTensor { shape, data })
    }
}

/// Copies host `data` into `device` (same element type and shape).
fn copy_to(data: HostData, shape: &[usize], device: &mut DeviceTensor) -> ort::Result<()> {
    let shape = shape.to_vec();
    match (data, device) {
        (HostData::F32(values), DeviceTensor::F32(target)) => {
            Tensor::from_array((shape, values))?.copy_into(target)
        }
        (HostData::F16(values), DeviceTensor::F16(target)) => {
            Tensor::from_array((shape, values))?.copy_into(target)
        }
        (HostData::I64(values), DeviceTensor::I64(target)) => {
            Tensor::from_array((shape, values))?.copy_into(target)
        }
        _ => Err(ort::Error::new(
            "an input's element type changed between runs",
        )),
    }
}
