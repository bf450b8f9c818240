//! Which public PyTorch port a state dict comes from, told by its tensor names, and a
//! configuration sized to a state dict: what a downloaded or fine-tuned checkpoint needs before
//! a model of the right shape can load it.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::error::CellsError;
use crate::model::NasNetConfig;

/// The public PyTorch port a NASNet-A state dict comes from; each has its own conventions that
/// a model must follow to reproduce its outputs (docs/semantics.md#the-ports-stride-2-average-pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// timm's `nasnetalarge` (6 normal cells per stack): stride-2 average pools count their
    /// zero padding.
    Timm,
    /// pretrainedmodels' `nasnetamobile` (4 normal cells per stack): TF's average pools.
    PretrainedModels,
}

impl Port {
    /// Whether the port's stride-2 average pools count their zero padding
    /// ([`crate::NasNetConfig::avg_pool_count_pad_stride2`]).
    pub fn counts_stride2_pool_padding(self) -> bool {
        matches!(self, Port::Timm)
    }
}

/// Recognises the port from a state dict's tensor names. Both ports use the same names
/// (`conv0`, `cell_stem_0/1`, `cell_{6s + j}`, `last_linear`) and differ in the number of normal
/// cells per stack: 6 (`cell_0..17`) is timm's Large, 4 (`cell_0..3`, `cell_6..9`,
/// `cell_12..15`) pretrainedmodels' Mobile. Anything else (no ImageNet stem, another cell count)
/// is `None`; pretrainedmodels' own `nasnetalarge` reads as [`Port::Timm`] by this rule.
pub fn detect_port<I, S>(names: I) -> Option<Port>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let names: Vec<S> = names.into_iter().collect();
    let has_stem = names.iter().any(|n| n.as_ref().starts_with("cell_stem_0."))
        && names.iter().any(|n| n.as_ref().starts_with("conv0."));
    if !has_stem {
        return None;
    }
    match normal_cells_per_stack(names.iter().map(|n| n.as_ref())) {
        Some(6) => Some(Port::Timm),
        Some(4) => Some(Port::PretrainedModels),
        _ => None,
    }
}

/// Normal cells per stack from the names `cell_{k}.*`: the three stacks hold the same number, so
/// it is a third of the distinct normal cells; `None` when there are none or they do not split
/// into three equal stacks.
fn normal_cells_per_stack<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<usize> {
    let mut indices: Vec<usize> = names
        .into_iter()
        .filter_map(|n| n.strip_prefix("cell_")?.split('.').next()?.parse().ok())
        .collect();
    indices.sort_unstable();
    indices.dedup();
    Some(indices.len() / 3).filter(|&n| n > 0 && indices.len().is_multiple_of(3))
}

impl NasNetConfig {
    /// This configuration with the sizes a state dict's tensors give: normal cells per stack
    /// (from the cell names), `conv0`'s filters and input channels, F (the filters of `cell_0`),
    /// the class count (`last_linear`) and whether it has an auxiliary head. The rest (stem
    /// kind, scaling rate, input size, batch-norm constants, the port's pooling) stays as given,
    /// so a preset of the right family loads a checkpoint of any width and class count, such as
    /// a fine-tuned one.
    pub fn fit_to_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<Self, CellsError> {
        let dims = |name: &str| -> Result<&[usize], CellsError> {
            tensors.get(name).map(|t| t.dims()).ok_or_else(|| {
                CellsError::Config(format!(
                    "cannot size the model from the state dict: it has no `{name}`"
                ))
            })
        };
        let dim = |name: &str, d: usize| -> Result<usize, CellsError> {
            dims(name)?.get(d).copied().ok_or_else(|| {
                CellsError::Config(format!("`{name}` in the state dict has too few dimensions"))
            })
        };
        let mut cfg = self.clone();
        cfg.cells_per_stack = normal_cells_per_stack(tensors.keys().map(|k| k.as_str()))
            .ok_or_else(|| {
                CellsError::Config("the state dict's normal cells do not form three stacks".into())
            })?;
        cfg.stem_filters = dim("conv0.conv.weight", 0)?;
        cfg.in_channels = dim("conv0.conv.weight", 1)?;
        cfg.filters = dim("cell_0.conv_1x1.conv.weight", 0)?;
        cfg.num_classes = dim("last_linear.weight", 0)?;
        cfg.aux_head = tensors.keys().any(|k| k.starts_with("aux_head."));
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_per_stack_from_names() {
        let mobile: Vec<String> = [0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15]
            .iter()
            .map(|k| format!("cell_{k}.conv_1x1.conv.weight"))
            .chain(["cell_stem_0.x".to_string(), "cell_6.bn.bias".to_string()])
            .collect();
        assert_eq!(
            normal_cells_per_stack(mobile.iter().map(|s| s.as_str())),
            Some(4)
        );
        assert_eq!(
            detect_port(&mobile),
            None,
            "no conv0: not an ImageNet NASNet"
        );
        let names: Vec<String> = (0..18).map(|k| format!("cell_{k}.w")).collect();
        assert_eq!(
            normal_cells_per_stack(names.iter().map(|s| s.as_str())),
            Some(6)
        );
        assert_eq!(normal_cells_per_stack(["conv0.conv.weight"]), None);
    }
}
