//! Waiting for a condition with a deadline.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Polls `check` until it returns `Ok(true)` or `timeout` passes.
///
/// An `Err` from `check` counts as "not yet" and is kept, so that a timeout
/// reports the last reason the condition failed alongside `what`.
pub fn wait_for(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(20);
    let mut last_error = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if start.elapsed() >= timeout {
            match last_error {
                Some(error) => bail!(
                    "timed out after {:.1}s waiting for {what}; last error: {error:#}",
                    timeout.as_secs_f64()
                ),
                None => bail!(
                    "timed out after {:.1}s waiting for {what}",
                    timeout.as_secs_f64()
                ),
            }
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}
