//! The filesystem seam of the [`DiskSpool`](super::DiskSpool): the few file
//! operations it needs, behind [`SpoolFs`], with the real [`StdFs`] and the
//! in-memory, fault-injecting [`MemFs`] that the model-based and corruption
//! tests use (crash = lose what was not synced, optionally tearing the last
//! write; a capacity makes writes fail with `StorageFull` like a full disk).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open file of the spool.
pub trait SpoolFile: Send + Sync {
    /// Appends `buf` at the end of the file (files are opened for append).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes what was appended durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// The file operations of the spool.
pub trait SpoolFs: Send + Sync + 'static {
    /// Creates the directory (and its parents).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens a file for appending and reading, creating it if missing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn SpoolFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` (atomic on POSIX filesystems).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, renamed, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

struct StdFile(File);

impl SpoolFile for StdFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }
}

impl SpoolFs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Some(n) = e?.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        Ok(names)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(path)?.read_to_end(&mut buf)?;
        Ok(buf)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn SpoolFile>> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        Ok(Box::new(StdFile(f)))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[derive(Debug, Default, Clone)]
struct MemFileData {
    /// What a crash keeps.
    synced: Vec<u8>,
    /// What readers see now.
    current: Vec<u8>,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<PathBuf, MemFileData>,
    /// Free bytes (None: unbounded).
    capacity: Option<u64>,
    /// Fail the next write or sync with this kind (one-shot).
    fail_next: Option<io::ErrorKind>,
}

impl MemState {
    fn used(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }
}

/// An in-memory filesystem for tests: crashes lose what was not synced,
/// a capacity makes writes fail with `StorageFull` after writing what fits
/// (as a real full disk does), and faults can be injected.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    state: Arc<Mutex<MemState>>,
}

impl MemFs {
    /// An empty, unbounded filesystem.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Limits the total size of all files (`None`: unbounded).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Makes the next append or sync fail with `kind`.
    pub fn fail_next(&self, kind: io::ErrorKind) {
        self.lock().fail_next = Some(kind);
    }

    /// Simulates a power cut: every file goes back to what was synced, plus
    /// the first `torn_tail(path, unsynced_len)` bytes of what was not.
    pub fn crash(&self, torn_tail: impl Fn(&Path, usize) -> usize) {
        let mut s = self.lock();
        for (path, f) in s.files.iter_mut() {
            let synced = f.synced.len().min(f.current.len());
            let unsynced = f.current.len() - synced;
            let keep = torn_tail(path, unsynced).min(unsynced);
            f.current.truncate(synced + keep);
            f.synced = f.current.clone();
        }
    }

    /// The content of a file, as readers see it.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.lock().files.get(path).map(|f| f.current.clone())
    }

    /// Replaces the content of a file (synced), to corrupt it in tests.
    pub fn set_contents(&self, path: &Path, data: Vec<u8>) {
        let mut s = self.lock();
        let f = s.files.entry(path.to_path_buf()).or_default();
        f.synced = data.clone();
        f.current = data;
    }

    /// Total bytes in all files.
    pub fn used(&self) -> u64 {
        self.lock().used()
    }
}

struct MemFile {
    fs: MemFs,
    path: PathBuf,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
}

impl SpoolFile for MemFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        if let Some(kind) = s.fail_next.take() {
            return Err(io::Error::new(kind, "injected fault"));
        }
        let room = s.capacity.map_or(u64::MAX, |c| c.saturating_sub(s.used()));
        let f = s
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        if (buf.len() as u64) > room {
            let part = usize::try_from(room).unwrap_or(usize::MAX);
            f.current.extend_from_slice(&buf[..part]);
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        f.current.extend_from_slice(buf);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.fs.lock();
        if let Some(kind) = s.fail_next.take() {
            return Err(io::Error::new(kind, "injected fault"));
        }
        let f = s
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        f.synced = f.current.clone();
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.fs.lock();
        let f = s
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        f.current.truncate(len);
        f.synced.truncate(len);
        Ok(())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.fs.lock();
        let f = s
            .files
            .get(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(buf.len());
        if end > f.current.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        buf.copy_from_slice(&f.current[start..end]);
        Ok(())
    }
}

impl SpoolFs for MemFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        Ok(s.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.contents(path).ok_or_else(|| not_found(path))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn SpoolFile>> {
        self.lock().files.entry(path.to_path_buf()).or_default();
        Ok(Box::new(MemFile {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let f = s.files.remove(from).ok_or_else(|| not_found(from))?;
        s.files.insert(to.to_path_buf(), f);
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// CRC-32 (IEEE 802.3, the one of zlib and PNG): the shared implementation.
pub use apr_wire::checksum::crc32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_crash_keeps_only_what_was_synced_plus_a_torn_prefix() {
        let fs = MemFs::new();
        let p = Path::new("/s/f");
        let mut f = fs.open(p).unwrap();
        f.append(b"abc").unwrap();
        f.sync().unwrap();
        f.append(b"defg").unwrap();
        fs.crash(|_, n| n / 2);
        assert_eq!(fs.contents(p).unwrap(), b"abcde");
    }

    #[test]
    fn a_full_memfs_writes_what_fits_and_fails_with_storage_full() {
        let fs = MemFs::new();
        fs.set_capacity(Some(4));
        let mut f = fs.open(Path::new("/s/f")).unwrap();
        let e = f.append(b"abcdef").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(fs.used(), 4);
    }
}
