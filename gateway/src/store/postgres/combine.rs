//! Combining concurrent writes of one kind into one statement. Every commit waits for a WAL
//! flush and starts a statement's executor, so on PostgreSQL many small writes cost far more
//! than one large one (../shared/scaleout.md). Callers that arrive while a batch is being
//! written queue, and the next batch carries them all: a caller that finds nobody writing
//! writes batches of what is queued, oldest first, until its own item is answered; then it
//! hands the queue to one of the callers waiting in it, which writes the next batches. So under
//! a steady stream no caller writes for the others for ever: each is held for about its own
//! batch and the one before it. No task of its own, so a replica that writes nothing of a kind
//! pays nothing for it.
//!
//! A combiner may also space its batches: a batch then starts no sooner than `spacing` after
//! the previous one started, so that under load each carries what arrived in that time. Only
//! for writes nobody waits for to answer a request (a routing's result, not an ack). A full
//! batch starts at once: `max` items, or items that weigh `fill` together (a routing's result
//! weighs its events, each of which holds a routing slot until it is written). Waiting would
//! not fill it further: it would cap what is written at a batch per spacing however fast it
//! arrives, and hold the slots the items are waiting in.
//!
//! This module never looks at what it carries.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// One item's answer: what the write made of it, or why it failed.
type Answer<A> = oneshot::Sender<Result<A, String>>;

/// What a caller whose batch was abandoned (its writer's future dropped) is told.
const ABANDONED: &str = "the batch holding this item was abandoned";

struct Queue<T, A> {
    waiting: Vec<(T, Answer<A>)>,
    /// What the waiting items weigh together.
    weight: usize,
    /// A caller is writing batches now.
    writing: bool,
    /// When the last batch started.
    last_start: Option<Instant>,
    /// Least time from one batch's start to the next one's.
    spacing: Duration,
}

/// The items of one kind waiting to be written by this replica.
pub(super) struct Combiner<T, A> {
    queue: Mutex<Queue<T, A>>,
    /// Wakes a caller waiting in the queue when a writer's turn ended with items left.
    handover: Notify,
    /// Wakes a writer waiting out the spacing when the queue holds a full batch.
    filled: Notify,
    /// Most items in one batch.
    max: usize,
    /// What the queued items may weigh before a batch of them starts without the spacing.
    fill: usize,
    /// An item's weight (1 unless [`Combiner::with_fill`] says otherwise).
    weigh: fn(&T) -> usize,
}

impl<T, A> std::fmt::Debug for Combiner<T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combiner")
            .field("max", &self.max)
            .field("fill", &self.fill)
            .field("spacing", &lock(&self.queue).spacing)
            .finish_non_exhaustive()
    }
}

/// Ends a writer's turn, also when its future is dropped (abandoned at shutdown): what is
/// still queued goes to a caller waiting in the queue. The batch being written when the future
/// was dropped gets no answer: its callers see an error and retry.
struct Turn<'a, T, A> {
    combiner: &'a Combiner<T, A>,
}

impl<T, A> Drop for Turn<'_, T, A> {
    fn drop(&mut self) {
        let left = {
            let mut q = lock(&self.combiner.queue);
            q.writing = false;
            !q.waiting.is_empty()
        };
        if left {
            // Stored as a permit if nobody waits yet; a caller woken for nothing (the queue
            // taken over already) goes back to waiting.
            self.combiner.handover.notify_one();
        }
    }
}

fn lock<T, A>(queue: &Mutex<Queue<T, A>>) -> std::sync::MutexGuard<'_, Queue<T, A>> {
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T, A> Combiner<T, A> {
    pub(super) fn new(max: usize, spacing: Duration) -> Self {
        Self {
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                weight: 0,
                writing: false,
                last_start: None,
                spacing,
            }),
            handover: Notify::new(),
            filled: Notify::new(),
            max: max.max(1),
            fill: max.max(1),
            weigh: |_| 1,
        }
    }

    /// A batch also starts without the spacing once its queued items weigh `fill` (each
    /// weighed by `weigh`).
    pub(super) fn with_fill(self, fill: usize, weigh: fn(&T) -> usize) -> Self {
        Self {
            fill: fill.max(1),
            weigh,
            ..self
        }
    }

    /// Whether the queue holds a batch that waiting would not fill further.
    fn full(&self, q: &Queue<T, A>) -> bool {
        q.waiting.len() >= self.max || q.weight >= self.fill
    }

    /// Changes the spacing from the next batch on.
    pub(super) fn set_spacing(&self, spacing: Duration) {
        lock(&self.queue).spacing = spacing;
    }

    #[cfg(test)]
    pub(super) fn spacing(&self) -> Duration {
        lock(&self.queue).spacing
    }

    #[cfg(test)]
    pub(super) fn fill(&self) -> usize {
        self.fill
    }

    /// Writes `item` in a batch with whatever else is queued, and returns its answer. `write`
    /// writes one batch and answers each of its items, in their order (an item it gives no
    /// answer for fails); every caller passes an equivalent one, and whoever writes uses its
    /// own.
    pub(super) async fn submit<W, F>(&self, item: T, mut write: W) -> Result<A, String>
    where
        W: FnMut(Vec<T>) -> F,
        F: Future<Output = Vec<Result<A, String>>>,
    {
        let (answer, mut answered) = oneshot::channel();
        let mut writes = {
            let mut q = lock(&self.queue);
            let was_full = self.full(&q);
            q.weight = q.weight.saturating_add((self.weigh)(&item));
            q.waiting.push((item, answer));
            if q.writing && !was_full && self.full(&q) {
                self.filled.notify_waiters();
            }
            !std::mem::replace(&mut q.writing, true)
        };
        loop {
            if writes {
                return self.write_turn(&mut answered, &mut write).await;
            }
            tokio::select! {
                biased;
                result = &mut answered => {
                    return result.unwrap_or_else(|_| Err(ABANDONED.to_owned()));
                }
                () = self.handover.notified() => {
                    let mut q = lock(&self.queue);
                    writes = !q.writing && !q.waiting.is_empty();
                    q.writing |= writes;
                }
            }
        }
    }

    /// Writes batches, oldest items first, until `own` is answered; returns its answer.
    async fn write_turn<W, F>(
        &self,
        own: &mut oneshot::Receiver<Result<A, String>>,
        write: &mut W,
    ) -> Result<A, String>
    where
        W: FnMut(Vec<T>) -> F,
        F: Future<Output = Vec<Result<A, String>>>,
    {
        let _turn = Turn { combiner: self };
        loop {
            match own.try_recv() {
                Ok(result) => return result,
                // Taken into a batch that was abandoned.
                Err(oneshot::error::TryRecvError::Closed) => return Err(ABANDONED.to_owned()),
                // Still queued.
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // Enabled before the queue is looked at, so a batch filled after that still wakes it.
            let filled = self.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            let next = {
                let q = lock(&self.queue);
                if self.full(&q) {
                    None
                } else {
                    q.last_start.and_then(|at| at.checked_add(q.spacing))
                }
            };
            if let Some(next) = next
                && next > Instant::now()
            {
                tokio::select! {
                    () = tokio::time::sleep_until(next.into()) => {}
                    () = filled => {}
                }
            }
            // Only the writer takes items out, and its own is still among them.
            let batch: Vec<(T, Answer<A>)> = {
                let mut q = lock(&self.queue);
                q.last_start = Some(Instant::now());
                let n = q.waiting.len().min(self.max);
                let batch: Vec<_> = q.waiting.drain(..n).collect();
                let taken = batch.iter().map(|(item, _)| (self.weigh)(item)).sum();
                q.weight = q.weight.saturating_sub(taken);
                batch
            };
            if batch.is_empty() {
                return Err("the item left the queue unanswered".to_owned());
            }
            let (items, answers): (Vec<T>, Vec<Answer<A>>) = batch.into_iter().unzip();
            let mut results = write(items).await.into_iter();
            for answer in answers {
                let result = results
                    .next()
                    .unwrap_or_else(|| Err("the batch gave this item no answer".to_owned()));
                drop(answer.send(result));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Combiner;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Items submitted while a batch is written share the next batch, and each gets its own
    /// answer.
    #[tokio::test]
    async fn items_queued_during_a_write_share_the_next_batch() {
        let combiner = Arc::new(Combiner::<u32, u32>::new(100, Duration::ZERO));
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (release, released) = tokio::sync::watch::channel(false);
        let write = {
            let batches = Arc::clone(&batches);
            move |items: Vec<u32>| {
                let batches = Arc::clone(&batches);
                let mut released = released.clone();
                async move {
                    // The first batch waits until the others have queued.
                    let _ = released.wait_for(|r| *r).await;
                    batches.lock().expect("lock").push(items.clone());
                    items.into_iter().map(|i| Ok(i * 10)).collect::<Vec<_>>()
                }
            }
        };
        let mut callers = Vec::new();
        for i in 0..5 {
            let combiner = Arc::clone(&combiner);
            let write = write.clone();
            callers.push(tokio::spawn(async move { combiner.submit(i, write).await }));
            tokio::task::yield_now().await;
        }
        release.send(true).expect("receivers");
        for (i, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.expect("joins"), Ok(i as u32 * 10));
        }
        assert_eq!(*batches.lock().expect("lock"), [vec![0], vec![1, 2, 3, 4]]);
    }

    /// A spaced combiner starts its next batch no sooner than the spacing after the last one
    /// started, and a first batch waits for nobody.
    #[tokio::test]
    async fn a_spaced_combiner_waits_before_its_next_batch() {
        let spacing = Duration::from_millis(20);
        let combiner = Combiner::<u32, u32>::new(100, spacing);
        let writes = AtomicUsize::new(0);
        let write = |items: Vec<u32>| {
            writes.fetch_add(1, Ordering::Relaxed);
            async move { items.into_iter().map(Ok).collect() }
        };
        let started = std::time::Instant::now();
        assert_eq!(combiner.submit(1, write).await, Ok(1));
        assert!(
            started.elapsed() < spacing,
            "the first batch waits for nobody"
        );
        assert_eq!(combiner.submit(2, write).await, Ok(2));
        assert!(started.elapsed() >= spacing);
        assert_eq!(writes.load(Ordering::Relaxed), 2);
    }

    /// The batches a test's writes were given, in order.
    type Batches = Arc<std::sync::Mutex<Vec<Vec<u32>>>>;

    /// Submits `n` from a task of its own, with a write that records its batch in `batches`
    /// and answers each item with itself.
    fn submit_recorded(
        combiner: &Arc<Combiner<u32, u32>>,
        n: u32,
        batches: &Batches,
    ) -> tokio::task::JoinHandle<Result<u32, String>> {
        let (combiner, batches) = (Arc::clone(combiner), Arc::clone(batches));
        tokio::spawn(async move {
            combiner
                .submit(n, |items: Vec<u32>| {
                    batches.lock().expect("lock").push(items.clone());
                    async move { items.into_iter().map(Ok).collect() }
                })
                .await
        })
    }

    /// A full batch starts at once, spaced or not: the spacing would not fill it further. Both
    /// ways of filling it: already full when the writer looks, and filled while it waits.
    #[tokio::test]
    async fn a_full_batch_does_not_wait_for_the_spacing() {
        let spacing = Duration::from_secs(30);
        let combiner = Arc::new(Combiner::<u32, u32>::new(2, spacing));
        let batches = Batches::default();
        let started = std::time::Instant::now();
        assert_eq!(
            submit_recorded(&combiner, 1, &batches)
                .await
                .expect("joins"),
            Ok(1)
        );
        // The next caller waits out the spacing alone; the one after it fills the batch.
        let second = submit_recorded(&combiner, 2, &batches);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "one item waits for the spacing");
        let third = submit_recorded(&combiner, 3, &batches);
        assert_eq!(second.await.expect("joins"), Ok(2));
        assert_eq!(third.await.expect("joins"), Ok(3));
        // Already full when its writer looks: two items queue behind a first batch being
        // written, and one of them writes them when it is answered.
        let combiner = Arc::new(Combiner::<u32, u32>::new(2, spacing));
        let (release, released) = tokio::sync::watch::channel(false);
        let held = {
            let combiner = Arc::clone(&combiner);
            let batches = Arc::clone(&batches);
            tokio::spawn(async move {
                combiner
                    .submit(4, move |items: Vec<u32>| {
                        let mut released = released.clone();
                        let batches = Arc::clone(&batches);
                        async move {
                            let _ = released.wait_for(|r| *r).await;
                            batches.lock().expect("lock").push(items.clone());
                            items.into_iter().map(Ok).collect()
                        }
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let queued: Vec<_> = (5..7)
            .map(|n| submit_recorded(&combiner, n, &batches))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.send(true).expect("receivers");
        assert_eq!(held.await.expect("joins"), Ok(4));
        for (n, caller) in (5..7).zip(queued) {
            assert_eq!(caller.await.expect("joins"), Ok(n));
        }
        assert!(
            started.elapsed() < spacing,
            "no full batch waited for the spacing"
        );
        assert_eq!(
            *batches.lock().expect("lock"),
            [vec![1], vec![2, 3], vec![4], vec![5, 6]]
        );
    }

    /// Items that weigh the fill together start their batch at once; lighter, they wait for
    /// the spacing.
    #[tokio::test]
    async fn items_weighing_the_fill_start_a_batch_at_once() {
        let spacing = Duration::from_secs(30);
        let combiner =
            Arc::new(Combiner::<u32, u32>::new(100, spacing).with_fill(5, |n| *n as usize));
        let batches = Batches::default();
        let started = std::time::Instant::now();
        assert_eq!(
            submit_recorded(&combiner, 1, &batches)
                .await
                .expect("joins"),
            Ok(1)
        );
        let submit = |n: u32| submit_recorded(&combiner, n, &batches);
        let (two, one) = (submit(2), submit(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !two.is_finished() && !one.is_finished(),
            "3 of 5 wait for the spacing"
        );
        let three = submit(3);
        assert_eq!(two.await.expect("joins"), Ok(2));
        assert_eq!(one.await.expect("joins"), Ok(1));
        assert_eq!(three.await.expect("joins"), Ok(3));
        assert!(started.elapsed() < spacing, "the filled batch did not wait");
        assert_eq!(*batches.lock().expect("lock"), [vec![1], vec![2, 1, 3]]);
    }

    /// A changed spacing holds from the next batch on: longer, it holds that batch back longer;
    /// none, and the next batch starts at once.
    #[tokio::test]
    async fn a_changed_spacing_applies_from_the_next_batch() {
        let combiner = Combiner::<u32, u32>::new(100, Duration::from_millis(10));
        let write = |items: Vec<u32>| async move { items.into_iter().map(Ok).collect() };
        // Before the first batch starts, so the second one starts at least `longer` after it.
        let started = std::time::Instant::now();
        assert_eq!(combiner.submit(1, write).await, Ok(1));
        let longer = Duration::from_millis(150);
        combiner.set_spacing(longer);
        assert_eq!(combiner.spacing(), longer);
        assert_eq!(combiner.submit(2, write).await, Ok(2));
        assert!(started.elapsed() >= longer);
        combiner.set_spacing(Duration::ZERO);
        let started = std::time::Instant::now();
        assert_eq!(combiner.submit(3, write).await, Ok(3));
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "unspaced, the next batch waits for nobody"
        );
    }

    /// A writer whose future is dropped hands what is still queued to a caller waiting in the
    /// queue, which writes it.
    #[tokio::test]
    async fn an_abandoned_writer_hands_the_queue_over() {
        let combiner = Arc::new(Combiner::<u32, u32>::new(100, Duration::ZERO));
        let (_never, never) = tokio::sync::watch::channel(false);
        let stuck = {
            let combiner = Arc::clone(&combiner);
            tokio::spawn(async move {
                combiner
                    .submit(1, |items: Vec<u32>| {
                        let mut never = never.clone();
                        async move {
                            let _ = never.wait_for(|r| *r).await;
                            items.into_iter().map(Ok).collect()
                        }
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let queued = {
            let combiner = Arc::clone(&combiner);
            tokio::spawn(async move {
                combiner
                    .submit(2, |items: Vec<u32>| async move {
                        items.into_iter().map(|i| Ok(i * 10)).collect()
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        stuck.abort();
        assert!(stuck.await.is_err(), "aborted");
        assert_eq!(
            queued.await.expect("joins"),
            Ok(20),
            "the item queued behind the abandoned batch is written by its own caller"
        );
    }

    /// Under a steady stream a writer returns once its own item is answered: the next batch is
    /// written by a caller queued in it, not by the first writer for ever.
    #[tokio::test]
    async fn a_writer_returns_after_its_own_batch_and_a_queued_caller_writes_on() {
        let combiner = Arc::new(Combiner::<u32, u32>::new(100, Duration::ZERO));
        // Each batch waits for its own gate: item n's batch opens when gates[n] is set.
        let gates: Vec<_> = (0..2).map(|_| tokio::sync::watch::channel(false)).collect();
        let submit = |n: u32| {
            let combiner = Arc::clone(&combiner);
            let gate = gates[n as usize].1.clone();
            tokio::spawn(async move {
                combiner
                    .submit(n, move |items: Vec<u32>| {
                        let mut gate = gate.clone();
                        async move {
                            let _ = gate.wait_for(|open| *open).await;
                            items.into_iter().map(Ok).collect()
                        }
                    })
                    .await
            })
        };
        let first = submit(0);
        tokio::task::yield_now().await;
        let second = submit(1);
        tokio::task::yield_now().await;
        gates[0].0.send(true).expect("open");
        assert_eq!(
            first.await.expect("joins"),
            Ok(0),
            "the first writer returns while the next batch is still to be written"
        );
        assert!(!second.is_finished(), "its batch waits for its own gate");
        gates[1].0.send(true).expect("open");
        assert_eq!(second.await.expect("joins"), Ok(1));
    }
}
