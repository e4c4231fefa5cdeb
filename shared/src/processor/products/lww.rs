//! Per-field last-writer-wins, the merge rule of the products table: a field takes an event's value only if the event is newer than
//! the one that last set that field, by `occurred_at`, ties broken by `event_id` (byte order).
//! Any arrival order of the same events converges to the same state.

use time::OffsetDateTime;

/// A field's value and the version (time, event id) that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field<T> {
    /// The current value, `None` if never set.
    pub value: Option<T>,
    /// The version that set it, `None` if never set.
    pub version: Option<(OffsetDateTime, String)>,
}

impl<T> Default for Field<T> {
    fn default() -> Self {
        Self {
            value: None,
            version: None,
        }
    }
}

impl<T: Clone> Field<T> {
    /// Offers `incoming` at `version`; returns true if it won and the field changed hands.
    pub fn offer(&mut self, incoming: Option<T>, version: (OffsetDateTime, &str)) -> bool {
        let Some(value) = incoming else {
            return false;
        };
        let newer = match &self.version {
            None => true,
            Some((at, id)) => version > (*at, id.as_str()),
        };
        if newer {
            self.value = Some(value);
            self.version = Some((version.0, version.1.to_owned()));
        }
        newer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn newer_wins_older_loses_ties_go_to_the_larger_event_id() {
        let mut f = Field::default();
        assert!(f.offer(Some(1), (datetime!(2026-01-01 00:00:02 UTC), "b")));
        assert!(!f.offer(Some(2), (datetime!(2026-01-01 00:00:01 UTC), "z")));
        assert!(!f.offer(Some(3), (datetime!(2026-01-01 00:00:02 UTC), "a")));
        assert!(f.offer(Some(4), (datetime!(2026-01-01 00:00:02 UTC), "c")));
        assert_eq!(f.value, Some(4));
    }

    #[test]
    fn an_absent_value_never_wins() {
        let mut f = Field::default();
        assert!(f.offer(Some(1), (datetime!(2026-01-01 00:00:00 UTC), "a")));
        assert!(!f.offer(None::<i32>, (datetime!(2027-01-01 00:00:00 UTC), "b")));
        assert_eq!(f.value, Some(1));
    }

    #[test]
    fn every_arrival_order_converges() {
        let events = [
            (Some(10), datetime!(2026-01-01 00:00:03 UTC), "e1"),
            (Some(20), datetime!(2026-01-01 00:00:01 UTC), "e2"),
            (None, datetime!(2026-01-01 00:00:09 UTC), "e3"),
            (Some(30), datetime!(2026-01-01 00:00:03 UTC), "e4"),
        ];
        let orders = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]];
        for order in orders {
            let mut f = Field::default();
            for i in order {
                let (v, at, id) = events[i];
                f.offer(v, (at, id));
            }
            assert_eq!(f.value, Some(30), "{order:?}");
        }
    }
}
