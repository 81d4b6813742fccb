//! A deadline queue ordered by time: when each open promotion and each unclaimed rollout next
//! needs the engine without a new observation.
//!
//! Like kube-runtime's scheduler: entries in a time-ordered set plus a map to each entry's
//! time; scheduling again replaces the entry. `tick` pops what is due instead of scanning every
//! open promotion.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::Map;
use crate::model::ObjectRef;

/// What a timer wakes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Wake {
    /// An open promotion: a stage deadline, its own deadline, or the end of its settle period.
    Promotion(String),
    /// A rollout no promotion has claimed: its deadline, or the end of its settle period.
    Unclaimed(ObjectRef),
    /// A Deployment's rollout halfway through its progress deadline: if still under way, its
    /// new ReplicaSet's Pods are listed (`stage::causes`).
    Pods(ObjectRef),
}

#[derive(Default)]
pub(super) struct Timers {
    queue: BTreeSet<(Timestamp, Wake)>,
    at: Map<Wake, Timestamp>,
}

impl Timers {
    /// Sets (or moves) the timer of `what` to `when`.
    pub fn schedule(&mut self, what: Wake, when: Timestamp) {
        match self.at.get_mut(&what) {
            // Most observations leave a promotion's next deadline where it was.
            Some(t) if *t == when => {}
            Some(t) => {
                // The entry moves under its new time: its key is not cloned.
                let mut entry = (std::mem::replace(t, when), what);
                self.queue.remove(&entry);
                entry.0 = when;
                self.queue.insert(entry);
            }
            None => {
                self.at.insert(what.clone(), when);
                self.queue.insert((when, what));
            }
        }
    }

    pub fn cancel(&mut self, what: &Wake) {
        if let Some(t) = self.at.remove(what) {
            self.queue.remove(&(t, what.clone()));
        }
    }

    /// Removes and returns every timer due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Timestamp) -> Vec<Wake> {
        let mut due = Vec::new();
        while let Some((t, _)) = self.queue.first() {
            if *t > now {
                break;
            }
            let Some((_, what)) = self.queue.pop_first() else {
                break;
            };
            self.at.remove(&what);
            due.push(what);
        }
        due
    }

    /// The earliest timer.
    pub fn next(&self) -> Option<Timestamp> {
        self.queue.first().map(|(t, _)| *t)
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("ts")
    }

    #[test]
    fn earliest_first_and_rescheduling_replaces() {
        let mut timers = Timers::default();
        timers.schedule(Wake::Promotion("a".into()), t(30));
        timers.schedule(Wake::Promotion("b".into()), t(10));
        let dep = ObjectRef::new(Kind::Deployment, "ns", "web");
        timers.schedule(Wake::Unclaimed(dep.clone()), t(20));
        timers.schedule(Wake::Promotion("a".into()), t(5));
        assert_eq!(timers.next(), Some(t(5)));
        assert_eq!(
            timers.pop_due(t(20)),
            vec![
                Wake::Promotion("a".into()),
                Wake::Promotion("b".into()),
                Wake::Unclaimed(dep)
            ]
        );
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn cancelled_timers_never_fire() {
        let mut timers = Timers::default();
        timers.schedule(Wake::Promotion("a".into()), t(1));
        timers.cancel(&Wake::Promotion("a".into()));
        assert!(timers.pop_due(t(100)).is_empty());
    }
}
