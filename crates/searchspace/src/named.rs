//! Published architectures expressed in this space. NASNet-A is just a constant.

use crate::error::GenotypeError;
use crate::genotype::{Block, Cell, Genotype};
use crate::ops::Op::*;

/// NASNet-A exactly as TF-slim's `nasnet_utils.py` encodes it (REFERENCE.md §2): its outputs are
/// the hand-set `used_hiddenstates`, not the unused-state rule.
pub fn nasnet_a() -> Genotype {
    Genotype {
        normal: Cell {
            blocks: vec![
                Block::add(0, SepConv5x5, 1, SepConv3x3),
                Block::add(1, SepConv5x5, 1, SepConv3x3),
                Block::add(0, AvgPool3x3, 1, Identity),
                Block::add(1, AvgPool3x3, 1, AvgPool3x3),
                Block::add(0, SepConv3x3, 0, Identity),
            ],
            concat: vec![1, 2, 3, 4, 5, 6],
        },
        reduction: Cell {
            blocks: vec![
                Block::add(0, SepConv5x5, 1, SepConv7x7),
                Block::add(0, MaxPool3x3, 1, SepConv7x7),
                Block::add(0, AvgPool3x3, 1, SepConv5x5),
                Block::add(3, Identity, 2, AvgPool3x3),
                Block::add(2, SepConv3x3, 0, MaxPool3x3),
            ],
            concat: vec![3, 4, 5, 6],
        },
    }
}

/// PNASNet-5's cell (TF-slim `pnasnet.py`), used in both roles; `used_hiddenstates`
/// [1, 1, 0, 0, 0, 0, 0] gives outputs 2..6.
pub fn pnasnet_5() -> Genotype {
    let cell = Cell {
        blocks: vec![
            Block::add(1, SepConv5x5, 1, MaxPool3x3),
            Block::add(0, SepConv7x7, 0, MaxPool3x3),
            Block::add(0, SepConv5x5, 0, SepConv3x3),
            Block::add(4, SepConv3x3, 0, MaxPool3x3),
            Block::add(1, SepConv3x3, 0, Identity),
        ],
        concat: vec![2, 3, 4, 5, 6],
    };
    Genotype {
        normal: cell.clone(),
        reduction: cell,
    }
}

/// A named architecture and where it comes from.
pub struct NamedArchitecture {
    /// The name used on the command line.
    pub name: &'static str,
    /// Where the encoding comes from.
    pub source: &'static str,
    /// Builds the genotype.
    pub build: fn() -> Genotype,
}

/// Every architecture known by name.
pub const NAMED: &[NamedArchitecture] = &[
    NamedArchitecture {
        name: "nasnet-a",
        source: "Zoph et al. 2018; TF-slim nets/nasnet/nasnet_utils.py",
        build: nasnet_a,
    },
    NamedArchitecture {
        name: "pnasnet-5",
        source: "Liu et al. 2018; TF-slim nets/nasnet/pnasnet.py",
        build: pnasnet_5,
    },
];

/// Looks an architecture up by name (case-insensitive; `_` and `-` are interchangeable).
pub fn by_name(name: &str) -> Result<Genotype, GenotypeError> {
    let wanted = name.to_ascii_lowercase().replace('_', "-");
    NAMED
        .iter()
        .find(|a| a.name == wanted)
        .map(|a| (a.build)())
        .ok_or_else(|| GenotypeError::UnknownArchitecture {
            name: name.to_string(),
            known: NAMED.iter().map(|a| a.name).collect::<Vec<_>>().join(", "),
        })
}
