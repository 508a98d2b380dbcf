//! LeRobot v3 datasets, read and written (arrow / parquet; the format is described in
//! `shared/reference/lerobot-dataset-v3.md`): no transport, no robot.
//!
//! - [`read`]: feature names and fps from `meta/info.json`, episodes' `action` rows.
//! - [`write`]: [`write::DatasetWriter`]: state, action and camera videos, one commit point per
//!   episode, resumable.
//! - [`video`], [`mp4`]: camera frames to H.264 MP4 (OpenH264), and reading MP4 indexes back.
//! - [`stats`]: lerobot's feature statistics, per episode and aggregated.
//! - [`inspect`]: `reachy dataset info` and `validate`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod inspect;
pub mod mp4;
pub mod read;
pub mod stats;
pub mod video;
pub mod write;

pub use read::{dataset_names, joint_of, load_episode, Episode, FeatureNames};
pub use video::VideoOptions;
pub use write::{DatasetSpec, DatasetWriter, EpisodeWriter, Frame, VideoFeature};

/// Errors reading or writing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The dataset (or what is asked of it) is not acceptable: says what and where.
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Parquet could not read or write a file.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow refused a column.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// JSON metadata did not parse or serialise.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// One of the above, while doing `what`.
    #[error("{what}: {source}")]
    Context {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: Box<DatasetError>,
    },
}

/// Say what was being done when an error happened.
pub(crate) trait Context<T> {
    /// Wrap the error with `what()`.
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, DatasetError>;
}

impl<T, E: Into<DatasetError>> Context<T> for Result<T, E> {
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, DatasetError> {
        self.map_err(|e| DatasetError::Context {
            what: what().into(),
            source: Box::new(e.into()),
        })
    }
}

/// A [`DatasetError::Invalid`] from a format string.
macro_rules! invalid {
    ($($fmt:tt)+) => {
        $crate::DatasetError::Invalid(format!($($fmt)+))
    };
}

/// Return a [`DatasetError::Invalid`] from a format string.
macro_rules! bail {
    ($($fmt:tt)+) => {
        return Err($crate::invalid!($($fmt)+))
    };
}
pub(crate) use {bail, invalid};
