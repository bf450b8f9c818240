//! What a group of a network's tensors is for, in structure rather than in its name: the cell
//! builder tags the sub-context of each op, normalising combine and input projection with a
//! [`TensorKey`], and a weight-sharing backend (the supernet) that asked for the tags
//! ([`KeyLog`]) gets, for every tensor built under a tagged context, the tag and the name of the
//! context it was set on. The supernet maps a child's tensors onto its shared variables by these
//! tags and never parses a tensor's name; the names themselves stay the ports' names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nasnet_searchspace::{Combine, Op};

/// What the tensors under a tagged context are for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "supernet"), allow(dead_code))]
pub(crate) enum TensorKey {
    /// Weights that read a cell's output: the concatenation of its hidden states `states`, each
    /// `filters` wide. A tensor of rank 2 or more (a convolution's or the classifier's weight)
    /// reads that input along dimension 1; vectors (batch norm, bias) do not.
    ReadsCell {
        /// The hidden states the cell concatenates, in order.
        states: Vec<usize>,
        /// F of that cell: the channels of each state.
        filters: usize,
    },
    /// The op on one side of a block, reading a hidden state of `in_channels` channels.
    Op {
        /// The op placed there.
        op: Op,
        /// Its stride (2 for a reduction cell's ops on the cell inputs).
        stride: usize,
        /// Channels of the hidden state it reads.
        in_channels: usize,
        /// F of the cell (the op's output channels).
        filters: usize,
    },
    /// The normalisation of a block's normalising combine.
    Norm {
        /// The combine.
        combine: Combine,
    },
}

/// A [`TensorKey`] and the full name of the context it was set on (e.g.
/// `cell_3.comb_iter_1_left`), which prefixes every tensor under it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "supernet"), allow(dead_code))]
pub(crate) struct KeyedSlot {
    /// What the tensors are for.
    pub(crate) key: TensorKey,
    /// The full name of the tagged context.
    pub(crate) slot: String,
}

impl KeyedSlot {
    /// The part of `name` (a tensor under this slot) below the slot, e.g. `bn_sep_1.weight`.
    #[cfg(feature = "supernet")]
    pub(crate) fn tail<'a>(&self, name: &'a str) -> &'a str {
        name.strip_prefix(self.slot.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(name)
    }
}

/// Every tagged tensor a build read, by full name: filled by the builder's contexts as the
/// tensors are asked for, so a VarBuilder backend holding the same log finds a tensor's tag
/// when the builder asks it for that tensor.
pub(crate) type KeyLog = Arc<Mutex<HashMap<String, Arc<KeyedSlot>>>>;
