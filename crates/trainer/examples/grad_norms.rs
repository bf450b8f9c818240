//! Prints the global gradient norm and loss of the first training steps of NASNet-A on
//! Fashion-MNIST, to see whether clipping at a given norm would act.
//!
//! `cargo run --release -p nasnet-trainer --example grad_norms -- DATA_DIR NET STEPS`

use candle_core::Device;
use nasnet_cells::{parse_net, NasNetConfig};
use nasnet_trainer::progress::{ProgressHook, StepInfo};
use nasnet_trainer::{
    fit_model_config, DataConfig, DataSource, Splits, TestEval, TrainConfig, Trainer,
};

struct Print(usize);

impl ProgressHook for Print {
    fn on_step(&mut self, s: &StepInfo) {
        println!(
            "step {:3} loss {:.4} grad norm {:.3} lr {:.4}",
            s.global_step,
            s.loss,
            s.grad_norm.unwrap_or(f64::NAN),
            s.lr
        );
    }
    fn should_stop(&mut self) -> bool {
        self.0 -= 1;
        self.0 == 0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: grad_norms DATA_DIR [NET] [STEPS]")?;
    let net = args.get(2).map_or("2@384", |s| s.as_str());
    let steps: usize = args.get(3).map_or(Ok(30), |s| s.parse())?;
    let mut data = DataConfig::new(DataSource::FashionMnist { dir: dir.into() });
    data.train_limit = Some(20_000);
    data.test_limit = Some(100);
    let splits = Splits::load(&data)?;
    let mut m = fit_model_config(NasNetConfig::cifar_size(parse_net(net)?), &splits.train);
    m.aux_head = false;
    m.drop_path_keep_prob = 1.0;
    let mut cfg = TrainConfig::quick(2);
    cfg.sgd.clip_norm = Some(1e9); // measure without clipping
    cfg.test_eval = TestEval::Never;
    let mut t = Trainer::new(
        &nasnet_searchspace::named::nasnet_a(),
        &m,
        &cfg,
        &Device::Cpu,
    )?;
    let _ = t.train(&splits, &mut Print(steps));
    Ok(())
}
