//! The deadline wheel: one bucket per second of the future, so arming a timeout is a push and
//! the once-a-second tick looks only at connections whose deadline may have come. Each
//! connection has at most one entry, which it can cancel in O(1) (it remembers where the entry
//! is): a closed connection leaves nothing behind. Entries are hints: a connection whose
//! deadline moved later is simply filed again when its entry comes up, so re-arming a
//! keep-alive timeout per request costs nothing.

use std::time::Instant;

/// Seconds covered by one turn of the wheel; later deadlines wait a turn and are re-checked.
const SLOTS: usize = 512;

/// Where an id is filed: its second, and its index in that second's bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub second: u64,
    pub position: usize,
}

pub struct DeadlineWheel {
    origin: Instant,
    buckets: Vec<Vec<u64>>,
    /// The first second (since `origin`) whose bucket has not been expired yet.
    next_second: u64,
    entries: usize,
}

impl DeadlineWheel {
    pub fn new(origin: Instant) -> DeadlineWheel {
        DeadlineWheel { origin, buckets: (0..SLOTS).map(|_| Vec::new()).collect(), next_second: 0, entries: 0 }
    }

    /// The wheel second at which `at` has passed (rounded up, never in the past).
    pub fn second_of(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.origin);
        let second = elapsed.as_secs() + u64::from(elapsed.subsec_nanos() > 0);
        second.max(self.next_second)
    }

    /// Files `id` under the second of `at`; returns where, for the caller to remember.
    pub fn schedule(&mut self, id: u64, at: Instant) -> Entry {
        let second = self.second_of(at);
        let turn_end = self.next_second + SLOTS as u64 - 1;
        // Farther than one turn: park it in the last slot of this turn; it is re-filed then.
        let slot_second = second.min(turn_end);
        let bucket = &mut self.buckets[(slot_second % SLOTS as u64) as usize];
        bucket.push(id);
        self.entries += 1;
        Entry { second: slot_second, position: bucket.len() - 1 }
    }

    /// Removes the entry at `entry`. The last entry of its bucket takes its place: when that is
    /// another id, it is returned, so its owner can learn its new position (`entry.position`).
    pub fn cancel(&mut self, entry: Entry) -> Option<u64> {
        let bucket = &mut self.buckets[(entry.second % SLOTS as u64) as usize];
        if entry.second < self.next_second || entry.position >= bucket.len() {
            return None;
        }
        bucket.swap_remove(entry.position);
        self.entries -= 1;
        bucket.get(entry.position).copied()
    }

    /// Moves every entry whose second has come (by `now`) into `due`.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<u64>) {
        let now_second = now.saturating_duration_since(self.origin).as_secs();
        let mut steps = 0;
        while self.next_second <= now_second && steps < SLOTS {
            let bucket = &mut self.buckets[(self.next_second % SLOTS as u64) as usize];
            self.entries -= bucket.len();
            due.append(bucket);
            self.next_second += 1;
            steps += 1;
        }
        // After a long pause (a blocked loop) every bucket was emptied once; catch up.
        if self.next_second <= now_second {
            self.next_second = now_second + 1;
        }
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_come_due_in_their_second() {
        let start = Instant::now();
        let mut wheel = DeadlineWheel::new(start);
        wheel.schedule(1, start + Duration::from_millis(1500));
        wheel.schedule(2, start + Duration::from_secs(3));
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_millis(1900), &mut due);
        assert!(due.is_empty(), "1.5 s rounds up to second 2");
        wheel.expire(start + Duration::from_millis(2000), &mut due);
        assert_eq!(due, [1]);
        due.clear();
        wheel.expire(start + Duration::from_secs(3), &mut due);
        assert_eq!(due, [2]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn far_deadlines_wait_a_turn() {
        let start = Instant::now();
        let mut wheel = DeadlineWheel::new(start);
        let filed = wheel.schedule(7, start + Duration::from_secs(10 * SLOTS as u64));
        assert_eq!(filed.second, SLOTS as u64 - 1);
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_secs(SLOTS as u64 - 2), &mut due);
        assert!(due.is_empty());
        wheel.expire(start + Duration::from_secs(SLOTS as u64 - 1), &mut due);
        assert_eq!(due, [7], "handed back for the caller to re-file");
    }

    #[test]
    fn cancelled_entries_leave_nothing_and_report_the_moved_one() {
        let start = Instant::now();
        let mut wheel = DeadlineWheel::new(start);
        let at = start + Duration::from_secs(2);
        let first = wheel.schedule(1, at);
        let _second = wheel.schedule(2, at);
        let third = wheel.schedule(3, at);
        assert_eq!(wheel.cancel(first), Some(3), "3 moved into 1's place");
        assert_eq!(wheel.cancel(third), None, "the old position of 3 is gone");
        assert_eq!(wheel.cancel(Entry { second: first.second, position: first.position }), Some(2));
        assert_eq!(wheel.len(), 1);
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_secs(2), &mut due);
        assert_eq!(due, [2]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadlines_are_due_at_once_and_long_pauses_catch_up() {
        let start = Instant::now();
        let mut wheel = DeadlineWheel::new(start);
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_secs(5), &mut due);
        wheel.schedule(3, start + Duration::from_secs(1));
        wheel.expire(start + Duration::from_secs(6), &mut due);
        assert_eq!(due, [3]);
        due.clear();
        wheel.schedule(4, start + Duration::from_secs(8));
        wheel.expire(start + Duration::from_secs(5000), &mut due);
        assert_eq!(due, [4]);
        assert_eq!(wheel.len(), 0);
    }
}
