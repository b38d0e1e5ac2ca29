//! Benjamini–Hochberg control of the false-discovery rate over every judged
//! cell of a report: with m p-values, the one of rank k (ascending) becomes
//! q = min over j ≥ k of m·p(j)/j, capped at 1; a cell is a discovery at
//! level α when its q ≤ α. Among the discoveries, the expected share of
//! false ones is then at most α (for independent or positively dependent
//! tests).

/// The report's false-discovery rate.
pub const FDR_Q: f64 = 0.05;

/// BH-adjusted q-values, in the order of `p`. Non-finite p-values count as 1.
pub fn bh_adjust(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let clean = |x: f64| if x.is_finite() { x.clamp(0.0, 1.0) } else { 1.0 };
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| clean(p[*a]).total_cmp(&clean(p[*b])));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank0, &i) in order.iter().enumerate().rev() {
        running = running.min(clean(p[i]) * m as f64 / (rank0 + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bh_matches_a_hand_computed_example() {
        // m = 5, p sorted 0.01, 0.02, 0.03, 0.04, 0.20:
        //   m·p/k = 0.05, 0.05, 0.05, 0.05, 0.20; running minima from the top
        //   leave them as they are. Given out of order:
        let p = [0.03, 0.20, 0.01, 0.04, 0.02];
        let q = bh_adjust(&p);
        let want = [0.05, 0.20, 0.05, 0.05, 0.05];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
    }

    #[test]
    fn bh_takes_the_minimum_from_above() {
        // p = 0.01, 0.04, 0.045 (m = 3): m·p/k = 0.03, 0.06, 0.045 → the
        // second is lowered to the third's 0.045; the first stays 0.03.
        let q = bh_adjust(&[0.04, 0.01, 0.045]);
        let want = [0.045, 0.03, 0.045];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
        // At q = 0.05 all three are discoveries; a lone 0.04 among 3 would not be by Bonferroni (0.12).
        assert!(q.iter().all(|x| *x <= FDR_Q));
    }

    #[test]
    fn bh_caps_at_one_and_treats_nan_as_one() {
        let q = bh_adjust(&[0.9, f64::NAN, 0.8]);
        assert!(q.iter().all(|x| *x <= 1.0), "{q:?}");
        assert_eq!(q[1], 1.0);
        assert!(bh_adjust(&[]).is_empty());
    }
}
