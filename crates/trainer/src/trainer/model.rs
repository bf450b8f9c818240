//! Building a model for a run: fresh weights in a `VarMap`, and a configuration fitted to the
//! data.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use nasnet_cells::{NasNet, NasNetConfig};
use nasnet_searchspace::Genotype;

use crate::data::Dataset;
use crate::error::Result;

/// Builds a freshly initialised model and the `VarMap` holding its variables.
pub fn build_model(
    genotype: &Genotype,
    cfg: &NasNetConfig,
    device: &Device,
) -> Result<(NasNet, VarMap)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = NasNet::new(genotype, cfg, vb)?;
    Ok((model, varmap))
}

/// `cfg` with its input channels, classes and image size set from `data`.
pub fn fit_model_config(mut cfg: NasNetConfig, data: &Dataset) -> NasNetConfig {
    cfg.in_channels = data.channels;
    cfg.num_classes = data.classes();
    cfg.image_size = data.height.max(data.width);
    cfg
}
