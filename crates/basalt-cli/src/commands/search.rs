//! `basalt search`: the best chunks of a knowledge base for a query.

use std::process::ExitCode;

use basalt_index::{Fusion, SearchMode};
use basalt_kb::SearchOptions;
use serde::Serialize;

use super::{load_kb_embedder, print_line};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  basalt search --kb handbook \"how many vacation days\"\n  \
                        basalt search --kb handbook --mode bm25 --k 3 --json \"VPN setup\"\n  \
                        basalt search --kb handbook --filter 'tag = hr and year >= 2023' \"parental leave\"\n\n\
                        Filters: FIELD = V, != V, <, <=, >, >=, FIELD in (A, B), FIELD prefix \"P\",\n\
                        combined with and, or, not and parentheses. Fields: doc_id, source, title,\n\
                        format, tag, page, ingested_at, and any metadata key."
)]
pub(crate) struct SearchArgs {
    #[arg(long)]
    kb: String,
    /// The query
    query: String,
    /// hybrid, bm25 or vector [default: the knowledge base's]
    #[arg(long)]
    mode: Option<SearchMode>,
    /// Number of chunks to return
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Only chunks whose document matches this filter
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Hybrid fusion: weighted[:BM25_WEIGHT] or rrf[:K] [default: the knowledge base's]
    #[arg(long)]
    fusion: Option<Fusion>,
    /// Scan every vector, even where the knowledge base has HNSW graphs
    #[arg(long)]
    exact: bool,
    /// Search as this principal would over the API: its tenant, only documents it may read
    #[arg(long = "as", value_name = "PRINCIPAL")]
    as_principal: Option<String>,
    /// Print JSON: {"mode", "hits": [{chunk_id, doc_id, score, text, source, …}], "timings"}
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    query: &'a str,
    #[serde(flatten)]
    results: &'a basalt_kb::SearchResults,
}

pub(crate) fn run(args: &SearchArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let filter = super::parse_filter(args.filter.as_deref())?;
    let (kb, reader) = super::open_kb_as(settings, &args.kb, args.as_principal.as_deref())?;
    let mode = args.mode.unwrap_or(kb.settings.mode);
    let embedder = if mode.uses_vector() {
        Some(load_kb_embedder(&kb, settings)?)
    } else {
        None
    };
    let options = SearchOptions {
        mode: Some(mode),
        k: args.k,
        filter,
        fusion: args.fusion,
        exact: args.exact,
        reader,
        bm25: None,
    };
    let results = kb.search(
        embedder
            .as_ref()
            .map(|embedder| embedder as &dyn basalt_model::Embedder),
        &args.query,
        &options,
    )?;
    if args.json {
        print_line(&serde_json::to_string_pretty(&Output {
            query: &args.query,
            results: &results,
        })?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if results.hits.is_empty() {
        print_line("no matching chunks")?;
    }
    for (rank, hit) in results.hits.iter().enumerate() {
        let mut place = hit.source.clone();
        if let Some(page) = hit.page {
            place.push_str(&format!(", page {page}"));
        }
        if !hit.heading_path.is_empty() {
            place.push_str(&format!(" § {}", hit.heading_path.join(" > ")));
        }
        let title = hit.title.as_deref().unwrap_or(&hit.doc_id);
        print_line(&format!(
            "{:>2}. [{:.3}] {title} ({place})",
            rank + 1,
            hit.score
        ))?;
        let snippet: String = hit.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let snippet: String = snippet.chars().take(240).collect();
        print_line(&format!("    {snippet}"))?;
    }
    Ok(ExitCode::SUCCESS)
}
