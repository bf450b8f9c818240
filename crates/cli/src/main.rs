//! `nasnet`: the command line of nasnet-rs.
//!
//! One module per subcommand; each exposes an `Args` struct (clap derive) and a
//! `run(args) -> anyhow::Result<()>`. A subcommand with modes is a folder of them: `train/`
//! (from scratch, fine-tuning), `search/` (trials on local processes or a Redis queue, weight
//! sharing) and `worker/` (one job file, or a queue). To add a subcommand: write
//! `src/NAME.rs`, then add `mod NAME;` and one variant to [`Command`] plus its arm in [`run`].
//!
//! Exit codes: 0 success; 2 a usage or user-input error (clap's own errors, an unknown name, a
//! malformed or invalid file); 1 anything else. Errors are printed as one line on stderr.

#![warn(missing_docs)]

mod choices;
mod classify;
mod console;
mod eval;
mod info;
mod input;
mod report;
mod search;
mod show;
mod space;
mod train;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use input::UserInputError;

/// NASNet (Zoph et al. 2018) in Rust: search space, search, training.
#[derive(Debug, Parser)]
#[command(name = "nasnet", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an architecture (a name such as `nasnet-a`, or a JSON or text file) as text,
    /// JSON or Graphviz DOT.
    Show(show::Args),
    /// List a search space's decisions and its exact size.
    Space(space::Args),
    /// Search for a cell: a strategy proposes children, each is trained (in its own process)
    /// and rewarded with its validation accuracy.
    Search(search::SearchArgs),
    /// Summarise a search run: the top architectures, a reward plot (SVG), the best cells (DOT).
    Report(report::ReportArgs),
    /// Train an architecture on a dataset, with checkpoints, metrics and --resume.
    Train(train::TrainArgs),
    /// Test (or validation) accuracy and loss of a checkpoint written by `nasnet train`.
    Eval(eval::EvalArgs),
    /// Exact parameter count and mult-adds of an architecture built into a network.
    Info(info::Args),
    /// Classify JPEG/PNG images with NASNet-A Mobile or Large weights (safetensors or PyTorch
    /// .pth): the top classes and their probabilities.
    Classify(classify::ClassifyArgs),
    /// Train one search child (started by `nasnet search`), or with --queue serve the trials
    /// of `nasnet search --queue` on this machine (see docs/distributed.md).
    Worker(worker::WorkerArgs),
}

/// Dispatches a parsed command line.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Show(args) => show::run(args),
        Command::Space(args) => space::run(args),
        Command::Search(args) => search::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Worker(args) => worker::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Info(args) => info::run(args),
        Command::Classify(args) => classify::run(&args),
    }
}

/// Prints a clap parse failure: help and version as clap formats them, a usage error as one
/// line (clap's multi-line report joined), with clap's exit code (2 for usage errors).
fn report_parse_error(e: clap::Error) -> ExitCode {
    let code = u8::try_from(e.exit_code()).unwrap_or(2);
    let full_help = e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand;
    if !e.use_stderr() || full_help {
        // --help / --version (or bare `nasnet`): print as clap would; a closed stream is not
        // worth a panic.
        let _ = e.print();
        return ExitCode::from(code);
    }
    let rendered = e.render().to_string();
    let line = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("{line}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    // Thread pools and malloc tuned for training on CPU (see nasnet_cells::configure_cpu).
    for (name, value) in nasnet_cells::candle_thread_env() {
        std::env::set_var(name, value);
    }
    nasnet_cells::configure_cpu();
    // `nasnet report RUN | head` must end quietly, as other Unix tools do, not panic on EPIPE.
    #[cfg(unix)]
    // SAFETY: restoring SIGPIPE's default disposition installs no Rust handler, and it runs at
    // the start of `main`, before any thread that could be signalled concurrently exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return report_parse_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The context chain joined with ": ", in the command line's words; on one line.
            let message = input::message(&e).replace(['\n', '\r'], " ");
            eprintln!("error: {message}");
            ExitCode::from(input::exit_code(&e))
        }
    }
}
