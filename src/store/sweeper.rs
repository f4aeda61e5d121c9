//! The background sweep: registrations nobody pushed to for `store.expireAfter` are removed
//! (Conversations never unregisters by itself, so without it the store only grows).
//!
//! A wrong clock must not wipe the store: a wall clock stepped ahead by more than
//! `expireAfter` (a bad NTP server, a VM restored from a snapshot, a failing RTC) makes every
//! registration look unused. So the sweep's clock never runs ahead of the time measured since
//! the previous sweep ([`SweepClock`], for a step while fpush runs), and a sweep that would
//! remove most of a store is skipped for a day, counted across restarts ([`too_many`],
//! [`GRACE`], for a clock already wrong at start-up).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{RegistrationStore, StoreError, TOUCH_INTERVAL};

/// How far the wall clock may run ahead of the time measured between two sweeps before it is
/// taken for a step: NTP slews a clock by far less than this in an hour.
const STEP: Duration = Duration::from_secs(60);
/// Stores holding fewer registrations than this are swept whatever share goes.
pub const GUARDED_FROM: u64 = 100;
/// How long, measured on the monotonic clock, the sweeps that would remove [`too_many`] are
/// skipped in a row before one runs anyway: long enough for NTP to set a clock that was wrong at
/// start-up right, and for every registration pushed to meanwhile to record its use (at most
/// once per [`TOUCH_INTERVAL`]). Skipping for good would let a store whose registrations are
/// mostly unused for real (an app discontinued, users gone) grow until its caps refuse new
/// registrations.
pub const GRACE: Duration = TOUCH_INTERVAL;

/// Sweeps `store` every `every` (first right away) until `stop` is cancelled, removing what no
/// push used for `expire_after`. A failed sweep is logged and tried again at the next turn.
pub fn spawn_sweeper(
    store: Arc<dyn RegistrationStore>,
    every: Duration,
    expire_after: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut clock, mut guard) = (SweepClock::default(), Guard::default());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // A push records its use at most once per `TOUCH_INTERVAL`, so the recorded last use
            // may be that much older than the real one: only older still is unused for
            // `expire_after`.
            let unused = expire_after.saturating_add(TOUCH_INTERVAL);
            // Tokio's clock: the same as the monotonic clock, except when tests pause it.
            let at = tokio::time::Instant::now().into_std();
            let now = clock.now(SystemTime::now(), at);
            let Some(before) = now.checked_sub(unused) else {
                continue;
            };
            match guard.sweep(&*store, before, at).await {
                Ok(0) => {}
                Ok(removed) => {
                    log::info!("registration store: removed {removed} unused registrations")
                }
                // The store wrapper the sweeper is given warns of every failure already.
                Err(error) => log::debug!("registration store sweep failed: {error}"),
            }
        }
    })
}

/// The time a sweep counts from: the wall clock, unless it ran ahead of the previous sweep's
/// time by more than the monotonic clock measured since (and [`STEP`]); then the measured time.
/// A clock stepped ahead while fpush runs thus ages no registration, and one stepped back is
/// followed (a sweep then removes less). What the sweep's clock lags behind after a step (or a
/// suspended host, which the monotonic clock does not count) is made up at the next start.
#[derive(Debug, Default)]
pub struct SweepClock {
    /// The previous sweep's time, and when it was taken.
    previous: Option<(SystemTime, Instant)>,
    /// The wall clock is ahead of the measured time (reported once).
    ahead: bool,
}

impl SweepClock {
    /// The sweep's time, given the wall clock and the monotonic clock now.
    pub fn now(&mut self, wall: SystemTime, at: Instant) -> SystemTime {
        let measured = self
            .previous
            .and_then(|(then, when)| then.checked_add(at.saturating_duration_since(when)));
        let stepped = |measured: SystemTime| measured.checked_add(STEP).is_some_and(|m| wall > m);
        let now = match measured {
            Some(measured) if stepped(measured) => {
                if !self.ahead {
                    let ahead = wall.duration_since(measured).unwrap_or_default().as_secs();
                    log::warn!(
                        "registration store: the system clock ran {ahead} s ahead of the time \
                         measured since the last sweep (a clock step, or a suspended host); \
                         expiry counts the measured time until fpush restarts"
                    );
                }
                self.ahead = true;
                measured
            }
            _ => {
                self.ahead = false;
                wall
            }
        };
        self.previous = Some((now, at));
        now
    }
}

/// Whether removing `unused` of the store's `total` registrations at once is more than a sweep
/// may do at once: more than half of a store of [`GUARDED_FROM`] or more. A store whose users
/// mostly left within one `expireAfter` is rare (it waits [`GRACE`]); a clock far ahead, or a
/// service down for longer than `expireAfter` (whose registrations still live on the devices),
/// looks exactly like it.
pub fn too_many(unused: u64, total: u64) -> bool {
    total >= GUARDED_FROM && unused.saturating_mul(2) > total
}

/// Skips the sweeps that would remove [`too_many`] until such sweeps were skipped for [`GRACE`]
/// in a row, with one warning when such a run begins (or is taken up again after a restart),
/// then sweeps anyway with another.
///
/// The skipped time is measured on the monotonic clock, so a wrong wall clock does not shorten
/// it, and recorded in the store after each skipped sweep: a restart takes the run up where it
/// stood (the time fpush was stopped does not count), so a service restarted more often than
/// [`GRACE`] still sweeps a store that is mostly unused for real in the end.
#[derive(Debug, Default)]
struct Guard {
    /// The current run of skipped sweeps, once this process has taken part in it.
    run: Option<Run>,
    /// The store is known to hold no run: it was cleared since this process started.
    cleared: bool,
}

/// A run of skipped sweeps.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// How long sweeps have been skipped, up to [`Run::last_turn`].
    skipped: Duration,
    last_turn: Instant,
}

/// What one turn of the sweeper does.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// Nothing is unused.
    Nothing,
    Sweep,
    /// The sweep would remove [`too_many`]; `warn` for this process's first such turn in a row.
    Skip {
        warn: bool,
    },
    /// The sweep would remove [`too_many`], but such sweeps were skipped for [`GRACE`].
    SweepAnyway,
}

impl Guard {
    /// Removes the registrations last used before `before`, unless that is [`too_many`] and
    /// such sweeps have been skipped for less than [`GRACE`] at `at`.
    async fn sweep(
        &mut self,
        store: &dyn RegistrationStore,
        before: SystemTime,
        at: Instant,
    ) -> Result<u64, StoreError> {
        let unused = store.count_unused(before).await?;
        let total: u64 = match unused {
            0 => 0,
            _ => store.counts().await?.iter().map(|(_, count)| count).sum(),
        };
        let recorded = match self.run.is_none() && too_many(unused, total) {
            true => store.sweeps_skipped_for().await?,
            false => Duration::ZERO,
        };
        match self.turn(unused, total, at, recorded) {
            Turn::Nothing => self.clear(store).await.map(|()| 0),
            Turn::Sweep => {
                self.clear(store).await?;
                store.sweep(before).await
            }
            Turn::Skip { warn } => {
                let skipped = self.run.map_or(Duration::ZERO, |run| run.skipped);
                if warn {
                    let hours = skipped.as_secs() / 3600;
                    log::warn!(
                        "registration store: skipped a sweep that would remove {unused} of \
                         {total} registrations as unused for store.expireAfter (is the clock \
                         right?); such sweeps are skipped for a day ({hours} h so far), then run"
                    );
                }
                self.cleared = false;
                store.record_sweeps_skipped(Some(skipped)).await.map(|()| 0)
            }
            Turn::SweepAnyway => {
                log::warn!(
                    "registration store: removing {unused} of {total} registrations as unused \
                     for store.expireAfter: sweeps that would remove more than half of the \
                     store were skipped for a day"
                );
                store.sweep(before).await
            }
        }
    }

    /// Ends the run the store may hold (once per process while none is on).
    async fn clear(&mut self, store: &dyn RegistrationStore) -> Result<(), StoreError> {
        if !self.cleared {
            store.record_sweeps_skipped(None).await?;
            self.cleared = true;
        }
        Ok(())
    }

    /// The turn for `unused` of `total` registrations at `at`, `recorded` being the skipped time
    /// the store holds (read when this process has no run on). A turn that finds fewer unused
    /// ends the run as a sweep does (the clock was set right): if sweeps are skipped again
    /// later, that is warned about anew, and the day starts anew.
    fn turn(&mut self, unused: u64, total: u64, at: Instant, recorded: Duration) -> Turn {
        if !too_many(unused, total) {
            self.run = None;
            return match unused {
                0 => Turn::Nothing,
                _ => Turn::Sweep,
            };
        }
        let (skipped, warn) = match self.run {
            Some(run) => (
                run.skipped
                    .saturating_add(at.saturating_duration_since(run.last_turn)),
                false,
            ),
            // A skipped sweep records less than `GRACE`; more is another writer's value,
            // counted as none, so that it cannot wipe the store at once.
            None => (
                Some(recorded).filter(|r| *r < GRACE).unwrap_or_default(),
                true,
            ),
        };
        self.run = Some(Run {
            skipped,
            last_turn: at,
        });
        match skipped < GRACE {
            true => Turn::Skip { warn },
            // Until a turn finds fewer unused (the sweep went through), so a failed sweep is
            // not followed by another day of skipping.
            false => Turn::SweepAnyway,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    #[test]
    fn the_sweeps_clock_keeps_to_the_measured_time_after_a_step_ahead() {
        let (wall, at) = (SystemTime::now(), Instant::now());
        let mut clock = SweepClock::default();
        assert_eq!(clock.now(wall, at), wall);
        assert_eq!(clock.now(wall + HOUR, at + HOUR), wall + HOUR);
        // An hour later the wall clock says a year and two hours later.
        let stepped = wall + 2 * HOUR + YEAR;
        assert_eq!(clock.now(stepped, at + 2 * HOUR), wall + 2 * HOUR);
        assert_eq!(clock.now(stepped + HOUR, at + 3 * HOUR), wall + 3 * HOUR);
        // Stepped back in line: followed again, and so is a slew within a minute.
        assert_eq!(clock.now(wall + 4 * HOUR, at + 4 * HOUR), wall + 4 * HOUR);
        let slewed = wall + 5 * HOUR + Duration::from_secs(30);
        assert_eq!(clock.now(slewed, at + 5 * HOUR), slewed);
    }

    #[test]
    fn the_sweeps_clock_follows_a_step_back() {
        let (wall, at) = (SystemTime::now(), Instant::now());
        let mut clock = SweepClock::default();
        clock.now(wall, at);
        let back = wall - YEAR;
        assert_eq!(clock.now(back, at + HOUR), back);
        assert_eq!(clock.now(back + HOUR, at + 2 * HOUR), back + HOUR);
    }

    #[test]
    fn each_run_of_skipped_sweeps_is_warned_about_once() {
        let (mut guard, at) = (Guard::default(), Instant::now());
        assert_eq!(
            guard.turn(150, 150, at, Duration::ZERO),
            Turn::Skip { warn: true }
        );
        assert_eq!(
            guard.turn(150, 150, at + HOUR, Duration::ZERO),
            Turn::Skip { warn: false }
        );
        // The clock set right: nothing is unused for a while, then it goes wrong again.
        assert_eq!(
            guard.turn(0, 0, at + 2 * HOUR, Duration::ZERO),
            Turn::Nothing
        );
        assert_eq!(
            guard.turn(140, 150, at + 3 * HOUR, Duration::ZERO),
            Turn::Skip { warn: true }
        );
        assert_eq!(
            guard.turn(10, 150, at + 4 * HOUR, Duration::ZERO),
            Turn::Sweep
        );
        assert_eq!(
            guard.turn(140, 150, at + 5 * HOUR, Duration::ZERO),
            Turn::Skip { warn: true }
        );
    }

    #[test]
    fn a_run_of_skipped_sweeps_ends_with_a_sweep_after_a_day() {
        let (mut guard, at) = (Guard::default(), Instant::now());
        assert_eq!(
            guard.turn(150, 150, at, Duration::ZERO),
            Turn::Skip { warn: true }
        );
        assert_eq!(
            guard.turn(150, 150, at + 23 * HOUR, Duration::ZERO),
            Turn::Skip { warn: false }
        );
        assert_eq!(
            guard.turn(150, 150, at + GRACE, Duration::ZERO),
            Turn::SweepAnyway
        );
        // That sweep failed: the next turn sweeps too.
        assert_eq!(
            guard.turn(150, 150, at + GRACE + HOUR, Duration::ZERO),
            Turn::SweepAnyway
        );
        assert_eq!(
            guard.turn(0, 0, at + GRACE + 2 * HOUR, Duration::ZERO),
            Turn::Nothing
        );
        // Too many again later (another batch gone unused): a new run, a new day.
        let second = at + GRACE + 3 * HOUR;
        assert_eq!(
            guard.turn(120, 200, second, Duration::ZERO),
            Turn::Skip { warn: true }
        );
        let skipped = guard.turn(120, 200, second + GRACE - HOUR, Duration::ZERO);
        assert_eq!(skipped, Turn::Skip { warn: false });
        // A run broken by a sweep that removes less starts its day again.
        assert_eq!(
            guard.turn(10, 200, second + GRACE, Duration::ZERO),
            Turn::Sweep
        );
        let third = second + GRACE + HOUR;
        assert_eq!(
            guard.turn(120, 200, third, Duration::ZERO),
            Turn::Skip { warn: true }
        );
        let skipped = guard.turn(120, 200, third + GRACE - HOUR, Duration::ZERO);
        assert_eq!(skipped, Turn::Skip { warn: false });
        assert_eq!(
            guard.turn(120, 200, third + GRACE, Duration::ZERO),
            Turn::SweepAnyway
        );
    }

    #[test]
    fn a_run_of_skipped_sweeps_is_taken_up_after_a_restart_where_the_store_recorded_it() {
        let (mut before_restart, at) = (Guard::default(), Instant::now());
        let turn = before_restart.turn(150, 150, at, Duration::ZERO);
        assert_eq!(turn, Turn::Skip { warn: true });
        let turn = before_restart.turn(150, 150, at + 11 * HOUR, Duration::ZERO);
        assert_eq!(turn, Turn::Skip { warn: false });
        let recorded = before_restart.run.map(|run| run.skipped);
        assert_eq!(recorded, Some(11 * HOUR));
        // Restarted a week later: the week does not count, the eleven hours do.
        let (mut after_restart, later) = (Guard::default(), at + 7 * 24 * HOUR);
        let turn = after_restart.turn(150, 150, later, 11 * HOUR);
        assert_eq!(turn, Turn::Skip { warn: true });
        let turn = after_restart.turn(150, 150, later + 12 * HOUR, Duration::ZERO);
        assert_eq!(turn, Turn::Skip { warn: false });
        let turn = after_restart.turn(150, 150, later + 13 * HOUR, Duration::ZERO);
        assert_eq!(turn, Turn::SweepAnyway);
        // A record no skipped sweep leaves (another writer's value) starts a run afresh.
        let mut damaged = Guard::default();
        let turn = damaged.turn(150, 150, at, Duration::MAX);
        assert_eq!(turn, Turn::Skip { warn: true });
        let turn = damaged.turn(150, 150, at + HOUR, Duration::ZERO);
        assert_eq!(turn, Turn::Skip { warn: false });
    }

    #[test]
    fn a_sweep_may_remove_up_to_half_of_a_store_and_all_of_a_small_one() {
        assert!(!too_many(50, 100));
        assert!(too_many(51, 100));
        assert!(too_many(1_000_000, 1_000_000));
        assert!(!too_many(99, 99));
        assert!(!too_many(0, 0));
    }
}
