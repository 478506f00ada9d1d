//! Files and folders for the service's user alone (queue, Sparkplug bdSeq, engine cache): folders
//! 0700 and files 0600, whatever the umask. systemd runs the service with `UMask=0077`, but a
//! daemon started by hand inherits the shell's (usually 0022, which would leave the queue's
//! messages readable by every local user); so the mode is set explicitly after creation
//! (`chmod` is not filtered by the umask).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every folder created here.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file created here.
pub const FILE_MODE: u32 = 0o600;

/// Create `dir` and whichever of its parents are missing, each one 0700. Folders that already
/// exist are left as they are (a parent may be shared, e.g. a StateDirectory).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)),
        // Made by someone else meanwhile: theirs, not ours to change.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// `options` (with `create`) opening a file that ends up 0600: created with that mode, and set to
/// it explicitly (the umask may have taken bits away; an older file may have had more).
pub fn open(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options.mode(FILE_MODE).open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// `File::create`, 0600.
pub fn create(path: &Path) -> io::Result<File> {
    open(OpenOptions::new().write(true).create(true).truncate(true), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn folders_are_0700_and_files_0600() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert_eq!((mode(&dir.path().join("a")), mode(&dir.path().join("a/b")), mode(&deep)), (0o700, 0o700, 0o700));
        // An existing folder is not changed.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&shared.join("mine")).unwrap();
        assert_eq!((mode(&shared), mode(&shared.join("mine"))), (0o755, 0o700));
        let f = deep.join("f");
        create(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        // A file that was readable by others is narrowed when opened here.
        std::fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        open(OpenOptions::new().append(true).create(true), &f).unwrap();
        assert_eq!(mode(&f), 0o600);
    }
}
