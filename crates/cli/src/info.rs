//! `nasnet info ARCH [--net N@P|mobile|large] [--stem cifar|imagenet] [--input-size S]
//! [--classes K] [--aux-head]`: the exact trainable parameter count and the mult-adds of an
//! architecture built into a network, without allocating its weights.

use nasnet_cells::{NasNet, NasNetConfig, StemKind};

use crate::choices::{NetArg, StemArg};
use crate::input::{load_architecture, user_error};

/// Arguments of `nasnet info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A named architecture (nasnet-a, pnasnet-5, ...) or a genotype file (JSON or text).
    pub arch: String,
    /// Network size: `N@P` (N normal cells per stack, P = 24 F), or a preset: `mobile`
    /// (4@1056, ImageNet stem, 224) or `large` (6@4032, ImageNet stem, 331).
    #[arg(long, default_value = "6@768")]
    pub net: NetArg,
    /// Stem; defaults to the preset's, else CIFAR. An ImageNet stem for `N@P` uses stem
    /// multiplier 3 (96 conv0 filters), as Large.
    #[arg(long, value_enum)]
    pub stem: Option<StemArg>,
    /// Input height and width for the mult-add count; defaults to the preset's or the stem's
    /// usual size (32 CIFAR, 224 ImageNet).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// Number of classes; defaults to 10 (CIFAR stem) or 1000 (ImageNet stem).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Include the auxiliary head (training only) in the parameter count.
    #[arg(long)]
    pub aux_head: bool,
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The configuration the arguments describe.
fn config(args: &Args) -> anyhow::Result<NasNetConfig> {
    let mut cfg = match args.net {
        NetArg::Size(size) => match args.stem {
            Some(StemArg::Imagenet) => NasNetConfig::imagenet(size, 3.0, 224),
            _ => NasNetConfig::cifar_size(size),
        },
        NetArg::Mobile => NasNetConfig::mobile(),
        NetArg::Large => NasNetConfig::large(),
    };
    if let Some(stem) = args.stem {
        let wanted = stem.kind();
        if wanted != cfg.stem {
            let size = cfg.net_size();
            cfg = match wanted {
                StemKind::Cifar => NasNetConfig::cifar_size(size),
                StemKind::ImageNet => NasNetConfig::imagenet(size, 3.0, 224),
            };
        }
    }
    if let Some(s) = args.input_size {
        if s == 0 {
            return Err(user_error("--input-size must be positive"));
        }
        cfg.image_size = s;
    }
    if let Some(k) = args.classes {
        if k == 0 {
            return Err(user_error("--classes must be positive"));
        }
        cfg.num_classes = k;
    }
    cfg.aux_head = args.aux_head;
    Ok(cfg)
}

/// Runs `nasnet info`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (genotype, name) = load_architecture(&args.arch)?;
    let cfg = config(&args)?;
    let model = NasNet::shape_only(&genotype, &cfg).map_err(|e| user_error(e.to_string()))?;
    let params = model.parameter_count();
    let madds = model.mult_adds(cfg.image_size, cfg.image_size);
    // Both counts saturate rather than wrap: u64::MAX means the true count does not fit.
    if params == u64::MAX || madds == u64::MAX {
        return Err(user_error(format!(
            "{} at {}x{}: the {} count overflows 64 bits; choose a smaller network or --input-size",
            cfg.net_size(),
            cfg.image_size,
            cfg.image_size,
            if params == u64::MAX {
                "parameter"
            } else {
                "mult-add"
            }
        )));
    }
    let stem = match cfg.stem {
        StemKind::Cifar => "CIFAR",
        StemKind::ImageNet => "ImageNet",
    };
    println!("architecture   {name}");
    println!(
        "network        {} (N = {}, F = {}), {stem} stem ({} filters), {} classes{}",
        cfg.net_size(),
        cfg.cells_per_stack,
        cfg.filters,
        cfg.stem_filters,
        cfg.num_classes,
        if cfg.aux_head { ", with aux head" } else { "" }
    );
    println!("cells          {}", model.cell_names().len());
    println!(
        "parameters     {} ({:.2} M, trainable; BN running statistics excluded)",
        grouped(params),
        params as f64 / 1e6
    );
    println!(
        "mult-adds      {} ({:.3} G) at {}x{}",
        grouped(madds),
        madds as f64 / 1e9,
        cfg.image_size,
        cfg.image_size
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_digits() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(88_753_150), "88,753,150");
    }
}
