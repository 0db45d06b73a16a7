//! The KB catalog: which knowledge bases a tenant has, with their settings, and the store each
//! opens onto. Callers use it through [`KbCatalog`]; [`DataDir`] is its embedded
//! implementation (a directory per knowledge base), and [`conformance`] is what any other (a
//! shared database's) must pass too.

use basalt_index::DocumentWrite;

use crate::error::{KbError, Result};
use crate::knowledge_base::{DataDir, KbSettings, KnowledgeBase};

/// A tenant's knowledge bases.
pub trait KbCatalog: Send + Sync + std::fmt::Debug {
    /// Creates a knowledge base, encrypted at rest or not (encrypting needs a master key);
    /// fails if one with that name exists or the settings are invalid.
    fn create_with(&self, settings: &KbSettings, encrypted: bool) -> Result<()>;

    /// Replaces the settings of an existing knowledge base. Only search- and answer-time
    /// settings may differ: chunking, analyzer and embedding model shape the index and are
    /// fixed at creation.
    fn update(&self, settings: &KbSettings) -> Result<()>;

    /// The settings of every knowledge base, by name.
    fn list(&self) -> Result<Vec<KbSettings>>;

    /// The settings of one.
    fn settings(&self, name: &str) -> Result<KbSettings>;

    /// Opens a knowledge base with these settings (its stored ones, or search-time ones
    /// changed for this process only).
    fn open_settings(&self, settings: KbSettings) -> Result<KnowledgeBase>;

    /// Deletes a knowledge base and everything in it.
    fn delete(&self, name: &str) -> Result<()>;

    /// Opens a knowledge base with its stored settings.
    fn open(&self, name: &str) -> Result<KnowledgeBase> {
        self.open_settings(self.settings(name)?)
    }

    /// The name of the knowledge base `id` names: the one whose [`bedrock_id`] it is, else
    /// the one of that name. Ids come first, so no knowledge base can take another's id by
    /// being named after it.
    fn name_of(&self, id: &str) -> Result<String> {
        let looks_like_id = id.len() == 10
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        if looks_like_id
            && let Some(settings) = self
                .list()?
                .into_iter()
                .find(|settings| bedrock_id(&settings.name) == id)
        {
            return Ok(settings.name);
        }
        self.settings(id)
            .map(|settings| settings.name)
            .map_err(|error| match error {
                KbError::BadName { .. } => KbError::NotFound {
                    name: id.to_owned(),
                },
                other => other,
            })
    }
}

/// The id Bedrock clients address knowledge base `name` by: ten capitals and digits (what
/// Bedrock's ids look like, and what botocore accepts), derived from the name, so it stays the
/// same for as long as the name does.
pub fn bedrock_id(name: &str) -> String {
    basalt_core::hex::sha256_parts(&[b"basalt bedrock knowledge base id:", name.as_bytes()])[..10]
        .to_ascii_uppercase()
}

impl KbCatalog for DataDir {
    fn create_with(&self, settings: &KbSettings, encrypted: bool) -> Result<()> {
        DataDir::create_with(self, settings, encrypted)
    }

    fn update(&self, settings: &KbSettings) -> Result<()> {
        DataDir::update(self, settings)
    }

    fn list(&self) -> Result<Vec<KbSettings>> {
        DataDir::list(self)
    }

    fn settings(&self, name: &str) -> Result<KbSettings> {
        DataDir::settings(self, name)
    }

    fn open_settings(&self, settings: KbSettings) -> Result<KnowledgeBase> {
        DataDir::open_settings(self, settings)
    }

    fn delete(&self, name: &str) -> Result<()> {
        DataDir::delete(self, name)
    }
}

/// The behaviour every [`KbCatalog`] must have. `open` gives a new handle on one empty catalog
/// each time it is called (another process, another replica).
///
/// # Panics
/// When the catalog falls short, with what it did.
pub fn conformance(open: &dyn Fn() -> Box<dyn KbCatalog>) {
    let catalog = open();
    assert!(catalog.list().expect("lists").is_empty());
    let missing = |result: Result<()>, what: &str| match result {
        Err(KbError::NotFound { name }) => assert_eq!(name, "nowhere", "{what}"),
        other => panic!("{what} of a missing knowledge base: {other:?}"),
    };
    missing(catalog.settings("nowhere").map(drop), "settings");
    missing(catalog.delete("nowhere"), "delete");
    missing(catalog.update(&settings("nowhere")), "update");
    missing(catalog.open("nowhere").map(drop), "open");

    for name in ["", "../up", ".hidden", "a/b", &"x".repeat(65)] {
        assert!(
            matches!(
                catalog.create_with(&settings(name), false),
                Err(KbError::BadName { .. })
            ),
            "name {name:?} is refused"
        );
    }
    let mut invalid = settings("invalid");
    invalid.analyzer = "klingon".into();
    assert!(matches!(
        catalog.create_with(&invalid, false),
        Err(KbError::BadSettingsValue { .. })
    ));

    // Created through one handle, seen through another, sorted by name.
    let (handbook, papers) = (settings("handbook"), settings("papers"));
    catalog.create_with(&papers, false).expect("creates");
    catalog.create_with(&handbook, false).expect("creates");
    assert!(matches!(
        catalog.create_with(&handbook, false),
        Err(KbError::Exists { name }) if name == "handbook"
    ));
    let other = open();
    let names: Vec<String> = other
        .list()
        .expect("lists")
        .into_iter()
        .map(|kb| kb.name)
        .collect();
    assert_eq!(names, ["handbook", "papers"]);
    // As created, but for where the catalog put its index (`backend`, `store_id`).
    let stored = other.settings("handbook").expect("reads");
    let placed = KbSettings {
        backend: stored.backend,
        store_id: stored.store_id.clone(),
        ..handbook.clone()
    };
    assert_eq!(stored, placed);
    let handbook = stored;

    // Search- and answer-time settings change; what shapes the index does not.
    let mut changed = handbook.clone();
    changed.answer.passages = Some(3);
    changed.answer.guardrail = Some("pii".into());
    catalog.update(&changed).expect("updates");
    assert_eq!(other.settings("handbook").expect("reads"), changed);
    let mut reshaped = changed.clone();
    reshaped.embedding.dimension = 8;
    assert!(matches!(
        catalog.update(&reshaped),
        Err(KbError::BadSettingsValue { .. })
    ));
    assert_eq!(other.settings("handbook").expect("reads"), changed);

    // A knowledge base opens onto its own store, through any handle.
    let kb = catalog.open("handbook").expect("opens");
    assert_eq!(kb.settings, changed);
    kb.write(vec![document(&changed)]).expect("writes");
    kb.finish_writes().expect("commits");
    drop(kb);
    let reopened = other.open("handbook").expect("opens");
    assert_eq!(reopened.documents().expect("documents").len(), 1);
    assert!(
        other
            .open("papers")
            .expect("opens")
            .documents()
            .expect("documents")
            .is_empty(),
        "each knowledge base has its own documents"
    );
    drop(reopened);

    // Deleted with everything in it: a new one of the same name starts empty.
    other.delete("handbook").expect("deletes");
    missing(catalog.delete("nowhere"), "delete");
    assert!(matches!(
        catalog.settings("handbook"),
        Err(KbError::NotFound { .. })
    ));
    let names: Vec<String> = catalog
        .list()
        .expect("lists")
        .into_iter()
        .map(|kb| kb.name)
        .collect();
    assert_eq!(names, ["papers"]);
    catalog
        .create_with(&handbook, false)
        .expect("creates again");
    let fresh = catalog.open("handbook").expect("opens");
    assert!(fresh.documents().expect("documents").is_empty());
}

/// Settings for the suite: small vectors, so its documents need no model.
fn settings(name: &str) -> KbSettings {
    let mut settings = KbSettings::new(name);
    settings.embedding.model = "conformance".into();
    settings.embedding.dimension = 4;
    settings
}

fn document(settings: &KbSettings) -> DocumentWrite {
    DocumentWrite::one_chunk(
        "granite",
        "Granite is an igneous rock.",
        vec![0.5; settings.embedding.dimension],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("temp dir");
        conformance(&|| Box::new(DataDir::new(dir.path())));
        // A tenant's catalog is its own.
        let acme = || -> Box<dyn KbCatalog> {
            Box::new(DataDir::new(dir.path()).for_tenant("acme").expect("tenant"))
        };
        assert!(acme().list().expect("lists").is_empty());
    }
}
