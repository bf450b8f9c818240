//! Parameter and mult-add counts of the released NASNet-A configurations against the numbers
//! TF-slim's own builders give (docs/sizes.md#parameter-counts). Models are built shape-only (no
//! weight memory),
//! so even Large is instant.

use nasnet_cells::{NasNet, NasNetConfig};
use nasnet_searchspace::named::nasnet_a;

fn count(cfg: &NasNetConfig) -> NasNet {
    NasNet::shape_only(&nasnet_a(), cfg).expect("model builds")
}

/// Trainable parameters whose name starts with `prefix.`.
fn part(model: &NasNet, prefix: &str) -> u64 {
    let dotted = format!("{prefix}.");
    model
        .params()
        .iter()
        .filter(|p| p.trainable && p.name.starts_with(&dotted))
        .map(|p| p.shape.elem_count() as u64)
        .sum()
}

#[test]
fn large_parameters() {
    let m = count(&NasNetConfig::large());
    assert_eq!(m.parameter_count(), 88_753_150);
    // timm's weights are the same model.
    assert_eq!(
        count(&NasNetConfig::large_timm()).parameter_count(),
        88_753_150
    );
}

#[test]
fn mobile_parameters() {
    assert_eq!(count(&NasNetConfig::mobile()).parameter_count(), 5_289_978);
}

#[test]
fn cifar_parameters_and_parts() {
    let cfg = NasNetConfig::cifar(6, 768).unwrap().with_aux_head(false);
    let m = count(&cfg);
    assert_eq!(m.parameter_count(), 3_346_538);
    // Per part, as TF-slim counts them (docs/sizes.md#per-part-counts).
    assert_eq!(part(&m, "conv0"), 2_592 + 192);
    let expected = [
        ("cell_0", 40_384),
        ("cell_1", 25_152),
        ("cell_2", 28_224),
        ("cell_5", 28_224),
        ("reduction_cell_0", 87_168),
        ("cell_6", 81_024),
        ("cell_7", 93_312),
        ("cell_8", 101_504),
        ("cell_11", 101_504),
        ("reduction_cell_1", 305_408),
        ("cell_12", 301_312),
        ("cell_13", 350_464),
        ("cell_14", 383_232),
        ("cell_17", 383_232),
        ("last_linear", 7_690),
    ];
    for (name, n) in expected {
        assert_eq!(part(&m, name), n, "{name}");
    }
    // CIFAR 6@768 names its normal cells cell_0..cell_17 contiguously (N = 6).
    assert_eq!(m.cell_names().len(), 20);
    assert_eq!(m.cell_names()[6], "reduction_cell_0");
    assert_eq!(m.cell_names()[19], "cell_17");
}

#[test]
fn aux_head_parameters() {
    let base = NasNetConfig::cifar(6, 768).unwrap();
    let with = count(&base.clone().with_aux_head(true)).parameter_count();
    let without = count(&base.with_aux_head(false)).parameter_count();
    assert_eq!(with - without, 1_631_498);

    let mobile = NasNetConfig::mobile().with_classes(1001);
    let with = count(&mobile.clone().with_aux_head(true));
    let without = count(&mobile.with_aux_head(false));
    assert_eq!(
        with.parameter_count() - without.parameter_count(),
        2_412_009
    );
    assert_eq!(part(&with, "aux_head"), 2_412_009);
}

#[test]
fn mobile_cell_names_skip_like_the_port() {
    let m = count(&NasNetConfig::mobile());
    let names = m.cell_names();
    assert_eq!(
        names,
        [
            "cell_stem_0",
            "cell_stem_1",
            "cell_0",
            "cell_1",
            "cell_2",
            "cell_3",
            "reduction_cell_0",
            "cell_6",
            "cell_7",
            "cell_8",
            "cell_9",
            "reduction_cell_1",
            "cell_12",
            "cell_13",
            "cell_14",
            "cell_15"
        ]
    );
}

fn within(found: u64, expected: f64, rel: f64) {
    println!("{found} mult-adds, expected {expected}");
    let err = (found as f64 - expected).abs() / expected;
    assert!(
        err <= rel,
        "{found} is {:.2} % away from {expected}",
        100.0 * err
    );
}

#[test]
fn mobile_mult_adds() {
    let m = count(&NasNetConfig::mobile());
    within(m.mult_adds(224, 224), 564e6, 0.01);
}

#[test]
fn large_mult_adds() {
    let m = count(&NasNetConfig::large());
    within(m.mult_adds(331, 331), 23.8e9, 0.01);
}

#[test]
fn larger_imagenet_presets_build() {
    // Unpublished configurations (see their docs): only that they build, with the counts this
    // crate reports for them.
    assert_eq!(
        count(&NasNetConfig::imagenet_5_1538()).parameter_count(),
        12_263_416
    );
    assert_eq!(
        count(&NasNetConfig::imagenet_7_1920()).parameter_count(),
        24_613_292
    );
}
