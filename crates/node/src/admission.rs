//! Urgent first: how many guests run at once, and who runs next.
//!
//! Every admitted call (past the per-function and per-node limits of [`crate::Node::admit`])
//! needs a *run slot* to start. A node has as many shared run slots as it can run guests
//! without time-slicing them into long tails (by default one per core), and as many again for
//! urgent calls only. A call that finds no free slot waits in the queue of its class
//! (`urgent`, `regular`, `batch`); a freed slot goes to the oldest urgent call, else the oldest
//! regular one, else the oldest batch one. A call is shed (429 with `Retry-After`) when it could
//! not start within its class's queue deadline: at once, when the queue ahead of it would take
//! longer than the deadline to drain at the node's recent service rate (or its queue is full),
//! or when the deadline passes while it waits. Urgent calls queue ahead of all others and have
//! the longest deadline, so regular and batch work is shed before any urgent call is.
//!
//! Guests run on [`GuestThreads`](crate::guests::GuestThreads), apart from the threads that serve HTTP: urgent slots on
//! threads of normal OS priority, shared slots on threads of low priority (nice 10). So the
//! node's I/O (parsing, answering 429s, queueing the next urgent call) never waits behind a
//! guest, and an urgent guest running beside regular ones gets the cores first: the urgent
//! slots do not time-slice it with regular work.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A function's class: who runs first when the node is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Runs before everything else; shed last.
    Urgent,
    /// The default.
    #[default]
    Regular,
    /// Runs when nothing else waits; shed first.
    Batch,
}

impl Priority {
    /// Every class, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Regular, Priority::Batch];

    /// `urgent`, `regular` or `batch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Regular => "regular",
            Priority::Batch => "batch",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("priority {s:?}: expected urgent, regular or batch"))
    }
}

/// How a node schedules guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Guests of any class running at once (and as many again for urgent calls only).
    ///
    /// Default: the number of cores. More would time-slice the cores: every running guest
    /// slows down, and all of them reach the tail together.
    pub run_slots: usize,
    /// How long a call of each class (urgent, regular, batch) may wait for a run slot.
    ///
    /// Defaults 1 s, 5 ms and 50 ms: an urgent call is worth waiting for; a regular call that
    /// cannot start within 5 ms is better retried elsewhere (another node of the cluster,
    /// which forwarding tries at once) than served late, and the bound keeps an admitted
    /// call's latency within a few times its own; batch work waits longer but only behind
    /// everyone else.
    pub deadlines: [Duration; 3],
    /// Calls of each class that may wait at once; more are shed on arrival.
    ///
    /// Defaults 1024, 256, 256: far more than a deadline lets drain on a small node, so the
    /// deadline is what bounds the queue; this only bounds memory.
    pub max_queued: [usize; 3],
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            run_slots: std::thread::available_parallelism().map_or(2, |n| n.get()),
            deadlines: [
                Duration::from_secs(1),
                Duration::from_millis(5),
                Duration::from_millis(50),
            ],
            max_queued: [1024, 256, 256],
        }
    }
}

impl AdmissionConfig {
    /// The queue deadline of `class`.
    pub fn deadline(&self, class: Priority) -> Duration {
        self.deadlines[class.index()]
    }

    /// Sets a deadline from `CLASS=DURATION`, as `--queue-deadline` takes it.
    pub fn set_deadline(&mut self, spec: &str) -> Result<(), String> {
        let (class, duration) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected CLASS=DURATION, such as regular=20ms"))?;
        let class: Priority = class.parse()?;
        self.deadlines[class.index()] = crate::parse::parse_duration(duration)?;
        Ok(())
    }
}

/// Why a call was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Its class's queue was full.
    QueueFull,
    /// The queue ahead of it would not drain within its deadline.
    WouldMiss,
    /// Its deadline passed while it waited.
    Deadline,
}

impl Shed {
    /// `queue_full`, `would_miss_deadline` or `deadline`: the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue_full",
            Shed::WouldMiss => "would_miss_deadline",
            Shed::Deadline => "deadline",
        }
    }
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<Pool>,
}

/// The two sets of run slots. Urgent calls have their own, on threads the OS runs ahead of
/// the others', and may also take a free shared slot; regular and batch calls share the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Slots for urgent calls only.
    Urgent = 0,
    /// Slots for any call.
    Shared = 1,
}

#[derive(Default)]
struct State {
    running: [usize; 2],
    queues: [VecDeque<Waiter>; 3],
    next_id: u64,
}

/// The run slots of a node and the queues in front of them.
pub struct Scheduler {
    config: AdmissionConfig,
    state: Mutex<State>,
    /// Recent time a guest held a slot, in ns (moving average): what a queue costs to drain.
    service_ns: AtomicU64,
}

/// A run slot; dropping it gives it to the next waiting call.
pub struct RunSlot {
    scheduler: Arc<Scheduler>,
    pool: Pool,
    since: Instant,
    /// How long the call waited for it.
    pub waited: Duration,
}

impl RunSlot {
    /// The pool the slot belongs to, which decides the threads its guest runs on.
    pub fn pool(&self) -> Pool {
        self.pool
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        self.scheduler.note_service(self.since.elapsed());
        self.scheduler.release(self.pool);
    }
}

/// A call waiting in a queue. Dropped before it got its slot (the client went away, or the
/// deadline passed), it leaves the queue, or passes on a slot granted in the meantime.
struct Pending<'a> {
    scheduler: &'a Scheduler,
    class: Priority,
    id: u64,
    granted: oneshot::Receiver<Pool>,
    armed: bool,
}

impl Pending<'_> {
    /// Gives up waiting: leaves the queue, or returns the slot granted in the meantime.
    fn give_up(&mut self) -> Option<Pool> {
        self.armed = false;
        let mut state = self.scheduler.lock();
        let queue = &mut state.queues[self.class.index()];
        if let Some(at) = queue.iter().position(|w| w.id == self.id) {
            queue.remove(at);
            return None;
        }
        // Not in the queue: a release took it out and sent it a slot.
        self.granted.try_recv().ok()
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Some(pool) = self.give_up()
        {
            self.scheduler.release(pool);
        }
    }
}

impl Scheduler {
    /// A scheduler with `config`.
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::default(),
            service_ns: AtomicU64::new(0),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls of each class waiting now.
    pub fn queued(&self) -> [usize; 3] {
        let state = self.lock();
        [0, 1, 2].map(|i| state.queues[i].len())
    }

    /// Guests running now.
    pub fn running(&self) -> usize {
        self.lock().running.iter().sum()
    }

    fn note_service(&self, held: Duration) {
        // A moving average over about the last eight calls.
        let sample = held.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.service_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.service_ns.store(new, Ordering::Relaxed);
    }

    /// A free slot for `class`, taken; urgent calls try their own pool first.
    fn take_free(&self, state: &mut State, class: Priority) -> Option<Pool> {
        let slots = self.config.run_slots;
        let pools: &[Pool] = match class {
            Priority::Urgent => &[Pool::Urgent, Pool::Shared],
            _ => &[Pool::Shared],
        };
        let pool = pools
            .iter()
            .copied()
            .find(|p| state.running[*p as usize] < slots)?;
        state.running[pool as usize] += 1;
        Some(pool)
    }

    /// A run slot for a call of `class`, at once or after waiting in its queue; or why not.
    pub async fn acquire(self: &Arc<Self>, class: Priority) -> Result<RunSlot, Shed> {
        let arrived = Instant::now();
        let deadline = self.config.deadline(class);
        let (id, granted) = {
            let mut state = self.lock();
            let ahead: usize = state.queues[..=class.index()]
                .iter()
                .map(VecDeque::len)
                .sum();
            if ahead == 0
                && let Some(pool) = self.take_free(&mut state, class)
            {
                return Ok(self.slot(pool, arrived));
            }
            if state.queues[class.index()].len() >= self.config.max_queued[class.index()] {
                return Err(Shed::QueueFull);
            }
            // The slots drain the queue ahead (and then this call) at about one call per
            // service time per slot.
            let service = Duration::from_nanos(self.service_ns.load(Ordering::Relaxed));
            let expected = service.mul_f64((ahead + 1) as f64 / self.config.run_slots as f64);
            if expected > deadline {
                return Err(Shed::WouldMiss);
            }
            let id = state.next_id;
            state.next_id += 1;
            let (grant, granted) = oneshot::channel();
            state.queues[class.index()].push_back(Waiter { id, grant });
            (id, granted)
        };
        let mut pending = Pending {
            scheduler: self,
            class,
            id,
            granted,
            armed: true,
        };
        let waited = tokio::time::timeout(deadline, &mut pending.granted).await;
        match waited {
            Ok(Ok(pool)) => {
                pending.armed = false;
                Ok(self.slot(pool, arrived))
            }
            // The sender is only dropped with the scheduler; treat it as a miss.
            Ok(Err(_)) => {
                pending.armed = false;
                Err(Shed::Deadline)
            }
            Err(_) => match pending.give_up() {
                // Granted just as the deadline passed: take it.
                Some(pool) => Ok(self.slot(pool, arrived)),
                None => Err(Shed::Deadline),
            },
        }
    }

    fn slot(self: &Arc<Self>, pool: Pool, arrived: Instant) -> RunSlot {
        RunSlot {
            scheduler: self.clone(),
            pool,
            since: Instant::now(),
            waited: arrived.elapsed(),
        }
    }

    /// Gives a freed slot of `pool` to the oldest waiting call that may use it, most urgent
    /// class first, or frees it.
    fn release(&self, pool: Pool) {
        let mut state = self.lock();
        let classes: &[usize] = match pool {
            Pool::Urgent => &[0],
            Pool::Shared => &[0, 1, 2],
        };
        for &queue in classes {
            while let Some(waiter) = state.queues[queue].pop_front() {
                if waiter.grant.send(pool).is_ok() {
                    return;
                }
            }
        }
        state.running[pool as usize] = state.running[pool as usize].saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduler(slots: usize, deadlines_ms: [u64; 3]) -> Arc<Scheduler> {
        Scheduler::new(AdmissionConfig {
            run_slots: slots,
            deadlines: deadlines_ms.map(Duration::from_millis),
            max_queued: [8, 8, 8],
        })
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_urgent_then_regular_then_batch() {
        let s = scheduler(1, [5000, 5000, 5000]);
        // Both pools full: the urgent slot and the shared one.
        let _urgent = s.acquire(Priority::Urgent).await.unwrap();
        let running = s.acquire(Priority::Regular).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for class in [Priority::Batch, Priority::Regular, Priority::Urgent] {
            let (s, order) = (s.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let slot = s.acquire(class).await.unwrap();
                order.lock().unwrap().push(class);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
            // Let each one queue before the next arrives.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.queued(), [1, 1, 1]);
        drop(running);
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            [Priority::Urgent, Priority::Regular, Priority::Batch]
        );
        assert_eq!((s.running(), s.queued()), (1, [0, 0, 0]));
    }

    #[tokio::test]
    async fn a_call_that_cannot_start_within_its_deadline_is_shed_and_frees_its_place() {
        let s = scheduler(1, [5000, 30, 5000]);
        let running = s.acquire(Priority::Batch).await.unwrap();
        let started = Instant::now();
        assert_eq!(
            s.acquire(Priority::Regular).await.err(),
            Some(Shed::Deadline)
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(30) && waited < Duration::from_millis(500),
            "{waited:?}"
        );
        assert_eq!(s.queued(), [0, 0, 0]);
        drop(running);
        assert_eq!(s.running(), 0);
        // A full queue sheds on arrival.
        let s = Scheduler::new(AdmissionConfig {
            run_slots: 1,
            deadlines: [Duration::from_secs(5); 3],
            max_queued: [1, 1, 1],
        });
        let _running = s.acquire(Priority::Regular).await.unwrap();
        let s2 = s.clone();
        let _queued = tokio::spawn(async move { s2.acquire(Priority::Regular).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            s.acquire(Priority::Regular).await.err(),
            Some(Shed::QueueFull)
        );
    }

    #[tokio::test]
    async fn regular_work_is_shed_before_urgent_work_waits_out_its_deadline() {
        // The node is busy; a regular and an urgent call queue. The regular one is shed at its
        // short deadline; the urgent one runs as soon as the slot frees.
        let s = scheduler(1, [2000, 20, 2000]);
        let running = s.acquire(Priority::Regular).await.unwrap();
        let (a, b) = (s.clone(), s.clone());
        let regular = tokio::spawn(async move { a.acquire(Priority::Regular).await.map(|_| ()) });
        let urgent = tokio::spawn(async move { b.acquire(Priority::Urgent).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(running);
        assert_eq!(regular.await.unwrap(), Err(Shed::Deadline));
        assert_eq!(urgent.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_queue_that_would_not_drain_in_time_sheds_at_once() {
        let s = scheduler(1, [5000, 10, 5000]);
        // Teach it that a call holds a slot for 50 ms.
        s.note_service(Duration::from_millis(50));
        let _running = s.acquire(Priority::Regular).await.unwrap();
        let started = Instant::now();
        assert_eq!(
            s.acquire(Priority::Regular).await.err(),
            Some(Shed::WouldMiss)
        );
        assert!(started.elapsed() < Duration::from_millis(5));
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_leaves_no_slot_behind() {
        let s = scheduler(1, [5000, 5000, 5000]);
        let running = s.acquire(Priority::Regular).await.unwrap();
        let s2 = s.clone();
        let gives_up = tokio::spawn(async move { s2.acquire(Priority::Regular).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gives_up.abort();
        let _ = gives_up.await;
        assert_eq!(s.queued(), [0, 0, 0]);
        drop(running);
        assert_eq!(s.running(), 0);
        assert!(s.acquire(Priority::Batch).await.is_ok());
    }

    #[tokio::test]
    async fn urgent_calls_have_slots_of_their_own_and_may_borrow_shared_ones() {
        let s = scheduler(1, [5000, 20, 5000]);
        let regular = s.acquire(Priority::Regular).await.unwrap();
        assert_eq!(regular.pool(), Pool::Shared);
        // The shared slot is busy, yet an urgent call starts at once, in its own pool.
        let urgent = s.acquire(Priority::Urgent).await.unwrap();
        assert_eq!(
            (urgent.pool(), urgent.waited < Duration::from_millis(5)),
            (Pool::Urgent, true)
        );
        drop(regular);
        // With its own pool full, an urgent call takes a free shared slot; regular ones wait.
        let second = s.acquire(Priority::Urgent).await.unwrap();
        assert_eq!(second.pool(), Pool::Shared);
        assert_eq!(
            s.acquire(Priority::Regular).await.err(),
            Some(Shed::Deadline)
        );
        drop((urgent, second));
        assert_eq!(s.running(), 0);
    }

    #[test]
    fn deadlines_parse_by_class() {
        let mut c = AdmissionConfig::default();
        c.set_deadline("regular=20ms").unwrap();
        assert_eq!(c.deadline(Priority::Regular), Duration::from_millis(20));
        assert!(c.set_deadline("vip=1s").is_err());
        assert!(c.set_deadline("urgent").is_err());
    }
}
