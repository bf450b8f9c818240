//! An image folder: one sub-folder per class holding PNG or JPEG files.
//!
//! Layouts accepted: `DIR/train/<class>/*` with `DIR/test/<class>/*` (or `DIR/val/<class>/*`),
//! or just `DIR/<class>/*`, in which case the caller holds a test set out of it. Classes are the
//! sub-folder names in sorted order (so labels are stable). Every image must have the same size
//! unless a [`Sizing`] says how to bring them to one: resized to a square, or (for fine-tuning a
//! pretrained checkpoint) the ImageNet ports' evaluation transform, shorter side resized then the
//! central square cropped. The dataset is grayscale when every image is, RGB otherwise.

use std::path::{Path, PathBuf};

use nasnet_cells::CellsError;
use rayon::prelude::*;

use crate::data::Dataset;
use crate::error::DataError;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// The class sub-folders of `dir`, sorted by name.
pub(crate) fn class_dirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let dirs: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if dirs.is_empty() {
        return Err(DataError::Missing {
            dir: dir.to_path_buf(),
            what: "class sub-folders".into(),
            looked_for: "one sub-folder per class".into(),
        });
    }
    Ok(dirs)
}

/// How the reader brings images to one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// Every image keeps its size (all must share one).
    AsIs,
    /// Every image resized to `side` x `side` (bilinear; the aspect ratio is not kept).
    Square(usize),
    /// The ports' evaluation transform (`nasnet_cells::vision`, PIL's antialiased resize):
    /// the shorter side resized to `resize` (aspect ratio kept), then the central `crop` x
    /// `crop` square.
    ResizeCrop {
        /// The shorter side after resizing.
        resize: usize,
        /// The side of the central crop (the model's input).
        crop: usize,
        /// Bicubic resampling (timm's Large) rather than bilinear (pretrainedmodels' Mobile).
        bicubic: bool,
    },
}

impl Sizing {
    /// `Square(side)` for a given size, `AsIs` without one.
    pub fn square(size: Option<usize>) -> Self {
        size.map_or(Sizing::AsIs, Sizing::Square)
    }

    /// The largest side an image is resized to before any crop (what the memory check counts).
    fn resized_side(self) -> Option<usize> {
        match self {
            Sizing::AsIs => None,
            Sizing::Square(s) => Some(s),
            Sizing::ResizeCrop { resize, crop, .. } => Some(resize.max(crop)),
        }
    }

    /// The image brought to this sizing; refused when a resize or crop would exceed the decode
    /// limits (a thin image whose shorter side is resized).
    fn apply(self, img: image::DynamicImage) -> Result<image::DynamicImage, CellsError> {
        use image::imageops::FilterType::Triangle;
        use nasnet_cells::vision::{
            center_crop, check_output_size, resize_shorter_side, Interpolation,
        };
        Ok(match self {
            Sizing::AsIs => img,
            Sizing::Square(s) if (img.width(), img.height()) == (s as u32, s as u32) => img,
            Sizing::Square(s) => {
                check_output_size((img.width(), img.height()), s, s)?;
                img.resize_exact(s as u32, s as u32, Triangle)
            }
            Sizing::ResizeCrop {
                resize,
                crop,
                bicubic,
            } => {
                let filter = if bicubic {
                    Interpolation::Bicubic
                } else {
                    Interpolation::Bilinear
                };
                let resized = resize_shorter_side(&img.to_rgb8(), resize, filter)?;
                image::DynamicImage::ImageRgb8(center_crop(&resized, crop, crop)?)
            }
        })
    }
}

struct Decoded {
    rgb: Vec<u8>,
    gray: bool,
    size: (u32, u32),
}

/// Decodes one image (format from its content, within `nasnet_cells::vision`'s limits, a
/// truncated JPEG refused) and brings it to `sizing`.
fn decode(path: &Path, sizing: Sizing) -> Result<Decoded, DataError> {
    let img = nasnet_cells::vision::load_image(path).map_err(|e| match e {
        CellsError::Image { reason, .. } => DataError::format(path, reason),
        other => DataError::format(path, other.to_string()),
    })?;
    let gray = !img.color().has_color();
    let img = sizing
        .apply(img)
        .map_err(|e| DataError::format(path, format!("cannot resize: {e}")))?;
    Ok(Decoded {
        size: (img.width(), img.height()),
        rgb: img.to_rgb8().into_raw(),
        gray,
    })
}

/// An error when `count` images resized to `size` x `size` (RGB bytes, twice: decoded and
/// stored) would need more than the `available` bytes, so an absurd image size is refused
/// before the first multi-gigabyte allocation.
fn check_resized_fit(
    dir: &Path,
    count: usize,
    size: usize,
    available: Option<u64>,
) -> Result<(), DataError> {
    let needed = (size as u64)
        .saturating_mul(size as u64)
        .saturating_mul(3 * 2)
        .saturating_mul(count as u64);
    match available {
        Some(available) if needed > available => Err(DataError::format(
            dir,
            format!(
                "{count} images resized to {size}x{size} need about {:.1} GiB, more than the {:.1} GiB available (choose a smaller image size)",
                needed as f64 / f64::from(1u32 << 30),
                available as f64 / f64::from(1u32 << 30)
            ),
        )),
        _ => Ok(()),
    }
}

/// Reads one class-per-sub-folder tree. `classes`, when given, fixes the class list (so a test
/// tree uses the training tree's labels); a sub-folder not in it is an error. Without it, every
/// sub-folder is a class and must hold an image: an empty one would be a class no image has;
/// and there must be at least 2 (one class trains to loss 0 and 100 % accuracy, learning
/// nothing).
/// Every image is brought to a common size as `sizing` says.
pub(crate) fn read_sized_tree(
    name: &str,
    dir: &Path,
    classes: Option<&[String]>,
    sizing: Sizing,
) -> Result<Dataset, DataError> {
    let dirs = class_dirs(dir)?;
    if classes.is_none() && dirs.len() < 2 {
        return Err(DataError::format(
            dir,
            format!(
                "only one class sub-folder ({}): a classifier needs at least 2 classes (one \
                 sub-folder per class)",
                dirs[0].display()
            ),
        ));
    }
    let class_names: Vec<String> = match classes {
        Some(c) => c.to_vec(),
        None => dirs
            .iter()
            .map(|d| d.file_name().unwrap_or_default().to_string_lossy().into())
            .collect(),
    };
    let mut files = Vec::new();
    for d in &dirs {
        let cname = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let label = class_names
            .iter()
            .position(|c| *c == cname)
            .ok_or_else(|| {
                DataError::format(
                    d,
                    format!("class `{cname}` is not among the training classes"),
                )
            })?;
        let before = files.len();
        for f in sorted_entries(d)? {
            if f.is_file() && is_image(&f) {
                files.push((f, label as u32));
            }
        }
        if classes.is_none() && files.len() == before {
            return Err(DataError::Missing {
                dir: d.to_path_buf(),
                what: format!("images of class `{cname}` (remove the folder or add images)"),
                looked_for: "*.png, *.jpg, *.jpeg".into(),
            });
        }
    }
    if files.is_empty() {
        return Err(DataError::Missing {
            dir: dir.to_path_buf(),
            what: "images".into(),
            looked_for: "*.png, *.jpg, *.jpeg in the class sub-folders".into(),
        });
    }
    if let Some(size) = sizing.resized_side() {
        check_resized_fit(dir, files.len(), size, crate::memory::available_bytes())?;
    }
    let decoded: Vec<Decoded> = files
        .par_iter()
        .map(|(f, _)| decode(f, sizing))
        .collect::<Result<_, _>>()?;
    let (w, h) = decoded[0].size;
    for (d, (f, _)) in decoded.iter().zip(&files) {
        if d.size != (w, h) {
            return Err(DataError::format(
                f,
                format!(
                    "image is {}x{}, but {} is {w}x{h} (pass an image size to resize them all)",
                    d.size.0,
                    d.size.1,
                    files[0].0.display()
                ),
            ));
        }
    }
    let gray = decoded.iter().all(|d| d.gray);
    let channels = if gray { 1 } else { 3 };
    let (w, h) = (w as usize, h as usize);
    let mut pixels = Vec::with_capacity(decoded.len() * channels * h * w);
    for d in &decoded {
        // interleaved HWC RGB -> CHW
        for c in 0..channels {
            pixels.extend(d.rgb.iter().skip(c).step_by(3).copied());
        }
    }
    let labels = files.iter().map(|(_, l)| *l).collect();
    Dataset::new(name, pixels, labels, class_names, channels, h, w)
}

/// Reads an image folder. Returns the training set and, when the folder has a `test/` (or
/// `val/`) tree beside `train/`, the test set.
pub fn read_image_folder(
    dir: &Path,
    size: Option<usize>,
) -> Result<(Dataset, Option<Dataset>), DataError> {
    read_sized_folder(dir, Sizing::square(size))
}

/// [`read_image_folder`] with any [`Sizing`].
pub fn read_sized_folder(
    dir: &Path,
    sizing: Sizing,
) -> Result<(Dataset, Option<Dataset>), DataError> {
    let train_dir = dir.join("train");
    if !train_dir.is_dir() {
        return Ok((read_sized_tree("folder", dir, None, sizing)?, None));
    }
    let train = read_sized_tree("folder", &train_dir, None, sizing)?;
    let sizing = match sizing {
        Sizing::AsIs if train.height == train.width => Sizing::Square(train.height),
        other => other,
    };
    for t in ["test", "val"] {
        let test_dir = dir.join(t);
        if test_dir.is_dir() {
            let mut test = read_sized_tree("folder", &test_dir, Some(&train.class_names), sizing)?;
            if (test.height, test.width) != (train.height, train.width) {
                return Err(DataError::format(
                    &test_dir,
                    format!(
                        "images are {}x{}, training images are {}x{}",
                        test.width, test.height, train.width, train.height
                    ),
                ));
            }
            if test.channels != train.channels {
                test = test.with_channels(train.channels);
            }
            return Ok((train, Some(test)));
        }
    }
    Ok((train, None))
}
