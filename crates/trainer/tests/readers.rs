//! The dataset readers on small files written to a temp folder: well-formed files load with the
//! right shapes and labels; malformed ones (bad magic, truncated, count mismatch, labels out of
//! range, damaged gzip, odd image sizes) are typed errors naming the file.

use std::io::Write;
use std::path::Path;

use nasnet_trainer::readers::cifar::{read_cifar100_dir, read_cifar10_dir};
#[cfg(feature = "embedded")]
use nasnet_trainer::readers::embedded;
use nasnet_trainer::readers::folder::{read_image_folder, read_sized_folder, Sizing};
use nasnet_trainer::readers::idx::read_mnist_dir;
use nasnet_trainer::readers::FASHION_CLASSES;
use nasnet_trainer::{DataConfig, DataError, DataSource, Splits};

fn idx_images(n: u32, rows: u32, cols: u32, fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x0803u32, n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend((0..(n * rows * cols) as usize).map(fill));
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x0801u32, labels.len() as u32] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(labels);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A valid MNIST-layout folder: 6 train and 4 test 3x2 images; train compressed, test raw.
fn mnist_dir(dir: &Path) {
    write(
        dir,
        "train-images-idx3-ubyte.gz",
        &gz(&idx_images(6, 3, 2, |i| i as u8)),
    );
    write(
        dir,
        "train-labels-idx1-ubyte.gz",
        &gz(&idx_labels(&[0, 1, 2, 9, 4, 5])),
    );
    write(
        dir,
        "t10k-images-idx3-ubyte",
        &idx_images(4, 3, 2, |i| 200 - i as u8),
    );
    write(dir, "t10k-labels-idx1-ubyte", &idx_labels(&[3, 3, 7, 0]));
}

fn format_error_about(err: DataError, file: &str, words: &str) {
    let msg = err.to_string();
    assert!(
        matches!(err, DataError::Format { .. }),
        "expected a format error, got {err:?}"
    );
    assert!(msg.contains(file), "`{msg}` should name {file}");
    assert!(msg.contains(words), "`{msg}` should say `{words}`");
}

#[test]
fn idx_reads_gzip_and_raw() {
    let t = tempfile::tempdir().unwrap();
    mnist_dir(t.path());
    let (train, test) = read_mnist_dir("x", t.path(), &FASHION_CLASSES).unwrap();
    assert_eq!(
        (train.len(), train.channels, train.height, train.width),
        (6, 1, 3, 2)
    );
    assert_eq!(train.labels, vec![0, 1, 2, 9, 4, 5]);
    assert_eq!(train.image(1), &[6, 7, 8, 9, 10, 11]);
    assert_eq!(test.len(), 4);
    assert_eq!(test.image(0)[0], 200);
    assert_eq!(test.labels, vec![3, 3, 7, 0]);
}

#[test]
fn idx_bad_magic() {
    let t = tempfile::tempdir().unwrap();
    mnist_dir(t.path());
    let mut bad = idx_images(4, 3, 2, |_| 0);
    bad[3] = 0x01; // rank-1 magic in an images file
    write(t.path(), "t10k-images-idx3-ubyte", &bad);
    let err = read_mnist_dir("x", t.path(), &FASHION_CLASSES).unwrap_err();
    format_error_about(err, "t10k-images-idx3-ubyte", "bad IDX magic 0x00000801");
}

#[test]
fn idx_truncated_and_trailing() {
    let t = tempfile::tempdir().unwrap();
    mnist_dir(t.path());
    let full = idx_images(4, 3, 2, |_| 0);
    write(t.path(), "t10k-images-idx3-ubyte", &full[..full.len() - 1]);
    let err = read_mnist_dir("x", t.path(), &FASHION_CLASSES).unwrap_err();
    format_error_about(err, "t10k-images-idx3-ubyte", "truncated");

    let mut long = full.clone();
    long.push(7);
    write(t.path(), "t10k-images-idx3-ubyte", &long);
    let err = read_mnist_dir("x", t.path(), &FASHION_CLASSES).unwrap_err();
    format_error_about(err, "t10k-images-idx3-ubyte", "trailing");

    write(t.path(), "t10k-images-idx3-ubyte", &full[..10]);
    let err = read_mnist_dir("x", t.path(), &FASHION_CLASSES).unwrap_err();
    format_error_about(err, "t10k-images-idx3-ubyte", "truncated header");
}

#[test]
fn idx_count_mismatch() {
    let t = tempfile::tempdir().unwrap();
    mnist_dir(t.path());
    write(t.path(), "t10k-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]));
    let err = read_mnist_dir("x", t.path(), &FASHION_CLASSES).unwrap_err();
    format_error_about(err, "t10k-labels-idx1-ubyte", "3 labels");
}

#[test]
fn idx_label_out_of_range() {
    let t = tempfile::tempdir().unwrap();
    mnist_dir(t.path());
    write(
        t.path(),
        "t10k-labels-idx1-ubyte",
        &idx_labels(&[1, 2, 10, 3]),
    );
    let err = read_mnist_dir("x", t.path(), &FASHION_CLASSES).unwrap_err();
    match &err {
        DataError::LabelOutOfRange {
            index,
            label,
            classes,
            path,
        } => {
            assert_eq!((*index, *label, *classes), (2, 10, 10));
            assert!(path.ends_with("t10k-labels-idx1-ubyte"));
        }
        other => panic!("expected a label error, got {other:?}"),
    }
}

#[test]
fn idx_damaged_gzip_and_missing_file() {
    let t = tempfile::tempdir().unwrap();
    mnist_dir(t.path());
    let z = gz(&idx_images(6, 3, 2, |i| i as u8));
    write(t.path(), "train-images-idx3-ubyte.gz", &z[..z.len() / 2]);
    let err = read_mnist_dir("x", t.path(), &FASHION_CLASSES).unwrap_err();
    format_error_about(err, "train-images-idx3-ubyte.gz", "gzip");

    std::fs::remove_file(t.path().join("train-images-idx3-ubyte.gz")).unwrap();
    let err = read_mnist_dir("x", t.path(), &FASHION_CLASSES).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("train-images-idx3-ubyte"));
}

fn cifar10_record(label: u8, seed: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(|i| (i as u8).wrapping_add(seed)));
    r
}

fn cifar10_dir(dir: &Path) {
    for b in 1..=5u8 {
        let mut f = Vec::new();
        for k in 0..3u8 {
            f.extend(cifar10_record((b + k) % 10, b * 10 + k));
        }
        write(dir, &format!("data_batch_{b}.bin"), &f);
    }
    let mut f = cifar10_record(9, 1);
    f.extend(cifar10_record(0, 2));
    write(dir, "test_batch.bin", &f);
}

#[test]
fn cifar10_reads_batches() {
    let t = tempfile::tempdir().unwrap();
    let sub = t.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&sub).unwrap();
    cifar10_dir(&sub);
    let (train, test) = read_cifar10_dir(t.path(), false).unwrap();
    assert_eq!(
        (train.len(), train.channels, train.height, train.width),
        (15, 3, 32, 32)
    );
    assert_eq!(train.labels[..3], [1, 2, 3]);
    assert_eq!(train.image(1)[0], 11); // batch 1, record 1, first pixel = 0 + seed 11
    assert_eq!(train.image(1)[1024], 11); // green plane starts at 1024 (1024 as u8 = 0)
    assert_eq!(test.labels, vec![9, 0]);
    assert_eq!(test.classes(), 10);
    // The distribution's counts are required in strict mode.
    let err = read_cifar10_dir(t.path(), true).unwrap_err();
    format_error_about(err, "data_batch_1.bin", "3 records, expected 10000");
}

#[test]
fn cifar10_truncated_and_bad_label() {
    let t = tempfile::tempdir().unwrap();
    cifar10_dir(t.path());
    let f = std::fs::read(t.path().join("data_batch_3.bin")).unwrap();
    write(t.path(), "data_batch_3.bin", &f[..f.len() - 5]);
    let err = read_cifar10_dir(t.path(), false).unwrap_err();
    format_error_about(err, "data_batch_3.bin", "not a whole number");

    cifar10_dir(t.path());
    let mut f = cifar10_record(0, 0);
    f.extend(cifar10_record(10, 0));
    write(t.path(), "test_batch.bin", &f);
    let err = read_cifar10_dir(t.path(), false).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 10,
                classes: 10,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn cifar100_uses_fine_labels() {
    let t = tempfile::tempdir().unwrap();
    let rec = |coarse: u8, fine: u8| {
        let mut r = vec![coarse, fine];
        r.extend(std::iter::repeat_n(fine, 3072));
        r
    };
    let mut train = rec(3, 77);
    train.extend(rec(19, 99));
    write(t.path(), "train.bin", &train);
    write(t.path(), "test.bin", &rec(0, 5));
    let (tr, te) = read_cifar100_dir(t.path(), false).unwrap();
    assert_eq!(tr.labels, vec![77, 99]);
    assert_eq!(tr.classes(), 100);
    assert_eq!(tr.image(1)[5], 99);
    assert_eq!(te.labels, vec![5]);

    write(t.path(), "test.bin", &rec(0, 100));
    let err = read_cifar100_dir(t.path(), false).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                label: 100,
                classes: 100,
                ..
            }
        ),
        "{err:?}"
    );
    write(t.path(), "test.bin", &rec(20, 1));
    let err = read_cifar100_dir(t.path(), false).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                label: 20,
                classes: 20,
                ..
            }
        ),
        "{err:?}"
    );
    let err = read_cifar100_dir(t.path(), true).unwrap_err();
    format_error_about(err, "train.bin", "2 records, expected 50000");
}

fn save_png(path: &Path, w: u32, h: u32, gray: bool, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if gray {
        image::GrayImage::from_pixel(w, h, image::Luma([v]))
            .save(path)
            .unwrap();
    } else {
        image::RgbImage::from_pixel(w, h, image::Rgb([v, 0, 255 - v]))
            .save(path)
            .unwrap();
    }
}

#[test]
fn folder_reads_classes_and_checks_sizes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    save_png(&root.join("train/cat/a.png"), 4, 3, false, 10);
    save_png(&root.join("train/cat/b.png"), 4, 3, false, 20);
    save_png(&root.join("train/dog/c.png"), 4, 3, false, 30);
    save_png(&root.join("test/dog/d.png"), 4, 3, false, 40);
    std::fs::write(root.join("train/dog/notes.txt"), "ignored").unwrap();
    let (train, test) = read_image_folder(root, None).unwrap();
    let test = test.unwrap();
    assert_eq!(train.class_names, vec!["cat", "dog"]);
    assert_eq!(train.labels, vec![0, 0, 1]);
    assert_eq!((train.channels, train.height, train.width), (3, 3, 4));
    // CHW: red plane then green then blue.
    assert_eq!(train.image(2)[0], 30);
    assert_eq!(train.image(2)[12], 0);
    assert_eq!(train.image(2)[24], 225);
    assert_eq!(test.labels, vec![1]);

    // A differently sized image is an error naming it, unless a size is given.
    save_png(&root.join("train/dog/e.png"), 5, 3, false, 50);
    let err = read_image_folder(root, None).unwrap_err();
    format_error_about(err, "e.png", "5x3");
    let (train, test) = read_image_folder(root, Some(8)).unwrap();
    assert_eq!((train.height, train.width, train.len()), (8, 8, 4));
    assert_eq!((test.unwrap().height), 8);

    // A test class the training set lacks is an error.
    save_png(&root.join("test/cow/f.png"), 4, 3, false, 1);
    assert!(read_image_folder(root, Some(8)).is_err());
}

#[test]
fn the_ports_transform_resizes_the_shorter_side_then_crops_the_centre() {
    let t = tempfile::tempdir().unwrap();
    // 40 x 20: the shorter side to 18 makes it 36 x 18, whose central 16 x 16 is kept.
    let mut img = image::RgbImage::from_pixel(40, 20, image::Rgb([0, 0, 0]));
    for y in 0..20 {
        for x in 14..26 {
            img.put_pixel(x, y, image::Rgb([200, 100, 50]));
        }
    }
    for class in ["a", "b"] {
        std::fs::create_dir_all(t.path().join(class)).unwrap();
        img.save(t.path().join(class).join("wide.png")).unwrap();
    }
    let sizing = Sizing::ResizeCrop {
        resize: 18,
        crop: 16,
        bicubic: false,
    };
    let (train, _) = read_sized_folder(t.path(), sizing).unwrap();
    assert_eq!((train.channels, train.height, train.width), (3, 16, 16));
    // The bright band (columns 14..26 of 40, about 3..13 of the crop's 16) stays central: the
    // crop's middle column is bright, its edges dark.
    let red = &train.image(0)[..256];
    assert_eq!(red[8 * 16 + 8], 200);
    assert_eq!((red[8 * 16], red[8 * 16 + 15]), (0, 0));
}

/// The ports' transform on a thin image: the shorter side resized to 256 keeps the aspect, so
/// a 1 x 16384 PNG (a few hundred bytes) would become 256 x 4194304 (3.2 GB); it is refused
/// naming the file, and a 1 x 65535 one is refused by the decode limits.
#[test]
fn a_thin_image_is_refused_before_its_resize_allocates() {
    let t = tempfile::tempdir().unwrap();
    save_png(&t.path().join("a/ok.png"), 8, 8, false, 1);
    save_png(&t.path().join("b/thin.png"), 1, 16384, false, 2);
    let sizing = Sizing::ResizeCrop {
        resize: 256,
        crop: 224,
        bicubic: false,
    };
    let err = read_sized_folder(t.path(), sizing).unwrap_err();
    format_error_about(err, "thin.png", "exceed the image limits");
    save_png(&t.path().join("b/thin.png"), 1, 65535, false, 2);
    let err = read_sized_folder(t.path(), sizing).unwrap_err();
    format_error_about(err, "thin.png", "limit");
    // A square resize of the thin image stays what it was: 8 x 8.
    save_png(&t.path().join("b/thin.png"), 1, 16384, false, 2);
    let (train, _) = read_image_folder(t.path(), Some(8)).unwrap();
    assert_eq!((train.height, train.width, train.len()), (8, 8, 2));
}

/// The first 6000 bytes of a JPEG are refused as truncated, naming the file (before, the
/// decoder filled the rest and the image was trained on); a PNG named `.jpg` is read as the PNG
/// it is.
#[test]
fn a_truncated_jpeg_is_refused_naming_the_file() {
    let t = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../cells/tests/data/preprocess/grace_hopper.jpg"),
    )
    .unwrap();
    save_png(&t.path().join("a/ok.png"), 8, 8, false, 1);
    std::fs::create_dir_all(t.path().join("b")).unwrap();
    write(&t.path().join("b"), "cut.jpg", &jpeg[..6000]);
    let err = read_image_folder(t.path(), Some(8)).unwrap_err();
    format_error_about(err, "cut.jpg", "truncated");
    write(&t.path().join("b"), "cut.jpg", &jpeg);
    save_png(&t.path().join("b/png-named.jpg"), 8, 8, false, 3);
    let (train, _) = read_image_folder(t.path(), Some(8)).unwrap();
    assert_eq!(train.len(), 3);
}

/// A folder of one class is refused: it would train to loss 0 and 100 % accuracy.
#[test]
fn a_single_class_folder_is_refused() {
    let t = tempfile::tempdir().unwrap();
    save_png(&t.path().join("only/a.png"), 2, 2, true, 1);
    save_png(&t.path().join("only/b.png"), 2, 2, true, 2);
    let err = read_image_folder(t.path(), None).unwrap_err();
    format_error_about(err, "only", "at least 2 classes");
    save_png(&t.path().join("train/only/a.png"), 2, 2, true, 1);
    let err = read_image_folder(t.path(), None).unwrap_err();
    format_error_about(err, "train", "at least 2 classes");
}

#[test]
fn an_empty_class_folder_is_an_error_naming_it() {
    let t = tempfile::tempdir().unwrap();
    save_png(&t.path().join("cat/a.png"), 2, 2, true, 1);
    save_png(&t.path().join("dog/b.png"), 2, 2, true, 2);
    std::fs::create_dir_all(t.path().join("empty")).unwrap();
    std::fs::write(t.path().join("empty/readme.txt"), "not an image").unwrap();
    let err = read_image_folder(t.path(), None).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    assert!(
        text.contains("empty") && text.contains("class `empty`"),
        "{text}"
    );
}

#[test]
fn folder_grayscale_without_test_tree() {
    let t = tempfile::tempdir().unwrap();
    for (i, c) in ["b", "a", "c"].iter().enumerate() {
        for k in 0..4 {
            save_png(
                &t.path().join(format!("{c}/{k}.png")),
                2,
                2,
                true,
                (i * 10 + k) as u8,
            );
        }
    }
    let (train, test) = read_image_folder(t.path(), None).unwrap();
    assert!(test.is_none());
    assert_eq!(train.channels, 1);
    assert_eq!(train.class_names, vec!["a", "b", "c"]);
    assert_eq!(train.image(0), &[10, 10, 10, 10]); // a/0.png
    let mut cfg = DataConfig::new(DataSource::Folder {
        dir: t.path().to_path_buf(),
        image_size: None,
    });
    cfg.folder_test_size = 3;
    let s = Splits::load(&cfg).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (9, 3));
}

#[cfg(feature = "embedded")]
#[test]
fn embedded_subset_is_stratified() {
    let (train, test) = embedded().unwrap();
    assert_eq!((train.len(), test.len()), (12_000, 2_000));
    assert_eq!((train.channels, train.height, train.width), (1, 28, 28));
    assert_eq!(train.class_counts(), vec![1200; 10]);
    assert_eq!(test.class_counts(), vec![200; 10]);
    // Fashion-MNIST's pixel mean is about 0.286, std about 0.353.
    assert!(
        (train.norm.mean[0] - 0.286).abs() < 0.01,
        "{:?}",
        train.norm
    );
    assert!((train.norm.std[0] - 0.353).abs() < 0.01, "{:?}", train.norm);
}

#[cfg(feature = "embedded")]
#[test]
fn splits_are_seeded_disjoint_and_limited() {
    let (train, test) = embedded().unwrap();
    let mut cfg = DataConfig::new(DataSource::Embedded);
    cfg.val_size = 1000;
    cfg.train_limit = Some(3000);
    cfg.test_limit = Some(500);
    let a = Splits::from_sets(train.clone(), Some(test.clone()), &cfg).unwrap();
    let b = Splits::from_sets(train.clone(), Some(test.clone()), &cfg).unwrap();
    let val = a.val.as_ref().unwrap();
    assert_eq!((a.train.len(), val.len(), a.test.len()), (3000, 1000, 500));
    assert_eq!(a.train.images, b.train.images);
    assert_eq!(val.images, b.val.as_ref().unwrap().images);
    // Every split is normalised with the training statistics.
    assert_eq!(val.norm, a.train.norm);
    assert_eq!(a.test.norm, a.train.norm);
    // No validation image is a training image (images are distinct enough to compare bytes).
    let train_set: std::collections::HashSet<&[u8]> =
        (0..a.train.len()).map(|i| a.train.image(i)).collect();
    let overlap = (0..val.len())
        .filter(|&i| train_set.contains(val.image(i)))
        .count();
    assert!(
        overlap <= 2,
        "{overlap} validation images are also training images"
    );
    // Another split seed gives another validation set.
    cfg.split_seed = 1;
    let c = Splits::from_sets(train.clone(), Some(test.clone()), &cfg).unwrap();
    assert_ne!(c.val.as_ref().unwrap().images, val.images);
    // A validation set as large as the training set is an error.
    cfg.val_size = 12_000;
    assert!(matches!(
        Splits::from_sets(train, Some(test), &cfg),
        Err(DataError::Split(_))
    ));
}

/// Without the `embedded` feature the source still parses (configurations stay readable) but
/// reading it is a typed error naming the feature.
#[cfg(not(feature = "embedded"))]
#[test]
fn embedded_source_needs_the_feature() {
    let err = DataSource::Embedded.read().unwrap_err();
    assert!(matches!(err, DataError::EmbeddedNotBuilt));
    assert!(err.to_string().contains("`embedded` cargo feature"));
}

#[test]
fn source_names() {
    assert_eq!(
        DataSource::from_name("embedded", None, None).unwrap(),
        DataSource::Embedded
    );
    let d = Path::new("/x");
    assert!(matches!(
        DataSource::from_name("CIFAR-10", Some(d), None).unwrap(),
        DataSource::Cifar10 { .. }
    ));
    assert!(matches!(
        DataSource::from_name("fashion_mnist", Some(d), None).unwrap(),
        DataSource::FashionMnist { .. }
    ));
    assert!(matches!(
        DataSource::from_name("imagenet", Some(d), None),
        Err(DataError::UnknownDataset { .. })
    ));
    assert!(DataSource::from_name("mnist", None, None).is_err());
}
