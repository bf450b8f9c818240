//! The operations and combine methods of the NASNet search space, with the stable names used
//! everywhere (JSON, CLI, docs). The names are the contract: never rename one.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::GenotypeError;

/// One of the 13 operations a block applies to a hidden state (paper §3,
/// docs/search-space.md#the-13-operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Op {
    /// Pass the state through (a 1x1 relu-conv-BN when stride or filter count must change).
    #[serde(rename = "identity")]
    Identity,
    /// A 1x3 then a 3x1 convolution.
    #[serde(rename = "conv_1x3_3x1")]
    Conv1x3_3x1,
    /// A 1x7 then a 7x1 convolution.
    #[serde(rename = "conv_1x7_7x1")]
    Conv1x7_7x1,
    /// A 3x3 convolution with dilation 2.
    #[serde(rename = "dil_conv_3x3")]
    DilConv3x3,
    /// 3x3 average pooling, SAME padding excluded from the count.
    #[serde(rename = "avg_pool_3x3")]
    AvgPool3x3,
    /// 3x3 max pooling.
    #[serde(rename = "max_pool_3x3")]
    MaxPool3x3,
    /// 5x5 max pooling.
    #[serde(rename = "max_pool_5x5")]
    MaxPool5x5,
    /// 7x7 max pooling.
    #[serde(rename = "max_pool_7x7")]
    MaxPool7x7,
    /// A 1x1 convolution.
    #[serde(rename = "conv_1x1")]
    Conv1x1,
    /// A 3x3 convolution.
    #[serde(rename = "conv_3x3")]
    Conv3x3,
    /// 3x3 depthwise-separable convolution, applied twice.
    #[serde(rename = "sep_conv_3x3")]
    SepConv3x3,
    /// 5x5 depthwise-separable convolution, applied twice.
    #[serde(rename = "sep_conv_5x5")]
    SepConv5x5,
    /// 7x7 depthwise-separable convolution, applied twice.
    #[serde(rename = "sep_conv_7x7")]
    SepConv7x7,
}

impl Op {
    /// All 13 operations, in the order the controller's softmax indexes them.
    pub const ALL: [Op; 13] = [
        Op::Identity,
        Op::Conv1x3_3x1,
        Op::Conv1x7_7x1,
        Op::DilConv3x3,
        Op::AvgPool3x3,
        Op::MaxPool3x3,
        Op::MaxPool5x5,
        Op::MaxPool7x7,
        Op::Conv1x1,
        Op::Conv3x3,
        Op::SepConv3x3,
        Op::SepConv5x5,
        Op::SepConv7x7,
    ];

    /// The stable name (`sep_conv_3x3`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Op::Identity => "identity",
            Op::Conv1x3_3x1 => "conv_1x3_3x1",
            Op::Conv1x7_7x1 => "conv_1x7_7x1",
            Op::DilConv3x3 => "dil_conv_3x3",
            Op::AvgPool3x3 => "avg_pool_3x3",
            Op::MaxPool3x3 => "max_pool_3x3",
            Op::MaxPool5x5 => "max_pool_5x5",
            Op::MaxPool7x7 => "max_pool_7x7",
            Op::Conv1x1 => "conv_1x1",
            Op::Conv3x3 => "conv_3x3",
            Op::SepConv3x3 => "sep_conv_3x3",
            Op::SepConv5x5 => "sep_conv_5x5",
            Op::SepConv7x7 => "sep_conv_7x7",
        }
    }

    /// A short label for figures (`sep 5x5`, `avg 3x3`, ...).
    pub fn short_label(self) -> &'static str {
        match self {
            Op::Identity => "identity",
            Op::Conv1x3_3x1 => "1x3+3x1 conv",
            Op::Conv1x7_7x1 => "1x7+7x1 conv",
            Op::DilConv3x3 => "dil 3x3 conv",
            Op::AvgPool3x3 => "avg 3x3",
            Op::MaxPool3x3 => "max 3x3",
            Op::MaxPool5x5 => "max 5x5",
            Op::MaxPool7x7 => "max 7x7",
            Op::Conv1x1 => "1x1 conv",
            Op::Conv3x3 => "3x3 conv",
            Op::SepConv3x3 => "sep 3x3",
            Op::SepConv5x5 => "sep 5x5",
            Op::SepConv7x7 => "sep 7x7",
        }
    }

    /// Whether the op is a pooling (pooling has no weights of its own but may need a projection).
    pub fn is_pool(self) -> bool {
        matches!(
            self,
            Op::AvgPool3x3 | Op::MaxPool3x3 | Op::MaxPool5x5 | Op::MaxPool7x7
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Op {
    type Err = GenotypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Op::ALL
            .iter()
            .copied()
            .find(|op| op.name() == s)
            .ok_or_else(|| GenotypeError::UnknownOp(s.to_string()))
    }
}

/// How a block merges its two op outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Combine {
    /// Element-wise addition (NASNet-A).
    #[serde(rename = "add")]
    Add,
    /// Concatenation along filters (the block's output has twice the filters).
    #[serde(rename = "concat")]
    Concat,
    /// Addition then layer normalisation (NASNet-B/C extension).
    #[serde(rename = "add_layer_norm")]
    AddLayerNorm,
    /// Addition then instance normalisation (NASNet-B/C extension).
    #[serde(rename = "add_instance_norm")]
    AddInstanceNorm,
}

impl Combine {
    /// All combine methods, in the order the controller's softmax indexes them.
    pub const ALL: [Combine; 4] = [
        Combine::Add,
        Combine::Concat,
        Combine::AddLayerNorm,
        Combine::AddInstanceNorm,
    ];

    /// The stable name (`add`, `concat`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Combine::Add => "add",
            Combine::Concat => "concat",
            Combine::AddLayerNorm => "add_layer_norm",
            Combine::AddInstanceNorm => "add_instance_norm",
        }
    }

    /// A short label for figures (`add`, `concat`, `add + LN`, `add + IN`).
    pub fn short_label(self) -> &'static str {
        match self {
            Combine::Add => "add",
            Combine::Concat => "concat",
            Combine::AddLayerNorm => "add + LN",
            Combine::AddInstanceNorm => "add + IN",
        }
    }
}

impl fmt::Display for Combine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Combine {
    type Err = GenotypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Combine::ALL
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| GenotypeError::UnknownCombine(s.to_string()))
    }
}
