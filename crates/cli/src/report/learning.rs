//! The learning curves of a weight-sharing search (`nasnet search --sharing`): its run folder
//! holds `sharing.jsonl`, one line per strategy update with the strategy's mean reward under the
//! shared weights, the mean reward of uniformly random children at the same point, and the
//! strategy's entropy. The report plots both rewards and the entropy against update
//! (`learning.svg`) and says whether the strategy beats random in the last fifth of the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::plot::{end_document, padded_range, start_document, Axes, BLUE, ORANGE, RED};

/// The file a weight-sharing search appends its strategy updates to.
pub(crate) const SHARING_FILE: &str = "sharing.jsonl";

/// One line of `sharing.jsonl`. Unknown fields are ignored so the search may log more.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct SharingUpdate {
    /// Strategy update number.
    pub(crate) update: u64,
    /// Shared-weight training steps so far.
    pub(crate) step: u64,
    /// Seconds since the search began.
    pub(crate) elapsed_s: f64,
    /// Mean reward of the strategy's children under the shared weights.
    pub(crate) reward_mean: f64,
    /// Mean reward of uniformly random children under the same weights.
    pub(crate) random_reward_mean: f64,
    /// The strategy's entropy (absent for strategies without one, e.g. evolution).
    #[serde(default)]
    pub(crate) entropy: Option<f64>,
}

/// The updates in `run_dir/sharing.jsonl` by update number (`None` when the run has no such
/// file). A torn last line (a run killed mid-append) is skipped; a bad line elsewhere is an
/// error naming it. An update logged twice (a resumed run repeating one) keeps its last line.
pub(crate) fn read_updates(run_dir: &Path) -> Result<Option<Vec<SharingUpdate>>> {
    let path = run_dir.join(SHARING_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut by_update = BTreeMap::new();
    for (number, line) in text.split_inclusive('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<SharingUpdate>(line.trim_end()) {
            Ok(u) => {
                by_update.insert(u.update, u);
            }
            Err(_) if !line.ends_with('\n') => break,
            Err(e) => bail!("{} line {}: {e}", path.display(), number + 1),
        }
    }
    Ok(Some(by_update.into_values().collect()))
}

/// The mean of `values` (0 for none).
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The last fifth of `updates` (at least one).
fn last_fifth(updates: &[SharingUpdate]) -> &[SharingUpdate] {
    let n = updates.len().div_ceil(5).max(1).min(updates.len());
    &updates[updates.len() - n..]
}

/// A few lines on the run: its size, the strategy's and random's mean reward over the last
/// fifth of updates, and the entropy at the first and last update that logged one.
pub(crate) fn summary(updates: &[SharingUpdate]) -> String {
    let Some(last) = updates.last() else {
        return "weight sharing: no strategy update logged yet\n".to_string();
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "weight sharing: {} strategy updates, {} shared-weight steps, {:.0} s",
        updates.len(),
        last.step,
        last.elapsed_s
    );
    let tail = last_fifth(updates);
    let strategy = mean(tail.iter().map(|u| u.reward_mean));
    let random = mean(tail.iter().map(|u| u.random_reward_mean));
    let _ = writeln!(
        s,
        "  mean reward, last fifth (updates {}-{}): strategy {strategy:.4}, uniform random {random:.4} ({:+.4})",
        tail[0].update,
        last.update,
        strategy - random
    );
    let mut entropies = updates.iter().filter_map(|u| Some((u.update, u.entropy?)));
    match (entropies.next(), entropies.next_back()) {
        (Some((u0, e0)), Some((u1, e1))) => {
            let _ = writeln!(
                s,
                "  entropy: {e0:.4} at update {u0} -> {e1:.4} at update {u1}"
            );
        }
        (Some((u0, e0)), None) => {
            let _ = writeln!(s, "  entropy: {e0:.4} at update {u0} (one update)");
        }
        _ => {
            let _ = writeln!(s, "  entropy: not logged");
        }
    }
    s
}

/// `learning.svg`: the strategy's and uniform random's mean shared-weight reward against
/// update, and below it the strategy's entropy when one was logged.
pub(crate) fn learning_svg(updates: &[SharingUpdate]) -> String {
    let entropy: Vec<(f64, f64)> = updates
        .iter()
        .filter_map(|u| Some((u.update as f64, u.entropy?)))
        .collect();
    let (width, panel, margin) = (720.0, 300.0, 64.0);
    let panels = if entropy.is_empty() { 1.0 } else { 2.0 };
    let mut s = start_document(width, panels * (panel + margin) + margin / 2.0);
    let first = updates.first().map_or(0.0, |u| u.update as f64);
    let last = updates.last().map_or(1.0, |u| u.update as f64);
    let x = (first, if last > first { last } else { first + 1.0 });
    let strategy: Vec<(f64, f64)> = updates
        .iter()
        .map(|u| (u.update as f64, u.reward_mean))
        .collect();
    let random: Vec<(f64, f64)> = updates
        .iter()
        .map(|u| (u.update as f64, u.random_reward_mean))
        .collect();
    let rewards: Vec<f64> = strategy.iter().chain(&random).map(|p| p.1).collect();
    let area = |top: f64, y| Axes {
        left: margin,
        top,
        width: width - 1.5 * margin,
        height: panel - margin,
        x,
        y,
    };
    let reward_axes = area(margin, padded_range(&rewards, Some((0.0, 1.0))));
    reward_axes.title(&mut s, "mean reward under the shared weights");
    reward_axes.draw(&mut s, "strategy update", "mean reward", 0);
    reward_axes.polyline(&mut s, &random, ORANGE);
    reward_axes.polyline(&mut s, &strategy, BLUE);
    reward_axes.legend(&mut s, &[("strategy", BLUE), ("uniform random", ORANGE)]);
    if !entropy.is_empty() {
        let values: Vec<f64> = entropy.iter().map(|p| p.1).collect();
        let entropy_axes = area(margin + panel + margin, padded_range(&values, None));
        entropy_axes.title(&mut s, "strategy entropy");
        entropy_axes.draw(&mut s, "strategy update", "entropy", 0);
        entropy_axes.polyline(&mut s, &entropy, RED);
    }
    end_document(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(update: u64, reward: f64, random: f64, entropy: Option<f64>) -> SharingUpdate {
        SharingUpdate {
            update,
            step: 10 * update,
            elapsed_s: update as f64,
            reward_mean: reward,
            random_reward_mean: random,
            entropy,
        }
    }

    #[test]
    fn the_last_fifth_rounds_up_and_keeps_at_least_one() {
        let us: Vec<SharingUpdate> = (0..11).map(|i| update(i, 0.0, 0.0, None)).collect();
        assert_eq!(last_fifth(&us).len(), 3);
        assert_eq!(last_fifth(&us[..5]).len(), 1);
        assert_eq!(last_fifth(&us[..1]).len(), 1);
        assert_eq!(last_fifth(&us[..0]).len(), 0);
    }

    #[test]
    fn summary_compares_the_last_fifth_and_the_entropy_ends() {
        let us: Vec<SharingUpdate> = (0..10)
            .map(|i| {
                let entropy = (i != 9).then_some(5.0 - i as f64 * 0.25);
                update(i, 0.1 * i as f64, 0.3, entropy)
            })
            .collect();
        let s = summary(&us);
        // Last fifth = updates 8 and 9: strategy (0.8 + 0.9) / 2, random 0.3.
        assert!(
            s.contains("(updates 8-9): strategy 0.8500, uniform random 0.3000 (+0.5500)"),
            "{s}"
        );
        assert!(
            s.contains("entropy: 5.0000 at update 0 -> 3.0000 at update 8"),
            "{s}"
        );
        let none: Vec<SharingUpdate> = us
            .iter()
            .map(|u| SharingUpdate {
                entropy: None,
                ..u.clone()
            })
            .collect();
        assert!(summary(&none).contains("entropy: not logged"));
        assert!(learning_svg(&none).matches("<polyline").count() == 2);
        assert!(learning_svg(&us).matches("<polyline").count() == 3);
    }
}
