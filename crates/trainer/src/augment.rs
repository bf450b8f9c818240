//! Data augmentation as in the paper's CIFAR setup: random crop from a zero-padded image,
//! horizontal flip, cutout, then per-channel normalisation; for fine-tuning a pretrained
//! checkpoint, the ImageNet ports' random-resized crop (torchvision's `RandomResizedCrop`).
//!
//! Every random choice comes from a ChaCha8 generator seeded from (run seed, epoch, batch
//! index), so a batch is the same whatever thread makes it and however a run was interrupted
//! and resumed. Padding pixels are raw zeros (black) before normalisation, as torchvision's
//! `RandomCrop(padding=p)` does; cutout zeroes the normalised values (DeVries & Taylor 2017).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Normalization};

/// Which augmentations to apply to training batches (evaluation batches are only normalised).
/// Non-exhaustive, as it grows: start from a preset ([`AugmentConfig::none`],
/// [`AugmentConfig::cifar_like`], [`AugmentConfig::fine_tune`]) and set fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AugmentConfig {
    /// Zero padding on each side before a random crop back to the original size (0: no crop).
    pub crop_padding: usize,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
    /// Side of the square zeroed at a random centre (0: no cutout).
    pub cutout: usize,
    /// Inception-style random-resized crop before the other steps: a random region of 8 % to
    /// 100 % of the image's area with aspect ratio 3/4 to 4/3, resized (bilinear) back to the
    /// image's size; the training transform of the ImageNet ports, used when fine-tuning.
    #[serde(default)]
    pub random_resized_crop: bool,
}

impl AugmentConfig {
    /// No augmentation.
    pub fn none() -> Self {
        AugmentConfig {
            crop_padding: 0,
            flip: false,
            cutout: 0,
            random_resized_crop: false,
        }
    }

    /// The paper's CIFAR setup scaled to an image of side `size`: padding 4 at 32 (so 3 at 28),
    /// flips, and no cutout (the paper reports cutout separately).
    pub fn cifar_like(size: usize) -> Self {
        AugmentConfig {
            crop_padding: ((size as f64) / 8.0).round() as usize,
            flip: true,
            cutout: 0,
            random_resized_crop: false,
        }
    }

    /// The ImageNet ports' training transform for fine-tuning: random-resized crop and flips.
    pub fn fine_tune() -> Self {
        AugmentConfig {
            flip: true,
            random_resized_crop: true,
            ..AugmentConfig::none()
        }
    }
}

/// The image `pixels` (`channels x height x width` bytes, 1 or 3 channels) after
/// `nasnet_cells::vision::random_resized_crop` back to `height x width` (bilinear, as
/// torchvision's default), in the same layout.
pub(crate) fn random_resized_crop(
    pixels: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    rng: &mut impl Rng,
) -> Vec<u8> {
    use nasnet_cells::vision::{self, Interpolation};
    let plane = height * width;
    let channel = |c: usize, i: usize| pixels[c.min(channels - 1) * plane + i];
    let rgb = image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let i = y as usize * width + x as usize;
        image::Rgb([channel(0, i), channel(1, i), channel(2, i)])
    });
    // The crop and its resize are no larger than the image, which was decoded within the limits
    // the resizes check; only a one-channel image whose RGB bytes exceed them can be refused,
    // and it then stays uncropped rather than the batch failing.
    let cropped =
        vision::random_resized_crop(&rgb, height, Interpolation::Bilinear, rng).and_then(|out| {
            match width == height {
                true => Ok(out),
                false => vision::resize(&out, width, height, Interpolation::Bilinear),
            }
        });
    let Ok(out) = cropped else {
        return pixels.to_vec();
    };
    let mut chw = vec![0u8; channels * plane];
    for (i, px) in out.pixels().enumerate() {
        for c in 0..channels {
            chw[c * plane + i] = px[c];
        }
    }
    chw
}

/// The random choices for one image, drawn in a fixed order from the batch generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AugmentDraw {
    /// Crop offset in the padded image, rows (0..=2p).
    pub dy: usize,
    /// Crop offset in the padded image, columns (0..=2p).
    pub dx: usize,
    /// Whether to flip.
    pub flip: bool,
    /// Cutout centre (row, column), when cutout is on.
    pub cutout_center: Option<(usize, usize)>,
}

impl AugmentDraw {
    /// Draws the choices for an image of `height` x `width`.
    pub(crate) fn sample(
        cfg: &AugmentConfig,
        height: usize,
        width: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let p = cfg.crop_padding;
        let (dy, dx) = if p > 0 {
            (rng.random_range(0..=2 * p), rng.random_range(0..=2 * p))
        } else {
            (0, 0)
        };
        let flip = cfg.flip && rng.random_bool(0.5);
        let cutout_center =
            (cfg.cutout > 0).then(|| (rng.random_range(0..height), rng.random_range(0..width)));
        AugmentDraw {
            dy,
            dx,
            flip,
            cutout_center,
        }
    }

    /// The identity transform.
    pub(crate) fn none() -> Self {
        AugmentDraw {
            dy: 0,
            dx: 0,
            flip: false,
            cutout_center: None,
        }
    }
}

/// Writes image `pixels` (`channels x height x width` bytes), transformed by `draw` and
/// normalised with `norm`, into `out` (`channels x height x width` floats).
#[allow(clippy::too_many_arguments)]
pub(crate) fn transform_into(
    pixels: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    cfg: &AugmentConfig,
    draw: &AugmentDraw,
    norm: &Normalization,
    out: &mut [f32],
) {
    let p = cfg.crop_padding as isize;
    let plane = height * width;
    for c in 0..channels {
        let scale = 1.0 / (255.0 * norm.std[c]);
        let shift = -norm.mean[c] / norm.std[c];
        let src = &pixels[c * plane..(c + 1) * plane];
        let dst = &mut out[c * plane..(c + 1) * plane];
        for y in 0..height {
            let sy = y as isize + draw.dy as isize - p;
            let row = &mut dst[y * width..(y + 1) * width];
            if sy < 0 || sy >= height as isize {
                row.fill(shift);
                continue;
            }
            let srow = &src[sy as usize * width..(sy as usize + 1) * width];
            for (x, o) in row.iter_mut().enumerate() {
                let fx = if draw.flip { width - 1 - x } else { x };
                let sx = fx as isize + draw.dx as isize - p;
                *o = if sx < 0 || sx >= width as isize {
                    shift
                } else {
                    f32::from(srow[sx as usize]) * scale + shift
                };
            }
        }
        if let Some((cy, cx)) = draw.cutout_center {
            let half = cfg.cutout / 2;
            let (y0, y1) = (
                cy.saturating_sub(half),
                (cy + cfg.cutout - half).min(height),
            );
            let (x0, x1) = (cx.saturating_sub(half), (cx + cfg.cutout - half).min(width));
            for y in y0..y1 {
                dst[y * width + x0..y * width + x1].fill(0.0);
            }
        }
    }
}

/// Mixes a run seed, an epoch and a batch index into one generator seed (splitmix64 steps, so
/// nearby inputs give unrelated streams).
pub(crate) fn mix_seed(seed: u64, epoch: u64, batch: u64) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    splitmix(splitmix(splitmix(seed) ^ epoch) ^ batch)
}

/// The generator for batch `batch` of epoch `epoch`.
pub(crate) fn batch_rng(seed: u64, epoch: u64, batch: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix_seed(seed, epoch, batch))
}

/// Builds one batch: the images at `indices`, augmented with `cfg` (draws from
/// `batch_rng(seed, epoch, batch)`; a random-resized crop's region is drawn first) or only
/// normalised when `cfg` is `None`. Returns the `(len, C, H, W)` floats and the labels.
pub(crate) fn make_batch(
    data: &Dataset,
    indices: &[usize],
    cfg: Option<&AugmentConfig>,
    rng: &mut impl Rng,
) -> (Vec<f32>, Vec<u32>) {
    let size = data.image_size();
    let mut images = vec![0f32; indices.len() * size];
    let none = AugmentConfig::none();
    for (slot, &i) in indices.iter().enumerate() {
        let cropped = cfg.filter(|c| c.random_resized_crop).map(|_| {
            random_resized_crop(data.image(i), data.channels, data.height, data.width, rng)
        });
        let (c, draw) = match cfg {
            Some(c) => (c, AugmentDraw::sample(c, data.height, data.width, rng)),
            None => (&none, AugmentDraw::none()),
        };
        transform_into(
            cropped.as_deref().unwrap_or(data.image(i)),
            data.channels,
            data.height,
            data.width,
            c,
            &draw,
            &data.norm,
            &mut images[slot * size..(slot + 1) * size],
        );
    }
    let labels = indices.iter().map(|&i| data.labels[i]).collect();
    (images, labels)
}
