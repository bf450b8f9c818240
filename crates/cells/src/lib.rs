//! nasnet-cells: NASNet (Zoph et al. 2018) on candle. Any genotype of the NASNet search space
//! (crate `nasnet-searchspace`) becomes a trainable network; with `named::nasnet_a()` and the
//! presets of [`NasNetConfig`] it is NASNet-A CIFAR, Mobile or Large, exact enough to load the
//! public PyTorch ports' weights (timm `nasnetalarge`, pretrainedmodels `nasnetamobile`) and
//! reproduce their outputs (the `reference` module, behind the cargo feature of that name, checks
//! that against stored fixtures).
//!
//! # Parts
//!
//! The crate is a façade over a few parts; what a user needs is re-exported here, at one path
//! each:
//! - the model (private module `model`): [`NasNet`], [`NasNetConfig`] and its presets,
//!   [`NetSize`] / [`parse_net`], [`CellUnit`] / [`OpUnit`] (one cell or op on its own);
//! - the weights (private module `weights`): [`load_state_dict`] (safetensors, PyTorch zip and
//!   legacy `.pth`, read by the crate's own bounded pickle parser), [`detect_port`], [`Port`],
//!   and [`NasNet::from_file`];
//! - [`vision`]: each port's input specification ([`vision::EvalTransform`]), the ImageNet class
//!   names and (cargo feature `image`, on by default) image decoding and augmentation;
//! - [`kernels`], the CPU kernels candle lacks (depthwise convolution, padded pooling, 1x1
//!   convolution, each with its backward), and [`kernels::gemm`], the bounds-checked matrix
//!   product they run on; [`CompiledNasNet`], the compiled inference path;
//! - [`DeviceChoice`]: the one parser of device names (`cpu`, `cuda:N`, `metal`, ...);
//! - behind cargo features, off by default: `supernet` (the shared weights of a weight-sharing
//!   search, `Supernet` and `sharing_space`), `durable` (crash-safe file writes, module
//!   `durable`) and `reference` (the fixture harness, module `reference`).
//!
//! The crates a model is made with are re-exported too, so that one dependency line builds a
//! fixed model: [`searchspace`] is `nasnet-searchspace` (genotypes, and the released cells in
//! `searchspace::named`), and candle is re-exported under the names the candle crates give
//! each other (as candle-nn and candle-transformers import it): [`candle`] is `candle-core`,
//! [`candle_nn`] is `candle-nn`. A program that depends on `nasnet-cells` alone classifies an
//! image with a NASNet-A Mobile checkpoint as downloaded (here the tiny Mobile of this crate's
//! tests, so the example runs as a doc test from `crates/cells`; the repository's README shows
//! the same code):
//!
//! ```
//! use nasnet_cells::candle::{DType, Device, D};
//! use nasnet_cells::searchspace::named::nasnet_a;
//! use nasnet_cells::vision::{load_rgb, EvalTransform};
//! use nasnet_cells::{detect_port, load_state_dict, NasNet, NasNetConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // pretrainedmodels' nasnetamobile-7e03cead.pth (legacy PyTorch format) loads the same way.
//! let device = Device::Cpu;
//! let tensors = load_state_dict("tests/data/nasnet-a-mobile-tiny/weights.pth".as_ref(), &device)?;
//! let port = detect_port(tensors.keys()).ok_or("not a NASNet-A Mobile or Large state dict")?;
//! let cfg = NasNetConfig::mobile().fit_to_state_dict(&tensors)?;
//! let model = NasNet::from_state_dict(&nasnet_a(), &cfg, tensors, DType::F32, &device)?;
//! let image = load_rgb("tests/data/preprocess/grace_hopper.jpg".as_ref())?;
//! let x = EvalTransform::for_port(port).apply(&image, &device)?.unsqueeze(0)?;
//! let logits = model.forward_t(&x, false)?.logits;
//! let top1 = logits.argmax(D::Minus1)?.squeeze(0)?.to_scalar::<u32>()?;
//! println!("top-1: class {top1} of {}", cfg.num_classes);
//! # assert!((top1 as usize) < cfg.num_classes);
//! # Ok(())
//! # }
//! ```
//!
//! # What the model computes
//!
//! Every op is relu-conv-BN as in TF-slim (docs/semantics.md#inside-a-cell). For the ops no
//! released model uses, and so no port defines, this crate chooses: `conv_1x3_3x1` /
//! `conv_1x7_7x1` are relu, a 1xk conv carrying the stride, a kx1 conv, BN (tensors `conv_1xk`,
//! `conv_kx1`, `bn`);
//! `dil_conv_3x3` is relu, a full 3x3 conv with dilation 2, BN (`conv`, `bn`); `conv_1x1` and
//! `conv_3x3` are relu, conv, BN (`conv`, `bn`); an identity that must change stride or filters is
//! relu, 1x1 conv, BN and a pooling that must change filters is followed by 1x1 conv, BN (both
//! `conv`, `bn`); the normalising combines are `comb_iter_{b}_norm.{weight,bias}`; output states
//! brought to the cell's size are `output_proj_{i}`; the auxiliary head is `aux_head`. Normal
//! cells are named `cell_{s * max(N, 6) + j}`, which is both ports' numbering (Mobile's
//! cell_0..3, cell_6..9, cell_12..15; Large's cell_0..17) and never collides for larger N.
//!
//! Devices: on the CPU the depthwise convs, pools, 1x1 convs, batch norm and ReLU run custom ops
//! ([`kernels`]); on CUDA and Metal they run the device-generic path ([`kernels::generic`]),
//! compositions of candle ops that all have a backward on every device. The generic path can
//! run on the CPU too, e.g. to check it against the custom ops without a GPU: per model with
//! [`NasNetConfig::kernel_path`], or as the process default with [`set_kernel_path`] or the
//! environment variable `NASNET_KERNELS=generic` (read once per process).
//!
//! Inference: [`NasNet::compile`] gives a [`CompiledNasNet`], the fast CPU path for eval mode
//! (batch norm folded into the convolutions, ReLUs fused into the kernels that read them,
//! prepacked weights, NHWC buffers planned once per input size and reused, no autograd), with
//! the logits and stage features of `forward_t(x, false)` / `forward_features(x, false)` to f32
//! rounding. It is a snapshot of the weights at compile time: compile again after training or
//! loading new weights ([`CompiledNasNet::is_current`] tells whether a model still matches).
//! `forward_t` stays the reference path, and the only one for training and GPUs.
//!
//! ```no_run
//! # use nasnet_cells::candle::{DType, Device, Tensor};
//! # let model = nasnet_cells::NasNet::shape_only(
//! #     &nasnet_cells::searchspace::named::nasnet_a(), &nasnet_cells::NasNetConfig::mobile())?;
//! let compiled = model.compile()?;
//! let x = Tensor::zeros((1, 3, 224, 224), DType::F32, &Device::Cpu)?;
//! let logits = compiled.forward(&x)?; // (1, 1000), as model.forward_t(&x, false)?.logits
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```no_run
//! use nasnet_cells::candle::{DType, Device, Tensor};
//! use nasnet_cells::candle_nn::{VarBuilder, VarMap};
//! use nasnet_cells::{NasNet, NasNetConfig};
//!
//! let cfg = NasNetConfig::cifar(6, 768)?;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = NasNet::new(&nasnet_cells::searchspace::named::nasnet_a(), &cfg, vb)?;
//! let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
//! let out = model.forward_t(&x, true)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod compiled;
mod device;
#[cfg(feature = "durable")]
pub mod durable;
mod error;
pub mod kernels;
mod model;
#[cfg(feature = "reference")]
pub mod reference;
mod runtime;
#[cfg(feature = "supernet")]
mod supernet;
pub mod vision;
mod weights;

pub use candle_core as candle;
pub use candle_nn;
pub use nasnet_searchspace as searchspace;

pub use compiled::CompiledNasNet;
pub use device::{DeviceChoice, DeviceError, DEVICE_NAMES};
pub use error::CellsError;
pub use kernels::{kernel_path, set_kernel_path, KernelPath};
pub use model::{
    parse_net, ActivationValues, CellUnit, NasNet, NasNetConfig, NasNetOutput, NetSize, OpUnit,
    ParamInfo, StemKind,
};
pub use runtime::{candle_thread_env, configure_cpu};
#[cfg(feature = "supernet")]
pub use supernet::{sharing_space, Supernet};
pub use weights::{detect_port, load_state_dict, Port};
