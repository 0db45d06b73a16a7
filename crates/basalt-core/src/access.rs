//! Who may read a document: the identity a search runs for ([`Reader`]) and the entries of a
//! document's reader list; and the names principals, groups, tenants and policies may have.

/// The identity a search runs for: a principal and its groups. Searches, answers and document
/// listings made for a reader see only the documents it may read ([`Reader::admits`]); the
/// restriction is applied inside the index search, before the top k are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// `principal:NAME` and `group:NAME` for each group, sorted.
    identities: Vec<String>,
}

impl Reader {
    pub fn new<'a>(principal: &str, groups: impl IntoIterator<Item = &'a str>) -> Reader {
        let mut identities: Vec<String> = std::iter::once(format!("principal:{principal}"))
            .chain(groups.into_iter().map(|group| format!("group:{group}")))
            .collect();
        identities.sort();
        identities.dedup();
        Reader { identities }
    }

    /// Whether a reader list lets this reader in (an empty list lets everyone in).
    pub fn admits(&self, readers: &[String]) -> bool {
        readers.is_empty()
            || readers
                .iter()
                .any(|reader| self.identities.binary_search(reader).is_ok())
    }
}

/// Checks one entry of a document's readers: `principal:NAME` or `group:NAME`, the name
/// 1–128 characters without whitespace or commas.
pub fn validate_reader(entry: &str) -> std::result::Result<(), String> {
    let name = entry
        .strip_prefix("principal:")
        .or_else(|| entry.strip_prefix("group:"));
    match name {
        Some(name)
            if !name.is_empty()
                && name.chars().count() <= 128
                && !name.chars().any(|c| c.is_whitespace() || c == ',') =>
        {
            Ok(())
        }
        _ => Err(format!(
            "reader {entry:?} is not `principal:NAME` or `group:NAME`"
        )),
    }
}

/// Checks the name of a principal, group, tenant or policy (`what`): 1–64 letters, digits,
/// `-`, `_`, `.` or `@`, not starting with `.`. `Err` is the message.
pub fn check_identity_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.@".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {name:?}: use 1–64 letters, digits, '-', '_', '.' or '@'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_admit_their_principals_and_groups_only() {
        let alice = Reader::new("alice", ["eng", "hr"]);
        let entries = |list: &[&str]| {
            list.iter()
                .map(|entry| (*entry).to_owned())
                .collect::<Vec<_>>()
        };
        assert!(alice.admits(&[]), "no readers: shared");
        assert!(alice.admits(&entries(&["principal:alice"])));
        assert!(alice.admits(&entries(&["principal:bob", "group:hr"])));
        assert!(!alice.admits(&entries(&["principal:bob", "group:sales"])));
        // A group named like the principal is not the principal, and the reverse.
        assert!(!alice.admits(&entries(&["group:alice"])));
        assert!(!Reader::new("eng", []).admits(&entries(&["group:eng"])));
    }

    #[test]
    fn reader_entries_are_checked() {
        for good in ["principal:alice", "group:eng", "principal:a@b.example"] {
            assert!(validate_reader(good).is_ok(), "{good}");
        }
        for bad in [
            "alice",
            "group:",
            "user:alice",
            "group:a b",
            "principal:a,b",
            "",
        ] {
            assert!(validate_reader(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identity_names_are_checked() {
        for good in ["alice", "a.b@example.com", "team-docs_v2"] {
            assert!(check_identity_name("principal", good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a b", "a/b", &"x".repeat(65)] {
            let error = check_identity_name("tenant", bad).expect_err(bad);
            assert!(error.starts_with("invalid tenant name"), "{error}");
        }
    }
}
