//! The snapshot file: written whole or not at all (a temporary file in the same directory, synced, renamed
//! over the old name, the directory synced), and read at most once (removed as soon as it is open).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Doubt, Expect, Header, Loaded, Written};
use crate::cache::Cache;

/// Buffer for writing and reading: large sequential I/O, few system calls.
const BUFFER: usize = 1 << 20;

/// Writes `cache` to `path` (see the module docs), giving up once `deadline` passes; on any error the
/// temporary file is removed and `path` is left as it was.
pub fn save(cache: &Cache, path: &Path, header: &Header, deadline: Instant) -> io::Result<Written> {
    let temporary = temporary_path(path);
    let result = save_to(cache, path, &temporary, header, deadline);
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

fn save_to(
    cache: &Cache,
    path: &Path,
    temporary: &Path,
    header: &Header,
    deadline: Instant,
) -> io::Result<Written> {
    // The proxy's own copy of what it served: readable by its user only.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)?;
    let written = super::write(
        cache,
        BufWriter::with_capacity(BUFFER, &file),
        header,
        deadline,
    )?;
    // On disk before it takes the name: a crash after the rename must not leave a name on missing data.
    file.sync_all()?;
    fs::rename(temporary, path)?;
    // The rename itself, on disk: the directory's entry.
    File::open(directory_of(path))?.sync_all()?;
    Ok(written)
}

/// Reads the snapshot at `path` whole (see [`super::read`]) for `cache` (its clock, its capacity), and removes the file as soon as it is open,
/// whatever it holds: a snapshot is read once. Kept, a process that crashed (and so wrote none) would
/// read at its next start the same old file again, with every purge made since it was read lost. `None`
/// when there is no file.
pub fn load(path: &Path, expect: Expect, cache: &Cache) -> Result<Option<Loaded>, Doubt> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Doubt::Io(err)),
    };
    fs::remove_file(path).map_err(Doubt::Io)?;
    let length = file.metadata().map_err(Doubt::Io)?.len();
    let reader = BufReader::with_capacity(BUFFER, file);
    let clock = cache.clock();
    super::read(
        reader,
        length,
        expect,
        clock.now(),
        clock.system_now(),
        cache.capacity(),
    )
    .map(Some)
}

/// `.name.tmp` beside `path`: the same directory (so the rename is atomic), hidden.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(
        || "snapshot".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    path.with_file_name(format!(".{name}.tmp"))
}

/// The directory `path` is in (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}
