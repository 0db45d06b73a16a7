//! Approximate nearest neighbours: a hierarchical navigable small-world graph (Malkov &
//! Yashunin, 2018) over the vectors of one tantivy segment.
//!
//! Written here rather than taken from a crate because the store needs three things together
//! that the maintained crates did not offer: a filter predicate evaluated *during* the graph
//! walk (so top-k is filled with chunks the caller may see — the access-control pre-filter),
//! vectors borrowed from the segment's own columns instead of a second copy on disk, and a
//! small, checksummed file per segment that is validated before use. `hnsw_rs` stores its own
//! copy of every vector and brings a dozen dependencies; `instant-distance` has no filtered
//! search. See docs/knowledge-bases.md ("Vector index").
//!
//! Similarity is the dot product, which is cosine for the unit-length vectors the embedder
//! writes. Segments never change, so a graph is built once, frozen into flat arrays and
//! persisted; deleted chunks stay in the graph as waypoints and are rejected by the predicate.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Graph shape. Defaults follow hnswlib's common settings for 384-dimensional embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HnswParams {
    /// Neighbours per node on the upper layers (twice that on layer 0).
    pub m: usize,
    /// Breadth of the search for neighbours while inserting.
    pub ef_construction: usize,
    /// Level draws are seeded, so the same vectors always give the same graph.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 128,
            seed: 0x6261_7361_6c74,
        }
    }
}

const MAX_LEVEL: usize = 16;
const MAGIC: &[u8; 8] = b"BSLTHNSW";
const VERSION: u32 = 1;

/// Dot product in 32 independent lanes (four 8-wide vector accumulators once vectorized), so
/// a scan is bound by memory, not by the latency of one accumulator.
pub(crate) fn dot(left: &[f32], right: &[f32]) -> f32 {
    const LANES: usize = 32;
    let (left_blocks, left_tail) = left.as_chunks::<LANES>();
    let (right_blocks, right_tail) = right.as_chunks::<LANES>();
    let mut sums = [0.0_f32; LANES];
    for (l, r) in left_blocks.iter().zip(right_blocks) {
        for lane in 0..LANES {
            sums[lane] += l[lane] * r[lane];
        }
    }
    let tail: f32 = left_tail.iter().zip(right_tail).map(|(l, r)| l * r).sum();
    sums.iter().sum::<f32>() + tail
}

/// A node and its similarity to the current query; ordered by similarity, then node.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// Nodes seen by one walk: a bitset that clears only the words it touched.
struct Visited {
    bits: Vec<u64>,
    touched: Vec<u32>,
}

impl Visited {
    fn new(nodes: usize) -> Self {
        Visited {
            bits: vec![0; nodes.div_ceil(64)],
            touched: Vec::new(),
        }
    }

    /// True the first time `node` is seen.
    fn insert(&mut self, node: u32) -> bool {
        let word = (node >> 6) as usize;
        let bit = 1_u64 << (node & 63);
        if self.bits[word] & bit != 0 {
            return false;
        }
        if self.bits[word] == 0 {
            self.touched.push(word as u32);
        }
        self.bits[word] |= bit;
        true
    }

    fn clear(&mut self) {
        for word in self.touched.drain(..) {
            self.bits[word as usize] = 0;
        }
    }
}

/// Where the vectors are: node `i` is tantivy doc `docs[i]`, whose vector starts at
/// `docs[i] * dimension` in `vectors`.
#[derive(Clone, Copy)]
struct Space<'a> {
    docs: &'a [u32],
    vectors: &'a [f32],
    dimension: usize,
}

impl<'a> Space<'a> {
    fn vector(&self, node: u32) -> &'a [f32] {
        let start = self.docs[node as usize] as usize * self.dimension;
        &self.vectors[start..start + self.dimension]
    }

    fn similarity(&self, query: &[f32], node: u32) -> f32 {
        dot(query, self.vector(node))
    }
}

trait Graph {
    fn neighbours(&self, node: u32, level: usize) -> &[u32];
}

/// What a walk looks for: the nodes most similar to `vector` among those `accept`ed.
struct Target<'a> {
    vector: &'a [f32],
    accept: &'a dyn Fn(u32) -> bool,
}

/// Best-first walk of one layer from `entries`; returns up to `ef` accepted nodes, best first.
/// Rejected nodes are still walked through, so a filter does not cut the graph apart.
fn search_layer(
    graph: &impl Graph,
    space: Space<'_>,
    target: &Target<'_>,
    entries: &[Scored],
    ef: usize,
    level: usize,
    visited: &mut Visited,
) -> Vec<Scored> {
    let (query, accept) = (target.vector, target.accept);
    visited.clear();
    let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
    let mut results: BinaryHeap<Reverse<Scored>> = BinaryHeap::new();
    for &entry in entries {
        if visited.insert(entry.1) {
            candidates.push(entry);
            if accept(entry.1) {
                results.push(Reverse(entry));
            }
        }
    }
    while let Some(current) = candidates.pop() {
        let worst = results.peek().map(|Reverse(worst)| worst.0);
        if results.len() >= ef && worst.is_some_and(|worst| current.0 < worst) {
            break;
        }
        for &neighbour in graph.neighbours(current.1, level) {
            if !visited.insert(neighbour) {
                continue;
            }
            let similarity = space.similarity(query, neighbour);
            let worst = results.peek().map(|Reverse(worst)| worst.0);
            if results.len() < ef || worst.is_some_and(|worst| similarity > worst) {
                let scored = Scored(similarity, neighbour);
                candidates.push(scored);
                if accept(neighbour) {
                    results.push(Reverse(scored));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
    }
    // Ascending `Reverse` is descending similarity.
    results
        .into_sorted_vec()
        .into_iter()
        .map(|Reverse(scored)| scored)
        .collect()
}

/// The graph while it is being built: neighbour lists per node per level.
struct Builder<'a> {
    space: Space<'a>,
    params: HnswParams,
    links: Vec<Vec<Vec<u32>>>,
    entry: u32,
    top_level: usize,
}

impl Graph for Builder<'_> {
    fn neighbours(&self, node: u32, level: usize) -> &[u32] {
        &self.links[node as usize][level]
    }
}

impl Builder<'_> {
    fn max_links(&self, level: usize) -> usize {
        if level == 0 {
            self.params.m * 2
        } else {
            self.params.m
        }
    }

    /// The neighbour-selection heuristic: keep a candidate only if it is closer to the node
    /// than to every neighbour already kept, which keeps links pointing in different directions
    /// (and the graph navigable across clusters).
    fn select(&self, candidates: &[Scored], limit: usize) -> Vec<u32> {
        let mut chosen: Vec<u32> = Vec::with_capacity(limit);
        for candidate in candidates {
            if chosen.len() == limit {
                break;
            }
            let vector = self.space.vector(candidate.1);
            let diverse = chosen
                .iter()
                .all(|&kept| self.space.similarity(vector, kept) < candidate.0);
            if diverse {
                chosen.push(candidate.1);
            }
        }
        chosen
    }

    fn insert(&mut self, node: u32, level: usize, visited: &mut Visited) {
        let query = self.space.vector(node);
        let mut entry = vec![Scored(self.space.similarity(query, self.entry), self.entry)];
        let target = Target {
            vector: query,
            accept: &|_| true,
        };
        for layer in (level + 1..=self.top_level).rev() {
            entry = search_layer(&*self, self.space, &target, &entry, 1, layer, visited);
        }
        for layer in (0..=level.min(self.top_level)).rev() {
            let found = search_layer(
                &*self,
                self.space,
                &target,
                &entry,
                self.params.ef_construction,
                layer,
                visited,
            );
            let limit = self.max_links(layer);
            let chosen = self.select(&found, self.params.m);
            for &neighbour in &chosen {
                let list = &mut self.links[neighbour as usize][layer];
                list.push(node);
                if list.len() > limit {
                    let own = self.space.vector(neighbour);
                    let mut scored: Vec<Scored> = self.links[neighbour as usize][layer]
                        .iter()
                        .map(|&other| Scored(self.space.similarity(own, other), other))
                        .collect();
                    scored.sort_unstable_by(|left, right| right.cmp(left));
                    let kept = self.select(&scored, limit);
                    self.links[neighbour as usize][layer] = kept;
                }
            }
            self.links[node as usize][layer] = chosen;
            entry = found;
        }
        if level > self.top_level {
            self.top_level = level;
            self.entry = node;
        }
    }
}

/// SplitMix64: a tiny, well-mixed generator for the level draws.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A frozen graph in flat arrays: node `i`'s neighbours on `level` are
/// `links[slots[first_slot[i] + level] .. slots[first_slot[i] + level + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hnsw {
    docs: Vec<u32>,
    first_slot: Vec<u32>,
    slots: Vec<u32>,
    links: Vec<u32>,
    entry: u32,
    top_level: u32,
    dimension: u32,
    m: u32,
}

impl Graph for Hnsw {
    fn neighbours(&self, node: u32, level: usize) -> &[u32] {
        let slot = self.first_slot[node as usize] as usize + level;
        &self.links[self.slots[slot] as usize..self.slots[slot + 1] as usize]
    }
}

impl Hnsw {
    /// Builds the graph of the vectors of `docs` (at `doc * dimension` in `vectors`).
    pub(crate) fn build(
        docs: Vec<u32>,
        vectors: &[f32],
        dimension: usize,
        params: HnswParams,
    ) -> Hnsw {
        let nodes = docs.len();
        let space = Space {
            docs: &docs,
            vectors,
            dimension,
        };
        let mut state = params.seed;
        let scale = 1.0 / (params.m.max(2) as f64).ln();
        let levels: Vec<usize> = (0..nodes)
            .map(|_| {
                // Uniform in (0, 1]: never ln(0).
                let uniform = ((split_mix(&mut state) >> 11) + 1) as f64 / (1_u64 << 53) as f64;
                ((-uniform.ln() * scale) as usize).min(MAX_LEVEL)
            })
            .collect();
        let mut builder = Builder {
            space,
            params,
            links: levels
                .iter()
                .map(|&level| vec![Vec::new(); level + 1])
                .collect(),
            entry: 0,
            top_level: levels.first().copied().unwrap_or(0),
        };
        let mut visited = Visited::new(nodes);
        for (node, &level) in levels.iter().enumerate().skip(1) {
            builder.insert(node as u32, level, &mut visited);
        }
        let (entry, top_level, links) = (builder.entry, builder.top_level, builder.links);
        let mut frozen = Hnsw {
            docs: Vec::new(),
            first_slot: Vec::with_capacity(nodes + 1),
            slots: Vec::new(),
            links: Vec::new(),
            entry,
            top_level: top_level as u32,
            dimension: dimension as u32,
            m: params.m as u32,
        };
        for node_links in links {
            frozen.first_slot.push(frozen.slots.len() as u32);
            for list in node_links {
                frozen.slots.push(frozen.links.len() as u32);
                frozen.links.extend_from_slice(&list);
            }
        }
        frozen.first_slot.push(frozen.slots.len() as u32);
        frozen.slots.push(frozen.links.len() as u32);
        frozen.docs = docs;
        frozen
    }

    pub(crate) fn len(&self) -> usize {
        self.docs.len()
    }

    /// The `k` accepted docs most similar to `query`, best first, walking `ef` candidates on
    /// the bottom layer (at least `k`). `accept` sees tantivy doc ids.
    pub(crate) fn search(
        &self,
        query: &[f32],
        vectors: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        if self.docs.is_empty() || k == 0 {
            return Vec::new();
        }
        let space = Space {
            docs: &self.docs,
            vectors,
            dimension: self.dimension as usize,
        };
        let mut visited = Visited::new(self.docs.len());
        let mut entry = vec![Scored(space.similarity(query, self.entry), self.entry)];
        let everything = Target {
            vector: query,
            accept: &|_| true,
        };
        for level in (1..=self.top_level as usize).rev() {
            entry = search_layer(self, space, &everything, &entry, 1, level, &mut visited);
        }
        let accept_node = |node: u32| accept(self.docs[node as usize]);
        let target = Target {
            vector: query,
            accept: &accept_node,
        };
        let mut found = search_layer(self, space, &target, &entry, ef.max(k), 0, &mut visited);
        found.truncate(k);
        found
            .into_iter()
            .map(|Scored(similarity, node)| (self.docs[node as usize], similarity))
            .collect()
    }

    /// The on-disk form: a header, the arrays as little-endian u32, and an FNV-1a checksum.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + 4
                * (self.docs.len() + self.first_slot.len() + self.slots.len() + self.links.len()),
        );
        out.extend_from_slice(MAGIC);
        for value in [
            VERSION,
            self.dimension,
            self.m,
            self.entry,
            self.top_level,
            self.docs.len() as u32,
            self.slots.len() as u32,
            self.links.len() as u32,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        for array in [&self.docs, &self.first_slot, &self.slots, &self.links] {
            for value in array.iter() {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        let checksum = fnv1a(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    /// Reads and validates a graph written by [`Hnsw::to_bytes`] for a segment of `max_doc`
    /// docs and vectors of `dimension`; any inconsistency is an error, never a panic later.
    pub(crate) fn from_bytes(bytes: &[u8], dimension: usize, max_doc: u32) -> Result<Hnsw, String> {
        let body_len = bytes.len().checked_sub(8).ok_or("truncated graph file")?;
        let (body, checksum) = bytes.split_at(body_len);
        let stored = u64::from_le_bytes(checksum.try_into().map_err(|_| "truncated graph file")?);
        if fnv1a(body) != stored {
            return Err("graph file checksum mismatch".into());
        }
        if body.len() < 8 + 32 || &body[..8] != MAGIC {
            return Err("not a Basalt HNSW graph file".into());
        }
        let mut words = body[8..]
            .chunks_exact(4)
            .map(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
        let mut next = || words.next().ok_or("truncated graph file");
        let version = next()?;
        if version != VERSION {
            return Err(format!("graph file version {version}; expected {VERSION}"));
        }
        let (file_dimension, m, entry, top_level) = (next()?, next()?, next()?, next()?);
        let (nodes, slot_count, link_count) =
            (next()? as usize, next()? as usize, next()? as usize);
        if file_dimension as usize != dimension {
            return Err(format!(
                "graph built for {file_dimension} dimensions; the index has {dimension}"
            ));
        }
        let expected = 8 + 4 * (8 + nodes + (nodes + 1) + slot_count + link_count);
        if body.len() != expected {
            return Err("graph file length does not match its header".into());
        }
        let mut read = |count: usize| (0..count).map(|_| next()).collect::<Result<Vec<u32>, _>>();
        let graph = Hnsw {
            docs: read(nodes)?,
            first_slot: read(nodes + 1)?,
            slots: read(slot_count)?,
            links: read(link_count)?,
            entry,
            top_level,
            dimension: file_dimension,
            m,
        };
        graph.validate(max_doc)?;
        Ok(graph)
    }

    fn validate(&self, max_doc: u32) -> Result<(), String> {
        let nodes = self.docs.len();
        let bad = |what: &str| Err(format!("graph file is inconsistent: {what}"));
        if self.docs.iter().any(|&doc| doc >= max_doc) {
            return bad("a node points past the segment");
        }
        if nodes > 0 && self.entry as usize >= nodes {
            return bad("entry point out of range");
        }
        if self.slots.is_empty() {
            return bad("no link table");
        }
        if self.first_slot.first() != Some(&0)
            || self.first_slot.last().copied() != Some(self.slots.len() as u32 - 1)
            || self.first_slot.windows(2).any(|pair| pair[1] <= pair[0])
        {
            return bad("level table");
        }
        if self.slots.first() != Some(&0)
            || self.slots.last().copied() != Some(self.links.len() as u32)
            || self.slots.windows(2).any(|pair| pair[1] < pair[0])
        {
            return bad("link table");
        }
        if self.links.iter().any(|&node| node as usize >= nodes) {
            return bad("a link points past the graph");
        }
        if nodes > 0 {
            let entry_levels =
                self.first_slot[self.entry as usize + 1] - self.first_slot[self.entry as usize];
            if entry_levels != self.top_level + 1 {
                return bad("entry point is not on the top level");
            }
            let tallest = self
                .first_slot
                .windows(2)
                .map(|pair| pair[1] - pair[0])
                .max()
                .unwrap_or(1);
            if tallest != self.top_level + 1 {
                return bad("top level");
            }
        }
        Ok(())
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors in clusters, from a seeded generator.
    fn clustered(count: usize, dimension: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut uniform = || (split_mix(&mut state) >> 11) as f32 / (1_u64 << 53) as f32 - 0.5;
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dimension).map(|_| uniform()).collect())
            .collect();
        let mut out = Vec::with_capacity(count * dimension);
        for index in 0..count {
            let centre = &centres[index % centres.len()];
            let mut vector: Vec<f32> = centre.iter().map(|value| value + 0.4 * uniform()).collect();
            let norm = dot(&vector, &vector).sqrt();
            vector.iter_mut().for_each(|value| *value /= norm);
            out.extend(vector);
        }
        out
    }

    fn exact(vectors: &[f32], dimension: usize, query: &[f32], k: usize) -> Vec<u32> {
        let mut scored: Vec<(u32, f32)> = vectors
            .chunks_exact(dimension)
            .enumerate()
            .map(|(doc, vector)| (doc as u32, dot(query, vector)))
            .collect();
        scored.sort_by(|left, right| right.1.total_cmp(&left.1).then(left.0.cmp(&right.0)));
        scored.into_iter().take(k).map(|(doc, _)| doc).collect()
    }

    fn recall(graph: &Hnsw, vectors: &[f32], dimension: usize, queries: &[f32]) -> f64 {
        let mut found = 0;
        let mut total = 0;
        for query in queries.chunks_exact(dimension) {
            let truth = exact(vectors, dimension, query, 10);
            let approximate: Vec<u32> = graph
                .search(query, vectors, 10, 64, &|_| true)
                .into_iter()
                .map(|(doc, _)| doc)
                .collect();
            found += truth.iter().filter(|doc| approximate.contains(doc)).count();
            total += truth.len();
        }
        found as f64 / total as f64
    }

    #[test]
    fn finds_nearly_all_true_neighbours() {
        let dimension = 32;
        let vectors = clustered(3000, dimension, 1);
        let queries = clustered(100, dimension, 2);
        let graph = Hnsw::build(
            (0..3000).collect(),
            &vectors,
            dimension,
            HnswParams::default(),
        );
        let recall = recall(&graph, &vectors, dimension, &queries);
        assert!(recall >= 0.95, "recall@10 {recall}");
    }

    #[test]
    fn filtered_search_returns_only_accepted_docs_and_fills_k() {
        let dimension = 16;
        let vectors = clustered(2000, dimension, 3);
        let graph = Hnsw::build(
            (0..2000).collect(),
            &vectors,
            dimension,
            HnswParams::default(),
        );
        let query = &vectors[..dimension];
        let hits = graph.search(query, &vectors, 10, 64, &|doc| doc % 3 == 1);
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(doc, _)| doc % 3 == 1));
        assert!(hits.windows(2).all(|pair| pair[0].1 >= pair[1].1));
        assert!(graph.search(query, &vectors, 10, 64, &|_| false).is_empty());
    }

    #[test]
    fn nodes_can_be_a_subset_of_the_segment() {
        // Records interleave with chunks: only odd docs carry vectors here.
        let dimension = 8;
        let vectors = clustered(400, dimension, 4);
        let docs: Vec<u32> = (0..400).filter(|doc| doc % 2 == 1).collect();
        let graph = Hnsw::build(docs, &vectors, dimension, HnswParams::default());
        assert_eq!(graph.len(), 200);
        let query = &vectors[3 * dimension..4 * dimension];
        let hits = graph.search(query, &vectors, 5, 32, &|_| true);
        assert_eq!(hits[0].0, 3);
        assert!(hits.iter().all(|(doc, _)| doc % 2 == 1));
    }

    #[test]
    fn round_trips_through_bytes_and_rejects_damage() {
        let dimension = 8;
        let vectors = clustered(500, dimension, 5);
        let graph = Hnsw::build(
            (0..500).collect(),
            &vectors,
            dimension,
            HnswParams::default(),
        );
        let bytes = graph.to_bytes();
        assert_eq!(Hnsw::from_bytes(&bytes, dimension, 500), Ok(graph.clone()));
        assert!(Hnsw::from_bytes(&bytes, dimension + 1, 500).is_err());
        assert!(Hnsw::from_bytes(&bytes, dimension, 499).is_err());
        assert!(Hnsw::from_bytes(&bytes[..bytes.len() - 1], dimension, 500).is_err());
        assert!(Hnsw::from_bytes(&[], dimension, 500).is_err());
        for position in [0, 9, 40, bytes.len() / 2, bytes.len() - 9] {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x40;
            assert!(
                Hnsw::from_bytes(&damaged, dimension, 500).is_err(),
                "{position}"
            );
        }
    }

    #[test]
    fn same_vectors_give_the_same_graph_and_tiny_graphs_work() {
        let dimension = 4;
        let vectors = clustered(50, dimension, 6);
        let build = || {
            Hnsw::build(
                (0..50).collect(),
                &vectors,
                dimension,
                HnswParams::default(),
            )
        };
        assert_eq!(build(), build());
        let single = Hnsw::build(vec![7], &vectors, dimension, HnswParams::default());
        assert_eq!(
            single
                .search(&vectors[..4], &vectors, 3, 8, &|_| true)
                .len(),
            1
        );
        let empty = Hnsw::build(Vec::new(), &vectors, dimension, HnswParams::default());
        assert!(
            empty
                .search(&vectors[..4], &vectors, 3, 8, &|_| true)
                .is_empty()
        );
        let bytes = empty.to_bytes();
        assert_eq!(Hnsw::from_bytes(&bytes, dimension, 50), Ok(empty));
    }
}
