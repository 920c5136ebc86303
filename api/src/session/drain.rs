//! Catching up on connect: the state of the drain a worker runs for this
//! connection, and what waits on it.
//!
//! On connect, a worker drains the backlog in pages. Live deliveries are held
//! until the drain ends, so they cannot overtake it; the drain's baselines
//! then say how far each chat is covered. The worker sends pages only as far
//! as the credit this side reports (frames the client settled), so a slow
//! client slows the drain instead of filling memory. `sync:done {count}` goes
//! out once the drained messages are all acknowledged. If the drain does not
//! start or stalls on the worker's side, it is asked for again.
//!
//! No I/O: the methods say what to tell the worker ([`ToWorker`]) and when to
//! ask for a drain again; the session sends it.

use std::time::Duration;

use courier_shared::job::{ChatBaseline, Delivery, DrainControl};
use tokio::time::Instant;
use uuid::Uuid;

/// Credit is reported to the draining worker at least every this many settled frames.
const CREDIT_STEP: u64 = 64;

/// A control message for the worker running a drain.
#[derive(Debug, PartialEq, Eq)]
pub struct ToWorker {
    pub worker_id: String,
    pub control: DrainControl,
}

/// What becomes of a live delivery.
#[derive(Debug, PartialEq)]
pub enum Live {
    /// No drain runs: through the ordering gate with it.
    PassOn(Delivery),
    /// Held until the drain ends.
    Held,
    /// Too many held: not kept in memory; the gate reads it from PostgreSQL later.
    NotKept { chat_id: Uuid, seq: i64 },
}

/// A drain that just ended.
#[derive(Debug, PartialEq)]
pub struct Ended {
    /// How far the drain covered each chat.
    pub baselines: Vec<ChatBaseline>,
    /// Live deliveries that waited for the drain, in arrival order.
    pub held: Vec<Delivery>,
}

enum DrainPhase {
    /// Connected; the worker has not started the drain yet.
    AwaitingBegin { asked_at: Instant },
    Running(RunningDrain),
    Complete,
}

struct RunningDrain {
    drain_id: Uuid,
    worker_id: String,
    baselines: Vec<ChatBaseline>,
    /// Drain items received, and those settled (acked, or skipped as already pushed).
    received: u64,
    settled: u64,
    credited: u64,
    /// Inbox position of the last drained message, to resume from.
    last_status_id: i64,
    last_progress: Instant,
}

pub struct CatchUp {
    /// How long the drain may take to start, or go without a page, before it is asked for again.
    wait: Duration,
    /// At most this many live deliveries are held in memory during the drain.
    max_held: usize,
    phase: DrainPhase,
    /// Live deliveries held while the drain runs.
    held: Vec<Delivery>,
    /// `sync:done {count}` waits for the drain's deliveries to be acknowledged.
    sync_done: Option<u64>,
    sync_done_sent: bool,
}

impl CatchUp {
    /// A new connection, whose presence event asked for a drain at `now`.
    pub fn new(wait: Duration, max_held: usize, now: Instant) -> Self {
        Self {
            wait,
            max_held,
            phase: DrainPhase::AwaitingBegin { asked_at: now },
            held: Vec::new(),
            sync_done: None,
            sync_done_sent: false,
        }
    }

    /// Whether the drain is over (live deliveries go straight to the gate).
    pub fn is_complete(&self) -> bool {
        matches!(self.phase, DrainPhase::Complete)
    }

    /// A live delivery: held while the drain has not ended.
    pub fn live(&mut self, delivery: Delivery) -> Live {
        if self.is_complete() {
            return Live::PassOn(delivery);
        }
        if self.held.len() < self.max_held {
            self.held.push(delivery);
            Live::Held
        } else {
            Live::NotKept { chat_id: delivery.chat_id, seq: delivery.seq }
        }
    }

    /// A worker started draining: a drain it replaces is cancelled.
    pub fn begin(
        &mut self,
        drain_id: Uuid,
        worker_id: String,
        baselines: Vec<ChatBaseline>,
        now: Instant,
    ) -> Option<ToWorker> {
        let cancel = match &self.phase {
            DrainPhase::Running(old) => {
                Some(ToWorker { worker_id: old.worker_id.clone(), control: DrainControl::Cancel { drain_id: old.drain_id } })
            }
            _ => None,
        };
        self.phase = DrainPhase::Running(RunningDrain {
            drain_id,
            worker_id,
            baselines,
            received: 0,
            settled: 0,
            credited: 0,
            last_status_id: 0,
            last_progress: now,
        });
        cancel
    }

    /// A page of `items` arrived; `last_status_id` is the inbox position of its
    /// last delivery. False for a page of a superseded drain (it was cancelled): ignore it.
    pub fn page(&mut self, drain_id: Uuid, items: u64, last_status_id: Option<i64>, now: Instant) -> bool {
        let DrainPhase::Running(drain) = &mut self.phase else { return false };
        if drain.drain_id != drain_id {
            return false;
        }
        drain.last_progress = now;
        drain.received += items;
        if let Some(last) = last_status_id {
            drain.last_status_id = drain.last_status_id.max(last);
        }
        true
    }

    /// Counts settled drain items; credit for the worker once enough have
    /// accumulated, or when the client has settled everything received.
    pub fn settled(&mut self, settled: u64) -> Option<ToWorker> {
        let DrainPhase::Running(drain) = &mut self.phase else { return None };
        drain.settled += settled;
        let caught_up = drain.settled >= drain.received;
        if drain.settled > drain.credited && (drain.settled - drain.credited >= CREDIT_STEP || caught_up) {
            drain.credited = drain.settled;
            let control = DrainControl::Credit { drain_id: drain.drain_id, acked: drain.settled };
            return Some(ToWorker { worker_id: drain.worker_id.clone(), control });
        }
        None
    }

    /// The drain `drain_id` sent its last page (`count` messages in all).
    /// `None` for a superseded drain.
    pub fn end(&mut self, drain_id: Uuid, count: u64) -> Option<Ended> {
        let DrainPhase::Running(drain) = &mut self.phase else { return None };
        if drain.drain_id != drain_id {
            return None;
        }
        let baselines = std::mem::take(&mut drain.baselines);
        self.phase = DrainPhase::Complete;
        if !self.sync_done_sent {
            self.sync_done = Some(count);
        }
        tracing::debug!(count, "drain complete");
        Some(Ended { baselines, held: std::mem::take(&mut self.held) })
    }

    /// The count for `sync:done`, once, when the drain has ended and none of
    /// its deliveries awaits an ack.
    pub fn sync_done_due(&mut self, drain_deliveries_unacked: u64) -> Option<u64> {
        if drain_deliveries_unacked != 0 {
            return None;
        }
        let count = self.sync_done.take()?;
        self.sync_done_sent = true;
        Some(count)
    }

    /// Pushes may have been lost (the broker connection or the node's lease
    /// was lost): returns the inbox position to drain again from.
    pub fn resync(&mut self, now: Instant) -> i64 {
        // Whatever the drain's state, pages may have been lost with the old queue.
        let resume_after = match &self.phase {
            DrainPhase::Running(drain) => drain.last_status_id,
            _ => 0,
        };
        if let DrainPhase::AwaitingBegin { asked_at } = &mut self.phase {
            *asked_at = now;
        }
        resume_after
    }

    /// When [`CatchUp::on_timer`] has something to check.
    pub fn next_wake(&self) -> Option<Instant> {
        match &self.phase {
            DrainPhase::AwaitingBegin { asked_at } => Some(*asked_at + self.wait),
            DrainPhase::Running(drain) => Some(drain.last_progress + self.wait),
            DrainPhase::Complete => None,
        }
    }

    /// `Some(resume_after)` when a drain must be asked for again: it never
    /// started, or the worker has gone quiet.
    pub fn on_timer(&mut self, now: Instant) -> Option<i64> {
        match &mut self.phase {
            DrainPhase::AwaitingBegin { asked_at } if *asked_at + self.wait <= now => {
                // The presence event or the drain's start got lost (broker down, worker died).
                *asked_at = now;
                Some(0)
            }
            DrainPhase::Running(drain) if drain.last_progress + self.wait <= now => {
                drain.last_progress = now;
                // Waiting on our client is not a stall; waiting on the worker is.
                if drain.settled >= drain.received {
                    let resume_after = drain.last_status_id;
                    tracing::info!(drain_id = %drain.drain_id, resume_after, "drain stalled; asking again");
                    return Some(resume_after);
                }
                None
            }
            _ => None,
        }
    }

    /// The connection is closing: a running drain is cancelled.
    pub fn finish(&self) -> Option<ToWorker> {
        match &self.phase {
            DrainPhase::Running(drain) => {
                Some(ToWorker { worker_id: drain.worker_id.clone(), control: DrainControl::Cancel { drain_id: drain.drain_id } })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn delivery(seq: i64) -> Delivery {
        super::super::fixtures::delivery(seq, seq - 1, 100 + seq)
    }

    fn credit(drain_id: Uuid, acked: u64) -> Option<ToWorker> {
        Some(ToWorker { worker_id: "w1".into(), control: DrainControl::Credit { drain_id, acked } })
    }

    fn running(now: Instant) -> (CatchUp, Uuid) {
        let mut catch_up = CatchUp::new(WAIT, 4, now);
        let drain_id = Uuid::from_u128(1);
        assert_eq!(catch_up.begin(drain_id, "w1".into(), Vec::new(), now), None);
        (catch_up, drain_id)
    }

    #[test]
    fn live_deliveries_are_held_until_the_drain_ends_then_passed_on_in_arrival_order() {
        let now = Instant::now();
        let (mut catch_up, drain_id) = running(now);
        assert_eq!(catch_up.live(delivery(5)), Live::Held);
        assert_eq!(catch_up.live(delivery(4)), Live::Held);

        let ended = catch_up.end(drain_id, 3).unwrap();
        assert_eq!(ended.held, vec![delivery(5), delivery(4)]);
        assert!(catch_up.is_complete());
        assert_eq!(catch_up.live(delivery(6)), Live::PassOn(delivery(6)));
    }

    #[test]
    fn the_end_of_a_drain_hands_back_the_baselines_it_began_with() {
        let now = Instant::now();
        let mut catch_up = CatchUp::new(WAIT, 4, now);
        let drain_id = Uuid::from_u128(1);
        let baselines = vec![ChatBaseline { chat_id: Uuid::from_u128(7), seq: 3 }];
        catch_up.begin(drain_id, "w1".into(), baselines.clone(), now);
        assert_eq!(catch_up.end(drain_id, 0), Some(Ended { baselines, held: Vec::new() }));
    }

    #[test]
    fn beyond_the_hold_limit_live_deliveries_are_left_in_postgresql() {
        let (mut catch_up, _) = running(Instant::now());
        for seq in 1..=4 {
            assert_eq!(catch_up.live(delivery(seq)), Live::Held);
        }
        assert_eq!(catch_up.live(delivery(5)), Live::NotKept { chat_id: Uuid::from_u128(7), seq: 5 });
    }

    #[test]
    fn pages_and_the_end_of_a_superseded_drain_are_ignored() {
        let now = Instant::now();
        let (mut catch_up, old) = running(now);
        let new = Uuid::from_u128(2);
        let cancel = catch_up.begin(new, "w2".into(), Vec::new(), now);
        assert_eq!(cancel, Some(ToWorker { worker_id: "w1".into(), control: DrainControl::Cancel { drain_id: old } }));
        assert!(!catch_up.page(old, 10, Some(50), now));
        assert_eq!(catch_up.end(old, 10), None);
        assert!(!catch_up.is_complete());
        assert!(catch_up.page(new, 1, Some(50), now));
        assert!(catch_up.end(new, 1).is_some());
    }

    #[test]
    fn credit_is_reported_every_64_settled_frames_and_when_caught_up() {
        let now = Instant::now();
        let (mut catch_up, drain_id) = running(now);
        catch_up.page(drain_id, 100, Some(100), now);
        assert_eq!(catch_up.settled(63), None);
        assert_eq!(catch_up.settled(1), credit(drain_id, 64));
        assert_eq!(catch_up.settled(35), None);
        assert_eq!(catch_up.settled(1), credit(drain_id, 100), "everything received is settled");
        assert_eq!(catch_up.settled(0), None, "nothing new to credit");
    }

    #[test]
    fn sync_done_waits_for_the_drain_end_and_its_last_ack_and_goes_out_once() {
        let now = Instant::now();
        let (mut catch_up, drain_id) = running(now);
        assert_eq!(catch_up.sync_done_due(0), None, "the drain has not ended");
        catch_up.end(drain_id, 2);
        assert_eq!(catch_up.sync_done_due(2), None, "two drained messages unacknowledged");
        assert_eq!(catch_up.sync_done_due(0), Some(2));
        assert_eq!(catch_up.sync_done_due(0), None);

        // A later drain (after a resync) does not announce it again.
        let again = Uuid::from_u128(3);
        catch_up.begin(again, "w1".into(), Vec::new(), now);
        catch_up.end(again, 5);
        assert_eq!(catch_up.sync_done_due(0), None);
    }

    #[test]
    fn a_drain_that_never_starts_is_asked_for_again_after_the_wait() {
        let now = Instant::now();
        let mut catch_up = CatchUp::new(WAIT, 4, now);
        assert_eq!(catch_up.next_wake(), Some(now + WAIT));
        assert_eq!(catch_up.on_timer(now + WAIT - Duration::from_millis(1)), None);
        assert_eq!(catch_up.on_timer(now + WAIT), Some(0));
        assert_eq!(catch_up.next_wake(), Some(now + WAIT + WAIT), "and again a wait later");
    }

    #[test]
    fn a_drain_stalled_on_the_worker_is_resumed_from_its_last_page() {
        let now = Instant::now();
        let (mut catch_up, drain_id) = running(now);
        catch_up.page(drain_id, 2, Some(42), now);
        catch_up.settled(2);
        assert_eq!(catch_up.on_timer(now + WAIT), Some(42));
    }

    #[test]
    fn a_drain_waiting_on_the_client_is_not_a_stall() {
        let now = Instant::now();
        let (mut catch_up, drain_id) = running(now);
        catch_up.page(drain_id, 2, Some(42), now);
        catch_up.settled(1);
        assert_eq!(catch_up.on_timer(now + WAIT), None);
        assert_eq!(catch_up.next_wake(), Some(now + WAIT + WAIT), "checked again later");
    }

    #[test]
    fn a_resync_resumes_a_running_drain_from_its_last_page() {
        let now = Instant::now();
        let (mut catch_up, drain_id) = running(now);
        catch_up.page(drain_id, 1, Some(42), now);
        assert_eq!(catch_up.resync(now), 42);

        let mut waiting = CatchUp::new(WAIT, 4, now);
        let later = now + Duration::from_secs(3);
        assert_eq!(waiting.resync(later), 0);
        assert_eq!(waiting.next_wake(), Some(later + WAIT), "the wait starts over");
    }

    #[test]
    fn closing_cancels_only_a_running_drain() {
        let now = Instant::now();
        assert_eq!(CatchUp::new(WAIT, 4, now).finish(), None);
        let (mut catch_up, drain_id) = running(now);
        assert_eq!(catch_up.finish(), Some(ToWorker { worker_id: "w1".into(), control: DrainControl::Cancel { drain_id } }));
        catch_up.end(drain_id, 0);
        assert_eq!(catch_up.finish(), None);
    }
}
