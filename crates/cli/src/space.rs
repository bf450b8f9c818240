//! `nasnet space [--space nasnet|nasnet-b|nasnet-c]`: the controller's decisions and the exact
//! size of a search space.

use std::io::Write;

use clap::ValueEnum;
use nasnet_searchspace::{format_scientific, DecisionKind, OutputRule, SearchSpace};

/// The predefined spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpaceName {
    /// The paper's space: B = 5, 13 ops, add/concat, unused states concatenated.
    Nasnet,
    /// Appendix NASNet-B: B = 4, four combines, every block output goes on.
    NasnetB,
    /// Appendix NASNet-C: B = 5, four combines, unused states concatenated.
    NasnetC,
}

impl SpaceName {
    /// The space itself.
    pub fn space(self) -> SearchSpace {
        match self {
            SpaceName::Nasnet => SearchSpace::nasnet(),
            SpaceName::NasnetB => SearchSpace::nasnet_b(),
            SpaceName::NasnetC => SearchSpace::nasnet_c(),
        }
    }
}

/// Arguments of `nasnet space`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which search space.
    #[arg(long, value_enum, default_value_t = SpaceName::Nasnet)]
    pub space: SpaceName,
}

/// The listing, as printed.
pub fn render(name: SpaceName, space: &SearchSpace) -> String {
    let mut out = String::new();
    let label = name
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    out.push_str(&format!("search space {label}\n"));
    out.push_str(&format!("  blocks per cell (B): {}\n", space.blocks));
    let ops: Vec<&str> = space.ops.iter().map(|o| o.name()).collect();
    out.push_str(&format!("  ops ({}): {}\n", ops.len(), ops.join(", ")));
    let combines: Vec<&str> = space.combines.iter().map(|c| c.name()).collect();
    out.push_str(&format!(
        "  combines ({}): {}\n",
        combines.len(),
        combines.join(", ")
    ));
    let rule = match space.output_rule {
        OutputRule::UnusedStates => "unused_states (concatenate every state no block consumed)",
        OutputRule::AllStates => "all_states (every block output goes on)",
    };
    out.push_str(&format!("  output rule: {rule}\n"));
    out.push_str(&sharing_note(space));
    out.push_str(&format!(
        "decisions ({} = 2 cells x 5 x B):\n",
        space.actions_len()
    ));
    out.push_str(&format!(
        "  {:>3}  {:<9}  {:>5}  {:<8}  {:>7}\n",
        "#", "role", "block", "kind", "choices"
    ));
    for (i, d) in space.decisions().iter().enumerate() {
        let kind = match d.kind {
            DecisionKind::Input { which } => format!("input {}", which + 1),
            DecisionKind::Op { which } => format!("op {}", which + 1),
            DecisionKind::Combine => "combine".to_string(),
        };
        out.push_str(&format!(
            "  {:>3}  {:<9}  {:>5}  {:<8}  {:>7}\n",
            i,
            d.role.name(),
            d.block,
            kind,
            d.choices
        ));
    }
    let size = space.size();
    out.push_str(&format!("size: {size}\n"));
    out.push_str(&format!(
        "size (scientific): {}\n",
        format_scientific(&size, 4)
    ));
    out
}

/// What `nasnet search --sharing` does to the space: concat is left out, because a concat block
/// has twice the filters of an add block, so every later op's input width would depend on the
/// rest of the genotype and no single set of weights could serve every child.
fn sharing_note(space: &SearchSpace) -> String {
    let shared = nasnet_cells::sharing_space(space);
    let combines: Vec<&str> = shared.combines.iter().map(|c| c.name()).collect();
    let mut line = format!(
        "  with search --sharing: combines {} (size {})",
        combines.join(", "),
        format_scientific(&shared.size(), 4)
    );
    if shared.combines != space.combines {
        line.push_str(
            "; concat cannot share weights (its blocks are twice as wide), so it is left out",
        );
    }
    line.push('\n');
    line
}

/// Runs `nasnet space`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let space = args.space.space();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(render(args.space, &space).as_bytes())?;
    stdout.flush()?;
    Ok(())
}
