//! A knowledge base's store on PostgreSQL with pgvector: the [`KnowledgeStore`] that stateless
//! replicas share. One schema per knowledge base holds its documents, chunks (text, page,
//! length in terms, vector), BM25 postings (term, chunk, frequency) and running totals; a
//! write or delete is one transaction, so every replica sees a document whole or not at all.
//!
//! Search gives what the embedded store gives: the same analyzer makes the terms, BM25 is
//! scored with the same formula over the postings table (IDF from the document frequencies,
//! the chunk's length against the average), vectors are ranked by inner product (unit vectors:
//! cosine) through pgvector's HNSW index, and hybrid search fuses the two with the same
//! functions. The filter and the reader restrict the candidates inside the SQL, before the top
//! k: the documents are read once per change of the knowledge base (a generation counter) and
//! the filter decides which may be returned; pgvector's iterative index scan keeps a selective
//! filter from starving the vector ranking.
//!
//! An encrypted knowledge base ([`PgStore::open_sealed`]) keeps its promise in the database:
//! document records and chunks (text, headings, metadata) are sealed with its data key before
//! they are sent, and document ids and BM25 terms are stored as keyed hashes (tags), so the
//! database never holds a word of a document. Vectors, chunk lengths in terms, page numbers and
//! term frequencies are stored as they are: the database computes with them.

mod connection;
pub mod migrations;
pub mod testing;

pub use connection::{Connection, Setup, off_runtime};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use basalt_index::{
    ChunkRecord, DocumentRecord, DocumentWrite, Filter, Hit, IndexError, IndexStats,
    KnowledgeStore, Result, Sealer, SearchMode, SearchRequest, StoreOptions, VECTOR_DEPTH,
};
use postgres::{Client, Transaction};

/// How deep BM25 ranks before fusion (reciprocal-rank fusion's depth).
const BM25_DEPTH: i64 = 1000;

/// The least breadth of an HNSW walk, as the embedded store's (hnswlib's `ef`).
const SEARCH_EF: usize = 64;

/// A BM25 query: its terms found in the knowledge base, each with its weight (count in the
/// query × IDF), and the average chunk length in terms.
struct Bm25Query {
    terms: Vec<Vec<u8>>,
    weights: Vec<f32>,
    average: f32,
}

/// Every document of a knowledge base, by the key its rows are stored under.
type Documents = Arc<BTreeMap<String, DocumentRecord>>;

/// How many bytes of a tag are stored: 128 bits, far from colliding.
const TAG_BYTES: usize = 16;

/// A knowledge base in a PostgreSQL schema.
pub struct PgStore {
    connection: Connection,
    schema: String,
    dimension: usize,
    analyzer: String,
    /// The knowledge base's data key when it is encrypted.
    sealer: Option<Arc<dyn Sealer>>,
    /// The documents as of a generation, for filters and readers.
    documents: Mutex<Option<(i64, Documents)>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PgStore")
            .field("schema", &self.schema)
            .field("dimension", &self.dimension)
            .field("sealed", &self.sealer.is_some())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host/database`) and opens the knowledge base
    /// in `schema` (lower-case letters, digits and `_`), creating its tables when they do not
    /// exist. The pgvector extension must be installable in the database.
    pub fn open(url: &str, schema: &str, options: &StoreOptions) -> Result<Self> {
        Self::open_with(url, schema, options, None)
    }

    /// As [`PgStore::open`], for an encrypted knowledge base: what reaches the database is
    /// sealed or tagged with `sealer`. A schema written sealed opens only sealed, and one
    /// written in the clear only in the clear.
    pub fn open_sealed(
        url: &str,
        schema: &str,
        options: &StoreOptions,
        sealer: Arc<dyn Sealer>,
    ) -> Result<Self> {
        Self::open_with(url, schema, options, Some(sealer))
    }

    fn open_with(
        url: &str,
        schema: &str,
        options: &StoreOptions,
        sealer: Option<Arc<dyn Sealer>>,
    ) -> Result<Self> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
            && !schema.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(engine(
                schema,
                "a schema name is 1–63 lower-case letters, digits and '_', not starting with a digit",
            ));
        }
        if basalt_index::analyzer(&options.analyzer).is_none() {
            return Err(IndexError::UnknownAnalyzer {
                name: options.analyzer.clone(),
                choices: basalt_index::ANALYZERS.join(", "),
            });
        }
        let connection = Connection::new(url, session_settings);
        let dimension = options.dimension;
        let setup = format!(
            r#"
            CREATE EXTENSION IF NOT EXISTS vector;
            CREATE SCHEMA IF NOT EXISTS "{schema}";
            CREATE TABLE IF NOT EXISTS "{schema}".totals (
                one boolean PRIMARY KEY DEFAULT true CHECK (one),
                chunks bigint NOT NULL DEFAULT 0,
                terms bigint NOT NULL DEFAULT 0,
                generation bigint NOT NULL DEFAULT 0,
                sealed boolean NOT NULL
            );
            CREATE TABLE IF NOT EXISTS "{schema}".documents (
                doc_key text PRIMARY KEY,
                record bytea NOT NULL
            );
            CREATE TABLE IF NOT EXISTS "{schema}".chunks (
                id bigserial PRIMARY KEY,
                doc_key text NOT NULL REFERENCES "{schema}".documents ON DELETE CASCADE,
                ordinal integer NOT NULL,
                page integer,
                length integer NOT NULL,
                payload bytea NOT NULL,
                embedding vector({dimension}) NOT NULL,
                UNIQUE (doc_key, ordinal)
            );
            CREATE TABLE IF NOT EXISTS "{schema}".postings (
                term bytea NOT NULL,
                chunk bigint NOT NULL REFERENCES "{schema}".chunks ON DELETE CASCADE,
                frequency integer NOT NULL,
                PRIMARY KEY (term, chunk)
            );
            CREATE INDEX IF NOT EXISTS postings_chunk ON "{schema}".postings (chunk);
            CREATE INDEX IF NOT EXISTS chunks_embedding ON "{schema}".chunks
                USING hnsw (embedding vector_ip_ops);
            "#
        );
        let sealed = sealer.is_some();
        let unavailable = |error: String| engine(schema, &error);
        connection.run(unavailable, |client| {
            Self::create_tables(client, schema, dimension, sealed, &setup)
        })?;
        Ok(PgStore {
            connection,
            schema: schema.to_owned(),
            dimension,
            analyzer: options.analyzer.clone(),
            sealer,
            documents: Mutex::new(None),
        })
    }

    /// Creates the tables of `schema` if they are not there, and checks they are for vectors
    /// of `dimension` numbers and sealed (or not) as asked.
    fn create_tables(
        client: &mut Client,
        schema: &str,
        dimension: usize,
        sealed: bool,
        setup: &str,
    ) -> Result<()> {
        client.batch_execute(setup).map_err(|error| {
            engine(
                schema,
                &format!("cannot create the tables: {}", migrations::describe(&error)),
            )
        })?;
        let declared: String = client
            .query_one(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = ($1 || '.chunks')::regclass AND attname = 'embedding'",
                &[&format!("\"{schema}\"")],
            )
            .map_err(|error| engine(schema, &migrations::describe(&error)))?
            .get(0);
        if declared != format!("vector({dimension})") {
            let found = declared
                .trim_start_matches("vector(")
                .trim_end_matches(')')
                .parse()
                .unwrap_or(0);
            return Err(IndexError::Dimension {
                expected: found,
                found: dimension,
            });
        }
        let written_sealed: Option<bool> = client
            .query_one(
                &format!(
                    "WITH made AS (INSERT INTO \"{schema}\".totals (sealed) VALUES ($1) \
                     ON CONFLICT DO NOTHING RETURNING sealed) \
                     SELECT sealed FROM made UNION ALL SELECT sealed FROM \"{schema}\".totals"
                ),
                &[&sealed],
            )
            .map_err(|error| {
                engine(
                    schema,
                    &format!(
                        "{}; if these tables were made before PostgreSQL stores could be \
                         sealed (December 2026), re-create the knowledge base",
                        migrations::describe(&error)
                    ),
                )
            })?
            .get(0);
        if written_sealed != Some(sealed) {
            return Err(engine(
                schema,
                if sealed {
                    "this knowledge base was written unencrypted and cannot be opened with a key"
                } else {
                    "this knowledge base is encrypted: open it with its data key"
                },
            ));
        }
        Ok(())
    }

    /// Removes the knowledge base in `schema` (its tables and everything in them), if any.
    pub fn drop_schema(url: &str, schema: &str) -> Result<()> {
        Connection::new(url, |_| Ok(())).run(
            |error| engine(schema, &error),
            |client| {
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .map_err(|error| engine(schema, &migrations::describe(&error)))
            },
        )
    }

    /// Runs `work` on this store's connection (see [`Connection::run`]).
    fn run<T: Send>(&self, work: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        self.connection
            .run(|error| engine(&self.schema, &error), work)
    }

    fn error(&self, error: &dyn std::fmt::Display) -> IndexError {
        engine(&self.schema, &error.to_string())
    }

    fn db_error(&self, error: &postgres::Error) -> IndexError {
        engine(&self.schema, &migrations::describe(error))
    }

    /// `name` qualified with this knowledge base's schema.
    fn table(&self, name: &str) -> String {
        format!("\"{}\".{name}", self.schema)
    }

    /// The index terms of `text` as stored (tags when sealed), with their frequencies.
    fn term_counts(&self, text: &str) -> BTreeMap<Vec<u8>, i32> {
        let mut analyzer = basalt_index::analyzer(&self.analyzer)
            .unwrap_or_else(|| unreachable!("checked when the store was opened"));
        let mut counts = BTreeMap::new();
        for term in basalt_index::terms(&mut analyzer, text) {
            *counts.entry(self.stored_term(term)).or_insert(0) += 1;
        }
        counts
    }

    fn stored_term(&self, term: String) -> Vec<u8> {
        match &self.sealer {
            None => term.into_bytes(),
            Some(sealer) => {
                sealer.tag(&[b"term\0", term.as_bytes()].concat())[..TAG_BYTES].to_vec()
            }
        }
    }

    /// The key a document's rows are stored under: its id, or the id's tag when sealed.
    fn doc_key(&self, doc_id: &str) -> String {
        match &self.sealer {
            None => doc_id.to_owned(),
            Some(sealer) => basalt_core::hex::encode(
                &sealer.tag(&[b"document\0", doc_id.as_bytes()].concat())[..TAG_BYTES],
            ),
        }
    }

    /// A record as stored: JSON, sealed when the knowledge base is encrypted.
    fn encode(&self, value: &impl serde::Serialize) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(value).map_err(|error| self.error(&error))?;
        Ok(match &self.sealer {
            None => json,
            Some(sealer) => sealer.seal(&json),
        })
    }

    /// A stored record read back (`what` names it in an error).
    fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8], what: &str) -> Result<T> {
        let opened;
        let json = match &self.sealer {
            None => bytes,
            Some(sealer) => {
                opened = sealer.open(bytes).map_err(|error| {
                    self.error(&format!("{what} cannot be opened with this key: {error}"))
                })?;
                &opened
            }
        };
        serde_json::from_slice(json).map_err(|error| self.error(&format!("{what}: {error}")))
    }

    /// Every document, as of the current generation (read again when it changed).
    fn document_map(&self, client: &mut Client) -> Result<Documents> {
        let generation: i64 = client
            .query_one(
                &format!("SELECT generation FROM {}", self.table("totals")),
                &[],
            )
            .map_err(|error| self.db_error(&error))?
            .get(0);
        let mut cached = self
            .documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((known, documents)) = &*cached
            && *known == generation
        {
            return Ok(documents.clone());
        }
        let mut documents = BTreeMap::new();
        for row in client
            .query(
                &format!("SELECT doc_key, record FROM {}", self.table("documents")),
                &[],
            )
            .map_err(|error| self.db_error(&error))?
        {
            let record: DocumentRecord = self.decode(row.get(1), "a document record")?;
            documents.insert(row.get(0), record);
        }
        let documents = Arc::new(documents);
        *cached = Some((generation, documents.clone()));
        Ok(documents)
    }

    /// The chunks a restricted search may return (their ids), or `None` when it is not
    /// restricted.
    fn allowed(
        &self,
        client: &mut Client,
        request: &SearchRequest<'_>,
    ) -> Result<Option<Vec<i64>>> {
        if request.filter.is_none() && request.reader.is_none() {
            return Ok(None);
        }
        let documents = self.document_map(client)?;
        let passes = |record: &DocumentRecord, page: Option<u32>| {
            request
                .reader
                .is_none_or(|reader| record.readable_by(reader))
                && request
                    .filter
                    .is_none_or(|filter| filter.matches(record, page))
        };
        let by_page = request.filter.is_some_and(mentions_page);
        let mut allowed_documents: Vec<String> = Vec::new();
        if !by_page {
            allowed_documents = documents
                .iter()
                .filter(|(_, record)| passes(record, None))
                .map(|(key, _)| key.clone())
                .collect();
        }
        let rows = if by_page {
            client.query(
                &format!("SELECT id, doc_key, page FROM {}", self.table("chunks")),
                &[],
            )
        } else {
            client.query(
                &format!(
                    "SELECT id, doc_key, page FROM {} WHERE doc_key = ANY($1)",
                    self.table("chunks")
                ),
                &[&allowed_documents],
            )
        }
        .map_err(|error| self.db_error(&error))?;
        let mut ids = Vec::new();
        for row in rows {
            let doc_key: String = row.get(1);
            let page: Option<i32> = row.get(2);
            let keep = !by_page
                || documents
                    .get(&doc_key)
                    .is_some_and(|record| passes(record, page.map(|page| page as u32)));
            if keep {
                ids.push(row.get::<_, i64>(0));
            }
        }
        Ok(Some(ids))
    }

    /// The query's terms with their BM25 weights (count × IDF) and the average chunk length;
    /// `None` when no term of it is in the knowledge base.
    fn bm25_query(&self, client: &mut Client, text: &str) -> Result<Option<Bm25Query>> {
        let counts = self.term_counts(text);
        if counts.is_empty() {
            return Ok(None);
        }
        let totals = client
            .query_one(
                &format!("SELECT chunks, terms FROM {}", self.table("totals")),
                &[],
            )
            .map_err(|error| self.db_error(&error))?;
        let (chunks, terms): (i64, i64) = (totals.get(0), totals.get(1));
        if chunks == 0 {
            return Ok(None);
        }
        let average = (terms as f64 / chunks as f64).max(1.0) as f32;
        let query_terms: Vec<Vec<u8>> = counts.keys().cloned().collect();
        let frequencies: HashMap<Vec<u8>, i64> = client
            .query(
                &format!(
                    "SELECT term, count(*) FROM {} WHERE term = ANY($1) GROUP BY term",
                    self.table("postings")
                ),
                &[&query_terms],
            )
            .map_err(|error| self.db_error(&error))?
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let mut weighted_terms = Vec::new();
        let mut weights = Vec::new();
        for (term, count) in &counts {
            let Some(&frequency) = frequencies.get(term) else {
                continue;
            };
            let (n, df) = (chunks as f64, frequency as f64);
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln() as f32;
            weighted_terms.push(term.clone());
            weights.push(*count as f32 * idf);
        }
        Ok((!weighted_terms.is_empty()).then_some(Bm25Query {
            terms: weighted_terms,
            weights,
            average,
        }))
    }

    /// BM25 scores of the chunks matching `text`: the best [`BM25_DEPTH`] (restricted to
    /// `allowed`), or exactly those of `only`.
    fn bm25(
        &self,
        client: &mut Client,
        query: Option<&Bm25Query>,
        params: basalt_index::Bm25Params,
        allowed: Option<&[i64]>,
        only: Option<&[i64]>,
    ) -> Result<HashMap<i64, f32>> {
        let Some(Bm25Query {
            terms,
            weights,
            average,
        }) = query
        else {
            return Ok(HashMap::new());
        };
        let (k1, b) = (params.k1, params.b);
        let mut sql = format!(
            "SELECT p.chunk, sum(q.weight * p.frequency * ($3::real + 1) / \
                 (p.frequency + $3::real * (1 - $4::real + $4::real * c.length / $5::real)))::real AS score \
             FROM {postings} p \
             JOIN unnest($1::bytea[], $2::real[]) AS q(term, weight) ON q.term = p.term \
             JOIN {chunks} c ON c.id = p.chunk",
            postings = self.table("postings"),
            chunks = self.table("chunks"),
        );
        let restriction = only.or(allowed);
        if restriction.is_some() {
            sql.push_str(" WHERE p.chunk = ANY($6)");
        }
        sql.push_str(" GROUP BY p.chunk ORDER BY score DESC, p.chunk");
        if only.is_none() {
            sql.push_str(&format!(" LIMIT {BM25_DEPTH}"));
        }
        let rows = match &restriction {
            Some(ids) => client.query(&sql, &[terms, weights, &k1, &b, average, ids]),
            None => client.query(&sql, &[terms, weights, &k1, &b, average]),
        }
        .map_err(|error| self.db_error(&error))?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    /// Inner products with `query`: the best `depth` chunks (restricted to `allowed`), or
    /// exactly those of `only`.
    fn vector(
        &self,
        client: &mut Client,
        query: &[f32],
        depth: usize,
        exact: bool,
        allowed: Option<&[i64]>,
        only: Option<&[i64]>,
    ) -> Result<Vec<(i64, f32)>> {
        let literal = vector_literal(query);
        let chunks = self.table("chunks");
        let mut transaction = client
            .transaction()
            .map_err(|error| self.db_error(&error))?;
        // As the embedded graphs walk: at least `depth` candidates, and 64 (pgvector allows
        // up to 1,000).
        let setting = if exact {
            "SET LOCAL enable_indexscan = off".to_owned()
        } else {
            format!(
                "SET LOCAL hnsw.ef_search = {}",
                depth.clamp(SEARCH_EF, 1000)
            )
        };
        transaction
            .batch_execute(&setting)
            .map_err(|error| self.db_error(&error))?;
        let score = "(-(embedding <#> $1::text::vector))::real";
        let rows = match (only, allowed) {
            (Some(ids), _) => transaction.query(
                &format!("SELECT id, {score} FROM {chunks} WHERE id = ANY($2)"),
                &[&literal, &ids],
            ),
            (None, Some(ids)) => transaction.query(
                &format!(
                    "SELECT id, {score} FROM {chunks} WHERE id = ANY($2) \
                     ORDER BY embedding <#> $1::text::vector, id LIMIT {depth}"
                ),
                &[&literal, &ids],
            ),
            (None, None) => transaction.query(
                &format!(
                    "SELECT id, {score} FROM {chunks} ORDER BY embedding <#> $1::text::vector LIMIT {depth}"
                ),
                &[&literal],
            ),
        }
        .map_err(|error| self.db_error(&error))?;
        transaction
            .commit()
            .map_err(|error| self.db_error(&error))?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    /// The hits of `ranked` chunk ids, in that order.
    fn hits(&self, client: &mut Client, ranked: &[(i64, f32)]) -> Result<Vec<Hit>> {
        let ids: Vec<i64> = ranked.iter().map(|(id, _)| *id).collect();
        let rows = client
            .query(
                &format!(
                    "SELECT c.id, c.payload, d.record FROM {} c JOIN {} d ON d.doc_key = c.doc_key \
                     WHERE c.id = ANY($1)",
                    self.table("chunks"),
                    self.table("documents")
                ),
                &[&ids],
            )
            .map_err(|error| self.db_error(&error))?;
        let mut found: HashMap<i64, (ChunkRecord, DocumentRecord)> = HashMap::new();
        for row in rows {
            let chunk: ChunkRecord = self.decode(row.get(1), "a chunk")?;
            let record: DocumentRecord = self.decode(row.get(2), "a document record")?;
            found.insert(row.get(0), (chunk, record));
        }
        Ok(ranked
            .iter()
            .filter_map(|(id, score)| {
                let (chunk, record) = found.remove(id)?;
                Some(Hit::new(&record, chunk, *score))
            })
            .collect())
    }

    /// Removes `doc_id` and its chunks inside `transaction`, keeping the totals; whether it
    /// existed.
    fn remove(&self, transaction: &mut Transaction<'_>, doc_id: &str) -> Result<bool> {
        let doc_key = self.doc_key(doc_id);
        let gone = transaction
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(sum(length), 0)::bigint FROM {} WHERE doc_key = $1",
                    self.table("chunks")
                ),
                &[&doc_key],
            )
            .map_err(|error| self.db_error(&error))?;
        let (chunks, terms): (i64, i64) = (gone.get(0), gone.get(1));
        self.add_to_totals(transaction, -chunks, -terms)?;
        let deleted = transaction
            .execute(
                &format!("DELETE FROM {} WHERE doc_key = $1", self.table("documents")),
                &[&doc_key],
            )
            .map_err(|error| self.db_error(&error))?;
        Ok(deleted > 0)
    }

    /// Adds `chunks` chunks and `terms` terms (negative: removed) to the running totals.
    fn add_to_totals(
        &self,
        transaction: &mut Transaction<'_>,
        chunks: i64,
        terms: i64,
    ) -> Result<()> {
        transaction
            .execute(
                &format!(
                    "UPDATE {} SET chunks = chunks + $1, terms = terms + $2",
                    self.table("totals")
                ),
                &[&chunks, &terms],
            )
            .map_err(|error| self.db_error(&error))?;
        Ok(())
    }

    fn bump_generation(&self, transaction: &mut Transaction<'_>) -> Result<()> {
        transaction
            .execute(
                &format!(
                    "UPDATE {} SET generation = generation + 1",
                    self.table("totals")
                ),
                &[],
            )
            .map_err(|error| self.db_error(&error))?;
        Ok(())
    }
}

/// The store's work, on a connection.
impl PgStore {
    fn write_here(&self, client: &mut Client, documents: Vec<DocumentWrite>) -> Result<()> {
        for write in &documents {
            if let Some(chunk) = write
                .chunks
                .iter()
                .find(|chunk| chunk.vector.len() != self.dimension)
            {
                return Err(IndexError::Dimension {
                    expected: self.dimension,
                    found: chunk.vector.len(),
                });
            }
        }
        let mut transaction = client
            .transaction()
            .map_err(|error| self.db_error(&error))?;
        let (chunks_table, postings_table) = (self.table("chunks"), self.table("postings"));
        for write in documents {
            let record = &write.document;
            self.remove(&mut transaction, &record.doc_id)?;
            let doc_key = self.doc_key(&record.doc_id);
            let stored = self.encode(record)?;
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {} (doc_key, record) VALUES ($1, $2)",
                        self.table("documents")
                    ),
                    &[&doc_key, &stored],
                )
                .map_err(|error| self.db_error(&error))?;
            let (mut chunks, mut terms) = (0_i64, 0_i64);
            for chunk in &write.chunks {
                let search = chunk.search_text(record.title.as_deref());
                let counts = self.term_counts(&search);
                let length: i32 = counts.values().sum();
                let payload = self.encode(chunk)?;
                let page = chunk.page.map(|page| page as i32);
                let ordinal = chunk.ordinal as i32;
                let id: i64 = transaction
                    .query_one(
                        &format!(
                            "INSERT INTO {chunks_table} (doc_key, ordinal, page, length, payload, embedding) \
                             VALUES ($1, $2, $3, $4, $5, $6::text::vector) RETURNING id"
                        ),
                        &[&doc_key, &ordinal, &page, &length, &payload, &vector_literal(&chunk.vector)],
                    )
                    .map_err(|error| self.db_error(&error))?
                    .get(0);
                let (words, frequencies): (Vec<Vec<u8>>, Vec<i32>) = counts.into_iter().unzip();
                transaction
                    .execute(
                        &format!(
                            "INSERT INTO {postings_table} (term, chunk, frequency) \
                             SELECT term, $3, frequency FROM unnest($1::bytea[], $2::int[]) AS t(term, frequency)"
                        ),
                        &[&words, &frequencies, &id],
                    )
                    .map_err(|error| self.db_error(&error))?;
                chunks += 1;
                terms += i64::from(length);
            }
            self.add_to_totals(&mut transaction, chunks, terms)?;
        }
        self.bump_generation(&mut transaction)?;
        transaction.commit().map_err(|error| self.db_error(&error))
    }

    fn delete_here(&self, client: &mut Client, doc_ids: &[String]) -> Result<usize> {
        let mut transaction = client
            .transaction()
            .map_err(|error| self.db_error(&error))?;
        let mut existed = 0;
        for doc_id in doc_ids.iter().collect::<HashSet<_>>() {
            existed += usize::from(self.remove(&mut transaction, doc_id)?);
        }
        self.bump_generation(&mut transaction)?;
        transaction
            .commit()
            .map_err(|error| self.db_error(&error))?;
        Ok(existed)
    }

    fn document_here(&self, client: &mut Client, doc_id: &str) -> Result<Option<DocumentRecord>> {
        let row = client
            .query_opt(
                &format!(
                    "SELECT record FROM {} WHERE doc_key = $1",
                    self.table("documents")
                ),
                &[&self.doc_key(doc_id)],
            )
            .map_err(|error| self.db_error(&error))?;
        row.map(|row| self.decode(row.get(0), "a document record"))
            .transpose()
    }

    fn documents_here(&self, client: &mut Client) -> Result<Vec<DocumentRecord>> {
        let mut documents: Vec<DocumentRecord> =
            self.document_map(client)?.values().cloned().collect();
        documents.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
        Ok(documents)
    }

    fn chunks_here(&self, client: &mut Client, doc_id: &str) -> Result<Vec<ChunkRecord>> {
        client
            .query(
                &format!(
                    "SELECT payload, embedding::text FROM {} WHERE doc_key = $1 ORDER BY ordinal",
                    self.table("chunks")
                ),
                &[&self.doc_key(doc_id)],
            )
            .map_err(|error| self.db_error(&error))?
            .into_iter()
            .map(|row| {
                let mut chunk: ChunkRecord = self.decode(row.get(0), "a chunk")?;
                chunk.vector = parse_vector(row.get(1)).ok_or_else(|| {
                    self.error(&"a chunk's vector is not in pgvector's text form")
                })?;
                Ok(chunk)
            })
            .collect()
    }

    fn search_here(&self, client: &mut Client, request: &SearchRequest<'_>) -> Result<Vec<Hit>> {
        let query_vector = request.query_vector_for(self.dimension)?;
        if request.k == 0 {
            return Ok(Vec::new());
        }
        let allowed = self.allowed(client, request)?;
        let allowed = allowed.as_deref();
        if allowed.is_some_and(<[i64]>::is_empty) {
            return Ok(Vec::new());
        }
        // The query's terms and weights, worked out once for every BM25 scoring below.
        let lexical_query = match request.mode {
            SearchMode::Vector => None,
            _ => self.bm25_query(client, request.text)?,
        };
        let lexical_query = lexical_query.as_ref();
        let ranked: Vec<(i64, f32)> = match (request.mode, query_vector) {
            (SearchMode::Bm25, _) | (_, None) => {
                let scores = self.bm25(client, lexical_query, request.bm25, allowed, None)?;
                basalt_index::top_k(
                    scores
                        .into_iter()
                        .filter(|(_, score)| *score > 0.0)
                        .collect(),
                    request.k,
                )
            }
            (SearchMode::Vector, Some(query)) => {
                self.vector(client, query, request.k, request.exact, allowed, None)?
            }
            (SearchMode::Hybrid, Some(query)) => {
                let depth = request.k.max(VECTOR_DEPTH);
                let semantic = self.vector(client, query, depth, request.exact, allowed, None)?;
                let mut lexical = self.bm25(client, lexical_query, request.bm25, allowed, None)?;
                // Both sides scored exactly for every candidate, in one order (insertion).
                let mut candidates: Vec<i64> = semantic
                    .iter()
                    .map(|(id, _)| *id)
                    .chain(lexical.keys().copied())
                    .collect();
                candidates.sort_unstable();
                candidates.dedup();
                let missing: Vec<i64> = semantic
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| !lexical.contains_key(id))
                    .collect();
                if !missing.is_empty() {
                    lexical.extend(self.bm25(
                        client,
                        lexical_query,
                        request.bm25,
                        allowed,
                        Some(&missing),
                    )?);
                }
                let mut cosines: HashMap<i64, f32> = semantic.into_iter().collect();
                let unscored: Vec<i64> = candidates
                    .iter()
                    .copied()
                    .filter(|id| !cosines.contains_key(id))
                    .collect();
                if !unscored.is_empty() {
                    cosines.extend(self.vector(
                        client,
                        query,
                        0,
                        true,
                        allowed,
                        Some(&unscored),
                    )?);
                }
                let bm25: Vec<f32> = candidates
                    .iter()
                    .map(|id| lexical.get(id).copied().unwrap_or(0.0))
                    .collect();
                let vector: Vec<f32> = candidates
                    .iter()
                    .map(|id| cosines.get(id).copied().unwrap_or(0.0))
                    .collect();
                basalt_index::fuse(&bm25, &vector, request.fusion, request.k)
                    .into_iter()
                    .map(|(index, score)| (candidates[index], score))
                    .collect()
            }
        };
        self.hits(client, &ranked)
    }

    fn stats_here(&self, client: &mut Client) -> Result<IndexStats> {
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {}), chunks FROM {}",
                    self.table("documents"),
                    self.table("totals")
                ),
                &[],
            )
            .map_err(|error| self.db_error(&error))?;
        Ok(IndexStats {
            documents: row.get::<_, i64>(0) as u64,
            chunks: row.get::<_, i64>(1) as u64,
        })
    }
}

/// Every call runs on the store's connection, where the `postgres` driver may block
/// ([`off_runtime`]).
impl KnowledgeStore for PgStore {
    fn write(&self, documents: Vec<DocumentWrite>) -> Result<()> {
        self.run(|client| self.write_here(client, documents))
    }

    fn delete(&self, doc_ids: &[String]) -> Result<usize> {
        self.run(|client| self.delete_here(client, doc_ids))
    }

    fn document(&self, doc_id: &str) -> Result<Option<DocumentRecord>> {
        self.run(|client| self.document_here(client, doc_id))
    }

    fn documents(&self) -> Result<Vec<DocumentRecord>> {
        self.run(|client| self.documents_here(client))
    }

    fn chunks(&self, doc_id: &str) -> Result<Vec<ChunkRecord>> {
        self.run(|client| self.chunks_here(client, doc_id))
    }

    fn search(&self, request: &SearchRequest<'_>) -> Result<Vec<Hit>> {
        self.run(|client| self.search_here(client, request))
    }

    fn stats(&self) -> Result<IndexStats> {
        self.run(|client| self.stats_here(client))
    }

    fn size_bytes(&self) -> Result<u64> {
        self.run(|client| {
            let row = client
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind = 'r'",
                    &[&self.schema],
                )
                .map_err(|error| self.db_error(&error))?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }
}

/// What every connection of a store sets first: pgvector 0.8's iterative index scans, so a
/// filtered vector search keeps walking the graph until it has k rows.
fn session_settings(client: &mut Client) -> std::result::Result<(), String> {
    if let Err(error) = client.batch_execute("SET hnsw.iterative_scan = strict_order") {
        tracing::warn!(%error, "pgvector without iterative index scans (0.8 or later has them)");
    }
    Ok(())
}

/// A vector as pgvector's text form, `[0.1,0.2,…]` (Rust prints each number so it reads back
/// the same).
fn vector_literal(vector: &[f32]) -> String {
    let numbers: Vec<String> = vector.iter().map(f32::to_string).collect();
    format!("[{}]", numbers.join(","))
}

/// pgvector's text form back into numbers (`None` when it is not that).
fn parse_vector(text: &str) -> Option<Vec<f32>> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|number| number.trim().parse().ok())
        .collect()
}

/// Whether `filter` looks at the page, which differs between a document's chunks.
fn mentions_page(filter: &Filter) -> bool {
    match filter {
        Filter::Eq { field, .. }
        | Filter::In { field, .. }
        | Filter::Prefix { field, .. }
        | Filter::Range { field, .. } => field == "page",
        Filter::And(all) | Filter::Or(all) => all.iter().any(mentions_page),
        Filter::Not(inner) => mentions_page(inner),
    }
}

fn engine(schema: &str, message: &str) -> IndexError {
    IndexError::Engine {
        path: PathBuf::from(format!("postgres schema {schema}")),
        message: message.to_owned(),
    }
}
