//! nasnet-cells: NASNet (Zoph et al. 2018) on candle. Any genotype of the NASNet search space
//! (crate `nasnet-searchspace`) becomes a trainable network; with `named::nasnet_a()` and the
//! presets of [`NasNetConfig`] it is NASNet-A CIFAR, Mobile or Large, exact enough to load the
//! public PyTorch ports' weights (timm `nasnetalarge`, pretrainedmodels `nasnetamobile`) and
//! reproduce their outputs ([`reference`] checks that against stored fixtures).
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use nasnet_cells::{NasNet, NasNetConfig};
//!
//! let cfg = NasNetConfig::cifar(6, 768)?;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = NasNet::new(&nasnet_searchspace::named::nasnet_a(), &cfg, vb)?;
//! let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
//! let out = model.forward_t(&x, true)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cell;
pub mod config;
pub mod error;
mod fused;
pub mod kernels;
mod layers;
pub mod model;
pub mod reference;

pub use config::{parse_net, NasNetConfig, NetSize, StemKind};
pub use error::CellsError;
pub use layers::ParamInfo;
pub use model::{NasNet, NasNetOutput};
