//! Images into the tensors the released NASNet-A models expect (behind the default cargo feature
//! `image`): applying a port's evaluation transform ([`EvalTransform::apply`]) and the training
//! augmentation pieces (random-resized crop, horizontal flip) for fine-tuning. Every resize and
//! crop is refused beyond the decode limits (`super::limits`), so that a tiny thin image cannot
//! ask for gigabytes after a bounded decode.
//!
//! The ports resize with PIL, so this module follows PIL's `Image.resize` (antialiased
//! separable resampling: a filter widened by the scale factor when shrinking, horizontal pass
//! then vertical, each rounded to 8 bits) and torchvision's `Resize(int)` / `CenterCrop`
//! arithmetic; libraries differ in detail, so the result is close to, not equal to, the ports'
//! (tests/data/README.md states the tolerance).

use candle_core::{Device, Tensor};
use image::RgbImage;
use rand::Rng;

use super::limits::check_step;
use super::transform::{EvalTransform, Interpolation};
use crate::error::CellsError;

/// The filters' kernels, for [`resize`].
impl Interpolation {
    /// How far from its centre the filter reaches, in source pixels at scale 1.
    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    /// The filter's weight at distance `x`.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interpolation::Bilinear => (1.0 - x).max(0.0),
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

impl EvalTransform {
    /// The image as a 3 x crop x crop f32 tensor (stack several for a batch).
    pub fn apply(&self, image: &RgbImage, device: &Device) -> Result<Tensor, CellsError> {
        let resized = resize_shorter_side(image, self.resize, self.interpolation)?;
        let cropped = center_crop(&resized, self.crop, self.crop)?;
        to_tensor(&cropped, self.mean, self.std, device)
    }
}

/// torchvision's `Resize(size)`: the shorter side becomes `size`, the longer one
/// `int(size * long / short)`. Refused ([`CellsError::ImageTooLarge`]) when that is beyond the
/// decode limits, as for a very thin image.
pub fn resize_shorter_side(
    image: &RgbImage,
    size: usize,
    filter: Interpolation,
) -> Result<RgbImage, CellsError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (nw, nh) = if w <= h {
        (size, size.saturating_mul(h) / w.max(1))
    } else {
        (size.saturating_mul(w) / h.max(1), size)
    };
    resize(image, nw.max(1), nh.max(1), filter)
}

/// PIL's antialiased resize to `width x height`: horizontal pass, then vertical, each rounded
/// to 8 bits. Refused ([`CellsError::ImageTooLarge`]) beyond the decode limits.
pub fn resize(
    image: &RgbImage,
    width: usize,
    height: usize,
    filter: Interpolation,
) -> Result<RgbImage, CellsError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    check_step((image.width(), image.height()), width, height, h)?;
    let src = image.as_raw();
    let horizontal = if w == width {
        src.to_vec()
    } else {
        let taps = filter_taps(w, width, filter);
        resample(src, w, h, &taps, Axis::Horizontal)
    };
    let vertical = if h == height {
        horizontal
    } else {
        let taps = filter_taps(h, height, filter);
        resample(&horizontal, width, h, &taps, Axis::Vertical)
    };
    Ok(RgbImage::from_raw(width as u32, height as u32, vertical)
        .unwrap_or_else(|| RgbImage::new(width as u32, height as u32)))
}

/// One output pixel's source range and normalised weights.
struct Taps {
    first: usize,
    weights: Vec<f64>,
}

/// PIL's `precompute_coeffs`: the filter is stretched by the scale when shrinking (the
/// antialiasing), centred on the output pixel's centre in input coordinates.
fn filter_taps(in_size: usize, out_size: usize, filter: Interpolation) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let first = ((center - support + 0.5) as isize).max(0) as usize;
            let last = ((center + support + 0.5) as usize).min(in_size);
            let mut weights: Vec<f64> = (first..last)
                .map(|j| filter.weight((j as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            Taps { first, weights }
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Axis {
    Horizontal,
    Vertical,
}

/// Resamples interleaved RGB (`width x height` pixels) along one axis with one set of taps
/// per output position on that axis.
fn resample(src: &[u8], width: usize, height: usize, taps: &[Taps], axis: Axis) -> Vec<u8> {
    let (out_w, out_h) = match axis {
        Axis::Horizontal => (taps.len(), height),
        Axis::Vertical => (width, taps.len()),
    };
    let mut out = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let t = match axis {
                Axis::Horizontal => &taps[x],
                Axis::Vertical => &taps[y],
            };
            let source = |j: usize| match axis {
                Axis::Horizontal => (y * width + j) * 3,
                Axis::Vertical => (j * width + x) * 3,
            };
            for c in 0..3 {
                let sum: f64 = (t.first..)
                    .zip(&t.weights)
                    .map(|(j, w)| w * f64::from(src[source(j) + c]))
                    .sum();
                out[(y * out_w + x) * 3 + c] = sum.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// torchvision's `CenterCrop`: offsets `round((size - crop) / 2)` (half to even, as Python
/// rounds); a crop larger than the image is padded with black as torchvision pads. Refused
/// ([`CellsError::ImageTooLarge`]) beyond the decode limits.
pub fn center_crop(image: &RgbImage, width: usize, height: usize) -> Result<RgbImage, CellsError> {
    check_step((image.width(), image.height()), width, height, height)?;
    let offset = |size: u32, crop: usize| -> i64 {
        let d = (size as f64 - crop as f64) / 2.0;
        d.round_ties_even() as i64
    };
    let (left, top) = (offset(image.width(), width), offset(image.height(), height));
    Ok(RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if sx < 0 || sy < 0 || sx >= image.width() as i64 || sy >= image.height() as i64 {
            image::Rgb([0, 0, 0])
        } else {
            *image.get_pixel(sx as u32, sy as u32)
        }
    }))
}

/// An RGB image as a 3 x H x W f32 tensor: `(v / 255 - mean) / std` per channel.
pub fn to_tensor(
    image: &RgbImage,
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<Tensor, CellsError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut values = vec![0f32; 3 * w * h];
    for (i, px) in image.pixels().enumerate() {
        for c in 0..3 {
            values[c * w * h + i] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    Ok(Tensor::from_vec(values, (3, h, w), device)?)
}

/// torchvision's `RandomResizedCrop(size)` for training: a random area of 8% to 100% of the
/// image with aspect ratio between 3/4 and 4/3 (log-uniform), resized to `size x size`; after
/// ten misses, the central crop of the nearest allowed ratio. Refused
/// ([`CellsError::ImageTooLarge`]) when `size x size` is beyond the decode limits.
pub fn random_resized_crop<R: Rng>(
    image: &RgbImage,
    size: usize,
    filter: Interpolation,
    rng: &mut R,
) -> Result<RgbImage, CellsError> {
    let (w, h) = (image.width() as f64, image.height() as f64);
    let area = w * h;
    let (log_lo, log_hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..=1.0);
        let ratio = rng.random_range(log_lo..=log_hi).exp();
        let cw = (target * ratio).sqrt().round();
        let ch = (target / ratio).sqrt().round();
        if cw >= 1.0 && ch >= 1.0 && cw <= w && ch <= h {
            let x = rng.random_range(0..=(w - cw) as u32);
            let y = rng.random_range(0..=(h - ch) as u32);
            let crop = image::imageops::crop_imm(image, x, y, cw as u32, ch as u32).to_image();
            return resize(&crop, size, size, filter);
        }
    }
    let ratio = w / h;
    let (cw, ch) = if ratio < 3.0 / 4.0 {
        (w, (w / (3.0 / 4.0)).round())
    } else if ratio > 4.0 / 3.0 {
        ((h * 4.0 / 3.0).round(), h)
    } else {
        (w, h)
    };
    let crop = center_crop(image, cw as usize, ch as usize)?;
    resize(&crop, size, size, filter)
}

/// Mirrors the image left to right with probability 1/2 (torchvision's
/// `RandomHorizontalFlip`).
pub fn random_horizontal_flip<R: Rng>(image: RgbImage, rng: &mut R) -> RgbImage {
    if rng.random_bool(0.5) {
        image::imageops::flip_horizontal(&image)
    } else {
        image
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_averages_and_keeps_constants() {
        // A constant image stays constant whatever the filter and scale.
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([200, 10, 99]));
        for f in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let r = resize(&flat, 11, 40, f).unwrap();
            assert!(r.pixels().all(|p| p.0 == [200, 10, 99]));
        }
        // Halving a 0/255 stripe pattern with the triangle filter widened to 2 pixels averages
        // each pair (PIL gives 128 for these).
        let stripes = RgbImage::from_fn(8, 1, |x, _| {
            image::Rgb([if x % 2 == 0 { 0 } else { 255 }; 3])
        });
        let r = resize(&stripes, 4, 1, Interpolation::Bilinear).unwrap();
        assert!(
            r.pixels().skip(1).take(2).all(|p| p.0[0] == 128),
            "{:?}",
            r.as_raw()
        );
    }

    #[test]
    fn shorter_side_and_center_crop_follow_torchvision() {
        let img = RgbImage::new(512, 600);
        let r = resize_shorter_side(&img, 363, Interpolation::Bicubic).unwrap();
        assert_eq!((r.width(), r.height()), (363, 425));
        let marked = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8, y as u8, 0]));
        // (5 - 2) / 2 = 1.5 rounds to 2, (4 - 2) / 2 = 1.
        let c = center_crop(&marked, 2, 2).unwrap();
        assert_eq!(c.get_pixel(0, 0).0, [2, 1, 0]);
    }

    #[test]
    fn random_resized_crop_has_the_size_asked() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let img = RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 1]));
        for _ in 0..20 {
            let c = random_resized_crop(&img, 16, Interpolation::Bilinear, &mut rng).unwrap();
            assert_eq!((c.width(), c.height()), (16, 16));
        }
    }

    #[test]
    fn a_resize_beyond_the_decode_limits_is_refused_before_allocating() {
        // A 1 x 65535 image with its shorter side to 256 would be 256 x 16776960 (12.9 GB).
        let thin = RgbImage::new(1, 65535);
        let err = resize_shorter_side(&thin, 256, Interpolation::Bilinear).unwrap_err();
        assert!(
            matches!(
                err,
                CellsError::ImageTooLarge {
                    to: (256, 16776960),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("aspect ratio"), "{err}");
        let wide = RgbImage::new(16384, 1);
        assert!(resize_shorter_side(&wide, 256, Interpolation::Bicubic).is_err());
        // Within the limits but over the bytes: 16384 x 16384 RGB is 768 MiB.
        assert!(resize(&RgbImage::new(2, 2), 16384, 16384, Interpolation::Bilinear).is_err());
        assert!(center_crop(&RgbImage::new(2, 2), 16384, 16384).is_err());
        // A thin image whose resize fits is still resized.
        let r = resize_shorter_side(&RgbImage::new(4, 64), 16, Interpolation::Bilinear).unwrap();
        assert_eq!((r.width(), r.height()), (16, 256));
    }
}
