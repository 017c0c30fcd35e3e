//! What the GPU and its libraries are: name, compute capability, memory,
//! driver and library versions, read through the CUDA driver API
//! (`libcuda.so.1`), the driver's NVML (`libnvidia-ml.so.1`, for the memory
//! other processes leave free, without creating a CUDA context) and the
//! libraries' own version calls. Nothing here needs a GPU to compile;
//! without one every field is `None`.

use std::ffi::{c_char, c_int, c_uint, c_void};

use serde::Serialize;

/// The GPU `--device N` names and the versions of what drives it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GpuInfo {
    pub name: Option<String>,
    /// e.g. `9.0` for Hopper, `8.7` for Jetson Orin.
    pub compute_capability: Option<String>,
    pub memory_mib: Option<u64>,
    /// Memory no process holds now (NVML), when NVML's device is the same
    /// size as the CUDA device (not on a MIG slice, whose parent NVML
    /// would report).
    pub memory_free_mib: Option<u64>,
    /// `0000:3B:00.0`: how NVML finds the device CUDA numbers `device`
    /// (the two count GPUs in different orders).
    pub pci_bus_id: Option<String>,
    /// The kernel driver's version (`/proc/driver/nvidia/version`).
    pub driver: Option<String>,
    /// The newest CUDA the driver supports, e.g. `13.0`.
    pub driver_cuda: Option<String>,
    pub cuda_runtime: Option<String>,
    pub cudnn: Option<String>,
    pub tensorrt: Option<String>,
    /// Set on NVIDIA Jetson boards (`/etc/nv_tegra_release`).
    pub tegra_release: Option<String>,
}

impl GpuInfo {
    /// `sm_90` for compute capability 9.0.
    pub fn sm_name(&self) -> Option<String> {
        self.compute_capability
            .as_ref()
            .map(|cc| format!("sm_{}", cc.replace('.', "")))
    }
}

type CuResult = c_int;

fn symbol<T: Copy>(library: &libloading::Library, name: &[u8]) -> Option<T> {
    // SAFETY: `T` is the C signature NVIDIA documents for `name`.
    unsafe { library.get::<T>(name).ok().map(|s| *s) }
}

fn open(name: &str) -> Option<libloading::Library> {
    // SAFETY: NVIDIA's libraries; already loaded (or loadable) by the provider.
    unsafe { libloading::Library::new(name).ok() }
}

/// `13000` -> `13.0`.
pub fn cuda_version_string(version: c_int) -> String {
    format!("{}.{}", version / 1000, (version % 1000) / 10)
}

/// cuDNN 9's `cudnnGetVersion`: `91400` -> `9.14.0`.
pub fn cudnn_version_string(version: usize) -> String {
    format!(
        "{}.{}.{}",
        version / 10000,
        (version % 10000) / 100,
        version % 100
    )
}

/// TensorRT's `getInferLibVersion`: `101300` -> `10.13.0`.
pub fn tensorrt_version_string(version: i32) -> String {
    format!(
        "{}.{}.{}",
        version / 10000,
        (version % 10000) / 100,
        version % 100
    )
}

/// Reads what can be read about GPU `device` (each part independently).
pub fn gpu_info(device: i32) -> GpuInfo {
    let mut info = GpuInfo {
        driver: kernel_driver_version(),
        tegra_release: std::fs::read_to_string("/etc/nv_tegra_release")
            .ok()
            .map(|t| t.lines().next().unwrap_or("").trim().to_string()),
        ..GpuInfo::default()
    };
    if let Some(driver) = open("libcuda.so.1") {
        read_driver_api(&driver, device, &mut info);
    }
    if let (Some(bus_id), Some(total_mib)) = (&info.pci_bus_id, info.memory_mib) {
        info.memory_free_mib =
            nvml_memory(bus_id).and_then(|memory| free_mib_of_same_device(memory, total_mib << 20));
    }
    if let Some(cudart) = open("libcudart.so.13") {
        type RuntimeGetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
        if let Some(get) = symbol::<RuntimeGetVersion>(&cudart, b"cudaRuntimeGetVersion\0") {
            let mut version = 0;
            // SAFETY: writes one int.
            if unsafe { get(&mut version) } == 0 {
                info.cuda_runtime = Some(cuda_version_string(version));
            }
        }
    }
    if let Some(cudnn) = open("libcudnn.so.9") {
        type GetVersion = unsafe extern "C" fn() -> usize;
        if let Some(get) = symbol::<GetVersion>(&cudnn, b"cudnnGetVersion\0") {
            // SAFETY: no arguments.
            info.cudnn = Some(cudnn_version_string(unsafe { get() }));
        }
    }
    if let Some(nvinfer) = open("libnvinfer.so.10") {
        type GetVersion = unsafe extern "C" fn() -> i32;
        if let Some(get) = symbol::<GetVersion>(&nvinfer, b"getInferLibVersion\0") {
            // SAFETY: no arguments.
            info.tensorrt = Some(tensorrt_version_string(unsafe { get() }));
        }
    }
    info
}

fn read_driver_api(driver: &libloading::Library, device: i32, info: &mut GpuInfo) {
    type Init = unsafe extern "C" fn(c_uint) -> CuResult;
    type DriverGetVersion = unsafe extern "C" fn(*mut c_int) -> CuResult;
    type DeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> CuResult;
    type DeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult;
    type DeviceGetAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> CuResult;
    type DeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> CuResult;
    type DeviceGetPciBusId = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult;
    const COMPUTE_CAPABILITY_MAJOR: c_int = 75;
    const COMPUTE_CAPABILITY_MINOR: c_int = 76;

    let (Some(init), Some(get_version), Some(device_get)) = (
        symbol::<Init>(driver, b"cuInit\0"),
        symbol::<DriverGetVersion>(driver, b"cuDriverGetVersion\0"),
        symbol::<DeviceGet>(driver, b"cuDeviceGet\0"),
    ) else {
        return;
    };
    // SAFETY: the CUDA driver API as documented; every out-pointer is valid.
    unsafe {
        let mut version = 0;
        if get_version(&mut version) == 0 && version > 0 {
            info.driver_cuda = Some(cuda_version_string(version));
        }
        if init(0) != 0 {
            return;
        }
        let mut handle = 0;
        if device_get(&mut handle, device) != 0 {
            return;
        }
        if let Some(get_name) = symbol::<DeviceGetName>(driver, b"cuDeviceGetName\0") {
            let mut buffer = [0 as c_char; 256];
            if get_name(buffer.as_mut_ptr(), buffer.len() as c_int, handle) == 0 {
                let name = std::ffi::CStr::from_ptr(buffer.as_ptr());
                info.name = Some(name.to_string_lossy().into_owned());
            }
        }
        if let Some(attribute) = symbol::<DeviceGetAttribute>(driver, b"cuDeviceGetAttribute\0") {
            let (mut major, mut minor) = (0, 0);
            if attribute(&mut major, COMPUTE_CAPABILITY_MAJOR, handle) == 0
                && attribute(&mut minor, COMPUTE_CAPABILITY_MINOR, handle) == 0
            {
                info.compute_capability = Some(format!("{major}.{minor}"));
            }
        }
        if let Some(total) = symbol::<DeviceTotalMem>(driver, b"cuDeviceTotalMem_v2\0") {
            let mut bytes = 0usize;
            if total(&mut bytes, handle) == 0 {
                info.memory_mib = Some((bytes >> 20) as u64);
            }
        }
        if let Some(bus_id) = symbol::<DeviceGetPciBusId>(driver, b"cuDeviceGetPCIBusId\0") {
            let mut buffer = [0 as c_char; 64];
            if bus_id(buffer.as_mut_ptr(), buffer.len() as c_int, handle) == 0 {
                let text = std::ffi::CStr::from_ptr(buffer.as_ptr());
                info.pci_bus_id = Some(text.to_string_lossy().into_owned());
            }
        }
    }
}

/// NVML's `nvmlMemory_t`: bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NvmlMemory {
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

/// The memory of the GPU at PCI address `bus_id`, through NVML (no CUDA
/// context is created, so nothing is allocated on the device).
fn nvml_memory(bus_id: &str) -> Option<NvmlMemory> {
    type NvmlReturn = c_int;
    type Init = unsafe extern "C" fn() -> NvmlReturn;
    type Shutdown = unsafe extern "C" fn() -> NvmlReturn;
    type HandleByBusId = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> NvmlReturn;
    type MemoryInfo = unsafe extern "C" fn(*mut c_void, *mut NvmlMemory) -> NvmlReturn;
    let nvml = open("libnvidia-ml.so.1")?;
    let init = symbol::<Init>(&nvml, b"nvmlInit_v2\0")?;
    let shutdown = symbol::<Shutdown>(&nvml, b"nvmlShutdown\0")?;
    let by_bus_id = symbol::<HandleByBusId>(&nvml, b"nvmlDeviceGetHandleByPciBusId_v2\0")?;
    let memory_info = symbol::<MemoryInfo>(&nvml, b"nvmlDeviceGetMemoryInfo\0")?;
    let bus_id = std::ffi::CString::new(bus_id).ok()?;
    // SAFETY: NVML as documented: init, a handle for a NUL-terminated bus
    // id, one struct written, shutdown after a successful init.
    unsafe {
        if init() != 0 {
            return None;
        }
        let mut device: *mut c_void = std::ptr::null_mut();
        let mut memory = NvmlMemory::default();
        let read =
            by_bus_id(bus_id.as_ptr(), &mut device) == 0 && memory_info(device, &mut memory) == 0;
        shutdown();
        read.then_some(memory)
    }
}

/// NVML's free memory in MiB, when NVML's device is the one CUDA sees: its
/// total within 5% of CUDA's (a MIG slice is a fraction of the GPU NVML
/// reports on) and its free no larger than its total.
pub fn free_mib_of_same_device(nvml: NvmlMemory, cuda_total_bytes: u64) -> Option<u64> {
    let larger = nvml.total.max(cuda_total_bytes);
    let same_size =
        larger > 0 && nvml.total.abs_diff(cuda_total_bytes) as f64 <= 0.05 * larger as f64;
    (same_size && nvml.free <= nvml.total).then_some(nvml.free >> 20)
}

/// `580.159.04` from `/proc/driver/nvidia/version`'s first line.
fn kernel_driver_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    parse_kernel_driver_version(&text)
}

pub fn parse_kernel_driver_version(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    line.split_whitespace()
        .find(|word| {
            word.split('.').count() >= 2
                && word
                    .split('.')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_spelled_like_nvidia_does() {
        assert_eq!(cuda_version_string(13000), "13.0");
        assert_eq!(cuda_version_string(12080), "12.8");
        assert_eq!(cudnn_version_string(91400), "9.14.0");
        assert_eq!(tensorrt_version_string(101300), "10.13.0");
    }

    #[test]
    fn the_kernel_driver_version_is_read_from_procfs_text() {
        let text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Thu Oct  2 2025\nGCC version: gcc 12\n";
        assert_eq!(
            parse_kernel_driver_version(text).as_deref(),
            Some("580.159.04")
        );
        assert_eq!(parse_kernel_driver_version("nothing"), None);
    }

    #[test]
    fn free_memory_counts_only_when_nvml_sees_the_cuda_device() {
        let gib = 1u64 << 30;
        let h100 = |free| NvmlMemory {
            total: 80 * gib,
            free,
            used: 80 * gib - free,
        };
        // CUDA reports a little less than NVML on the same board
        assert_eq!(
            free_mib_of_same_device(h100(30 * gib), 79 * gib),
            Some(30 * 1024)
        );
        // a 1g.10gb MIG slice: NVML's figures are the whole GPU's
        assert_eq!(free_mib_of_same_device(h100(30 * gib), 10 * gib), None);
        // nonsense from the library
        assert_eq!(
            free_mib_of_same_device(
                NvmlMemory {
                    total: gib,
                    free: 2 * gib,
                    used: 0
                },
                gib
            ),
            None
        );
        assert_eq!(free_mib_of_same_device(NvmlMemory::default(), 0), None);
    }

    #[test]
    fn sm_name_comes_from_the_compute_capability() {
        let info = GpuInfo {
            compute_capability: Some("8.7".into()),
            ..GpuInfo::default()
        };
        assert_eq!(info.sm_name().as_deref(), Some("sm_87"));
    }

    #[test]
    fn without_a_gpu_every_field_is_empty_or_read_from_files() {
        // On a machine without libcuda.so.1 nothing is invented.
        if open("libcuda.so.1").is_none() {
            let info = gpu_info(0);
            assert!(info.name.is_none() && info.compute_capability.is_none());
            assert!(info.memory_free_mib.is_none() && info.pci_bus_id.is_none());
        }
    }
}
