//! Runs a pass's steps in order on several threads with one fork-join per pass, not per step.
//!
//! At batch 1 a pass is hundreds of steps of 10-200 us each. Forking rayon's pool for every step
//! costs a wake-up and a join each time and left the second core mostly idle. Here every step
//! is cut into parts (ranges of output pixels). Every participating thread (the caller plus
//! `threads - 1` helpers spawned once per pass) walks the steps in order and claims the parts
//! of each that nobody has claimed yet, its own share first: thread `t` starts at part
//! `t * parts / threads`, so with one part per thread each thread computes the same pixels in
//! every step and mostly reads what it wrote itself, from its own cache. Before running a part
//! it waits until every part of the earlier steps is done (a spin on one counter,
//! sub-microsecond when both threads are running), and counts it done after. A step may read
//! what any earlier step wrote, and reuse a buffer any earlier step read, so "all earlier parts
//! done" is the only ordering needed.
//!
//! A thread that has waited longer than a step's imbalance plausibly lasts (the other thread
//! was preempted on a busy machine) stops spinning and sleeps until the next part is done, so
//! it gives its core to the thread it waits for.
//!
//! Helpers are optional: the caller alone can claim every part, so a helper that starts late
//! (its pool busy, the machine loaded) costs nothing but its share of the work, and no thread
//! ever waits on a part nobody has claimed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a waiting thread spins before it sleeps.
const SPIN_FOR: Duration = Duration::from_micros(50);

/// The shared state of one pass: which parts are claimed, how many are done.
struct Queue<'a> {
    /// `starts[s]`: the index of step `s`'s first part among all; the last entry is the total.
    starts: &'a [usize],
    claimed: Vec<AtomicBool>,
    done: AtomicUsize,
    /// Threads asleep in [`Queue::wait_for`] (or about to be), and where they sleep.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Counts a part done when dropped, also when the part panics, so that no thread waits forever
/// (the panic itself reaches the caller when the scope ends).
struct Done<'q, 'a>(&'q Queue<'a>);

impl Drop for Done<'_, '_> {
    fn drop(&mut self) {
        let q = self.0;
        q.done.fetch_add(1, Ordering::SeqCst);
        if q.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = q.lock.lock().unwrap_or_else(|e| e.into_inner());
            q.wake.notify_all();
        }
    }
}

impl Queue<'_> {
    /// Claims and runs parts, step by step, until every part of the pass is claimed; thread
    /// `who` of `threads` tries its own share of each step first.
    fn drain(&self, who: usize, threads: usize, work: &(impl Fn(usize, usize) + Sync)) {
        for (step, ends) in self.starts.windows(2).enumerate() {
            let (first, count) = (ends[0], ends[1] - ends[0]);
            let own = who * count / threads;
            for j in 0..count {
                let part = (own + j) % count;
                let flag = &self.claimed[first + part];
                if flag.load(Ordering::Relaxed) || flag.swap(true, Ordering::Relaxed) {
                    continue;
                }
                self.wait_for(first);
                let _done = Done(self);
                work(step, part);
            }
        }
    }

    /// Waits until `count` parts are done (every part of the steps before the waiting one).
    fn wait_for(&self, count: usize) {
        let ready = || self.done.load(Ordering::Acquire) >= count;
        if ready() {
            return;
        }
        let start = Instant::now();
        while !ready() {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if start.elapsed() > SPIN_FOR {
                self.sleep_until(count);
                return;
            }
        }
    }

    /// Sleeps until `count` parts are done. Registering as a sleeper before the last check
    /// (both sequentially consistent, as the finisher's count and check) means either this
    /// thread sees the part done or its finisher sees the sleeper and wakes it.
    fn sleep_until(&self, count: usize) {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while self.done.load(Ordering::SeqCst) < count {
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `work(step, part)` for every step in order and every `part < parts[step]`, on up to
/// `threads` threads (the caller and helpers from rayon's pool): every part of a step finishes
/// before any part of a later step starts; parts of one step run concurrently.
pub(crate) fn run_in_order<F>(parts: &[usize], threads: usize, work: F)
where
    F: Fn(usize, usize) + Sync,
{
    let split = parts.iter().any(|&p| p > 1);
    if threads <= 1 || !split {
        for (step, &count) in parts.iter().enumerate() {
            (0..count).for_each(|part| work(step, part));
        }
        return;
    }
    let mut starts = Vec::with_capacity(parts.len() + 1);
    starts.push(0);
    for &count in parts {
        starts.push(starts[starts.len() - 1] + count);
    }
    let queue = Queue {
        starts: &starts,
        claimed: (0..starts[parts.len()])
            .map(|_| AtomicBool::new(false))
            .collect(),
        done: AtomicUsize::new(0),
        sleepers: AtomicUsize::new(0),
        lock: Mutex::new(()),
        wake: Condvar::new(),
    };
    rayon::in_place_scope(|scope| {
        for who in 1..threads {
            let (queue, work) = (&queue, &work);
            scope.spawn(move |_| queue.drain(who, threads, work));
        }
        queue.drain(0, threads, &work);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Every part runs exactly once, and only after every part of the steps before it.
    #[test]
    fn parts_run_once_and_in_step_order() {
        let parts = [1, 4, 2, 1, 7, 3, 1];
        let log = Mutex::new(Vec::new());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            run_in_order(&parts, 3, |step, part| {
                std::thread::sleep(std::time::Duration::from_micros(50 * (part as u64 % 3)));
                log.lock().unwrap().push((step, part));
            })
        });
        let log = log.into_inner().unwrap();
        let mut seen: Vec<(usize, usize)> = log.clone();
        seen.sort_unstable();
        let expected: Vec<(usize, usize)> = parts
            .iter()
            .enumerate()
            .flat_map(|(s, &n)| (0..n).map(move |p| (s, p)))
            .collect();
        assert_eq!(seen, expected);
        let steps: Vec<usize> = log.iter().map(|&(s, _)| s).collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "order {steps:?}");
    }

    /// One thread runs everything itself, in order.
    #[test]
    fn one_thread_runs_in_order() {
        let log = Mutex::new(Vec::new());
        run_in_order(&[2, 1, 3], 1, |s, p| log.lock().unwrap().push((s, p)));
        let log = log.into_inner().unwrap();
        assert_eq!(log, [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)]);
    }
}
