//! Images for the released models: each port's input specification ([`EvalTransform`]), the
//! ImageNet-1k class names in checkpoint order, and (cargo feature `image`, on by default)
//! decoding JPEG and PNG within shared size limits, applying the transform and the training augmentation pieces.

mod classes;
#[cfg(feature = "image")]
mod decode;
mod limits;
#[cfg(feature = "image")]
mod preprocess;
mod transform;

pub use classes::{imagenet_class_name, imagenet_synset, IMAGENET_CLASSES};
#[cfg(feature = "image")]
pub use decode::{load_image, load_rgb};
pub use limits::{check_output_size, MAX_IMAGE_BYTES, MAX_IMAGE_SIDE};
#[cfg(feature = "image")]
pub use preprocess::{
    center_crop, random_horizontal_flip, random_resized_crop, resize, resize_shorter_side,
    to_tensor,
};
pub use transform::{EvalTransform, Interpolation};
