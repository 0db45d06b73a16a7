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
//!
//! Callers use the trail through [`AuditTrail`]; [`AuditLog`] is its embedded implementation,
//! and [`conformance`] is what any other (a shared database's) must pass too.

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
    /// The record of `event`, now, chained after the last record (its sequence number and
    /// hash; `None` for the first).
    pub fn after(last: Option<(u64, String)>, event: Event) -> Record {
        let (seq, prev) = match last {
            Some((seq, hash)) => (seq + 1, hash),
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
        record
    }

    /// The hash this record should carry.
    fn expected_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let json = serde_json::to_string(&unhashed).unwrap_or_default();
        basalt_core::hex::sha256_parts(&[self.prev.as_bytes(), b"\n", json.as_bytes()])
    }
}

/// Where audit records go: one linear hash chain, whoever appends (threads, processes, or
/// replicas over a shared store).
pub trait AuditTrail: Send + Sync + std::fmt::Debug {
    /// Appends one record chained to the last, durably: once this returns, it survives a
    /// crash.
    fn append(&self, event: Event) -> Result<Record>;

    /// Every record as stored, oldest first (lines that are not records are left out; `verify`
    /// reports them).
    fn records(&self) -> Result<Vec<Record>>;

    /// Walks the whole trail and checks every link of the chain.
    fn verify(&self) -> Result<Verification>;

    /// The newest `limit` records matching `query`, oldest first.
    fn search(&self, query: &Query, limit: usize) -> Result<Vec<Record>> {
        let matching: Vec<Record> = self
            .records()?
            .into_iter()
            .filter(|record| query.matches(record))
            .collect();
        let skip = matching.len().saturating_sub(limit);
        Ok(matching.into_iter().skip(skip).collect())
    }
}

/// The log of one data directory: `<data dir>/audit/audit.jsonl`.
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

    /// The log of `data_dir` (created with its first record).
    pub fn open(data_dir: &Path) -> Self {
        AuditLog {
            path: Self::path(data_dir),
            append: Mutex::new(()),
        }
    }
}

impl AuditTrail for AuditLog {
    fn append(&self, event: Event) -> Result<Record> {
        let _guard = self
            .append
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let io = |error: std::io::Error| SecurityError::io(&self.path, error);
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| SecurityError::io(parent, error))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        let last = last_record(&mut file).map_err(io)?;
        let record = Record::after(last.map(|last| (last.seq, last.hash)), event);
        let mut line = serde_json::to_string(&record).map_err(|error| {
            SecurityError::io(&self.path, std::io::Error::other(error.to_string()))
        })?;
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        file.unlock().map_err(io)?;
        Ok(record)
    }

    fn records(&self) -> Result<Vec<Record>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(SecurityError::io(&self.path, error)),
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    fn verify(&self) -> Result<Verification> {
        verify_file(&self.path)
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

/// Walks the whole file and checks every link of the chain.
fn verify_file(path: &Path) -> Result<Verification> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Verification {
                records: 0,
                last_hash: GENESIS.to_owned(),
                first_bad: None,
            });
        }
        Err(error) => return Err(SecurityError::io(path, error)),
    };
    verify_lines(
        BufReader::new(file)
            .split(b'\n')
            .map(|line| line.map_err(|error| SecurityError::io(path, error))),
    )
}

/// Checks every link of a chain given as its stored records, oldest first (a file's lines, a
/// table's rows); a [`BadRecord`]'s `line` counts them from 1.
pub fn verify_lines(lines: impl Iterator<Item = Result<Vec<u8>>>) -> Result<Verification> {
    let mut previous_hash = GENESIS.to_owned();
    let mut count = 0;
    for (index, line) in lines.enumerate() {
        let line_number = index as u64 + 1;
        let line = line?;
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

/// The behaviour every [`AuditTrail`] must have; `open` gives a new handle on one empty trail
/// each time it is called (another process, another replica).
///
/// # Panics
/// When the trail falls short, with what it did.
pub fn conformance(open: &dyn Fn() -> Box<dyn AuditTrail>) {
    let trail = open();
    let empty = trail.verify().expect("verifies an empty trail");
    assert_eq!((empty.records, empty.last_hash.as_str()), (0, GENESIS));
    assert!(trail.records().expect("reads").is_empty());

    let event = |index: usize| Event {
        request_id: format!("req-{index}"),
        principal: Some(
            if index.is_multiple_of(2) {
                "alice"
            } else {
                "bob"
            }
            .into(),
        ),
        key_id: index.is_multiple_of(3).then(|| format!("key{index}")),
        action: if index.is_multiple_of(3) {
            "kb:Search"
        } else {
            "guardrail:Apply"
        }
        .into(),
        resource: format!("basalt:{}:kb/k", if index < 6 { "default" } else { "acme" }),
        outcome: (index % 4 == 1).then_some(Outcome::Denied),
        status: Some(200 + index as u16),
        detail: (index == 2).then(|| "a note".into()),
    };
    // Two handles and four threads appending at once keep one linear chain.
    let other = open();
    let handles = [&trail, &other];
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let handle = handles[thread % 2];
            scope.spawn(move || {
                for index in (thread..12).step_by(4) {
                    let record = handle.append(event(index)).expect("appends");
                    assert_eq!(record.request_id, format!("req-{index}"));
                }
            });
        }
    });
    let records = open()
        .records()
        .expect("a new handle reads what others appended");
    assert_eq!(records.len(), 12, "{records:?}");
    let mut previous = GENESIS.to_owned();
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.seq, index as u64 + 1, "one sequence: {records:?}");
        assert_eq!(record.prev, previous, "each record links to the one before");
        assert_eq!(
            record.hash,
            record.expected_hash(),
            "hashes as the file format says"
        );
        assert!(!record.time.is_empty());
        previous.clone_from(&record.hash);
        // Every field comes back as it was given.
        let number: usize = record.request_id[4..].parse().expect("request id");
        let given = event(number);
        assert_eq!(
            (
                &record.principal,
                &record.key_id,
                &record.action,
                &record.resource
            ),
            (
                &given.principal,
                &given.key_id,
                &given.action,
                &given.resource
            )
        );
        assert_eq!(record.outcome, given.outcome.unwrap_or(Outcome::Allowed));
        assert_eq!(
            (record.status, &record.detail),
            (given.status, &given.detail)
        );
    }
    let verification = trail.verify().expect("verifies");
    assert_eq!(verification.records, 12);
    assert_eq!(verification.last_hash, previous);
    assert_eq!(verification.first_bad, None);

    // Searches: every condition holds, the newest `limit`, oldest first.
    let ids = |query: &Query, limit: usize| -> Vec<String> {
        trail
            .search(query, limit)
            .expect("searches")
            .into_iter()
            .map(|record| record.request_id)
            .collect()
    };
    let in_order = |wanted: &[usize]| -> Vec<String> {
        let mut wanted: Vec<&Record> = records
            .iter()
            .filter(|record| wanted.contains(&record.request_id[4..].parse().unwrap_or(99)))
            .collect();
        wanted.sort_by_key(|record| record.seq);
        wanted
            .iter()
            .map(|record| record.request_id.clone())
            .collect()
    };
    let searches = Query {
        action: Some("KB:*".into()),
        ..Query::default()
    };
    assert_eq!(
        ids(&searches, 100),
        in_order(&[0, 3, 6, 9]),
        "actions match case-insensitively"
    );
    assert_eq!(
        ids(&searches, 2),
        in_order(&[0, 3, 6, 9])[2..],
        "the newest two"
    );
    let denied_bob = Query {
        principal: Some("bob".into()),
        outcome: Some(Outcome::Denied),
        ..Query::default()
    };
    assert_eq!(ids(&denied_bob, 100), in_order(&[1, 5, 9]));
    let acme = Query {
        resource_prefixes: vec!["basalt:acme:".into()],
        ..Query::default()
    };
    assert_eq!(ids(&acme, 100), in_order(&[6, 7, 8, 9, 10, 11]));
    let future = Query {
        since: Some("9999-01-01T00:00:00Z".into()),
        ..Query::default()
    };
    assert!(ids(&future, 100).is_empty());
    let past = Query {
        since: Some("2000-01-01T00:00:00Z".into()),
        ..Query::default()
    };
    assert_eq!(ids(&past, 100).len(), 12);
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
        let log = AuditLog::open(dir.path());
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
        AuditLog::open(dir)
            .verify()
            .expect("verifies")
            .first_bad
            .map(|bad| bad.line)
    }

    #[test]
    fn the_file_log_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("temp dir");
        conformance(&|| Box::new(AuditLog::open(dir.path())));
    }

    #[test]
    fn an_intact_log_verifies() {
        let (dir, lines) = written(6);
        assert_eq!(lines.len(), 6);
        let verification = AuditLog::open(dir.path()).verify().expect("verifies");
        assert_eq!(verification.records, 6);
        assert_eq!(verification.first_bad, None);
        // Appending after a reopen continues the chain.
        AuditLog::open(dir.path())
            .append(event(7))
            .expect("appends");
        assert_eq!(
            AuditLog::open(dir.path())
                .verify()
                .expect("verifies")
                .records,
            7
        );
        assert_eq!(
            AuditLog::open(dir.path()).records().expect("reads").len(),
            7
        );
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
        let found = AuditLog::open(dir.path())
            .search(&denied, 2)
            .expect("searches");
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
            AuditLog::open(dir.path())
                .search(&nobody, 10)
                .expect("searches")
                .is_empty()
        );
        let future = Query {
            since: Some("9999-01-01T00:00:00Z".into()),
            ..Query::default()
        };
        assert!(
            AuditLog::open(dir.path())
                .search(&future, 10)
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
