//! Images for the released models: each port's input specification ([`EvalTransform`]), the
//! ImageNet-1k class names in checkpoint order, and (cargo feature `image`, on by default)
//! decoding JPEG and PNG, applying the transform and the training augmentation pieces.

mod classes;
#[cfg(feature = "image")]
mod preprocess;
mod transform;

pub use classes::{imagenet_class_name, imagenet_synset, IMAGENET_CLASSES};
#[cfg(feature = "image")]
pub use preprocess::{
    center_crop, load_rgb, random_horizontal_flip, random_resized_crop, resize,
    resize_shorter_side, to_tensor,
};
pub use transform::{EvalTransform, Interpolation};
