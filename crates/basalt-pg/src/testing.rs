//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, the server on
//! a Unix socket in it (no TCP port), stopped and removed when dropped. The binaries are found
//! with `pg_config --bindir`, else under `/usr/lib/postgresql/*/bin` (Debian's packages);
//! `BASALT_PG_BIN` names another directory. Run as root (CI), the cluster belongs to the
//! `postgres` user, as PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster; [`TempCluster::url`] connects to its `postgres` database.
#[derive(Debug)]
pub struct TempCluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    url: String,
}

impl TempCluster {
    /// Starts a cluster; an error says what is missing (the binaries, the `postgres` user).
    pub fn start() -> Result<Self, String> {
        let bin = binaries().ok_or(
            "PostgreSQL is not installed (no pg_config, nothing under /usr/lib/postgresql): \
             scripts/test.sh installs postgresql-15 and builds pgvector",
        )?;
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let as_postgres = running_as_root();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|error| error.to_string())?;
        if as_postgres {
            // The server's user must reach the directory and own the cluster.
            run(Command::new("chmod").arg("755").arg(dir.path()))?;
            run(Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path()))?;
        }
        let cluster = TempCluster {
            url: format!(
                "host={} user=postgres dbname=postgres",
                dir.path().display()
            ),
            _dir: dir,
            data,
            bin,
            as_postgres,
        };
        cluster.pg(
            "initdb",
            &[
                "-D",
                &cluster.data_arg(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )?;
        let socket = cluster.socket_dir();
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{socket}' -c fsync=off \
             -c shared_buffers=64MB"
        );
        cluster.pg(
            "pg_ctl",
            &[
                "-D",
                &cluster.data_arg(),
                "-o",
                &options,
                "-w",
                "-l",
                &format!("{socket}/log"),
                "start",
            ],
        )?;
        Ok(cluster)
    }

    /// The connection string (`host=… user=postgres dbname=postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's data directory: every file the server writes (tables, WAL) is under it.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A cluster whose database `basalt db migrate` has migrated.
    pub fn start_migrated() -> Result<Self, String> {
        let cluster = Self::start()?;
        crate::migrations::migrate(&mut crate::migrations::connect(&cluster.url)?)?;
        Ok(cluster)
    }

    /// Runs `sql` as the superuser (a test's `CHECKPOINT`, say).
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls)
            .map_err(|error| error.to_string())?;
        client.batch_execute(sql).map_err(|error| error.to_string())
    }

    fn data_arg(&self) -> String {
        self.data.display().to_string()
    }

    fn socket_dir(&self) -> String {
        self.data
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .display()
            .to_string()
    }

    /// Runs one of the PostgreSQL programs, as the `postgres` user when this is root.
    fn pg(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        run(command.args(args))
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self.pg(
            "pg_ctl",
            &["-D", &self.data_arg(), "-m", "immediate", "stop"],
        );
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Where `initdb` and `pg_ctl` are.
fn binaries() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("BASALT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").is_file() {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// Files under `dir` (a cluster's data directory) holding any of `words`, with the word: a
/// test's grep of everything the server wrote.
pub fn plaintext_hits(dir: &Path, words: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(
                std::fs::read_dir(&path)
                    .expect("lists")
                    .map(|entry| entry.expect("entry").path()),
            );
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue; // a file the server removed meanwhile
        };
        for word in words {
            if bytes
                .windows(word.len())
                .any(|window| window == word.as_bytes())
            {
                hits.push(format!("{} holds {word:?}", path.display()));
            }
        }
    }
    hits
}
