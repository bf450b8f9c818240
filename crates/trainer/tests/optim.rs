//! The optimiser against hand-computed steps (momentum, Nesterov, weight decay only on rank >= 2,
//! clipping by global norm, skipping variables without a gradient), state save/restore, and the
//! learning-rate and drop-path schedules against hand-computed values.

use candle_core::{Device, Tensor, Var};
use nasnet_trainer::{drop_path_progress, LrSchedule, ScheduleConfig, Sgd, SgdConfig};

fn var(data: &[f32], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_slice(data, shape, &Device::Cpu).unwrap()).unwrap()
}

fn values(v: &Var) -> Vec<f32> {
    v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
}

fn close(a: &[f32], b: &[f32]) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() < 1e-5,
            "element {i}: {x} vs {y} ({a:?} vs {b:?})"
        );
    }
    assert_eq!(a.len(), b.len());
}

struct Setup {
    w: Var,
    b: Var,
    unused: Var,
    c: Tensor,
    d: Tensor,
}

/// w (2x2, decayed), b (2, not decayed), unused (never in the loss);
/// loss = sum(w * c) + sum(b * d), so dL/dw = c and dL/db = d.
fn setup() -> Setup {
    let dev = Device::Cpu;
    Setup {
        w: var(&[1.0, 2.0, 3.0, 4.0], &[2, 2]),
        b: var(&[1.0, -1.0], &[2]),
        unused: var(&[7.0, 7.0, 7.0, 7.0], &[2, 2]),
        c: Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0], (2, 2), &dev).unwrap(),
        d: Tensor::from_slice(&[3.0f32, -2.0], 2, &dev).unwrap(),
    }
}

impl Setup {
    fn sgd(&self, cfg: SgdConfig) -> Sgd {
        let vars = vec![
            ("w".to_string(), self.w.clone()),
            ("b".to_string(), self.b.clone()),
            ("unused".to_string(), self.unused.clone()),
        ];
        Sgd::from_vars(vars, cfg).unwrap()
    }

    fn step(&self, sgd: &mut Sgd) {
        let loss = ((self.w.as_tensor() * &self.c).unwrap().sum_all().unwrap()
            + (self.b.as_tensor() * &self.d).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        sgd.step(&grads).unwrap();
    }
}

fn nesterov() -> SgdConfig {
    SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
        weight_decay: 0.01,
        clip_norm: None,
    }
}

#[test]
fn nesterov_momentum_with_weight_decay_two_steps() {
    let s = setup();
    let mut sgd = s.sgd(nesterov());
    s.step(&mut sgd);
    // gw = c + 0.01 w; buf = gw; w -= 0.1 (gw + 0.9 buf) = 0.19 gw
    close(&values(&s.w), &[0.9031, 2.1862, 2.6143, 3.9924]);
    // b has rank 1: no decay. b -= 0.19 d
    close(&values(&s.b), &[0.43, -0.62]);
    close(&values(&s.unused), &[7.0; 4]);
    s.step(&mut sgd);
    // buf = 0.9 buf + gw2; w -= 0.1 (gw2 + 0.9 buf)
    close(
        &values(&s.w),
        &[0.765_074_1, 2.451_426_2, 2.064_902_8, 3.981_574_4],
    );
    // buf_b = 1.9 d; b -= 0.1 (d + 0.9 * 1.9 d) = 0.271 d
    close(&values(&s.b), &[-0.383, -0.078]);
    close(&values(&s.unused), &[7.0; 4]);
    let state = sgd.state_tensors();
    let names: Vec<&str> = state.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, vec!["momentum.b", "momentum.w"]);
    // Buffers hold no autograd graph (else each would keep every earlier step's graph alive).
    assert!(state.iter().all(|(_, t)| !t.track_op()));
}

#[test]
fn heavy_ball_momentum_without_decay() {
    let s = setup();
    let mut sgd = s.sgd(SgdConfig {
        nesterov: false,
        weight_decay: 0.0,
        ..nesterov()
    });
    s.step(&mut sgd);
    s.step(&mut sgd);
    // buf1 = d, buf2 = 1.9 d; b = b - 0.1 d - 0.19 d = b - 0.29 d
    close(&values(&s.b), &[1.0 - 0.87, -1.0 + 0.58]);
    close(&values(&s.w), &[1.0 - 0.145, 2.0 + 0.29, 3.0 - 0.58, 4.0]);
}

#[test]
fn clipping_by_global_norm() {
    let s = setup();
    // Global norm of (c, d) = sqrt(0.25 + 1 + 4 + 0 + 9 + 4) = sqrt(18.25).
    let norm = 18.25f64.sqrt();
    let mut sgd = s.sgd(SgdConfig {
        lr: 1.0,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
        clip_norm: Some(1.0),
        ..nesterov()
    });
    let loss = ((s.w.as_tensor() * &s.c).unwrap().sum_all().unwrap()
        + (s.b.as_tensor() * &s.d).unwrap().sum_all().unwrap())
    .unwrap();
    let stats = sgd.step(&loss.backward().unwrap()).unwrap();
    assert!((stats.grad_norm.unwrap() - norm).abs() < 1e-5);
    assert_eq!(stats.updated, 2);
    let k = (1.0 / (norm + 1e-6)) as f32;
    close(&values(&s.b), &[1.0 - 3.0 * k, -1.0 + 2.0 * k]);
    close(&values(&s.w), &[1.0 - 0.5 * k, 2.0 + k, 3.0 - 2.0 * k, 4.0]);

    // A clip above the norm leaves the gradients alone.
    let s = setup();
    let mut sgd = s.sgd(SgdConfig {
        clip_norm: Some(100.0),
        weight_decay: 0.0,
        momentum: 0.0,
        nesterov: false,
        lr: 1.0,
        ..nesterov()
    });
    s.step(&mut sgd);
    close(&values(&s.b), &[-2.0, 1.0]);
}

#[test]
fn state_roundtrip_continues_identically() {
    let a = setup();
    let mut sa = a.sgd(nesterov());
    a.step(&mut sa);
    let saved = sa.state_tensors();
    a.step(&mut sa);

    let b = setup();
    let mut sb = b.sgd(nesterov());
    b.step(&mut sb);
    let mut fresh = b.sgd(nesterov());
    fresh
        .load_state(saved.into_iter().collect(), std::path::Path::new("opt"))
        .unwrap();
    b.step(&mut fresh);
    close(&values(&a.w), &values(&b.w));
    close(&values(&a.b), &values(&b.b));

    // Buffers for unknown parameters or of the wrong shape are rejected by name.
    let bad = vec![(
        "momentum.nope".to_string(),
        Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    )];
    let err = fresh
        .load_state(bad.into_iter().collect(), std::path::Path::new("opt"))
        .unwrap_err();
    assert!(err.to_string().contains("momentum.nope"), "{err}");
    let bad = vec![(
        "momentum.w".to_string(),
        Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
    )];
    let err = fresh
        .load_state(bad.into_iter().collect(), std::path::Path::new("opt"))
        .unwrap_err();
    assert!(err.to_string().contains("momentum.w"), "{err}");
}

#[test]
fn invalid_settings_are_rejected() {
    let s = setup();
    for cfg in [
        SgdConfig {
            lr: -1.0,
            ..nesterov()
        },
        SgdConfig {
            momentum: 1.0,
            ..nesterov()
        },
        SgdConfig {
            momentum: 0.0,
            ..nesterov()
        },
        SgdConfig {
            clip_norm: Some(0.0),
            ..nesterov()
        },
        SgdConfig {
            weight_decay: f64::NAN,
            ..nesterov()
        },
    ] {
        let vars = vec![("w".to_string(), s.w.clone())];
        assert!(Sgd::from_vars(vars, cfg).is_err());
    }
}

#[test]
fn cosine_schedule_values() {
    let c = ScheduleConfig::cosine();
    assert_eq!(c.learning_rate(0.1, 0, 10, 100), 0.1);
    assert!((c.learning_rate(0.1, 50, 10, 100) - 0.05).abs() < 1e-12);
    assert!((c.learning_rate(0.1, 25, 10, 100) - 0.1 * (0.5 + 0.5 * 0.5f64.sqrt())).abs() < 1e-12);
    assert!(c.learning_rate(0.1, 100, 10, 100).abs() < 1e-12);
    assert!(c.learning_rate(0.1, 150, 10, 100).abs() < 1e-12);
    let m = ScheduleConfig {
        schedule: LrSchedule::Cosine { min_lr: 0.01 },
        warmup_epochs: 0.0,
    };
    assert!((m.learning_rate(0.1, 50, 10, 100) - 0.055).abs() < 1e-12);
}

#[test]
fn warmup_then_cosine() {
    // 2 warm-up epochs of 10 steps: 0.1 * (s + 1) / 20, then cosine over the other 80 steps.
    let c = ScheduleConfig {
        schedule: LrSchedule::Cosine { min_lr: 0.0 },
        warmup_epochs: 2.0,
    };
    assert!((c.learning_rate(0.1, 0, 10, 100) - 0.005).abs() < 1e-12);
    assert!((c.learning_rate(0.1, 9, 10, 100) - 0.05).abs() < 1e-12);
    assert!((c.learning_rate(0.1, 19, 10, 100) - 0.1).abs() < 1e-12);
    assert!((c.learning_rate(0.1, 20, 10, 100) - 0.1).abs() < 1e-12);
    assert!((c.learning_rate(0.1, 60, 10, 100) - 0.05).abs() < 1e-12);
    assert!(c.validate().is_ok());
    assert!(ScheduleConfig {
        warmup_epochs: -1.0,
        ..c
    }
    .validate()
    .is_err());
}

#[test]
fn exponential_staircase_and_constant() {
    let e = ScheduleConfig {
        schedule: LrSchedule::Exponential {
            rate: 0.97,
            every_epochs: 2.4,
        },
        warmup_epochs: 0.0,
    };
    // 10 steps per epoch: a period is 24 steps.
    assert_eq!(e.learning_rate(1.0, 23, 10, 1000), 1.0);
    assert!((e.learning_rate(1.0, 24, 10, 1000) - 0.97).abs() < 1e-12);
    assert!((e.learning_rate(1.0, 50, 10, 1000) - 0.97 * 0.97).abs() < 1e-12);
    let k = ScheduleConfig {
        schedule: LrSchedule::Constant,
        warmup_epochs: 0.0,
    };
    assert_eq!(k.learning_rate(0.3, 999, 10, 100), 0.3);
}

#[test]
fn drop_path_progress_values() {
    assert_eq!(drop_path_progress(0, 100), 0.0);
    assert_eq!(drop_path_progress(25, 100), 0.25);
    assert_eq!(drop_path_progress(100, 100), 1.0);
    assert_eq!(drop_path_progress(250, 100), 1.0);
    assert_eq!(drop_path_progress(3, 0), 1.0);
}

#[test]
fn momentum_buffers_hold_no_graph() {
    // d(sum w^2)/dw = 2w is computed from the variable, so candle records its graph; a buffer
    // built from it would keep that graph (and, step after step, every earlier one) alive.
    let w = var(&[1.0, -2.0, 3.0, 0.5], &[2, 2]);
    let mut sgd = Sgd::from_vars(vec![("w".to_string(), w.clone())], nesterov()).unwrap();
    for _ in 0..3 {
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        sgd.step(&loss.backward().unwrap()).unwrap();
    }
    let state = sgd.state_tensors();
    assert_eq!(state.len(), 1);
    assert!(!state[0].1.track_op());
    assert!(!w.as_detached_tensor().track_op());
}
