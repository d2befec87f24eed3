//! Item slots for batch jobs, handed out round-robin across users: while
//! several users wait, each gets the next free slot in turn, so one user's
//! many jobs cannot delay everyone else's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::ids::UserId;

#[derive(Default)]
struct State {
    free: usize,
    /// Users with someone waiting, in the order they get the next slot.
    turn: VecDeque<UserId>,
    waiting: HashMap<UserId, VecDeque<oneshot::Sender<()>>>,
}

impl State {
    /// Hands a freed slot to the next waiter in turn, else keeps it free.
    fn release(&mut self) {
        while let Some(user) = self.turn.pop_front() {
            let Some(queue) = self.waiting.get_mut(&user) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&user);
            } else {
                self.turn.push_back(user);
            }
            // A waiter that gave up has dropped its receiver: try the next.
            if let Some(tx) = next {
                if tx.send(()).is_ok() {
                    return;
                }
            }
        }
        self.free += 1;
    }
}

/// `n` slots shared by all jobs of the process.
#[derive(Clone)]
pub struct FairSlots {
    state: Arc<Mutex<State>>,
}

/// A slot held; freed (to the next user in turn) when dropped.
pub struct Slot {
    state: Arc<Mutex<State>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.lock().expect("slots lock").release();
    }
}

/// A wait that may be abandoned (the job stops): a slot handed to it
/// after it stopped listening is passed on, never lost.
struct Waiting {
    /// None once the slot is taken.
    rx: Option<oneshot::Receiver<()>>,
    state: Arc<Mutex<State>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            if rx.try_recv().is_ok() {
                self.state.lock().expect("slots lock").release();
            }
        }
    }
}

impl FairSlots {
    pub fn new(n: usize) -> FairSlots {
        FairSlots {
            state: Arc::new(Mutex::new(State {
                free: n,
                ..State::default()
            })),
        }
    }

    /// Waits for a slot; among waiting users, slots go round-robin.
    pub async fn acquire(&self, user: &UserId) -> Slot {
        let rx = {
            let mut s = self.state.lock().expect("slots lock");
            if s.free > 0 && s.turn.is_empty() {
                s.free -= 1;
                return Slot {
                    state: self.state.clone(),
                };
            }
            let (tx, rx) = oneshot::channel();
            match s.waiting.get_mut(user) {
                Some(q) => q.push_back(tx),
                None => {
                    s.waiting.insert(user.clone(), VecDeque::from([tx]));
                    s.turn.push_back(user.clone());
                }
            }
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            state: self.state.clone(),
        };
        if let Some(rx) = waiting.rx.as_mut() {
            // The sender is only dropped by `release` after a successful send.
            rx.await.expect("a slot is sent, never dropped");
        }
        // Received: the slot is ours; the guard must not pass it on.
        waiting.rx = None;
        Slot {
            state: self.state.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One slot, held; A queues three waiters, then B one: the slot goes
    /// A, B, A, A — B does not wait behind all of A's.
    #[tokio::test]
    async fn slots_go_round_robin_across_users() {
        let slots = FairSlots::new(1);
        let (a, b) = (UserId::from("usr_a"), UserId::from("usr_b"));
        let held = slots.acquire(&a).await;
        let order = Arc::new(Mutex::new(vec![]));
        let mut tasks = vec![];
        for (i, who) in [&a, &a, &a, &b].into_iter().enumerate() {
            let (slots, who, order) = (slots.clone(), who.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(&who).await;
                order.lock().unwrap().push(format!("{who}#{i}"));
            }));
            // let each waiter register before the next
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["usr_a#0", "usr_b#3", "usr_a#1", "usr_a#2"]
        );
    }

    /// A waiter that gives up (its job stopped) never swallows a slot.
    #[tokio::test]
    async fn an_abandoned_wait_passes_its_slot_on() {
        let slots = FairSlots::new(1);
        let a = UserId::from("usr_a");
        let held = slots.acquire(&a).await;
        let gone = tokio::spawn({
            let (slots, a) = (slots.clone(), a.clone());
            async move { slots.acquire(&a).await }
        });
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        // the slot is free again, not lost to the aborted waiter
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), slots.acquire(&a)).await;
        assert!(got.is_ok(), "the slot was lost");
    }
}
