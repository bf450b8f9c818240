//! Shared by subcommands: telling user-input errors (exit 2) from other failures (exit 1), saying
//! errors in the command line's words (the flags for the settings the libraries' errors name), and
//! resolving an architecture argument (a known name or a file).

use std::fmt;
use std::path::Path;

use anyhow::Context;
use nasnet_controller::search_loop::{SearchError, Setting as SearchSetting};
use nasnet_searchspace::{named, Genotype, GenotypeError};
use nasnet_trainer::{ChildError, DataError, Setting, SpecError, TrainError};

/// An error caused by what the user typed or pointed at; the process exits with code 2.
#[derive(Debug)]
pub struct UserInputError(pub String);

impl fmt::Display for UserInputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserInputError {}

/// Wraps a message as a user-input error (exit code 2).
pub fn user_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserInputError(message.into()))
}

/// A trainer error for the CLI, keeping its type (the exit code comes from
/// [`TrainError::is_user_error`]).
pub fn train_error(e: TrainError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// 2 when the error (or anything in its chain) is the user's to fix: a user-input error, a
/// genotype error (genotypes always come from user input here), a child specification the
/// search rejects, or a trainer or search-folder error of the user's kind; 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let user = e.chain().any(|c| {
        c.is::<UserInputError>()
            || c.is::<GenotypeError>()
            || c.is::<SpecError>()
            || c.downcast_ref::<TrainError>()
                .is_some_and(TrainError::is_user_error)
            || c.downcast_ref::<SearchError>()
                .is_some_and(SearchError::is_user_error)
    });
    if user {
        2
    } else {
        1
    }
}

/// The flag of each setting the trainer's errors name.
fn flag(setting: Setting) -> &'static str {
    match setting {
        Setting::Lr => "--lr",
        Setting::MinLr => "--min-lr",
        Setting::DataDir => "--data-dir",
        Setting::NoMemoryCheck => "--no-memory-check",
        Setting::Resume => "--resume",
    }
}

/// The flag of each setting the search's errors name.
fn search_flag(setting: SearchSetting) -> &'static str {
    match setting {
        SearchSetting::Resume => "--resume",
        SearchSetting::RunDir => "--run-dir",
        SearchSetting::Updates => "--updates",
        SearchSetting::StepsPerUpdate => "--steps-per-update",
    }
}

/// `e` as one message, its causes joined with ": " (anyhow's `{:#}`), with every setting a
/// library error names called by its flag.
pub fn message(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e.chain().map(in_flags).collect();
    parts.join(": ")
}

/// One error of a chain, in the command line's words.
fn in_flags(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(e) = e.downcast_ref::<TrainError>() {
        e.describe(flag)
    } else if let Some(e) = e.downcast_ref::<DataError>() {
        e.describe(flag)
    } else if let Some(e) = e.downcast_ref::<SpecError>() {
        e.describe(flag)
    } else if let Some(e) = e.downcast_ref::<ChildError>() {
        e.describe(flag)
    } else if let Some(e) = e.downcast_ref::<SearchError>() {
        e.describe(search_flag)
    } else {
        e.to_string()
    }
}

/// Resolves an architecture argument: a known name first, else a file holding JSON or the
/// compact text form. Returns the genotype and a display name.
pub fn load_architecture(arch: &str) -> anyhow::Result<(Genotype, String)> {
    if let Ok(g) = named::by_name(arch) {
        let name = named::NAMED
            .iter()
            .find(|a| (a.build)() == g)
            .map(|a| a.name.to_string())
            .unwrap_or_else(|| arch.to_string());
        return Ok((g, name));
    }
    let path = Path::new(arch);
    if !path.exists() {
        let known: Vec<&str> = named::NAMED.iter().map(|a| a.name).collect();
        return Err(user_error(format!(
            "`{arch}` is neither a known architecture ({}) nor an existing file",
            known.join(", ")
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| user_error(format!("cannot read `{arch}`: {e}")))?;
    let genotype = Genotype::from_json_or_text(&text)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("invalid architecture file `{arch}`"))?;
    Ok((genotype, arch.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasnet_trainer::ConfigError;

    #[test]
    fn library_errors_are_said_with_the_flags() {
        let e = anyhow::Error::new(TrainError::Config(ConfigError::MinLrAboveLr {
            min_lr: 0.2,
            lr: 0.1,
        }))
        .context("training");
        assert_eq!(
            message(&e),
            "training: invalid configuration: the final learning rate (--min-lr 0.2) is above \
             the base rate (--lr 0.1)"
        );
        let e = anyhow::Error::new(SearchError::RunExists("/runs/a".into()));
        assert_eq!(
            message(&e),
            "/runs/a already holds a search run (use --resume to continue it, or another --run-dir)"
        );
        // Anything else reads as anyhow's `{:#}` does.
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(message(&e), format!("{e:#}"));
    }
}
