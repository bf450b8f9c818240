//! The device a model runs on, as a typed choice: parsed once from its name (`cpu`, `cuda`,
//! `cuda:N`, `metal`, `metal:N`; [`DEVICE_NAMES`]), stored as that text in configuration files,
//! checked against what this build was compiled with before anything starts, and opened only when
//! the work begins. The one parser of device names in the workspace: the trainer's
//! configurations, the command line and the check tools (fixture checks, benchmarks) all read
//! names through it.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// The device names accepted, for help texts and messages.
pub const DEVICE_NAMES: &str = "cpu, cuda, cuda:N, metal, metal:N";

/// A device choice: the CPU, or an accelerator by kind and ordinal.
///
/// Names are read in any case, with surrounding spaces ignored; `gpu` is `cuda`, and `cpu:N` is
/// the CPU whatever N (candle has one CPU device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceChoice {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// CUDA GPU number `ordinal` (needs the `cuda` cargo feature).
    Cuda {
        /// Which GPU (0 for `cuda`).
        ordinal: usize,
    },
    /// Metal GPU number `ordinal` (needs the `metal` cargo feature).
    Metal {
        /// Which GPU (0 for `metal`).
        ordinal: usize,
    },
}

/// Why a device cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// A name that is not a device.
    #[error("unknown device `{0}` (expected one of: {names})", names = DEVICE_NAMES)]
    Unknown(String),
    /// `kind:N` where N is not a number.
    #[error("device `{text}`: the part after `:` is not a device number")]
    BadOrdinal {
        /// The text given.
        text: String,
    },
    /// An accelerator this build was compiled without.
    #[error("device `{device}`: this build has no {feature} support (rebuild with `--features {feature}`)")]
    NotBuilt {
        /// The device asked for.
        device: DeviceChoice,
        /// The cargo feature it needs.
        feature: &'static str,
    },
    /// The accelerator is in the build but could not be opened (no such GPU, driver error).
    #[error("device `{device}` cannot be opened")]
    Open {
        /// The device asked for.
        device: DeviceChoice,
        /// candle's reason.
        #[source]
        source: candle_core::Error,
    },
}

impl DeviceChoice {
    /// The cargo feature the device needs, if any.
    fn feature(self) -> Option<&'static str> {
        match self {
            DeviceChoice::Cpu => None,
            DeviceChoice::Cuda { .. } => Some("cuda"),
            DeviceChoice::Metal { .. } => Some("metal"),
        }
    }

    /// Whether this build was compiled with support for the device.
    pub fn is_built(self) -> bool {
        match self {
            DeviceChoice::Cpu => true,
            DeviceChoice::Cuda { .. } => cfg!(feature = "cuda"),
            DeviceChoice::Metal { .. } => cfg!(feature = "metal"),
        }
    }

    /// Checks that this build supports the device, without opening it (cheap; meant for
    /// validating settings before any work starts).
    pub fn check_built(self) -> Result<(), DeviceError> {
        match self.feature() {
            Some(feature) if !self.is_built() => Err(DeviceError::NotBuilt {
                device: self,
                feature,
            }),
            _ => Ok(()),
        }
    }

    /// Opens the device.
    pub fn open(self) -> Result<Device, DeviceError> {
        self.check_built()?;
        let opened = match self {
            DeviceChoice::Cpu => return Ok(Device::Cpu),
            DeviceChoice::Cuda { ordinal } => Device::new_cuda(ordinal),
            DeviceChoice::Metal { ordinal } => Device::new_metal(ordinal),
        };
        opened.map_err(|source| DeviceError::Open {
            device: self,
            source,
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda { ordinal: 0 } => f.write_str("cuda"),
            DeviceChoice::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
            DeviceChoice::Metal { ordinal: 0 } => f.write_str("metal"),
            DeviceChoice::Metal { ordinal } => write!(f, "metal:{ordinal}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    /// Parses `cpu`, `cpu:N`, `cuda`, `cuda:N`, `gpu` (= `cuda`), `gpu:N`, `metal` or `metal:N`,
    /// in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let (kind, ordinal) = match lower.split_once(':') {
            Some((kind, n)) => {
                let ordinal = n.parse().map_err(|_| DeviceError::BadOrdinal {
                    text: text.to_string(),
                })?;
                (kind, Some(ordinal))
            }
            None => (lower.as_str(), None),
        };
        match kind {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda {
                ordinal: ordinal.unwrap_or(0),
            }),
            "metal" => Ok(DeviceChoice::Metal {
                ordinal: ordinal.unwrap_or(0),
            }),
            _ => Err(DeviceError::Unknown(text.to_string())),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_both_former_parsers_is_read() {
        for (text, choice) in [
            ("cpu", DeviceChoice::Cpu),
            ("cpu:0", DeviceChoice::Cpu),
            ("cpu:3", DeviceChoice::Cpu),
            (" CPU ", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda { ordinal: 0 }),
            ("CUDA", DeviceChoice::Cuda { ordinal: 0 }),
            ("cuda:2", DeviceChoice::Cuda { ordinal: 2 }),
            ("gpu", DeviceChoice::Cuda { ordinal: 0 }),
            ("gpu:1", DeviceChoice::Cuda { ordinal: 1 }),
            ("metal", DeviceChoice::Metal { ordinal: 0 }),
            ("metal:1", DeviceChoice::Metal { ordinal: 1 }),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), choice, "{text}");
        }
        assert!(matches!(
            "tpu".parse::<DeviceChoice>(),
            Err(DeviceError::Unknown(_))
        ));
        assert!(matches!(
            "cuda:".parse::<DeviceChoice>(),
            Err(DeviceError::BadOrdinal { .. })
        ));
    }

    #[test]
    fn the_cpu_opens_in_every_build() {
        assert!(matches!(DeviceChoice::Cpu.open(), Ok(Device::Cpu)));
    }
}
