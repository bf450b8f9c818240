//! `nasnet show ARCH [--format text|json|dot|svg]`: prints an architecture.

use std::io::Write;

use clap::ValueEnum;
use nasnet_searchspace::dot::genotype_to_dot_titled;
use nasnet_searchspace::svg::genotype_svg;
use nasnet_searchspace::text::describe;

use crate::input::load_architecture;

/// Output formats of `show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A readable description, then the compact one-line form.
    Text,
    /// The JSON form (`{"normal": {"blocks": [...], "concat": [...]}, "reduction": ...}`).
    Json,
    /// Graphviz DOT, both cells as clusters (`dot -Tsvg`).
    Dot,
    /// An SVG picture of both cells in the paper's figure style (no Graphviz needed).
    Svg,
}

/// Arguments of `nasnet show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A named architecture (nasnet-a, pnasnet-5, amoebanet-a, darts-v2, darts-v1, enas) or a
    /// file holding a genotype as JSON or in the compact text form.
    pub arch: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs `nasnet show`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (genotype, name) = load_architecture(&args.arch)?;
    let out = match args.format {
        Format::Json => format!("{}\n", genotype.to_json_pretty()),
        Format::Dot => genotype_to_dot_titled(&genotype, &name),
        Format::Svg => genotype_svg(&genotype, &name),
        Format::Text => format!(
            "{name}\n{}\ncompact: {genotype}\n",
            describe(&genotype).trim_end()
        ),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
