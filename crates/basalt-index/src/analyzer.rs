//! Text analyzers for BM25: how text and queries become index terms.

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer, TokenizerManager,
};

/// The analyzer a new knowledge base gets: lower-cased, ASCII-folded, English stop words
/// removed, Snowball English stemming.
pub const DEFAULT_ANALYZER: &str = "english";

/// Analyzer names a knowledge base may choose.
pub const ANALYZERS: &[&str] = &[
    "english",
    "english_keep_stopwords",
    "standard",
    "french",
    "german",
    "spanish",
    "italian",
    "portuguese",
    "dutch",
];

/// Builds the analyzer called `name`, or `None` for an unknown name.
pub fn analyzer(name: &str) -> Option<TextAnalyzer> {
    let base = || {
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
    };
    let language = match name {
        "standard" => return Some(base().build()),
        "english_keep_stopwords" => {
            return Some(base().filter(Stemmer::new(Language::English)).build());
        }
        "english" => Language::English,
        "french" => Language::French,
        "german" => Language::German,
        "spanish" => Language::Spanish,
        "italian" => Language::Italian,
        "portuguese" => Language::Portuguese,
        "dutch" => Language::Dutch,
        _ => return None,
    };
    let builder = base();
    Some(match StopWordFilter::new(language) {
        Some(stop_words) => builder
            .filter(stop_words)
            .filter(Stemmer::new(language))
            .build(),
        None => builder.filter(Stemmer::new(language)).build(),
    })
}

/// Registers every analyzer under its name (tokenizer names are looked up at index time).
pub(crate) fn register_all(manager: &TokenizerManager) {
    for name in ANALYZERS {
        if let Some(analyzer) = analyzer(name) {
            manager.register(name, analyzer);
        }
    }
}

/// The index terms of `text` under `analyzer`, in order, repeats kept.
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_stems_folds_and_drops_stop_words() {
        let mut english = analyzer("english").expect("exists");
        assert_eq!(
            terms(&mut english, "The Running of the Café-owners"),
            ["run", "cafe", "owner"]
        );
        let mut standard = analyzer("standard").expect("exists");
        assert_eq!(terms(&mut standard, "The Running"), ["the", "running"]);
        assert!(analyzer("klingon").is_none());
        for name in ANALYZERS {
            assert!(analyzer(name).is_some(), "{name}");
        }
    }
}
