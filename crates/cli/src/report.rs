//! `nasnet report RUN_DIR`: the top architectures of a search, a plot of reward against trial
//! (SVG) and the best cells as Graphviz DOT. Reads the run folder without modifying it, so it is
//! safe on a search that is still running.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use nasnet_controller::search_loop::{read_run, TrialRecord, TrialStatus};
use nasnet_searchspace::dot::genotype_to_dot_titled;

/// Arguments of `nasnet report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The search's run folder.
    pub run_dir: PathBuf,
    /// How many architectures to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Where to write the plot and DOT files (default: RUN_DIR/report).
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
    let written = write_files(&trials, &out)?;
    println!();
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
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

/// Writes `reward.svg` and (when a trial succeeded) `best.dot` into `out`; returns the paths
/// written.
pub fn write_files(trials: &[TrialRecord], out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    let svg = out.join("reward.svg");
    std::fs::write(&svg, reward_svg(trials))
        .with_context(|| format!("writing {}", svg.display()))?;
    written.push(svg);
    // The best cell is a successful one: a failed child is never drawn as the best.
    if let Some(best) = ranked(trials)
        .first()
        .filter(|t| t.status == TrialStatus::Ok)
    {
        let dot = out.join("best.dot");
        let title = format!("trial {} (reward {:.4})", best.trial, best.reward);
        std::fs::write(&dot, genotype_to_dot_titled(&best.genotype, &title))
            .with_context(|| format!("writing {}", dot.display()))?;
        written.push(dot);
    }
    Ok(written)
}

/// An SVG scatter of reward against trial id, with the running best as a line.
pub fn reward_svg(trials: &[TrialRecord]) -> String {
    let (w, h, margin) = (720.0, 420.0, 56.0);
    let mut by_id: Vec<&TrialRecord> = trials.iter().collect();
    by_id.sort_by_key(|t| t.trial);
    let max_trial = by_id.last().map_or(1, |t| t.trial.max(1)) as f64;
    let ok: Vec<f64> = by_id
        .iter()
        .filter(|t| t.status == TrialStatus::Ok)
        .map(|t| t.reward)
        .collect();
    let lo = ok.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = ok.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        let pad = (hi - lo) * 0.05;
        ((lo - pad).max(0.0), (hi + pad).min(1.0))
    } else {
        (0.0, 1.0)
    };
    let x = |t: f64| margin + (w - 2.0 * margin) * t / max_trial;
    let y = |r: f64| h - margin - (h - 2.0 * margin) * ((r - lo) / (hi - lo)).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{m}" y1="{t}" x2="{m}" y2="{b}" stroke="black"/>"#,
        m = margin,
        b = h - margin,
        r = w - margin,
        t = margin
    );
    for i in 0..=4 {
        let r = lo + (hi - lo) * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.3}</text>"#,
            margin - 6.0,
            y(r) + 4.0,
            r
        );
        let t = max_trial * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.0}</text>"#,
            x(t),
            h - margin + 18.0,
            t
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">trial</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">reward (validation accuracy)</text>"#,
        w / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    let mut best = f64::NEG_INFINITY;
    let mut line = Vec::new();
    for t in &by_id {
        if t.status == TrialStatus::Ok {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#4477aa" fill-opacity="0.7"/>"##,
                x(t.trial as f64),
                y(t.reward)
            );
        } else {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#cc3311" text-anchor="middle">x</text>"##,
                x(t.trial as f64),
                h - margin - 4.0
            );
        }
        if t.status == TrialStatus::Ok && t.reward > best {
            best = t.reward;
        }
        if best.is_finite() {
            line.push(format!("{:.1},{:.1}", x(t.trial as f64), y(best)));
        }
    }
    if !line.is_empty() {
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#ee7733" stroke-width="2"/>"##,
            line.join(" ")
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" fill="#ee7733">best so far</text></svg>"##,
        w - margin - 80.0,
        margin - 10.0
    );
    s
}
