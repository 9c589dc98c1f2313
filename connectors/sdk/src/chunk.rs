/// Splits items of `sizes` bytes into runs of at most `max_count` items and
/// `max_bytes` in total, keeping their order; returns each run's indexes.
/// An item larger than `max_bytes` gets a run of its own (the caller checks
/// sizes against the peer's limit).
pub fn chunks(sizes: &[usize], max_count: usize, max_bytes: usize) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (index, &size) in sizes.iter().enumerate() {
        if !current.is_empty() && (current.len() == max_count || bytes + size > max_bytes) {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(index);
        bytes += size;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_hold_both_limits_in_order() {
        assert_eq!(chunks(&[1; 23], 10, 100).iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
        assert_eq!(chunks(&[50, 50, 1, 100, 500, 5], 10, 100), [vec![0, 1], vec![2], vec![3], vec![4], vec![5]]);
        assert!(chunks(&[], 10, 100).is_empty());
    }
}
