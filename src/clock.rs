//! The time the agent reads: the system clock, or a test's own.
//!
//! A leaf: it depends on nothing in the crate, so the agent, the prober, `record` and the
//! tests share it without import cycles. The correlation engine never reads it: time reaches
//! the engine as the `at` of each observation and the `now` of each tick.

use std::sync::Arc;

use jiff::Timestamp;

/// Where the agent reads the time: the system clock, or a test's own.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Clock(Arc::new(Timestamp::now))
    }

    /// A clock that reads `f` (tests drive time by hand).
    pub fn from_fn(f: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Clock(Arc::new(f))
    }

    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}
