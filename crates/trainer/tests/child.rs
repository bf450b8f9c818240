//! The search child as a library: a real tiny child trained on the embedded data scores a
//! validation accuracy, and specifications that would fail every child are typed errors before
//! anything is built.
#![cfg(feature = "embedded")]

use nasnet_cells::parse_net;
use nasnet_trainer::progress::{ProgressHook, StepInfo};
use nasnet_trainer::{
    train_child, ChildError, ChildSpec, DataConfig, DataError, DataSource, DeviceChoice,
    DeviceError, SpecError,
};

/// 1@24 on 128 embedded training images, 64 validation images, one epoch of 4 steps.
fn tiny_spec() -> ChildSpec {
    let mut data = DataConfig::new(DataSource::Embedded);
    data.val_size = 64;
    data.train_limit = Some(128);
    data.test_limit = Some(64);
    let mut spec = ChildSpec::new(parse_net("1@24").unwrap(), data);
    spec.epochs = 1;
    spec.batch_size = 32;
    spec.lr = 0.05;
    spec.seed = 3;
    spec.device = DeviceChoice::Cpu;
    spec
}

/// Counts the steps the child reports.
#[derive(Default)]
struct CountSteps(usize);

impl ProgressHook for CountSteps {
    fn on_step(&mut self, _step: &StepInfo) {
        self.0 += 1;
    }
}

#[test]
fn a_tiny_child_trains_and_scores_its_validation_accuracy() {
    for (name, value) in nasnet_cells::candle_thread_env() {
        std::env::set_var(name, value);
    }
    nasnet_cells::configure_cpu();
    let spec = tiny_spec();
    spec.validate().unwrap();
    let genotype = nasnet_searchspace::named::nasnet_a();
    let mut steps = CountSteps::default();
    let result = train_child(&spec, &genotype, &mut steps).unwrap();
    assert_eq!(steps.0, 4, "128 images in batches of 32");
    assert!((0.0..=1.0).contains(&result.reward), "{}", result.reward);
    // An accuracy on 64 images is a multiple of 1/64.
    let hits = result.reward * 64.0;
    assert!((hits - hits.round()).abs() < 1e-9, "{}", result.reward);
    assert!(result.params > 0);
    assert_eq!(result.history.len(), 1);
    assert_eq!(result.history[0].val_acc, Some(result.reward));
    assert_eq!(
        result.history[0].test_acc, None,
        "children never see the test set"
    );
}

/// `spec` with one change.
fn with(change: impl FnOnce(&mut ChildSpec)) -> ChildSpec {
    let mut spec = tiny_spec();
    change(&mut spec);
    spec
}

/// What a rejected spec's error must match.
type Expected = fn(&SpecError) -> bool;

#[test]
fn invalid_specs_are_typed_errors_before_any_child_is_built() {
    let cases: Vec<(ChildSpec, Expected)> = vec![
        (with(|s| s.batch_size = 0), |e| {
            matches!(e, SpecError::NoBatch)
        }),
        (with(|s| s.epochs = 0), |e| matches!(e, SpecError::NoEpochs)),
        (with(|s| s.lr = -1.0), |e| {
            matches!(e, SpecError::LearningRate(_))
        }),
        (with(|s| s.lr = f64::NAN), |e| {
            matches!(e, SpecError::LearningRate(_))
        }),
        (with(|s| s.lr = 0.0), |e| {
            matches!(e, SpecError::LearningRate(_))
        }),
        (with(|s| s.data.val_size = 0), |e| {
            matches!(e, SpecError::NoValidation)
        }),
        (with(|s| s.data.train_limit = Some(20)), |e| {
            matches!(
                e,
                SpecError::TrainTooSmall {
                    images: 20,
                    batch_size: 32
                }
            )
        }),
        (with(|s| s.data.val_size = 100_000), |e| {
            matches!(e, SpecError::Data(DataError::Split(_)))
        }),
    ];
    let genotype = nasnet_searchspace::named::nasnet_a();
    for (spec, expected) in cases {
        let err = spec.validate().unwrap_err();
        assert!(expected(&err), "{spec:?}: {err:?}");
        // train_child refuses the same spec with the same error, before building anything.
        match train_child(&spec, &genotype, &mut nasnet_trainer::progress::Quiet) {
            Err(ChildError::Spec(e)) => assert!(expected(&e), "{e:?}"),
            other => panic!("{spec:?}: {other:?}"),
        }
    }
}

#[test]
fn an_accelerator_missing_from_the_build_is_refused() {
    let spec = with(|s| s.device = DeviceChoice::Cuda { ordinal: 0 });
    if cfg!(feature = "cuda") {
        return; // this build has CUDA: nothing to refuse
    }
    let err = spec.validate().unwrap_err();
    assert!(
        matches!(
            err,
            SpecError::Device(DeviceError::NotBuilt {
                feature: "cuda",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("--features cuda"), "{err}");
}

#[test]
fn specs_serialise_with_readable_net_and_device() {
    let spec = with(|s| s.device = DeviceChoice::Cuda { ordinal: 1 });
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["net"], "1@24");
    assert_eq!(json["device"], "cuda:1");
    let back: ChildSpec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, spec);
    let mut bad = json;
    bad["net"] = "1@25".into();
    assert!(serde_json::from_value::<ChildSpec>(bad).is_err());
}

#[test]
fn device_choices_parse_and_print() {
    for (text, choice) in [
        ("cpu", DeviceChoice::Cpu),
        ("CUDA", DeviceChoice::Cuda { ordinal: 0 }),
        ("cuda:2", DeviceChoice::Cuda { ordinal: 2 }),
        ("metal", DeviceChoice::Metal { ordinal: 0 }),
    ] {
        assert_eq!(text.parse::<DeviceChoice>().unwrap(), choice);
        assert_eq!(choice.to_string().parse::<DeviceChoice>().unwrap(), choice);
    }
    assert!(matches!(
        "tpu".parse::<DeviceChoice>(),
        Err(DeviceError::Unknown(_))
    ));
    assert!(matches!(
        "cuda:x".parse::<DeviceChoice>(),
        Err(DeviceError::BadOrdinal { .. })
    ));
}
