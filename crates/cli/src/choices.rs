//! Typed command-line values shared by the subcommands: clap parses each once, `--help` lists
//! the fixed choices, and a wrong value is a usage error naming the valid ones.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Result;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::ValueEnum;
use nasnet_cells::{parse_net, NetSize, StemKind};
use nasnet_controller::StrategyKind;
use nasnet_trainer::{DataSource, DatasetKind, TrainError};

use crate::input::user_error;

/// The `--dataset` parser: the trainer's dataset names (and their aliases, in any case) as
/// clap's possible values, each with its help line, parsed into a [`DatasetKind`].
pub fn dataset_parser() -> impl TypedValueParser<Value = DatasetKind> {
    let values = DatasetKind::ALL.map(|kind| {
        PossibleValue::new(kind.name())
            .aliases(kind.aliases().iter().copied())
            .help(dataset_help(kind))
    });
    PossibleValuesParser::new(values).try_map(|name| name.parse::<DatasetKind>())
}

/// What `--help` says of a dataset.
fn dataset_help(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Embedded => "The Fashion-MNIST subset built into the binary (no download)",
        DatasetKind::FashionMnist => "Fashion-MNIST IDX files in --data-dir",
        DatasetKind::Mnist => "MNIST IDX files in --data-dir",
        DatasetKind::Cifar10 => "CIFAR-10 binary files in --data-dir",
        DatasetKind::Cifar100 => "CIFAR-100 binary files in --data-dir",
        DatasetKind::Folder => "A class-per-sub-folder image tree in --data-dir",
    }
}

/// The data source of `--dataset kind`, with the folder canonicalised (so a resume from another
/// working folder finds it); every dataset but `embedded` needs the folder. An image size is for
/// `folder` only (the others have a fixed size): given for another dataset it is an error, not
/// silently ignored.
pub fn dataset_source(
    kind: DatasetKind,
    dir: Option<&Path>,
    image_size: Option<usize>,
) -> Result<DataSource> {
    if image_size.is_some() && kind != DatasetKind::Folder {
        return Err(user_error(format!(
            "--image-size applies to --dataset folder only; {kind} images have a fixed size"
        )));
    }
    if image_size == Some(0) {
        return Err(user_error("--image-size must be at least 1"));
    }
    let dir = match dir {
        Some(d) => Some(
            std::fs::canonicalize(d)
                .map_err(|e| user_error(format!("data folder {}: {e}", d.display())))?,
        ),
        None => None,
    };
    DataSource::from_kind(kind, dir.as_deref(), image_size)
        .map_err(|e| anyhow::Error::new(TrainError::Data(e)))
}

/// Which stem to put before the cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StemArg {
    /// 3x3 conv keeping the resolution (small images such as CIFAR-10).
    Cifar,
    /// conv0 stride 2 and two reduction stem cells (ImageNet-sized images).
    Imagenet,
}

impl StemArg {
    /// The model's stem kind.
    pub fn kind(self) -> StemKind {
        match self {
            StemArg::Cifar => StemKind::Cifar,
            StemArg::Imagenet => StemKind::ImageNet,
        }
    }
}

/// A search strategy (the controller crate's [`StrategyKind`], listed for clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// The paper's controller trained with PPO.
    Ppo,
    /// The same controller trained with REINFORCE.
    Reinforce,
    /// Uniformly random architectures.
    Random,
    /// Regularized evolution.
    Evolution,
}

impl From<StrategyArg> for StrategyKind {
    fn from(arg: StrategyArg) -> Self {
        match arg {
            StrategyArg::Ppo => StrategyKind::Ppo,
            StrategyArg::Reinforce => StrategyKind::Reinforce,
            StrategyArg::Random => StrategyKind::Random,
            StrategyArg::Evolution => StrategyKind::Evolution,
        }
    }
}

/// A network size on the command line: `N@P`, or a released ImageNet preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetArg {
    /// `N@P`: N normal cells per stack, P = 24 F.
    Size(NetSize),
    /// NASNet-A Mobile (4@1056, ImageNet stem, 224 px).
    Mobile,
    /// NASNet-A Large (6@4032, ImageNet stem, 331 px).
    Large,
}

impl FromStr for NetArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "mobile" => Ok(NetArg::Mobile),
            "large" => Ok(NetArg::Large),
            other => parse_net(other)
                .map(NetArg::Size)
                .map_err(|e| format!("{e} (or `mobile` / `large`)")),
        }
    }
}

impl fmt::Display for NetArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetArg::Size(size) => size.fmt(f),
            NetArg::Mobile => f.write_str("mobile"),
            NetArg::Large => f.write_str("large"),
        }
    }
}

/// Parses an `N@P` size for clap (`--child-net`).
pub fn net_size(text: &str) -> Result<NetSize, String> {
    parse_net(text).map_err(|e| e.to_string())
}
