//! Where a test server writes the files a module's settings point at: a directory the caller
//! chose (kept), or a temporary one removed with the server.

use std::path::{Path, PathBuf};

pub(crate) enum WorkDir {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl WorkDir {
    /// `dir` (created if missing), or a new temporary directory named after `prefix`.
    pub fn new(dir: Option<PathBuf>, prefix: &str) -> std::io::Result<Self> {
        match dir {
            Some(path) => {
                std::fs::create_dir_all(&path)?;
                Ok(WorkDir::Kept(path))
            }
            None => Ok(WorkDir::Temporary(
                tempfile::Builder::new().prefix(prefix).tempdir()?,
            )),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            WorkDir::Kept(path) => path,
            WorkDir::Temporary(dir) => dir.path(),
        }
    }
}
