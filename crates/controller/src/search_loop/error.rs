//! Why a search could not go on ([`SearchError`]), and the settings its errors name.

use std::path::PathBuf;

use thiserror::Error;

use crate::ControllerError;

impl From<nasnet_cells::durable::DurableError> for SearchError {
    fn from(e: nasnet_cells::durable::DurableError) -> Self {
        SearchError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// A setting a search error tells the user to change. The errors' own messages call it by its
/// name in this library ([`Setting::field`]); a front end with its own names (a command line's
/// flags) renders errors with [`SearchError::describe`]. Exhaustive on purpose: a front end's
/// table of names must cover every setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// Continuing the run in a folder ([`super::RunDir::resume`]) instead of creating one.
    Resume,
    /// The run folder itself.
    RunDir,
    /// The strategy updates of a sharing search, [`super::sharing::SharingBudget::updates`].
    Updates,
    /// The shared-weight steps before each update,
    /// [`super::sharing::SharingBudget::steps_per_update`].
    StepsPerUpdate,
}

impl Setting {
    /// The setting's name in this library, as the errors' own messages show it.
    pub fn field(self) -> &'static str {
        match self {
            Setting::Resume => "`RunDir::resume`",
            Setting::RunDir => "run folder",
            Setting::Updates => "`SharingBudget::updates`",
            Setting::StepsPerUpdate => "`SharingBudget::steps_per_update`",
        }
    }
}

/// What a [`super::Backend`] or a [`super::sharing::SharedModel`] reports when it fails: any
/// error, its type kept (so a caller can still downcast it), shown as its message.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Why a search could not go on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SearchError {
    /// A file of the run folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A run file exists but does not parse.
    #[error("{path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A new run was asked for in a folder that holds one.
    #[error("{}", self.describe(Setting::field))]
    RunExists(PathBuf),
    /// A folder without a run's config.json was given to resume or report.
    #[error("{0} is not a search run folder (no config.json)")]
    NotARun(PathBuf),
    /// Another search holds the run folder's lock (it is running in it).
    #[error(
        "{0} is in use by another search (one search at a time writes a run folder; \
         `nasnet report` can read it meanwhile)"
    )]
    InUse(PathBuf),
    /// A write was asked of a run folder opened read-only.
    #[error("{0} was opened read-only: only the search holding its lock writes it")]
    ReadOnly(PathBuf),
    /// The strategy failed (or could not be restored from the run's checkpoint).
    #[error("strategy")]
    Strategy(#[from] ControllerError),
    /// The backend failed (not a child: a failing child is a failed trial, not an error).
    #[error("backend: {0}")]
    Backend(BackendError),
    /// `next_outcome` was called with nothing submitted.
    #[error("backend asked for an outcome with no trial running")]
    NothingRunning,
    /// The run files contradict each other.
    #[error("run folder inconsistent: {0}")]
    Inconsistent(String),
    /// A sharing budget setting is 0, so the search would do nothing it reports (no updates) or
    /// score untrained shared weights (no steps per update).
    #[error("{}", self.describe(Setting::field))]
    ZeroBudget(Setting),
}

impl SearchError {
    /// The message, with every [`Setting`] it names called by `name`; `to_string()` is
    /// `describe(Setting::field)`.
    pub fn describe(&self, name: fn(Setting) -> &'static str) -> String {
        match self {
            SearchError::RunExists(dir) => format!(
                "{} already holds a search run (use {} to continue it, or another {})",
                dir.display(),
                name(Setting::Resume),
                name(Setting::RunDir)
            ),
            SearchError::ZeroBudget(setting) => format!("{} must be at least 1", name(*setting)),
            other => other.to_string(),
        }
    }

    /// Whether the user can fix it: a folder that holds a run (or none, or is in use by another
    /// search), a run file that is corrupt or contradicts the others, a file that cannot be read
    /// or written, a sharing budget of nothing. A strategy or backend failure, or a write
    /// through a read-only handle, is not.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            SearchError::Io { .. }
                | SearchError::Corrupt { .. }
                | SearchError::RunExists(_)
                | SearchError::NotARun(_)
                | SearchError::InUse(_)
                | SearchError::Inconsistent(_)
                | SearchError::ZeroBudget(_)
        )
    }
}
