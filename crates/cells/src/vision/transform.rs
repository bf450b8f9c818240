//! What each port's checkpoints expect as input, in one place: the side they were trained at,
//! the resize before the center crop (timm's `crop_pct`), the resize filter and the
//! normalisation. [`EvalTransform`] is that specification; the CLI's `classify`, the fixture
//! tests and the trainer's fine-tuning input all take it from here. Applying it to an image
//! ([`EvalTransform::apply`]) needs the cargo feature `image`; the numbers do not.

use crate::weights::Port;

/// The resampling filter of a resize (PIL's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Triangle filter, support 1 (PIL `BILINEAR`).
    Bilinear,
    /// Keys cubic with a = -0.5, support 2 (PIL `BICUBIC`).
    Bicubic,
}

/// A port's evaluation transform: shorter side to `resize`, center crop `crop`, scale to
/// [0, 1], normalise per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTransform {
    /// Length of the shorter side after resizing.
    pub resize: usize,
    /// Side of the square center crop.
    pub crop: usize,
    /// Resize filter.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

/// The normalisation both ports use: mean and std 0.5 per channel (inputs in [-1, 1]).
const PORT_MEAN_STD: [f32; 3] = [0.5; 3];

/// A port's own input: the side its checkpoints were trained at, the share of the resized
/// image the crop keeps (timm's `crop_pct`) and the resize filter.
struct PortInput {
    crop: usize,
    crop_pct: f64,
    interpolation: Interpolation,
}

impl PortInput {
    fn of(port: Port) -> Self {
        match port {
            Port::PretrainedModels => PortInput {
                crop: 224,
                crop_pct: 0.875,
                interpolation: Interpolation::Bilinear,
            },
            Port::Timm => PortInput {
                crop: 331,
                crop_pct: 0.911,
                interpolation: Interpolation::Bicubic,
            },
        }
    }
}

impl EvalTransform {
    /// pretrainedmodels' `TransformImage` for `nasnetamobile`: 256 bilinear, crop 224, mean and
    /// std 0.5.
    pub fn mobile() -> Self {
        Self::for_port(Port::PretrainedModels)
    }

    /// timm's transform for `nasnetalarge` (crop_pct 0.911): 363 bicubic, crop 331, mean and
    /// std 0.5.
    pub fn large() -> Self {
        Self::for_port(Port::Timm)
    }

    /// The transform of the port whose weights are used, at the size its checkpoints were
    /// trained at.
    pub fn for_port(port: Port) -> Self {
        Self::for_port_at(port, PortInput::of(port).crop)
    }

    /// The port's transform for a `crop` x `crop` input (a model fine-tuned at another size):
    /// the shorter side resized to `floor(crop / crop_pct)` as timm sizes it, with the port's
    /// filter and normalisation.
    pub fn for_port_at(port: Port, crop: usize) -> Self {
        let input = PortInput::of(port);
        EvalTransform {
            resize: (crop as f64 / input.crop_pct).floor() as usize,
            crop,
            interpolation: input.interpolation,
            mean: PORT_MEAN_STD,
            std: PORT_MEAN_STD,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_transforms_have_their_published_sizes() {
        let mobile = EvalTransform::mobile();
        assert_eq!((mobile.resize, mobile.crop), (256, 224));
        assert_eq!(mobile.interpolation, Interpolation::Bilinear);
        let large = EvalTransform::large();
        assert_eq!((large.resize, large.crop), (363, 331));
        assert_eq!(large.interpolation, Interpolation::Bicubic);
        for t in [mobile, large] {
            assert_eq!((t.mean, t.std), ([0.5; 3], [0.5; 3]));
        }
        let small = EvalTransform::for_port_at(Port::PretrainedModels, 96);
        assert_eq!((small.resize, small.crop), (109, 96));
    }
}
