//! libtorch's random generator, which every thread of a process shares: who may draw from it.
//!
//! libtorch has one default generator per device for the whole process, and tch does not expose
//! generator objects. Two stages running at once in one process (a CPU training run beside an
//! extraction that builds its model), or two tests on parallel threads, would otherwise interleave
//! their draws, and a seeded result (initial weights, dropout masks) would depend on timing.
//! Every draw this crate makes happens while holding [`RngGuard`]: seeded sections seed under it
//! and keep it until their last draw. The lock is re-entrant, so a seeded section may call code
//! that takes it again (building a model inside training).

use parking_lot::{ReentrantMutex, ReentrantMutexGuard};

static GENERATOR: ReentrantMutex<()> = ReentrantMutex::new(());

/// Exclusive use of the process's libtorch generators until dropped.
pub struct RngGuard {
    _held: ReentrantMutexGuard<'static, ()>,
}

impl RngGuard {
    /// Seeds every device's generator (as `torch.manual_seed`).
    pub fn seed(&self, seed: i64) {
        tch::manual_seed(seed);
    }
}

/// Waits for, then holds, the generators without seeding them (for draws whose values do not
/// matter but must not disturb a seeded section elsewhere, such as initialising a model that is
/// about to be loaded).
#[must_use = "the generator is only held while the guard lives"]
pub fn hold() -> RngGuard {
    RngGuard {
        _held: GENERATOR.lock(),
    }
}

/// Holds the generators and seeds them.
#[must_use = "the generator is only held while the guard lives"]
pub fn seeded(seed: i64) -> RngGuard {
    let guard = hold();
    guard.seed(seed);
    guard
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    fn draws(seed: i64) -> Vec<f32> {
        let _rng = seeded(seed);
        let mut out = Vec::new();
        for _ in 0..50 {
            out.extend(
                Vec::<f32>::try_from(Tensor::rand([64], (Kind::Float, Device::Cpu))).unwrap(),
            );
            std::thread::yield_now();
        }
        out
    }

    #[test]
    fn seeded_sections_on_parallel_threads_draw_what_they_draw_alone() {
        let alone = draws(3);
        let racing: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| draws(3))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in racing {
            assert_eq!(r, alone);
        }
    }

    #[test]
    fn the_guard_is_reentrant() {
        let outer = seeded(1);
        // Taken again on the same thread (a model built inside training): no deadlock, and
        // the inner seed is the one the next draws follow.
        let inner = seeded(2);
        let first = Vec::<f32>::try_from(Tensor::rand([8], (Kind::Float, Device::Cpu))).unwrap();
        drop(inner);
        outer.seed(2);
        let again = Vec::<f32>::try_from(Tensor::rand([8], (Kind::Float, Device::Cpu))).unwrap();
        assert_eq!(first, again);
    }
}
