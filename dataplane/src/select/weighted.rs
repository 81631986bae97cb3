//! Round robin and weighted round robin (`sel` 0 and 2): the schedule a
//! rule's snapshot precomputes, and the per-worker walk over it.
//!
//! Invariant: a schedule holds indices of the rule's active endpoints only;
//! an empty schedule means no endpoint takes new flows.

/// Smooth weighted round robin (nginx's): a 100-ish slot schedule where each
/// endpoint appears in proportion to its weight, spread out rather than
/// bunched. `active` holds (endpoint index, weight) of the endpoints that
/// take new flows.
pub fn weighted_schedule(active: &[(usize, u32)]) -> Vec<u8> {
    if active.is_empty() {
        return Vec::new();
    }
    let total: u64 = active.iter().map(|&(_, w)| u64::from(w)).sum();
    // Scale to about 100 slots so the schedule stays small whatever the weights.
    let slots = total.clamp(1, 100 * active.len() as u64);
    let weights: Vec<i64> = active
        .iter()
        .map(|&(_, w)| (u64::from(w) * slots / total).max(1) as i64)
        .collect();
    let sum: i64 = weights.iter().sum();
    let mut current = vec![0i64; active.len()];
    let mut out = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        let mut best = 0;
        for k in 0..active.len() {
            current[k] += weights[k];
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= sum;
        out.push(active[best].0 as u8);
    }
    out
}

/// The endpoint index at the worker's `cursor` in `schedule`, advancing
/// the cursor; `None` for an empty schedule.
#[inline]
pub fn next(schedule: &[u8], cursor: &mut u32) -> Option<usize> {
    if schedule.is_empty() {
        return None;
    }
    let i = schedule[*cursor as usize % schedule.len()];
    *cursor = cursor.wrapping_add(1);
    Some(usize::from(i))
}
