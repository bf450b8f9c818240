//! The datasets by kind, with the one list of their names: [`DatasetKind`] parses a name (and
//! its accepted spellings) and prints the canonical one, so a caller that takes a dataset by
//! name (a command line, a config file) and [`DataSource`] agree on every name without keeping
//! their own lists.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::data::DataSource;
use crate::error::DataError;

/// Which dataset a [`DataSource`] reads, without its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// The Fashion-MNIST subset built into the library (no folder).
    Embedded,
    /// Fashion-MNIST IDX files.
    FashionMnist,
    /// MNIST IDX files.
    Mnist,
    /// CIFAR-10 binary files.
    Cifar10,
    /// CIFAR-100 binary files.
    Cifar100,
    /// A class-per-sub-folder image tree.
    Folder,
}

impl DatasetKind {
    /// Every kind, in the order names are listed to users.
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::Embedded,
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Folder,
    ];

    /// The canonical name (used in messages, metrics and listings).
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Embedded => "embedded",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Folder => "folder",
        }
    }

    /// The other spellings accepted for this kind (lowercase; a parse ignores case), so a
    /// listing can offer them as aliases.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            DatasetKind::FashionMnist => &["fashionmnist", "fashion_mnist"],
            DatasetKind::Cifar10 => &["cifar-10", "cifar_10"],
            DatasetKind::Cifar100 => &["cifar-100", "cifar_100"],
            DatasetKind::Embedded | DatasetKind::Mnist | DatasetKind::Folder => &[],
        }
    }

    /// The canonical names of all kinds, comma-separated, for an error message.
    pub fn names() -> String {
        let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
        names.join(", ")
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    /// A kind by its name or one of its aliases, in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let key = text.to_ascii_lowercase();
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.name() == key || k.aliases().contains(&key.as_str()))
            .ok_or_else(|| DataError::UnknownDataset {
                name: text.to_string(),
                known: DatasetKind::names(),
            })
    }
}

impl DataSource {
    /// Builds a source of `kind` reading folder `dir` (required by all but `embedded`); an
    /// image size applies to `folder` only and is ignored otherwise.
    pub fn from_kind(
        kind: DatasetKind,
        dir: Option<&Path>,
        image_size: Option<usize>,
    ) -> Result<Self, DataError> {
        let folder = || {
            dir.map(Path::to_path_buf)
                .ok_or_else(|| DataError::NeedsDir {
                    dataset: kind.to_string(),
                })
        };
        Ok(match kind {
            DatasetKind::Embedded => DataSource::Embedded,
            DatasetKind::FashionMnist => DataSource::FashionMnist { dir: folder()? },
            DatasetKind::Mnist => DataSource::Mnist { dir: folder()? },
            DatasetKind::Cifar10 => DataSource::Cifar10 { dir: folder()? },
            DatasetKind::Cifar100 => DataSource::Cifar100 { dir: folder()? },
            DatasetKind::Folder => DataSource::Folder {
                dir: folder()?,
                image_size,
            },
        })
    }

    /// The kind of dataset this source reads.
    pub fn kind(&self) -> DatasetKind {
        match self {
            DataSource::Embedded => DatasetKind::Embedded,
            DataSource::FashionMnist { .. } => DatasetKind::FashionMnist,
            DataSource::Mnist { .. } => DatasetKind::Mnist,
            DataSource::Cifar10 { .. } => DatasetKind::Cifar10,
            DataSource::Cifar100 { .. } => DatasetKind::Cifar100,
            DataSource::Folder { .. } => DatasetKind::Folder,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DatasetKind;

    #[test]
    fn every_name_and_alias_parses_back_to_its_kind() {
        for kind in DatasetKind::ALL {
            assert_eq!(kind.to_string().parse::<DatasetKind>().unwrap(), kind);
            assert_eq!(
                kind.name().to_uppercase().parse::<DatasetKind>().unwrap(),
                kind
            );
            for alias in kind.aliases() {
                assert_eq!(alias.parse::<DatasetKind>().unwrap(), kind, "{alias}");
            }
        }
        assert!("imagenet".parse::<DatasetKind>().is_err());
        assert_eq!(
            DatasetKind::names(),
            "embedded, fashion-mnist, mnist, cifar10, cifar100, folder"
        );
    }
}
