//! Published architectures expressed in this space. NASNet-A is just a constant.
//!
//! Index conventions differ between sources. TF-slim (ours): state 0 is the previous cell's
//! output `h_i`, state 1 the one before, `h_{i-1}`. DARTS's `genotypes.py` and ENAS's
//! `fixed_arc` number them the other way round: their 0 is `s0` = cell k-2 (our 1) and their 1
//! is `s1` = cell k-1 (our 0); states >= 2 (block outputs) agree. The cells below were
//! converted by hand with that swap; the tests check each against the source's output rule.

use crate::error::GenotypeError;
use crate::genotype::{Block, Cell, Genotype};
use crate::ops::Op::*;

/// NASNet-A exactly as TF-slim's `nasnet_utils.py` encodes it
/// (docs/search-space.md#the-released-nasnet-a-encoding): its outputs are
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

/// AmoebaNet-A (Real et al. 2019) as DARTS's `cnn/genotypes.py` encodes it (repository
/// quark0/darts, `AmoebaNet`; pairs per block, DARTS indexing swapped to ours). Outputs are the
/// source's `normal_concat = [4, 5, 6]` and `reduce_concat = [3, 4, 6]`, which are the unused
/// states. `conv_7x1_1x7` is our `conv_1x7_7x1`; `skip_connect` is `identity`.
pub fn amoebanet_a() -> Genotype {
    Genotype {
        normal: Cell {
            blocks: vec![
                Block::add(1, AvgPool3x3, 0, MaxPool3x3),
                Block::add(1, SepConv3x3, 2, SepConv5x5),
                Block::add(1, SepConv3x3, 3, AvgPool3x3),
                Block::add(0, SepConv3x3, 0, Identity),
                Block::add(1, Identity, 0, AvgPool3x3),
            ],
            concat: vec![4, 5, 6],
        },
        reduction: Cell {
            blocks: vec![
                Block::add(1, AvgPool3x3, 0, SepConv3x3),
                Block::add(1, MaxPool3x3, 2, SepConv7x7),
                Block::add(1, SepConv7x7, 0, AvgPool3x3),
                Block::add(1, MaxPool3x3, 0, MaxPool3x3),
                Block::add(1, Conv1x7_7x1, 5, SepConv3x3),
            ],
            concat: vec![3, 4, 6],
        },
    }
}

/// DARTS (second order), `DARTS_V2` in DARTS's `cnn/genotypes.py` (quark0/darts; the same
/// lists appear in forks' copies, e.g. wldyd920/TA-DARTS `run/search0/scripts/genotypes.py`,
/// and per block in kunjing96/DDNAS `genotypes.py`). B = 4; the outputs are the source's
/// `normal_concat = reduce_concat = [2, 3, 4, 5]` (every block output: NASNet-B's rule).
/// Approximations in this space: DARTS's `dil_conv_3x3` is a dilated *separable* conv applied
/// once, here `dil_conv_3x3`; its reduction `skip_connect` is a factorized reduce, here
/// `identity` (a strided 1x1 projection).
pub fn darts_v2() -> Genotype {
    Genotype {
        normal: Cell {
            blocks: vec![
                Block::add(1, SepConv3x3, 0, SepConv3x3),
                Block::add(1, SepConv3x3, 0, SepConv3x3),
                Block::add(0, SepConv3x3, 1, Identity),
                Block::add(1, Identity, 2, DilConv3x3),
            ],
            concat: vec![2, 3, 4, 5],
        },
        reduction: Cell {
            blocks: vec![
                Block::add(1, MaxPool3x3, 0, MaxPool3x3),
                Block::add(2, Identity, 0, MaxPool3x3),
                Block::add(1, MaxPool3x3, 2, Identity),
                Block::add(2, Identity, 0, MaxPool3x3),
            ],
            concat: vec![2, 3, 4, 5],
        },
    }
}

/// DARTS (first order), `DARTS_V1` in DARTS's `cnn/genotypes.py` (quark0/darts; in the stored
/// commit 8876e79 it is the list named `DARTS`). Same conventions as [`darts_v2`].
pub fn darts_v1() -> Genotype {
    Genotype {
        normal: Cell {
            blocks: vec![
                Block::add(0, SepConv3x3, 1, SepConv3x3),
                Block::add(1, Identity, 0, SepConv3x3),
                Block::add(1, Identity, 0, SepConv3x3),
                Block::add(1, SepConv3x3, 2, Identity),
            ],
            concat: vec![2, 3, 4, 5],
        },
        reduction: Cell {
            blocks: vec![
                Block::add(1, MaxPool3x3, 0, MaxPool3x3),
                Block::add(2, Identity, 1, MaxPool3x3),
                Block::add(1, MaxPool3x3, 2, Identity),
                Block::add(2, Identity, 1, AvgPool3x3),
            ],
            concat: vec![2, 3, 4, 5],
        },
    }
}

/// ENAS's micro (cell) architecture for CIFAR-10 (Pham et al. 2018): the `fixed_arc` of
/// melodyguan/enas `scripts/cifar10_micro_final.sh`,
/// `0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1` (normal) and
/// `1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1` (reduction), decoded by
/// `src/cifar10/micro_child.py`: per block (x_id, x_op, y_id, y_op), ops 0 sep 3x3, 1 sep 5x5,
/// 2 avg 3x3, 3 max 3x3, 4 identity, the two results added; ids as in DARTS (0 = cell k-2).
/// The output is every unused state (`_fixed_combine` concatenates states with `used == 0`).
pub fn enas() -> Genotype {
    Genotype {
        normal: Cell {
            blocks: vec![
                Block::add(1, AvgPool3x3, 1, SepConv3x3),
                Block::add(1, Identity, 1, SepConv5x5),
                Block::add(1, Identity, 0, SepConv5x5),
                Block::add(0, SepConv3x3, 1, SepConv5x5),
                Block::add(1, AvgPool3x3, 0, SepConv5x5),
            ],
            concat: vec![2, 3, 4, 5, 6],
        },
        reduction: Cell {
            blocks: vec![
                Block::add(0, SepConv3x3, 0, SepConv3x3),
                Block::add(1, MaxPool3x3, 1, AvgPool3x3),
                Block::add(0, SepConv5x5, 3, SepConv5x5),
                Block::add(0, SepConv3x3, 1, Identity),
                Block::add(1, MaxPool3x3, 0, SepConv5x5),
            ],
            concat: vec![2, 4, 5, 6],
        },
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
    NamedArchitecture {
        name: "amoebanet-a",
        source: "Real et al. 2019; quark0/darts cnn/genotypes.py (AmoebaNet)",
        build: amoebanet_a,
    },
    NamedArchitecture {
        name: "darts-v2",
        source: "Liu et al. 2019; quark0/darts cnn/genotypes.py (DARTS_V2), B = 4",
        build: darts_v2,
    },
    NamedArchitecture {
        name: "darts-v1",
        source: "Liu et al. 2019; quark0/darts cnn/genotypes.py (DARTS_V1), B = 4",
        build: darts_v1,
    },
    NamedArchitecture {
        name: "enas",
        source: "Pham et al. 2018; melodyguan/enas scripts/cifar10_micro_final.sh (fixed_arc)",
        build: enas,
    },
];

/// Looks an architecture up by name (case-insensitive; `_` and `-` are interchangeable;
/// `darts` means `darts-v2`, as in DARTS's own `DARTS = DARTS_V2`).
pub fn by_name(name: &str) -> Result<Genotype, GenotypeError> {
    let mut wanted = name.to_ascii_lowercase().replace('_', "-");
    if wanted == "darts" {
        wanted = "darts-v2".to_string();
    }
    NAMED
        .iter()
        .find(|a| a.name == wanted)
        .map(|a| (a.build)())
        .ok_or_else(|| GenotypeError::UnknownArchitecture {
            name: name.to_string(),
            known: NAMED.iter().map(|a| a.name).collect::<Vec<_>>().join(", "),
        })
}
