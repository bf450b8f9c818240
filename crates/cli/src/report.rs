//! `nasnet report RUN_DIR`: the top architectures of a search, a plot of reward against trial
//! (SVG), the best cells as SVG pictures in the paper's figure style and as Graphviz DOT, and for
//! a weight-sharing search its learning curves. Reads the run folder without modifying it, so it
//! is safe on a search that is still running.

mod learning;
mod plot;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use nasnet_controller::search_loop::{read_run, TrialRecord, TrialStatus};
use nasnet_searchspace::dot::genotype_to_dot_titled;
use nasnet_searchspace::svg::{genotype_svg, genotypes_svg};

use plot::{end_document, padded_range, start_document, Axes, BLUE, ORANGE, RED};

/// How many distinct architectures `top.svg` draws.
const TOP_PICTURES: usize = 5;

/// Arguments of `nasnet report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The search's run folder.
    pub run_dir: PathBuf,
    /// How many architectures to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Where to write the pictures and DOT file (default: RUN_DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `nasnet report`.
pub fn run(args: &ReportArgs) -> Result<()> {
    let (_config, trials) = read_run(&args.run_dir)?;
    print!("{}", table(&trials, args.top));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run_dir.join("report"));
    let (written, learning_summary) = write_run_files(&args.run_dir, &trials, &out)?;
    if let Some(summary) = learning_summary {
        println!();
        print!("{summary}");
    }
    println!();
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Writes every picture of a run folder into `out`: those of [`write_files`] and, for a
/// weight-sharing run (a `sharing.jsonl` beside `trials.jsonl`), `learning.svg`. Returns the
/// files written and, for a weight-sharing run, the learning summary to print.
pub fn write_run_files(
    run_dir: &Path,
    trials: &[TrialRecord],
    out: &Path,
) -> Result<(Vec<PathBuf>, Option<String>)> {
    let mut written = write_files(trials, out)?;
    let Some(updates) = learning::read_updates(run_dir)? else {
        return Ok((written, None));
    };
    if !updates.is_empty() {
        written.push(write(
            out,
            "learning.svg",
            &learning::learning_svg(&updates),
        )?);
    }
    Ok((written, Some(learning::summary(&updates))))
}

/// Writes `contents` to `out/name` and returns the path.
fn write(out: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = out.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The trials sorted best first (failed ones last, then by trial id).
pub fn ranked(trials: &[TrialRecord]) -> Vec<&TrialRecord> {
    let mut sorted: Vec<&TrialRecord> = trials.iter().collect();
    let failed = |t: &TrialRecord| t.status != TrialStatus::Ok;
    sorted.sort_by(|a, b| {
        failed(a)
            .cmp(&failed(b))
            .then(
                b.reward
                    .partial_cmp(&a.reward)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
            .then(a.trial.cmp(&b.trial))
    });
    sorted
}

/// A plain-text table of the `top` best trials and a one-line summary.
pub fn table(trials: &[TrialRecord], top: usize) -> String {
    let mut s = String::new();
    let failed = trials
        .iter()
        .filter(|t| t.status == TrialStatus::Failed)
        .count();
    // Summed from +0.0: f64's `sum` of nothing is -0.0, which prints as "-0".
    let seconds = trials.iter().fold(0.0, |total, t| total + t.seconds);
    let _ = writeln!(
        s,
        "{} trials finished ({} failed), {:.0} child-seconds in all",
        trials.len(),
        failed,
        seconds
    );
    if trials.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "{:>4}  {:>6}  {:>8}  {:>10}  {:>7}  architecture",
        "rank", "trial", "reward", "params", "seconds"
    );
    for (rank, t) in ranked(trials).into_iter().take(top).enumerate() {
        let _ = writeln!(
            s,
            "{:>4}  {:>6}  {:>8.4}  {:>10}  {:>7.1}  {}",
            rank + 1,
            t.trial,
            t.reward,
            t.params,
            t.seconds,
            t.genotype
        );
    }
    s
}

/// Writes `reward.svg` and, when a trial succeeded, the best architecture as `best.svg` and
/// `best.dot` and the best few distinct ones as `top.svg`, into `out`; returns the paths written.
pub fn write_files(trials: &[TrialRecord], out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = vec![write(out, "reward.svg", &reward_svg(trials))?];
    let top = top_distinct(trials, TOP_PICTURES);
    // The best cell is a successful one: a failed child is never drawn as the best.
    if let Some(best) = top.first() {
        let title = format!("trial {} (reward {:.4})", best.trial, best.reward);
        written.push(write(
            out,
            "best.svg",
            &genotype_svg(&best.genotype, &title),
        )?);
        let dot = genotype_to_dot_titled(&best.genotype, &title);
        written.push(write(out, "best.dot", &dot)?);
        let captions: Vec<String> = top
            .iter()
            .enumerate()
            .map(|(rank, t)| {
                format!(
                    "rank {}: trial {} (reward {:.4})",
                    rank + 1,
                    t.trial,
                    t.reward
                )
            })
            .collect();
        let rows: Vec<(&str, &nasnet_searchspace::Genotype)> = captions
            .iter()
            .zip(&top)
            .map(|(c, t)| (c.as_str(), &t.genotype))
            .collect();
        written.push(write(out, "top.svg", &genotypes_svg(&rows))?);
    }
    Ok(written)
}

/// The best `n` successful trials with distinct architectures (a search may sample one
/// architecture many times; its best trial stands for it).
fn top_distinct(trials: &[TrialRecord], n: usize) -> Vec<&TrialRecord> {
    let mut seen = HashSet::new();
    ranked(trials)
        .into_iter()
        .filter(|t| t.status == TrialStatus::Ok)
        .filter(|t| seen.insert(&t.genotype))
        .take(n)
        .collect()
}

/// An SVG scatter of reward against trial id, with the running best as a line and failed
/// trials as red crosses on the axis.
pub fn reward_svg(trials: &[TrialRecord]) -> String {
    let (w, h, margin) = (720.0, 420.0, 64.0);
    let mut by_id: Vec<&TrialRecord> = trials.iter().collect();
    by_id.sort_by_key(|t| t.trial);
    let max_trial = by_id.last().map_or(1, |t| t.trial.max(1)) as f64;
    let ok: Vec<f64> = by_id
        .iter()
        .filter(|t| t.status == TrialStatus::Ok)
        .map(|t| t.reward)
        .collect();
    let axes = Axes {
        left: margin,
        top: margin,
        width: w - 2.0 * margin,
        height: h - 2.0 * margin,
        x: (0.0, max_trial),
        y: padded_range(&ok, Some((0.0, 1.0))),
    };
    let mut s = start_document(w, h);
    axes.draw(&mut s, "trial", "reward (validation accuracy)", 0);
    let mut best = f64::NEG_INFINITY;
    let mut line = Vec::new();
    for t in &by_id {
        let x = axes.px(t.trial as f64);
        if t.status == TrialStatus::Ok {
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{:.1}" r="3" fill="{BLUE}" fill-opacity="0.7"/>"#,
                axes.py(t.reward)
            );
            best = best.max(t.reward);
        } else {
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" fill="{RED}" text-anchor="middle">x</text>"#,
                axes.bottom() - 4.0
            );
        }
        if best.is_finite() {
            line.push((t.trial as f64, best));
        }
    }
    axes.polyline(&mut s, &line, ORANGE);
    axes.legend(&mut s, &[("best so far", ORANGE)]);
    end_document(&mut s);
    s
}
