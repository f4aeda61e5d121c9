//! Warnings about files that hold secrets (the settings file with the component secret, the
//! modules' keys and certificates) when others than their owner can read or change them.
//!
//! Only a warning: the file may be shared on purpose (a group the service runs in), and a
//! restart must not fail over it. Missing files are left to the module build, which names them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{ConfigWarning, Settings};

/// How `path` is exposed, in words, or `None` when only its owner (and group, for reading) can
/// get at it.
fn exposure(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    let shown = path.display();
    let (who, fix) = if mode & 0o002 != 0 {
        ("writable by everyone", "o-rw")
    } else if mode & 0o020 != 0 {
        ("writable by its group", "g-w")
    } else if mode & 0o004 != 0 {
        ("readable by everyone", "o-r")
    } else {
        return None;
    };
    Some(format!(
        "{shown} is {who} (mode {mode:03o}) but holds secrets: run `chmod {fix} {shown}`"
    ))
}

/// The warnings for the settings file at `path` and every credential file its modules name:
/// for `fpush --check` and start-up, apart from [`super::load`] so that loading stays a
/// function of the file's text.
pub fn exposure_warnings(path: &Path, settings: &Settings) -> Vec<ConfigWarning> {
    let settings_file = exposure(path).map(|message| ConfigWarning::new("", None, message));
    let credentials = settings.push_modules.iter().flat_map(|module| {
        module
            .config
            .credential_files()
            .into_iter()
            .filter_map(|file| exposure(&file))
            .map(|message| ConfigWarning::new(&module.key_path(), module.position, message))
    });
    settings_file.into_iter().chain(credentials).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_mode(mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, file)
    }

    #[test]
    fn files_others_can_read_or_change_are_named() {
        for (mode, words) in [
            (0o644, "readable by everyone"),
            (0o666, "writable by everyone"),
            (0o660, "writable by its group"),
        ] {
            let (_dir, file) = with_mode(mode);
            let message = exposure(&file).unwrap_or_default();
            assert!(message.contains(words), "{mode:o}: {message}");
            assert!(message.contains(&format!("{mode:03o}")), "{message}");
        }
    }

    #[test]
    fn private_and_missing_files_pass() {
        for mode in [0o600, 0o640, 0o400] {
            let (_dir, file) = with_mode(mode);
            assert_eq!(exposure(&file), None, "{mode:o}");
        }
        assert_eq!(exposure(Path::new("/nonexistent/secret")), None);
    }
}
