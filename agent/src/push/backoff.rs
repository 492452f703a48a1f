//! Delays between connection attempts to one hub.

use std::time::Duration;

/// Exponential backoff with equal jitter: each delay is between half and all of the current
/// step, so hundreds of agents that lost the same hub do not come back in one burst, and no
/// delay is ever near zero (which full jitter allows).
#[derive(Debug)]
pub(super) struct Backoff {
    step: Duration,
    start: Duration,
    cap: Duration,
}

impl Backoff {
    pub(super) fn new(start: Duration, cap: Duration) -> Self {
        Self {
            step: start,
            start,
            cap,
        }
    }

    pub(super) fn reset(&mut self) {
        self.step = self.start;
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.cap);
        jitter(step, fastrand::f64())
    }

    /// Jumps to the longest delay, and stays there until a connection is stable.
    pub(super) fn longest_delay(&mut self) -> Duration {
        self.step = self.cap;
        self.next_delay()
    }
}

/// Equal jitter: `step/2 + r × step/2`, `r` in [0, 1).
pub(super) fn jitter(step: Duration, r: f64) -> Duration {
    let half = step / 2;
    half + half.mul_f64(r.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_equal_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut steps = Vec::new();
        for _ in 0..10 {
            let d = b.next_delay();
            steps.push(d);
        }
        assert!(steps[0] >= Duration::from_millis(250) && steps[0] <= Duration::from_millis(500));
        assert!(steps[1] >= Duration::from_millis(500) && steps[1] <= Duration::from_secs(1));
        assert!(steps[9] >= Duration::from_secs(15) && steps[9] <= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
        assert!(b.longest_delay() >= Duration::from_secs(15));
        assert_eq!(jitter(Duration::from_secs(2), 0.0), Duration::from_secs(1));
        assert_eq!(jitter(Duration::from_secs(2), 1.0), Duration::from_secs(2));
    }
}
