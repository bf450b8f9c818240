//! The dataset readers: IDX files (raw or gzip), CIFAR binary batches, and an image folder.

use nasnet_trainer::readers::cifar::{self, CifarVariant};
use nasnet_trainer::readers::{folder, idx, FASHION_CLASSES};

use crate::{parts, scratch};

/// Two parts, an images file and a labels file (each raw or gzip), read as an MNIST-layout
/// folder; each part is also parsed alone with both magics. Accepted: the pair makes a dataset.
pub fn idx(data: &[u8]) -> bool {
    let files = parts(data, 2);
    let dir = scratch::fresh("idx");
    let images = scratch::put(&dir, "train-images-idx3-ubyte", files[0]);
    let labels = scratch::put(
        &dir,
        "train-labels-idx1-ubyte",
        files.get(1).copied().unwrap_or(b""),
    );
    for file in [&images, &labels] {
        for magic in [idx::IMAGES_MAGIC, idx::LABELS_MAGIC] {
            let _ = idx::read_idx_file(file, magic);
        }
    }
    idx::read_idx_pair("fuzz", &images, &labels, &FASHION_CLASSES).is_ok()
}

/// One CIFAR binary file, read as every file of a CIFAR-10 and a CIFAR-100 folder. Accepted:
/// either folder reads (without the distribution's record counts).
pub fn cifar(data: &[u8]) -> bool {
    let dir = scratch::fresh("cifar");
    let mut names: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    names.extend(["test_batch.bin", "train.bin", "test.bin"].map(String::from));
    for name in &names {
        scratch::put(&dir, name, data);
    }
    let _ = cifar::read_cifar10_dir(&dir, true);
    let _ = cifar::read_cifar100_dir(&dir, true);
    let _ = cifar::parse_cifar(data, CifarVariant::Cifar10, Some(2), &dir);
    let cifar10 = cifar::read_cifar10_dir(&dir, false).is_ok();
    cifar::read_cifar100_dir(&dir, false).is_ok() || cifar10
}

/// Up to two image files (PNG, JPEG or anything else) in two class folders, read as they are,
/// resized to 8 x 8 and through the Mobile port's transform (shorter side to 256, where a thin
/// image would ask for gigabytes were the resize not bounded). Accepted: the folder reads as it
/// is.
pub fn image_folder(data: &[u8]) -> bool {
    let dir = scratch::fresh("image_folder");
    for (i, bytes) in parts(data, 2).into_iter().enumerate() {
        // The extension only admits the file; the decoder guesses the format from the bytes.
        scratch::put(&dir, &format!("class{i}/image.png"), bytes);
    }
    let _ = folder::read_image_folder(&dir, Some(8));
    let mobile = folder::Sizing::ResizeCrop {
        resize: 256,
        crop: 224,
        bicubic: false,
    };
    let _ = folder::read_sized_folder(&dir, mobile);
    folder::read_image_folder(&dir, None).is_ok()
}
