//! The audit trail, like CloudTrail: an append-only log of who did what, each record chained to
//! the one before by SHA-256, so a modified, deleted, inserted or reordered record is found by
//! [`verify`].
//!
//! ```text
//! <data dir>/audit/audit.jsonl   one record per line:
//!   {"seq":1,"time":…,"request_id":…,"principal":…,"key_id":…,"action":…,"resource":…,
//!    "outcome":…,"status":…,"detail":…,"prev":"<hash of record seq-1>","hash":"<this record's>"}
//! ```
//!
//! `hash` is SHA-256 over `prev`, a line break, and the record's JSON without `hash`. The first
//! record's `prev` is 64 zeros. Appends take an exclusive file lock, so the server and CLI
//! commands writing at once keep one chain; each record is synced before the call returns.
//! Removing records from the *end* leaves a valid shorter chain: keep a copy of the last hash
//! elsewhere (`basalt audit verify` prints it) to detect that too.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SecurityError};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Authorized and done (or attempted: `status` tells how it ended).
    Allowed,
    /// A policy denied it.
    Denied,
    /// No key, or a key that did not check out.
    Unauthenticated,
    /// A guardrail blocked the request's input or its output.
    Blocked,
}

/// One event to record; the log adds its sequence number, time and hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub request_id: String,
    pub principal: Option<String>,
    pub key_id: Option<String>,
    pub action: String,
    pub resource: String,
    pub outcome: Option<Outcome>,
    pub status: Option<u16>,
    /// A short note: the deciding statement, the refusal reason, a count. Never document
    /// text; query text only when the server retains queries.
    pub detail: Option<String>,
}

/// A record as stored (field order is the hashed order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time: String,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub action: String,
    pub resource: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub prev: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl Record {
    /// The hash this record should carry.
    fn expected_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let json = serde_json::to_string(&unhashed).unwrap_or_default();
        basalt_core::hex::sha256_parts(&[self.prev.as_bytes(), b"\n", json.as_bytes()])
    }
}

/// The log of one data directory.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    /// Serializes appends within the process (the file lock does it across processes).
    append: Mutex<()>,
}

impl AuditLog {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("audit").join("audit.jsonl")
    }

    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = Self::path(data_dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| SecurityError::io(parent, error))?;
        }
        Ok(AuditLog {
            path,
            append: Mutex::new(()),
        })
    }

    /// Appends one record, durably; returns it.
    pub fn append(&self, event: Event) -> Result<Record> {
        let _guard = self
            .append
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let io = |error: std::io::Error| SecurityError::io(&self.path, error);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        let (seq, prev) = match last_record(&mut file).map_err(io)? {
            Some(last) => (last.seq + 1, last.hash),
            None => (1, GENESIS.to_owned()),
        };
        let mut record = Record {
            seq,
            time: basalt_core::clock::now_rfc3339_millis(),
            request_id: event.request_id,
            principal: event.principal,
            key_id: event.key_id,
            action: event.action,
            resource: event.resource,
            outcome: event.outcome.unwrap_or(Outcome::Allowed),
            status: event.status,
            detail: event.detail,
            prev,
            hash: String::new(),
        };
        record.hash = record.expected_hash();
        let mut line = serde_json::to_string(&record).map_err(|error| {
            SecurityError::io(&self.path, std::io::Error::other(error.to_string()))
        })?;
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        file.unlock().map_err(io)?;
        Ok(record)
    }
}

/// The last complete record of the file (read backwards from the end).
fn last_record(file: &mut File) -> std::io::Result<Option<Record>> {
    let length = file.seek(SeekFrom::End(0))?;
    if length == 0 {
        return Ok(None);
    }
    let mut window = 4096_u64;
    loop {
        let start = length.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity((length - start) as usize);
        Read::by_ref(file)
            .take(length - start)
            .read_to_end(&mut tail)?;
        let text = String::from_utf8_lossy(&tail);
        let trimmed = text.trim_end_matches('\n');
        if let Some(newline) = trimmed.rfind('\n') {
            return Ok(serde_json::from_str(&trimmed[newline + 1..]).ok());
        }
        if start == 0 {
            return Ok(serde_json::from_str(trimmed).ok());
        }
        window *= 4;
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub records: u64,
    /// The hash of the last record: keep it elsewhere to detect a truncated log later.
    pub last_hash: String,
    /// The first record that breaks the chain, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<BadRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    /// 1-based line number in the file.
    pub line: u64,
    pub problem: String,
}

/// Walks the whole log and checks every link of the chain.
pub fn verify(data_dir: &Path) -> Result<Verification> {
    let path = AuditLog::path(data_dir);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Verification {
                records: 0,
                last_hash: GENESIS.to_owned(),
                first_bad: None,
            });
        }
        Err(error) => return Err(SecurityError::io(&path, error)),
    };
    let mut previous_hash = GENESIS.to_owned();
    let mut count = 0;
    for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line_number = index as u64 + 1;
        let line = line.map_err(|error| SecurityError::io(&path, error))?;
        let bad = |problem: String| {
            Ok(Verification {
                records: count,
                last_hash: previous_hash.clone(),
                first_bad: Some(BadRecord {
                    line: line_number,
                    problem,
                }),
            })
        };
        let record: Record = match serde_json::from_slice(&line) {
            Ok(record) => record,
            Err(error) => return bad(format!("not a valid record ({error}): modified")),
        };
        let expected_seq = count + 1;
        if record.seq != expected_seq {
            return bad(format!(
                "sequence number {} where {expected_seq} was expected: a record was deleted, inserted or moved",
                record.seq
            ));
        }
        if record.prev != previous_hash {
            return bad(
                "its link to the previous record does not match: a record before it was changed, deleted or moved"
                    .into(),
            );
        }
        if record.hash != record.expected_hash() {
            return bad("its content does not match its hash: modified".into());
        }
        previous_hash = record.hash;
        count += 1;
    }
    Ok(Verification {
        records: count,
        last_hash: previous_hash,
        first_bad: None,
    })
}

/// Which records a search wants; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub principal: Option<String>,
    /// An action or a pattern like `kb:*` (case-insensitive).
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    /// Records at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only records whose resource starts with one of these (like `basalt:acme:`); empty:
    /// every record. The server keeps each tenant to its own.
    pub resource_prefixes: Vec<String>,
}

impl Query {
    pub fn matches(&self, record: &Record) -> bool {
        self.principal
            .as_deref()
            .is_none_or(|wanted| record.principal.as_deref() == Some(wanted))
            && self.action.as_deref().is_none_or(|pattern| {
                crate::policy::wildcard_match(
                    &pattern.to_ascii_lowercase(),
                    &record.action.to_ascii_lowercase(),
                )
            })
            && self.outcome.is_none_or(|wanted| record.outcome == wanted)
            && self
                .since
                .as_deref()
                .is_none_or(|since| record.time.as_str() >= since)
            && (self.resource_prefixes.is_empty()
                || self
                    .resource_prefixes
                    .iter()
                    .any(|prefix| record.resource.starts_with(prefix.as_str())))
    }
}

/// The newest `limit` records matching `query`, oldest first.
pub fn search(data_dir: &Path, query: &Query, limit: usize) -> Result<Vec<Record>> {
    let matching: Vec<Record> = read(data_dir)?
        .into_iter()
        .filter(|record| query.matches(record))
        .collect();
    let skip = matching.len().saturating_sub(limit);
    Ok(matching.into_iter().skip(skip).collect())
}

/// Reads records (all of them; the caller filters and limits).
pub fn read(data_dir: &Path) -> Result<Vec<Record>> {
    let path = AuditLog::path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(SecurityError::io(&path, error)),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(index: usize) -> Event {
        Event {
            request_id: format!("req-{index}"),
            principal: Some("alice".into()),
            key_id: Some("abc123".into()),
            action: "kb:Search".into(),
            resource: "basalt:acme:kb/handbook".into(),
            outcome: Some(if index.is_multiple_of(3) {
                Outcome::Denied
            } else {
                Outcome::Allowed
            }),
            status: Some(200),
            detail: None,
        }
    }

    fn written(records: usize) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = AuditLog::open(dir.path()).expect("opens");
        for index in 0..records {
            log.append(event(index)).expect("appends");
        }
        let text = std::fs::read_to_string(AuditLog::path(dir.path())).expect("reads");
        (dir, text.lines().map(str::to_owned).collect())
    }

    fn rewrite(dir: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(AuditLog::path(dir), text).expect("writes");
    }

    fn first_bad(dir: &Path) -> Option<u64> {
        verify(dir).expect("verifies").first_bad.map(|bad| bad.line)
    }

    #[test]
    fn an_intact_log_verifies() {
        let (dir, lines) = written(6);
        assert_eq!(lines.len(), 6);
        let verification = verify(dir.path()).expect("verifies");
        assert_eq!(verification.records, 6);
        assert_eq!(verification.first_bad, None);
        // Appending after a reopen continues the chain.
        AuditLog::open(dir.path())
            .expect("opens")
            .append(event(7))
            .expect("appends");
        assert_eq!(verify(dir.path()).expect("verifies").records, 7);
        assert_eq!(read(dir.path()).expect("reads").len(), 7);
    }

    #[test]
    fn searches_keep_the_newest_matching_records() {
        let (dir, _) = written(9);
        let denied = Query {
            outcome: Some(Outcome::Denied),
            action: Some("KB:*".into()),
            principal: Some("alice".into()),
            ..Query::default()
        };
        let found = search(dir.path(), &denied, 2).expect("searches");
        let ids: Vec<&str> = found
            .iter()
            .map(|record| record.request_id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["req-3", "req-6"],
            "events 0, 3, 6 are denied; the newest two"
        );
        let nobody = Query {
            principal: Some("bob".into()),
            ..Query::default()
        };
        assert!(
            search(dir.path(), &nobody, 10)
                .expect("searches")
                .is_empty()
        );
        let future = Query {
            since: Some("9999-01-01T00:00:00Z".into()),
            ..Query::default()
        };
        assert!(
            search(dir.path(), &future, 10)
                .expect("searches")
                .is_empty()
        );
    }

    #[test]
    fn a_flipped_byte_is_found_where_it_is() {
        let (dir, lines) = written(6);
        for target in 0..lines.len() {
            let mut changed = lines.clone();
            // Flip one byte inside the action name ("kb:Search" → "kb:Searcx").
            changed[target] = changed[target].replacen("kb:Search", "kb:Searcx", 1);
            rewrite(dir.path(), &changed);
            assert_eq!(
                first_bad(dir.path()),
                Some(target as u64 + 1),
                "line {target}"
            );
        }
        let mut changed = lines.clone();
        assert!(changed[2].contains("\"outcome\":\"allowed\""));
        changed[2] = changed[2].replacen("\"outcome\":\"allowed\"", "\"outcome\":\"denied\"", 1);
        rewrite(dir.path(), &changed);
        assert_eq!(first_bad(dir.path()), Some(3), "an outcome flipped");
    }

    #[test]
    fn deleted_inserted_and_swapped_records_are_found() {
        let (dir, lines) = written(6);
        let mut deleted = lines.clone();
        deleted.remove(2);
        rewrite(dir.path(), &deleted);
        assert_eq!(first_bad(dir.path()), Some(3));

        let mut swapped = lines.clone();
        swapped.swap(1, 4);
        rewrite(dir.path(), &swapped);
        assert_eq!(first_bad(dir.path()), Some(2));

        let mut inserted = lines.clone();
        inserted.insert(3, lines[3].clone());
        rewrite(dir.path(), &inserted);
        assert_eq!(first_bad(dir.path()), Some(5));

        let mut garbage = lines;
        garbage.insert(1, "not json".into());
        rewrite(dir.path(), &garbage);
        assert_eq!(first_bad(dir.path()), Some(2));
    }
}
