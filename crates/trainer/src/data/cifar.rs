//! CIFAR-10 and CIFAR-100 in their binary distribution format.
//!
//! CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`, each record one label
//! byte and 3,072 pixel bytes (3 x 32 x 32, channel-major). CIFAR-100: `train.bin` and `test.bin`,
//! each record a coarse and a fine label byte then the pixels; the fine labels (100 classes) are
//! used. A file whose size is not a whole number of records, or whose record count is not the
//! distribution's, is an error naming it.

use std::path::{Path, PathBuf};

use crate::data::Dataset;
use crate::error::DataError;

/// Bytes of pixels in one CIFAR record.
pub const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR variant a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarVariant {
    /// 10 classes, one label byte per record.
    Cifar10,
    /// 100 fine classes (and 20 coarse), two label bytes per record.
    Cifar100,
}

impl CifarVariant {
    /// Label bytes before the pixels of each record.
    pub fn label_bytes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 1,
            CifarVariant::Cifar100 => 2,
        }
    }

    /// Bytes per record.
    pub fn record_size(self) -> usize {
        self.label_bytes() + PIXELS
    }

    /// Number of (fine) classes.
    pub fn classes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 10,
            CifarVariant::Cifar100 => 100,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "cifar10",
            CifarVariant::Cifar100 => "cifar100",
        }
    }
}

/// CIFAR-10's class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses the bytes of one CIFAR binary file into pixels and (fine) labels. `expected_records`,
/// when given, is the record count the file must have. `path` only names errors.
pub fn parse_cifar(
    bytes: &[u8],
    variant: CifarVariant,
    expected_records: Option<usize>,
    path: &Path,
) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    let record = variant.record_size();
    if bytes.is_empty() {
        return Err(DataError::format(path, "empty file"));
    }
    if !bytes.len().is_multiple_of(record) {
        return Err(DataError::format(
            path,
            format!(
                "{} bytes is not a whole number of {record}-byte {} records (truncated or not a CIFAR binary file)",
                bytes.len(),
                variant.name()
            ),
        ));
    }
    let n = bytes.len() / record;
    if let Some(expected) = expected_records {
        if n != expected {
            return Err(DataError::format(
                path,
                format!("{n} records, expected {expected}"),
            ));
        }
    }
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let (coarse, fine) = match variant {
            CifarVariant::Cifar10 => (None, rec[0]),
            CifarVariant::Cifar100 => (Some(rec[0]), rec[1]),
        };
        if let Some(c) = coarse {
            if c >= 20 {
                return Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index,
                    label: u32::from(c),
                    classes: 20,
                });
            }
        }
        if usize::from(fine) >= variant.classes() {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label: u32::from(fine),
                classes: variant.classes(),
            });
        }
        labels.push(u32::from(fine));
        pixels.extend_from_slice(&rec[variant.label_bytes()..]);
    }
    Ok((pixels, labels))
}

fn read_files(
    variant: CifarVariant,
    files: &[(PathBuf, Option<usize>)],
) -> Result<Dataset, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (path, expected) in files {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let (p, l) = parse_cifar(&bytes, variant, *expected, path)?;
        pixels.extend_from_slice(&p);
        labels.extend_from_slice(&l);
    }
    let class_names = match variant {
        CifarVariant::Cifar10 => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        CifarVariant::Cifar100 => (0..100).map(|i| format!("class_{i}")).collect(),
    };
    Dataset::new(variant.name(), pixels, labels, class_names, 3, 32, 32)
}

/// The folder holding the `.bin` files: `dir` itself or the archive's sub-folder.
fn locate(dir: &Path, variant: CifarVariant, probe: &str) -> Result<PathBuf, DataError> {
    let sub = match variant {
        CifarVariant::Cifar10 => "cifar-10-batches-bin",
        CifarVariant::Cifar100 => "cifar-100-binary",
    };
    for candidate in [dir.to_path_buf(), dir.join(sub)] {
        if candidate.join(probe).is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::Missing {
        dir: dir.to_path_buf(),
        what: format!("{} binary files", variant.name()),
        looked_for: format!("{probe} in the folder or in {sub}/"),
    })
}

/// Reads CIFAR-10's train (50,000) and test (10,000) sets from a folder. With `strict_counts`
/// every file must hold the distribution's 10,000 records.
pub fn read_cifar10_dir(dir: &Path, strict_counts: bool) -> Result<(Dataset, Dataset), DataError> {
    let v = CifarVariant::Cifar10;
    let root = locate(dir, v, "test_batch.bin")?;
    let expected = strict_counts.then_some(10_000);
    let train: Vec<_> = (1..=5)
        .map(|i| (root.join(format!("data_batch_{i}.bin")), expected))
        .collect();
    let test = vec![(root.join("test_batch.bin"), expected)];
    Ok((read_files(v, &train)?, read_files(v, &test)?))
}

/// Reads CIFAR-100's train (50,000) and test (10,000) sets, with fine labels. With
/// `strict_counts` the files must hold the distribution's record counts.
pub fn read_cifar100_dir(dir: &Path, strict_counts: bool) -> Result<(Dataset, Dataset), DataError> {
    let v = CifarVariant::Cifar100;
    let root = locate(dir, v, "test.bin")?;
    let train = vec![(root.join("train.bin"), strict_counts.then_some(50_000))];
    let test = vec![(root.join("test.bin"), strict_counts.then_some(10_000))];
    Ok((read_files(v, &train)?, read_files(v, &test)?))
}
