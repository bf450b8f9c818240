//! Tests of augmentation and batches (the crate's internals, so unit tests): exact pixel
//! placement of crop, flip and cutout on a hand-made image, shapes, and determinism of batches
//! given (seed, epoch, batch), on and off the background thread.

use std::sync::Arc;

use crate::augment::{batch_rng, random_resized_crop, transform_into, AugmentConfig, AugmentDraw};
use crate::data::{Dataset, Normalization};
use crate::loader::{epoch_order, train_batch, train_batches_per_epoch, BatchStream};

fn norm() -> Normalization {
    Normalization {
        mean: vec![0.5],
        std: vec![0.25],
    }
}

/// 1x3x4 image with pixel value 10 * row + col.
fn image() -> Vec<u8> {
    (0..3)
        .flat_map(|y| (0..4).map(move |x| (10 * y + x) as u8))
        .collect()
}

fn n(v: f32) -> f32 {
    (v / 255.0 - 0.5) / 0.25
}

fn run(cfg: &AugmentConfig, draw: &AugmentDraw) -> Vec<f32> {
    let mut out = vec![f32::NAN; 12];
    transform_into(&image(), 1, 3, 4, cfg, draw, &norm(), &mut out);
    out
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < 1e-5, "pixel {i}: {x} vs {y}");
    }
}

#[test]
fn normalise_only() {
    let out = run(&AugmentConfig::none(), &AugmentDraw::none());
    let want: Vec<f32> = image().iter().map(|&p| n(f32::from(p))).collect();
    close(&out, &want);
}

#[test]
fn flip_mirrors_columns() {
    let cfg = AugmentConfig {
        crop_padding: 0,
        flip: true,
        cutout: 0,
        random_resized_crop: false,
    };
    let draw = AugmentDraw {
        dy: 0,
        dx: 0,
        flip: true,
        cutout_center: None,
    };
    let out = run(&cfg, &draw);
    let want: Vec<f32> = (0..3)
        .flat_map(|y| (0..4).map(move |x| n((10 * y + 3 - x) as f32)))
        .collect();
    close(&out, &want);
}

#[test]
fn crop_shifts_and_pads_with_black() {
    let cfg = AugmentConfig {
        crop_padding: 2,
        flip: false,
        cutout: 0,
        random_resized_crop: false,
    };
    // dy = 3, dx = 0: out(y, x) = in(y + 1, x - 2); row 2 and columns 0-1 come from the padding.
    let draw = AugmentDraw {
        dy: 3,
        dx: 0,
        flip: false,
        cutout_center: None,
    };
    let out = run(&cfg, &draw);
    let pad = n(0.0);
    let want = vec![
        pad,
        pad,
        n(10.0),
        n(11.0), //
        pad,
        pad,
        n(20.0),
        n(21.0), //
        pad,
        pad,
        pad,
        pad,
    ];
    close(&out, &want);
    // Centre offset (dy = dx = p) is the identity.
    let centre = AugmentDraw {
        dy: 2,
        dx: 2,
        flip: false,
        cutout_center: None,
    };
    close(
        &run(&cfg, &centre),
        &run(&AugmentConfig::none(), &AugmentDraw::none()),
    );
}

#[test]
fn cutout_zeroes_a_clipped_square() {
    let cfg = AugmentConfig {
        crop_padding: 0,
        flip: false,
        cutout: 2,
        random_resized_crop: false,
    };
    let draw = AugmentDraw {
        dy: 0,
        dx: 0,
        flip: false,
        cutout_center: Some((0, 3)),
    };
    let out = run(&cfg, &draw);
    let mut want: Vec<f32> = image().iter().map(|&p| n(f32::from(p))).collect();
    // Square rows [-1, 1) x columns [2, 4), clipped to row 0, columns 2..4.
    want[2] = 0.0;
    want[3] = 0.0;
    close(&out, &want);
}

fn dataset(n_images: usize) -> Dataset {
    let images = (0..n_images * 2 * 8 * 8)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let labels = (0..n_images).map(|i| (i % 3) as u32).collect();
    Dataset::new(
        "t",
        images,
        labels,
        vec!["a".into(), "b".into(), "c".into()],
        2,
        8,
        8,
    )
    .unwrap()
}

#[test]
fn batches_are_deterministic_and_shaped() {
    let data = Arc::new(dataset(37));
    let cfg = AugmentConfig {
        crop_padding: 1,
        flip: true,
        cutout: 3,
        random_resized_crop: false,
    };
    let order = epoch_order(data.len(), 42, 3);
    assert_eq!(order, epoch_order(data.len(), 42, 3));
    assert_ne!(order, epoch_order(data.len(), 42, 4));
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..37).collect::<Vec<_>>());

    assert_eq!(train_batches_per_epoch(37, 8), 4);
    let b = train_batch(&data, &order, 8, &cfg, 42, 3, 2);
    assert_eq!(
        (b.images.len(), b.labels.len(), b.index),
        (8 * 2 * 64, 8, 2)
    );
    assert_eq!(
        b.labels,
        order[16..24]
            .iter()
            .map(|&i| data.labels[i])
            .collect::<Vec<_>>()
    );
    assert_eq!(b, train_batch(&data, &order, 8, &cfg, 42, 3, 2));
    assert_ne!(
        b.images,
        train_batch(&data, &order, 8, &cfg, 43, 3, 2).images
    );
    assert!(b.images.iter().all(|v| v.is_finite()));

    // The background stream gives the same batches, and resuming at batch 2 gives the tail.
    let all: Vec<_> = BatchStream::train(data.clone(), 8, cfg.clone(), 42, 3, 0, 2).collect();
    assert_eq!(all.len(), 4);
    for (k, batch) in all.iter().enumerate() {
        assert_eq!(*batch, train_batch(&data, &order, 8, &cfg, 42, 3, k));
    }
    let tail: Vec<_> = BatchStream::train(data.clone(), 8, cfg, 42, 3, 2, 2).collect();
    assert_eq!(tail[..], all[2..]);
}

#[test]
fn eval_stream_covers_everything_unaugmented() {
    let data = Arc::new(dataset(10));
    let batches: Vec<_> = BatchStream::eval(data.clone(), 4, 2).collect();
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    let labels: Vec<u32> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    assert_eq!(labels, data.labels);
    let first = data.image(0)[0];
    let want = (f32::from(first) / 255.0 - data.norm.mean[0]) / data.norm.std[0];
    assert!((batches[0].images[0] - want).abs() < 1e-5);
}

#[test]
fn dropping_a_stream_early_stops_its_thread() {
    let data = Arc::new(dataset(64));
    let mut s = BatchStream::train(data, 2, AugmentConfig::none(), 1, 0, 0, 1);
    assert!(s.next().is_some());
    drop(s); // joins the producer; would hang if it did not notice
}

#[test]
fn cifar_like_scales_padding() {
    assert_eq!(AugmentConfig::cifar_like(32).crop_padding, 4);
    assert_eq!(AugmentConfig::cifar_like(28).crop_padding, 4);
    assert_eq!(AugmentConfig::cifar_like(24).crop_padding, 3);
}

#[test]
fn random_resized_crops_keep_the_layout_and_the_channels() {
    // Three constant channels of a 6 x 10 image stay constant and in their place.
    let (h, w) = (6, 10);
    let pixels: Vec<u8> = [10u8, 20, 30]
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, h * w))
        .collect();
    let mut rng = batch_rng(7, 0, 0);
    for _ in 0..20 {
        let out = random_resized_crop(&pixels, 3, h, w, &mut rng);
        assert_eq!(out, pixels);
    }
    // One channel: a left-dark, right-bright image keeps its size, and some crop changes it.
    let gray: Vec<u8> = (0..h * w)
        .map(|i| if i % w < w / 2 { 0 } else { 200 })
        .collect();
    let outs: Vec<Vec<u8>> = (0..20)
        .map(|_| random_resized_crop(&gray, 1, h, w, &mut rng))
        .collect();
    assert!(outs.iter().all(|o| o.len() == h * w));
    assert!(outs.iter().any(|o| *o != gray));
}

#[test]
fn fine_tune_batches_are_deterministic_and_differ_from_plain_ones() {
    let data = Arc::new(dataset(16));
    let order = epoch_order(data.len(), 3, 0);
    let cfg = AugmentConfig::fine_tune();
    let a = train_batch(&data, &order, 8, &cfg, 3, 0, 1);
    assert_eq!(a, train_batch(&data, &order, 8, &cfg, 3, 0, 1));
    let plain = train_batch(&data, &order, 8, &AugmentConfig::none(), 3, 0, 1);
    assert_eq!(a.labels, plain.labels);
    assert_ne!(a.images, plain.images);
}
