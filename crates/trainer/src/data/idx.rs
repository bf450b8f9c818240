//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.
//!
//! Validated strictly: the magic number must be the one expected (0x00000803 for images,
//! 0x00000801 for labels), the byte count must be exactly what the header announces, image and
//! label counts must agree and every label must be a valid class. A truncated download is an
//! error naming the file, never a silently shorter dataset.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::data::Dataset;
use crate::error::DataError;

/// The IDX magic number of an unsigned-byte array of rank 3 (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The IDX magic number of an unsigned-byte array of rank 1 (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// An unsigned-byte IDX array: its dimensions and its bytes in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions from the header.
    pub dims: Vec<usize>,
    /// The data, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

/// Decompresses `bytes` if they start with the gzip magic, else returns them unchanged.
pub(crate) fn maybe_gunzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut out = Vec::with_capacity(bytes.len() * 2);
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("gzip stream is damaged: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Parses an IDX array whose magic must be `expected_magic`; `path` only names errors.
pub(crate) fn parse_idx(
    bytes: &[u8],
    expected_magic: u32,
    path: &Path,
) -> Result<IdxArray, DataError> {
    if bytes.len() < 4 {
        return Err(DataError::format(
            path,
            format!("{} bytes is too short for an IDX header", bytes.len()),
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected_magic {
        return Err(DataError::format(
            path,
            format!("bad IDX magic {magic:#010x}, expected {expected_magic:#010x}"),
        ));
    }
    let rank = (magic & 0xff) as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(DataError::format(
            path,
            format!(
                "truncated header: {} bytes, a rank-{rank} IDX header has {header}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let size = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::format(path, format!("dimensions {dims:?} overflow")))?;
    let body = bytes.len() - header;
    if body < size {
        return Err(DataError::format(
            path,
            format!("truncated: header announces {dims:?} = {size} data bytes, file has {body}"),
        ));
    }
    if body > size {
        return Err(DataError::format(
            path,
            format!(
                "{} unexpected trailing bytes after the {size} data bytes of {dims:?}",
                body - size
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads and parses an IDX file (gzip or raw).
pub fn read_idx_file(path: &Path, expected_magic: u32) -> Result<IdxArray, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = maybe_gunzip(bytes, path)?;
    parse_idx(&bytes, expected_magic, path)
}

/// Builds a dataset from the bytes of an images file and a labels file (gzip or raw); the paths
/// only name errors. Labels must be below `classes`.
pub(crate) fn dataset_from_idx_bytes(
    name: &str,
    images: Vec<u8>,
    images_path: &Path,
    labels: Vec<u8>,
    labels_path: &Path,
    class_names: &[&str],
) -> Result<Dataset, DataError> {
    let images = parse_idx(
        &maybe_gunzip(images, images_path)?,
        IMAGES_MAGIC,
        images_path,
    )?;
    let labels = parse_idx(
        &maybe_gunzip(labels, labels_path)?,
        LABELS_MAGIC,
        labels_path,
    )?;
    let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::format(
            images_path,
            format!("images of size {rows}x{cols}"),
        ));
    }
    if labels.dims[0] != n {
        return Err(DataError::format(
            labels_path,
            format!(
                "{} labels, but {} has {n} images",
                labels.dims[0],
                images_path.display()
            ),
        ));
    }
    let classes = class_names.len();
    let labels: Vec<u32> = labels.data.iter().map(|&l| u32::from(l)).collect();
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: labels_path.to_path_buf(),
            index,
            label,
            classes,
        });
    }
    Dataset::new(
        name,
        images.data,
        labels,
        class_names.iter().map(|s| s.to_string()).collect(),
        1,
        rows,
        cols,
    )
}

/// Reads an images/labels pair of IDX files.
pub fn read_idx_pair(
    name: &str,
    images_path: &Path,
    labels_path: &Path,
    class_names: &[&str],
) -> Result<Dataset, DataError> {
    let images = std::fs::read(images_path).map_err(|e| DataError::io(images_path, e))?;
    let labels = std::fs::read(labels_path).map_err(|e| DataError::io(labels_path, e))?;
    dataset_from_idx_bytes(name, images, images_path, labels, labels_path, class_names)
}

/// Finds `stem` or `stem.gz` in `dir` (the names MNIST-style downloads use).
pub(crate) fn find_idx(dir: &Path, stems: &[&str]) -> Result<PathBuf, DataError> {
    for stem in stems {
        for candidate in [format!("{stem}.gz"), stem.to_string()] {
            let path = dir.join(&candidate);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    Err(DataError::Missing {
        dir: dir.to_path_buf(),
        what: "IDX file".into(),
        looked_for: stems
            .iter()
            .map(|s| format!("{s}[.gz]"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Reads the train and test sets of an MNIST-layout folder (`train-images-idx3-ubyte[.gz]`,
/// `train-labels-idx1-ubyte[.gz]`, `t10k-...`).
pub fn read_mnist_dir(
    name: &str,
    dir: &Path,
    class_names: &[&str],
) -> Result<(Dataset, Dataset), DataError> {
    let train = read_idx_pair(
        name,
        &find_idx(dir, &["train-images-idx3-ubyte", "train-images.idx3-ubyte"])?,
        &find_idx(dir, &["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"])?,
        class_names,
    )?;
    let test = read_idx_pair(
        name,
        &find_idx(dir, &["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"])?,
        &find_idx(dir, &["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"])?,
        class_names,
    )?;
    Ok((train, test))
}
