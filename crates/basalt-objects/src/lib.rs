//! S3-compatible object storage: a bucket and a prefix (`s3://bucket/prefix`) reached the usual
//! AWS way — `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`
//! (or `AWS_DEFAULT_REGION`) and `AWS_ENDPOINT_URL` for a store other than Amazon S3 (SeaweedFS,
//! Ceph, MinIO). Written through Apache Arrow's `object_store`.
//!
//! The calls are blocking, like the rest of the storage layer: [`Objects`] owns a small runtime
//! of its own and, called from inside another tokio runtime (a request handler), does its work
//! on a scoped thread so it never blocks an async worker. This crate moves bytes; a caller that
//! must not let the store read them (an encrypted knowledge base) seals them first.

pub mod testing;

use std::future::Future;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

/// What went wrong, in words that say what to do.
#[derive(Debug)]
pub enum ObjectsError {
    /// The `s3://` address or the AWS settings are not usable.
    Config(String),
    /// The store refused the credentials or the request.
    Denied(String),
    /// The store could not be reached or failed.
    Unavailable(String),
}

impl std::fmt::Display for ObjectsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectsError::Config(message)
            | ObjectsError::Denied(message)
            | ObjectsError::Unavailable(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ObjectsError {}

pub type Result<T> = std::result::Result<T, ObjectsError>;

/// `s3://bucket/prefix` split: the bucket, and the prefix without slashes at its ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket` or `s3://bucket/some/prefix/`.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            ObjectsError::Config(format!(
                "{url:?} is not an s3:// address: give s3://BUCKET or s3://BUCKET/PREFIX"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(ObjectsError::Config(format!(
                "{bucket:?} in {url:?} is not a bucket name (3 to 63 lowercase letters, digits, \
                 dots and hyphens)"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
            return Err(ObjectsError::Config(format!(
                "the prefix {prefix:?} in {url:?} has an empty, `.` or `..` part"
            )));
        }
        Ok(S3Url {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The address again, `s3://bucket/prefix` (no trailing slash).
    pub fn to_url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// One object found by [`Objects::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key below the store's prefix (`handbook/leave.md` under `s3://bucket/docs`).
    pub key: String,
    pub size: u64,
    /// The store's entity tag (quotes removed): it changes when the content does.
    pub etag: Option<String>,
}

/// A bucket and a prefix in an S3-compatible store; every key is below the prefix.
#[derive(Debug)]
pub struct Objects {
    url: S3Url,
    store: AmazonS3,
    /// Taken (and shut down without waiting) on drop, which may happen on an async thread.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Objects {
    /// The store at `url` (`s3://bucket/prefix`), with endpoint, region and credentials from
    /// the AWS environment variables. Nothing is sent until the first call.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &[])
    }

    /// [`Objects::open`] with settings that override the environment's, as `(name, value)`
    /// pairs named like the variables in lowercase (`aws_endpoint_url`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_region`).
    pub fn open_with(url: &str, settings: &[(&str, &str)]) -> Result<Self> {
        let parsed = S3Url::parse(url)?;
        // reqwest's HTTPS needs a process-wide rustls provider; ring's is the one the server's
        // HTTPS uses. An error means one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&parsed.bucket);
        for (name, value) in settings {
            let key = name
                .parse()
                .map_err(|_| ObjectsError::Config(format!("{name:?} is not an S3 setting")))?;
            builder = builder.with_config(key, *value);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            && !settings.iter().any(|(name, _)| name.contains("region"))
        {
            builder = builder.with_region("us-east-1");
        }
        let endpoint = settings
            .iter()
            .find(|(name, _)| *name == "aws_endpoint_url" || *name == "aws_endpoint")
            .map(|(_, value)| (*value).to_owned())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        if let Some(endpoint) = endpoint.filter(|endpoint| !endpoint.is_empty()) {
            // As boto3 does: a plain-HTTP endpoint (a store on the same host) is allowed when
            // it is named, and its buckets are paths, not host names.
            builder = builder
                .with_endpoint(&endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|error| {
                ObjectsError::Config(format!(
                    "cannot use {url}: {error} (set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
                     AWS_REGION and, for a store other than Amazon S3, AWS_ENDPOINT_URL)"
                ))
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("basalt-objects")
            .enable_all()
            .build()
            .map_err(|error| {
                ObjectsError::Config(format!("cannot start the object store's runtime: {error}"))
            })?;
        Ok(Objects {
            url: parsed,
            store,
            runtime: Some(runtime),
        })
    }

    /// The bucket and prefix.
    pub fn url(&self) -> &S3Url {
        &self.url
    }

    /// The `s3://` address of `key`.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{}", self.url.bucket, self.path(key))
    }

    /// Stores `bytes` at `key`, replacing what was there (one request; S3 makes it atomic).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.object_path(key)?;
        self.block_on(async {
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map(|_| ())
        })
        .map_err(|error| self.error("store", key, &error))
    }

    /// The bytes at `key`; `None` when there is no such object.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.object_path(key)?;
        let result = self.block_on(async {
            match self.store.get(&path).await {
                Ok(result) => result.bytes().await.map(|bytes| Some(bytes.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        });
        result.map_err(|error| self.error("read", key, &error))
    }

    /// Removes `key`; removing what is not there is no error.
    pub fn delete(&self, key: &str) -> Result<()> {
        let path = self.object_path(key)?;
        let result = self.block_on(async {
            match self.store.delete(&path).await {
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                other => other,
            }
        });
        result.map_err(|error| self.error("delete", key, &error))
    }

    /// Removes every object whose key starts with `under/` (bulk deletes, not one request
    /// each); returns how many there were.
    pub fn delete_under(&self, under: &str) -> Result<usize> {
        let under = under.trim_matches('/');
        if under.is_empty() {
            return Err(ObjectsError::Config(
                "refusing to delete every object below the prefix at once".into(),
            ));
        }
        let prefix = Path::from(self.path(under).as_str());
        let result = self.block_on(async {
            let listed = self.store.list(Some(&prefix)).map_ok(|meta| meta.location);
            self.store
                .delete_stream(Box::pin(listed))
                .try_fold(0, |count, _| async move { Ok(count + 1) })
                .await
        });
        result.map_err(|error| self.error("delete", under, &error))
    }

    /// Every object whose key starts with `under/` (all of them for ""), in key order.
    pub fn list(&self, under: &str) -> Result<Vec<ObjectInfo>> {
        let under = under.trim_matches('/');
        let prefix = self.path(under);
        let location = (!prefix.is_empty()).then(|| Path::from(prefix.as_str()));
        let strip = if self.url.prefix.is_empty() {
            0
        } else {
            self.url.prefix.len() + 1
        };
        let found = self.block_on(async {
            self.store
                .list(location.as_ref())
                .try_collect::<Vec<_>>()
                .await
        });
        let found = found.map_err(|error| self.error("list", under, &error))?;
        let mut objects: Vec<ObjectInfo> = found
            .into_iter()
            .filter_map(|meta| {
                let key = meta.location.as_ref().get(strip..)?.to_owned();
                Some(ObjectInfo {
                    key,
                    size: meta.size,
                    etag: meta.e_tag.map(|etag| etag.trim_matches('"').to_owned()),
                })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// One listing request: an error says whether the store is reachable and the credentials
    /// work, before anything depends on them.
    pub fn check(&self) -> Result<()> {
        let prefix = (!self.url.prefix.is_empty()).then(|| Path::from(self.url.prefix.as_str()));
        self.block_on(async { self.store.list_with_delimiter(prefix.as_ref()).await })
            .map(|_| ())
            .map_err(|error| self.error("list", "", &error))
    }

    /// The full key of `key`: the prefix, a slash, the key.
    fn path(&self, key: &str) -> String {
        match (self.url.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_owned(),
            (false, true) => self.url.prefix.clone(),
            (false, false) => format!("{}/{}", self.url.prefix, key),
        }
    }

    fn object_path(&self, key: &str) -> Result<Path> {
        if key.is_empty()
            || key.starts_with('/')
            || key.ends_with('/')
            || key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(ObjectsError::Config(format!(
                "{key:?} is not an object key"
            )));
        }
        Path::parse(self.path(key))
            .map_err(|error| ObjectsError::Config(format!("{key:?} is not an object key: {error}")))
    }

    /// Runs `work` on this store's runtime; from inside another runtime, on a scoped thread.
    fn block_on<F: Future + Send>(&self, work: F) -> F::Output
    where
        F::Output: Send,
    {
        let Some(runtime) = self.runtime.as_ref() else {
            unreachable!("the runtime is taken only on drop")
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(work);
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(work))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn error(&self, action: &str, key: &str, error: &object_store::Error) -> ObjectsError {
        let target = self.url_of(key);
        let text = error.to_string();
        // The store's own reason, when it sent one (S3's XML error body), is shorter and says
        // more than the client's account of the request.
        let field = |name: &str| {
            let open = format!("<{name}>");
            let start = text.find(&open)? + open.len();
            let end = text[start..].find("</")? + start;
            Some(&text[start..end])
        };
        let reason = match (field("Code"), field("Message")) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => text.clone(),
        };
        let denied = matches!(
            error,
            object_store::Error::Unauthenticated { .. }
                | object_store::Error::PermissionDenied { .. }
        ) || [
            "403 Forbidden",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
        ]
        .iter()
        .any(|sign| text.contains(sign));
        if denied {
            ObjectsError::Denied(format!(
                "the object store refused to {action} {target} ({reason}): check \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and the bucket's policy"
            ))
        } else {
            ObjectsError::Unavailable(format!(
                "cannot {action} {target} ({reason}): is the store at AWS_ENDPOINT_URL up, and \
                 does the bucket exist?"
            ))
        }
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let url = S3Url::parse("s3://basalt-docs/handbook/").expect("parses");
        assert_eq!(url.bucket, "basalt-docs");
        assert_eq!(url.prefix, "handbook");
        assert_eq!(url.to_url(), "s3://basalt-docs/handbook");
        assert_eq!(S3Url::parse("s3://basalt-docs").expect("parses").prefix, "");
        for bad in [
            "https://x/y",
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://bucket/a//b",
            "s3://bucket/a/../b",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn keys_stay_below_the_prefix() {
        let objects = Objects::open_with(
            "s3://basalt-docs/base",
            &[("aws_endpoint_url", "http://127.0.0.1:9")],
        )
        .expect("opens");
        assert_eq!(objects.url_of("a/b.md"), "s3://basalt-docs/base/a/b.md");
        for bad in ["", "/a", "a/", "a//b", "../a", "a/./b"] {
            assert!(objects.object_path(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            objects.object_path("a/b.md").expect("valid").as_ref(),
            "base/a/b.md"
        );
    }
}
