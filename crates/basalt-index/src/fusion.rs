//! Ranking helpers: top-k selection and the hybrid fusions.

use std::cmp::Ordering;

use crate::types::Fusion;

/// How deep each ranking goes into reciprocal-rank fusion (the usual TREC depth).
pub(crate) const RRF_DEPTH: usize = 1000;

/// Best first; equal scores keep a stable order by key.
fn by_score<K: Ord>(left: &(K, f32), right: &(K, f32)) -> Ordering {
    right
        .1
        .total_cmp(&left.1)
        .then_with(|| left.0.cmp(&right.0))
}

/// The `k` best entries, best first.
pub fn top_k<K: Ord>(mut scored: Vec<(K, f32)>, k: usize) -> Vec<(K, f32)> {
    if k == 0 {
        return Vec::new();
    }
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, by_score);
        scored.truncate(k);
    }
    scored.sort_unstable_by(by_score);
    scored
}

/// Merges BM25 and vector scores of the same candidates (index `i` is one chunk in both; a
/// BM25 score of 0 means no query term matched) into the `k` best candidates by `fusion`.
pub fn fuse(bm25: &[f32], vector: &[f32], fusion: Fusion, k: usize) -> Vec<(usize, f32)> {
    debug_assert_eq!(bm25.len(), vector.len());
    let mut fused = vec![0.0_f32; vector.len()];
    match fusion {
        Fusion::Rrf { k: offset } => {
            let matched = bm25
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, score)| *score > 0.0)
                .collect();
            let all = vector.iter().copied().enumerate().collect();
            for ranking in [matched, all] {
                for (rank, (index, _)) in top_k(ranking, RRF_DEPTH).into_iter().enumerate() {
                    fused[index] += 1.0 / (offset + rank as f32 + 1.0);
                }
            }
            let ranked = fused
                .into_iter()
                .enumerate()
                .filter(|(_, score)| *score > 0.0)
                .collect();
            top_k(ranked, k)
        }
        Fusion::Weighted { bm25_weight } => {
            let max = bm25.iter().copied().fold(0.0_f32, f32::max);
            let scale = if max > 0.0 { bm25_weight / max } else { 0.0 };
            for ((slot, lexical), semantic) in fused.iter_mut().zip(bm25).zip(vector) {
                *slot = scale * lexical + (1.0 - bm25_weight) * semantic;
            }
            top_k(fused.into_iter().enumerate().collect(), k)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_best_first_and_breaks_ties_by_key() {
        let scored = vec![(3, 0.5), (1, 0.9), (2, 0.5), (4, 0.1)];
        assert_eq!(top_k(scored.clone(), 3), [(1, 0.9), (2, 0.5), (3, 0.5)]);
        assert_eq!(top_k(scored, 10).len(), 4);
        assert!(top_k(vec![(1, 1.0)], 0).is_empty());
    }

    #[test]
    fn rrf_rewards_agreement() {
        // 2 is second in both lists; 1 and 3 are first in one and absent from the other.
        // Candidates 0..4: 2 is second in both rankings; 1 and 3 are first in one and last or
        // absent in the other.
        let bm25 = [0.0, 9.0, 5.0, 0.0];
        let vector = [0.3, 0.0, 0.8, 0.9];
        let fused = fuse(&bm25, &vector, Fusion::Rrf { k: 60.0 }, 3);
        assert_eq!(fused[0].0, 2);
        assert!((fused[0].1 - 2.0 / 62.0).abs() < 1e-6);
        assert_eq!(fused.len(), 3);
    }

    #[test]
    fn weighted_fusion_normalises_bm25_by_its_maximum() {
        let bm25 = [0.0, 10.0, 5.0];
        let vector = [0.0, 0.2, 0.9];
        let fused = fuse(&bm25, &vector, Fusion::Weighted { bm25_weight: 0.3 }, 2);
        // 1: 0.3·1 + 0.7·0.2 = 0.44; 2: 0.3·0.5 + 0.7·0.9 = 0.78.
        assert_eq!(fused[0].0, 2);
        assert!((fused[0].1 - 0.78).abs() < 1e-6);
        assert!((fused[1].1 - 0.44).abs() < 1e-6);
    }
}
