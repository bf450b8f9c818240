//! Shared by subcommands: telling user-input errors (exit 2) from other failures (exit 1), and
//! resolving an architecture argument (a known name or a file).

use std::fmt;
use std::path::Path;

use anyhow::Context;
use nasnet_controller::search_loop::SearchError;
use nasnet_searchspace::{named, Genotype, GenotypeError};
use nasnet_trainer::{SpecError, TrainError};

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
