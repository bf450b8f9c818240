//! The device a model trains on, as a typed choice: parsed once from `cpu`, `cuda`, `cuda:N`,
//! `metal` or `metal:N`, stored as that text in configuration files, checked against what this
//! build was compiled with before anything starts, and opened only when training begins.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DeviceError;

/// The device names accepted, for help texts and messages.
pub(crate) const DEVICE_NAMES: &str = "cpu, cuda, cuda:N, metal, metal:N";

/// A device choice: the CPU, or an accelerator by kind and ordinal.
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

    /// Parses `cpu`, `cuda`, `cuda:N`, `gpu` (= `cuda`), `metal` or `metal:N`, in any case.
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
        match (kind, ordinal) {
            ("cpu", None | Some(0)) => Ok(DeviceChoice::Cpu),
            ("cuda" | "gpu", n) => Ok(DeviceChoice::Cuda {
                ordinal: n.unwrap_or(0),
            }),
            ("metal", n) => Ok(DeviceChoice::Metal {
                ordinal: n.unwrap_or(0),
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
