//! The one decision of which implementation an op runs: the custom CPU ops, the custom CUDA
//! kernels or the device-generic path. [`route`] makes it from [`Kernels`] (fixed per
//! model when its layers are built, or the process default for a direct call) and the tensor's
//! device; nothing outside `kernels` reads either.
//!
//! | device | depthwise conv, pools | 1x1 conv, BN, ReLU |
//! |--------|-----------------------|--------------------|
//! | CPU    | custom ops ([`KernelPath::Custom`], the default) or generic ([`KernelPath::Generic`]) | the same |
//! | CUDA   | generic, or the custom CUDA kernels when they are on ([`set_cuda_kernels`]) | generic |
//! | Metal  | generic | generic |

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::switch::Switch;

/// Which implementation the kernel functions of [`crate::kernels`] run on the CPU.
///
/// Exists so that the generic path, the only one off the CPU, can be exercised (and compared
/// with the custom ops) on a machine without a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelPath {
    /// The hand-written CPU ops (the default: several times faster on the CPU).
    Custom,
    /// The compositions of candle ops in [`crate::kernels::generic`], as on CUDA and Metal.
    Generic,
}

/// The environment variable that selects the default CPU kernel path: `generic` or `custom`.
pub const KERNELS_ENV: &str = "NASNET_KERNELS";

/// The environment variable that turns the custom CUDA kernels on (`1`, `true` or `on`).
/// Anything else leaves them off.
pub const CUDA_KERNELS_ENV: &str = "NASNET_CUDA_KERNELS";

impl KernelPath {
    /// Parses `custom` / `generic` (any case), the values [`KERNELS_ENV`] takes.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "custom" => Some(KernelPath::Custom),
            "generic" => Some(KernelPath::Generic),
            _ => None,
        }
    }
}

/// The process default CPU path; an unrecognised value of the variable counts as unset.
static PATH: Switch<KernelPath> = Switch::new(
    KERNELS_ENV,
    KernelPath::parse,
    KernelPath::Custom,
    &[KernelPath::Custom, KernelPath::Generic],
);

/// Whether the custom CUDA kernels are on, process-wide.
static CUDA_KERNELS: Switch<bool> =
    Switch::new(CUDA_KERNELS_ENV, parse_switch, false, &[false, true]);

/// The process-wide CPU kernel path, the default of every model that does not choose one
/// (`NasNetConfig::kernel_path`): what [`set_kernel_path`] chose, else what [`KERNELS_ENV`] says
/// (read once, on the first call), else [`KernelPath::Custom`].
pub fn kernel_path() -> KernelPath {
    PATH.get()
}

/// Chooses the default CPU kernel path for the whole process (overrides [`KERNELS_ENV`]): for
/// the models built afterwards that choose none, and for direct calls of the kernel functions.
/// Devices other than the CPU use [`KernelPath::Generic`] (on CUDA, depthwise convs and pools
/// can run the custom CUDA kernels instead: [`set_cuda_kernels`]).
pub fn set_kernel_path(path: KernelPath) {
    PATH.set(path);
}

/// Whether the depthwise convolutions and pools on CUDA tensors run the custom CUDA kernels:
/// what [`set_cuda_kernels`] chose, else what [`CUDA_KERNELS_ENV`] says (read once, on the
/// first call), else off (the generic path, until a GPU run confirms the kernels).
pub fn cuda_kernels() -> bool {
    CUDA_KERNELS.get()
}

/// Turns the custom CUDA kernels on or off for the whole process (overrides
/// [`CUDA_KERNELS_ENV`]), for the models built afterwards and for direct calls of the kernel
/// functions; no effect on other devices.
pub fn set_cuda_kernels(on: bool) {
    CUDA_KERNELS.set(on);
}

/// Whether a value of [`CUDA_KERNELS_ENV`] turns the kernels on.
fn switch_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "on"
    )
}

/// [`switch_on`] as a [`Switch`] parser: every value is a choice (off unless it says on).
fn parse_switch(value: &str) -> Option<bool> {
    Some(switch_on(value))
}

/// The kernel implementations one model's layers (or one direct call) use, fixed when the
/// layer is built so that running it reads no process-wide setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kernels {
    /// The path on the CPU.
    pub cpu: KernelPath,
    /// Whether CUDA tensors run the custom CUDA kernels (depthwise convs and pools).
    pub cuda_kernels: bool,
}

impl Kernels {
    /// `cpu`, or the process default path when `None`, with the process's CUDA setting.
    pub fn new(cpu: Option<KernelPath>) -> Self {
        Kernels {
            cpu: cpu.unwrap_or_else(kernel_path),
            cuda_kernels: cuda_kernels(),
        }
    }

    /// The process defaults, what a direct call of the public kernel functions runs on.
    pub fn process_default() -> Self {
        Self::new(None)
    }
}

/// Where one op on a tensor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A CPU tensor on the custom path: the custom CPU ops.
    Cpu,
    /// A CUDA tensor with the custom CUDA kernels on: those for depthwise convs and pools (the
    /// same custom ops, run by their `cuda_fwd`), the generic path for the rest.
    Cuda,
    /// The device-generic compositions of candle ops.
    Generic,
}

/// The route of an op on a tensor on `device` under `kernels`: the one routing decision.
pub(crate) fn route(kernels: Kernels, device: &Device) -> Route {
    if device.is_cpu() {
        match kernels.cpu {
            KernelPath::Custom => Route::Cpu,
            KernelPath::Generic => Route::Generic,
        }
    } else if device.is_cuda() && kernels.cuda_kernels {
        Route::Cuda
    } else {
        Route::Generic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_value_parses() {
        assert_eq!(KernelPath::parse("generic"), Some(KernelPath::Generic));
        assert_eq!(KernelPath::parse(" Custom "), Some(KernelPath::Custom));
        assert_eq!(KernelPath::parse("cuda"), None);
    }

    #[test]
    fn the_switch_parses_and_never_selects_the_cpu() {
        assert!(switch_on(" 1") && switch_on("TRUE") && switch_on("on"));
        assert!(!switch_on("0") && !switch_on("") && !switch_on("yes please"));
        set_cuda_kernels(true);
        assert!(cuda_kernels());
        let on = Kernels::new(Some(KernelPath::Custom));
        assert_eq!(route(on, &Device::Cpu), Route::Cpu);
        set_cuda_kernels(false);
        assert!(!cuda_kernels());
    }

    /// The CPU takes the chosen path whatever the CUDA setting; other devices never take the
    /// custom CPU route.
    #[test]
    fn each_device_takes_its_route() {
        for cuda_kernels in [false, true] {
            let custom = Kernels {
                cpu: KernelPath::Custom,
                cuda_kernels,
            };
            let generic = Kernels {
                cpu: KernelPath::Generic,
                ..custom
            };
            assert_eq!(route(custom, &Device::Cpu), Route::Cpu);
            assert_eq!(route(generic, &Device::Cpu), Route::Generic);
        }
    }
}
